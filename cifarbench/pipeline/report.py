"""The report stage's work: summary and cost files, the comparison figures, plots/report.md and its
self-contained twin plots/report.html, for however many models params.yaml's registry holds.

Per-run figures (confusion, samples, single UMAPs) show the first training
seed; numbers are means over seeds (see summaries.py).
"""

import csv
from pathlib import Path

import numpy as np

from cifarbench import atomic, inputs, paths
from cifarbench.data import dataset
from cifarbench.eval import metrics
from cifarbench.paths import DATASETS
from cifarbench.pipeline import summaries
from cifarbench.render import figures, report_html, styles


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


def _pct(value):
    return f"{100 * value:.1f}%"


def _with_interval(value, interval):
    """97.1 (96.8–97.4): a top-1 in percent with its 95 % interval."""
    return f"{100 * value:.1f} ({100 * interval[0]:.1f}–{100 * interval[1]:.1f})"


def _p(value):
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _training_device(cost):
    """Where a training ran, and whether its step was compiled (cost files before compute.compile: auto say neither)."""
    return cost["device"] + (", torch.compile" if cost.get("compiled") else "")


def _table(header, align, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" ---: " if a == "r" else " --- " for a in align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


class Report:
    """Everything one report needs: params, the registry's names and colours, every stage's results."""

    def __init__(self, params, results_, metas):
        self.params, self.results, self.metas = params, results_, metas
        self.keys, self.styles = params.keys, styles.Styles.of(params)
        self.first_seed = params.seeds[0]
        self.summary = summaries.summarize(results_, params)
        self.cost = summaries.costs(results_, params)
        self.comparisons = summaries.comparisons(results_, params)

    def name(self, key):
        return self.styles.name(key)

    def first(self, kind, ds, key):
        """One stage output of the first training seed (what per-run figures show)."""
        return self.results[kind][ds][key][self.first_seed]

    # ---- tables

    def accuracy_table(self):
        """Top-1 and top-5 in percent with their 95 % bootstrap intervals over the test images."""
        header = ["Model"] + [f"{styles.dataset_name(d)} {k} (95% CI)" for d in DATASETS for k in ("top-1", "top-5")]
        rows = [
            [self.name(key)]
            + [
                _with_interval(self.summary[d][key][k], self.summary[d][key][f"{k}_ci"])
                for d in DATASETS
                for k in ("top1", "top5")
            ]
            for key in self.keys
        ]
        return _table(header, "l" + "r" * (len(header) - 1), rows)

    def seeds_table(self):
        """With several training seeds: each seed's top-1 and the t-interval over them."""
        header = (
            ["Model"]
            + [f"{styles.dataset_name(d)} top-1 per seed {self.params.seeds}" for d in DATASETS]
            + [f"{styles.dataset_name(d)} 95% t-interval over seeds" for d in DATASETS]
        )
        rows = [
            [self.name(key)]
            + [", ".join(f"{100 * v:.1f}" for v in self.summary[d][key]["top1_seeds"]) for d in DATASETS]
            + ["–".join(f"{100 * v:.1f}" for v in self.summary[d][key]["top1_seed_ci"]) for d in DATASETS]
            for key in self.keys
        ]
        return _table(header, "l" + "r" * (len(header) - 1), rows)

    def comparison_section(self):
        """Paired differences between every two models, and which hold after Holm's correction."""
        if len(self.keys) < 2:
            return ["One model: nothing to compare.", ""]
        out = []
        for ds in DATASETS:
            rows, holding = [], []
            for pair, r in self.comparisons[ds].items():
                a, b = pair.split("-vs-")
                rows.append(
                    [
                        f"{self.name(a)} − {self.name(b)}",
                        f"{100 * r['top1_diff']:+.1f}",
                        f"{100 * r['top1_diff_ci'][0]:+.1f} to {100 * r['top1_diff_ci'][1]:+.1f}",
                        _p(r["mcnemar_p"]),
                        _p(r["holm_p"]),
                        "yes" if r["significant"] else "no",
                    ]
                )
                if r["significant"]:
                    better, worse = (a, b) if r["top1_diff"] > 0 else (b, a)
                    holding.append(f"{self.name(better)} beats {self.name(worse)}")
            out += [
                f"**{styles.dataset_name(ds)}**",
                "",
                _table(
                    [
                        "Difference in top-1",
                        "points",
                        "95% CI (paired bootstrap)",
                        "McNemar p",
                        "Holm p",
                        f"holds at {summaries.SIGNIFICANCE}",
                    ],
                    "lrrrrl",
                    rows,
                ),
                "",
                (
                    "Differences that hold at 0.05 after Holm's correction: " + "; ".join(holding) + "."
                    if holding
                    else "No difference holds at 0.05 after Holm's correction."
                ),
                "",
            ]
        return out

    def transfer_table(self):
        """Fine-tuning against frozen features: linear probes and k-NN, per model and dataset."""
        header = [
            "Model",
            "Dataset",
            "fine-tuned",
            "linear probe (starting weights)",
            "linear probe (CIFAR-10-tuned features)",
            "k-NN (fine-tuned features)",
        ]
        rows = []
        for ds in DATASETS:
            for key in self.keys:
                row, probe = self.summary[ds][key], self.results["probe"][ds][key]
                rows.append(
                    [
                        self.name(key),
                        styles.dataset_name(ds),
                        _pct(row["top1"]),
                        f"{_pct(row['probe_top1'])} ({probe['weights']})",
                        _pct(probe["probe_from_cifar10_top1"]),
                        _pct(row["knn_top1"]),
                    ]
                )
        return _table(header, "ll" + "r" * 4, rows)

    def ood_table(self):
        header = ["Model", "Trained on", "OOD images", "MSP AUROC", "MSP FPR95", "energy AUROC", "energy FPR95"]
        rows = []
        for ds in DATASETS:
            for key in self.keys:
                per_seed = self.results["evaluation"][ds][key]
                scores = {name: {seed: r["ood"][name] for seed, r in per_seed.items()} for name in ("msp", "energy")}
                rows.append(
                    [
                        self.name(key),
                        styles.dataset_name(ds),
                        styles.dataset_name(self.first("evaluation", ds, key)["ood"]["dataset"]),
                    ]
                    + [
                        f"{summaries.mean_over_seeds(scores[n], f):.3f}"
                        for n in ("msp", "energy")
                        for f in ("auroc", "fpr95")
                    ]
                )
        return _table(header, "lll" + "r" * 4, rows)

    def corruption_table(self):
        header = ["Model"] + [f"{styles.dataset_name(d)} {k}" for d in DATASETS for k in ("clean", "corrupted")]
        rows = [
            [self.name(key)] + [_pct(self.summary[d][key][k]) for d in DATASETS for k in ("top1", "corruption_top1")]
            for key in self.keys
        ]
        return _table(header, "l" + "r" * (len(header) - 1), rows)

    def efficiency_table(self):
        header = [
            "Model",
            "Dataset",
            "Params",
            "Trainable",
            "GFLOPs",
            "Throughput (img/s)",
            "Latency (ms)",
            "Peak mem. eval (MiB)",
            "Peak mem. train (MiB)",
            "s/epoch",
            "Train total (s)",
        ]
        rows = [
            [
                self.name(key),
                styles.dataset_name(ds),
                f"{r['params'] / 1e6:.2f} M",
                f"{r['trainable_params'] / 1e6:.2f} M",
                f"{r['gflops']:.3g}",
                f"{r['throughput']:,.0f}",
                f"{r['latency_ms']:.2f}",
                f"{r['peak_memory_mb']:,.0f}",
                f"{r['train_peak_memory_mb']:,.0f}",
                f"{r['seconds_per_epoch']:.1f}",
                f"{r['train_seconds']:.0f}",
            ]
            for ds in DATASETS
            for key in self.keys
            for r in [self.cost[ds][key]]
        ]
        return _table(header, "ll" + "r" * (len(header) - 2), rows)

    def calibration_table(self):
        header = ["Model"] + [f"{styles.dataset_name(d)} ECE" for d in DATASETS]
        rows = [[self.name(key)] + [_pct(self.summary[d][key]["ece"]) for d in DATASETS] for key in self.keys]
        return _table(header, "l" + "r" * len(DATASETS), rows)

    def training_table(self):
        header = ["Model", "Dataset", "best val acc", "epochs", "s/epoch", "k-NN top-1 (features)"]
        rows = [
            [
                self.name(key),
                styles.dataset_name(ds),
                _pct(self.summary[ds][key]["best_val_acc"]),
                f"{self.cost[ds][key]['epochs']:g}",
                f"{self.cost[ds][key]['seconds_per_epoch']:.1f}",
                _pct(self.summary[ds][key]["knn_top1"]),
            ]
            for ds in DATASETS
            for key in self.keys
        ]
        return _table(header, "ll" + "r" * 4, rows)

    def devices(self):
        """One line naming where evaluation and training ran (and, where they differ, for which model)."""
        runs = [
            (ds, key, self.first("efficiency", ds, key)["device"], _training_device(self.first("train_cost", ds, key)))
            for ds in DATASETS
            for key in self.keys
        ]
        lines = []
        for index, what in ((2, "evaluation"), (3, "training")):
            found = {run[index] for run in runs}
            if len(found) == 1:
                lines.append(f"{what} on {found.pop()}")
            else:
                lines.append(
                    f"{what} on "
                    + "; ".join(f"{self.name(run[1])}/{styles.dataset_name(run[0])}: {run[index]}" for run in runs)
                )
        measure = sorted({self.first("efficiency", ds, key)["memory_measure"] for ds in DATASETS for key in self.keys})
        return "Measured with " + " and ".join(lines) + f"; peak memory is {' / '.join(measure)}."

    # ---- figures

    def draw(self):
        """Figures that compare the models: curves, UMAP, per-class bars, reliability, accuracy vs cost."""
        seed = self.first_seed
        for ds in DATASETS:
            name, meta = styles.dataset_name(ds), self.metas[ds]
            curves = {
                key: {m: read_curve(paths.train_log(ds, key, seed), m) for m in ("val/acc", "val/loss")}
                for key in self.keys
            }
            figures.training_curves(
                curves,
                f"{paths.TRAIN_STAGE[ds]}: validation per epoch (seed {seed})",
                paths.figure(f"curves-{ds}"),
                self.styles,
            )
            panels, names = [], None
            for key in self.keys:
                f = inputs.read_npz(paths.embedding_points(key, ds, seed), ("points", "colours", "names"))
                panels.append((self.name(key), f["points"], f["colours"]))
                names = [str(n) for n in f["names"]]
            figures.umap_panels(
                panels, names, f"UMAP of penultimate features, {name} test split", paths.figure(f"umap-{ds}")
            )
            per_class = {
                key: [np.nan if v is None else v for v in self.first("evaluation", ds, key)["per_class"].values()]
                for key in self.keys
            }
            figures.per_class_bars(
                per_class,
                meta["classes"],
                f"Per-class test accuracy, {name}",
                paths.figure(f"per-class-{ds}"),
                self.styles,
                fine_to_coarse=meta.get("fine_to_coarse"),
                coarse_classes=meta["coarse_classes"],
            )
            figures.reliability(
                [
                    (key, self.first("evaluation", ds, key)["reliability"], self.first("evaluation", ds, key)["ece"])
                    for key in self.keys
                ],
                f"Reliability on the {name} test split",
                paths.figure(f"reliability-{ds}"),
                self.styles,
            )
        figures.accuracy_vs_cost(
            self.cost_points(), "Test top-1 against cost", paths.figure("accuracy-vs-cost"), self.styles
        )
        figures.roc_curves(
            [
                (
                    f"{styles.dataset_name(ds)} models, {styles.dataset_name(other)} images as OOD",
                    {
                        key: {
                            **self.first("evaluation", ds, key)["ood"]["msp"]["roc"],
                            "auroc": self.first("evaluation", ds, key)["ood"]["msp"]["auroc"],
                        }
                        for key in self.keys
                    },
                )
                for ds, other in zip(DATASETS, DATASETS[::-1])
            ],
            "Out-of-distribution detection by maximum softmax probability",
            paths.figure("ood-roc"),
            self.styles,
        )
        figures.fewshot_curves(
            [
                (styles.dataset_name(ds), {key: self.results["probe"][ds][key]["fewshot"] for key in self.keys})
                for ds in DATASETS
            ],
            "Linear probes on frozen starting features with few labels",
            paths.figure("fewshot"),
            self.styles,
        )
        if self.corrupted():
            figures.corruption_severity(
                [
                    (styles.dataset_name(ds), {key: self.severity_curve(ds, key) for key in self.keys})
                    for ds in DATASETS
                ],
                "Accuracy under CIFAR-10-C corruptions",
                paths.figure("corruption-severity"),
                self.styles,
            )

    def corrupted(self):
        return bool(self.params.evaluate.corruptions and self.params.evaluate.severities)

    def severity_curve(self, ds, key):
        """([0, severities...], [clean top-1, mean over corruptions and seeds at each severity...])."""
        per_seed = self.results["evaluation"][ds][key].values()
        severities = list(self.params.evaluate.severities)
        means = [
            float(np.mean([r["corruptions"][name][str(s)] for r in per_seed for name in r["corruptions"]]))
            for s in severities
        ]
        return [0, *severities], [self.summary[ds][key]["top1"], *means]

    def cost_points(self):
        """One point per model and dataset; the bar is the spread over seeds (min to max), else the 95 % interval."""
        points = []
        for ds in DATASETS:
            for key in self.keys:
                row = self.summary[ds][key]
                low, high = (min(row["top1_seeds"]), max(row["top1_seeds"])) if "top1_seeds" in row else row["top1_ci"]
                points.append(
                    {
                        "key": key,
                        "dataset": styles.dataset_name(ds),
                        "top1": row["top1"],
                        "low": low,
                        "high": high,
                        "gflops": self.cost[ds][key]["gflops"],
                        "throughput": self.cost[ds][key]["throughput"],
                    }
                )
        return points

    # ---- the document

    def data_section(self):
        params = self.params
        out = ["## Data and parameters", ""]
        for ds in DATASETS:
            meta = self.metas[ds]
            counts = ", ".join(f"{meta['counts'][s]:,} {s}" for s in dataset.SPLITS)
            out.append(
                f"- **{styles.dataset_name(ds)} slot**: {meta['source']}; {len(meta['classes'])} classes; "
                f"{counts} images"
            )
        out += [
            f"- **Params digest** `{params.digest()}` (SHA-256 of params.yaml's settings that decide the numbers, "
            "speed settings left out, first 12 hex digits); "
            f"training seeds {params.seeds}, split seed {params.seed}, data.source `{params.data.source}`, "
            f"data.limit {params.data.limit or 'none'}, compute.device `{params.compute.device}`, "
            f"precision `{params.compute.precision}`",
            "",
        ]
        rows = []
        for key in self.keys:
            spec, train, transfer = params.model(key), params.recipe("train", key), params.recipe("transfer", key)
            weights = {True: "pretrained", False: "random init"}.get(spec.pretrained, f"`{spec.pretrained}`")
            rows.append(
                [
                    self.name(key),
                    f"`{spec.arch}`",
                    weights,
                    spec.img_size,
                    f"{train.optimizer}, lr {train.lr:g}, {train.schedule}, {train.epochs} ep",
                    f"{transfer.optimizer}, lr {transfer.lr:g}, {transfer.schedule}, {transfer.epochs} ep",
                    transfer.freeze_blocks,
                ]
            )
        out += [
            _table(
                [
                    "Model",
                    "timm architecture",
                    "weights",
                    "img_size",
                    "CIFAR-10 recipe",
                    "CIFAR-100 recipe",
                    "frozen blocks (transfer)",
                ],
                "lllrllr",
                rows,
            ),
            "",
        ]
        return out

    def markdown(self):
        out = ["# CIFARbench report", ""]
        if any(m["stand_in"] for m in self.metas.values()):
            out += [
                "> **These results come from the offline stand-in data, not CIFAR.** They show that the",
                "> pipeline works end to end; they say nothing about the models' CIFAR accuracy.",
                "",
            ]
        out += self.data_section()
        seeds = len(self.params.seeds)
        out += [
            "## Test accuracy",
            "",
            self.accuracy_table(),
            "",
            f"Top-1 and top-5 in percent; in brackets the 95 % bootstrap interval over the test images "
            f"({self.params.evaluate.bootstrap:,} resamples"
            + (
                f", each image's correctness averaged over the {seeds} training seeds)."
                if seeds > 1
                else ", one training seed)."
            ),
            "",
        ]
        if seeds > 1:
            out += [
                "### Spread over training seeds",
                "",
                self.seeds_table(),
                "",
                "The interval over seeds is Student's t on the seeds' top-1 (how much retraining moves it); "
                "the interval above is over test images (how much another test set would).",
                "",
            ]
        out += [
            "### Which differences hold",
            "",
            "Every pair of models on the same test images: the difference in top-1 with a paired bootstrap "
            "interval, and an exact McNemar test on the first training seed's predictions, corrected over "
            "the pairs with Holm's method.",
            "",
            *self.comparison_section(),
        ]
        batch = sorted({self.first("efficiency", d, k)["eval_batch_size"] for d in DATASETS for k in self.keys})
        latency = self.first("efficiency", DATASETS[0], self.keys[0])["latency_runs"]
        out += [
            "## Efficiency",
            "",
            self.efficiency_table(),
            "",
            f"{self.devices()} GFLOPs: `torch.utils.flop_counter` FLOPs of one forward pass of one image at the "
            f"model's img_size, divided by 1e9; a multiply-add counts as 2 FLOPs. Throughput: test images per "
            f"second through preprocessing and the model at the evaluation batch size "
            f"({', '.join(map(str, batch))}). Latency: one image (batch 1), {latency}. Trainable: "
            f"parameters updated in that dataset's training stage (CIFAR-100: after freezing). Training seconds "
            f"come from the training stages' logs.",
            "",
        ]
        out += _figure(
            "accuracy against cost",
            "accuracy-vs-cost",
            "Test top-1 against forward GFLOPs and against throughput; colour = model, marker = dataset, "
            "bars = spread over training seeds.",
        )
        out += [
            "## Calibration",
            "",
            self.calibration_table(),
            "",
            f"ECE: expected calibration error over {metrics.ECE_BINS} equal-width bins of the top softmax "
            f"probability (0 = confidence matches accuracy).",
            "",
        ]
        for ds in DATASETS:
            out += _figure(
                f"reliability {styles.dataset_name(ds)}",
                f"reliability-{ds}",
                f"Reliability diagrams, {styles.dataset_name(ds)} test split: accuracy per confidence "
                f"bin, the gap to confidence in red, the share of images per bin below.",
            )
        shots, draws = self.params.probe.shots, self.params.probe.draws
        out += [
            "## Transfer: fine-tuning against frozen features",
            "",
            self.transfer_table(),
            "",
            "Linear probe: a multinomial logistic regression (scikit-learn) on frozen penultimate features of "
            f"all training images, its L2 strength chosen on the validation split (C from "
            f"{self.params.probe.c_grid}; lbfgs to tolerance {self.params.probe.tol:g}, at most "
            f"{self.params.probe.max_iter} iterations); starting weights are what "
            "training starts from (random init in the demo, which says nothing about pretraining). "
            "CIFAR-10-tuned features: the CIFAR-10 checkpoint of the first training seed, before any CIFAR-100 "
            "training. k-NN: 20 nearest neighbours of the fine-tuned features.",
            "",
        ]
        out += _figure(
            "few-shot linear probes",
            "fewshot",
            f"Test top-1 of linear probes on the starting weights' features trained on {shots} labelled "
            f"images per class, the mean over {draws} random draws, ±1 standard deviation shaded.",
        )
        out += [
            "## Out-of-distribution detection",
            "",
            self.ood_table(),
            "",
            "Each model scores the other dataset's test images as out-of-distribution (CIFAR-10 and CIFAR-100 "
            "share no class). MSP: the maximum softmax probability; energy: the logits' log-sum-exp, a stronger "
            "score. AUROC: 1 separates perfectly, 0.5 is chance; FPR95: the share of OOD images taken as "
            "in-distribution at the threshold that keeps 95 % of the test images.",
            "",
        ]
        out += _figure(
            "out-of-distribution ROC curves",
            "ood-roc",
            "ROC curves of the maximum softmax probability separating each dataset's test images from "
            "the other dataset's.",
        )
        if self.corrupted():
            ev = self.params.evaluate
            images = self.first("evaluation", DATASETS[0], self.keys[0])["corruption_images"]
            scope = (
                "all 15 CIFAR-10-C corruptions"
                if len(ev.corruptions) == 15
                else f"{len(ev.corruptions)} of the 15 CIFAR-10-C corruptions ({', '.join(ev.corruptions)})"
            )
            out += [
                "## Corruption robustness",
                "",
                self.corruption_table(),
                "",
                f"Corrupted: the mean top-1 over {scope} at severities {list(ev.severities)}, each applied to "
                f"{images:,} test images at 32x32 before the model's own preprocessing (Hendrycks & Dietterich "
                f"2019).",
                "",
            ]
            out += _figure(
                "accuracy against corruption severity",
                "corruption-severity",
                "Top-1 against corruption severity, the mean over the corruptions; severity 0 is the clean test split.",
            )
        out += [
            "## Training and features",
            "",
            self.training_table(),
            "",
            "k-NN top-1: 20 nearest training-split neighbours of each test image's penultimate features (cosine).",
            "",
        ]
        for ds in DATASETS:
            out += _figure(
                f"training curves {styles.dataset_name(ds)}",
                f"curves-{ds}",
                f"Validation accuracy and loss per epoch of every model in {paths.TRAIN_STAGE[ds]}.",
            )
        for ds in DATASETS:
            coarse = bool(self.metas[ds].get("coarse_classes"))
            out += _figure(
                f"UMAP {styles.dataset_name(ds)}",
                f"umap-{ds}",
                f"UMAP of penultimate-layer features of the {styles.dataset_name(ds)} test split, "
                f"coloured by {'coarse class' if coarse else 'class'}.",
            )
        out += ["## Per-class accuracy", ""]
        for ds in DATASETS:
            grouped = ", grouped by coarse class" if self.metas[ds].get("coarse_classes") else ""
            out += _figure(
                f"per-class accuracy {styles.dataset_name(ds)}",
                f"per-class-{ds}",
                f"Test accuracy of each {styles.dataset_name(ds)} class, the models side by side{grouped}.",
            )
        out += self.per_run_figures()
        return "\n".join(out)

    def per_run_figures(self):
        seed = self.first_seed
        out = ["## Confusion matrices", ""]
        for ds in DATASETS:
            ordered = (
                "; classes ordered by coarse group, boundaries drawn" if self.metas[ds].get("coarse_classes") else ""
            )
            for key in self.keys:
                out += _figure(
                    f"confusion {key} {styles.dataset_name(ds)}",
                    f"confusion-{key}-{ds}-{seed}",
                    f"{self.name(key)} on {styles.dataset_name(ds)}: confusion matrix, each row "
                    f"normalised to its true class{ordered}.",
                )
        out += ["## Sample predictions", ""]
        for ds in DATASETS:
            for key in self.keys:
                out += _figure(
                    f"samples {key} {styles.dataset_name(ds)}",
                    f"samples-{key}-{ds}-{seed}",
                    f"{self.name(key)} on the same evenly spaced {styles.dataset_name(ds)} test images: "
                    f"true → predicted, mistakes in red.",
                )
        return out


def _figure(alt, name, caption):
    return [f"![{alt}](figures/{name}.png)", "", f"*{caption}*", ""]


def build(params):
    metas = {ds: dataset.load_meta(paths.data_dir(ds)) for ds in DATASETS}
    report = Report(params, summaries.collect(params), metas)
    report.draw()
    text = report.markdown()
    atomic.write_json(paths.SUMMARY, report.summary)
    atomic.write_json(paths.COST, report.cost)
    atomic.write_json(paths.COMPARISONS, report.comparisons)
    atomic.write_json(
        paths.TOP1,
        {
            paths.SHORT_DATASET[ds]: {key: row["top1"] for key, row in rows.items()}
            for ds, rows in report.summary.items()
        },
    )
    atomic.write_text(paths.REPORT, text)
    atomic.write_text(paths.REPORT_HTML, report_html.render(text, paths.REPORT.parent))
    return report.summary
