"""End to end through the real DVC CLI: the project copied into a fresh git repo, tiny params.

One module-scoped repo walks through the contract in order. Its registry holds
one committed model, the tiny ViT, and a timm model, resnet10t, added through
params.yaml alone (two models: every table, comparison and figure has more than
one row; a third would cost eight more stage processes and test nothing new; one
test builds every committed model: tests/test_models.py). A full repro makes every output (every metric key, every
figure, a report whose HTML renders in Chromium, `cifarbench predict` agreeing
with evaluate) and a second runs nothing. Then: code edits rerun only the
stages whose code they touch; a transfer-recipe change run as `dvc exp run -S`
reruns exactly that model's transfer chain and shows in `dvc exp show` and
`dvc metrics diff`; every spelling `-S` writes loads (the queued sweep under
`dvc queue start -j 2` is tests/test_compare.py's, whose comparisons need one); a longer
seed list would run only the new seeds' chains; speed settings rerun nothing, and an
edit that changes no number reruns a training without training; a registry of one model runs;
last, a `dvc repro` killed with SIGKILL mid-training resumes and writes the
uninterrupted run's checkpoint byte for byte, so nothing after it reruns.
"""

import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, committed_params, dump, run_here, tiny_params
from dvc_repo import Repo, copy_project, stages_for
from PIL import Image

from cifarbench.paths import DATASETS

FOURTH = "resnet10t"  # a timm model added through params.yaml alone
VIT = "dinov2_vitb14"  # the committed model kept: the tiny ViT, the fastest to train
MODELS = [VIT, FOURTH]
SEED = 0
# 600 images a slot (480 to train): 4.8 a class on the 100-class slot, where every model then learns above
# chance in its epochs (at 300 both stayed at 0-3 right of 60 test images)
LIMIT = 600
# The tiny ViT (2 blocks of width 48) needs a few hundred AdamW steps to learn (3 epochs stay at chance): 40 epochs
# on the 10 digits (0.57 top-1) and 20 on the 100 numbers (0.067), ~10 s together; also room to kill its
# training mid-way (the last test)
VIT_EPOCHS = 40
VIT_RECIPES = {
    "train": {"epochs": VIT_EPOCHS, "lr": 3e-3, "warmup_epochs": 2},
    "transfer": {"epochs": 20, "lr": 3e-3, "warmup_epochs": 1},
}
# Tuning on, as `dvc exp run -S tune.enabled=true` turns it on: every model's lr over the same 2 factors, 1 epoch a
# trial, in both training stages (8 trials, ~10 s; tests/test_tune.py checks a trial's best of several epochs). A
# trial of the tiny ViT stays near chance in 1 epoch, so its choice is noise: both factors give an lr its trainings
# reach REACHED at (x1 is the recipe's own; x2 is what trials of 3 epochs chose)
TUNE = {"enabled": True, "lr_scale": [1.0, 2.0], "epochs": 1}


ALL_STAGES = stages_for(MODELS)


def with_fourth_model(raw):
    """The committed params plus resnet10t: one entry under models:, nothing else."""
    raw["models"][FOURTH] = {"arch": "resnet10t.c3_in1k", "img_size": 176}
    return raw


def two_model_params():
    """The tiny params of the ViT and resnet10t: the other committed models leave the registry."""
    raw = tiny_params(with_fourth_model(committed_params()), compute__eval_batch_size=64, data__limit=LIMIT)
    for key in [k for k in raw["models"] if k not in MODELS]:
        del raw["models"][key]
        for section in ("train", "transfer"):
            raw[section].pop(key, None)
    for section, changes in VIT_RECIPES.items():
        raw[section][VIT].update(changes)
    raw["tune"] = dict(TUNE)
    return raw


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifarbench")
    copy_project(path)
    # the tiny sizes come from the demo's per-family rule: resnet10t is shrunk as a CNN with no edit
    (path / "params.yaml").write_text(dump(two_model_params()))
    r = Repo(path)
    r.run("git", "init", "-q", "-b", "main")
    # a fresh machine has no global git identity: DVC experiments need one
    r.run("git", "config", "user.name", "CIFARbench test")
    r.run("git", "config", "user.email", "test@cifarbench.invalid")
    r.commit("tiny project")
    yield r
    r.dvc("queue", "stop", "--kill", check=False)  # no queue worker outlives the test


def chain(model, transfer_only=False):
    """What a recipe change of one model reruns: its stages, the recipes that resolve it, the report."""
    run = f"{model}-{SEED}"
    stages = {
        "recipes",
        f"tune-cifar100@{model}",
        f"transfer-cifar100@{run}",
        f"evaluate@{model}-cifar100-{SEED}",
        f"embed@{model}-cifar100-{SEED}",
        "report",
    }
    if not transfer_only:
        stages |= {
            f"tune-cifar10@{model}",
            f"train-cifar10@{run}",
            f"evaluate@{model}-cifar10-{SEED}",
            f"embed@{model}-cifar10-{SEED}",
            f"probe@{model}-cifar10",
            f"probe@{model}-cifar100",
        }
    return stages


