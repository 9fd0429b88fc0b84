"""The report stage's work: every stage's results into summary.json, the comparison figures,
plots/report.md and its self-contained twin plots/report.html."""

import csv
from pathlib import Path

import numpy as np

from cifarbench import DATASETS, MODELS, atomic, dataset, efficiency, figures, inputs, metrics, paths, report_html

DATASET_NAMES = figures.DATASET_NAMES


def read_curve(log_dir, metric):
    """(steps, values) of one DVCLive metric, e.g. 'val/acc'."""
    path = Path(log_dir) / "plots" / "metrics" / f"{metric}.tsv"
    if not path.is_file():
        return [], []
    column = metric.rsplit("/", 1)[-1]
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        return [int(r["step"]) + 1 for r in rows], [float(r[column]) for r in rows]
    except (UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:  # a row cut short gives None: TypeError
        problem = f"not a DVCLive table with step and {column} columns: {inputs.first_line(exc)}"
        raise inputs.damaged(path, problem) from None


SUMMARY_FROM_EFFICIENCY = ("params", "trainable_params", "gflops", "throughput", "latency_ms", "peak_memory_mb",
                           "train_peak_memory_mb", "train_seconds", "seconds_per_epoch", "epochs")


def collect():
    """Every stage's results: {"evaluation"|"efficiency"|"embed"|"train": {dataset: {model: dict}}}."""
    sources = {"evaluation": paths.evaluation, "efficiency": paths.efficiency, "embed": paths.embedding_metrics,
               "train": lambda key, ds: paths.train_log(ds, key) / "metrics.json"}
    return {name: {ds: {key: atomic.read_json(where(key, ds)) for key in MODELS} for ds in DATASETS}
            for name, where in sources.items()}


def summarize(results):
    """metrics/summary.json: {dataset: {model: {top1, top5, ece, params, gflops, throughput, latency_ms, ...}}}."""
    summary = {}
    for ds in DATASETS:
        summary[ds] = {}
        for key in MODELS:
            evaluation, cost = results["evaluation"][ds][key], results["efficiency"][ds][key]
            summary[ds][key] = {
                "top1": round(evaluation["top1"], 6),
                "top5": round(evaluation["top5"], 6),
                "ece": round(evaluation["ece"], 6),
                **{name: cost[name] for name in SUMMARY_FROM_EFFICIENCY},
                "knn_top1": round(results["embed"][ds][key]["knn_top1"], 6),
                "best_val_acc": round(results["train"][ds][key]["best_val_acc"], 6),
            }
    return summary


def _pct(value):
    return f"{100 * value:.1f}%"


def _table(header, align, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" ---: " if a == "r" else " --- " for a in align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def accuracy_table(summary):
    """The seed README's table, model × dataset, with top-5 beside top-1."""
    header = ["Model"] + [f"{DATASET_NAMES[d]} {k}" for d in DATASETS for k in ("top-1", "top-5")]
    rows = [[figures.model_name(key)] + [_pct(summary[d][key][k]) for d in DATASETS for k in ("top1", "top5")]
            for key in MODELS]
    return _table(header, "l" + "r" * (len(header) - 1), rows)


def _millions(n):
    return f"{n / 1e6:.2f} M"


def efficiency_table(summary):
    header = ["Model", "Dataset", "Params", "Trainable", "GFLOPs", "Throughput (img/s)", "Latency (ms)",
              "Peak mem. eval (MiB)", "Peak mem. train (MiB)", "s/epoch", "Train total (s)"]
    rows = [[figures.model_name(key), DATASET_NAMES[ds], _millions(r["params"]), _millions(r["trainable_params"]),
             f"{r['gflops']:.3g}", f"{r['throughput']:,.0f}", f"{r['latency_ms']:.2f}", f"{r['peak_memory_mb']:,.0f}",
             f"{r['train_peak_memory_mb']:,.0f}", f"{r['seconds_per_epoch']:.1f}", f"{r['train_seconds']:.0f}"]
            for ds in DATASETS for key in MODELS for r in [summary[ds][key]]]
    return _table(header, "ll" + "r" * (len(header) - 2), rows)


def calibration_table(summary):
    header = ["Model"] + [f"{DATASET_NAMES[d]} ECE" for d in DATASETS]
    rows = [[figures.model_name(key)] + [_pct(summary[d][key]["ece"]) for d in DATASETS] for key in MODELS]
    return _table(header, "l" + "r" * len(DATASETS), rows)


def training_table(summary):
    header = ["Model", "Dataset", "best val acc", "epochs", "s/epoch", "k-NN top-1 (features)"]
    rows = [[figures.model_name(key), DATASET_NAMES[ds], _pct(r["best_val_acc"]), r["epochs"],
             f"{r['seconds_per_epoch']:.1f}", _pct(r["knn_top1"])]
            for ds in DATASETS for key in MODELS for r in [summary[ds][key]]]
    return _table(header, "ll" + "r" * 4, rows)


def draw_comparisons(results, metas):
    """Figures that compare the three models: curves, UMAP, per-class bars, reliability, accuracy vs cost."""
    for ds in DATASETS:
        name, meta = DATASET_NAMES[ds], metas[ds]
        curves = {key: {m: read_curve(paths.train_log(ds, key), m) for m in ("val/acc", "val/loss")} for key in MODELS}
        figures.training_curves(curves, f"{paths.TRAIN_STAGE[ds]}: validation per epoch", paths.figure(f"curves-{ds}"))
        panels, names = [], None
        for key in MODELS:
            f = inputs.read_npz(paths.embedding_points(key, ds), ("points", "colours", "names"))
            panels.append((figures.model_name(key), f["points"], f["colours"]))
            names = [str(n) for n in f["names"]]
        figures.umap_panels(panels, names, f"UMAP of penultimate features, {name} test split",
                            paths.figure(f"umap-{ds}"))
        per_class = {key: [np.nan if v is None else v for v in results["evaluation"][ds][key]["per_class"].values()]
                     for key in MODELS}
        figures.per_class_bars(per_class, meta["classes"], f"Per-class test accuracy, {name}",
                               paths.figure(f"per-class-{ds}"), fine_to_coarse=meta.get("fine_to_coarse"),
                               coarse_classes=meta["coarse_classes"])
        figures.reliability([(key, results["evaluation"][ds][key]["reliability"], results["evaluation"][ds][key]["ece"])
                             for key in MODELS], f"Reliability on the {name} test split", paths.figure(f"reliability-{ds}"))
    points = [(key, DATASET_NAMES[ds], results["evaluation"][ds][key]["top1"], results["efficiency"][ds][key]["gflops"],
               results["efficiency"][ds][key]["throughput"]) for ds in DATASETS for key in MODELS]
    figures.accuracy_vs_cost(points, "Test top-1 against cost", paths.figure("accuracy-vs-cost"))


def _figure(alt, name, caption):
    return [f"![{alt}](figures/{name}.png)", "", f"*{caption}*", ""]


def _devices(results):
    """One line naming where evaluation and training ran (and, where they differ, for which model)."""
    costs = [(ds, key, results["efficiency"][ds][key]) for ds in DATASETS for key in MODELS]
    lines = []
    for field, what in (("device", "evaluation"), ("train_device", "training")):
        found = {c[field] for _, _, c in costs}
        if len(found) == 1:
            lines.append(f"{what} on {found.pop()}")
        else:
            lines.append(f"{what} on " + "; ".join(f"{figures.model_name(k)}/{DATASET_NAMES[d]}: {c[field]}"
                                                   for d, k, c in costs))
    measure = sorted({c["memory_measure"] for _, _, c in costs})
    return "Measured with " + " and ".join(lines) + f"; peak memory is {' / '.join(measure)}."


def _data_section(metas, params):
    out = ["## Data and parameters", ""]
    for ds in DATASETS:
        meta = metas[ds]
        counts = ", ".join(f"{meta['counts'][s]:,} {s}" for s in dataset.SPLITS)
        out.append(f"- **{DATASET_NAMES[ds]} slot**: {meta['source']}; {len(meta['classes'])} classes; {counts} images")
    out += [f"- **Params digest** `{params.digest()}` (SHA-256 of the validated params.yaml, first 12 hex digits); "
            f"seed {params.seed}, data.source `{params.data.source}`, data.limit {params.data.limit or 'none'}, "
            f"compute.device `{params.compute.device}`, precision `{params.compute.precision}`", ""]
    rows = [[figures.model_name(key), f"`{spec.arch}`", {True: "pretrained", False: "random init"}.get(spec.pretrained,
             f"`{spec.pretrained}`"), spec.img_size, params.recipe("train", key).epochs,
             params.recipe("transfer", key).epochs, params.recipe("transfer", key).freeze_blocks]
            for key in MODELS for spec in [params.model(key)]]
    out += [_table(["Model", "timm architecture", "weights", "img_size", "train epochs (max)",
                    "transfer epochs (max)", "frozen blocks (transfer)"], "lllrrrr", rows), ""]
    return out


def markdown(summary, results, metas, params):
    out = ["# CIFARbench report", ""]
    if any(m["stand_in"] for m in metas.values()):
        out += ["> **These results come from the offline stand-in data, not CIFAR.** They show that the",
                "> pipeline works end to end; they say nothing about the models' CIFAR accuracy.", ""]
    out += _data_section(metas, params)
    out += ["## Test accuracy", "", accuracy_table(summary), ""]
    batch = {results["efficiency"][d][k]["eval_batch_size"] for d in DATASETS for k in MODELS}
    out += ["## Efficiency", "", efficiency_table(summary), "",
            f"{_devices(results)} GFLOPs: `torch.utils.flop_counter` FLOPs of one forward pass of one image at the "
            f"model's img_size, divided by 1e9; a multiply-add counts as 2 FLOPs. Throughput: test images per second "
            f"through preprocessing and the model at the evaluation batch size ({', '.join(map(str, sorted(batch)))}). "
            f"Latency: one image (batch 1), median of at least {efficiency.LATENCY_MIN_RUNS} runs after "
            f"{efficiency.LATENCY_WARMUP} warm-up runs. Trainable: parameters updated in that dataset's training "
            f"stage (CIFAR-100: after freezing). Training seconds come from the training stages' logs.", ""]
    out += _figure("accuracy against cost", "accuracy-vs-cost",
                   "Test top-1 against forward GFLOPs and against throughput; colour = model, marker = dataset.")
    out += ["## Calibration", "", calibration_table(summary), "",
            f"ECE: expected calibration error over {metrics.ECE_BINS} equal-width bins of the top softmax "
            f"probability (0 = confidence matches accuracy).", ""]
    for ds in DATASETS:
        out += _figure(f"reliability {DATASET_NAMES[ds]}", f"reliability-{ds}",
                       f"Reliability diagrams, {DATASET_NAMES[ds]} test split: accuracy per confidence bin, the gap "
                       f"to confidence in red, the share of images per bin below.")
    out += ["## Training and features", "", training_table(summary), "",
            "k-NN top-1: 20 nearest training-split neighbours of each test image's penultimate features (cosine).", ""]
    for ds in DATASETS:
        out += _figure(f"training curves {DATASET_NAMES[ds]}", f"curves-{ds}",
                       f"Validation accuracy and loss per epoch of the three models in {paths.TRAIN_STAGE[ds]}.")
    for ds in DATASETS:
        grouped = " grouped by coarse class" if metas[ds].get("coarse_classes") else ""
        out += _figure(f"UMAP {DATASET_NAMES[ds]}", f"umap-{ds}",
                       f"UMAP of penultimate-layer features of the {DATASET_NAMES[ds]} test split, coloured by "
                       f"{'coarse class' if grouped else 'class'}.")
    out += ["## Per-class accuracy", ""]
    for ds in DATASETS:
        grouped = ", grouped by coarse class" if metas[ds].get("coarse_classes") else ""
        out += _figure(f"per-class accuracy {DATASET_NAMES[ds]}", f"per-class-{ds}",
                       f"Test accuracy of each {DATASET_NAMES[ds]} class, the three models side by side{grouped}.")
    out += ["## Confusion matrices", ""]
    for ds in DATASETS:
        ordered = "; classes ordered by coarse group, boundaries drawn" if metas[ds].get("coarse_classes") else ""
        for key in MODELS:
            out += _figure(f"confusion {key} {DATASET_NAMES[ds]}", f"confusion-{key}-{ds}",
                           f"{figures.model_name(key)} on {DATASET_NAMES[ds]}: confusion matrix, each row "
                           f"normalised to its true class{ordered}.")
    out += ["## Sample predictions", ""]
    for ds in DATASETS:
        for key in MODELS:
            out += _figure(f"samples {key} {DATASET_NAMES[ds]}", f"samples-{key}-{ds}",
                           f"{figures.model_name(key)} on the same evenly spaced {DATASET_NAMES[ds]} test images: "
                           f"true → predicted, mistakes in red.")
    return "\n".join(out)


def build(params):
    results = collect()
    summary = summarize(results)
    metas = {ds: dataset.load_meta(paths.data_dir(ds)) for ds in DATASETS}
    draw_comparisons(results, metas)
    text = markdown(summary, results, metas, params)
    atomic.write_json(paths.SUMMARY, summary)
    atomic.write_text(paths.REPORT, text)
    atomic.write_text(paths.REPORT_HTML, report_html.render(text, paths.REPORT.parent))
    return summary
