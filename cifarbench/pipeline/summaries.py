"""Every stage's results, gathered for the report: summary.json, cost.json and comparisons.json.

`collect` reads the files the training, evaluate, embed and probe stages wrote,
per model, dataset and training seed. `summarize` keeps accuracy-type results
(what a param change moves), `costs` the timings, memory and sizes (which
change on every run), in two files of the same `{dataset: {model: {...}}}`
shape, so `dvc metrics diff --targets metrics/summary.json` shows only what a
param changed. With several seeds a number is the mean over them.

Every headline number has its 95 % interval, `<metric>_ci`, a percentile
bootstrap seeded by params' `seed` (the files are deterministic) that resamples
what varies: the test images (top1, top5, knn_top1, corruption_top1: each
image's result averaged over the training seeds; ece: the images with their
confidences, the statistic averaged over the seeds on each resample), the test
images and the other dataset's images each on their own (ood_auroc, ood_fpr95),
and for the probes what the probe stage resampled (the test images; for
few-shot, the draws too). With two or more seeds, `top1_seed_ci` is also the
Student-t interval over the seeds' top-1.
"""

import itertools

import numpy as np

from cifarbench import atomic, inputs, paths
from cifarbench.eval import metrics, ood, stats
from cifarbench.paths import DATASETS

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
SIGNIFICANCE = 0.05  # family-wise, Holm's correction over the pairs of models of one dataset
# what evaluate's predictions file holds per test image (and per out-of-distribution image: ood_scores)
PER_IMAGE = ("correct1", "correct5", "confidence", "ood_scores", "corruption_hits", "corruption_runs")


def collect(params):
    """{kind: {dataset: {key: {seed: dict}}}} for every kind in PER_SEED, plus per-image "predictions"."""
    out = {
        kind: {
            ds: {key: {seed: atomic.read_json(where(key, ds, seed)) for seed in params.seeds} for key in params.keys}
            for ds in DATASETS
        }
        for kind, where in PER_SEED.items()
    }
    out["predictions"] = {
        ds: {
            key: {seed: inputs.read_npz(paths.predictions(key, ds, seed), PER_IMAGE) for seed in params.seeds}
            for key in params.keys
        }
        for ds in DATASETS
    }
    out["knn"] = {
        ds: {
            key: {
                seed: inputs.read_npz(paths.embedding_points(key, ds, seed), ("knn_correct",))["knn_correct"]
                for seed in params.seeds
            }
            for key in params.keys
        }
        for ds in DATASETS
    }
    out["probe"] = {ds: {key: atomic.read_json(paths.probe_metrics(key, ds)) for key in params.keys} for ds in DATASETS}
    out["tune"] = {
        ds: {key: inputs.read_json(paths.tuning(paths.TRAIN_STAGE[ds], key)) for key in params.keys} for ds in DATASETS
    }
    return out


def mean_over_seeds(per_seed, field, digits=6):
    """The mean of one field over a {seed: dict} mapping (the value itself for a single seed; counts stay ints)."""
    values = [r[field] for r in per_seed.values()]
    if any(v is None for v in values):
        return None
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values) and len(set(values)) == 1:
        return values[0]
    return round(float(np.mean(values)), digits)


def over_seeds(arrays):
    """(seeds, n) float64 array from one per-image array per training seed."""
    return np.stack([np.asarray(a, dtype=np.float64) for a in arrays])


def seed_averaged(per_seed, field):
    """Each test image's correctness (field correct1/correct5) averaged over the training seeds."""
    return over_seeds([p[field] for p in per_seed.values()]).mean(axis=0)


# The statistics behind the intervals that are not means of per-image values, on resampled images (one resample
# per row of an index matrix) and averaged over the training seeds (the rows of the (seeds, n) arrays). The
# report's intervals and `cifarbench compare`'s paired differences both use these.


def ece_over_seeds(confidence, correct):
    """index -> (batch,) ECE of each resample of the test images, averaged over the seeds."""
    return lambda index: np.mean(
        [metrics.calibration_error_resampled(c[index], k[index]) for c, k in zip(confidence, correct)], axis=0
    )


def ood_over_seeds(measure, scores_in, scores_out):
    """(index in, index out) -> (batch,) measure (ood.auroc_resampled, ...) of each resample, averaged over the
    seeds; the test images and the out-of-distribution images are resampled each on their own."""
    return lambda i, o: np.mean([measure(a[i], b[o]) for a, b in zip(scores_in, scores_out)], axis=0)


def corruption_shares(hits, runs):
    """Each corrupted test image's share of the runs it was right in, averaged over the seeds (hits: (seeds, n))."""
    return (np.asarray(hits, dtype=np.float64) / runs).mean(axis=0)


def _rounded(interval):
    return [round(float(v), 6) for v in interval]


def _interval(values, params):
    return _rounded(stats.bootstrap_ci(values, resamples=params.evaluate.bootstrap, seed=params.seed))


def _statistic_interval(statistic, sizes, params):
    return _rounded(
        stats.bootstrap_statistic_ci(statistic, sizes, resamples=params.evaluate.bootstrap, seed=params.seed)
    )


def _over_seeds(per_seed, field):
    """(seeds, n) array of one per-image field."""
    return over_seeds([p[field] for p in per_seed.values()])


def ece_interval(predictions, params):
    """ECE's interval: the test images resampled with their confidences, ECE averaged over the seeds."""
    confidence = _over_seeds(predictions, "confidence")
    ece = ece_over_seeds(confidence, _over_seeds(predictions, "correct1"))
    return _statistic_interval(ece, [confidence.shape[1]], params)


