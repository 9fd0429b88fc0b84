"""End to end through the real DVC CLI: what the full `dvc repro` of the end-to-end repo makes (tests/e2e_repo.py: the
project in a fresh git repo, two models, tiny params), on a copy of it.

The repro ran every stage and a second runs nothing; it made every output: every metric key, numbers a correct run
reaches, every figure, a report whose HTML renders in Chromium, `cifarbench predict` agreeing with evaluate, every
training curve as a declared plot. What each kind of change reruns is tests/test_pipeline_reruns.py's.
"""

import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, committed_params, run_here
from dvc_repo import Repo
from e2e_repo import ALL_STAGES, FOURTH, MODELS, SEED, TUNE, VIT, repo_copy
from PIL import Image

from cifarbench.paths import DATASETS


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A copy of the built repo and the output of the `dvc repro` that built it."""
    return repo_copy(tmp_path_factory, "e2e")


@pytest.fixture(scope="module")
def repo(built):
    return built[0]


def test_full_repro_then_nothing_to_do(built):
    repo, out = built  # out: the output of the repro that built it
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

    assert repo.stages_run("repro") == set()  # in the copy: DVC hashes its files again and finds them the same
    assert "up to date" in repo.dvc("status").stdout
    assert repo.run("git", "status", "--porcelain").stdout == ""  # the build committed every tracked result


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
