"""End to end through the real DVC CLI: the project copied into a fresh git repo, tiny params.

One module-scoped repo walks through the contract in order: a full repro makes
every output (metrics with every key, every figure, a report whose HTML renders
in Chromium, and `cifarbench predict` agreeing with evaluate); a second repro
runs nothing; a train-recipe change reruns exactly
that model's chain; `dvc metrics diff` then shows only that model; a transfer
change run as `dvc exp run -S` leaves train-cifar10 alone and shows up in
`dvc exp show`; two variants queued with `dvc exp run --queue -S` run side by
side under `dvc queue start -j 2`, each with its own results; last, a `dvc repro`
killed with SIGKILL mid-training continues from its persisted state.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cifarbench import DATASETS, MODELS
from conftest import ROOT, set_dotted, tiny_params

ALL_STAGES = (
    {f"download@{d}" for d in DATASETS}
    | {f"train-cifar10@{m}" for m in MODELS}
    | {f"transfer-cifar100@{m}" for m in MODELS}
    | {f"{s}@{m}-{d}" for s in ("evaluate", "embed") for m in MODELS for d in DATASETS}
    | {"report"}
)


def project_files():
    """The files a fresh clone would have (tracked, plus new files not yet committed)."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def copy_project(dest):
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    # results of a local `make demo` would look like committed outputs: a fresh clone has none
    for generated in ("dvc.lock", "metrics", "plots", "logs"):
        path = dest / generated
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


