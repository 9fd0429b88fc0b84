"""Every figure draws a real PNG of a legible size from small known inputs."""

import numpy as np
import pytest
from PIL import Image

from cifarbench.data.sources.cifar_names import CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES, CIFAR100_FINE_TO_COARSE
from cifarbench.eval import metrics
from cifarbench.render import figures, styles

KEYS = ("resnet18", "efficientnet_b0", "dinov2_vitb14")
STYLES = styles.Styles(
    {
        "resnet18": "ResNet-18",
        "efficientnet_b0": "EfficientNet-B0",
        "dinov2_vitb14": "DINOv2 ViT-B/14 (random init, 4 blocks, width 192, 3 heads, patch 7)",
    },
    dict(zip(KEYS, styles.PALETTE)),
)


def styles_for(n):
    """n models with long, honest names and the registry's colours."""
    keys = [f"model_{i}" for i in range(n)]
    return keys, styles.Styles(
        {k: f"Model {i} (random init, {i + 2} blocks, width {64 * (i + 1)})" for i, k in enumerate(keys)},
        dict(zip(keys, styles.PALETTE)),
    )


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
    figures.per_class_bars(
        accuracy,
        CIFAR100_FINE_CLASSES,
        "per class",
        tmp_path / "c100.png",
        STYLES,
        fine_to_coarse=CIFAR100_FINE_TO_COARSE,
        coarse_classes=CIFAR100_COARSE_CLASSES,
    )
    width, height = size_of(tmp_path / "c100.png")
    assert 900 <= width <= 1300 and height > 900  # four rows of 25 classes
    figures.per_class_bars(
        {key: rng.uniform(0, 1, 10) for key in KEYS},
        [str(i) for i in range(10)],
        "per class",
        tmp_path / "c10.png",
        STYLES,
    )
    assert 700 <= size_of(tmp_path / "c10.png")[0] <= 1000


def test_reliability_diagram(tmp_path):
    probabilities = np.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.3, 0.7]])
    ece, bins = metrics.calibration(probabilities, [0, 1, 1, 1])
    figures.reliability([(key, bins, ece) for key in KEYS], "reliability", tmp_path / "r.png", STYLES)
    assert 800 <= size_of(tmp_path / "r.png")[0] <= 1100


def test_sample_predictions_grid(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
    true = CIFAR100_FINE_CLASSES[:50]
    predicted = [t if i % 7 else "sweet_pepper" for i, t in enumerate(true)]
    figures.sample_predictions(images, true, predicted, "samples", tmp_path / "s.png", columns=10)
    width, height = size_of(tmp_path / "s.png")
    assert 1000 <= width <= 1300 and 600 <= height <= 900


def cost_points(keys, gflops, rates):
    return [
        {"key": key, "dataset": ds, "top1": top1, "low": top1 - 0.01, "high": top1 + 0.02, "gflops": g, "throughput": r}
        for ds in ("CIFAR-10", "CIFAR-100")
        for key, top1, g, r in zip(keys, np.linspace(0.8, 0.95, len(keys)), gflops, rates)
    ]


def test_accuracy_vs_cost(tmp_path):
    figures.accuracy_vs_cost(
        cost_points(KEYS, (3.6, 0.8, 46.3), (2500, 2100, 600)), "cost", tmp_path / "cost.png", STYLES
    )
    assert 800 <= size_of(tmp_path / "cost.png")[0] <= 1200


def tick_labels_overlap(path_png, fig_axes):
    """True when two tick labels of one x axis overlap in the drawn figure."""
    fig, axes = fig_axes
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in axes:
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
        boxes.sort(key=lambda b: b.x0)
        if any(a.x1 > b.x0 for a, b in zip(boxes, boxes[1:])):
            return True
    return False


@pytest.mark.parametrize(
    "rates",
    [(2800, 2900, 3000, 3100), (0.5, 40, 5000, 900000), (1210, 1230, 1240, 1250)],
    ids=["narrow", "six-decades", "very-narrow"],
)
def test_cost_axes_stay_legible_at_any_spread(tmp_path, monkeypatch, rates):
    """The throughput axis once printed 2800290030003100... as one run of overlapping ticks."""
    captured = {}
    monkeypatch.setattr(figures, "save", lambda fig, path: captured.update(fig=fig))
    keys, styles = styles_for(4)
    figures.accuracy_vs_cost(cost_points(keys, rates[::-1], rates), "cost", tmp_path / "c.png", styles)
    fig = captured["fig"]
    axes = fig.axes[:2]
    for ax in axes:
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert 2 <= len(labels) <= 6, labels
        assert all(len(label) <= 9 for label in labels), labels  # plain numbers, no 1e+04 or run-ons
    assert not tick_labels_overlap(None, (fig, axes))


@pytest.mark.parametrize("n", [1, 4, 8])
def test_every_comparison_figure_draws_any_number_of_models(tmp_path, n):
    keys, styles = styles_for(n)
    rng = np.random.default_rng(n)
    figures.accuracy_vs_cost(
        cost_points(keys, rng.uniform(0.1, 50, n), rng.uniform(100, 5000, n)), "cost", tmp_path / "cost.png", styles
    )
    probabilities = rng.dirichlet(np.ones(10), 200)
    ece, bins = metrics.calibration(probabilities, rng.integers(0, 10, 200))
    figures.reliability([(key, bins, ece) for key in keys], "reliability", tmp_path / "r.png", styles)
    figures.per_class_bars(
        {key: rng.uniform(0, 1, 10) for key in keys},
        [str(i) for i in range(10)],
        "per class",
        tmp_path / "pc.png",
        styles,
    )
    curves = {
        key: {"val/acc": ([1, 2, 3], list(rng.uniform(0, 1, 3))), "val/loss": ([1, 2, 3], [3, 2, 1])} for key in keys
    }
    figures.training_curves(curves, "curves", tmp_path / "curves.png", styles)
    points = rng.normal(size=(60, 2))
    figures.umap_panels(
        [(styles.name(key), points, rng.integers(0, 3, 60)) for key in keys],
        ["a", "b", "c"],
        "umap",
        tmp_path / "u.png",
    )
    for name in ("cost", "r", "pc", "curves", "u"):
        width, height = size_of(tmp_path / f"{name}.png")
        assert 300 <= width <= 2000 and height <= 2400, (name, width, height)


def test_training_curves_show_loss_on_a_log_axis_so_one_outlier_does_not_flatten_the_rest(tmp_path, monkeypatch):
    captured = {}
    monkeypatch.setattr(figures, "save", lambda fig, path: captured.update(fig=fig))
    keys, style = styles_for(2)
    curves = {
        keys[0]: {"val/acc": ([1, 2, 3], [0.1, 0.5, 0.8]), "val/loss": ([1, 2, 3], [296.0, 2.0, 0.4])},
        keys[1]: {"val/acc": ([1, 2, 3], [0.3, 0.6, 0.9]), "val/loss": ([1, 2, 3], [1.2, 0.5, 0.3])},
    }
    figures.training_curves(curves, "curves", tmp_path / "c.png", style)
    loss = captured["fig"].axes[1]
    assert loss.get_yscale() == "log" and "log" in loss.get_ylabel()
    low, high = loss.get_ylim()
    assert low < 0.3 and high > 296  # every point inside, the small ones not squashed onto the axis
