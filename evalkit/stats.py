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
from typing import Callable, Sequence

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


@dataclass(frozen=True)
class LengthControlled:
    """A length-controlled win rate (AlpacaEval 2.0's idea) beside the raw one."""

    estimate: float  # the modelled win rate at zero length difference
    low: float
    high: float
    raw: float  # the plain win rate (ties count half)
    length_coef: float  # the logistic coefficient of the (squashed) length difference: > 0, longer wins
    confidence: float
    n: int
    samples: np.ndarray  # the bootstrap estimates (for a one-sided test)

    def p_above(self, value: float = 0.5) -> float:
        """Two-sided bootstrap p-value for "the length-controlled win rate differs from ``value``"."""
        b = self.samples
        if b.size == 0:
            return 1.0
        below = (np.count_nonzero(b <= value) + 1) / (b.size + 1)
        above = (np.count_nonzero(b >= value) + 1) / (b.size + 1)
        return float(min(1.0, 2 * min(below, above)))


def _weighted_logit_fit(x: np.ndarray, y: np.ndarray, w: np.ndarray, iters: int = 25, ridge: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Newton's method for P(y) = sigmoid(a + b x), fractional y allowed (ties are 0.5), one fit per row of ``w``.

    ``w`` (B, n) holds case weights (bootstrap counts); returns (a, b), each of shape (B,). A small
    ridge keeps a perfectly separated sample (all wins) finite.
    """
    a = np.zeros(w.shape[0])
    b = np.zeros(w.shape[0])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(a[:, None] + b[:, None] * x[None, :])))
        r = w * (y[None, :] - p)
        q = w * p * (1.0 - p)
        g0 = r.sum(1) - ridge * a
        g1 = (r * x).sum(1) - ridge * b
        h00 = q.sum(1) + ridge
        h01 = (q * x).sum(1)
        h11 = (q * x * x).sum(1) + ridge
        det = h00 * h11 - h01 * h01
        da = (h11 * g0 - h01 * g1) / det
        db = (h00 * g1 - h01 * g0) / det
        a = np.clip(a + np.clip(da, -5, 5), -30, 30)
        b = np.clip(b + np.clip(db, -5, 5), -30, 30)
        if float(np.max(np.abs(da))) < 1e-8 and float(np.max(np.abs(db))) < 1e-8:
            break
    return a, b


def length_controlled_win_rate(
    values: Sequence[float],
    length_diffs: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = DEFAULT_SEED,
) -> LengthControlled:
    """The win rate a pairwise judge would give at equal answer lengths, with a bootstrap CI.

    A logistic model of the pairwise outcome (1 win, 0.5 tie, 0 loss) on the squashed length
    difference ``tanh(d / sd(d))`` (candidate minus compared, in characters), evaluated at zero
    difference: AlpacaEval 2.0's length-controlled win rate without its per-instruction term. A judge
    that prefers longer answers moves the raw rate but not this one; an unbiased judge leaves the two
    close. With no spread in the lengths the model has nothing to remove and the estimate is the raw
    rate's logistic fit. The CI is a seeded percentile bootstrap over items (the fit repeated on
    each resample).
    """
    y = np.asarray(list(values), dtype=float)
    d = np.asarray(list(length_diffs), dtype=float)
    if y.shape != d.shape:
        raise ValueError("values and length_diffs differ in length")
    n = int(y.size)
    if n == 0:
        return LengthControlled(float("nan"), float("nan"), float("nan"), float("nan"), 0.0, confidence, 0, np.empty(0))
    sd = float(d.std())
    x = np.tanh(d / sd) if sd > 0 else np.zeros(n)
    a, b = _weighted_logit_fit(x, y, np.ones((1, n)))
    est = float(1.0 / (1.0 + np.exp(-a[0])))
    rng = np.random.default_rng(seed)
    boots = []
    chunk = max(1, min(n_resamples, 2_000_000 // max(n, 1)))
    done = 0
    while done < n_resamples:
        k = min(chunk, n_resamples - done)
        w = rng.multinomial(n, np.full(n, 1.0 / n), size=k).astype(float)
        ab, _ = _weighted_logit_fit(x, y, w)
        boots.append(1.0 / (1.0 + np.exp(-ab)))
        done += k
    samples = np.concatenate(boots) if boots else np.empty(0)
    alpha = (1 - confidence) / 2
    low, high = (float(np.quantile(samples, alpha)), float(np.quantile(samples, 1 - alpha))) if samples.size else (est, est)
    return LengthControlled(est, min(low, est), max(high, est), float(y.mean()), float(b[0]), confidence, n, samples)


@dataclass(frozen=True)
class Alpha:
    """Krippendorff's alpha (nominal) with a bootstrap CI over units."""

    alpha: float | None  # None: no variation at all (every value the same), or no unit with two values
    ci_low: float | None
    ci_high: float | None
    units: int  # units with at least two values (the ones alpha uses)
    values: int  # the values in those units (pairable values)
    confidence: float

    def as_dict(self) -> dict[str, float | int | None | str]:
        r = lambda v: None if v is None else round(v, 4)  # noqa: E731
        return {"alpha": r(self.alpha), "ci_low": r(self.ci_low), "ci_high": r(self.ci_high), "units": self.units, "values": self.values,
                "level": "nominal", "confidence": self.confidence}


