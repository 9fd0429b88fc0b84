"""What each kind of change reruns, through the real DVC CLI, on a copy of the end-to-end repo (tests/e2e_repo.py:
two models, its full `dvc repro` done and committed).

Code edits rerun only the stages whose code they touch; a transfer-recipe change run as `dvc exp run -S` reruns
exactly that model's transfer chain and shows in `dvc exp show`, `dvc metrics diff` and `dvc plots diff`; every
spelling `-S` writes loads; a tuning grid change reruns the tunings, then only the trainings whose tuning changed; a
longer seed list would run only the new seeds' chains; speed settings rerun nothing, and an edit that changes no
number reruns a training without training (or is accepted with `dvc commit`); a registry of one model runs; last, a
`dvc repro` killed with SIGKILL mid-training resumes and writes the uninterrupted checkpoint byte for byte, so
nothing after it reruns. (The queued sweep under `dvc queue start -j 2` is tests/test_compare.py's, whose
comparisons need one.)
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from dvc_repo import stages_for
from e2e_repo import ALL_STAGES, FOURTH, MODELS, SEED, TUNE, VIT, VIT_EPOCHS, chain, repo_copy, stages_changed

from cifarbench.paths import DATASETS


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return repo_copy(tmp_path_factory, "reruns")[0]


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
