"""summary.json, comparisons.json and cost.json from known per-seed stage outputs (no stage runs).

Two models, two training seeds, 200 test images with hand-made correctness, so
every number the report publishes can be checked against an independent
computation: means over seeds, the t-interval over seeds, intervals over
images, paired differences, McNemar on the first seed, Holm over the pairs.
"""

import math

import numpy as np
import pytest
from conftest import tiny_params
from scipy import stats as sps

from cifarbench import params
from cifarbench.paths import DATASETS, TRAIN_STAGE
from cifarbench.pipeline import summaries, tuned

N = 200


def correctness(rate, seed):
    """N images, exactly round(rate * N) of them right, in a seeded order."""
    right = np.zeros(N, dtype=bool)
    right[: round(rate * N)] = True
    return np.random.default_rng(seed).permutation(right)


def fake_results(p, rates):
    """Stage outputs as summaries.collect returns them; rates[key][seed] = top-1 on every dataset."""
    out = {
        kind: {ds: {key: {} for key in p.keys} for ds in DATASETS}
        for kind in ("evaluation", "efficiency", "embed", "train", "train_cost", "predictions")
    }
    out["knn"] = {ds: {key: {} for key in p.keys} for ds in DATASETS}
    out["probe"] = {
        ds: {
            key: {
                "weights": "pretrained",
                "probe_top1": 0.5,
                "probe_top1_ci": [0.45, 0.55],
                "fewshot_top1": {"1": 0.2},
                "fewshot_top1_ci": {"1": [0.1, 0.3]},
                "probe_from_cifar10_top1": 0.4,
                "fewshot": {"draws": 2, "c_from": "shots", "cv_folds": 5, "c_grid": [0.1, 1.0]},
                "n_train": 800,
                "backend": "numpy",
                "device": "CPU, 2 threads (fp32)",
            }
            for key in p.keys
        }
        for ds in DATASETS
    }
    out["tune"] = {ds: {key: tuned.untuned(p, TRAIN_STAGE[ds], key) for key in p.keys} for ds in DATASETS}
    rng = np.random.default_rng(5)
    for ds in DATASETS:
        for i, key in enumerate(p.keys):
            for seed in p.seeds:
                c1 = correctness(rates[key][seed], seed=10 * i + seed)
                c5 = c1 | correctness(0.5, seed=99)
                confidence = np.clip(np.where(c1, 0.9, 0.4) + rng.normal(0, 0.1, N), 0.1, 1.0)
                out["predictions"][ds][key][seed] = {
                    "correct1": c1,
                    "correct5": c5,
                    "confidence": confidence,
                    "ood_scores": np.clip(rng.normal(0.5, 0.15, 150), 0.1, 1.0),  # below the test images' mostly
                    "corruption_hits": (c1 & correctness(0.6, seed=7)).astype(np.uint8) * 2,  # of 2 runs
                    "corruption_runs": 2,
                }
                out["evaluation"][ds][key][seed] = {
                    "top1": float(c1.mean()),
                    "top5": float(c5.mean()),
                    "ece": 0.1 * (seed + 1),
                    "reliability": {"bins": 15},
                    "ood": {
                        "dataset": DATASETS[1 - DATASETS.index(ds)],
                        "n_out": 150,
                        "msp": {"auroc": 0.8, "fpr95": 0.5},
                        "energy": {"auroc": 0.85, "fpr95": 0.45},
                    },
                    "corruptions": {"fog": {"1": 0.5, "5": 0.3}},
                    "corruption_top1": 0.3,
                    "corruption_images": N,
                    "corruption_set": {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}[ds],
                    "corruption_source": "generated",
                }
                out["embed"][ds][key][seed] = {"knn_top1": 0.6, "knn_k": 20}
                out["knn"][ds][key][seed] = correctness(0.6, seed=20 + seed)
                out["train"][ds][key][seed] = {"best_val_acc": 0.7}
                out["efficiency"][ds][key][seed] = {
                    "params": 1000,
                    "gflops": 0.5,
                    "throughput": 100.0 + seed,
                    "latency_ms": 2.0,
                    "peak_memory_mb": 10.0,
                    "eval_batch_size": 64,
                    "latency_runs": "median of 20 runs",
                    "memory_measure": "the process's peak RSS",
                    "device": "CPU, 2 threads (fp32)",
                }
                out["train_cost"][ds][key][seed] = {
                    "trainable_params": 900,
                    "train_seconds": 10.0 * (seed + 1),
                    "seconds_per_epoch": 5.0,
                    "epochs": 2,
                    "peak_memory_mb": 20.0,
                    "device": "CPU, 2 threads (fp32)",
                }
    return out


