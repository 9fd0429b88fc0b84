"""The tune stage on its own: what a trial may read, a diverged trial, a killed trial, a stale tuning file.

The tiny ViT on the digits stand-in, 240 training and 60 validation images. The reference tuning runs
once; a tuning whose test split has other labels and images chooses the same (the trials never read it),
byte for byte, and so does a tuning killed with SIGKILL inside a trial and run again (it resumes that
trial). A trial whose loss turns NaN scores as the worst and the other trials go on; when every trial
diverges the stage stops with one line. A training refuses a tuning file written for other params, and
with tuning off the file holds the recipe's values whatever the grid. The pipeline-level behaviour (the
choice used by the training and the report) is tests/test_pipeline_dvc.py's; what a grid change reruns,
tests/test_pipeline_reruns.py's.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, dump, run_stage_here, tiny_params

from cifarbench import paths

VIT = "dinov2_vitb14"
STAGE = "train-cifar10"
GRID = [0.5, 1.0, 2.0]
EPOCHS = 30  # a trial long enough (~2 s) to be killed inside


def vit_params(**extra):
    tuning = {"tune__enabled": True, "tune__epochs": EPOCHS, "tune__lr_scale": GRID}
    raw = tiny_params(data__limit=300, **{**tuning, **extra})
    for key in [k for k in raw["models"] if k != VIT]:
        del raw["models"][key]
        for section in ("train", "transfer"):
            raw[section].pop(key, None)
    raw["train"][VIT].update(lr=3e-3, warmup_epochs=1)
    return raw


def record(folder):
    return (folder / paths.tuning(STAGE, VIT)).read_bytes()


def tune(folder):
    proc = run_stage_here(folder, "tune.py", VIT, "cifar10")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A project with the CIFAR-10 stand-in downloaded and the recipes resolved; no trial has run."""
    folder = tmp_path_factory.mktemp("tune") / "prepared"
    folder.mkdir()
    (folder / "params.yaml").write_text(dump(vit_params()))
    for script, *args in (("download.py", "cifar10"), ("recipes.py",)):
        assert run_stage_here(folder, script, *args).returncode == 0
    return folder


@pytest.fixture(scope="module")
def tuned_folder(prepared, tmp_path_factory):
    """A project folder after an uninterrupted tuning."""
    folder = tmp_path_factory.mktemp("reference") / "project"
    shutil.copytree(prepared, folder)
    out = tune(folder)
    assert out.count("no saved state") == len(GRID)
    return folder


@pytest.fixture(scope="module")
def reference(tuned_folder):
    """The tuning file of an uninterrupted tuning."""
    return record(tuned_folder)


def copy_of(prepared, tmp_path, name="project"):
    folder = tmp_path / name
    shutil.copytree(prepared, folder)
    return folder


def test_the_trials_learn_and_the_best_validation_score_is_chosen(tuned_folder, reference):
    from cifarbench.pipeline import tune as tunelib

    tuned = json.loads(reference)
    scores = [t["val_top1"] for t in tuned["trials"]]
    assert len(tuned["trials"]) == len(GRID) and all(not t["diverged"] for t in tuned["trials"])
    past_best = 0
    for trial in tuned["trials"]:  # a trial's score is its best epoch's, not its last's
        state = torch.load(tuned_folder / tunelib.trial_state(STAGE, VIT, trial), weights_only=True)
        history = [epoch["val_acc"] for epoch in state["history"]]
        assert state["finished"] and len(history) == EPOCHS and trial["val_top1"] == max(history)
        past_best += history[-1] < max(history)
    assert past_best, "every trial ended at its best epoch: the check above tells best from last apart only if not"
    assert max(scores) >= 0.3, scores  # 10 classes: a trial that learns, not a tie at chance
    best = max(range(len(GRID)), key=lambda i: (scores[i], -abs(np.log(GRID[i]))))
    assert tuned["chosen"]["lr_scale"] == GRID[best] and tuned["chosen"]["val_top1"] == scores[best]


def test_the_test_split_is_never_read(prepared, reference, tmp_path):
    """Other test labels and images: the same trials, scores and choice, byte for byte. dvc.yaml's tune stages
    do not list the test split either."""
    folder = copy_of(prepared, tmp_path)
    test = folder / "data" / "cifar10" / "test.npz"
    with np.load(test) as f:
        arrays = dict(f)
    rng = np.random.default_rng(1)
    arrays["labels"] = rng.permutation(arrays["labels"])
    arrays["images"] = rng.integers(0, 256, arrays["images"].shape, dtype=arrays["images"].dtype)
    with open(test, "wb") as f:
        np.savez(f, **arrays)
    tune(folder)
    assert record(folder) == reference
    pipeline = (ROOT / "dvc.yaml").read_text()
    for stage in ("tune-cifar10", "tune-cifar100"):
        block = pipeline[pipeline.index(f"  {stage}:") :].split("\n\n")[0]
        assert "test.npz" not in block and "params:" in block, block


def unfinished_epoch(folder):
    """The epoch of a trial's saved state that has not finished, 0 while there is none."""
    for state in (folder / paths.tuning_trials(STAGE, VIT)).glob("*.state.pt"):
        try:
            saved = torch.load(state, weights_only=True)
        except (RuntimeError, EOFError):
            continue  # being written
        if not saved.get("finished"):
            return saved["trainer"]["epoch"]
    return 0


def test_a_killed_tuning_resumes_inside_its_trial_and_chooses_as_an_uninterrupted_one(prepared, reference, tmp_path):
    folder = copy_of(prepared, tmp_path)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "stages" / "tune.py"), VIT, "cifar10"],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while unfinished_epoch(folder) < 1:
        assert proc.poll() is None and time.monotonic() < deadline, "the tuning ended before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= unfinished_epoch(folder) < EPOCHS and not (folder / paths.tuning(STAGE, VIT)).exists()
    out = tune(folder)
    assert "resuming after epoch" in out
    assert record(folder) == reference