def test_full_repro_then_nothing_to_do(repo):
    out = repo.dvc("repro").stdout
    assert set(re.findall(r"Running stage '([^']+)'", out)) == ALL_STAGES
    # every stage's first line says which device it uses and why
    for block in out.split("Running stage ")[1:]:
        first = [line for line in block.splitlines()[1:] if line and not line.startswith(">")][0]
        assert first.startswith("device: "), block[:300]
    p = repo.path
    for d in DATASETS:
        for split in ("train.npz", "val.npz", "test.npz", "meta.json"):
            assert (p / "data" / d / split).is_file()
        for m in MODELS:
            run = f"{m}-{d}-{SEED}"
            assert (p / "models" / d / f"{m}-{SEED}.pt").is_file()
            for rel in (
                f"models/umap/{run}.npz",
                f"models/predictions/{run}.npz",
                f"metrics/per_image/{run}.json",
                f"metrics/evaluate/{run}.json",
                f"metrics/efficiency/{run}.json",
                f"metrics/embed/{run}.json",
                f"plots/confusion/{run}.csv",
                f"metrics/probe/{m}-{d}.json",
            ):
                assert (p / rel).is_file(), rel
            for fig in (f"confusion-{run}", f"umap-{run}", f"samples-{run}"):
                assert (p / "plots" / "figures" / f"{fig}.png").stat().st_size > 1000
            stage = "train-cifar10" if d == "cifar10" else "transfer-cifar100"
            for curve in ("train/loss", "train/acc", "val/loss", "val/acc", "lr"):
                assert (p / "logs" / stage / f"{m}-{SEED}" / "plots" / "metrics" / f"{curve}.tsv").is_file()
    summary = repo.json("metrics/summary.json")
    assert set(summary) == set(DATASETS) and all(list(summary[d]) == MODELS for d in DATASETS)
    report = (p / "plots" / "report.md").read_text()
    assert "not CIFAR" in report and re.search(r"^\| resnet10t \(random init\)\s+\|", report, re.M)
    assert "resnet10t (random init)" in report  # the display name derived from the timm architecture
    assert "DINOv2 ViT-B/14 (random init, 2 blocks, width 48, 2 heads, patch 7)" in report  # says what ran
    for link in re.findall(r"\]\((figures/[^)]+)\)", report):
        assert (p / "plots" / link).is_file(), link

    assert repo.stages_run("repro") == set()
    assert "up to date" in repo.dvc("status").stdout
    repo.commit("tiny run")


HEADLINE = ("top1", "top5", "ece", "knn_top1", "ood_auroc", "ood_fpr95", "corruption_top1", "probe_top1")
SUMMARY_KEYS = {*HEADLINE, *(f"{k}_ci" for k in HEADLINE), "best_val_acc", "fewshot_top1", "fewshot_top1_ci"} | {
    "lr",
    "weight_decay",
    "lr_tuned",
    "tune_val_top1",
    "tune_val_top1_ci",
}
COST_KEYS = {
    "params",
    "trainable_params",
    "gflops",
    "throughput",
    "latency_ms",
    "peak_memory_mb",
    "train_peak_memory_mb",
    "train_seconds",
    "seconds_per_epoch",
    "epochs",
}


# What a correct run must reach at this size, as multiples of chance (1 / classes; top-5's: 5 / classes), for
# every model in every table of the report that says how well it learns (fine-tuned, k-NN, corrupted, the
# probes, the few-shot curve, the best validation accuracy): each at most about half of the lowest the runs
# reached, on one thread per process (`make test`) and on two (480 training and 120 test images a slot; on the
# 100-class slot 4.8 training images a class). Reached: resnet10t 0.85-0.88 / 0.04-0.075 fine-tuned top-1 (10 /
# 100 classes), the tiny ViT 0.57 / 0.05-0.067; their probes 0.90 / 0.33 and 0.62 / 0.14. A shuffle of evaluate's
# predictions or of the probe's training labels lands near 1x and fails here.
REACHED = {  # (dataset, key): {model: multiple}
    ("cifar10", "top1"): {FOURTH: 4, VIT: 2.5},
    ("cifar10", "top5"): {FOURTH: 1.6, VIT: 1.4},
    ("cifar10", "knn_top1"): {FOURTH: 4.5, VIT: 3},
    ("cifar10", "corruption_top1"): {FOURTH: 3, VIT: 3},
    ("cifar10", "probe_top1"): {FOURTH: 4.5, VIT: 3},
    ("cifar10", "best_val_acc"): {FOURTH: 4, VIT: 3},
    ("cifar100", "top1"): {FOURTH: 2, VIT: 2},
    ("cifar100", "top5"): {FOURTH: 2, VIT: 2},
    ("cifar100", "knn_top1"): {FOURTH: 8, VIT: 3},
    ("cifar100", "corruption_top1"): {FOURTH: 1.8, VIT: 1.8},
    ("cifar100", "probe_top1"): {FOURTH: 12, VIT: 6},
    ("cifar100", "probe_from_cifar10_top1"): {FOURTH: 12, VIT: 3},
    ("cifar100", "best_val_acc"): {FOURTH: 2.5, VIT: 2.5},
}
LEARNS = {(d, m, key): multiple for (d, key), by_model in REACHED.items() for m, multiple in by_model.items()}
FEWSHOT_LEARNS = {("cifar10", FOURTH): 1.6, ("cifar10", VIT): 1.3, ("cifar100", FOURTH): 4, ("cifar100", VIT): 2.5}


