"""Metrics against hand-computed values on tiny inputs."""

import numpy as np
import pytest
import torch

from cifarbench.eval import metrics


def test_top1_top5_of_known_logits():
    logits = torch.tensor(
        [
            [9, 8, 7, 6, 5, 4],  # true 0: top-1 hit
            [9, 8, 7, 6, 5, 4],  # true 4: top-5 hit only
            [9, 8, 7, 6, 5, 4],  # true 5: miss both
            [0, 0, 0, 0, 0, 1],  # true 5: top-1 hit
        ],
        dtype=torch.float,
    )
    labels = torch.tensor([0, 4, 5, 5])
    assert metrics.topk_accuracy(logits, labels, 1) == pytest.approx(0.5)
    assert metrics.topk_accuracy(logits, labels, 5) == pytest.approx(0.75)


def test_confusion_and_per_class_accuracy():
    labels = [0, 0, 0, 1, 1, 2]
    predicted = [0, 1, 0, 1, 1, 0]
    cm = metrics.confusion_matrix(predicted, labels, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    acc = metrics.per_class_accuracy(cm)
    assert acc[:3].tolist() == pytest.approx([2 / 3, 1.0, 0.0])
    assert np.isnan(acc[3])  # no test image of class 3


def test_classification_bundle():
    logits = torch.eye(3)[[0, 1, 1]]
    result, predicted, cm = metrics.classification(logits, torch.tensor([0, 1, 2]), ["a", "b", "c"])
    assert result["top1"] == pytest.approx(2 / 3)
    assert result["per_class"] == {"a": 1.0, "b": 1.0, "c": 0.0}
    assert predicted.tolist() == [0, 1, 1] and cm[2, 1] == 1


def test_knn_on_separable_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 10
    train_labels = np.repeat(np.arange(3), 30)
    test_labels = np.repeat(np.arange(3), 10)
    train = centres[train_labels] + rng.normal(size=(90, 16))
    test = centres[test_labels] + rng.normal(size=(30, 16))
    assert metrics.knn_accuracy(train, train_labels, test, test_labels, k=5) == 1.0
    shuffled = rng.permutation(train_labels)
    assert metrics.knn_accuracy(train, shuffled, test, test_labels, k=5) < 0.7


def test_ece_of_a_known_case():
    # confidences 0.9, 0.9 (one right, one wrong) and 0.7, 0.7 (both right), 15 bins:
    # 0.9 lies in (13/15, 14/15]: |0.5 - 0.9| * 2/4 = 0.2; 0.7 in (10/15, 11/15]: |1 - 0.7| * 2/4 = 0.15
    probabilities = [[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.3, 0.7]]
    ece, bins = metrics.calibration(probabilities, [0, 1, 1, 1])
    assert ece == pytest.approx(0.35)
    assert bins["bins"] == 15 and sum(bins["count"]) == 4
    assert bins["count"][13] == 2 and bins["count"][10] == 2
    assert bins["accuracy"][13] == pytest.approx(0.5) and bins["confidence"][13] == pytest.approx(0.9)
    assert bins["accuracy"][10] == 1.0 and bins["confidence"][10] == pytest.approx(0.7)
    assert bins["accuracy"][0] is None and bins["confidence"][0] is None  # empty bin


def test_ece_bins_are_right_closed_and_zero_when_calibrated():
    # confidence exactly 0.6 = 9/15 belongs to the bin (8/15, 9/15], index 8; 3 of 5 right: calibrated
    probabilities = [[0.6, 0.4]] * 5
    ece, bins = metrics.calibration(probabilities, [0, 0, 0, 1, 1])
    assert bins["count"][8] == 5
    assert ece == pytest.approx(0.0)
    ece, _ = metrics.calibration([[1.0, 0.0]] * 3, [0, 0, 0])  # certain and right
    assert ece == pytest.approx(0.0)


def test_classification_adds_ece_from_softmax():
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.3, 0.7]]))
    result, _, _ = metrics.classification(logits, torch.tensor([0, 1, 1, 1]), ["a", "b"])
    assert result["ece"] == pytest.approx(0.35)
    assert result["reliability"]["count"][13] == 2


def test_per_class_and_top5_of_a_known_matrix():
    # 3 test images of 7 classes, ranked by hand: image 0 puts its class f 6th, image 1 its class c 5th
    logits = torch.tensor(
        [
            [7, 6, 5, 4, 3, 2, 1],
            [1, 7, 3, 6, 5, 4, 2],
            [0, 0, 0, 0, 0, 0, 9],
        ],
        dtype=torch.float,
    )
    labels = torch.tensor([5, 2, 6])
    result, predicted, cm = metrics.classification(logits, labels, list("abcdefg"))
    assert predicted.tolist() == [0, 1, 6]
    assert result["top1"] == pytest.approx(1 / 3)
    assert result["top5"] == pytest.approx(2 / 3)  # image 0's class ranks 6th: outside the top 5
    assert result["per_class"] == {"a": None, "b": None, "c": 0.0, "d": None, "e": None, "f": 0.0, "g": 1.0}
    assert cm[5, 0] == 1 and cm[2, 1] == 1 and cm[6, 6] == 1 and cm.sum() == 3


def test_resampled_calibration_error_is_the_ece_of_each_row():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(500, 10)) * 3
    labels = rng.integers(0, 10, 500)
    probabilities = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ece, _ = metrics.calibration(probabilities, labels)
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    rows = np.stack([np.arange(500), rng.integers(0, 500, 500)])
    resampled = metrics.calibration_error_resampled(confidence[rows], correct[rows])
    assert resampled[0] == pytest.approx(ece, abs=1e-12)
    assert resampled[1] == pytest.approx(metrics.calibration(probabilities[rows[1]], labels[rows[1]])[0], abs=1e-12)