def krippendorff_alpha_nominal(units: Sequence[Sequence[object]], *, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0) -> Alpha:
    """Krippendorff's alpha for nominal data: ``units`` are the items, each the values its raters gave
    (any number of raters per item; missing ratings are simply absent). Units with fewer than two
    values carry no pairing information and are left out, as in Krippendorff's definition.

    alpha = 1 - (n - 1) * sum_{c != k} o_ck / sum_{c != k} n_c n_k, from the coincidence matrix
    o (each unit adds its ordered value pairs, weighted 1 / (m_u - 1)). The CI resamples units
    (seeded), vectorised: each unit's coincidence matrix is computed once.
    """
    kept = [list(u) for u in units if len(u) >= 2]
    cats = sorted({v for u in kept for v in u}, key=str)
    if not kept:
        return Alpha(None, None, None, 0, 0, confidence)
    index = {c: i for i, c in enumerate(cats)}
    k = len(cats)
    per_unit = np.zeros((len(kept), k * k))
    for row, u in enumerate(kept):
        counts = np.zeros(k)
        for v in u:
            counts[index[v]] += 1
        o = (np.outer(counts, counts) - np.diag(counts)) / (len(u) - 1)
        per_unit[row] = o.ravel()

    off = ~np.eye(k, dtype=bool).ravel()

    def alpha_of(o_flat: np.ndarray) -> np.ndarray:
        o = o_flat.reshape(-1, k, k)
        n_c = o.sum(axis=2)
        n = n_c.sum(axis=1)
        disagree = o.reshape(-1, k * k)[:, off].sum(axis=1)
        expected = (n_c.sum(axis=1) ** 2 - (n_c ** 2).sum(axis=1))  # sum_{c != k} n_c n_k
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(expected > 0, 1.0 - (n - 1) * disagree / expected, np.nan)

    point = float(alpha_of(per_unit.sum(axis=0, keepdims=True))[0])
    n_values = sum(len(u) for u in kept)
    if math.isnan(point):
        return Alpha(None, None, None, len(kept), n_values, confidence)
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(len(kept), np.full(len(kept), 1.0 / len(kept)), size=n_resamples)
    boots = alpha_of(weights @ per_unit)
    boots = boots[~np.isnan(boots)]
    lo = hi = None
    if boots.size:
        q = (1 - confidence) / 2
        lo, hi = float(np.quantile(boots, q)), float(np.quantile(boots, 1 - q))
    return Alpha(point, lo, hi, len(kept), n_values, confidence)


# --- several samples per item: pass@k, pass^k, the noise floor -----------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k for one item with ``c`` of ``n`` samples passing
    (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1):
    ``1 - C(n-c, k) / C(n, k)``, computed as a product so large n does not overflow.
    """
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_all_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass^k (all of k independent samples pass) for one item with ``c``
    of ``n`` samples passing: ``C(c, k) / C(n, k)`` (sampling k of the n without replacement;
    Yao et al. 2024, tau-bench's pass^k).
    """
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass^k needs 1 <= k <= n and 0 <= c <= n (n={n}, c={c}, k={k})")
    if c < k:
        return 0.0
    return float(np.prod((c - np.arange(k)) / (n - np.arange(k))))


def flip_probability(n: int, c: int) -> float:
    """The chance that two independent single samples of one item disagree, ``2 p (1 - p)``,
    estimated without bias from ``c`` of ``n`` samples passing: ``2 c (n - c) / (n (n - 1))``.
    Summed over items it is the number of items expected to flip between two runs of the same
    model: the noise floor a regression count should be read against.
    """
    if n < 2:
        return 0.0
    return 2.0 * c * (n - c) / (n * (n - 1))


