"""Scoring by log-likelihood: multiple-choice items (``choice``, ``choice_norm``) and perplexity texts.

A multiple-choice item is scored from the summed log-probability of each continuation given its
context, as lm-evaluation-harness scores ``acc`` and ``acc_norm``:

- ``choice``: the choice with the highest log-probability is the model's pick;
- ``choice_norm``: the highest log-probability per character of the continuation (lm-eval's
  ``acc_norm``), which does not favour short choices.

Ties go to the first choice (``numpy.argmax``, as lm-eval). A perplexity text contributes its rolling
log-likelihood, its word count (``re.split(r"\\s+", text)``) and its UTF-8 byte count; a suite's word
perplexity, byte perplexity and bits per byte weight every text by its words or bytes (lm-eval's
``weighted_perplexity`` and ``bits_per_byte``).
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

from ..types import Sample, Score

CHOICE_SCORERS: tuple[str, ...] = ("choice", "choice_norm")


def _argmax(values: Sequence[float]) -> int:
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def pick(sample: Sample, logprobs: Sequence[float], scorer: str) -> int:
    """The index ``scorer`` picks from one item's per-choice log-probabilities."""
    if scorer == "choice_norm":
        return _argmax([lp / len(c) for lp, c in zip(logprobs, sample.choices)])
    return _argmax(logprobs)


def choice_scores(sample: Sample, logprobs: Sequence[float], scorers: Iterable[str] = CHOICE_SCORERS) -> dict[str, Score]:
    """``choice`` / ``choice_norm`` of one multiple-choice item: passed when the pick is ``answer``."""
    out: dict[str, Score] = {}
    if len(logprobs) != len(sample.choices):
        for name in scorers:
            out[name] = Score(name, None, None, error=f"{len(logprobs)} log-probabilities for {len(sample.choices)} choices")
        return out
    for name in scorers:
        i = pick(sample, logprobs, name)
        ok = i == sample.answer
        out[name] = Score(name, 1.0 if ok else 0.0, ok, explanation=f"picked choice {i} {sample.choices[i]!r}; the answer is choice {sample.answer}",
                          details={"pick": i, "answer": sample.answer})
    return out


def words_and_bytes(text: str) -> tuple[int, int]:
    """A perplexity text's word count and UTF-8 byte count (lm-eval's wikitext counting)."""
    return len(re.split(r"\s+", text)), len(text.encode("utf-8"))


def perplexities(texts: Iterable[tuple[float, str]]) -> dict[str, float]:
    """Word perplexity, byte perplexity and bits per byte of ``(log-likelihood, text)`` pairs."""
    ll = words = nbytes = 0.0
    for value, text in texts:
        w, b = words_and_bytes(text)
        ll, words, nbytes = ll + value, words + w, nbytes + b
    if not words or not nbytes:
        raise ValueError("no text to measure")
    return {
        "word_perplexity": math.exp(-ll / words),
        "byte_perplexity": math.exp(-ll / nbytes),
        "bits_per_byte": -ll / nbytes / math.log(2),
    }