@pytest.fixture(scope="module")
def two_seeds():
    raw = tiny_params(seeds=[0, 1])
    for section in ("models", "train", "transfer"):
        del raw[section]["efficientnet_b0"]
    p = params.parse(raw)
    rates = {"resnet18": {0: 0.90, 1: 0.80}, "dinov2_vitb14": {0: 0.60, 1: 0.70}}
    return p, fake_results(p, rates)


def test_summary_with_two_seeds(two_seeds):
    p, res = two_seeds
    summary = summaries.summarize(res, p)
    row = summary["cifar10"]["resnet18"]
    assert row["top1"] == pytest.approx(0.85) and row["ece"] == pytest.approx(0.15)
    assert row["top1_seeds"] == [0.9, 0.8]
    # Student-t over the two seeds' top-1, computed independently
    half = sps.t.ppf(0.975, df=1) * np.std([0.9, 0.8], ddof=1) / math.sqrt(2)
    assert row["top1_seed_ci"] == pytest.approx([0.85 - half, 0.85 + half], abs=1e-6)
    # the interval over images: of each image's correctness averaged over the seeds
    lo, hi = row["top1_ci"]
    assert lo < 0.85 < hi and hi - lo < 2 * 1.96 * math.sqrt(0.85 * 0.15 / N) * 1.3
    assert row["probe_top1"] == 0.5 and row["fewshot_top1"] == {"1": 0.2}
    assert row["probe_top1_ci"] == [0.45, 0.55] and row["fewshot_top1_ci"] == {"1": [0.1, 0.3]}
    assert "probe_from_cifar10_top1" in summary["cifar100"]["resnet18"]
    assert "probe_from_cifar10_top1" not in row
    assert set(row) >= {"ood_auroc", "ood_fpr95", "corruption_top1", "knn_top1", "best_val_acc", "top5_ci"}


def test_every_headline_number_has_an_interval_from_what_varies(two_seeds):
    """ece, knn_top1, ood_auroc, ood_fpr95 and corruption_top1 get 95 % intervals from the per-image files: around
    the value the same images give, as wide as the images allow (about 2 x 1.96 standard errors at N = 200)."""
    p, res = two_seeds
    row = summaries.summarize(res, p)["cifar10"]["resnet18"]
    predictions = res["predictions"]["cifar10"]["resnet18"]
    knn = np.mean([res["knn"]["cifar10"]["resnet18"][s] for s in p.seeds], axis=0)
    lo, hi = row["knn_top1_ci"]
    assert lo < knn.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * knn.std() / math.sqrt(N), rel=0.3)
    shares = np.mean([predictions[s]["corruption_hits"] / 2 for s in p.seeds], axis=0)
    lo, hi = row["corruption_top1_ci"]
    assert lo < shares.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * shares.std() / math.sqrt(N), rel=0.3)
    from cifarbench.eval import metrics, ood

    def averaged(measure):
        return np.mean([measure(predictions[s]) for s in p.seeds])

    auroc = averaged(lambda r: ood.auroc(r["confidence"], r["ood_scores"]))
    fpr = averaged(lambda r: ood.fpr_at_tpr(r["confidence"], r["ood_scores"]))
    ece = averaged(
        lambda r: metrics.calibration_error_resampled(r["confidence"][None], r["correct1"][None].astype(float))[0]
    )
    for name, value, widest in (("ood_auroc", auroc, 0.15), ("ood_fpr95", fpr, 0.3), ("ece", ece, 0.15)):
        lo, hi = row[f"{name}_ci"]
        assert lo < value < hi and 0.005 < hi - lo < widest, (name, value, lo, hi)