def test_every_model_and_dataset_has_accuracy_robustness_probes_and_cost(repo):
    summary, cost = repo.json("metrics/summary.json"), repo.json("metrics/cost.json")
    classes = {d: len(repo.json(f"data/{d}/meta.json")["classes"]) for d in DATASETS}
    for (d, m, key), multiple in LEARNS.items():
        chance = (5 if key == "top5" else 1) / classes[d]
        assert summary[d][m][key] >= multiple * chance, (d, m, key, summary[d][m][key], multiple * chance)
    for (d, m), multiple in FEWSHOT_LEARNS.items():  # the 1-shot probe
        assert summary[d][m]["fewshot_top1"]["1"] >= multiple / classes[d], (d, m, summary[d][m]["fewshot_top1"])
    for d in DATASETS:
        for m in MODELS:
            row = summary[d][m]
            expected = SUMMARY_KEYS | ({"probe_from_cifar10_top1"} if d == "cifar100" else set())
            assert set(row) == expected, set(row) ^ expected
            assert row["top1"] <= row["top5"]
            for key in HEADLINE:  # every headline number sits inside its interval, which has a width
                lo, hi = row[f"{key}_ci"]
                assert lo <= row[key] <= hi and (hi > lo or row[key] in (0.0, 1.0)), (d, m, key, lo, row[key], hi)
            assert list(row["fewshot_top1"]) == list(row["fewshot_top1_ci"]) == ["1"]
            assert set(cost[d][m]) == COST_KEYS
            assert cost[d][m]["gflops"] > 0 and cost[d][m]["throughput"] > 0 and cost[d][m]["train_seconds"] > 0
            assert 0 < cost[d][m]["trainable_params"] <= cost[d][m]["params"]
            evaluation = repo.json(f"metrics/evaluate/{m}-{d}-{SEED}.json")
            assert {"top1_ci", "top5_ci", "ood", "corruptions", "corruption_top1", "per_class"} <= set(evaluation)
            assert evaluation["corruption_source"] == "generated"  # the stand-in has no released set
            assert evaluation["corruption_set"] == {"cifar10": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}[d]
            assert set(evaluation["ood"]) == {"dataset", "n_out", "msp", "energy"}
            assert set(evaluation["corruptions"]) == {"gaussian_noise", "fog"}
            assert repo.json(f"metrics/efficiency/{m}-{d}-{SEED}.json")["device"].startswith("CPU")
        assert len(repo.json("metrics/comparisons.json")[d]) == 1  # the pair of the two models
    # the tiny ViT freezes its stem and first block during transfer
    assert cost["cifar100"]["dinov2_vitb14"]["trainable_params"] < cost["cifar100"]["dinov2_vitb14"]["params"]
    # a declared metric of each training stage: what `dvc exp show` shows as soon as training ends
    trained = repo.json(f"logs/train-cifar10/{FOURTH}-{SEED}/metrics.json")
    assert {"best_val_acc", "best_epoch", "epochs_run"} <= set(trained)
    assert "epoch_seconds" not in trained and "images_per_second" not in trained  # timings are not compared


def shown(path):
    """What a figure shows, from its PNG's metadata (cifarbench.render.figures.describe)."""
    with Image.open(path) as image:
        return json.loads(image.text["Description"])


def markdown_tables(report):
    """Every table of report.md: (header cells, rows of cells)."""
    tables, block = [], []
    for line in [*report.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip("|").split("|")])
        elif block:
            tables.append((block[0], block[2:]))
            block = []
    return tables


