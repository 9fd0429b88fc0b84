"""ood: scores against hand computations, quality measures against scikit-learn and hand-made cases."""

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from cifarbench.eval import ood


def sklearn_fpr_at_tpr(scores_in, scores_out, tpr):
    labels = np.r_[np.ones(len(scores_in)), np.zeros(len(scores_out))]
    fpr, tprs, _ = skm.roc_curve(labels, np.r_[scores_in, scores_out], drop_intermediate=False)
    return fpr[np.argmax(tprs >= tpr)]


def test_msp_and_energy_of_known_logits():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [10.0, -10.0, 3.0]])
    exp = np.exp(logits)
    assert ood.msp(logits) == pytest.approx(exp.max(1) / exp.sum(1), rel=1e-12)
    assert ood.energy(logits) == pytest.approx(np.log(exp.sum(1)), rel=1e-12)
    t = 2.0
    assert ood.energy(torch.tensor(logits), temperature=t) == pytest.approx(
        t * np.log(np.exp(logits / t).sum(1)), rel=1e-12
    )
    # Higher = more in-distribution: a confident image outscores a uniform one on both.
    assert ood.msp(logits)[0] > ood.msp(logits)[1]
    assert ood.energy(logits)[2] > ood.energy(logits)[1]
    # Large logits do not overflow.
    assert ood.energy(np.array([[1000.0, 1000.0]]))[0] == pytest.approx(1000 + np.log(2))
    with pytest.raises(ValueError, match="temperature"):
        ood.energy(logits, temperature=0)
    with pytest.raises(ValueError, match="images, classes"):
        ood.msp(np.zeros(3))


def test_auroc_equals_sklearn_on_random_and_tied_scores():
    rng = np.random.default_rng(0)
    scores_in = rng.normal(1.0, 1.0, 700)
    scores_out = rng.normal(0.0, 1.5, 300)
    labels = np.r_[np.ones(700), np.zeros(300)]
    expected = skm.roc_auc_score(labels, np.r_[scores_in, scores_out])
    assert ood.auroc(scores_in, scores_out) == pytest.approx(expected, abs=1e-12)
    # Heavy ties, as MSP gives when many images saturate at 1.0.
    tied_in = np.round(rng.random(500) * 4) / 4
    tied_out = np.round(rng.random(400) * 3) / 4
    labels = np.r_[np.ones(500), np.zeros(400)]
    expected = skm.roc_auc_score(labels, np.r_[tied_in, tied_out])
    assert ood.auroc(tied_in, tied_out) == pytest.approx(expected, abs=1e-12)
    assert ood.auroc(torch.tensor(tied_in), list(tied_out)) == pytest.approx(expected, abs=1e-12)


def test_fpr_at_tpr_hand_made_case():
    scores_in = np.arange(1.0, 21.0)  # 20 images; 95% of them = 19 score >= 2
    scores_out = np.array([0.5, 1.5, 2.0, 10.0, 25.0])  # >= 2: three of five (the tie counts)
    assert ood.fpr_at_tpr(scores_in, scores_out, tpr=0.95) == pytest.approx(0.6)
    assert ood.fpr_at_tpr(scores_in, scores_out, tpr=0.5) == pytest.approx(0.2)  # >= 11: only 25
    assert ood.fpr_at_tpr(scores_in, scores_out, tpr=1.0) == pytest.approx(0.8)  # >= 1


def test_fpr_at_tpr_matches_sklearn_roc_on_random_and_tied_scores():
    rng = np.random.default_rng(1)
    for scores_in, scores_out in [
        (rng.normal(2, 1, 1000), rng.normal(0, 1, 800)),
        (np.round(rng.random(1000) * 10), np.round(rng.random(800) * 8)),
    ]:
        for tpr in (0.8, 0.95):
            assert ood.fpr_at_tpr(scores_in, scores_out, tpr) == pytest.approx(
                sklearn_fpr_at_tpr(scores_in, scores_out, tpr)
            )


def test_perfect_separation_and_identical_distributions():
    rng = np.random.default_rng(2)
    scores_in = rng.random(1000) + 2.0
    scores_out = rng.random(1000)
    assert ood.auroc(scores_in, scores_out) == 1.0
    assert ood.fpr_at_tpr(scores_in, scores_out) == 0.0
    fpr, tpr = ood.roc_curve(scores_in, scores_out)
    assert tpr == pytest.approx([1.0] * 101)
    # Same distribution: AUROC ~ 0.5 and FPR95 ~ 0.95.
    same_in, same_out = rng.normal(size=20_000), rng.normal(size=20_000)
    assert ood.auroc(same_in, same_out) == pytest.approx(0.5, abs=0.01)
    assert ood.fpr_at_tpr(same_in, same_out) == pytest.approx(0.95, abs=0.01)
    # Identical scores everywhere: one big tie, exactly 0.5, and every OOD image passes.
    assert ood.auroc(np.ones(10), np.ones(5)) == 0.5
    assert ood.fpr_at_tpr(np.ones(10), np.ones(5)) == 1.0
    fpr, tpr = ood.roc_curve(np.ones(10), np.ones(5), points=11)
    assert tpr == pytest.approx(fpr)  # the diagonal


def test_roc_curve_downsamples_the_sklearn_curve():
    rng = np.random.default_rng(3)
    scores_in = np.round(rng.normal(1, 1, 3000), 1)  # ties
    scores_out = np.round(rng.normal(0, 1, 2000), 1)
    fpr, tpr = ood.roc_curve(scores_in, scores_out, points=101)
    assert len(fpr) == len(tpr) == 101 and fpr[0] == 0.0 and fpr[-1] == 1.0 and tpr[-1] == 1.0
    assert all(isinstance(x, float) for x in fpr + tpr)
    assert np.all(np.diff(tpr) >= 0)
    labels = np.r_[np.ones(3000), np.zeros(2000)]
    sk_fpr, sk_tpr, _ = skm.roc_curve(labels, np.r_[scores_in, scores_out])
    # Away from vertical jumps, our points lie on sklearn's piecewise-linear curve.
    for f, t in zip(fpr, tpr):
        if not np.any(np.isclose(sk_fpr, f)):
            assert t == pytest.approx(np.interp(f, sk_fpr, sk_tpr), abs=1e-9)
    assert np.trapezoid(tpr, fpr) == pytest.approx(ood.auroc(scores_in, scores_out), abs=2e-3)


def test_resampled_measures_are_the_measures_of_each_row():
    rng = np.random.default_rng(3)
    scores_in, scores_out = rng.normal(1, 1, 300).round(1), rng.normal(0, 1, 200).round(1)  # rounded: ties
    rows_in = np.stack([np.arange(300), rng.integers(0, 300, 300)])
    rows_out = np.stack([np.arange(200), rng.integers(0, 200, 200)])
    aurocs = ood.auroc_resampled(scores_in[rows_in], scores_out[rows_out])
    fprs = ood.fpr_at_tpr_resampled(scores_in[rows_in], scores_out[rows_out])
    for r in range(2):
        assert aurocs[r] == pytest.approx(ood.auroc(scores_in[rows_in[r]], scores_out[rows_out[r]]), abs=1e-12)
        assert fprs[r] == ood.fpr_at_tpr(scores_in[rows_in[r]], scores_out[rows_out[r]])
    assert 0.7 < aurocs[0] < 0.85  # one standard deviation apart: about 0.76