def report_text(res, p):
    from cifarbench.pipeline import report

    metas = {
        ds: {
            "stand_in": False,
            "source": f"{ds} python archive",
            "classes": [str(c) for c in range(10 if ds == "cifar10" else 100)],
            "counts": {"train": 800, "val": 200, "test": N},
            "coarse_classes": None,
        }
        for ds in DATASETS
    }
    return report.Report(p, res, metas).markdown()


def test_the_protocol_table_marks_what_differs_between_models(two_seeds):
    """Each model's protocol per stage, from the recipes and the trainings' block counts: rows where the models
    differ are marked and named under the table with the linear probe as the like-for-like comparison; with one
    protocol for all, the sentence says so."""
    import copy

    p, res = two_seeds
    res = copy.deepcopy(res)
    for ds in DATASETS:
        for key in p.keys:
            for cost in res["train_cost"][ds][key].values():
                frozen = 1 if (key == "dinov2_vitb14" and ds == "cifar100") else 0
                cost.update(blocks=4 if key == "resnet18" else 2, frozen_blocks=frozen)
    text = report_text(res, p)
    table = text[text.index("### Each model's protocol") : text.index("## Test accuracy")]
    assert "| **optimizer** ≠ " in table and "| sgd " in table and "| adamw " in table
    assert "1 of 2 (50%)" in table and "0 of 4 (0%)" in table and "| **blocks frozen** ≠ " in table
    assert "| epochs " in table and "**epochs**" not in table  # the same for every model
    assert "the fine-tuned columns below compare these recipes as well as the backbones" in table
    assert "The linear probe trains one protocol for every model" in table
    from cifarbench import params as paramslib

    raw = tiny_params(seeds=[0, 1])
    for section in ("models", "train", "transfer"):
        del raw[section]["efficientnet_b0"]
    raw["models"]["dinov2_vitb14"].update(img_size=32)
    raw["models"]["dinov2_vitb14"]["kwargs"]["patch_size"] = 8
    for section in ("train", "transfer"):
        raw[section]["dinov2_vitb14"] = dict(raw[section]["resnet18"])
    raw["transfer"]["dinov2_vitb14"]["freeze_blocks"] = 0
    for ds in DATASETS:
        for cost in res["train_cost"][ds]["dinov2_vitb14"].values():
            cost["frozen_blocks"] = 0
    same = paramslib.parse(raw)
    res["tune"] = {ds: {key: tuned.untuned(same, TRAIN_STAGE[ds], key) for key in same.keys} for ds in DATASETS}
    text = report_text(res, same)
    assert "Every model trains under the same protocol here" in text and "≠" not in text
    assert "Protocol `recipes`: each model trains under its own recipe" in text


def test_the_report_says_what_the_files_say(two_seeds):
    """report.md's facts come from the run's files: altered files, altered words."""
    import copy

    p, res = two_seeds
    text = report_text(res, p)
    assert "scikit-learn's lbfgs, on CPU, 2 threads (fp32)" in text and "the 20 nearest" in text
    assert "1 of the 15 CIFAR-10-C corruptions (fog)" in text and "1 of the 15 CIFAR-100-C corruptions (fog)" in text
    assert "generated by CIFARbench's corruption code" in text and "(150 images)" in text
    assert "5-fold cross-validation over them" in text
    assert "| 50.0 (45.0–55.0) (pretrained) |" in text.replace("  ", "")  # the probe with its interval
    altered = copy.deepcopy(res)
    for ds in DATASETS:
        for key in p.keys:
            probe = altered["probe"][ds][key]
            probe.update(backend="torch", device="NVIDIA H200 (bf16)")
            probe["fewshot"]["c_from"] = "validation"
            for seed in p.seeds:
                altered["embed"][ds][key][seed]["knn_k"] = 7
                evaluation = altered["evaluation"][ds][key][seed]
                evaluation.update(corruption_source="released", corruption_images=10_000)
                evaluation["ood"]["n_out"] = 9_999
                evaluation["corruptions"] = {name: {"3": 0.4} for name in ("fog", "snow", "frost")}
                evaluation.update(extra_corruptions={"saturate": {"3": 0.25}}, extra_corruption_top1=0.25)
    text = report_text(altered, p)
    assert "CIFARbench's batched L-BFGS in torch, on NVIDIA H200 (bf16)" in text and "scikit-learn" not in text
    assert "the 7 nearest" in text and "the 20 nearest" not in text
    assert "3 of the 15 CIFAR-100-C corruptions (fog, snow, frost) at severities [3]" in text
    assert "the released arrays" in text and "generated by" not in text and "10,000 test images" in text
    assert "(9,999 images)" in text and "chosen on the full validation split" in text
    assert "Apart from that mean, its 1 extra corruptions (saturate) at the same severities: ResNet-18" in text
    assert "extra corruptions" not in report_text(res, p)  # generated sets have none


