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
from cifarbench.paths import DATASETS
from cifarbench.pipeline import summaries
from cifarbench.render import figures, report_html, report_md, styles


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


def _training_device(cost):
    """Where a training ran, and whether its step was compiled (cost files before compute.compile: auto say neither)."""
    return cost["device"] + (", torch.compile" if cost.get("compiled") else "")


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
        figures.tuning(
            [(f"{paths.TRAIN_STAGE[ds]} ({styles.dataset_name(ds)})", self._tuning_lines(ds)) for ds in DATASETS],
            "Validation top-1 over each model's tuning grid"
            if self._tuning()
            else "Validation top-1 at each recipe's lr (no tuning: tune.enabled is false)",
            paths.figure("tuning"),
            self.styles,
        )
        if self.corrupted():
            figures.corruption_severity(
                [
                    (
                        "{} test images ({}, {})".format(
                            styles.dataset_name(ds),
                            self.first("evaluation", ds, self.keys[0])["corruption_set"],
                            self.first("evaluation", ds, self.keys[0])["corruption_source"],
                        ),
                        {key: self.severity_curve(ds, key) for key in self.keys},
                    )
                    for ds in DATASETS
                ],
                "Accuracy under corruption",
                paths.figure("corruption-severity"),
                self.styles,
            )

    def _tuning_lines(self, ds):
        """The tuning figure's lines: every trial of each model, or, untuned, its training's own best validation
        top-1 at its recipe's lr (first seed)."""
        lines = {}
        for key in self.keys:
            record = self.results["tune"][ds][key]
            # with a weight-decay grid, the line runs over the lr at the chosen weight decay
            trials = [t for t in record["trials"] if t["weight_decay"] == record["chosen"]["weight_decay"]]
            if not record["enabled"]:
                top1 = self.first("train", ds, key)["best_val_acc"]
                trials = [{"lr": record["chosen"]["lr"], "val_top1": top1, "val_top1_ci": None, "diverged": False}]
            lines[key] = {"trials": trials, "chosen": record["chosen"]["lr"]}
        return lines

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

    # ---- the document: every number and fact, read from the run's files, for report.md.j2

    def context(self):
        """What report.md says, as plain data: the template (cifarbench/render/report.md.j2) adds the words."""
        params, ds0, key0 = self.params, DATASETS[0], self.keys[0]
        probes = {ds: {key: self.results["probe"][ds][key] for key in self.keys} for ds in DATASETS}
        all_probes = [probes[ds][key] for ds in DATASETS for key in self.keys]
        embeds = [r for ds in DATASETS for key in self.keys for r in self.results["embed"][ds][key].values()]
        evaluations = [r for ds in DATASETS for key in self.keys for r in self.results["evaluation"][ds][key].values()]
        return {
            "stand_in": any(m["stand_in"] for m in self.metas.values()),
            "datasets": [self._dataset(ds) for ds in DATASETS],
            "run": {
                "digest": params.digest(),
                "seeds": list(params.seeds),
                "first_seed": self.first_seed,
                "split_seed": params.seed,
                "data_source": params.data.source,
                "data_limit": params.data.limit,
                "device": params.compute.device,
                "precision": params.compute.precision,
                "resamples": params.evaluate.bootstrap,
                "significance": summaries.SIGNIFICANCE,
            },
            "models": [self._model(key) for key in self.keys],
            "protocol": self._protocol(),
            "tuning": self._tuning(),
            "summary": self.summary,
            "cost": self.cost,
            "comparisons": {ds: self._pairs(ds) for ds in DATASETS},
            "efficiency": {
                "devices": self.devices(),
                "batch_sizes": _distinct(
                    self.first("efficiency", d, k)["eval_batch_size"] for d in DATASETS for k in self.keys
                ),
                "latency_runs": self.first("efficiency", ds0, key0)["latency_runs"],
            },
            "calibration": {"bins": _distinct(r["reliability"]["bins"] for r in evaluations)},
            "probes": {
                ds: {
                    key: {"weights": p["weights"], "from_cifar10": p["probe_from_cifar10_top1"]}
                    for key, p in by_key.items()
                }
                for ds, by_key in probes.items()
            },
            "probe": {
                "solvers": _distinct((p["backend"], p.get("device", "")) for p in all_probes),
                "n_train": _distinct(f"{p['n_train']:,}" for p in all_probes),
                "c_grid": _distinct_or_one(p["fewshot"]["c_grid"] for p in all_probes),
                "tol": params.probe.tol,
                "max_iter": params.probe.max_iter,
                "random_init": [self.name(k) for k in self.keys if probes[ds0][k]["weights"] == "random init"],
            },
            "knn": {"k": _distinct(r["knn_k"] for r in embeds)},
            "fewshot": self._fewshot(all_probes),
            "ood": {ds: {key: self._ood(ds, key) for key in self.keys} for ds in DATASETS},
            "ood_images": _distinct(f"{r['ood']['n_out']:,}" for r in evaluations),
            "corruption": self._corruption() if self.corrupted() else None,
        }

    def _dataset(self, ds):
        meta = self.metas[ds]
        return {
            "key": ds,
            "name": styles.dataset_name(ds),
            "source": meta["source"],
            "classes": len(meta["classes"]),
            "counts": ", ".join(f"{meta['counts'][s]:,} {s}" for s in dataset.SPLITS),
            "coarse": bool(meta.get("coarse_classes")),
            "train_stage": paths.TRAIN_STAGE[ds],
        }

    def _model(self, key):
        spec = self.params.model(key)
        return {
            "key": key,
            "name": self.name(key),
            "arch": spec.arch,
            "weights": {True: "pretrained", False: "random init"}.get(spec.pretrained, f"`{spec.pretrained}`"),
            "img_size": spec.img_size,
        }

    def _protocol(self):
        """Each model's training protocol per stage, field by field, from the recipes the trainings read, their
        tuning files (the lr they used) and their own cost files (block counts):
        {"name": protocol, "columns": [...], "rows": [{"field", "cells", "differs"}]}."""
        columns, values, compared = [], [], []
        for key in self.keys:
            spec = self.params.model(key)
            for section, ds in (("train", DATASETS[0]), ("transfer", DATASETS[1])):
                recipe, cost = self.params.recipe(section, key), self.first("train_cost", ds, key)
                tuning = self.results["tune"][ds][key]
                weights = {True: "pretrained", False: "random init"}.get(spec.pretrained, "local file")
                start = (
                    weights
                    if section == "train"
                    else {"cifar10": "its CIFAR-10 checkpoint"}.get(recipe.init, f"{weights} (not CIFAR-10's)")
                )
                blocks, set_share = cost.get("blocks"), getattr(recipe, "freeze_share", None)  # transfer only
                frozen = cost.get("frozen_blocks", recipe.frozen_blocks(blocks))  # files from before they said
                share = None if blocks is None else frozen / blocks
                augment = recipe.augment
                lr, lr_same = _tuned_cell(tuning, "lr")
                decay, decay_same = _tuned_cell(tuning, "weight_decay")
                columns.append(f"{self.styles.names.get(key, key).split(' (')[0]}, {styles.dataset_name(ds)}")
                values.append(
                    {
                        "starting weights": start,
                        "optimizer": recipe.optimizer,
                        "peak lr": lr,
                        "weight decay": decay,
                        "layer decay": "none" if recipe.layer_decay is None else f"{recipe.layer_decay:g}",
                        "epochs": str(recipe.epochs),
                        "batch size": str(recipe.batch_size),
                        "schedule": f"{recipe.schedule}, {recipe.warmup_epochs} warm-up epochs",
                        "blocks frozen": (f"{frozen}" if share is None else f"{frozen} of {blocks} ({share:.0%})")
                        + ("" if set_share is None else f", share {set_share:g}"),
                        "augmentation": f"crop pad {augment.crop_padding}, flip {'on' if augment.flip else 'off'}, "
                        f"jitter {augment.jitter:g}",
                        "input size": f"{spec.img_size} px",
                    }
                )
                # what counts as the same protocol: frozen blocks by their share (0 of 4 is 0 of 2), or by the share
                # the recipe sets (0.5 is 2 of 4 and 4 of 7), a tuned value by its grid and budget (each model's own
                # best on the same grid is the protocol)
                frozen_same = (
                    f"share {set_share:g}" if set_share is not None else values[-1]["blocks frozen"].split("(")[-1]
                )
                compared.append(
                    {**values[-1], "peak lr": lr_same, "weight decay": decay_same, "blocks frozen": frozen_same}
                )
        fields = list(values[0])
        per_stage = len(values) // len(self.keys)
        rows = []
        for field in fields:
            # models differ where, for one stage, two models have different values
            differs = any(
                len({compared[m * per_stage + stage][field] for m in range(len(self.keys))}) > 1
                for stage in range(per_stage)
            )
            rows.append({"field": field, "cells": [v[field] for v in values], "differs": differs})
        return {"name": self.params.protocol, "columns": columns, "rows": rows}

    def _tuning(self):
        """Whether the trainings' lr was tuned, on which grid and budget: the protocol section's words."""
        records = [self.results["tune"][ds][key] for ds in DATASETS for key in self.keys]
        if not any(r["enabled"] for r in records):
            return None
        tune = self.params.tune
        trials = len(tune.lr_scale) * len(tune.weight_decay_scale)
        training_epochs = _distinct(self.params.recipe(s, k).epochs for s in ("train", "transfer") for k in self.keys)
        return {
            "lr_scale": [f"{v:g}" for v in tune.lr_scale],
            "weight_decay_scale": [f"{v:g}" for v in tune.weight_decay_scale]
            if len(tune.weight_decay_scale) > 1
            else None,
            "trials": trials,
            "epochs": tune.epochs,
            "budget": trials * tune.epochs,
            "training_epochs": training_epochs,
            "diverged": [
                f"{self.name(key)} ({paths.TRAIN_STAGE[ds]}, lr {t['lr']:.3g})"
                for ds in DATASETS
                for key in self.keys
                for t in self.results["tune"][ds][key]["trials"]
                if t["diverged"]
            ],
        }

    def _pairs(self, ds):
        pairs = []
        for pair, r in self.comparisons[ds].items():
            a, b = pair.split("-vs-")
            better, worse = (a, b) if r["top1_diff"] > 0 else (b, a)
            pairs.append(
                {
                    "a_name": self.name(a),
                    "b_name": self.name(b),
                    "diff": r["top1_diff"],
                    "ci": r["top1_diff_ci"],
                    "mcnemar_p": r["mcnemar_p"],
                    "holm_p": r["holm_p"],
                    "significant": r["significant"],
                    "better": self.name(better),
                    "worse": self.name(worse),
                }
            )
        return pairs

    def _fewshot(self, all_probes):
        curves = [p["fewshot"] for p in all_probes]
        return {
            "shots": list(all_probes[0]["fewshot_top1"]),
            "draws": _distinct(curve["draws"] for curve in curves),
            "c_from": _distinct(curve["c_from"] for curve in curves),
            "cv_folds": _distinct(curve["cv_folds"] for curve in curves),
        }

    def _ood(self, ds, key):
        per_seed = self.results["evaluation"][ds][key]
        energy = {seed: r["ood"]["energy"] for seed, r in per_seed.items()}
        return {
            "dataset": styles.dataset_name(self.first("evaluation", ds, key)["ood"]["dataset"]),
            "energy_auroc": summaries.mean_over_seeds(energy, "auroc"),
            "energy_fpr95": summaries.mean_over_seeds(energy, "fpr95"),
        }

    def _corruption(self):
        sets = {}
        for ds in DATASETS:
            first = self.first("evaluation", ds, self.keys[0])
            names = list(first["corruptions"])
            name = first["corruption_set"]
            standard = first.get("corruption_standard", 15)
            sets[ds] = {
                "name": name,
                "source": first["corruption_source"],
                "scope": f"all {standard} {name} corruptions"
                if len(names) == standard
                else f"{len(names)} of the {standard} {name} corruptions ({', '.join(names)})",
                "severities": sorted({int(s) for by_severity in first["corruptions"].values() for s in by_severity}),
                "images": first["corruption_images"],
                # the released set's 4 extra corruptions, scored apart from the headline mean
                "extra": list(first.get("extra_corruptions", {})),
                "extra_top1": {
                    self.name(key): summaries.mean_over_seeds(
                        self.results["evaluation"][ds][key], "extra_corruption_top1"
                    )
                    for key in self.keys
                    if "extra_corruption_top1" in self.first("evaluation", ds, key)
                },
            }
        return {"sets": sets}

    def markdown(self):
        return report_md.render(self.context())


def _tuned_cell(record, field):
    """(what the protocol table shows for the lr or weight decay a training used, what it compares by)."""
    value, base = record["chosen"][field], record["recipe"][field]
    scales = record.get(f"{field}_scale") if record["enabled"] else None
    if not scales or len(scales) == 1 and scales[0] == 1:
        return f"{value:g} (set by the recipe, not tuned)", f"{value:g}"
    grid = ", ".join(f"x{v:g}" for v in scales)
    chosen = record["chosen"][f"{field}_scale"]
    return f"{value:g} (tuned: x{chosen:g} of the recipe's {base:g}, over {grid})", f"tuned over {grid}"


def _distinct(values):
    """The different values, in first-seen order: one where every model and dataset agree."""
    return list(dict.fromkeys(values))


def _distinct_or_one(values):
    found = _distinct(tuple(v) for v in values)
    return list(found[0]) if len(found) == 1 else [list(v) for v in found]


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
