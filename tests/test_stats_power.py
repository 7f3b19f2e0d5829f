"""Samples, small-sample intervals and power: checked against their definitions, statsmodels, and
simulation (McNemar's power has no closed form in statsmodels: a Monte Carlo of the exact test).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from evalkit import stats as S


@pytest.mark.parametrize("n,c", [(1, 0), (1, 1), (5, 0), (5, 2), (5, 5), (10, 3), (20, 17)])
def test_pass_at_k_and_pass_all_k_match_their_combinatorial_definitions(n, c):
    outcomes = [1] * c + [0] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(outcomes, k))
        any_pass = sum(1 for s in subsets if any(s)) / len(subsets)
        all_pass = sum(1 for s in subsets if all(s)) / len(subsets)
        assert S.pass_at_k(n, c, k) == pytest.approx(any_pass, abs=1e-12)
        assert S.pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)
        assert S.pass_all_k(n, c, k) == pytest.approx(all_pass, abs=1e-12)
    assert S.pass_at_k(n, c, 1) == pytest.approx(c / n)


def test_pass_at_k_is_stable_for_large_n():
    assert S.pass_at_k(1000, 1, 500) == pytest.approx(0.5)
    assert 0.0 <= S.pass_at_k(200, 3, 7) <= 1.0


@pytest.mark.parametrize("n,c,k", [(0, 0, 1), (5, 6, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        S.pass_at_k(n, c, k)
    with pytest.raises(ValueError):
        S.pass_all_k(n, c, k)


@pytest.mark.parametrize("n,c", [(2, 1), (5, 2), (5, 0), (8, 8), (9, 4)])
def test_flip_probability_is_the_chance_two_draws_disagree(n, c):
    outcomes = [1] * c + [0] * (n - c)
    pairs = list(itertools.permutations(range(n), 2))
    disagree = sum(1 for i, j in pairs if outcomes[i] != outcomes[j]) / len(pairs)
    assert S.flip_probability(n, c) == pytest.approx(disagree)
    assert S.flip_probability(1, 1) == 0.0


def test_flip_probability_is_unbiased_for_2pq():
    """Averaged over many K-sample draws of an item that passes with p, it gives 2p(1-p)."""
    rng = np.random.default_rng(0)
    p, k = 0.3, 4
    est = np.mean([S.flip_probability(k, int(c)) for c in rng.binomial(k, p, size=40_000)])
    assert est == pytest.approx(2 * p * (1 - p), abs=0.01)


@pytest.mark.parametrize("x,n", [(0, 5), (3, 10), (8, 10), (10, 10), (47, 120)])
def test_wilson_and_clopper_pearson_match_statsmodels(x, n):
    from statsmodels.stats.proportion import proportion_confint

    for conf in (0.9, 0.95):
        w = S.wilson_interval(x, n, conf)
        cp = S.clopper_pearson_interval(x, n, conf)
        assert (w.low, w.high) == pytest.approx(proportion_confint(x, n, alpha=1 - conf, method="wilson"), abs=1e-9)
        assert (cp.low, cp.high) == pytest.approx(proportion_confint(x, n, alpha=1 - conf, method="beta"), abs=1e-9)
        assert cp.low <= w.low + 1e-12 or x == 0  # the exact interval is the wider one


@pytest.mark.parametrize("n,sd", [(20, 0.3), (100, 0.5), (400, 1.2)])
def test_paired_mean_power_matches_statsmodels(n, sd):
    from statsmodels.stats.power import NormalIndPower

    d = NormalIndPower().solve_power(effect_size=None, nobs1=n, alpha=0.05, power=0.8, ratio=0)  # ratio 0: one sample
    assert S.mde_paired_mean(n, sd) == pytest.approx(d * sd, rel=1e-4)
    effect = S.mde_paired_mean(n, sd)
    assert S.n_paired_mean(effect, sd) in (n, n + 1)
    need = NormalIndPower().solve_power(effect_size=0.1 / sd, nobs1=None, alpha=0.05, power=0.8, ratio=0)
    assert S.n_paired_mean(0.1, sd) == math.ceil(need - 1e-3)


def test_mcnemar_mde_gives_its_power_in_simulation():
    """At the MDE, the exact McNemar test rejects in about 80 % of simulated paired runs."""
    rng = np.random.default_rng(1)
    n, psi = 200, 0.2
    mde = S.mde_mcnemar(n, psi)
    assert mde is not None and 0 < mde < psi
    p_worse, p_better = (psi - mde) / 2, (psi + mde) / 2  # the candidate is better by mde
    sims = 3000
    counts = rng.multinomial(n, [p_worse, p_better, 1 - psi], size=sims)
    rejected = sum(1 for w, b, _ in counts if S.mcnemar_exact_counts(int(w), int(b)).p_value < 0.05)
    assert rejected / sims == pytest.approx(0.8, abs=0.05)  # the exact test is a little conservative
    assert S.n_mcnemar(mde, psi) in (n, n + 1)
    assert S.n_mcnemar(0.3, 0.2) is None and S.mde_mcnemar(0, 0.2) is None and S.mde_mcnemar(5, 0.01) is None


def test_one_proportion_mde_gives_its_power_in_simulation():
    rng = np.random.default_rng(2)
    n, p0 = 3000, 0.8  # large enough that the binomial's steps do not move the normal approximation
    mde = S.mde_one_proportion(n, p0)
    assert mde is not None
    x = rng.binomial(n, p0 - mde, size=20_000)
    z = (x / n - p0) / math.sqrt(p0 * (1 - p0) / n)
    from scipy.stats import norm

    assert float(np.mean(z < norm.ppf(0.05))) == pytest.approx(0.8, abs=0.02)
    assert S.n_one_proportion(mde, p0) in (n, n + 1)