def test_one_seed_has_no_seed_spread():
    raw = tiny_params()
    p = params.parse(raw)
    res = fake_results(p, {key: {0: 0.5} for key in p.keys})
    row = summaries.summarize(res, p)["cifar10"]["resnet18"]
    assert "top1_seeds" not in row and "top1_seed_ci" not in row


def test_comparisons_pair_the_same_images(two_seeds):
    p, res = two_seeds
    pair = summaries.comparisons(res, p)["cifar10"]["resnet18-vs-dinov2_vitb14"]
    assert pair["top1_diff"] == pytest.approx(0.85 - 0.65)
    assert pair["top1_diff_ci"][0] < pair["top1_diff"] < pair["top1_diff_ci"][1]
    # exact McNemar on the first seed, counted by hand
    a = res["predictions"]["cifar10"]["resnet18"][0]["correct1"]
    b = res["predictions"]["cifar10"]["dinov2_vitb14"][0]["correct1"]
    n01, n10 = int((a & ~b).sum()), int((~a & b).sum())
    expected = min(1.0, 2 * sum(math.comb(n01 + n10, k) for k in range(min(n01, n10) + 1)) / 2 ** (n01 + n10))
    assert pair["mcnemar_p"] == pytest.approx(expected)
    assert pair["holm_p"] == pytest.approx(expected)  # one pair: Holm changes nothing
    assert pair["significant"] == (expected <= 0.05)


def test_costs_are_numbers_averaged_over_seeds(two_seeds):
    p, res = two_seeds
    cost = summaries.costs(res, p)["cifar100"]["dinov2_vitb14"]
    assert cost["throughput"] == pytest.approx(100.5) and cost["train_seconds"] == pytest.approx(15.0)
    assert cost["params"] == 1000 and isinstance(cost["params"], int) and cost["epochs"] == 2
    assert all(isinstance(v, (int, float)) for v in cost.values())


def test_the_report_says_whether_a_training_compiled():
    from cifarbench.pipeline import report

    cost = {"device": "NVIDIA H200 (bf16)", "compiled": True}
    assert report._training_device(cost) == "NVIDIA H200 (bf16), torch.compile"
    assert report._training_device({**cost, "compiled": False}) == "NVIDIA H200 (bf16)"
    assert report._training_device({"device": "CPU, 2 threads (fp32)"}) == "CPU, 2 threads (fp32)"  # older files


def tuned_results(p, res, scores):
    """res with tuning records as the tune stages write them: scores[key] = val top-1 per lr factor."""
    import copy

    from cifarbench.pipeline import tune

    res = copy.deepcopy(res)
    for ds in DATASETS:
        stage = TRAIN_STAGE[ds]
        for key in p.keys:
            trials = [
                {**point, "val_top1": score, "val_top1_ci": [score - 0.05, score + 0.05], "diverged": score == 0}
                for point, score in zip(tuned.grid(p, stage, key), scores[key])
            ]
            best = tune.choose(trials)
            chosen = {k: best[k] for k in tune.CHOSEN}
            res["tune"][ds][key] = {
                **tuned.header(p, stage, key),
                "val_images": 200,
                "trials": trials,
                "chosen": chosen,
            }
    return res


