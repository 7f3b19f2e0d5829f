"""evalkit.stats against scipy's own results on fixed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from evalkit import stats

SCORES_A = [3.0, 4.0, 2.0, 5.0, 3.0, 4.0, 2.0, 3.0, 4.0, 1.0, 3.0, 5.0, 2.0, 4.0, 3.0]
SCORES_B = [4.0, 4.0, 3.0, 5.0, 4.0, 5.0, 3.0, 3.0, 5.0, 2.0, 4.0, 5.0, 2.0, 5.0, 4.5]


def test_bootstrap_ci_matches_scipy_percentile_bootstrap():
    iv = stats.bootstrap_ci(SCORES_A, confidence=0.9, n_resamples=3000, seed=7)
    ref = sps.bootstrap((np.array(SCORES_A),), np.mean, confidence_level=0.9, n_resamples=3000, method="percentile", rng=np.random.default_rng(7))
    assert iv.estimate == pytest.approx(np.mean(SCORES_A))
    assert iv.low == pytest.approx(ref.confidence_interval.low)
    assert iv.high == pytest.approx(ref.confidence_interval.high)
    assert iv.low < iv.estimate < iv.high and iv.n == len(SCORES_A)


def test_bootstrap_is_seeded():
    a = stats.bootstrap_ci(SCORES_A, seed=1)
    b = stats.bootstrap_ci(SCORES_A, seed=1)
    c = stats.bootstrap_ci(SCORES_A, seed=2)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)


def test_pass_rate_ci_is_the_bootstrap_limit():
    """For 0/1 data the percentile bootstrap converges to binomial quantiles: compare with scipy's
    resampling bootstrap at many resamples.
    """
    values = [1.0] * 70 + [0.0] * 30
    iv = stats.bootstrap_ci(values, confidence=0.95)
    ref = sps.bootstrap((np.array(values),), np.mean, confidence_level=0.95, n_resamples=20000, method="percentile", rng=np.random.default_rng(0))
    assert iv.estimate == pytest.approx(0.7)
    assert iv.low == pytest.approx(ref.confidence_interval.low, abs=0.011)
    assert iv.high == pytest.approx(ref.confidence_interval.high, abs=0.011)
    assert iv.low == pytest.approx(sps.binom.ppf(0.025, 100, 0.7) / 100)


def test_bootstrap_degenerate_inputs():
    assert math.isnan(stats.bootstrap_ci([]).estimate)
    iv = stats.bootstrap_ci([1.0, 1.0, 1.0])
    assert (iv.low, iv.estimate, iv.high) == (1.0, 1.0, 1.0)
    iv = stats.bootstrap_ci([2.0, float("nan"), 4.0])
    assert iv.n == 2 and iv.estimate == 3.0


def test_paired_bootstrap_matches_scipy_paired():
    iv = stats.paired_bootstrap_diff_ci(SCORES_A, SCORES_B, confidence=0.95, n_resamples=3000, seed=3)
    ref = sps.bootstrap(
        (np.array(SCORES_A), np.array(SCORES_B)), lambda a, b, axis=-1: np.mean(b - a, axis=axis),
        paired=True, confidence_level=0.95, n_resamples=3000, method="percentile", rng=np.random.default_rng(3),
    )
    assert iv.estimate == pytest.approx(np.mean(np.array(SCORES_B) - np.array(SCORES_A)))
    assert iv.low == pytest.approx(ref.confidence_interval.low)
    assert iv.high == pytest.approx(ref.confidence_interval.high)
    # pairing matters: the paired CI is narrower than the CI of the difference of unpaired means
    unpaired_width = 2 * 1.96 * math.sqrt(np.var(SCORES_A, ddof=1) / 15 + np.var(SCORES_B, ddof=1) / 15)
    assert iv.high - iv.low < unpaired_width


def test_mcnemar_exact_against_binomtest():
    a = [True] * 20 + [False] * 10
    b = [True] * 12 + [False] * 8 + [True] * 2 + [False] * 8  # 8 worse, 2 better
    t = stats.mcnemar_exact(a, b)
    assert t.p_value == pytest.approx(sps.binomtest(8, 10, 0.5).pvalue)
    # and against the textbook formula: p = 2 * P(X <= min(b, c)), X ~ Bin(n, 0.5)
    assert t.p_value == pytest.approx(min(1.0, 2 * sps.binom.cdf(2, 10, 0.5)))
    assert t.n == 10 and "8 worse, 2 better" in t.detail
    assert stats.mcnemar_exact([True, False], [True, False]).p_value == 1.0


def test_wilcoxon_against_scipy():
    t = stats.wilcoxon_signed_rank(SCORES_A, SCORES_B)
    d = np.array(SCORES_B) - np.array(SCORES_A)
    ref = sps.wilcoxon(d, zero_method="wilcox")
    assert t.p_value == pytest.approx(ref.pvalue) and t.statistic == pytest.approx(ref.statistic)
    assert t.n == int(np.count_nonzero(d))
    assert stats.wilcoxon_signed_rank([1.0, 2.0], [1.0, 2.0]).p_value == 1.0


def test_sign_test_against_binomtest():
    t = stats.sign_test(14, 4)
    assert t.p_value == pytest.approx(sps.binomtest(14, 18, 0.5).pvalue)
    assert stats.sign_test(0, 0).p_value == 1.0


def test_interval_straddles():
    iv = stats.Interval(0.6, 0.4, 0.8, 0.95, 10)
    assert iv.straddles(0.7) and not iv.straddles(0.9) and not iv.straddles(0.4)
    assert stats.z_for(0.95) == pytest.approx(1.959964, abs=1e-5)


def test_large_discrete_samples_take_the_multinomial_path_and_agree_with_scipy():
    """Judge scores on many items: the multinomial draw is the same bootstrap distribution as
    scipy's item resampling (compared at 20,000 resamples), and it is seeded.
    """
    rng = np.random.default_rng(5)
    scores = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], size=800, p=[0.05, 0.1, 0.3, 0.35, 0.2])
    iv = stats.bootstrap_ci(scores, n_resamples=10000, seed=1)
    ref = sps.bootstrap((scores,), np.mean, confidence_level=0.95, n_resamples=10000, method="percentile", rng=np.random.default_rng(1))
    assert iv.low == pytest.approx(ref.confidence_interval.low, abs=0.012)
    assert iv.high == pytest.approx(ref.confidence_interval.high, abs=0.012)
    assert stats.bootstrap_ci(scores, seed=1) == stats.bootstrap_ci(scores, seed=1)
    a = rng.integers(0, 2, size=800).astype(float)
    b = np.where(rng.random(800) < 0.1, 1 - a, a)
    pv = stats.paired_bootstrap_diff_ci(a, b, n_resamples=10000)
    ref = sps.bootstrap((a, b), lambda x, y, axis=-1: np.mean(y - x, axis=axis), paired=True, n_resamples=10000,
                        method="percentile", rng=np.random.default_rng(0))
    assert pv.low == pytest.approx(ref.confidence_interval.low, abs=0.008)
    assert pv.high == pytest.approx(ref.confidence_interval.high, abs=0.008)
