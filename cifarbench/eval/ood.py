"""Out-of-distribution detection: scores from logits, and how well they separate two test sets.

Scores follow one convention: HIGHER means more in-distribution, for both the
maximum softmax probability (Hendrycks & Gimpel 2017) and the negative energy
T * logsumexp(logits / T) (Liu et al. 2020). The in-distribution test set is
the positive class of every quality measure. Score functions return float64
numpy arrays (one score per image); quality measures return Python floats and
lists, ready for a JSON metrics file. Ties between scores count as in the
Mann-Whitney statistic: half a correctly ordered pair. The `_resampled` forms
take one resample per row (the bootstrap intervals of summary.json). A leaf:
numpy, scipy and torch only; torch is imported where logits come in, so the
report stage, which reads scores from files, does not pay its import.
"""

import math

import numpy as np
from scipy.stats import rankdata


def _logits(logits):
    import torch

    logits = torch.as_tensor(logits).detach().to("cpu", torch.float64)
    if logits.ndim != 2:
        raise ValueError(f"logits must be (images, classes), got shape {tuple(logits.shape)}")
    return logits


def msp(logits):
    """Maximum softmax probability of each image."""
    return _logits(logits).softmax(dim=1).max(dim=1).values.numpy()


def energy(logits, temperature=1.0):
    """Negative energy T * logsumexp(logits / T) of each image (higher = more in-distribution)."""
    import torch

    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return (temperature * torch.logsumexp(_logits(logits) / temperature, dim=1)).numpy()


def _scores(scores, name):
    if hasattr(scores, "detach"):  # a torch tensor
        scores = scores.detach().cpu().numpy()
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise ValueError(f"{name} is empty")
    if np.isnan(scores).any():
        raise ValueError(f"{name} holds NaN")
    return scores


def auroc(scores_in, scores_out):
    """Area under the ROC curve, in-distribution positive.

    The Mann-Whitney form: the probability that a random in-distribution image
    scores above a random OOD one, ties counting one half (average ranks), which
    equals the trapezoidal area under the full ROC curve.
    """
    scores_in = _scores(scores_in, "scores_in")
    scores_out = _scores(scores_out, "scores_out")
    ranks = rankdata(np.concatenate([scores_in, scores_out]))  # average ranks for ties
    n_in, n_out = scores_in.size, scores_out.size
    u = ranks[:n_in].sum() - n_in * (n_in + 1) / 2
    return float(u / (n_in * n_out))


def fpr_at_tpr(scores_in, scores_out, tpr=0.95):
    """False-positive rate on OOD images at the threshold that keeps `tpr` of in-distribution images.

    An image is called in-distribution when its score is >= the threshold. The
    threshold is the highest one whose true-positive rate reaches `tpr` (the
    k-th largest in-distribution score, k = ceil(tpr * n_in)); every OOD image
    scoring at or above it is a false positive, ties included.
    """
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    scores_in = np.sort(_scores(scores_in, "scores_in"))[::-1]
    scores_out = _scores(scores_out, "scores_out")
    # The small slack keeps e.g. 0.95 * 20 = 19.000000000000004 from asking for a 20th image.
    k = max(1, math.ceil(tpr * scores_in.size - 1e-9))
    threshold = scores_in[k - 1]
    return float(np.count_nonzero(scores_out >= threshold) / scores_out.size)


def auroc_resampled(scores_in, scores_out):
    """auroc of each row: scores_in (B, n_in), scores_out (B, n_out) -> (B,)."""
    n_in, n_out = scores_in.shape[1], scores_out.shape[1]
    ranks = rankdata(np.concatenate([scores_in, scores_out], axis=1), axis=1)
    return (ranks[:, :n_in].sum(axis=1) - n_in * (n_in + 1) / 2) / (n_in * n_out)


def fpr_at_tpr_resampled(scores_in, scores_out, tpr=0.95):
    """fpr_at_tpr of each row: scores_in (B, n_in), scores_out (B, n_out) -> (B,)."""
    n_in = scores_in.shape[1]
    k = max(1, math.ceil(tpr * n_in - 1e-9))
    threshold = np.sort(scores_in, axis=1)[:, n_in - k]  # the k-th largest
    return np.count_nonzero(scores_out >= threshold[:, None], axis=1) / scores_out.shape[1]


def _full_roc(scores_in, scores_out):
    """ROC vertices (fpr, tpr), one per distinct threshold, from (0, 0) to (1, 1)."""
    scores = np.concatenate([scores_in, scores_out])
    positive = np.concatenate([np.ones(scores_in.size), np.zeros(scores_out.size)])
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order]
    # The last position of each run of equal scores: tied images change the rates together.
    last = np.r_[np.flatnonzero(np.diff(scores) != 0), scores.size - 1]
    tp = np.cumsum(positive)[last]
    fp = (last + 1) - tp
    return np.r_[0.0, fp / scores_out.size], np.r_[0.0, tp / scores_in.size]


def roc_curve(scores_in, scores_out, points=101):
    """The ROC curve downsampled to `points` evenly spaced false-positive rates: (fpr list, tpr list).

    tpr at each grid value is read off the piecewise-linear ROC (straight
    segments between vertices, so tied scores give diagonal segments); on a
    vertical segment the upper end counts. Small enough for a JSON file and a
    plot; its trapezoidal area approaches `auroc` as `points` grows.
    """
    if points < 2:
        raise ValueError(f"points must be >= 2, got {points}")
    fpr, tpr = _full_roc(_scores(scores_in, "scores_in"), _scores(scores_out, "scores_out"))
    # Keep the top of each vertical run so np.interp sees strictly increasing fpr.
    top = np.r_[np.diff(fpr) != 0, True]
    grid = np.linspace(0.0, 1.0, points)
    curve = np.interp(grid, fpr[top], tpr[top])
    return [float(x) for x in grid], [float(y) for y in curve]


SCORES = {"msp": msp, "energy": energy}  # maximum softmax probability, and the stronger energy score
HEADLINE = "msp"  # the score of summary.json's ood_auroc and ood_fpr95


def detection(in_logits, out_logits, points=101):
    """Both scores' AUROC, FPR at 95 % TPR and ROC curve: in_logits on the test set, out_logits on OOD images."""
    out = {}
    for name, score in SCORES.items():
        scores_in, scores_out = score(in_logits), score(out_logits)
        fpr, tpr = roc_curve(scores_in, scores_out, points)
        out[name] = {
            "auroc": auroc(scores_in, scores_out),
            "fpr95": fpr_at_tpr(scores_in, scores_out, 0.95),
            "roc": {"fpr": fpr, "tpr": tpr},
        }
    return out
