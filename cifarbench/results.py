"""Every stage's results, gathered for the report: metrics/summary.json and metrics/cost.json.

`collect` reads the files the training, evaluate and embed stages wrote, per
model, dataset and training seed. `summarize` keeps accuracy-type results
(what a param change moves) and `costs` the timings, memory and sizes (which
change on every run), in two files of the same `{dataset: {model: {...}}}`
shape, so `dvc metrics diff --targets metrics/summary.json` shows only what a
param changed. With several seeds a number is the mean over them.
"""

import numpy as np

from cifarbench import DATASETS, atomic, paths

# per-seed stage outputs: name -> where each (key, dataset, seed) file is
PER_SEED = {
    "evaluation": paths.evaluation,
    "efficiency": paths.efficiency,
    "embed": paths.embedding_metrics,
    "train": lambda key, ds, seed: paths.train_summary(ds, key, seed),
    "train_cost": lambda key, ds, seed: paths.train_cost(ds, key, seed),
}
COST_FROM_EVALUATE = ("params", "gflops", "throughput", "latency_ms", "peak_memory_mb")
COST_FROM_TRAINING = ("trainable_params", "train_seconds", "seconds_per_epoch", "epochs")


def collect(params):
    """{kind: {dataset: {key: {seed: dict}}}} for every kind in PER_SEED."""
    return {kind: {ds: {key: {seed: atomic.read_json(where(key, ds, seed)) for seed in params.seeds}
                        for key in params.keys} for ds in DATASETS}
            for kind, where in PER_SEED.items()}


def mean_over_seeds(per_seed, field, digits=6):
    """The mean of one field over a {seed: dict} mapping (the value itself for a single seed; counts stay ints)."""
    values = [r[field] for r in per_seed.values()]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values) and len(set(values)) == 1:
        return values[0]
    return round(float(np.mean(values)), digits)


def summarize(results, params):
    """metrics/summary.json: accuracy-type results per dataset and model (means over seeds)."""
    summary = {}
    for ds in DATASETS:
        summary[ds] = {}
        for key in params.keys:
            evaluation = results["evaluation"][ds][key]
            row = {name: mean_over_seeds(evaluation, name) for name in ("top1", "top5", "ece")}
            row["knn_top1"] = mean_over_seeds(results["embed"][ds][key], "knn_top1")
            row["best_val_acc"] = mean_over_seeds(results["train"][ds][key], "best_val_acc")
            summary[ds][key] = row
    return summary


def costs(results, params):
    """metrics/cost.json: size, FLOPs, speed, memory and training time per dataset and model (means over seeds)."""
    out = {}
    for ds in DATASETS:
        out[ds] = {}
        for key in params.keys:
            evaluation, training = results["efficiency"][ds][key], results["train_cost"][ds][key]
            row = {name: mean_over_seeds(evaluation, name, 3) for name in COST_FROM_EVALUATE}
            row["train_peak_memory_mb"] = mean_over_seeds(training, "peak_memory_mb", 1)
            row.update({name: mean_over_seeds(training, name, 3) for name in COST_FROM_TRAINING})
            out[ds][key] = row  # numbers only: the devices are in the report and the per-stage files
    return out
