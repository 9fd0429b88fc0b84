"""The report stage's work: gather every stage's results into summary.json and report.md."""

import csv
import json
from pathlib import Path

import numpy as np

from cifarbench import DATASETS, MODELS, atomic, dataset, figures, paths

DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}


def _read_json(path):
    path = Path(path)
    if not path.is_file():
        from cifarbench.errors import BenchError

        raise BenchError(f"{path} is missing: run `dvc repro` to produce every stage's output first")
    return json.loads(path.read_text())


def read_curve(log_dir, metric):
    """(steps, values) of one DVCLive metric, e.g. 'val/acc'."""
    path = Path(log_dir) / "plots" / "metrics" / f"{metric}.tsv"
    if not path.is_file():
        return [], []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    column = metric.rsplit("/", 1)[-1]
    return [int(r["step"]) + 1 for r in rows], [float(r[column]) for r in rows]


def collect():
    """{dataset: {model: {top1, top5, knn_top1, best_val_acc, epochs, train_seconds, ...}}}."""
    summary = {}
    for ds in DATASETS:
        summary[ds] = {}
        for key in MODELS:
            evaluation = _read_json(paths.evaluation(key, ds))
            embed = _read_json(paths.embedding_metrics(key, ds))
            train = _read_json(paths.train_log(ds, key) / "metrics.json")
            summary[ds][key] = {
                "top1": round(evaluation["top1"], 6),
                "top5": round(evaluation["top5"], 6),
                "knn_top1": round(embed["knn_top1"], 6),
                "best_val_acc": round(train["best_val_acc"], 6),
                "epochs": train["epochs_run"],
                "train_seconds": train["train_seconds"],
                "seconds_per_epoch": train["seconds_per_epoch"],
            }
    return summary


def _pct(value):
    return f"{100 * value:.1f}%"


def _accuracy_table(summary):
    lines = ["| Model | " + " | ".join(f"{DATASET_NAMES[d]} top-1 | {DATASET_NAMES[d]} top-5" for d in DATASETS) + " |",
             "| --- |" + " ---: | ---: |" * len(DATASETS)]
    for key in MODELS:
        cells = [f"{_pct(summary[d][key]['top1'])} | {_pct(summary[d][key]['top5'])}" for d in DATASETS]
        lines.append(f"| {figures.model_name(key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _training_table(summary):
    lines = ["| Model | Dataset | best val acc | epochs | s/epoch | k-NN top-1 (features) |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for ds in DATASETS:
        for key in MODELS:
            row = summary[ds][key]
            lines.append(f"| {figures.model_name(key)} | {DATASET_NAMES[ds]} | {_pct(row['best_val_acc'])} | "
                         f"{row['epochs']} | {row['seconds_per_epoch']:.1f} | {_pct(row['knn_top1'])} |")
    return "\n".join(lines)


def draw_comparisons():
    """Figures that compare the three models: training curves and UMAP panels per dataset."""
    for ds in DATASETS:
        curves = {key: {m: read_curve(paths.train_log(ds, key), m) for m in ("val/acc", "val/loss")} for key in MODELS}
        figures.training_curves(curves, f"{paths.TRAIN_STAGE[ds]}: validation per epoch", paths.figure(f"curves-{ds}"))
        panels, names = [], None
        for key in MODELS:
            with np.load(paths.embedding_points(key, ds), allow_pickle=False) as f:
                panels.append((figures.model_name(key), f["points"], f["colours"]))
                names = [str(n) for n in f["names"]]
        figures.umap_panels(panels, names, f"UMAP of penultimate features, {DATASET_NAMES[ds]} test split",
                            paths.figure(f"umap-{ds}"))


def markdown(summary, sources, stand_in):
    out = ["# CIFARbench report", ""]
    if stand_in:
        out += ["> **These results come from the offline stand-in data, not CIFAR.** They show that the",
                "> pipeline works end to end; they say nothing about the models' CIFAR accuracy.", ""]
    out += ["## Data", ""]
    out += [f"- **{DATASET_NAMES[ds]} slot**: {sources[ds]}" for ds in DATASETS]
    out += ["", "## Test accuracy", "", _accuracy_table(summary), "",
            "## Training and features", "", _training_table(summary), "",
            "k-NN top-1: 20 nearest training-split neighbours of each test image's penultimate features (cosine).",
            "", "## Figures", ""]
    for ds in DATASETS:
        name = DATASET_NAMES[ds]
        out += [f"### {name}", "",
                f"Validation accuracy and loss per epoch ({paths.TRAIN_STAGE[ds]}):", "",
                f"![training curves {name}](figures/curves-{ds}.png)", "",
                "UMAP of penultimate-layer features of the test split:", "",
                f"![UMAP {name}](figures/umap-{ds}.png)", ""]
        for key in MODELS:
            out += [f"Confusion matrix, {figures.model_name(key)} (row-normalised):", "",
                    f"![confusion {key} {name}](figures/confusion-{key}-{ds}.png)", ""]
    return "\n".join(out)


def build():
    summary = collect()
    metas = {ds: dataset.load_meta(paths.data_dir(ds)) for ds in DATASETS}
    sources = {ds: meta["source"] for ds, meta in metas.items()}
    draw_comparisons()
    atomic.write_json(paths.SUMMARY, summary)
    atomic.write_text(paths.REPORT, markdown(summary, sources, any(m["stand_in"] for m in metas.values())))
    return summary
