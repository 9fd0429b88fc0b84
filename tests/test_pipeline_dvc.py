"""End to end through the real DVC CLI: the project copied into a fresh git repo, tiny params.

One module-scoped repo walks through the contract in order: a full repro makes
every output; a second repro runs nothing; a train-recipe change reruns exactly
that model's chain; `dvc metrics diff` then shows only that model; a transfer
change run as `dvc exp run -S` leaves train-cifar10 alone and shows up in
`dvc exp show`; last, two variants queued with `dvc exp run --queue -S` run
side by side under `dvc queue start -j 2`, each with its own results.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

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
            for fig in (f"confusion-{m}-{d}", f"umap-{m}-{d}"):
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
