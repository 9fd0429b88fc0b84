"""Figures as PNG in one consistent style, legible at README width (~900 px).

Functions that show several models take `styles` (cifarbench.render.styles.Styles):
names and colours come from params.yaml's registry, never from this module,
so any number of models (1 to 10) gets one stable colour and an honest name.
"""

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
DATASET_MARKERS = ("o", "s", "^", "D")
MISTAKE = "#c62828"  # red: wrong predictions, calibration gaps
CORRECT = "#2e7d32"


def _wrapped(text, width=38):
    """Long display names ("DINOv2 ViT-B/14 (random init, 4 blocks, ...)") on several short lines."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def describe(fig):
    """What a figure shows, for a reader without eyes (and for tests): its title, and per axes that holds data
    its title, axis labels, number of drawn series and legend entries; the figure's own legend entries."""
    import json

    axes = []
    for ax in fig.axes:
        if not ax.get_visible() or not ax.has_data():
            continue
        legend = ax.get_legend()
        axes.append(
            {
                "title": ax.get_title(),
                "xlabel": ax.get_xlabel(),
                "ylabel": ax.get_ylabel(),
                # lines, scatters and bar groups, reference lines (a diagonal, a chance level) included
                "series": len(ax.lines) + len(ax.collections) + len(ax.containers),
                "legend": [t.get_text() for t in legend.get_texts()] if legend else [],
            }
        )
    suptitle = fig.get_suptitle() if hasattr(fig, "get_suptitle") else ""
    legends = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    return json.dumps({"title": suptitle, "axes": axes, "legend": legends}, ensure_ascii=False)


def save(fig, path):
    """The PNG, with describe(fig) in its metadata (PNG text chunks "Title" and "Description")."""
    suptitle = fig.get_suptitle() if hasattr(fig, "get_suptitle") else ""
    metadata = {"Title": suptitle, "Description": describe(fig)}
    atomic.save_figure(path, fig, bbox_inches="tight", metadata=metadata)
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
                        ax.text(
                            j,
                            i,
                            f"{rows[i, j]:.2f}".lstrip("0"),
                            ha="center",
                            va="center",
                            fontsize=6.5,
                            color="white" if rows[i, j] > 0.5 else "black",
                        )
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


def marker_size(n_points):
    """Scatter marker area (pt²) that shrinks as points get denser: 12 for 500 points, 1 from 6,000 on."""
    return float(np.clip(6000 / max(n_points, 1), 1.0, 30.0))


def _scatter(ax, points, labels, names, title, size):
    n = len(names)
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    for index, name in enumerate(names):
        mask = labels == index
        if mask.any():
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=size,
                color=cmap(index % cmap.N),
                label=name,
                alpha=0.75,
                linewidths=0,
                rasterized=True,
            )
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(fig, ax, n, size):
    fig.legend(
        *ax.get_legend_handles_labels(),
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        frameon=False,
        markerscale=6 / np.sqrt(size),  # legend dots 6 pt wide, however small the points
        fontsize=7 if n > 10 else 8,
        ncol=1,
    )


def umap_scatter(points, labels, names, title, path):
    """2-D UMAP of features, one colour per class (or per coarse group for CIFAR-100)."""
    size = marker_size(len(points))
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5, 4.5))
        _scatter(ax, np.asarray(points), np.asarray(labels), names, title, size)
        _legend(fig, ax, len(names), size)
        save(fig, path)