def test_a_diverged_trial_scores_the_worst_and_the_others_go_on(prepared, tmp_path):
    folder = copy_of(prepared, tmp_path)
    (folder / "params.yaml").write_text(dump(vit_params(tune__lr_scale=[1.0, 1e9], tune__epochs=2)))
    out = tune(folder)
    assert "trial 2: training loss is NaN or infinite at epoch 1" in out and "scored as the worst" in out
    tuned = json.loads(record(folder))
    assert [t["diverged"] for t in tuned["trials"]] == [False, True]
    assert tuned["trials"][1]["val_top1"] == 0.0 and tuned["chosen"]["lr_scale"] == 1.0
    index = json.loads((folder / paths.tuning_index(STAGE, VIT)).read_text())["trials"]  # which state is which
    assert [(t["lr"], t["diverged"]) for t in index] == [(t["lr"], t["diverged"]) for t in tuned["trials"]]
    assert all((folder / paths.tuning_trials(STAGE, VIT) / t["state"]).is_file() for t in index)
    out = tune(folder)  # the diverged trial is a result: a rerun does not train it again
    assert out.count("without training") == 2

    (folder / "params.yaml").write_text(dump(vit_params(tune__lr_scale=[1e9], tune__epochs=2)))
    (folder / paths.tuning(STAGE, VIT)).unlink()
    proc = run_stage_here(folder, "tune.py", VIT, "cifar10")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "every trial of dinov2_vitb14's train-cifar10 tuning diverged" in proc.stderr
    assert "use smaller tune.lr_scale factors" in proc.stderr
    assert not (folder / paths.tuning(STAGE, VIT)).exists()


def test_a_training_refuses_a_tuning_file_of_other_params(prepared, reference, tmp_path):
    folder = copy_of(prepared, tmp_path)
    target = folder / paths.tuning(STAGE, VIT)
    target.parent.mkdir(parents=True)
    target.write_bytes(reference)
    (folder / "params.yaml").write_text(dump(vit_params(tune__lr_scale=[1.0, 3.0])))
    proc = run_stage_here(folder, "train_cifar10.py", VIT, "0")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert (
        f"{paths.tuning(STAGE, VIT)} is out of date with params.yaml (its recipe, seed or tune: changed)" in proc.stderr
    )
    assert f"dvc repro -f tune-cifar10@{VIT}" in proc.stderr
    assert target.read_bytes() == reference and not (folder / paths.checkpoint("cifar10", VIT, 0)).exists()


def test_with_tuning_off_the_recipe_stands_whatever_the_grid(prepared, tmp_path):
    folder = copy_of(prepared, tmp_path)
    written = []
    for grid in ([0.5, 1.0], [3.0]):
        (folder / "params.yaml").write_text(dump(vit_params(tune__enabled=False, tune__lr_scale=grid)))
        assert "tuning off (tune.enabled: false): the recipe's lr 0.003 stands" in tune(folder)
        written.append(record(folder))
    assert written[0] == written[1]  # so a grid change reruns no training while tuning is off
    assert json.loads(written[0]) == {
        "enabled": False,
        "recipe": {"lr": 3e-3, "weight_decay": 0.05},
        "trials": [],
        "chosen": {"lr": 3e-3, "weight_decay": 0.05},
    }
    assert not any((folder / paths.tuning_trials(STAGE, VIT)).glob("*.state.pt"))  # nothing trained
    assert json.loads((folder / paths.tuning_index(STAGE, VIT)).read_text()) == {"trials": []}


def test_a_tie_goes_to_the_factors_nearest_the_recipes_own():
    from cifarbench.pipeline.tune import choose

    def trial(lr, decay, top1, diverged=False):
        return {"lr_scale": lr, "weight_decay_scale": decay, "val_top1": top1, "diverged": diverged}

    assert choose([trial(0.3, 1, 0.5), trial(1, 1, 0.5), trial(3, 1, 0.4)])["lr_scale"] == 1
    assert choose([trial(3, 1, 0.5), trial(0.3, 1, 0.5)])["lr_scale"] == 3  # nearer on the log scale
    assert choose([trial(2, 1, 0.5), trial(0.5, 1, 0.5)])["lr_scale"] == 2  # as near: grid order
    assert choose([trial(1, 0, 0.5), trial(1, 3, 0.5)])["weight_decay_scale"] == 3  # no weight decay is farthest
    assert choose([trial(1, 1, 0.0, diverged=True), trial(3, 1, 0.0)])["lr_scale"] == 3  # a diverged trial never
    assert choose([trial(1, 1, 0.0, diverged=True)]) is None


def test_a_trial_runs_the_recipes_schedule_compressed_to_its_epochs():
    from cifarbench import params as paramslib
    from cifarbench.pipeline import tune, tuned

    raw = vit_params(tune__epochs=3)
    raw["train"][VIT].update(schedule="multistep", epochs=12, warmup_epochs=4, decay_milestones=[6, 9], decay_epochs=4)
    p = paramslib.parse(raw)
    [point, *_] = tuned.grid(p, STAGE, VIT)
    recipe = tune.trial_recipe(p, STAGE, VIT, point)
    assert (recipe.epochs, recipe.warmup_epochs, recipe.decay_milestones, recipe.decay_epochs) == (3, 2, [2], 1)
    assert recipe.lr == point["lr"] == 0.5 * 3e-3 and recipe.optimizer == "adamw"
