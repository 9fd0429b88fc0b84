"""Interrupted training resumes exactly; NaN stops cleanly; a changed recipe starts fresh.

The stage scripts run as real processes in a scratch project folder and are
killed with real signals in their second epoch, after its first optimizer step
(tests/stop_in_second_epoch.py: the stage's own process sends the signal, at the
same place on any machine, with SIGINT handled as from a terminal even when the
suite runs in the background, where SIGINT is ignored); the run that resumes
from what the stopped process left on disk runs in the test's process. Exact resumption is
checked for each kind of state a run carries: a LayerNorm ViT (optimizer and
RNG state), a BatchNorm CNN (running statistics as well as weights) and the
transfer stage with frozen blocks (a model built from a checkpoint, parameters
the optimizer never sees, modules kept in eval mode while the rest trains).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_stage_here, tiny_params, write_params

from cifarbench import paths

MODEL = "dinov2_vitb14"  # the tiny ViT: the fastest epochs
SEED = 0
EPOCHS = 3
DETERMINISTIC_LOGS = ("train/loss", "train/acc", "val/loss", "val/acc", "lr")


@dataclass(frozen=True)
class Case:
    """A training stage to interrupt: the model it trains and the dataset it trains on."""

    model: str
    dataset: str  # cifar10: the train stage; cifar100: the transfer stage (from the ViT's cifar10 checkpoint)
    epochs: int = EPOCHS  # the kill lands in epoch 2; a third then follows the resumed one

    @property
    def section(self):
        return {"cifar10": "train", "cifar100": "transfer"}[self.dataset]

    @property
    def script(self):
        return f"{self.section}_{self.dataset}.py"

    @property
    def state(self):
        """The resumable state, relative to the project folder: written at the end of every epoch."""
        return paths.training_state(self.dataset, self.model, SEED)

    def resume(self, folder):
        """The stage run again after a stop, in this process (its stdout): what resumes is the state the stopped
        process left on disk, and the run reaches it as a fresh process does (the uninterrupted references run here
        too, and every comparison is bit for bit)."""
        return here(folder, self.script, self.model, str(SEED))

    def start_and_stop_in_epoch_2(self, folder, sig):
        """The stage, sent `sig` (a signal, or the launcher's OutOfMemoryError) by its own process just after
        epoch 2's first optimizer step."""
        name = getattr(sig, "name", sig)
        launcher = (sys.executable, str(ROOT / "tests" / "stop_in_second_epoch.py"), name, str(self.state))
        return stage(folder, self.script, self.model, str(SEED), launcher=launcher)

    def evaluate(self, folder):
        here(folder, "evaluate.py", self.model, self.dataset, str(SEED))


VIT_TRAIN = Case(MODEL, "cifar10")
CASES = {
    "layernorm-vit-train": VIT_TRAIN,
    "batchnorm-cnn-train": Case("resnet18", "cifar10", epochs=2),  # its epochs are the slowest
    "frozen-vit-transfer": Case(MODEL, "cifar100"),  # the tiny params freeze the stem and 1 of the 2 blocks
}


def project_params(folder, **extra):
    """One params.yaml for every case: its epochs, no early stopping (dotted keys with __ in `extra`)."""
    recipes = {
        f"{c.section}__{c.model}__{key}": value
        for c in CASES.values()
        for key, value in (("epochs", c.epochs), ("early_stopping", 0))
    }
    # ResNet-18 at 16 px: a third less time per epoch, the same BatchNorm layers (the last at 1x1)
    write_params(folder, tiny_params(**{**recipes, "models__resnet18__img_size": 16, **extra}))


def stage(folder, script, *args, launcher=(sys.executable,), **popen):
    cmd = [*launcher, str(ROOT / "stages" / script), *args]
    return subprocess.Popen(
        cmd,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        **popen,
    )


def here(folder, script, *args):
    """A stage run in this process (conftest.run_stage_here) where what is tested is not its process: the
    uninterrupted references, the runs that resume, the downloads, the evaluations. Stopped runs are processes
    (a signal ends a process), and so are the runs of the project copy whose code is edited."""
    done = run_stage_here(folder, script, *args)
    assert done.returncode == 0, f"{script} {args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"{proc.args} failed:\n{out[-2000:]}\n{err[-2000:]}"
    return out


def saved_epoch(folder, case=VIT_TRAIN):
    path = folder / case.state
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    return 0 if state.get("finished") else state["trainer"]["epoch"]


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    """One prepared data folder, copied by each test (the download stage once, not per test)."""
    folder = tmp_path_factory.mktemp("resume") / "template"
    folder.mkdir()
    project_params(folder)
    for dataset in ("cifar10", "cifar100"):  # evaluate scores the other dataset's test images as OOD
        here(folder, "download.py", dataset)
    return folder


def make_project(template, folder, **extra):
    shutil.copytree(template, folder)
    if extra:
        project_params(folder, **extra)
    return folder


@pytest.fixture(scope="module")
def projects(downloaded, tmp_path_factory):
    """Per case, made once for the module: `ready(case)`, a folder the stage can start in, and
    `uninterrupted(case)`, that folder after one uninterrupted run of the stage (and, for the ViT, its evaluation)."""
    root = tmp_path_factory.mktemp("resume")
    ready, done = {}, {}

    def get_ready(case):
        if case.dataset == "cifar10":
            return downloaded
        if case not in ready:  # the transfer stage starts from the uninterrupted ViT's CIFAR-10 checkpoint
            folder = make_project(get_uninterrupted(Case(case.model, "cifar10")), root / f"{case.model}-ready")
            here(folder, "download.py", case.dataset)
            ready[case] = folder
        return ready[case]

    def get_uninterrupted(case):
        if case not in done:
            folder = make_project(get_ready(case), root / f"{case.dataset}-{case.model}-uninterrupted")
            here(folder, case.script, case.model, str(SEED))
            if case == VIT_TRAIN:  # the one case whose metrics are compared
                case.evaluate(folder)
            done[case] = folder
        return done[case]

    return get_ready, get_uninterrupted


def training_logs(folder, case=VIT_TRAIN):
    logs = folder / paths.train_log(case.dataset, case.model, SEED) / "plots" / "metrics"
    return {name: (logs / f"{name}.tsv").read_bytes() for name in DETERMINISTIC_LOGS}


def best_weights(folder, case=VIT_TRAIN):
    return torch.load(folder / paths.checkpoint(case.dataset, case.model, SEED), weights_only=True)["state_dict"]


def assert_same_weights(ours, reference):
    """Parameters and buffers (BatchNorm's running statistics and batch counts), bit for bit."""
    assert ours.keys() == reference.keys()
    different = [k for k in ours if not torch.equal(ours[k], reference[k])]
    assert not different, f"tensors differ after resuming: {different[:5]}"


def kill_after_first_epoch(folder, sig, case=VIT_TRAIN):
    """The stage stopped by `sig` in its second epoch, after that epoch's first optimizer step."""
    proc = case.start_and_stop_in_epoch_2(folder, sig)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == -sig, f"{proc.args} exited {proc.returncode}, not by {sig.name}:\n{err[-2000:]}"
    assert saved_epoch(folder, case) == 1
    return out


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_kill_9_then_rerun_gives_bit_identical_weights_logs_and_metrics(projects, tmp_path, case):
    """Weights (parameters and buffers) and training logs equal the uninterrupted run's for every kind of state;
    the ViT's evaluate metrics too, byte for byte (evaluate is a function of the weights: one case shows it, each
    evaluation is a process of its own)."""
    ready, uninterrupted = projects
    reference = uninterrupted(case)
    folder = make_project(ready(case), tmp_path / "killed")
    first_out = kill_after_first_epoch(folder, signal.SIGKILL, case)
    if case.dataset == "cifar100":
        assert "frozen: stem + 1 of 2 blocks" in first_out  # the case really has frozen blocks
    out = case.resume(folder)
    assert "resuming after epoch" in out
    if case == VIT_TRAIN:
        case.evaluate(folder)
        for metrics in (
            paths.evaluation(case.model, case.dataset, SEED),
            paths.per_image(case.model, case.dataset, SEED),
        ):
            assert (folder / metrics).read_bytes() == (reference / metrics).read_bytes()
    assert training_logs(folder, case) == training_logs(reference, case)
    assert_same_weights(best_weights(folder, case), best_weights(reference, case))
    rows = folder / paths.train_log(case.dataset, case.model, SEED) / "plots" / "metrics" / "val" / "acc.tsv"
    assert len(rows.read_text().strip().splitlines()) == 1 + case.epochs  # header + one row per epoch, none repeated


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_terminated_or_interrupted_run_resumes_exactly_under_changed_speed_settings(projects, tmp_path, sig):
    ready, uninterrupted = projects
    folder = make_project(ready(VIT_TRAIN), tmp_path / "stopped")
    kill_after_first_epoch(folder, sig)
    # speed settings changed before resuming: they change no number, so the state still belongs to the run
    project_params(folder, compute__eval_batch_size=17, compute__compile=False, **{f"train__{MODEL}__compile": False})
    assert "resuming after epoch" in VIT_TRAIN.resume(folder)
    reference = uninterrupted(VIT_TRAIN)
    assert training_logs(folder) == training_logs(reference)
    assert_same_weights(best_weights(folder), best_weights(reference))
    assert not list((folder / "models" / "cifar10").glob(".*.tmp"))  # temporary files cleaned up


def test_changed_recipe_does_not_resume(downloaded, tmp_path):
    folder = make_project(downloaded, tmp_path / "changed")
    kill_after_first_epoch(folder, signal.SIGKILL)
    project_params(folder, **{f"train__{MODEL}__lr": 5e-4})
    out = here(folder, "train_cifar10.py", MODEL, str(SEED))
    assert "belongs to another recipe" in out and "resuming" not in out
    assert out.count("epoch ") >= EPOCHS


def test_finished_run_writes_its_outputs_again_without_training(downloaded, tmp_path):
    """Rerun after it finished (as DVC reruns it when a file it lists changed, removing the logs and the cost but
    not the checkpoint, a persist output): the same outputs again from the finished record, no epoch trained;
    with its checkpoint gone, it trains again."""
    folder = make_project(
        downloaded, tmp_path / "finished", **{f"train__{MODEL}__epochs": 1, f"train__{MODEL}__warmup_epochs": 0}
    )
    first = here(folder, "train_cifar10.py", MODEL, str(SEED))
    assert "epoch   1" in first
    logs, cost = folder / paths.train_log("cifar10", MODEL, SEED), folder / paths.train_cost("cifar10", MODEL, SEED)
    assert cost.parent == logs  # DVC removes the log folder, the cost file with it, before rerunning the stage
    written = {p.relative_to(folder): p.read_bytes() for p in sorted(logs.rglob("*")) if p.is_file()}
    checkpoint = (folder / paths.checkpoint("cifar10", MODEL, SEED)).read_bytes()
    state = torch.load(folder / paths.training_state("cifar10", MODEL, SEED), weights_only=True)
    assert state["finished"] and not any(isinstance(v, torch.Tensor) for v in state.values())  # no tensors kept
    shutil.rmtree(logs)

    out = here(folder, "train_cifar10.py", MODEL, str(SEED))
    assert "finished before: its outputs are written again from the saved state, without training" in out
    assert "epoch   1" not in out
    assert {p.relative_to(folder): p.read_bytes() for p in sorted(logs.rglob("*")) if p.is_file()} == written
    assert (folder / paths.checkpoint("cifar10", MODEL, SEED)).read_bytes() == checkpoint

    (folder / paths.checkpoint("cifar10", MODEL, SEED)).unlink()
    out = here(folder, "train_cifar10.py", MODEL, str(SEED))
    assert "is missing or changed since: training again" in out and "epoch   1" in out


def test_an_edit_that_changes_no_number_keeps_the_state_and_an_engine_edit_trains_again(projects, tmp_path):
    """In a copy of the project (its package on PYTHONPATH): killed in epoch 2, an error message reworded
    (errors.py, left out of the fingerprint: sourcefiles.NO_NUMBERS), the run resumes and ends as an
    uninterrupted one; then, finished, SLURM plumbing edited: its outputs again without training; then the
    training loop edited: it trains from scratch."""
    from dvc_repo import copy_project

    ready, uninterrupted = projects
    project = tmp_path / "project"
    copy_project(project)
    for item in ("data", "recipes", "metrics", "params.yaml"):
        source = ready(VIT_TRAIN) / item
        shutil.copytree(source, project / item) if source.is_dir() else shutil.copy2(source, project / item)
    script = project / "stages" / VIT_TRAIN.script
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(project))  # the copy's package, not the checkout's

    def run(launcher=(sys.executable,)):
        return subprocess.Popen(
            [*launcher, str(script), MODEL, str(SEED)],
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def edit(rel):
        with open(project / rel, "a") as f:
            f.write("# an edit\n")

    killed = run((sys.executable, str(ROOT / "tests" / "stop_in_second_epoch.py"), "SIGKILL", str(VIT_TRAIN.state)))
    killed.communicate(timeout=600)
    assert killed.returncode == -signal.SIGKILL and saved_epoch(project) == 1
    edit("cifarbench/errors.py")
    assert "resuming after epoch 1" in finish(run())
    reference = uninterrupted(VIT_TRAIN)
    assert training_logs(project) == training_logs(reference)
    assert_same_weights(best_weights(project), best_weights(reference))

    edit("cifarbench/runtime/slurm.py")
    out = finish(run())
    assert "its outputs are written again from the saved state, without training" in out and "epoch " not in out

    edit("cifarbench/train/engine.py")
    out = finish(run())
    assert "belongs to another recipe, data or code, starting fresh" in out
    assert out.count("epoch ") >= EPOCHS


def test_nan_loss_stops_keeping_the_last_good_epoch(downloaded, tmp_path, monkeypatch):
    """A loss that turns NaN in epoch 2: clear error, epoch 1's checkpoint and state stay, no summary."""
    from cifarbench import params
    from cifarbench.pipeline import entry, train
    from cifarbench.runtime import device as runtimelib
    from cifarbench.train import engine

    folder = make_project(downloaded, tmp_path / "nan")
    monkeypatch.chdir(folder)
    p = params.load()
    spec, recipe = p.model(MODEL), p.recipe("train", MODEL)
    steps_per_epoch = None
    calls = {"n": 0}
    real_cross_entropy = engine.F.cross_entropy

    def poisoned(logits, target, **kwargs):
        loss = real_cross_entropy(logits, target, **kwargs)
        if kwargs.get("label_smoothing") is not None:  # training steps only
            calls["n"] += 1
            if calls["n"] == steps_per_epoch + 3:  # third step of epoch 2
                return loss * float("nan")
        return loss

    meta_train = json.loads(Path("data/cifar10/meta.json").read_text())["counts"]["train"]
    steps_per_epoch = meta_train // recipe.batch_size
    monkeypatch.setattr(engine.F, "cross_entropy", poisoned)
    from cifarbench.errors import BenchError
    from cifarbench.models import timm_models

    torch.manual_seed(0)
    model = timm_models.create(spec, num_classes=10)
    s = entry.Stage(p, MODEL, None, SEED, runtimelib.resolve(p.compute), str(ROOT / "stages" / "train_cifar10.py"))
    with pytest.raises(BenchError, match=r"NaN or infinite at epoch 2, step 3:"):
        train.run(s, "train-cifar10", model)
    ckpt = torch.load(paths.checkpoint("cifar10", MODEL, SEED), weights_only=True)
    assert ckpt["epoch"] == 1 and all(
        torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()
    )
    assert saved_epoch(folder) == 1
    summary = json.loads((paths.train_log("cifar10", MODEL, SEED) / "metrics.json").read_text())
    assert "best_val_acc" not in summary  # the run's summary metrics are never written


def test_out_of_memory_stops_in_one_line_and_keeps_the_saved_state(projects, tmp_path):
    """torch's out-of-memory error in epoch 2: one line naming the model, the batch, the memory and the fix;
    the state epoch 1 saved is left byte for byte, and a rerun resumes from it."""
    ready, _ = projects
    folder = make_project(ready(VIT_TRAIN), tmp_path / "full")
    proc = VIT_TRAIN.start_and_stop_in_epoch_2(folder, "OutOfMemoryError")
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert len(err.strip().splitlines()) == 1, err  # no traceback
    assert line.startswith(f"error: out of memory training {MODEL} at batch size 32 in train-cifar10 on the CPU's ")
    assert " GiB; lower train.dinov2_vitb14.batch_size " in line and "compute.devices" in line
    assert line.endswith("; the saved state of epoch 1 is kept"), line
    state = folder / VIT_TRAIN.state
    assert state.read_bytes() == (folder / f"{VIT_TRAIN.state}.before").read_bytes()
    assert "resuming after epoch 1" in VIT_TRAIN.resume(folder)