class Repo:
    def __init__(self, path):
        self.path = path
        bin_dir = str(Path(sys.executable).parent)
        self.env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"],
                        PYTHONPATH=str(path),  # the copy's package, not the checkout's
                        DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")

    def run(self, *args, check=True):
        proc = subprocess.run(args, cwd=self.path, env=self.env, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def dvc(self, *args, check=True):
        return self.run(sys.executable, "-m", "dvc", *args, check=check)

    def stages_run(self, *args):
        out = self.dvc(*args).stdout
        return set(re.findall(r"Running stage '([^']+)'", out))

    def set_param(self, key, value):
        path = self.path / "params.yaml"
        raw = yaml.safe_load(path.read_text())
        set_dotted(raw, key, value)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))

    def commit(self, message):
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "-m", message)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    path = tmp_path_factory.mktemp("cifarbench")
    copy_project(path)
    (path / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    r = Repo(path)
    r.run("git", "init", "-q", "-b", "main")
    # a fresh machine has no global git identity: DVC experiments need one
    r.run("git", "config", "user.name", "CIFARbench test")
    r.run("git", "config", "user.email", "test@cifarbench.invalid")
    r.commit("tiny project")
    yield r
    r.dvc("queue", "stop", "--kill", check=False)  # no queue worker outlives the test


def model_chain(model, transfer_only=False):
    stages = {f"transfer-cifar100@{model}", f"evaluate@{model}-cifar100", f"embed@{model}-cifar100", "report"}
    if not transfer_only:
        stages |= {f"train-cifar10@{model}", f"evaluate@{model}-cifar10", f"embed@{model}-cifar10"}
    return stages


def test_full_repro_then_nothing_to_do(repo):
    assert repo.stages_run("repro") == ALL_STAGES
    p = repo.path
    for d in DATASETS:
        for split in ("train.npz", "val.npz", "test.npz", "meta.json"):
            assert (p / "data" / d / split).is_file()
        for m in MODELS:
            assert (p / "models" / d / f"{m}.pt").is_file()
            assert (p / "models" / d / f"{m}-umap.npz").is_file()
            assert (p / "metrics" / "evaluate" / f"{m}-{d}.json").is_file()
            assert (p / "metrics" / "embed" / f"{m}-{d}.json").is_file()
            assert (p / "plots" / "confusion" / f"{m}-{d}.csv").is_file()
            for fig in (f"confusion-{m}-{d}", f"umap-{m}-{d}", f"samples-{m}-{d}"):
                assert (p / "plots" / "figures" / f"{fig}.png").stat().st_size > 1000
        stage = "train-cifar10" if d == "cifar10" else "transfer-cifar100"
        for m in MODELS:
            assert (p / "logs" / stage / m / "plots" / "metrics" / "val" / "acc.tsv").is_file()
    summary = json.loads((p / "metrics" / "summary.json").read_text())
    assert set(summary) == set(DATASETS) and all(set(summary[d]) == set(MODELS) for d in DATASETS)
    assert 0 <= summary["cifar10"]["resnet18"]["top1"] <= 1
    report = (p / "plots" / "report.md").read_text()
    assert "not CIFAR" in report and "| ResNet-18 |" in report
    for link in re.findall(r"\]\((figures/[^)]+)\)", report):
        assert (p / "plots" / link).is_file(), link

    assert repo.stages_run("repro") == set()
    assert "up to date" in repo.dvc("status").stdout
    repo.commit("tiny run")


SUMMARY_KEYS = {"top1", "top5", "ece", "params", "trainable_params", "gflops", "throughput", "latency_ms",
                "peak_memory_mb", "train_peak_memory_mb", "train_seconds", "seconds_per_epoch", "epochs"}


def test_every_model_and_dataset_has_accuracy_calibration_and_cost(repo):
    p = repo.path
    summary = json.loads((p / "metrics" / "summary.json").read_text())
    for d in DATASETS:
        for m in MODELS:
            row = summary[d][m]
            assert SUMMARY_KEYS <= set(row), SUMMARY_KEYS - set(row)
            assert 0 <= row["top1"] <= row["top5"] <= 1 and 0 <= row["ece"] <= 1
            assert row["gflops"] > 0 and row["throughput"] > 0 and row["latency_ms"] > 0
            assert row["peak_memory_mb"] > 0 and row["train_seconds"] > 0
            assert 0 < row["trainable_params"] <= row["params"]
            # only what is deterministic on CPU stays in the evaluation file
            evaluation = json.loads((p / "metrics" / "evaluate" / f"{m}-{d}.json").read_text())
            assert set(evaluation) == {"top1", "top5", "ece", "n_test", "per_class", "reliability"}
            assert sum(evaluation["reliability"]["count"]) == evaluation["n_test"]
            cost = json.loads((p / "metrics" / "efficiency" / f"{m}-{d}.json").read_text())
            assert cost["device"].startswith("CPU") and cost["train_device"].startswith("CPU")
            assert cost["params"] == row["params"]
    # the tiny ViT freezes its stem and first block during transfer
    dino = summary["cifar100"]["dinov2_vitb14"]
    assert dino["trainable_params"] < dino["params"]
    assert summary["cifar10"]["dinov2_vitb14"]["trainable_params"] == summary["cifar10"]["dinov2_vitb14"]["params"]


def test_report_has_every_section_and_a_self_contained_html(repo):
    p = repo.path
    figures_dir = p / "plots" / "figures"
    for name in ["accuracy-vs-cost", *(f"{kind}-{d}" for kind in ("per-class", "reliability", "curves", "umap")
                                      for d in DATASETS)]:
        assert (figures_dir / f"{name}.png").stat().st_size > 1000, name
    report = (p / "plots" / "report.md").read_text()
    for heading in ("## Data and parameters", "## Test accuracy", "## Efficiency", "## Calibration",
                    "## Per-class accuracy", "## Confusion matrices", "## Sample predictions"):
        assert heading in report
    assert re.search(r"Params digest\*\* `[0-9a-f]{12}`", report)
    assert "a multiply-add counts as 2 FLOPs" in report
    lines = report.splitlines()
    images = [i for i, line in enumerate(lines) if line.startswith("![")]
    assert len(images) == 1 + 2 * 2 + 2 + 2 + 2 * 3 * 2  # cost, reliability+curves, UMAP, per-class, confusion+samples
    for i in images:  # every figure has a one-line caption
        assert lines[i + 2].startswith("*") and lines[i + 2].endswith("*"), lines[i]
    html = (p / "plots" / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert len(sources) == len(images)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(src|href)="(?!data:)', html), "report.html must not load anything"


def test_report_html_renders_every_image_in_chromium(repo, chromium):
    from browser import decoded_images

    images = decoded_images(chromium, repo.path / "plots" / "report.html")
    assert len(images) == (repo.path / "plots" / "report.md").read_text().count("\n![")
    bad = [i for i in images if not (i["ok"] and i["width"] > 0 and i["height"] > 0 and i["shown"] > 0)]
    assert not bad, bad


def test_predict_returns_the_class_evaluate_gave(repo, tmp_path):
    """`cifarbench predict` on the test images, saved as PNG files, agrees with evaluate's predictions."""
    script = Path(sys.executable).parent / "cifarbench"
    # every model and both datasets, one predict process each (~6 s apiece: torch and timm imports)
    pairs = {"cifar10": ["resnet18", "dinov2_vitb14"], "cifar100": ["efficientnet_b0", "dinov2_vitb14"]}
    assert {m for ms in pairs.values() for m in ms} == set(MODELS) and set(pairs) == set(DATASETS)
    for d, models in pairs.items():
        folder = tmp_path / d
        folder.mkdir()
        with np.load(repo.path / "data" / d / "test.npz") as f:
            for i, image in enumerate(f["images"]):
                Image.fromarray(image).save(folder / f"{i:05d}.png")
        for m in models:
            evaluated = [row.split(",")[1] for row in
                         (repo.path / "plots" / "confusion" / f"{m}-{d}.csv").read_text().splitlines()[1:]]
            out = repo.run(str(script), "predict", str(folder), "--model", m, "--dataset", d, "--json", "--topk", "1")
            predicted = [r["top"][0]["class"] for r in json.loads(out.stdout)]
            assert len(predicted) == len(evaluated) > 0
            assert predicted == evaluated, f"{m} on {d}"


def test_train_recipe_change_reruns_only_that_model(repo):
    repo.set_param("train.resnet18.lr", 0.02)
    assert repo.stages_run("repro") == model_chain("resnet18")
    repo.commit("resnet18 lr")

    diff = json.loads(repo.dvc("metrics", "diff", "HEAD~1", "HEAD", "--json").stdout)
    changed = {key for changes in diff.values() for key in changes}
    assert changed, "the retrained model's metrics should differ"
    assert all(".resnet18." in key for key in changed), changed


def test_plots_are_declared_for_dvc_plots(repo):
    out = json.loads(repo.dvc("plots", "show", "--json").stdout)
    assert not out.get("errors"), out.get("errors")
    names = set(out["data"])
    for curve in ("CIFAR-10 validation accuracy", "CIFAR-100 validation loss"):
        assert curve in names
        assert out["data"][curve][0]["content"]["data"]["values"], f"{curve} has no points"
    assert {f"plots/confusion/{m}-{d}.csv" for m in MODELS for d in DATASETS} <= names


def test_transfer_change_as_experiment_leaves_cifar10_training_alone(repo):
    ran = repo.stages_run("exp", "run", "-S", "transfer.resnet18.lr=0.001", "--name", "transfer-lr")
    assert ran == model_chain("resnet18", transfer_only=True)
    shown = json.loads(repo.dvc("exp", "show", "--json").stdout)
    text = json.dumps(shown)
    assert "transfer-lr" in text
    exps = [e for commit in shown for e in (commit.get("experiments") or [])
            if e.get("name") == "transfer-lr" or "transfer-lr" in json.dumps(e.get("revs", ""))]
    assert exps, "the experiment is listed by dvc exp show"
    params_text = json.dumps(exps[0])
    assert '"lr": 0.001' in params_text and "top1" in params_text


def queue_states(repo, names):
    """{experiment name: Queued | Running | Success | Failed} from `dvc queue status`."""
    out = repo.dvc("queue", "status").stdout
    return {name: m.group(1) for name in names
            if (m := re.search(rf"^\w+\s+{re.escape(name)}\s.*\b(Queued|Running|Success|Failed)\s*$", out, re.M))}


def test_queued_experiments_run_in_parallel_each_with_its_own_results(repo):
    repo.dvc("repro")  # a no-op after the tests above; queued runs start from the committed dvc.lock
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-q", "--allow-empty", "-m", "before queueing")  # queues see only committed files
    baseline = exp_data(json.loads(repo.dvc("exp", "show", "--json").stdout)[0])  # the workspace, now HEAD
    rates = {"queued-lr-a": 0.001, "queued-lr-b": 0.004}  # the toy ViT's transfer: the cheapest chain to rerun
    for name, lr in rates.items():
        repo.dvc("exp", "run", "--queue", "-S", f"transfer.dinov2_vitb14.lr={lr}", "--name", name)
    # not through repo.dvc: the workers it spawns inherit captured stdout/stderr pipes, and reading
    # those to the end would wait for the workers to finish
    subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", "2"], cwd=repo.path, env=repo.env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    both_running, deadline = False, time.monotonic() + 900
    while (states := queue_states(repo, rates)) and any(s in ("Queued", "Running") for s in states.values()):
        both_running |= all(s == "Running" for s in states.values()) and len(states) == 2
        assert time.monotonic() < deadline, f"the queue did not finish in 15 minutes: {states}"
        time.sleep(5)
    failed = [name for name in rates if states.get(name) != "Success"]
    assert not failed, "\n".join(repo.dvc("queue", "logs", n, check=False).stdout[-3000:] for n in failed)
    assert both_running, "the two workers should run the two experiments at the same time"

    shown = json.loads(repo.dvc("exp", "show", "--json").stdout)
    exps = {e["name"]: exp_data(e["revs"][0]) for commit in shown for e in (commit.get("experiments") or [])
            if e.get("name") in rates}
    assert set(exps) == set(rates), "dvc exp show lists both queued experiments"
    for name, lr in rates.items():
        params, metrics = exps[name]
        assert params["transfer"]["dinov2_vitb14"]["lr"] == lr
        assert metrics["cifar10"] == baseline[1]["cifar10"]  # train-cifar10 was not rerun
        assert metrics["cifar100"]["resnet18"] == baseline[1]["cifar100"]["resnet18"]
        # its own transfer run: new timings at least, usually new accuracies
        assert metrics["cifar100"]["dinov2_vitb14"] != baseline[1]["cifar100"]["dinov2_vitb14"]
    assert exps["queued-lr-a"][1] != exps["queued-lr-b"][1]


def exp_data(entry):
    """(params.yaml, metrics/summary.json) of one `dvc exp show --json` entry."""
    data = entry["data"]
    return data["params"]["params.yaml"]["data"], data["metrics"]["metrics/summary.json"]["data"]


def test_killed_dvc_repro_resumes_from_the_persisted_state(repo):
    """kill -9 of `dvc repro` (and its stage) mid-training; the next `dvc repro` continues the run."""
    import signal
    import time

    import torch

    model = "dinov2_vitb14"
    repo.set_param(f"train.{model}.epochs", 3)
    repo.set_param(f"train.{model}.early_stopping", 0)
    state_path = repo.path / "models" / "cifar10" / f"{model}.state.pt"

    def saved_epoch():
        try:
            state = torch.load(state_path, weights_only=True)
        except (FileNotFoundError, RuntimeError, EOFError):
            return 0
        return 0 if state.get("finished") else state["trainer"]["epoch"]

    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", f"train-cifar10@{model}"], cwd=repo.path,
                            env=repo.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while saved_epoch() < 1:
        assert proc.poll() is None and time.monotonic() < deadline, "the stage ended before it could be killed"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # DVC and the stage script with it
    proc.wait()

    out = repo.dvc("repro", f"train-cifar10@{model}").stdout
    assert "resuming after epoch" in out
    rows = (repo.path / "logs" / "train-cifar10" / model / "plots" / "metrics" / "val" / "acc.tsv").read_text()
    assert len(rows.strip().splitlines()) == 1 + 3
    assert f"train-cifar10@{model}" not in repo.dvc("status", f"train-cifar10@{model}").stdout.replace(
        "Data and pipelines are up to date.", "")