def umap_panels(panels, names, title, path):
    """Several models' UMAPs, up to 4 a row: panels = [(title, points, labels)]."""
    size = marker_size(max(len(points) for _, points, _ in panels))
    columns = min(len(panels), 4)
    rows = -(-len(panels) // columns)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 3.5 * rows), squeeze=False)
        for ax in axes.flat[len(panels) :]:
            ax.axis("off")
        for ax, (panel_title, points, labels) in zip(axes.flat, panels):
            _scatter(ax, np.asarray(points), np.asarray(labels), names, _wrapped(panel_title, 34), size)
        _legend(fig, axes[0][0], len(names), size)
        fig.suptitle(title, y=1.02)
        fig.tight_layout()
        save(fig, path)


def training_curves(curves, title, path, styles):
    """Validation accuracy and loss per epoch, one line per model: curves[key][metric] = (epochs, values)."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        for key, metrics_ in curves.items():
            for ax, metric in zip(axes, ("val/acc", "val/loss")):
                epochs, values = metrics_[metric]
                if epochs:
                    ax.plot(
                        epochs, values, marker="o", ms=3, label=_wrapped(styles.name(key)), color=styles.colour(key)
                    )
        for ax, label in zip(axes, ("validation accuracy", "validation loss (log scale)")):
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        # log scale: one early outlier (a random-init EfficientNet-B0 starts near 300) would flatten
        # every other curve to a line at zero on a linear axis
        if axes[1].has_data():
            axes[1].set_yscale("log")
        fig.legend(*axes[0].get_legend_handles_labels(), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        fig.suptitle(title)
        fig.tight_layout()
        save(fig, path)


def _class_rows(n, fine_to_coarse, groups_per_row):
    """Rows of the per-class figure: [(class indices, [(start, end, coarse group)])] in display order."""
    if fine_to_coarse is None:
        return [(np.arange(n), [])]
    order, groups, boundaries = coarse_order(None, fine_to_coarse)
    starts = np.concatenate([[0], boundaries]).astype(int)
    ends = np.concatenate([boundaries, [n]]).astype(int)
    rows = []
    for first in range(0, len(starts), groups_per_row):
        s, e = starts[first : first + groups_per_row], ends[first : first + groups_per_row]
        rows.append((order[s[0] : e[-1]], [(a - s[0], b - s[0], groups[a]) for a, b in zip(s, e)]))
    return rows


def per_class_bars(accuracy, classes, title, path, styles, fine_to_coarse=None, coarse_classes=None, groups_per_row=5):
    """Test accuracy of every class, the models' bars side by side.

    accuracy: {model key: per-class accuracies in class order (NaN: no test image)}. With a
    fine-to-coarse mapping (CIFAR-100) classes are grouped by coarse class, a few groups per row,
    with the group's name above it and a line between groups.
    """
    keys = list(accuracy)
    rows = _class_rows(len(classes), fine_to_coarse, groups_per_row)
    width = 0.8 / len(keys)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(
            len(rows), 1, figsize=(10 if len(classes) > 10 else 8, 2.6 * len(rows) + 0.4), squeeze=False
        )
        for ax, (index, segments) in zip(axes[:, 0], rows):
            x = np.arange(len(index))
            for k, key in enumerate(keys):
                values = np.asarray(accuracy[key], dtype=float)[index]
                ax.bar(
                    x + (k - (len(keys) - 1) / 2) * width,
                    np.nan_to_num(values),
                    width,
                    color=styles.colour(key),
                    label=styles.name(key),
                )
            ax.set_xticks(
                x,
                [classes[i] for i in index],
                rotation=90 if len(index) > 12 else 0,
                fontsize=7 if len(index) > 12 else 8,
            )
            ax.set_xlim(-0.6, len(index) - 0.4)
            ax.set_ylim(0, 1.0)
            ax.set_ylabel("test accuracy")
            ax.grid(axis="y", alpha=0.3)
            for start, end, group in segments:
                if start:
                    ax.axvline(start - 0.5, color="0.3", lw=0.8)
                label = coarse_classes[group] if coarse_classes and group >= 0 else f"group {group}"
                ax.text(
                    (start + end - 1) / 2,
                    1.02,
                    label,
                    ha="center",
                    va="bottom",
                    fontsize=7.5,
                    transform=ax.get_xaxis_transform(),
                )
        columns = min(len(keys), 3)
        legend_rows = -(-len(keys) // columns)
        height = fig.get_figheight()
        title_room, legend_room = 0.4 / height, (0.2 * legend_rows + 0.1) / height  # inches, as figure fractions
        fig.suptitle(title, x=0.02, y=1 - 0.08 / height, ha="left", va="top")
        fig.legend(
            *axes[0, 0].get_legend_handles_labels(),
            loc="upper left",
            ncol=columns,
            frameon=False,
            bbox_to_anchor=(0.02, 1 - title_room),
            fontsize=8,
        )
        fig.tight_layout(rect=(0, 0, 1, 1 - title_room - legend_room))
        save(fig, path)


def _bin_values(values):
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def reliability(panels, title, path, styles):
    """Reliability diagrams side by side, up to 4 a row: panels = [(model key, reliability bins, ece)].

    Bars: accuracy of the test images in each confidence bin; red: the gap to the bin's mean
    confidence; dashed: perfect calibration. Below, the share of test images per bin.
    """
    with plt.rc_context(STYLE):
        columns = min(len(panels), 4)
        rows = -(-len(panels) // columns)
        fig, axes = plt.subplots(
            2 * rows,
            columns,
            figsize=(3.2 * columns, 4.6 * rows),
            sharex=True,
            squeeze=False,
            gridspec_kw={"height_ratios": [3, 1] * rows},
        )
        for index in range(len(panels), rows * columns):  # empty cells of the last row
            axes[2 * (index // columns), index % columns].axis("off")
            axes[2 * (index // columns) + 1, index % columns].axis("off")
        for index, (key, bins, ece) in enumerate(panels):
            row, col = divmod(index, columns)
            top, bottom = axes[2 * row, col], axes[2 * row + 1, col]
            edges = np.linspace(0, 1, bins["bins"] + 1)
            centres, width = (edges[:-1] + edges[1:]) / 2, 1 / bins["bins"]
            acc, conf = _bin_values(bins["accuracy"]), _bin_values(bins["confidence"])
            filled = ~np.isnan(acc)
            top.bar(
                centres[filled],
                acc[filled],
                width,
                color=styles.colour(key),
                edgecolor="white",
                lw=0.5,
                label="accuracy",
            )
            top.bar(
                centres[filled],
                (conf - acc)[filled],
                width,
                bottom=acc[filled],
                color=MISTAKE,
                alpha=0.35,
                edgecolor=MISTAKE,
                lw=0.5,
                label="gap to confidence",
            )
            top.plot([0, 1], [0, 1], ls="--", color="0.35", lw=1, label="perfect calibration")
            top.set_xlim(0, 1)
            top.set_ylim(0, 1)
            top.set_title(f"{_wrapped(styles.name(key), 34)}\nECE {ece:.1%}", fontsize=9)
            counts = np.asarray(bins["count"], dtype=float)
            bottom.bar(centres, counts / max(counts.sum(), 1), width, color="0.55", edgecolor="white", lw=0.5)
            bottom.set_xlabel("confidence (top softmax probability)")
            if col == 0:
                top.set_ylabel("accuracy")
                bottom.set_ylabel("share")
            if index == 0:
                top.legend(frameon=False, fontsize=7, loc="upper left")
        fig.suptitle(title)
        fig.tight_layout()
        save(fig, path)


def sample_predictions(images, true_names, predicted_names, title, path, columns):
    """A grid of test images titled "true → predicted"; mistakes in red with a red frame.

    One axes for the whole grid (each image placed by its extent, each title a text):
    fifty small axes and a tight layout took ~2 s per figure, this ~0.3 s.
    """
    from matplotlib.patches import Rectangle

    n = len(images)
    rows = max(1, -(-n // columns))
    size = images.shape[1]
    cell_w, cell_h = size * 1.3, size * 1.75  # room around each image for its two-line title
    wrong = [t != p for t, p in zip(true_names, predicted_names)]
    with plt.rc_context(STYLE):
        fig = plt.figure(figsize=(1.05 * columns, 1.3 * rows + 0.4))
        ax = fig.add_axes((0.01, 0.01, 0.98, 1 - 0.45 / fig.get_figheight()))
        for index, (image, true, predicted, mistake) in enumerate(zip(images, true_names, predicted_names, wrong)):
            row, col = divmod(index, columns)
            x, y = col * cell_w + (cell_w - size) / 2, row * cell_h + (cell_h - size)
            ax.imshow(image, extent=(x, x + size, y + size, y), interpolation="bilinear")
            if mistake:
                ax.add_patch(Rectangle((x - 1, y - 1), size + 2, size + 2, fill=False, edgecolor=MISTAKE, lw=2))
            ax.text(
                x + size / 2,
                y - 2,
                f"{true}\n→ {predicted}{'  ✗' if mistake else ''}",
                ha="center",
                va="bottom",
                fontsize=6.5,
                color=MISTAKE if mistake else CORRECT,
                fontweight="bold" if mistake else "normal",
            )
        ax.set_xlim(0, columns * cell_w)
        ax.set_ylim(rows * cell_h + 3, 0)  # room for the last row's red frames
        ax.axis("off")
        fig.suptitle(
            f"{title}: {n - sum(wrong)} of {n} correct (true → predicted; mistakes in red)",
            y=1 - 0.1 / fig.get_figheight(),
            va="top",
        )
        save(fig, path)


def _nice_log_ticks(low, high, most=6):
    """At most `most` tick values inside [low, high] on a log axis, each label short and apart from the next.

    Across decades: 1, 2, 5 x 10^k (thinned to 1 x 10^k, then every other decade);
    within one decade (2,800 to 3,100 img/s, say) matplotlib's log locator labels
    every minor tick into one unreadable run, so pick round linear steps instead.
    """
    from matplotlib.ticker import MaxNLocator

    if high / low >= 10:
        exponents = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
        for mantissas, every in (((1, 2, 5), 1), ((1,), 1), ((1,), 2), ((1,), 3)):
            ticks = [m * 10.0**e for e in exponents[::every] for m in mantissas if low <= m * 10.0**e <= high]
            if len(ticks) <= most:
                return ticks
        return ticks
    ticks = MaxNLocator(nbins=min(most, 4), steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)
    return [t for t in ticks if low <= t <= high]


def _plain_number(value):
    """3100 -> '3,100', 0.05 -> '0.05', 12.5 -> '12.5': no scientific notation on the cost axes."""
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _log_axis(ax, label):
    """A log x axis with a few legible ticks, whatever the spread of the values."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("log")
    ax.margins(x=0.2)
    ax.autoscale_view()
    low, high = ax.get_xlim()
    ax.xaxis.set_major_locator(FixedLocator(_nice_log_ticks(low, high)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _plain_number(v)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(low, high)
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)


def accuracy_vs_cost(points, title, path, styles):
    """Top-1 against GFLOPs and against throughput, one point per model and dataset.

    points = [dict(key, dataset, top1, low, high, gflops, throughput)]; low/high draw the
    spread (over seeds where there are several, else the test-set bootstrap interval).
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import PercentFormatter

    datasets = list(dict.fromkeys(p["dataset"] for p in points))
    markers = {ds: DATASET_MARKERS[i % len(DATASET_MARKERS)] for i, ds in enumerate(datasets)}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 2, figsize=(8.6, 3.6), sharey=True)
        for p in points:
            errors = [[max(p["top1"] - p["low"], 0)], [max(p["high"] - p["top1"], 0)]]
            for ax, x in zip(axes, (p["gflops"], p["throughput"])):
                ax.errorbar(
                    x,
                    p["top1"],
                    yerr=errors,
                    fmt="none",
                    ecolor=styles.colour(p["key"]),
                    elinewidth=1.2,
                    capsize=3,
                    zorder=2,
                )
                ax.scatter(
                    x,
                    p["top1"],
                    s=55,
                    marker=markers[p["dataset"]],
                    color=styles.colour(p["key"]),
                    edgecolors="black",
                    linewidths=0.5,
                    zorder=3,
                )
        for ax, label in zip(axes, ("forward GFLOPs per image (log scale)", "throughput, images/s (log scale)")):
            _log_axis(ax, label)
        axes[0].margins(y=0.15)
        axes[0].set_ylabel("test top-1 (bars: spread)")
        axes[0].yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        keys = list(dict.fromkeys(p["key"] for p in points))
        handles = [
            Line2D([], [], ls="", marker="o", color=styles.colour(k), label=_wrapped(styles.name(k), 30)) for k in keys
        ]
        handles += [Line2D([], [], ls="", marker=markers[ds], color="0.4", label=ds) for ds in datasets]
        fig.subplots_adjust(right=0.74, wspace=0.08)
        fig.legend(handles=handles, loc="center left", bbox_to_anchor=(0.75, 0.5), frameon=False, fontsize=8)
        fig.suptitle(title)
        save(fig, path)


def roc_curves(panels, title, path, styles):
    """ROC curves of out-of-distribution detection, one panel per dataset and a line per model.

    panels = [(panel title, {model key: {"fpr": [...], "tpr": [...], "auroc": float}})].
    """
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 2.4, 3.8), squeeze=False)
        for ax, (panel_title, curves) in zip(axes[0], panels):
            for key, curve in curves.items():
                ax.plot(
                    curve["fpr"],
                    curve["tpr"],
                    color=styles.colour(key),
                    lw=1.6,
                    label=_wrapped(f"{styles.name(key)} (AUROC {curve['auroc']:.3f})", 40),
                )
            ax.plot([0, 1], [0, 1], ls="--", color="0.6", lw=1)
            ax.axhline(0.95, color="0.75", lw=0.8, ls=":")  # the TPR at which FPR95 is read
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.01)
            ax.set_xlabel("false-positive rate (OOD images called in-distribution)")
            ax.set_ylabel("true-positive rate")
            ax.set_title(panel_title)
            ax.grid(alpha=0.3)
            ax.legend(frameon=False, fontsize=7, loc="lower right")
        fig.suptitle(title)
        fig.tight_layout()
        save(fig, path)


def _top1_panels(panels, title, path, xlabel, ylabel, draw):
    """One panel of test top-1 per (panel title, lines) with one legend of models beside them;
    `draw(ax, lines)` plots a panel's lines and sets up its x axis."""
    from matplotlib.ticker import PercentFormatter

    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 2.6, 3.4), squeeze=False)
        for ax, (panel_title, lines) in zip(axes[0], panels):
            draw(ax, lines)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
            ax.set_title(panel_title)
            ax.grid(alpha=0.3)
        fig.legend(
            *axes[0][0].get_legend_handles_labels(),
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
            fontsize=8,
        )
        fig.suptitle(title)
        fig.tight_layout()
        save(fig, path)