def test_report_has_every_section_and_a_self_contained_html(repo):
    p = repo.path
    report = (p / "plots" / "report.md").read_text()
    display = {
        VIT: "DINOv2 ViT-B/14 (random init, 2 blocks, width 48, 2 heads, patch 7)",
        FOURTH: "resnet10t (random init)",
    }
    # each figure, by what it shows: a title, labelled axes, and a series (or panel) per model
    figures_dir = p / "plots" / "figures"
    for name, panels in [
        ("accuracy-vs-cost", 2),
        ("ood-roc", 2),
        ("corruption-severity", 2),
        ("fewshot", 2),
        *((f"{kind}-{d}", 1) for kind in ("curves", "per-class") for d in DATASETS),
        *((f"{kind}-{d}", len(MODELS)) for kind in ("reliability", "umap") for d in DATASETS),
    ]:
        figure = shown(figures_dir / f"{name}.png")
        assert figure["title"], name
        assert len(figure["axes"]) >= panels, (name, figure)
        # labelled axes (a UMAP's have no units to name; per-class bars name their classes on the ticks)
        assert name.startswith("umap") or any(a["ylabel"] for a in figure["axes"]), (name, figure)
        assert name.startswith(("umap", "per-class")) or any(a["xlabel"] for a in figure["axes"]), (name, figure)
        if not name.startswith(("reliability", "umap")):  # a series per model in each panel
            assert all(axes["series"] >= len(MODELS) for axes in figure["axes"][:panels]), (name, figure)
            legend = " ".join(figure["legend"] + [e for axes in figure["axes"] for e in axes["legend"]])
            assert all(display[m].split(" (")[0] in legend for m in MODELS), (name, legend)
        else:  # a panel per model, titled with it
            titles = " ".join(axes["title"] for axes in figure["axes"])
            assert all(display[m].split(" (")[0] in titles for m in MODELS), (name, titles)
    severity = shown(figures_dir / "corruption-severity.png")
    assert [a["title"] for a in severity["axes"]] == [
        "CIFAR-10 test images (CIFAR-10-C, generated)",
        "CIFAR-100 test images (CIFAR-100-C, generated)",
    ]
    for heading in (
        "## Data and parameters",
        "## Test accuracy",
        "### Which differences hold",
        "## Efficiency",
        "## Calibration",
        "## Transfer: fine-tuning against frozen features",
        "## Out-of-distribution detection",
        "## Corruption robustness",
        "## Per-class accuracy",
        "## Confusion matrices",
        "## Sample predictions",
    ):
        assert heading in report
    assert re.search(r"Params digest\*\* `[0-9a-f]{12}`", report)
    assert re.search(r"\|\s+\d+\.\d \(\d+\.\d–\d+\.\d\) \|", report)  # top-1 with its interval
    for d in ("CIFAR-10-C", "CIFAR-100-C"):  # the subset is stated, with the set's name and source
        assert f"**{d}** (generated by CIFARbench's corruption code, not the released arrays)" in report
        assert f"2 of the 15 {d} corruptions (gaussian_noise, fog)" in report
    # each model's protocol per stage, what differs marked: the tiny ViT (AdamW, 1 of its 2 blocks frozen in
    # transfer) against resnet10t (SGD, nothing frozen)
    protocol = report[report.index("### Each model's protocol") : report.index("## Test accuracy")]
    assert "| **optimizer** ≠ " in protocol and "1 of 2 (50%)" in protocol and "0 of 4 (0%)" in protocol
    assert "The linear probe trains one protocol for every model" in protocol
    # every model in every table of models; every number of a headline table beside its interval
    tables = [t for t in markdown_tables(report) if t[0][0] == "Model"]
    assert len(tables) >= 9, len(tables)
    for header, rows in tables:
        assert {display[m] for m in MODELS} <= {row[0] for row in rows}, header
        for column, title in enumerate(header):
            if "95% CI" in title:
                assert all(re.fullmatch(r"\d+\.\d{1,3} \(\d+\.\d{1,3}–\d+\.\d{1,3}\)", row[column]) for row in rows), (
                    title
                )
    lines = report.splitlines()
    images = [i for i, line in enumerate(lines) if line.startswith("![")]
    per_run = 2 * len(MODELS) * len(DATASETS)  # confusion and samples
    # tuning, cost, ood, corruption, few-shot; reliability+curves; UMAP; per-class
    assert len(images) == 5 + 2 * 2 + 2 + 2 + per_run
    for i in images:  # every figure has a one-line caption
        assert lines[i + 2].startswith("*") and lines[i + 2].endswith("*"), lines[i]
    html = (p / "plots" / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == len(images)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)="(?!data:)', html), "report.html must not load anything"


def expected_choice(trials):
    """The tuning's rule, done again: the best validation top-1 of the trials that did not diverge, a tie going to
    the factor nearest 1 (the recipe's own lr)."""
    kept = [t for t in trials if not t["diverged"]]
    best = max(t["val_top1"] for t in kept)
    return min((t for t in kept if t["val_top1"] == best), key=lambda t: abs(math.log(t["lr_scale"])))