def ood_intervals(predictions, params):
    """ood_auroc's and ood_fpr95's intervals: the test images and the out-of-distribution images resampled each
    on their own (the same resamples for both), the measure averaged over the seeds."""
    scores_in, scores_out = _over_seeds(predictions, "confidence"), _over_seeds(predictions, "ood_scores")
    sizes = [scores_in.shape[1], scores_out.shape[1]]
    return {
        f"ood_{name}_ci": _statistic_interval(ood_over_seeds(measure, scores_in, scores_out), sizes, params)
        for name, measure in (("auroc", ood.auroc_resampled), ("fpr95", ood.fpr_at_tpr_resampled))
    }


def corruption_interval(predictions, params):
    """corruption_top1's interval: the corrupted test images resampled, each with its share of runs right."""
    runs = int(next(iter(predictions.values()))["corruption_runs"])
    if runs == 0:
        return None
    return _interval(corruption_shares(_over_seeds(predictions, "corruption_hits"), runs), params)


def _row(results, params, ds, key):
    evaluation, predictions = results["evaluation"][ds][key], results["predictions"][ds][key]
    row = {name: mean_over_seeds(evaluation, name) for name in ("top1", "top5")}
    row["top1_ci"] = _interval(seed_averaged(predictions, "correct1"), params)
    row["top5_ci"] = _interval(seed_averaged(predictions, "correct5"), params)
    if len(params.seeds) >= 2:
        top1s = [evaluation[seed]["top1"] for seed in params.seeds]
        row["top1_seeds"] = [round(v, 6) for v in top1s]
        row["top1_seed_ci"] = [round(v, 6) for v in stats.t_interval(top1s)[1:]]
    row["ece"] = mean_over_seeds(evaluation, "ece")
    row["ece_ci"] = ece_interval(predictions, params)
    row["knn_top1"] = mean_over_seeds(results["embed"][ds][key], "knn_top1")
    knn = results["knn"][ds][key]
    row["knn_top1_ci"] = _interval(over_seeds(list(knn.values())).mean(axis=0), params)
    row["best_val_acc"] = mean_over_seeds(results["train"][ds][key], "best_val_acc")
    headline = {seed: r["ood"][ood.HEADLINE] for seed, r in evaluation.items()}
    row["ood_auroc"], row["ood_fpr95"] = mean_over_seeds(headline, "auroc"), mean_over_seeds(headline, "fpr95")
    row.update(ood_intervals(predictions, params))
    row["corruption_top1"] = mean_over_seeds(evaluation, "corruption_top1")
    row["corruption_top1_ci"] = corruption_interval(predictions, params)
    probe = results["probe"][ds][key]
    row["probe_top1"] = round(probe["probe_top1"], 6)
    row["probe_top1_ci"] = _rounded(probe["probe_top1_ci"])
    row["fewshot_top1"] = {shots: round(v, 6) for shots, v in probe["fewshot_top1"].items()}
    row["fewshot_top1_ci"] = {shots: _rounded(v) for shots, v in probe["fewshot_top1_ci"].items()}
    if ds == "cifar100":  # how the CIFAR-10-tuned features carry over before any CIFAR-100 training
        row["probe_from_cifar10_top1"] = round(probe["probe_from_cifar10_top1"], 6)
    row.update(tuning_row(results["tune"][ds][key]))
    return row


def tuning_row(record):
    """The lr and weight decay the training used, whether a tuning chose them, and (tuned) the chosen trial's
    validation top-1 with its interval (Wilson, over the validation images)."""
    chosen = record["chosen"]
    row = {"lr": chosen["lr"], "weight_decay": chosen["weight_decay"], "lr_tuned": bool(record["enabled"])}
    if record["enabled"]:
        row["tune_val_top1"], row["tune_val_top1_ci"] = round(chosen["val_top1"], 6), chosen["val_top1_ci"]
    return row


def summarize(results, params):
    """metrics/summary.json: accuracy-type results per dataset and model (means over seeds)."""
    return {ds: {key: _row(results, params, ds, key) for key in params.keys} for ds in DATASETS}


def comparisons(results, params):
    """metrics/comparisons.json: every pair of models on the same test images, per dataset.

    top1_diff: a's top-1 minus b's (seed-averaged); top1_diff_ci: paired bootstrap
    interval; mcnemar_p: exact McNemar test on the first training seed's
    predictions (its 0/1 outcomes per image); holm_p and significant: Holm's
    step-down correction over the dataset's pairs at SIGNIFICANCE.
    """
    out = {}
    first = params.seeds[0]
    for ds in DATASETS:
        predictions = results["predictions"][ds]
        averaged = {key: seed_averaged(predictions[key], "correct1") for key in params.keys}  # once per model
        pairs = {}
        for a, b in itertools.combinations(params.keys, 2):
            diff, lo, hi = stats.paired_bootstrap_ci(
                averaged[a], averaged[b], resamples=params.evaluate.bootstrap, seed=params.seed
            )
            p = stats.mcnemar_exact(predictions[a][first]["correct1"], predictions[b][first]["correct1"])
            pairs[f"{a}-vs-{b}"] = {
                "top1_diff": round(diff, 6),
                "top1_diff_ci": [round(lo, 6), round(hi, 6)],
                "mcnemar_p": p,
            }
        adjusted, significant = stats.holm([pair["mcnemar_p"] for pair in pairs.values()], SIGNIFICANCE)
        for pair, holm_p, flag in zip(pairs.values(), adjusted, significant):
            pair["holm_p"], pair["significant"] = holm_p, flag
        out[ds] = pairs
    return out


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
