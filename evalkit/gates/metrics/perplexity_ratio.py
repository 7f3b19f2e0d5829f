"""Gate metric perplexity_ratio: a candidate's word perplexity on the perplexity suites' texts over the
reference's (``vs``, the baseline by default), on the texts both scored; names the texts whose own
ratio is past ``max``, worst first.
"""

from __future__ import annotations

import math

from ...config import GateSpec
from ...scoring.loglikelihood import words_and_bytes
from ...types import GateResult
from ..api import (
    MetricContext,
    bound_text,
    compare_with_reference,
    format_number,
    gate_result,
    gate_scope,
    gate_threshold,
    item_label,
    metric,
    name_list,
    threshold_met,
    undecided,
)


@metric("perplexity_ratio")
def _perplexity_ratio(gate: GateSpec, model: str, ctx: MetricContext) -> GateResult:
    cmp = compare_with_reference(gate, model, ctx, "compare the perplexity of")
    if isinstance(cmp, GateResult):
        return cmp
    pairs = [(c, r) for c, r in cmp.pairs if c.sample.get("text") is not None]
    texts = len(pairs) + cmp.missing
    if not pairs:
        return undecided(gate, model, None, gate_threshold(gate), f"no perplexity text of {model}{gate_scope(gate)} pairs with {cmp.ref.label}",
                         missing_data=True)
    several = len({c.suite for c, _ in pairs}) > 1
    unscored = [item_label(c, several) for c, r in pairs if c.error or r.error or not c.loglikelihoods or not r.loglikelihoods]
    if unscored or cmp.missing:
        why = f"{len(unscored)} of {texts} texts are unscored ({name_list(unscored)})" if unscored else f"{cmp.missing} texts have no counterpart"
        return undecided(gate, model, None, gate_threshold(gate), f"cannot compare the perplexity of {model} with {cmp.ref.label}{gate_scope(gate)}: {why}",
                         unscored, missing_data=True)
    words = ll_c = ll_r = 0.0
    per_text = []
    for c, r in pairs:
        w, _ = words_and_bytes(str(c.sample["text"]))
        lc, lr = c.loglikelihoods[0], r.loglikelihoods[0]  # type: ignore[index]  # checked above
        words, ll_c, ll_r = words + w, ll_c + lc, ll_r + lr
        per_text.append((item_label(c, several), math.exp((lr - lc) / w)))
    ratio = math.exp((ll_r - ll_c) / words)
    ppl_c, ppl_r = math.exp(-ll_c / words), math.exp(-ll_r / words)
    limit = gate.max if gate.max is not None else math.inf
    failing = [label for label, x in sorted(per_text, key=lambda p: -p[1]) if x > limit]
    ok = threshold_met(gate, ratio)
    what = (f"word perplexity of {model} is {format_number(ppl_c)} vs {format_number(ppl_r)} for {cmp.ref.label} over {len(pairs)} texts"
            f"{gate_scope(gate)}: ratio {format_number(ratio)}")
    detail = f"{what}, {'within' if ok else 'outside'} {bound_text(gate)}" + (f"; texts past it: {name_list(failing)}" if failing else "") + "."
    return gate_result(gate, model, passed=ok, observed=ratio, detail=detail, failing=failing if not ok else [])