# --- small-sample intervals for a proportion ----------------------------------------------------


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson's score interval for a binomial proportion (Wilson 1927; Brown, Cai & DasGupta 2001
    recommend it for small n, where the bootstrap and the Wald interval are too narrow).
    """
    if n <= 0:
        return Interval(float("nan"), float("nan"), float("nan"), confidence, 0)
    p = successes / n
    z = z_for(confidence)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), confidence, n)


def pass_rate_ci(passes: Sequence[float], confidence: float = 0.95) -> Interval:
    """The interval evalkit gives a pass rate (0/1 values): Wilson's score interval, at every n
    (the percentile bootstrap of 0/1 data is the binomial's own quantiles, zero-width at 0 % or
    100 %, and too narrow below a few hundred items; Bowyer et al., ICML 2025).
    """
    arr = _as_array(passes)
    return wilson_interval(int(arr.sum()), int(arr.size), confidence)


def is_binary(values: Sequence[float]) -> bool:
    arr = _as_array(values)
    return bool(arr.size) and bool(np.all((arr == 0.0) | (arr == 1.0)))


def clopper_pearson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """The exact (Clopper-Pearson 1934) interval for a binomial proportion: never below its
    nominal coverage, wider than Wilson's.
    """
    from scipy import stats as st

    if n <= 0:
        return Interval(float("nan"), float("nan"), float("nan"), confidence, 0)
    a = 1 - confidence
    lo = 0.0 if successes == 0 else float(st.beta.ppf(a / 2, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(st.beta.ppf(1 - a / 2, successes + 1, n - successes))
    return Interval(successes / n, lo, hi, confidence, n)


# --- power: the minimum detectable effect, and the items a comparison needs ----------------------


def _z(p: float) -> float:
    """The standard normal quantile (the stdlib's: power questions answer without importing scipy)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


def _smallest_root(gap: Callable[[float], float], hi: float) -> float | None:
    """The smallest d in (0, hi] where ``gap`` (increasing across its root) reaches 0, by bisection;
    None when even ``hi`` falls short (no effect that size can be detected).
    """
    if gap(hi) < 0:
        return None
    lo = 0.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gap(mid) < 0 else (lo, mid)
    return hi


def mde_mcnemar(n: int, discordance: float, *, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest difference in pass rates (candidate - baseline) a two-sided McNemar test on
    ``n`` paired items detects with ``power`` at ``alpha``, given the share of discordant pairs
    ``discordance`` (items where exactly one of the two passes).

    Connor (1987), "Sample size for testing differences in proportions for the paired-sample
    design": ``n = (z_{1-a/2} sqrt(psi) + z_{power} sqrt(psi - d^2))^2 / d^2``, solved for d.
    None when nothing short of every discordant pair going one way would be detected.
    """
    if n <= 0 or not 0 < discordance <= 1:
        return None
    za, zb = _z(1 - alpha / 2), _z(power)
    # d sqrt(n) = za sqrt(psi) + zb sqrt(psi - d^2), for d in (0, psi] (|d| <= psi)
    return _smallest_root(lambda d: d * math.sqrt(n) - (za * math.sqrt(discordance) + zb * math.sqrt(max(discordance - d * d, 0.0))), discordance)


def n_mcnemar(effect: float, discordance: float, *, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Paired items a two-sided McNemar test needs to detect a pass-rate difference ``effect``
    with ``power`` at ``alpha`` (Connor 1987). None when ``effect`` exceeds what the discordance allows.
    """
    if not 0 < effect <= discordance <= 1:
        return None
    za, zb = _z(1 - alpha / 2), _z(power)
    n = (za * math.sqrt(discordance) + zb * math.sqrt(discordance - effect * effect)) ** 2 / (effect * effect)
    return int(math.ceil(n - 1e-9))


def mde_paired_mean(n: int, sd_diff: float, *, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest mean per-item difference a two-sided paired test on ``n`` items detects with
    ``power`` at ``alpha``, given the standard deviation of the per-item differences (per-item pass
    fractions with several samples, judge-score means): ``(z_{1-a/2} + z_{power}) sd / sqrt(n)``.
    """
    if n <= 1 or not sd_diff > 0:
        return None
    return (_z(1 - alpha / 2) + _z(power)) * sd_diff / math.sqrt(n)


def n_paired_mean(effect: float, sd_diff: float, *, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Items a two-sided paired test needs to detect a mean per-item difference ``effect``."""
    if not effect > 0 or not sd_diff > 0:
        return None
    return int(math.ceil(((_z(1 - alpha / 2) + _z(power)) * sd_diff / effect) ** 2 - 1e-9))


def mde_one_proportion(n: int, p0: float, *, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest shortfall below a threshold ``p0`` a one-sided test of one pass rate on ``n``
    items detects with ``power`` at ``alpha`` (normal approximation:
    ``d sqrt(n) = z_{1-a} sqrt(p0 q0) + z_{power} sqrt(p1 q1)`` with ``p1 = p0 - d``).
    """
    if n <= 0 or not 0 < p0 < 1:
        return None
    za, zb = _z(1 - alpha), _z(power)

    return _smallest_root(lambda d: d * math.sqrt(n) - (za * math.sqrt(p0 * (1 - p0)) + zb * math.sqrt(max((p0 - d) * (1 - p0 + d), 0.0))), p0)


def n_one_proportion(effect: float, p0: float, *, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Items a one-sided test of one pass rate needs to detect a shortfall ``effect`` below ``p0``."""
    if not 0 < effect < p0 < 1:
        return None
    p1 = p0 - effect
    za, zb = _z(1 - alpha), _z(power)
    return int(math.ceil(((za * math.sqrt(p0 * (1 - p0)) + zb * math.sqrt(p1 * (1 - p1))) / effect) ** 2 - 1e-9))


# --- prediction-powered inference: judge scores on every item, human labels on some -----------------


@dataclass(frozen=True)
class PPIEstimate:
    """A prediction-powered mean (PPI++): unbiased for the human mean, its CI narrower than humans
    alone whenever the judge tracks them. ``lam`` is the power-tuning weight (0: humans only; 1: plain PPI).
    """

    mean: float
    ci: Interval
    lam: float
    n_labeled: int
    n_unlabeled: int


def ppi_mean(labels: Sequence[float], judged_labeled: Sequence[float], judged_unlabeled: Sequence[float], *,
             confidence: float = 0.95, lam: float | None = None) -> PPIEstimate:
    """The PPI++ estimate of the mean human label (Angelopoulos, Duchi & Zrnic, "PPI++: Efficient
    Prediction-Powered Inference", 2023; the mean case of Angelopoulos et al., Science 2023).

    ``labels[i]`` is the human label of an item whose judge score is ``judged_labeled[i]``;
    ``judged_unlabeled`` are the judge's scores on the items no human labelled. The estimate is
    ``mean(lam * judged_unlabeled) + mean(labels - lam * judged_labeled)``, with the power-tuning
    ``lam = cov(labels, judged) / ((1 + n/N) var(judged))`` clipped to [0, 1] (as ppi-python's
    ``ppi_mean_ci`` with ``lam=None``), and a normal CI from the two parts' variances. A judge that
    says nothing (constant scores), or no unlabeled item, leaves the human mean (``lam`` 0).
    """
    y = _as_array(labels)
    yh = _as_array(judged_labeled)
    yu = _as_array(judged_unlabeled)
    n, big_n = y.size, yu.size
    if n == 0 or n != yh.size:
        raise ValueError("ppi_mean needs one judge score per human label, and at least one label")
    if lam is None:
        pooled = np.concatenate([yh, yu])
        var = float(np.var(pooled, ddof=1)) if pooled.size > 1 else 0.0
        if big_n == 0 or var <= 0:
            lam = 0.0
        else:
            cov = float(((y - y.mean()) * (yh - yh.mean())).sum() / n)
            lam = float(np.clip(cov / ((1 + n / big_n) * var), 0.0, 1.0))
    mean = (float((lam * yu).mean()) if big_n else 0.0) + float((y - lam * yh).mean())
    var_total = (float(np.std(lam * yu)) ** 2 / big_n if big_n else 0.0) + float(np.std(y - lam * yh)) ** 2 / n
    half = z_for(confidence) * math.sqrt(var_total)
    return PPIEstimate(mean, Interval(mean, mean - half, mean + half, confidence, n + big_n), float(lam), n, big_n)


def classical_mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The normal CI of a mean (numpy's population standard deviation, as ppi-python's classical one)."""
    arr = _as_array(values)
    m = float(arr.mean())
    half = z_for(confidence) * float(arr.std()) / math.sqrt(arr.size)
    return Interval(m, m - half, m + half, confidence, int(arr.size))


# --- anytime-valid tests by betting: look after every block, stop when decided -----------------------


@dataclass(frozen=True)
class SequentialDecision:
    """An anytime-valid one-sided test of a [0, 1]-bounded mean against ``theta``, looked at after each
    block: ``side`` is ``above`` (the mean is above theta: H0 mean <= theta rejected), ``below`` (H0
    mean >= theta rejected) or None (not decided); ``at`` the observations it took; ``low`` / ``high``
    the one-sided confidence bounds at that point (each at level alpha).
    """

    side: str | None
    at: int
    low: float
    high: float
    looks: int


def _plugin_lambdas(x: np.ndarray, alpha: float) -> np.ndarray:
    """Waudby-Smith & Ramdas's predictable plug-in bets (JRSS-B 2024, eq. (26), one-sided): lambda_t uses
    only x_1..x_{t-1}, a variance estimate shrunk toward 1/4. Broadcasts over leading axes (runs).
    """
    t = np.arange(1, x.shape[-1] + 1)
    mu = (0.5 + np.cumsum(x, axis=-1)) / (t + 1)
    prev_mu = np.concatenate([np.full(x.shape[:-1] + (1,), 0.5), mu[..., :-1]], axis=-1)
    sigma2 = (0.25 + np.cumsum((x - prev_mu) ** 2, axis=-1)) / (t + 1)
    prev_sigma2 = np.concatenate([np.full(x.shape[:-1] + (1,), 0.25), sigma2[..., :-1]], axis=-1)
    return np.sqrt(2 * math.log(1 / alpha) / (prev_sigma2 * t * np.log(t + 1)))


def betting_capital(x: np.ndarray, theta: float | np.ndarray, alpha: float, *, c: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The two one-sided capital processes of betting against ``mean = theta`` (Waudby-Smith & Ramdas,
    "Estimating means of bounded random variables by betting", JRSS-B 2024): ``up_t = prod(1 + l_i (x_i -
    theta))`` grows when the mean is above theta, ``down_t = prod(1 - l_i (x_i - theta))`` when below;
    bets capped at ``c / theta`` and ``c / (1 - theta)`` so no factor can reach 0. By Ville's inequality
    each exceeds ``1 / alpha`` at any time with probability at most alpha under its null. Returns the
    log-capitals, cumulated along the last axis (``theta`` broadcasts against the leading axes).
    """
    lam = _plugin_lambdas(x, alpha)
    th = np.asarray(theta, dtype=float)[..., None] if np.ndim(theta) else float(theta)
    with np.errstate(divide="ignore"):
        up_cap = np.where(th > 0, c / np.maximum(th, 1e-12), np.inf)
        down_cap = np.where(th < 1, c / np.maximum(1 - th, 1e-12), np.inf)
    up = np.cumsum(np.log1p(np.minimum(lam, up_cap) * (x - th)), axis=-1)
    down = np.cumsum(np.log1p(-np.minimum(lam, down_cap) * (x - th)), axis=-1)
    return up, down


def sequential_test(values: Sequence[float], theta: float, *, alpha: float = 0.05, looks: Sequence[int] | None = None,
                    grid: int = 400) -> SequentialDecision:
    """Test ``mean > theta`` against ``mean < theta`` on [0, 1] observations in their (random) order,
    looking only at ``looks`` (the observation counts at block ends; default every one): the first look
    where one capital process passes ``1 / alpha`` decides. Each wrong decision has probability at most
    alpha (Ville's inequality holds at every stopping time), unlike a fixed-n test repeated per block.
    """
    x = np.clip(_as_array(values), 0.0, 1.0)
    n = x.size
    points = [k for k in (looks or range(1, n + 1)) if 1 <= k <= n] or ([n] if n else [])
    if not n:
        return SequentialDecision(None, 0, 0.0, 1.0, 0)
    up, down = betting_capital(x, theta, alpha)
    bar = math.log(1 / alpha)
    side, at, seen = None, points[-1], 0
    for k in points:
        seen += 1
        if up[k - 1] >= bar:
            side, at = "above", k
            break
        if down[k - 1] >= bar:
            side, at = "below", k
            break
    low, high = confidence_bounds(x[:at], alpha=alpha, grid=grid)
    return SequentialDecision(side, at, low, high, seen)


def confidence_bounds(values: Sequence[float] | np.ndarray, *, alpha: float = 0.05, grid: int = 400) -> tuple[float, float]:
    """The one-sided betting confidence bounds on a [0, 1] mean after these observations: the lowest m
    whose "above" capital stays under 1/alpha, the highest whose "below" capital does (each at level alpha).
    """
    x = np.clip(_as_array(values), 0.0, 1.0) if not isinstance(values, np.ndarray) else values
    if x.size == 0:
        return 0.0, 1.0
    m = np.linspace(0.0, 1.0, grid + 1)
    up, down = betting_capital(np.broadcast_to(x, (m.size, x.size)), m, alpha)
    bar = math.log(1 / alpha)
    keep_low = m[up.max(axis=-1) < bar]  # m not rejected by "the mean is above m" at any point so far (running intersection)
    keep_high = m[down.max(axis=-1) < bar]
    return (float(keep_low.min()) if keep_low.size else 1.0), (float(keep_high.max()) if keep_high.size else 0.0)
