"""``evalkit compare RUN_A RUN_B``: a per-item diff of two stored runs, with paired tests.

Items are paired by (suite, suite_version, sample_id): results never mix across suite versions.
For every scorer both runs share: pass/fail scorers get McNemar's exact test and the list of items
that flipped; valued scorers (judge scores) get the Wilcoxon signed-rank test and a paired
bootstrap CI of the mean difference (B - A).
"""

from __future__ import annotations

from typing import Any, Sequence

from .. import stats
from ..errors import UserError
from ..store import RunItem, RunRecord


def _key(it: RunItem) -> tuple[str, str, str]:
    return (it.suite, it.suite_version, it.sample_id)


def compare_runs(
    run_a: RunRecord,
    items_a: Sequence[RunItem],
    run_b: RunRecord,
    items_b: Sequence[RunItem],
    *,
    model_a: str | None = None,
    model_b: str | None = None,
) -> dict[str, Any]:
    """The comparison as plain data (what ``--json`` prints)."""
    models_a = sorted({it.model for it in items_a})
    models_b = sorted({it.model for it in items_b})
    if model_a or model_b:
        pairs = [(model_a or model_b, model_b or model_a)]
    else:
        pairs = [(m, m) for m in models_a if m in models_b]
        if not pairs:
            raise UserError(
                f"the runs share no model name (A: {', '.join(models_a) or 'none'}; B: {', '.join(models_b) or 'none'}); "
                "name them with --model-a and --model-b"
            )
    out: dict[str, Any] = {"run_a": run_a.run_id, "run_b": run_b.run_id, "comparisons": []}
    for ma, mb in pairs:
        ia = {_key(it): it for it in items_a if it.model == ma}
        ib = {_key(it): it for it in items_b if it.model == mb}
        if not ia:
            raise UserError(f"run {run_a.run_id} has no model '{ma}' (it has: {', '.join(models_a)})")
        if not ib:
            raise UserError(f"run {run_b.run_id} has no model '{mb}' (it has: {', '.join(models_b)})")
        shared = sorted(set(ia) & set(ib))
        several = len({k[0] for k in shared}) > 1
        label = (lambda k: f"{k[0]}/{k[2]}") if several else (lambda k: k[2])
        scorers = sorted({n for k in shared for n in ia[k].scores} & {n for k in shared for n in ib[k].scores})
        comp: dict[str, Any] = {
            "model_a": ma, "model_b": mb, "paired_items": len(shared),
            "only_in_a": len(set(ia) - set(ib)), "only_in_b": len(set(ib) - set(ia)),
            "changed_outputs": sum(1 for k in shared if ia[k].output != ib[k].output),
            "scorers": [],
        }
        for n in scorers:
            pa, pb, va, vb, worse, better, dropped = [], [], [], [], [], [], 0
            for k in shared:
                sa, sb = ia[k].scores.get(n), ib[k].scores.get(n)
                if sa is None or sb is None:
                    continue
                if sa.error or sb.error:
                    dropped += 1
                    continue
                if sa.passed is not None and sb.passed is not None and not sa.from_judge:
                    pa.append(bool(sa.passed))
                    pb.append(bool(sb.passed))
                    if sa.passed and not sb.passed:
                        worse.append(label(k))
                    elif sb.passed and not sa.passed:
                        better.append(label(k))
                elif sa.value is not None and sb.value is not None:
                    x, y = float(sa.value), float(sb.value)
                    va.append(x)
                    vb.append(y)
                    if y < x:
                        worse.append(label(k))
                    elif y > x:
                        better.append(label(k))
            row: dict[str, Any] = {"scorer": n, "errors_dropped": dropped, "worse": worse, "better": better}
            if pa:
                t = stats.mcnemar_exact(pa, pb)
                row.update(kind="pass_rate", n=len(pa), a=sum(pa) / len(pa), b=sum(pb) / len(pb), test=t.test, p_value=t.p_value)
                iv = stats.paired_bootstrap_diff_ci([float(x) for x in pa], [float(y) for y in pb])
            elif va:
                t = stats.wilcoxon_signed_rank(va, vb)
                row.update(kind="mean", n=len(va), a=sum(va) / len(va), b=sum(vb) / len(vb), test=t.test, p_value=t.p_value)
                iv = stats.paired_bootstrap_diff_ci(va, vb)
            else:
                continue
            row.update(delta=iv.estimate, ci_low=iv.low, ci_high=iv.high)
            comp["scorers"].append(row)
        out["comparisons"].append(comp)
    return out


def render_compare_text(result: dict[str, Any], *, max_items: int = 15) -> str:
    lines = [f"A = {result['run_a']}", f"B = {result['run_b']}"]
    for c in result["comparisons"]:
        lines.append("")
        lines.append(
            f"{c['model_a']} (A) vs {c['model_b']} (B): {c['paired_items']} paired items, {c['changed_outputs']} outputs changed"
            + (f", {c['only_in_a']} only in A" if c["only_in_a"] else "") + (f", {c['only_in_b']} only in B" if c["only_in_b"] else "")
        )
        if not c["scorers"]:
            lines.append("  no shared scorer")
            continue
        w = max(len(s["scorer"]) for s in c["scorers"])
        lines.append(f"  {'scorer':<{w}}  {'A':>7} {'B':>7} {'B-A':>8}  {'95% CI':<18} {'test':<13} {'p':>8}  worse/better")
        for s in c["scorers"]:
            ci = f"[{s['ci_low']:+.3f}, {s['ci_high']:+.3f}]"
            lines.append(
                f"  {s['scorer']:<{w}}  {s['a']:>7.3f} {s['b']:>7.3f} {s['delta']:>+8.3f}  {ci:<18} {s['test']:<13} {s['p_value']:>8.3g}  {len(s['worse'])}/{len(s['better'])}"
            )
        for s in c["scorers"]:
            if s["worse"]:
                more = f" … and {len(s['worse']) - max_items} more" if len(s["worse"]) > max_items else ""
                lines.append(f"  worse on {s['scorer']}: {', '.join(s['worse'][:max_items])}{more}")
            if s["better"]:
                more = f" … and {len(s['better']) - max_items} more" if len(s["better"]) > max_items else ""
                lines.append(f"  better on {s['scorer']}: {', '.join(s['better'][:max_items])}{more}")
    return "\n".join(lines)