def test_tuning_chooses_each_models_best_validation_trial_and_its_training_uses_it(repo):
    """Tuning on for both models over a 2-value grid: each tuning file holds the grid's trials, scored on the
    validation split with their intervals, and chooses the best; the training ran at the chosen lr (its own
    metrics say so), and the summary, the protocol table and the tuning figure show it."""
    import torch

    from cifarbench.pipeline import tune

    summary = repo.json("metrics/summary.json")
    report = (repo.path / "plots" / "report.md").read_text()
    protocol = report[report.index("### Each model's protocol") : report.index("## Test accuracy")]
    for d in DATASETS:
        stage = {"cifar10": "train-cifar10", "cifar100": "transfer-cifar100"}[d]
        val_images = repo.json(f"data/{d}/meta.json")["counts"]["val"]
        for m in MODELS:
            record = repo.json(f"metrics/tune/{stage}/{m}.json")
            base = repo.json(f"recipes/{stage}/{m}.json")["recipe"]["lr"]
            trials = record["trials"]
            assert [t["lr_scale"] for t in trials] == TUNE["lr_scale"] and record["epochs"] == TUNE["epochs"]
            assert [t["lr"] for t in trials] == pytest.approx([base * f for f in TUNE["lr_scale"]])
            assert record["val_images"] == val_images
            for t in trials:  # a score of the validation images inside its interval: the trial's own best epoch
                hits = t["val_top1"] * val_images
                assert not t["diverged"] and round(hits) == pytest.approx(hits)
                assert t["val_top1_ci"][0] <= t["val_top1"] <= t["val_top1_ci"][1]
                state = torch.load(repo.path / tune.trial_state(stage, m, t), weights_only=True)
                assert state["finished"] and len(state["history"]) == TUNE["epochs"]
                assert t["val_top1"] == max(epoch["val_acc"] for epoch in state["history"])
            best = expected_choice(trials)
            assert record["chosen"]["lr"] == best["lr"] and record["chosen"]["val_top1"] == best["val_top1"]
            trained = repo.json(f"logs/{stage}/{m}-{SEED}/metrics.json")
            assert trained["peak_lr"] == trained["lr"] == best["lr"]  # it trained at it
            row = summary[d][m]
            assert row["lr"] == best["lr"] and row["lr_tuned"] is True
            assert row["tune_val_top1"] == round(best["val_top1"], 6)
            assert f"{best['lr']:g} (tuned: x{best['lr_scale']:g} of the recipe's {base:g}, over x1, x2)" in protocol
            states = sorted((repo.path / "models" / "tune" / stage / m).glob("*.state.pt"))
            assert len(states) == len(TUNE["lr_scale"])
    # a trial's learning is visible: the 10-class tuning of resnet10t reaches twice chance in its one epoch (0.23-0.26
    # reached on 120 validation images)
    cnn = repo.json(f"metrics/tune/train-cifar10/{FOURTH}.json")
    assert max(t["val_top1"] for t in cnn["trials"]) >= 0.2, cnn["trials"]
    assert "2 trials (the recipe's lr times 1, 2) of 1 epoch each" in protocol
    figure = shown(repo.path / "plots" / "figures" / "tuning.png")
    assert figure["title"] == "Validation top-1 over each model's tuning grid"
    assert [a["title"] for a in figure["axes"]] == ["train-cifar10 (CIFAR-10)", "transfer-cifar100 (CIFAR-100)"]
    # per panel and model: its line, an interval per trial and the ring on the chosen lr
    assert all(a["series"] == len(MODELS) * (2 + len(TUNE["lr_scale"])) for a in figure["axes"]), figure
    assert len(figure["legend"]) == len(MODELS)


def test_a_grid_change_reruns_every_tuning_then_the_trainings_whose_tuning_changed(repo):
    """`dvc status` after a change of tune.lr_scale lists the four tunings and the report (which states the grid);
    once the CIFAR-10 tunings ran (the values left keep their finished trials: nothing trains), it lists the two
    CIFAR-10 trainings that read their files, beside the CIFAR-100 tunings still to run and the report. (Each
    CIFAR-100 tuning follows its CIFAR-10 training: it starts from that checkpoint.)"""
    tunings = {f"{stage}@{m}" for stage in ("tune-cifar10", "tune-cifar100") for m in MODELS}
    try:
        repo.set_param("tune.lr_scale", TUNE["lr_scale"][:1])
        assert stages_changed(repo) == tunings | {"report"}
        out = repo.dvc("repro", "-s", "tune-cifar10").stdout
        assert set(re.findall(r"Running stage '([^']+)'", out)) == {f"tune-cifar10@{m}" for m in MODELS}
        assert out.count("without training") == len(MODELS) and "epoch " not in out  # the trial kept, each
        trainings = {f"train-cifar10@{m}-{SEED}" for m in MODELS}
        assert stages_changed(repo) == trainings | {f"tune-cifar100@{m}" for m in MODELS} | {"report"}
    finally:
        repo.restore()
    assert stages_changed(repo) == set()


def test_report_html_renders_every_image_in_chromium(repo, chromium):
    from browser import decoded_images, table_fit

    images = decoded_images(chromium, repo.path / "plots" / "report.html")
    assert len(images) == (repo.path / "plots" / "report.md").read_text().count("\n![")
    bad = [i for i in images if not (i["ok"] and i["width"] > 0 and i["height"] > 0 and i["shown"] > 0)]
    assert not bad, bad
    # at 1,400 px every table, the long display names included, fits the page's column
    fit = table_fit(chromium, repo.path / "plots" / "report.html")
    assert not fit["page_overflow"] and fit["tables"], fit
    assert all(t["overflow"] <= 0 and t["past_body"] <= 0 for t in fit["tables"]), fit


def test_predict_returns_the_class_evaluate_gave(repo, tmp_path):
    """`cifarbench predict` on the test images, saved as PNG files, agrees with evaluate's predictions."""
    from cifarbench import cli

    script = Path(sys.executable).parent / "cifarbench"
    # each model on one dataset: the ViT's through the installed command in a process of its own, resnet10t's through
    # its main() in this process (a process spends ~4 s importing torch and timm first)
    pairs = {"cifar10": [VIT], "cifar100": [FOURTH]}
    for d, models in pairs.items():
        folder = tmp_path / d
        folder.mkdir()
        with np.load(repo.path / "data" / d / "test.npz") as f:
            for i, image in enumerate(f["images"]):
                Image.fromarray(image).save(folder / f"{i:05d}.png")
        for m in models:
            evaluated = [
                row.split(",")[1]
                for row in (repo.path / "plots" / "confusion" / f"{m}-{d}-{SEED}.csv").read_text().splitlines()[1:]
            ]
            args = ["predict", str(folder), "--model", m, "--dataset", d, "--json", "--topk", "1"]
            if m == VIT:
                out = repo.run(str(script), *args).stdout
            else:
                done = run_here(repo.path, lambda args=args: cli.main(args))
                assert done.returncode == 0, done.stderr[-3000:]
                out = done.stdout
            predicted = [r["top"][0]["class"] for r in json.loads(out)]
            assert len(predicted) == len(evaluated) > 0
            assert predicted == evaluated, f"{m} on {d}"


