"""Every figure draws a real PNG of a legible size from small known inputs."""

import numpy as np
import pytest
from PIL import Image

from cifarbench import figures, metrics
from cifarbench.sources.cifar_names import CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES, CIFAR100_FINE_TO_COARSE

KEYS = ("resnet18", "efficientnet_b0", "dinov2_vitb14")


def size_of(path):
    assert path.stat().st_size > 5000
    with Image.open(path) as image:
        return image.size


def test_umap_markers_grow_as_points_get_fewer():
    assert figures.marker_size(500) == pytest.approx(12)
    assert figures.marker_size(10_000) == 1.0  # CIFAR's full test split: small dots
    assert figures.marker_size(50) == 30.0  # capped
    assert figures.marker_size(500) > figures.marker_size(2000)


def test_per_class_rows_follow_coarse_groups():
    rows = figures._class_rows(100, CIFAR100_FINE_TO_COARSE, groups_per_row=5)
    assert len(rows) == 4 and all(len(index) == 25 for index, _ in rows)
    index, segments = rows[0]
    assert [CIFAR100_FINE_CLASSES[i] for i in index[:5]] == ["beaver", "dolphin", "otter", "seal", "whale"]
    assert segments[0] == (0, 5, 0) and segments[1] == (5, 10, 1)  # aquatic mammals, then fish
    flat, _ = figures._class_rows(10, None, 5)[0]
    assert flat.tolist() == list(range(10))


def test_per_class_bars(tmp_path):
    rng = np.random.default_rng(0)
    accuracy = {key: rng.uniform(0, 1, 100) for key in KEYS}
    accuracy["resnet18"][3] = np.nan  # a class without test images
    figures.per_class_bars(accuracy, CIFAR100_FINE_CLASSES, "per class", tmp_path / "c100.png",
                           fine_to_coarse=CIFAR100_FINE_TO_COARSE, coarse_classes=CIFAR100_COARSE_CLASSES)
    width, height = size_of(tmp_path / "c100.png")
    assert 900 <= width <= 1300 and height > 900  # four rows of 25 classes
    figures.per_class_bars({key: rng.uniform(0, 1, 10) for key in KEYS}, [str(i) for i in range(10)], "per class",
                           tmp_path / "c10.png")
    assert 700 <= size_of(tmp_path / "c10.png")[0] <= 1000


def test_reliability_diagram(tmp_path):
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.3, 0.7]])
    ece, bins = metrics.calibration(probabilities, [0, 1, 1, 1])
    figures.reliability([(key, bins, ece) for key in KEYS], "reliability", tmp_path / "r.png")
    assert 800 <= size_of(tmp_path / "r.png")[0] <= 1100


def test_sample_predictions_grid(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    true = CIFAR100_FINE_CLASSES[:50]
    predicted = [t if i % 7 else "sweet_pepper" for i, t in enumerate(true)]
    figures.sample_predictions(images, true, predicted, "samples", tmp_path / "s.png", columns=10)
    width, height = size_of(tmp_path / "s.png")
    assert 1000 <= width <= 1300 and 600 <= height <= 900


def test_accuracy_vs_cost(tmp_path):
    points = [(key, ds, top1, gflops, rate) for ds in ("CIFAR-10", "CIFAR-100")
              for key, top1, gflops, rate in zip(KEYS, (0.8, 0.85, 0.95), (3.6, 0.8, 46.3), (2500, 2100, 600))]
    figures.accuracy_vs_cost(points, "cost", tmp_path / "cost.png")
    assert 800 <= size_of(tmp_path / "cost.png")[0] <= 1200
