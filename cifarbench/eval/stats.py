"""Uncertainty and significance for per-image test results: bootstrap and t intervals, McNemar, Holm, Welch.

Inputs are per-image values over one test set (0/1 correctness, or correctness
averaged over training seeds, floats in [0, 1]) or per-seed accuracies; outputs
are plain Python floats, bools and lists, ready for a JSON metrics file. Every
random draw comes from the `seed` argument, so a rerun gives the same numbers.
A leaf: numpy and scipy only, nothing of ours.
"""

import math
import warnings

import numpy as np
from scipy import stats as sps

# Bootstrap resamples are drawn as an index matrix of (batch, n) ints; this caps
# that matrix at 4M entries (32 MB) whatever n is, and the batch depends on n
# only, so the numbers do not depend on the machine.
_BOOTSTRAP_CELLS = 1 << 22


def _vector(values, name):
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def _check_level(level):
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def bootstrap_ci(values, resamples=1000, seed=0, level=0.95):
    """Percentile bootstrap interval (lo, hi) of the mean of per-image values.

    Images are resampled with replacement `resamples` times; the interval is
    the (1-level)/2 and (1+level)/2 quantiles of the resampled means
    (scipy.stats.bootstrap, method='percentile', vectorised in batches).
    """
    values = _vector(values, "values")
    _check_level(level)
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if np.all(values == values[0]):
        # Every resample has the same mean; scipy warns about a degenerate
        # distribution for this case, the answer is exact without it.
        return float(values[0]), float(values[0])
    result = sps.bootstrap(
        (values,),
        np.mean,
        n_resamples=resamples,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
        batch=max(1, _BOOTSTRAP_CELLS // values.size),
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)


def _percentile_interval(values, level):
    lo, hi = np.quantile(np.asarray(values, dtype=np.float64), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_statistic_ci(statistic, sizes, resamples=1000, seed=0, level=0.95):
    """Percentile bootstrap interval (lo, hi) of a statistic that is not a mean of per-image values.

    Each sample (one size per sample in `sizes`: the test images, and the out-of-distribution images
    or few-shot draws beside them) is resampled with replacement on its own, `resamples` times.
    statistic(*index matrices) gets one (batch, size) int matrix per sample, each row a resample's
    indices, and returns the (batch,) statistic values. Batches hold at most _BOOTSTRAP_CELLS indices
    and depend on the sizes only: the same numbers on every machine.
    """
    _check_level(level)
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    sizes = [int(n) for n in sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"every sample needs at least one value, got sizes {sizes}")
    rng = np.random.default_rng(seed)
    batch = max(1, _BOOTSTRAP_CELLS // sum(sizes))
    values, done = [], 0
    while done < resamples:
        count = min(batch, resamples - done)
        values.append(np.asarray(statistic(*(rng.integers(0, n, (count, n)) for n in sizes)), dtype=np.float64))
        done += count
    return _percentile_interval(np.concatenate(values), level)


def paired_bootstrap_test(difference, sizes, resamples=1000, seed=0, level=0.95):
    """(lo, hi, p) of a difference B - A between two results on the same images: `difference` takes one
    (batch, size) index matrix per sample (bootstrap_statistic_ci's convention), the same resampled images for
    both sides, and returns (batch,) differences. p is the two-sided bootstrap p-value: twice the smaller share
    of resampled differences on either side of 0, each share counted as (1 + hits) / (1 + resamples) so that a
    finite bootstrap never claims p = 0 (at least 2 / (1 + resamples)); at most 1, and 1 when every resample
    ties."""
    values = []

    def kept(*index):
        values.append(np.asarray(difference(*index), dtype=np.float64))
        return values[-1]

    lo, hi = bootstrap_statistic_ci(kept, sizes, resamples, seed, level)
    values = np.concatenate(values)
    below, above = (1 + np.count_nonzero(values <= 0), 1 + np.count_nonzero(values >= 0))
    p = 2 * min(below, above) / (1 + values.size)
    return lo, hi, min(1.0, float(p))


def draws_and_images_ci(correct, resamples=1000, seed=0, level=0.95):
    """Percentile bootstrap interval (lo, hi) of the mean of a (draws, images) matrix of per-image results,
    resampling the draws and the images, each on its own: what varies in a few-shot number is which
    labelled images a draw got as well as which test images score it."""
    matrix = np.asarray(correct, dtype=np.float64)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ValueError(f"correct must be a non-empty (draws, images) matrix, got shape {matrix.shape}")
    draws, n = matrix.shape
    if np.all(matrix == matrix.flat[0]):
        return float(matrix.flat[0]), float(matrix.flat[0])

    def mean(draw_index, image_index):
        # a resample's images as counts per image, so each draw's sum over them is one matrix product
        rows = np.arange(len(image_index))[:, None] * n
        counts = np.bincount((image_index + rows).ravel(), minlength=len(image_index) * n).reshape(-1, n)
        sums = counts @ matrix.T  # (batch, draws): every draw's sum over the resampled images
        return np.take_along_axis(sums, draw_index, axis=1).mean(axis=1) / n

    return bootstrap_statistic_ci(mean, (draws, n), resamples, seed, level)


def paired_bootstrap_ci(a, b, resamples=1000, seed=0, level=0.95):
    """(mean(a) - mean(b), lo, hi) for two models scored on the same test images.

    Resampling images jointly means resampling the per-image differences:
    mean(a*) - mean(b*) over a joint resample is the mean of (a - b) over it,
    so the interval is the bootstrap interval of the mean difference.
    """
    a = _vector(a, "a")
    b = _vector(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must score the same images: {a.size} != {b.size} values")
    difference = a - b
    lo, hi = bootstrap_ci(difference, resamples=resamples, seed=seed, level=level)
    return float(difference.mean()), lo, hi


def mcnemar_exact(a, b):
    """Exact two-sided McNemar p-value for two per-image correctness vectors.

    Only discordant images count: n01 (a right, b wrong) and n10 (a wrong,
    b right). Under the null each is Binomial(n01 + n10, 1/2);
    p = min(1, 2 * P[X <= min(n01, n10)]). No discordant pair: p = 1.
    """
    a = np.asarray(a).reshape(-1).astype(bool)
    b = np.asarray(b).reshape(-1).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"a and b must score the same images: {a.size} != {b.size} values")
    n01 = int(np.count_nonzero(a & ~b))
    n10 = int(np.count_nonzero(~a & b))
    n = n01 + n10
    if n == 0:
        return 1.0
    return float(min(1.0, 2.0 * sps.binom.cdf(min(n01, n10), n, 0.5)))


def holm(pvalues, alpha=0.05):
    """Holm-Bonferroni step-down: (adjusted p-values, reject flags), in input order.

    With p sorted ascending, the i-th (0-based) adjusted value is
    max over j <= i of min(1, (m - j) * p_(j)); a hypothesis is rejected when its
    adjusted value is <= alpha, which is Holm's step-down rule.
    """
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return [], []
    if np.any(np.isnan(p)) or np.any(p < 0) or np.any(p > 1):
        raise ValueError("p-values must lie in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return [float(x) for x in adjusted], [bool(x <= alpha) for x in adjusted]


def t_interval(values, level=0.95):
    """(mean, lo, hi): Student-t interval of the mean over a few training seeds (n >= 2)."""
    values = _vector(values, "values")
    _check_level(level)
    n = values.size
    if n < 2:
        raise ValueError(f"a t interval needs at least 2 values, got {n}")
    mean = float(values.mean())
    sem = float(values.std(ddof=1)) / math.sqrt(n)
    half = float(sps.t.ppf(0.5 + level / 2, df=n - 1)) * sem
    return mean, mean - half, mean + half


def welch_p(a, b):
    """Two-sided p-value of Welch's t-test (unequal variances) that two sets of per-seed accuracies share a mean.

    scipy.stats.ttest_ind(a, b, equal_var=False); each side needs at least 2 values. When neither side
    varies, t is 0/0 or infinite and scipy answers NaN: here 1.0 for equal means, 0.0 for different ones.
    """
    a, b = _vector(a, "a"), _vector(b, "b")
    if a.size < 2 or b.size < 2:
        raise ValueError(f"Welch's test needs at least 2 values a side, got {a.size} and {b.size}")
    if np.all(a == a[0]) and np.all(b == b[0]):
        return 1.0 if a[0] == b[0] else 0.0
    with warnings.catch_warnings():  # one side without spread (seeds that tie) is fine: its variance is 0
        warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
        return float(sps.ttest_ind(a, b, equal_var=False).pvalue)