@pytest.mark.parametrize(
    "edited, reruns",
    [
        ("cifarbench/render/figures.py", {"evaluate", "embed", "report"}),  # a plotting module: no training
        # the training loop: every tuning and training reruns (and then, as their files change, what reads them)
        ("cifarbench/train/engine.py", {"tune-cifar10", "tune-cifar100", "train-cifar10", "transfer-cifar100"}),
    ],
)
def test_code_edit_reruns_only_the_stages_that_run_it(repo, edited, reruns):
    path = repo.path / edited
    original = path.read_text()
    try:
        path.write_text(original + "\n# an edit\n")
        ran = stages_changed(repo)  # what `dvc repro` runs first: the stages that list the file
    finally:
        path.write_text(original)
    assert {name.split("@")[0] for name in ran} == reruns, sorted(ran)
    if "train-cifar10" in reruns:
        assert {f"train-cifar10@{m}-{SEED}" for m in MODELS} <= ran
        assert {f"transfer-cifar100@{m}-{SEED}" for m in MODELS} <= ran
    assert stages_changed(repo) == set()


def test_dvc_commit_accepts_an_edit_known_to_change_nothing(repo):
    """README's way to accept a harmless edit: `dvc status` lists the stages that import the file, `dvc commit`
    records its new hash for them without running anything, and `dvc status` is clean."""
    path = repo.path / "cifarbench" / "render" / "styles.py"
    try:
        path.write_text(path.read_text() + "\n# a wording fix\n")
        before = repo.dvc("status").stdout
        assert stages_changed(repo) == {s for s in ALL_STAGES if s.split("@")[0] in ("evaluate", "embed", "report")}
        assert "modified:           cifarbench/render/styles.py" in before
        assert "Running stage" not in repo.dvc("commit", "-f").stdout
        assert "Data and pipelines are up to date" in repo.dvc("status").stdout
    finally:
        repo.restore()


def test_every_training_curve_is_a_declared_plot(repo):
    out = json.loads(repo.dvc("plots", "show", "--json").stdout)
    assert not out.get("errors"), out.get("errors")
    names = set(out["data"])
    for m in MODELS:
        for stage in ("train-cifar10", "transfer-cifar100"):
            for curve in ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "images_per_second"):
                name = f"logs/{stage}/{m}-{SEED}/plots/metrics/{curve}.tsv"
                assert name in names, name
                assert out["data"][name][0]["content"]["data"]["values"], f"{name} has no points"
    assert {f"plots/confusion/{m}-{d}-{SEED}.csv" for m in MODELS for d in DATASETS} <= names


SPELLINGS = [("2e-5", 2e-5), ("1e-3", 1e-3), ("1E-4", 1e-4), (".5", 0.5), ("5", 5.0)]


def test_every_spelling_dvc_exp_run_writes_loads(repo):
    """`dvc exp run -S` writes `2e-05` for 2e-5: the pipeline reads it as DVC does (YAML 1.2), a float.
    One experiment sets each spelling on a recipe key of its own (one run of the recipes stage, not five)."""
    keys = [(section, model, "lr") for model in MODELS for section in ("train", "transfer")]
    keys = (keys + [("train", VIT, "weight_decay")])[: len(SPELLINGS)]
    sets = [
        a
        for (section, model, key), (text, _) in zip(keys, SPELLINGS)
        for a in ("-S", f"{section}.{model}.{key}={text}")
    ]
    try:
        repo.dvc("exp", "run", *sets, "recipes")
        for (section, model, key), (text, value) in zip(keys, SPELLINGS):
            stage = {"train": "train-cifar10", "transfer": "transfer-cifar100"}[section]
            read = repo.json(f"recipes/{stage}/{model}.json")["recipe"][key]
            assert read == pytest.approx(value) and isinstance(read, float), f"{section}.{model}.{key}={text}: {read!r}"
    finally:
        repo.restore()


def test_a_wrong_type_through_dvc_exp_run_names_the_key(repo):
    try:
        proc = repo.dvc("exp", "run", "-S", f"train.{VIT}.lr=fast", "recipes", check=False)
        assert proc.returncode != 0
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error: ")]
        assert errors == [f"error: params.yaml: train.{VIT}.lr: Input should be a valid number (got 'fast')"]
        assert "Traceback" not in proc.stdout + proc.stderr
    finally:
        repo.restore()


