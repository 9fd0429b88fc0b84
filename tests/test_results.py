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
from cifarbench.paths import DATASETS
from cifarbench.pipeline import summaries

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
    out["probe"] = {
        ds: {key: {"probe_top1": 0.5, "fewshot_top1": {"1": 0.2}, "probe_from_cifar10_top1": 0.4} for key in p.keys}
        for ds in DATASETS
    }
    for ds in DATASETS:
        for i, key in enumerate(p.keys):
            for seed in p.seeds:
                c1 = correctness(rates[key][seed], seed=10 * i + seed)
                c5 = c1 | correctness(0.5, seed=99)
                out["predictions"][ds][key][seed] = {"correct1": c1, "correct5": c5}
                out["evaluation"][ds][key][seed] = {
                    "top1": float(c1.mean()),
                    "top5": float(c5.mean()),
                    "ece": 0.1 * (seed + 1),
                    "ood": {"msp": {"auroc": 0.8, "fpr95": 0.5}},
                    "corruption_top1": 0.3,
                }
                out["embed"][ds][key][seed] = {"knn_top1": 0.6}
                out["train"][ds][key][seed] = {"best_val_acc": 0.7}
                out["efficiency"][ds][key][seed] = {
                    "params": 1000,
                    "gflops": 0.5,
                    "throughput": 100.0 + seed,
                    "latency_ms": 2.0,
                    "peak_memory_mb": 10.0,
                }
                out["train_cost"][ds][key][seed] = {
                    "trainable_params": 900,
                    "train_seconds": 10.0 * (seed + 1),
                    "seconds_per_epoch": 5.0,
                    "epochs": 2,
                    "peak_memory_mb": 20.0,
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
    assert "probe_from_cifar10_top1" in summary["cifar100"]["resnet18"]
    assert "probe_from_cifar10_top1" not in row
    assert set(row) >= {"ood_auroc", "ood_fpr95", "corruption_top1", "knn_top1", "best_val_acc", "top5_ci"}


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
