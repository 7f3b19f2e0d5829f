"""Statistics for gates and reports, all through scipy: seeded bootstrap confidence intervals
(paired for differences), McNemar's exact test for paired pass/fail, the Wilcoxon signed-rank test
for paired scores, and a binomial sign test for pairwise wins.

Every function takes plain sequences and returns plain floats, so gates, reports and ``evalkit
compare`` share one implementation. Degenerate inputs (no data, every value equal) give the answer
a statistician would write down (a zero-width interval, p = 1) instead of NaN and a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    n: int

    def straddles(self, threshold: float) -> bool:
        """True when the threshold lies strictly inside the interval: the data cannot decide."""
        return self.low < threshold < self.high

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "confidence": self.confidence, "n": self.n}


def _as_array(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    return arr[~np.isnan(arr)] if arr.size else arr


def bootstrap_ci(
    values: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """Percentile bootstrap CI of the mean (a pass rate is the mean of 0/1 values), seeded.

    Uses ``scipy.stats.bootstrap`` (vectorised). NaN values are dropped; with fewer than two
    distinct values the interval has zero width.
    """
    from scipy import stats

    arr = _as_array(values)
    n = int(arr.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, confidence, 0)
    est = float(arr.mean())
    if n < 2 or float(arr.min()) == float(arr.max()):
        return Interval(est, est, est, confidence, n)
    if np.all((arr == 0.0) | (arr == 1.0)):
        # A pass rate: the mean of n resampled 0/1 values is Binomial(n, p)/n, so the percentile
        # bootstrap's limit (infinitely many resamples) is read off scipy's binomial quantiles:
        # exact, fast on 10,000 items, and no resampling noise.
        alpha = (1 - confidence) / 2
        low = float(stats.binom.ppf(alpha, n, est)) / n
        high = float(stats.binom.ppf(1 - alpha, n, est)) / n
        return Interval(est, low, high, confidence, n)
    if n > _DISCRETE_MIN_N:
        fast = _discrete_bootstrap(arr, confidence, n_resamples, seed)
        if fast is not None:
            return Interval(est, fast[0], fast[1], confidence, n)
    res = stats.bootstrap(
        (arr,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        vectorized=True,
        batch=max(1, min(n_resamples, 2_000_000 // n)),
        rng=np.random.default_rng(seed),
    )
    return Interval(est, float(res.confidence_interval.low), float(res.confidence_interval.high), confidence, n)


def paired_bootstrap_diff_ci(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """CI of mean(b - a) resampling *pairs* (items), so item difficulty cancels out.

    ``a`` and ``b`` are aligned (the same items in the same order); pairs with a NaN are dropped.
    """
    from scipy import stats

    x = np.asarray(list(a), dtype=float)
    y = np.asarray(list(b), dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, confidence, 0)
    d = y - x
    est = float(d.mean())
    if n < 2 or float(d.min()) == float(d.max()):
        return Interval(est, est, est, confidence, n)
    if n > _DISCRETE_MIN_N:
        # resampling pairs and taking mean(b - a) is resampling the differences
        fast = _discrete_bootstrap(d, confidence, n_resamples, seed)
        if fast is not None:
            return Interval(est, fast[0], fast[1], confidence, n)
    res = stats.bootstrap(
        (x, y),
        lambda u, v, axis=-1: np.mean(v - u, axis=axis),
        paired=True,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="percentile",
        vectorized=True,
        batch=max(1, min(n_resamples, 2_000_000 // n)),
        rng=np.random.default_rng(seed),
    )
    return Interval(est, float(res.confidence_interval.low), float(res.confidence_interval.high), confidence, n)


_DISCRETE_MIN_N = 500  # below this, scipy.stats.bootstrap itself is fast enough
_DISCRETE_MAX_LEVELS = 32


def _discrete_bootstrap(arr: np.ndarray, confidence: float, n_resamples: int, seed: int) -> tuple[float, float] | None:
    """The percentile bootstrap of a mean for data with few distinct values (judge scores 1-5,
    win/tie/loss, paired pass/fail differences), drawn as multinomial counts over the levels.

    A resample of n items is fully described by how many times each level was drawn, which is
    Multinomial(n, observed shares): the same bootstrap distribution as resampling items, at
    O(levels) per resample instead of O(n). None when there are too many levels.
    """
    from scipy import stats

    levels, counts = np.unique(arr, return_counts=True)
    if levels.size > _DISCRETE_MAX_LEVELS:
        return None
    n = int(arr.size)
    draws = stats.multinomial.rvs(n, counts / n, size=n_resamples, random_state=np.random.default_rng(seed))
    means = np.asarray(draws, dtype=float).reshape(n_resamples, -1) @ levels / n
    alpha = (1 - confidence) / 2
    low, high = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


@dataclass(frozen=True)
class TestResult:
    """A paired test: its name, the p-value (two-sided), and the counts it was computed from."""

    test: str
    p_value: float
    statistic: float
    n: int
    detail: str

    def as_dict(self) -> dict[str, float | str | int]:
        return {"test": self.test, "p_value": self.p_value, "statistic": self.statistic, "n": self.n, "detail": self.detail}


def mcnemar_exact(a_passed: Sequence[bool], b_passed: Sequence[bool]) -> TestResult:
    """McNemar's exact test on paired pass/fail: only discordant pairs count.

    ``worse`` = pairs that pass on ``a`` and fail on ``b`` (regressions), ``better`` the reverse;
    under H0 each discordant pair is a fair coin, so p = two-sided binomial test of
    ``worse`` out of ``worse + better`` at 0.5 (``scipy.stats.binomtest``).
    """

    if len(a_passed) != len(b_passed):
        raise ValueError(f"paired samples differ in length: {len(a_passed)} vs {len(b_passed)}")
    worse = sum(1 for x, y in zip(a_passed, b_passed) if x and not y)
    better = sum(1 for x, y in zip(a_passed, b_passed) if y and not x)
    return mcnemar_exact_counts(worse, better)


def mcnemar_exact_counts(worse: int, better: int) -> TestResult:
    """McNemar's exact test from the two discordant counts."""
    from scipy import stats

    n = worse + better
    p = 1.0 if n == 0 else float(stats.binomtest(worse, n, 0.5, alternative="two-sided").pvalue)
    return TestResult("mcnemar_exact", min(p, 1.0), float(min(worse, better)), n, f"{worse} worse, {better} better")


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float]) -> TestResult:
    """Wilcoxon signed-rank test on paired scores (b - a), two-sided (``scipy.stats.wilcoxon``).

    Zero differences are dropped (``zero_method="wilcox"``); with no non-zero difference p = 1.
    """
    from scipy import stats

    x = np.asarray(list(a), dtype=float)
    y = np.asarray(list(b), dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    d = (y - x)[keep]
    nz = int(np.count_nonzero(d))
    up = int((d > 0).sum())
    down = int((d < 0).sum())
    detail = f"{up} higher, {down} lower, {int(d.size) - nz} equal"
    if nz == 0:
        return TestResult("wilcoxon", 1.0, 0.0, 0, detail)
    res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    return TestResult("wilcoxon", float(res.pvalue), float(res.statistic), nz, detail)


def sign_test(wins: int, losses: int) -> TestResult:
    """Binomial sign test for pairwise wins: ties are dropped, H0 wins and losses equally likely."""
    from scipy import stats

    n = wins + losses
    p = 1.0 if n == 0 else float(stats.binomtest(wins, n, 0.5, alternative="two-sided").pvalue)
    return TestResult("sign_test", min(p, 1.0), float(wins), n, f"{wins} wins, {losses} losses (ties dropped)")


def z_for(confidence: float) -> float:
    """The two-sided normal quantile for a confidence level (0.95 -> 1.96)."""
    from scipy import stats

    return float(stats.norm.ppf(0.5 + confidence / 2))