def test_transfer_recipe_change_reruns_only_that_models_transfer_and_shows_in_exp_show(repo):
    """A transfer-recipe change reruns that model's transfer and what reads it, never its CIFAR-10 training or the
    other model (a train-recipe change reruns the CIFAR-10 half as well: chain(model), as the code-edit test shows
    for every training)."""
    try:
        ran = repo.stages_run("exp", "run", "-S", f"transfer.{VIT}.lr=0.004", "--name", "vit-lr")
        assert ran == chain(VIT, transfer_only=True)
        diff = json.loads(repo.dvc("metrics", "diff", "--targets", "metrics/summary.json", "--json").stdout)
        changed = {key for changes in diff.values() for key in changes}
        assert changed and all(key.startswith(f"cifar100.{VIT}.") for key in changed), changed
        shown = json.loads(repo.dvc("exp", "show", "--json").stdout)
        [exp] = [
            e["revs"][0] for commit in shown for e in (commit.get("experiments") or []) if e.get("name") == "vit-lr"
        ]
        assert exp["data"]["params"]["params.yaml"]["data"]["transfer"][VIT]["lr"] == 0.004
        metrics = exp["data"]["metrics"]
        assert "best_val_acc" in metrics[f"logs/transfer-cifar100/{VIT}-{SEED}/metrics.json"]["data"]
        assert "top1" in json.dumps(metrics["metrics/summary.json"]["data"])
        # `dvc plots diff` between the baseline and the experiment renders every logged curve of both
        plots = json.loads(repo.dvc("plots", "diff", "HEAD", "vit-lr", "--json").stdout)
        assert not plots.get("errors"), plots.get("errors")
        for stage in ("train-cifar10", "transfer-cifar100"):
            for curve in ("train/loss", "train/acc", "val/loss", "val/acc", "lr"):
                [rendered] = plots["data"][f"logs/{stage}/{VIT}-{SEED}/plots/metrics/{curve}.tsv"]
                assert rendered["revisions"] == ["HEAD", "vit-lr"]
                assert {row["rev"] for row in rendered["content"]["data"]["values"]} == {"HEAD", "vit-lr"}
    finally:
        repo.restore()


def readme_exp_show_command():
    """The one `dvc exp show` command README gives for comparing runs."""
    readme = (ROOT / "README.md").read_text()
    [command] = re.findall(r"^(dvc exp show --[^\n#]*?)\s*(?:#.*)?$", readme, re.M)[:1]
    return command


