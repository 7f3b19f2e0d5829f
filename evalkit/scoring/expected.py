"""Probability-weighted judge scores (G-Eval): the expected value of a criterion's score under the
judge's own token distribution, instead of the one integer it happened to write.

A rubric with ``scoring: expected`` asks for token log-probabilities. For each criterion the reply's
``"name": 4`` is found in the text, the token that spells the ``4`` is located, and its top
alternatives that are integers on the criterion's scale are renormalised: the score is
sum(p(k) * k). It is smoother than the argmax (a judge torn between 3 and 4 scores 3.5, not 4) and
ties less. Where that cannot be done honestly the sampled integer stays, with the reason recorded:
no log-probabilities (Anthropic, a server that refused them), token texts that do not spell the
reply, or a score split across several tokens.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Sequence

from ..types import TokenLogprob

TOP_LOGPROBS = 20  # OpenAI's maximum, and vLLM's default --max-logprobs


@dataclass(frozen=True)
class Expected:
    """One criterion's probability-weighted score, or why the sampled one stands."""

    value: float | None  # None: fall back to the sampled score
    reason: str | None = None  # why there is no expected value
    mass: float | None = None  # probability the top tokens put on the scale's values (1.0: all of it)


def _offsets(tokens: Sequence[TokenLogprob]) -> list[int]:
    starts, pos = [], 0
    for t in tokens:
        starts.append(pos)
        pos += len(t.text)
    return starts


def expected_scores(raw: str, tokens: Sequence[TokenLogprob] | None, scales: dict[str, tuple[int, int]], why_none: str | None = None) -> dict[str, Expected]:
    """Criterion name -> its expected score, from the reply ``raw`` and its tokens' log-probabilities.

    ``scales``: criterion -> (low, high) integer scale. ``why_none``: the reason to record when the
    endpoint gave no log-probabilities (else a generic one).
    """
    if not tokens:
        reason = why_none or "the reply came without token log-probabilities"
        return {c: Expected(None, reason) for c in scales}
    if not "".join(t.text for t in tokens).startswith(raw):  # vLLM lists the end-of-sequence token too
        return {c: Expected(None, "the tokens' texts do not spell the reply") for c in scales}
    starts = _offsets(tokens)
    out: dict[str, Expected] = {}
    for crit, (low, high) in scales.items():
        m = re.search(r'"' + re.escape(json.dumps(crit)[1:-1]) + r'"\s*:\s*"?(-?\d+)', raw)
        if m is None:
            out[crit] = Expected(None, "its score was not found in the reply text")
            continue
        at = m.start(1)
        i = max(k for k, s in enumerate(starts) if s <= at)
        tok = tokens[i]
        if tok.text.strip().strip('"') != m.group(1):
            out[crit] = Expected(None, f"the score {m.group(1)} is not one token (token {tok.text!r})")
            continue
        probs: dict[int, float] = {}
        seen: set[str] = set()
        for text, lp in ((tok.text, tok.logprob), *tok.top):
            if text in seen:
                continue
            seen.add(text)
            word = text.strip().strip('"')
            if re.fullmatch(r"-?\d+", word) and low <= int(word) <= high and lp > -math.inf:
                probs[int(word)] = probs.get(int(word), 0.0) + math.exp(lp)
        mass = sum(probs.values())
        if mass <= 0:
            out[crit] = Expected(None, "no probability on the scale's values")
            continue
        value = sum(k * p for k, p in probs.items()) / mass
        out[crit] = Expected(round(value, 4), None, round(min(mass, 1.0), 4))
    return out
