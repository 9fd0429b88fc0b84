"""Metrics computed from logits or features (never from a model: see engine.infer).

torch is imported inside the functions that take logits: the report stage reads only this
module's constants and numpy helpers, and importing torch costs its process about 3 s.
"""

import numpy as np


def topk_correct(logits, labels, k):
    """Per image: is the true class among the k highest logits? (bool numpy array)"""
    import torch

    k = min(k, logits.shape[1])
    top = torch.as_tensor(logits).topk(k, dim=1).indices
    return (top == torch.as_tensor(labels, device=top.device)[:, None]).any(dim=1).cpu().numpy()


def topk_accuracy(logits, labels, k):
    return float(topk_correct(logits, labels, k).mean())


def confusion_matrix(predicted, labels, n_classes):
    """counts[true, predicted]."""
    flat = np.asarray(labels, dtype=np.int64) * n_classes + np.asarray(predicted, dtype=np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_accuracy(confusion):
    """Recall of each class; NaN where a class has no test image (limit on a tiny run)."""
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(confusion) / np.maximum(totals, 1), np.nan)


ECE_BINS = 15  # equal-width confidence bins, as in Guo et al. 2017 "On Calibration of Modern Neural Networks"


def calibration(probabilities, labels, n_bins=ECE_BINS):
    """Expected calibration error and the reliability diagram's bins.

    Confidence is the top softmax probability; bins are (k/n, (k+1)/n], right-closed.
    ECE = sum over bins of (bin count / N) * |bin accuracy - bin mean confidence|.
    Empty bins have None for accuracy and confidence.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.digitize(confidence, edges[1:-1], right=True)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / count
        mean_conf = np.bincount(bins, weights=confidence, minlength=n_bins) / count
    gaps = np.where(count > 0, np.abs(accuracy - mean_conf), 0.0)
    ece = float((count / max(len(labels), 1) * gaps).sum())

    def listed(values):
        return [None if c == 0 else float(v) for v, c in zip(values, count)]

    return ece, {"bins": n_bins, "count": count.tolist(), "accuracy": listed(accuracy), "confidence": listed(mean_conf)}


def calibration_error_resampled(confidence, correct, n_bins=ECE_BINS):
    """calibration's ECE of each row: confidence, correct (B, n) -> (B,). The same bins; the sum over a bin
    of (correct - confidence) is its count times (accuracy - mean confidence)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    rows, n = confidence.shape
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.digitize(confidence, edges[1:-1], right=True) + n_bins * np.arange(rows)[:, None]
    gaps = np.bincount(
        bins.ravel(), weights=(np.asarray(correct, np.float64) - confidence).ravel(), minlength=rows * n_bins
    )
    return np.abs(gaps.reshape(rows, n_bins)).sum(axis=1) / n


def classification(logits, labels, classes):
    """Top-1, top-5, per-class accuracy, calibration and the confusion matrix of one test run."""
    import torch

    logits = torch.as_tensor(logits).float().cpu()
    labels = torch.as_tensor(labels).cpu()
    predicted = logits.argmax(1).numpy()
    confusion = confusion_matrix(predicted, labels.numpy(), len(classes))
    per_class = per_class_accuracy(confusion)
    ece, reliability = calibration(logits.double().softmax(1).numpy(), labels.numpy())
    return (
        {
            "top1": topk_accuracy(logits, labels, 1),
            "top5": topk_accuracy(logits, labels, 5),
            "ece": ece,
            "n_test": int(len(labels)),
            "per_class": {name: (None if np.isnan(acc) else float(acc)) for name, acc in zip(classes, per_class)},
            "reliability": reliability,
        },
        predicted,
        confusion,
    )


def knn_accuracy(train_features, train_labels, test_features, test_labels, k=20):
    """k-NN accuracy of L2-normalised features (cosine neighbours), distance-weighted votes."""
    return float(knn_correct(train_features, train_labels, test_features, test_labels, k).mean())


def knn_correct(train_features, train_labels, test_features, test_labels, k=20):
    """Per test image, whether the k-NN classifier of L2-normalised features (cosine neighbours,
    distance-weighted votes) gets it right (bool array).

    The training split is the neighbour bank and the test split the queries,
    as in DINO's k-NN evaluation.
    """
    # imported here: scikit-learn takes ~2 s to import, and only the embed stage needs it
    from sklearn.neighbors import KNeighborsClassifier

    def normalise(f):
        f = np.asarray(f, dtype=np.float32)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)

    k = min(k, len(train_labels))
    knn = KNeighborsClassifier(n_neighbors=k, weights="distance", algorithm="brute")
    knn.fit(normalise(train_features), train_labels)
    return knn.predict(normalise(test_features)) == np.asarray(test_labels)