def test_readme_exp_show_fits_160_columns(repo, tmp_path):
    """README's `dvc exp show` line, for the three committed models: a repo of their top1.json alone (this run's
    top-1 values, as the report writes them, under each committed key), a commit and an experiment saved on it."""
    committed = list(committed_params()["models"])
    measured = repo.json("metrics/top1.json")
    scratch = Repo(tmp_path / "widths")
    scratch.path.mkdir()
    for command in (("git", "init", "-q", "-b", "main"), ("git", "config", "user.name", "t")):
        scratch.run(*command)
    scratch.run("git", "config", "user.email", "t@cifarbench.invalid")
    scratch.dvc("init", "-q")
    shutil.copy(ROOT / "params.yaml", scratch.path)
    (scratch.path / "dvc.yaml").write_text("metrics:\n  - metrics/top1.json\n")
    (scratch.path / "metrics").mkdir()

    def write_top1(model):
        top1 = {short: {key: values[model] for key in committed} for short, values in measured.items()}
        (scratch.path / "metrics" / "top1.json").write_text(json.dumps(top1))

    write_top1(VIT)
    scratch.commit("a run")
    write_top1(FOURTH)
    scratch.dvc("exp", "save", "--name", "transfer-lr-0.004")
    proc = subprocess.run(
        [sys.executable, "-m", *shlex.split(readme_exp_show_command())],
        cwd=scratch.path,
        capture_output=True,
        text=True,
        env=dict(scratch.env, COLUMNS="160"),
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.rstrip().splitlines()
    assert lines and max(len(line) for line in lines) <= 160, "\n".join(lines)
    assert all(f"c{n}.{m}" in lines[1] for n in (10, 100) for m in committed), lines[1]
    assert "transfer-lr-0.004" in proc.stdout


def test_more_seeds_run_only_the_new_seeds_chains(repo):
    """`dvc status` lists what `dvc repro` would run. (`dvc repro --dry` stops at the first stage whose
    input the dry run did not make: DVC computes the run-cache key of a missing file, DVC issue #9021.)"""
    try:
        repo.set_param("seeds", [SEED, 1])
        status = repo.dvc("status").stdout
        ran = set(re.findall(r"^(\S+):$", status, re.M))
    finally:
        repo.restore()
    new = stages_for(MODELS, seeds=(1,)) - stages_for(MODELS, seeds=())  # the new seed's per-seed stages
    assert ran == new | {"report"}, sorted(ran ^ (new | {"report"}))


def stages_changed(repo):
    """The stages `dvc status` lists as changed (what `dvc repro` would run first)."""
    return set(re.findall(r"^(\S+):$", repo.dvc("status").stdout, re.M))


def test_speed_settings_rerun_nothing(repo):
    """Where a training runs and how fast it goes is not what it computes: with compute.nodes, compute.compile
    and compute.eval_batch_size changed every stage is up to date, and an experiment that also switches a
    recipe's compile runs only the recipes stage (its files leave compile out) and trains nothing."""
    try:
        for key, value in (("compute.nodes", 2), ("compute.compile", False), ("compute.eval_batch_size", 32)):
            repo.set_param(key, value)
        status = repo.dvc("status").stdout
        assert "Data and pipelines are up to date" in status, status
    finally:
        repo.restore()
    try:
        # ++: the ViT's recipes have no compile key of their own yet (efficientnet_b0's have, in params.yaml)
        ran = repo.stages_run(
            "exp",
            "run",
            "-S",
            "compute.compile=false",
            "-S",
            f"++train.{VIT}.compile=false",
            "-S",
            f"++transfer.{VIT}.compile=false",
        )
        assert ran == {"recipes"}
        assert stages_changed(repo) == set()
    finally:
        repo.restore()


def test_an_edit_that_changes_no_number_reruns_a_training_without_training(repo):
    """cifarbench/sourcefiles.py is a training stage's code (dvc.yaml lists it), but it cannot change what a
    training computes (sourcefiles.NO_NUMBERS): DVC reruns the stage, which writes its outputs again from its
    finished state in seconds. Its checkpoint and logs come out the same, so nothing after it reruns."""
    edited = repo.path / "cifarbench" / "sourcefiles.py"
    original = edited.read_text()
    trainings = {f"{stage}@{m}-{SEED}" for stage in ("train-cifar10", "transfer-cifar100") for m in MODELS}
    tunings = {f"{stage}@{m}" for stage in ("tune-cifar10", "tune-cifar100") for m in MODELS}
    try:
        edited.write_text(original + "\n# a comment\n")
        assert stages_changed(repo) == trainings | tunings
        run, tuning = f"transfer-cifar100@{FOURTH}-{SEED}", f"tune-cifar100@{FOURTH}"
        out = repo.dvc("repro", "-s", run).stdout
        assert "its outputs are written again from the saved state, without training" in out
        assert "epoch " not in out
        # its evaluate, embed and the report are up to date
        assert stages_changed(repo) == (trainings | tunings) - {run}
        out = repo.dvc("repro", "-s", tuning).stdout  # a finished tuning: every trial from its state
        assert out.count("written again from the saved state, without training") == len(TUNE["lr_scale"])
        assert "epoch " not in out
        assert stages_changed(repo) == (trainings | tunings) - {run, tuning}  # the same choice: nothing after it
    finally:
        edited.write_text(original)
        repo.restore()


def test_a_registry_of_one_model_runs(repo):
    try:
        raw = repo.params()
        for key in MODELS[1:]:
            del raw["models"][key]
            for section in ("train", "transfer"):
                raw[section].pop(key, None)
        repo.write_params(raw)
        ran = repo.stages_run("repro")
        assert ran == {"recipes", "report"}  # the ViT's own stages are unchanged
        summary = repo.json("metrics/summary.json")
        assert all(list(summary[d]) == [VIT] for d in DATASETS)
        report = (repo.path / "plots" / "report.md").read_text()
        assert "One model: nothing to compare." in report and FOURTH not in report
        assert repo.json("metrics/comparisons.json") == {d: {} for d in DATASETS}
    finally:
        repo.restore()


def test_killed_dvc_repro_resumes_and_writes_the_uninterrupted_checkpoint(repo):
    """kill -9 of `dvc repro` (and its stage) mid-training; the next `dvc repro` continues the run and writes the
    checkpoint of the full repro's uninterrupted run byte for byte, so the evaluate stage after it stays up to
    date (DVC compares its input's hash)."""
    import torch

    run, evaluate = f"{VIT}-{SEED}", f"evaluate@{VIT}-cifar10-{SEED}"
    checkpoint = repo.path / "models" / "cifar10" / f"{run}.pt"
    uninterrupted = checkpoint.read_bytes()  # the full repro's: VIT_EPOCHS epochs, never stopped
    state_path = repo.path / "models" / "cifar10" / f"{run}.state.pt"

    def saved_epoch():
        try:
            state = torch.load(state_path, weights_only=True)
        except (FileNotFoundError, RuntimeError, EOFError):
            return 0
        return 0 if state.get("finished") else state["trainer"]["epoch"]

    state_path.unlink()  # else the forced rerun writes the finished run's outputs again without training
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "-f", "-s", f"train-cifar10@{run}"],
        cwd=repo.path,
        env=repo.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while saved_epoch() < 1:
        assert proc.poll() is None and time.monotonic() < deadline, "the stage ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # DVC and the stage script with it
    proc.wait()
    assert 1 <= saved_epoch() < VIT_EPOCHS

    out = repo.dvc("repro", evaluate).stdout
    assert "resuming after epoch" in out
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {f"train-cifar10@{run}"}
    rows = (repo.path / "logs" / "train-cifar10" / run / "plots" / "metrics" / "val" / "acc.tsv").read_text()
    assert len(rows.strip().splitlines()) == 1 + VIT_EPOCHS
    assert checkpoint.read_bytes() == uninterrupted
