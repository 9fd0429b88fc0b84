"""Figures as PNG in one consistent style, legible at README width (~900 px)."""

import matplotlib

matplotlib.use("Agg")  # headless: stages run on servers without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cifarbench import atomic  # noqa: E402

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 110,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
MODEL_NAMES = {"resnet18": "ResNet-18", "efficientnet_b0": "EfficientNet-B0", "dinov2_vitb14": "DINOv2 ViT-B/14"}


def model_name(key):
    return MODEL_NAMES.get(key, key)


def save(fig, path):
    atomic.save_figure(path, fig, bbox_inches="tight")
    plt.close(fig)


def coarse_order(classes, fine_to_coarse):
    """Class indices grouped by coarse class (stable within a group) and the group boundaries."""
    order = np.argsort(np.asarray(fine_to_coarse), kind="stable")
    groups = np.asarray(fine_to_coarse)[order]
    boundaries = np.flatnonzero(np.diff(groups)) + 1
    return order, groups, boundaries


def confusion(matrix, classes, title, path, fine_to_coarse=None, coarse_classes=None):
    """Row-normalised confusion heatmap; with coarse labels, ordered by group with boundaries drawn."""
    matrix = np.asarray(matrix, dtype=float)
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    order = np.arange(n)
    if fine_to_coarse is not None:
        order, groups, boundaries = coarse_order(classes, fine_to_coarse)
        rows = rows[np.ix_(order, order)]
    with plt.rc_context(STYLE):
        size = 4.2 if n <= 20 else 8
        fig, ax = plt.subplots(figsize=(size + 1, size))
        image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
        if n <= 20:
            names = [classes[i] for i in order]
            ax.set_xticks(range(n), names, rotation=45, ha="right")
            ax.set_yticks(range(n), names)
            for i in range(n):
                for j in range(n):
                    if rows[i, j] >= 0.005:
                        ax.text(j, i, f"{rows[i, j]:.2f}".lstrip("0"), ha="center", va="center", fontsize=6.5,
                                color="white" if rows[i, j] > 0.5 else "black")
        elif fine_to_coarse is not None:
            for b in boundaries:
                ax.axhline(b - 0.5, color="0.4", lw=0.5)
                ax.axvline(b - 0.5, color="0.4", lw=0.5)
            starts = np.concatenate([[0], boundaries])
            ends = np.concatenate([boundaries, [n]])
            centres = (starts + ends - 1) / 2
            names = [coarse_classes[groups[s]] for s in starts] if coarse_classes else [str(groups[s]) for s in starts]
            ax.set_yticks(centres, names, fontsize=6.5)
            ax.set_xticks(centres, names, fontsize=6.5, rotation=90)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title)
        save(fig, path)


def _scatter(ax, points, labels, names, title):
    n = len(names)
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    for index, name in enumerate(names):
        mask = labels == index
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=2, color=cmap(index % cmap.N), label=name,
                       alpha=0.7, linewidths=0, rasterized=True)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(fig, ax, n):
    fig.legend(*ax.get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
               markerscale=5, fontsize=7 if n > 10 else 8, ncol=1)


def umap_scatter(points, labels, names, title, path):
    """2-D UMAP of features, one colour per class (or per coarse group for CIFAR-100)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5, 4.5))
        _scatter(ax, np.asarray(points), np.asarray(labels), names, title)
        _legend(fig, ax, len(names))
        save(fig, path)


def umap_panels(panels, names, title, path):
    """Several models' UMAPs side by side: panels = [(title, points, labels)]."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.4), squeeze=False)
        for ax, (panel_title, points, labels) in zip(axes[0], panels):
            _scatter(ax, np.asarray(points), np.asarray(labels), names, panel_title)
        _legend(fig, axes[0][0], len(names))
        fig.suptitle(title)
        save(fig, path)


def training_curves(curves, title, path):
    """Validation accuracy and loss per epoch, one line per model: curves[key][metric] = (epochs, values)."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        for key, metrics_ in curves.items():
            for ax, metric in zip(axes, ("val/acc", "val/loss")):
                epochs, values = metrics_[metric]
                if epochs:
                    ax.plot(epochs, values, marker="o", ms=3, label=model_name(key))
        for ax, label in zip(axes, ("validation accuracy", "validation loss")):
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[0].legend(frameon=False)
        fig.suptitle(title)
        save(fig, path)
