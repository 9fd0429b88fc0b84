"""stats: intervals and tests against independent computations on small known cases."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from cifarbench.eval import stats


def normal_interval(values):
    values = np.asarray(values, dtype=np.float64)
    half = 1.959964 * values.std() / math.sqrt(values.size)
    return values.mean() - half, values.mean() + half


def test_bootstrap_matches_normal_approximation_for_accuracy():
    n, p = 10_000, 0.95
    correct = np.zeros(n)
    correct[: int(p * n)] = 1.0
    np.random.default_rng(1).shuffle(correct)
    lo, hi = stats.bootstrap_ci(correct, resamples=1000, seed=0)
    half = 1.96 * math.sqrt(p * (1 - p) / n)  # 0.43 points
    # Within 0.06 accuracy points of p -/+ 1.96 sqrt(p(1-p)/n) (Monte Carlo error of
    # a 2.5% quantile from 1000 resamples is about 0.02 points here).
    assert lo == pytest.approx(p - half, abs=6e-4)
    assert hi == pytest.approx(p + half, abs=6e-4)
    assert lo < p < hi


def test_bootstrap_of_seed_averaged_correctness():
    # Per-image correctness averaged over 3 training seeds: values in {0, 1/3, 2/3, 1}.
    rng = np.random.default_rng(2)
    values = rng.choice([0.0, 1 / 3, 2 / 3, 1.0], size=5000, p=[0.05, 0.05, 0.1, 0.8])
    lo, hi = stats.bootstrap_ci(values, resamples=2000, seed=3)
    expected_lo, expected_hi = normal_interval(values)
    assert lo == pytest.approx(expected_lo, abs=4e-4)
    assert hi == pytest.approx(expected_hi, abs=4e-4)


def test_bootstrap_is_deterministic_and_seeded():
    values = (np.random.default_rng(4).random(2000) < 0.7).astype(float)
    first = stats.bootstrap_ci(values, resamples=500, seed=7)
    assert stats.bootstrap_ci(values, resamples=500, seed=7) == first
    assert stats.bootstrap_ci(values, resamples=500, seed=8) != first
    assert all(isinstance(x, float) for x in first)
    wider = stats.bootstrap_ci(values, resamples=500, seed=7, level=0.99)
    assert wider[0] < first[0] and wider[1] > first[1]


def test_bootstrap_of_constant_values_is_a_point():
    assert stats.bootstrap_ci(np.ones(100)) == (1.0, 1.0)


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        stats.bootstrap_ci([])
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_ci([0, 1], level=95)


def test_paired_bootstrap_uses_the_pairing():
    # Two models that agree on most images: the paired interval of the difference is far
    # narrower than treating the two accuracies as independent would give.
    rng = np.random.default_rng(5)
    n = 10_000
    a = (rng.random(n) < 0.9).astype(float)
    b = a.copy()
    flip = rng.random(n) < 0.04
    b[flip] = 1 - b[flip]
    diff, lo, hi = stats.paired_bootstrap_ci(a, b, resamples=1000, seed=0)
    assert diff == pytest.approx(a.mean() - b.mean())
    expected_lo, expected_hi = normal_interval(a - b)
    assert lo == pytest.approx(expected_lo, abs=3e-4)
    assert hi == pytest.approx(expected_hi, abs=3e-4)
    unpaired_half = 1.96 * math.sqrt(a.var() / n + b.var() / n)
    assert (hi - lo) / 2 < 0.5 * unpaired_half
    with pytest.raises(ValueError, match="same images"):
        stats.paired_bootstrap_ci(a, b[:-1])


def test_mcnemar_against_hand_counted_table():
    # 2x2 table: both right 5, only a right 7, only b right 2, both wrong 3.
    a = np.array([1] * 5 + [1] * 7 + [0] * 2 + [0] * 3, dtype=bool)
    b = np.array([1] * 5 + [0] * 7 + [1] * 2 + [0] * 3, dtype=bool)
    # Discordant pairs: 9, the smaller count 2. P[X <= 2] for X ~ Bin(9, 1/2).
    tail = sum(math.comb(9, k) for k in range(3)) / 2**9  # (1 + 9 + 36) / 512
    expected = 2 * tail
    assert expected == pytest.approx(92 / 512)
    p = stats.mcnemar_exact(a, b)
    assert p == pytest.approx(expected, rel=1e-12)
    assert p == pytest.approx(sps.binomtest(2, 9, 0.5).pvalue, rel=1e-12)
    assert stats.mcnemar_exact(b, a) == pytest.approx(p, rel=1e-12)  # symmetric


def test_mcnemar_edge_cases():
    same = np.array([1, 0, 1, 1], dtype=bool)
    assert stats.mcnemar_exact(same, same) == 1.0  # no discordant pair
    # Balanced discordant counts: 2 * P[X <= 3] for Bin(6, 1/2) exceeds 1, capped.
    a = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    assert stats.mcnemar_exact(a, ~a) == 1.0
    # All 10 discordant pairs one way: p = 2 / 2**10.
    assert stats.mcnemar_exact(np.ones(10), np.zeros(10)) == pytest.approx(2 / 1024)


def test_holm_hand_worked_example():
    # Sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06
    # after the running maximum). Step-down at 0.05: reject 0.005 and 0.01, stop at 0.03.
    adjusted, reject = stats.holm([0.01, 0.04, 0.03, 0.005], alpha=0.05)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert reject == [True, False, False, True]
    adjusted, reject = stats.holm([0.5, 0.6])
    assert adjusted == pytest.approx([1.0, 1.0])  # capped at 1
    assert reject == [False, False]
    assert stats.holm([]) == ([], [])
    with pytest.raises(ValueError):
        stats.holm([0.1, 1.5])


def test_holm_agrees_with_step_down_definition_on_random_pvalues():
    p = np.random.default_rng(6).random(12) ** 3
    _, reject = stats.holm(p, alpha=0.05)
    expected = [False] * p.size
    for rank, index in enumerate(np.argsort(p)):
        if p[index] > 0.05 / (p.size - rank):
            break
        expected[index] = True
    assert reject == expected


def test_t_interval_against_scipy():
    accuracies = [0.951, 0.948, 0.955, 0.950, 0.946]
    mean, lo, hi = stats.t_interval(accuracies, level=0.95)
    sem = np.std(accuracies, ddof=1) / math.sqrt(5)
    expected = sps.t.interval(0.95, df=4, loc=np.mean(accuracies), scale=sem)
    assert mean == pytest.approx(np.mean(accuracies))
    assert (lo, hi) == pytest.approx(expected, rel=1e-12)
    # Two seeds: t with 1 degree of freedom, 12.706 standard errors wide each side.
    mean, lo, hi = stats.t_interval([0.90, 0.92])
    assert hi - mean == pytest.approx(12.7062047 * 0.01, rel=1e-6)
    assert stats.t_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="at least 2"):
        stats.t_interval([0.9])


def test_welch_against_scipy_and_by_hand():
    a, b = [0.951, 0.948, 0.955], [0.940, 0.947, 0.938, 0.944]
    p = stats.welch_p(a, b)
    assert p == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-12)
    # by hand: t = (mean a - mean b) / sqrt(va/na + vb/nb), Welch-Satterthwaite degrees of freedom
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 4
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)
    assert p == pytest.approx(2 * sps.t.sf(abs(t), df), rel=1e-9)
    assert stats.welch_p(b, a) == pytest.approx(p, rel=1e-12)  # two-sided: symmetric
    assert isinstance(p, float)


def test_welch_edge_cases():
    assert stats.welch_p([0.5, 0.5], [0.5, 0.5]) == 1.0  # nothing varies, same mean: scipy says NaN
    assert stats.welch_p([0.5, 0.5], [0.6, 0.6]) == 0.0  # nothing varies, different means
    assert 0 < stats.welch_p([0.5, 0.5], [0.6, 0.62]) < 1  # one side varies: scipy's answer
    with pytest.raises(ValueError, match="at least 2"):
        stats.welch_p([0.9], [0.8, 0.85])


def test_a_statistic_that_is_not_a_mean_gets_the_interval_a_mean_would():
    """bootstrap_statistic_ci of the mean, through index matrices, agrees with bootstrap_ci; two samples are
    resampled each on its own (a difference of two independent means: its normal interval)."""
    rng = np.random.default_rng(5)
    a = (rng.random(4000) < 0.9).astype(float)
    b = (rng.random(2000) < 0.6).astype(float)
    lo, hi = stats.bootstrap_statistic_ci(lambda i: a[i].mean(axis=1), [a.size], resamples=2000, seed=1)
    expected = normal_interval(a)
    assert lo == pytest.approx(expected[0], abs=1e-3) and hi == pytest.approx(expected[1], abs=1e-3)
    lo, hi = stats.bootstrap_statistic_ci(
        lambda i, j: a[i].mean(axis=1) - b[j].mean(axis=1), [a.size, b.size], resamples=2000, seed=1
    )
    half = 1.96 * math.sqrt(a.var() / a.size + b.var() / b.size)
    assert lo == pytest.approx(a.mean() - b.mean() - half, abs=2e-3)
    assert hi == pytest.approx(a.mean() - b.mean() + half, abs=2e-3)
    with pytest.raises(ValueError, match="at least one value"):
        stats.bootstrap_statistic_ci(lambda i: i.mean(axis=1), [0])


def test_few_shot_intervals_widen_with_the_spread_between_draws():
    """Draws that disagree (0.5 and 0.9 on the same test images) give a far wider interval than the images
    alone would; draws that agree in expectation give about the images' interval; one value everywhere is a
    point."""
    rng = np.random.default_rng(8)
    n = 3000
    agree = np.stack([(rng.random(n) < 0.7) for _ in range(4)]).astype(float)
    apart = np.stack([(rng.random(n) < p) for p in (0.5, 0.9, 0.5, 0.9)]).astype(float)
    lo, hi = stats.draws_and_images_ci(agree, resamples=1000, seed=0)
    images_only = stats.bootstrap_ci(agree.mean(axis=0), resamples=1000, seed=0)
    assert 0.95 < (hi - lo) / (images_only[1] - images_only[0]) < 1.5  # the draws' own noise adds a little
    lo_apart, hi_apart = stats.draws_and_images_ci(apart, resamples=1000, seed=0)
    assert hi_apart - lo_apart > 0.1 > 3 * (hi - lo)  # which draws came up dominates
    assert lo_apart < apart.mean() < hi_apart
    assert stats.draws_and_images_ci(np.ones((3, 10))) == (1.0, 1.0)