def test_a_tuned_lr_is_in_the_summary_the_protocol_table_and_the_tuning_figure(tmp_path):
    """With tuning on, the summary gives each training's lr, that it was tuned and the chosen trial's validation
    top-1 with its interval; the protocol table gives the chosen factor of the grid and counts the same grid as the
    same protocol; the words give the budget and the matched protocol; the figure has a line and a ring per model."""
    import json

    from PIL import Image

    from cifarbench.render import figures, styles

    raw = tiny_params(seeds=[0], protocol="matched", tune__enabled=True, tune__lr_scale=[0.5, 1.0, 2.0])
    for section in ("models", "train", "transfer"):
        del raw[section]["efficientnet_b0"]
    p = params.parse(raw)
    res = fake_results(p, {key: {0: 0.7} for key in p.keys})
    # resnet18 best at x2, the ViT at x0.5; its x2 trial diverged
    res = tuned_results(p, res, {"resnet18": [0.5, 0.6, 0.8], "dinov2_vitb14": [0.7, 0.6, 0.0]})
    summary = summaries.summarize(res, p)
    base = p.recipe("train", "resnet18").lr
    row = summary["cifar10"]["resnet18"]
    assert row["lr"] == pytest.approx(2 * base) and row["lr_tuned"] is True
    assert row["tune_val_top1"] == 0.8 and row["tune_val_top1_ci"] == [pytest.approx(0.75), pytest.approx(0.85)]
    assert summary["cifar100"]["dinov2_vitb14"]["lr"] == pytest.approx(0.5 * p.recipe("transfer", "dinov2_vitb14").lr)
    text = report_text(res, p)
    table = text[text.index("### Each model's protocol") : text.index("## Test accuracy")]
    assert f"{2 * base:g} (tuned: x2 of the recipe's {base:g}, over x0.5, x1, x2)" in table
    # matched: one protocol and one grid; only the models' own input sizes differ
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("|") and "≠" in line] == [
        "**input size** ≠"
    ]
    assert "Protocol `matched`: every model trains under the one recipe of params.yaml's `matched:`" in table
    assert "3 trials (the recipe's lr times 0.5, 1, 2) of 3 epochs each, 9 epochs per model and stage" in table
    assert "Diverged (NaN loss, scored as the worst): DINOv2" in table and "![tuning](figures/tuning.png)" in table
    untuned_text = report_text(fake_results(p, {key: {0: 0.7} for key in p.keys}), p)
    assert "No tuning ran (`tune.enabled: false`)" in untuned_text and "(set by the recipe, not tuned)" in untuned_text

    from cifarbench.pipeline import report

    panels = [(ds, report.Report._tuning_lines(_ReportStub(p, res), ds)) for ds in DATASETS]
    path = tmp_path / "tuning.png"
    figures.tuning(panels, "Validation top-1 over each model's tuning grid", path, styles.Styles.of(p))
    with Image.open(path) as image:
        shown = json.loads(image.text["Description"])
    assert shown["title"] == "Validation top-1 over each model's tuning grid"
    assert [a["ylabel"] for a in shown["axes"]] == ["validation top-1"] * 2
    # per panel: resnet18's line, 3 intervals and its ring; the ViT's line, 2 intervals, its x and its ring
    assert [a["series"] for a in shown["axes"]] == [5 + 5] * 2
    assert len(shown["legend"]) == 2


class _ReportStub:
    def __init__(self, p, res):
        self.keys, self.results, self.first_seed = p.keys, res, p.seeds[0]

    def first(self, kind, ds, key):
        return self.results[kind][ds][key][self.first_seed]


def test_under_the_matched_protocol_one_frozen_share_is_one_protocol_whatever_the_depths():
    """freeze_share 0.5 freezes 2 of ResNet-18's 4 block groups, 4 of EfficientNet-B0's 7 and 6 of ViT-B's 12: the
    same protocol, so the row is not marked; the cells say both the count and the share."""
    p = params.parse(tiny_params(protocol="matched"))
    res = fake_results(p, {key: {0: 0.7} for key in p.keys})
    depth = {"resnet18": 4, "efficientnet_b0": 7, "dinov2_vitb14": 12}
    for ds in DATASETS:
        for key in p.keys:
            recipe = p.recipe("transfer", key)
            frozen = recipe.frozen_blocks(depth[key]) if ds == "cifar100" else 0
            res["train_cost"][ds][key][0].update(blocks=depth[key], frozen_blocks=frozen)
    text = report_text(res, p)
    table = text[text.index("### Each model's protocol") : text.index("## Test accuracy")]
    row = next(line for line in table.splitlines() if "blocks frozen" in line)
    assert "≠" not in row and "4 of 7 (57%), share 0.5" in row and "6 of 12 (50%), share 0.5" in row, row
    assert "Protocol `matched`" in table