def corruption_severity(panels, title, path, styles):
    """Top-1 against corruption severity (0 = clean), one panel per dataset and a line per model.

    panels = [(panel title, {model key: (severities, accuracies)})], accuracies averaged over corruptions.
    """

    def draw(ax, lines):
        for key, (severities, accuracies) in lines.items():
            ax.plot(
                severities, accuracies, marker="o", ms=3.5, color=styles.colour(key), label=_wrapped(styles.name(key))
            )
        ax.set_xticks(sorted({s for severities, _ in lines.values() for s in severities}))

    _top1_panels(
        panels, title, path, "corruption severity (0 = clean test images)", "test top-1, mean over corruptions", draw
    )


def fewshot_curves(panels, title, path, styles):
    """Top-1 against labelled images per class (log axis), a line per model, ±1 std over draws shaded.

    panels = [(panel title, {model key: probe.fewshot_curve result})].
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    def draw(ax, curves):
        shots = []
        for key, curve in curves.items():
            shots = sorted(int(k) for k in curve["shots"])
            mean = np.array([curve["shots"][str(k)]["mean"] for k in shots])
            std = np.array([curve["shots"][str(k)]["std"] or 0.0 for k in shots])
            ax.plot(shots, mean, marker="o", ms=3.5, color=styles.colour(key), label=_wrapped(styles.name(key)))
            ax.fill_between(shots, mean - std, mean + std, color=styles.colour(key), alpha=0.18, lw=0)
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(shots))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())

    _top1_panels(panels, title, path, "labelled training images per class (log scale)", "test top-1", draw)


def tuning(panels, title, path, styles):
    """Validation top-1 against the peak lr (log axis), one panel per training stage and a line per model.

    panels = [(panel title, {model key: {"trials": [{lr, val_top1, val_top1_ci, diverged}], "chosen": lr}})].
    Each trial is a point with its 95 % interval, a diverged trial an x at 0 and the chosen lr a ring; a model
    that was not tuned is its training's one point at its recipe's lr (trials holds that one).
    """

    def draw(ax, lines):
        for key, line in lines.items():
            colour, trials = styles.colour(key), sorted(line["trials"], key=lambda t: t["lr"])
            kept = [t for t in trials if not t["diverged"]]
            lrs, top1 = [t["lr"] for t in kept], [t["val_top1"] for t in kept]
            ax.plot(lrs, top1, marker="o", ms=3.5, color=colour, label=_wrapped(styles.name(key)))
            for t in kept:
                if t.get("val_top1_ci"):
                    ax.plot([t["lr"]] * 2, t["val_top1_ci"], color=colour, lw=1, alpha=0.6)
            for t in trials:
                if t["diverged"]:
                    ax.plot(t["lr"], 0, marker="x", ms=6, color=colour, ls="none")
            chosen = [t for t in kept if t["lr"] == line["chosen"]]
            if chosen:
                ax.plot(chosen[0]["lr"], chosen[0]["val_top1"], marker="o", ms=11, mfc="none", mec=colour, mew=1.6)
        _log_axis(ax, "peak lr (log scale)")

    _top1_panels(panels, title, path, "peak lr (log scale; ring: the lr the training used)", "validation top-1", draw)
