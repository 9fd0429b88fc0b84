"""Metrics against hand-computed values on tiny inputs."""

import numpy as np
import pytest
import torch

from cifarbench import metrics


def test_top1_top5_of_known_logits():
    logits = torch.tensor([
        [9, 8, 7, 6, 5, 4],   # true 0: top-1 hit
        [9, 8, 7, 6, 5, 4],   # true 4: top-5 hit only
        [9, 8, 7, 6, 5, 4],   # true 5: miss both
        [0, 0, 0, 0, 0, 1],   # true 5: top-1 hit
    ], dtype=torch.float)
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
