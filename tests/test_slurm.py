"""Past one machine, on a real two-node SLURM cluster on this host (tests/slurm_cluster.py).

Through the cluster: a training stage with compute.nodes 2 (srun, one torchrun
agent per node, c10d rendezvous, gloo over loopback) ends at the weights one
process reaches at the same global batch, and says it ran on 2 nodes; a stage
asking for more nodes than its allocation has, or run outside one, stops with
one line; a 2-node job cancelled mid-training (scancel) and submitted again
resumes, and ends with the uninterrupted run's weights bit for bit; a sweep
submitted with `cifarbench sweep --slurm --wait` runs one array task per
value, a cancelled task is named with its log and rerun alone with the
printed `sbatch --array=<i>`, and a fresh clone elsewhere gathers both
experiments with `dvc exp pull` (params and metrics in `dvc exp show`) and
restores one's checkpoint from the DVC remote. Without the cluster: each bad
sweep input is one line and exit status 2, and sbatch is never called; the
resume fingerprint ignores where the ranks run.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import slurm_cluster
import torch
from conftest import ROOT, dump, run_stage_here, tiny_params, write_params

from cifarbench import cli, paths
from cifarbench import params as paramslib
from cifarbench.data import transforms
from cifarbench.train import resume

MODEL = "dinov2_vitb14"  # the tiny ViT: LayerNorm only, so 2 ranks compute what 1 process does
SEED = 0
VENV_BIN = str(Path(sys.executable).parent)
# stage processes import this checkout's package (not whichever one is installed); 2 processes share 2 cores
STAGE_ENV = dict(
    os.environ,
    PATH=VENV_BIN + os.pathsep + os.environ["PATH"],
    PYTHONPATH=str(ROOT),
    OMP_NUM_THREADS="1",
    PYTHONUNBUFFERED="1",
)
# The global batch 16 (8 per rank), no augmentation (its draws are per rank). SHORT (240 images, 2 epochs: 30
# AdamW steps) for 2 nodes against 1 process: AdamW divides each step by the gradient's running size, so the
# rounding of sums made in another order grows over hundreds of steps (5e-5 after 180). LONG (576 images,
# 3 epochs: two epochs' time to cancel it in after the first is saved) for a job to cancel mid-run, against a
# run of the same world size (2), bit for bit.
SHORT = {"limit": 300, "epochs": 2}
LONG = {"limit": 720, "epochs": 3}


def params(case, **extra):
    recipe = {"batch_size": 16, "epochs": case["epochs"], "warmup_epochs": 0}
    recipe["augment"] = {"crop_padding": 0, "flip": False, "jitter": 0.0}
    return tiny_params(data__limit=case["limit"], **{f"train__{MODEL}": recipe}, **extra)


@pytest.fixture(scope="module")
def cluster():
    found, reason = slurm_cluster.start()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (.ci/run installs them: check its apt-get step)")
        pytest.skip(reason)
    found.env.update(
        PATH=VENV_BIN + os.pathsep + found.env["PATH"],  # jobs run this environment's python, dvc and torchrun
        PYTHONPATH=str(ROOT),  # and this checkout's package
        GLOO_SOCKET_IFNAME="lo",  # both "nodes" are this host
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    yield found
    found.stop()


def submit(cluster, folder, nodes, log, command=None):
    """The training stage (or `command`) in `sbatch -N <nodes>`, in folder; the job id."""
    out = cluster.run(
        *("sbatch", "--parsable", f"--nodes={nodes}", f"--chdir={folder}", f"--output={folder / log}"),
        *("--wrap", " ".join(command or train_command())),
    )
    return out.strip().split(";")[0]


def train_command():
    return ["python", str(ROOT / "stages" / "train_cifar10.py"), MODEL, str(SEED)]


def train_here(folder):
    """The training stage run directly (no SLURM) in a process of its own: its stdout."""
    proc = subprocess.run(train_command(), cwd=folder, capture_output=True, text=True, env=STAGE_ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def weights(folder):
    ckpt = torch.load(folder / paths.checkpoint("cifar10", MODEL, SEED), weights_only=True)
    return ckpt["epoch"], ckpt["state_dict"]


def saved_epoch(folder):
    try:
        state = torch.load(folder / paths.training_state("cifar10", MODEL, SEED), weights_only=True)
    except (FileNotFoundError, RuntimeError, EOFError):
        return 0
    return 0 if state.get("finished") else state["trainer"]["epoch"]


def training_logs(folder):
    logs = folder / paths.train_log("cifar10", MODEL, SEED) / "plots" / "metrics"
    return {name: (logs / f"{name}.tsv").read_bytes() for name in ("train/loss", "train/acc", "val/loss", "lr")}


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    """{case name: a project folder with the CIFAR-10 stand-in downloaded and params for 2 nodes}."""
    root = tmp_path_factory.mktemp("slurm")
    out = {}
    for name, case in (("short", SHORT), ("long", LONG)):
        folder = out[name] = root / name
        folder.mkdir()
        write_params(folder, params(case, compute__nodes=2))
        assert run_stage_here(folder, "download.py", "cifar10").returncode == 0  # in this process: no srun here
    return out


def project(template, folder, case=None, **extra):
    """A copy of a prepared folder, with other params if `extra` says so."""
    shutil.copytree(template, folder)
    if extra:
        write_params(folder, params(case, **extra))
    return folder


def test_two_nodes_train_as_one_process(cluster, downloaded, tmp_path):
    folder = project(downloaded["short"], tmp_path / "two-nodes")
    cluster.wait(submit(cluster, folder, 2, "job.log"), timeout=300)
    log = (folder / "job.log").read_text()
    assert "x 2 processes on 2 nodes (n1, n2; SLURM job " in log, log
    assert log.count(f"epoch   {SHORT['epochs']} ") == 1, log  # rank 0 alone prints and writes
    cost = json.loads((folder / paths.train_cost("cifar10", MODEL, SEED)).read_text())
    assert cost["processes"] == 2 and cost["nodes"] == 2
    one = project(downloaded["short"], tmp_path / "one-process", SHORT, compute__nodes=1)
    with transforms.one_cpu_thread("cpu"):  # one thread, as each rank has (OMP_NUM_THREADS=1), whatever this worker's
        alone = run_stage_here(one, "train_cifar10.py", MODEL, str(SEED))  # one plain process: this one
    assert alone.returncode == 0 and " processes" not in alone.stdout, alone.stderr[-2000:]
    (epoch_two, two), (epoch_one, reference) = weights(folder), weights(one)
    assert epoch_two == epoch_one == SHORT["epochs"]  # the last epoch is the best: all 30 steps compared
    difference = max((two[k] - reference[k]).abs().max().item() for k in reference)
    print(f"largest weight difference, 2 nodes against 1 process: {difference:.2e}")
    torch.testing.assert_close(two, reference)  # float32 rounding: the sums run in another order
    assert all(not torch.equal(two[k], reference[k]) for k in ["head.weight"])  # two runs, not one file twice


def test_too_few_nodes_no_allocation_or_a_worker_error_is_one_line(cluster, downloaded, tmp_path):
    folder = downloaded["short"]  # compute.nodes 2, never trained in
    job = submit(cluster, folder, 1, "one-node.log")
    no_data = tmp_path / "no-data"  # a worker's error, on both nodes, comes back as the stage's one line
    no_data.mkdir()
    write_params(no_data, params(SHORT, compute__nodes=2))
    failing = submit(cluster, no_data, 2, "job.log")
    cluster.wait(job, timeout=120)
    lines = [line for line in (folder / "one-node.log").read_text().splitlines() if line.strip()]
    assert lines == [
        f"error: compute.nodes is 2, but SLURM job {job} has 1 node (n1): submit it with "
        "`sbatch -N 2 --wrap 'dvc repro'` (or salloc -N 2), or set compute.nodes: 1"
    ]
    cluster.wait(failing, timeout=300)
    lines = (no_data / "job.log").read_text().splitlines()
    assert [line for line in lines if "error" in line.lower() or "Traceback" in line] == [
        "error: data/cifar10/meta.json is missing: run `dvc repro download@cifar10` first"
    ], lines
    proc = run_stage_here(folder, "train_cifar10.py", MODEL, str(SEED))  # outside any allocation
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.splitlines() == [
        "error: compute.nodes is 2, but this runs outside a SLURM allocation (no SLURM_JOB_ID): submit it with "
        "`sbatch -N 2 --wrap 'dvc repro'` (or salloc -N 2), or set compute.nodes: 1"
    ]


def test_cancelled_job_submitted_again_resumes(cluster, downloaded, tmp_path):
    """scancel mid-training, sbatch again: it resumes, and ends where an uninterrupted run of the same world
    size ends (2 processes on 1 node: placement is not part of the state), bit for bit."""
    folder = project(downloaded["long"], tmp_path / "cancelled")
    job = submit(cluster, folder, 2, "first.log")
    deadline = time.monotonic() + 300
    while saved_epoch(folder) < 1:
        assert time.monotonic() < deadline, "no epoch saved in 5 minutes"
        assert cluster.run("squeue", "-h", "-j", job, check=False).strip(), "the job ended before it was cancelled"
        time.sleep(0.1)
    cluster.run("scancel", job)
    cluster.wait(job, timeout=60)
    killed_at = saved_epoch(folder)
    assert 1 <= killed_at < LONG["epochs"]
    print(f"cancelled after epoch {killed_at} of {LONG['epochs']}")
    cluster.wait(submit(cluster, folder, 2, "again.log"), timeout=300)
    log = (folder / "again.log").read_text()
    assert f"resuming after epoch {killed_at}" in log and "x 2 processes on 2 nodes" in log, log
    reference = project(downloaded["long"], tmp_path / "uninterrupted", LONG, compute__devices=2)
    assert "x 2 processes" in train_here(reference)
    assert training_logs(folder) == training_logs(reference)  # one row per epoch, equal to the last digit
    (epoch, resumed), (reference_epoch, expected) = weights(folder), weights(reference)
    assert epoch == reference_epoch
    assert all(torch.equal(resumed[k], expected[k]) for k in expected), "not the uninterrupted run's weights"


def test_a_tuning_trains_its_trials_one_after_another_each_over_both_nodes(cluster, downloaded, tmp_path):
    """docs/clusters.md's tuning on a cluster: the tune stage in `sbatch -N 2` with compute.nodes 2 trains each
    trial as one 2-process world over both nodes, one trial after another, and writes the choice."""
    tuning = {"tune__enabled": True, "tune__lr_scale": [1.0, 2.0], "tune__epochs": 1}
    folder = project(downloaded["short"], tmp_path / "tuning", SHORT, compute__nodes=2, **tuning)
    command = ["python", str(ROOT / "stages" / "tune.py"), MODEL, "cifar10"]
    cluster.wait(submit(cluster, folder, 2, "tune.log", command), timeout=300)
    log = (folder / "tune.log").read_text()
    assert log.count("trial 1/2: lr ") == log.count("trial 2/2: lr ") == 1, log  # rank 0 alone prints
    assert log.count("x 2 processes on 2 nodes (n1, n2; SLURM job ") == 2, log  # each trial, rank 0 alone prints
    record = json.loads((folder / paths.tuning("train-cifar10", MODEL)).read_text())
    assert [t["lr_scale"] for t in record["trials"]] == [1.0, 2.0]
    best = max(record["trials"], key=lambda t: (t["val_top1"], -t["lr_scale"]))
    assert record["chosen"]["lr"] == best["lr"]
    assert len(list((folder / paths.tuning_trials("train-cifar10", MODEL)).glob("*.state.pt"))) == 2


# --- sweeps ---


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def make_sweep_project(root):
    """The project copied into a git repo with one model (the tiny ViT) and its pipeline cut down to what
    trains it on CIFAR-10 (recipes, download@cifar10, train-cifar10), a bare git remote and a DVC remote."""
    from dvc_repo import copy_project, cut_pipeline

    folder = root / "project"
    folder.mkdir(parents=True)
    copy_project(folder)
    cut_pipeline(folder, ("recipes", "download", "tune-cifar10", "train-cifar10"), datasets=["cifar10"])
    raw = tiny_params()
    for key in [k for k in raw["models"] if k != MODEL]:
        del raw["models"][key]
        for section in ("train", "transfer"):
            raw[section].pop(key, None)
    (folder / "params.yaml").write_text(dump(raw))
    git("init", "-q", "--bare", "-b", "main", str(root / "remote.git"), cwd=root)
    git("init", "-q", "-b", "main", cwd=folder)
    git("config", "user.name", "CIFARbench test", cwd=folder)
    git("config", "user.email", "test@cifarbench.invalid", cwd=folder)
    subprocess.run(
        [sys.executable, "-m", "dvc", "remote", "add", "-q", "-d", "store", str(root / "dvc-store")],
        cwd=folder,
        check=True,
    )
    git("add", "-A", cwd=folder)
    git("commit", "-q", "-m", "tiny project", cwd=folder)
    git("remote", "add", "origin", str(root / "remote.git"), cwd=folder)
    git("push", "-q", "origin", "main", cwd=folder)
    return folder


RATES = (0.001, 0.002)
TRAINING = f"train-cifar10@{MODEL}-{SEED}"


def test_sweep_on_the_cluster_gathered_in_a_fresh_clone(cluster, tmp_path):
    folder = make_sweep_project(tmp_path)
    env = dict(cluster.env, PYTHONPATH=str(folder))
    command = [sys.executable, "-m", "cifarbench.cli", "sweep", "--slurm", "--wait", "--name", "lr"]
    command += ["-S", f"train.{MODEL}.lr={','.join(map(str, RATES))}"]
    proc = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sweep_dir = folder / ".dvc" / "tmp" / "sweeps" / "lr"
    job_id = re.search(r"SLURM job (\d+)", proc.stdout.readline()).group(1)
    log_2, deadline = sweep_dir / "2.log", time.monotonic() + 180
    while not (log_2.exists() and f"Running stage '{TRAINING}'" in log_2.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    cluster.run("scancel", f"{job_id}_2")  # task 2 pre-empted mid-training
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    [failed] = err.strip().splitlines()
    rerun = "sbatch --array=2 .dvc/tmp/sweeps/lr/sweep.sbatch"
    assert failed == (
        f"task 2 (lr-2: train.{MODEL}.lr={RATES[1]}) failed, cancelled (scancel or its time limit): "
        f"log .dvc/tmp/sweeps/lr/2.log; rerun it alone: {rerun}"
    )
    assert "1 of 2 experiments pushed to origin" in out
    assert (sweep_dir / "1.exit").read_text().strip() == "0"

    job_id = subprocess.run(
        [*rerun.split()[:2], "--parsable", rerun.split()[2]], cwd=folder, env=env, capture_output=True, text=True
    ).stdout.strip()
    cluster.wait(job_id, timeout=300)
    assert (sweep_dir / "2.exit").read_text().strip() == "0", (sweep_dir / "2.log").read_text()[-3000:]
    assert not (sweep_dir / "work").exists() or not any((sweep_dir / "work").iterdir())  # clones removed

    # elsewhere: a fresh clone with its own (empty) DVC cache gathers both from the remotes
    fresh = tmp_path / "fresh"
    git("clone", "-q", str(tmp_path / "remote.git"), str(fresh), cwd=tmp_path)
    dvc_env = dict(os.environ, PYTHONPATH=str(fresh), DVC_NO_ANALYTICS="1")

    def dvc(*args):
        done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=fresh, env=dvc_env, capture_output=True)
        assert done.returncode == 0, f"dvc {' '.join(args)}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
        return done.stdout

    dvc("exp", "pull", "origin")
    shown = json.loads(dvc("exp", "show", "--json"))
    exps = {e["name"]: e["revs"][0]["data"] for c in shown for e in c.get("experiments") or []}
    assert set(exps) == {"lr-1", "lr-2"}
    for name, rate in zip(("lr-1", "lr-2"), RATES):
        assert exps[name]["params"]["params.yaml"]["data"]["train"][MODEL]["lr"] == rate
        summary = exps[name]["metrics"][f"logs/train-cifar10/{MODEL}-{SEED}/metrics.json"]["data"]
        assert summary["epochs_run"] == 2 and 0 <= summary["best_val_acc"] <= 1
    dvc("exp", "apply", "lr-2")
    dvc("pull")
    lock = paramslib.read_yaml(fresh / "dvc.lock")
    [out_entry] = [
        o for o in lock["stages"][TRAINING]["outs"] if o["path"] == str(paths.checkpoint("cifar10", MODEL, SEED))
    ]
    assert resume.file_digest(fresh / out_entry["path"]) == out_entry["md5"]  # lr-2's own checkpoint
    assert weights(fresh)[0] >= 1


# --- bad input: one line, exit status 2, nothing submitted (no cluster needed) ---


@pytest.fixture
def small_project(tmp_path, monkeypatch):
    """A committed project (params.yaml, dvc.yaml, DVC config) with a git remote and a DVC remote, and a
    fake sbatch on PATH that records its calls; cwd is the project."""
    root = tmp_path
    folder = root / "project"
    (folder / ".dvc").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", folder)
    shutil.copy(ROOT / "dvc.yaml", folder)
    (folder / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    (folder / ".dvc" / "config").write_text(
        f"[core]\n    analytics = false\n    remote = store\n['remote \"store\"']\n    url = {root / 'store'}\n"
    )
    git("init", "-q", "--bare", "-b", "main", str(root / "remote.git"), cwd=root)
    git("init", "-q", "-b", "main", cwd=folder)
    git("config", "user.name", "CIFARbench test", cwd=folder)
    git("config", "user.email", "test@cifarbench.invalid", cwd=folder)
    git("add", "-A", cwd=folder)
    git("commit", "-q", "-m", "project", cwd=folder)
    git("remote", "add", "origin", str(root / "remote.git"), cwd=folder)
    git("push", "-q", "origin", "main", cwd=folder)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    calls = root / "sbatch-calls"
    fake = bin_dir / "sbatch"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho 1\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(folder)
    return SimpleNamespace(folder=folder, calls=calls, bin=bin_dir)


def cifarbench(capsys, *args):
    """(exit status, stdout, stderr lines) of `cifarbench <args>` run in this process."""
    try:
        status = cli.main(list(args))
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err.splitlines()


SWEEP = ("sweep", "--slurm", "-S", "train.resnet18.lr=0.005,0.01")


@pytest.mark.parametrize(
    "breaks, message",
    [
        (
            lambda p: git("remote", "remove", "origin", cwd=p.folder),
            "error: no git remote 'origin': tasks clone the project from it and push their experiments to it; add "
            "one (git remote add origin <url>, e.g. a bare repository on a shared filesystem) or name another "
            "with --git-remote",
        ),
        (
            lambda p: (
                (p.folder / ".dvc" / "config").write_text("[core]\n    analytics = false\n"),
                git("commit", "-qam", "no DVC remote", cwd=p.folder),
                git("push", "-q", "origin", "main", cwd=p.folder),
            ),
            "error: no DVC remote: tasks push their models and data there, and other machines pull them from it; "
            "add a default one (dvc remote add -d store /shared/dvc-store, then commit .dvc/config) or name one "
            "with --dvc-remote",
        ),
        (
            lambda p: (p.folder / "params.yaml").write_text((p.folder / "params.yaml").read_text() + "\n"),
            "error: uncommitted changes (params.yaml): each task clones the committed project, as queued "
            "experiments see only committed files; commit them (git add -A && git commit) and push, or stash them",
        ),
        (
            lambda p: git("commit", "-q", "--allow-empty", "-m", "not pushed", cwd=p.folder),
            "error: commit {head} is not on git remote 'origin', and each task clones it from there: push it "
            "first (git push origin HEAD)",
        ),
        (
            lambda p: os.environ.update(PATH=str(p.bin.with_name("nobin"))),
            "error: sbatch not found on PATH: run `cifarbench sweep --slurm` on a SLURM login node (or see the "
            "batch script with --dry-run)",
        ),
    ],
    ids=["no-git-remote", "no-dvc-remote", "uncommitted", "not-pushed", "no-sbatch"],
)
def test_bad_sweep_is_one_line_and_submits_nothing(small_project, capsys, breaks, message):
    breaks(small_project)
    if "{head}" in message:
        message = message.format(head=git("rev-parse", "--short=7", "HEAD", cwd=small_project.folder).strip())
    status, out, err = cifarbench(capsys, *SWEEP)
    assert (status, out, err) == (2, "", [message])
    assert not small_project.calls.exists(), "sbatch was called"


@pytest.mark.parametrize(
    "setting, message",
    [
        (
            "train.resnet18.bogus=1,2",
            "error: -S train.resnet18.bogus=1: params.yaml has no key train.resnet18.bogus (a typo? "
            "`++train.resnet18.bogus=1` adds a key where params.yaml allows one, e.g. a model's recipe key)",
        ),
        (
            "++compute.bogus=1",
            "error: params.yaml with -S ++compute.bogus=1: compute.bogus: unknown key (a typo?); see "
            "params.yaml's comments for the allowed keys",
        ),
        (
            "train.resnet18.lr=0.01,fast",
            "error: params.yaml with -S train.resnet18.lr=fast: train.resnet18.lr: Input should be a valid "
            "number (got 'fast')",
        ),
    ],
    ids=["missing-key", "key-params-forbids", "bad-value"],
)
def test_bad_sweep_setting_names_it_and_submits_nothing(small_project, capsys, setting, message):
    status, out, err = cifarbench(capsys, "sweep", "--slurm", "-S", setting)
    assert (status, out, err) == (2, "", [message])
    assert not small_project.calls.exists()


def test_a_recipe_key_of_a_model_can_be_added_and_the_dry_run_shows_the_script(small_project, capsys):
    """`++train.<model>.<key>` adds a key params allows; --dry-run prints the batch script and submits nothing."""
    status, out, err = cifarbench(
        capsys,
        *("sweep", "--slurm", "--dry-run", "--name", "wd", "--nodes", "2", "--sbatch-arg=--partition=gpu"),
        *("-S", "++train.resnet18.weight_decay=1e-4,5e-4", "-S", "seeds=[0],[1]", "train-cifar10"),
    )
    assert (status, err) == (0, [])
    assert not small_project.calls.exists()
    assert "#SBATCH --array=1-4\n#SBATCH --nodes=2\n" in out and "#SBATCH --partition=gpu\n" in out
    tasks = re.findall(r"^  (\d)\) set -- (.*) ;;$", out, re.M)
    # the product in DVC's order (dvc exp run --queue -S), then compute.nodes from --nodes
    assert tasks == [
        (str(i), f"-S ++train.resnet18.weight_decay={wd} -S 'seeds=[{seed}]' -S ++compute.nodes=2")
        for i, (wd, seed) in enumerate([(w, s) for w in ("0.0001", "0.0005") for s in (0, 1)], 1)
    ]
    assert f"export PATH={VENV_BIN}:$PATH" in out
    assert f"git clone --quiet {small_project.folder.parent / 'remote.git'} " in out
    assert 'dvc exp run "$@" --name wd-$TASK train-cifar10\n' in out  # the targets, as dvc exp run takes them
    assert "dvc exp push --remote store origin wd-$TASK" in out
    assert not (small_project.folder / ".dvc" / "tmp" / "sweeps").exists()  # a dry run writes nothing
    bash = subprocess.run(["bash", "-n"], input=out, capture_output=True, text=True)
    assert bash.returncode == 0, bash.stderr


def test_without_slurm_the_sweep_points_to_dvc_queue(small_project, capsys):
    status, out, err = cifarbench(capsys, "sweep", "-S", "train.resnet18.lr=0.01")
    assert status == 2 and len(err) == 1 and "add --slurm" in err[0] and "dvc exp run --queue" in err[0]


# --- where ranks run never decides whether a state resumes ---


def test_the_fingerprint_counts_processes_not_nodes():
    p = paramslib.parse(tiny_params())
    common = dict(stage="train-cifar10", spec=p.model(MODEL), recipe=p.recipe("train", MODEL), seed=0, inputs=[])

    def fingerprint(nodes, devices, processes):
        compute = p.compute.model_copy(update={"nodes": nodes, "devices": devices})
        return resume.fingerprint(compute=compute, processes=processes, code="x", **common)

    assert fingerprint(2, 1, 2) == fingerprint(1, 2, 2)  # 2 nodes x 1 resumes on 1 node x 2, exactly
    assert fingerprint(2, 1, 2) != fingerprint(2, 2, 4)  # another world size: one RNG set per rank
    assert fingerprint(1, 1, 1) != fingerprint(1, 2, 2)


def test_no_stage_reruns_for_compute_nodes_or_another_speed_setting():
    """compute.nodes says where a training runs, compute.compile and compute.eval_batch_size how fast: no stage
    lists them (params.SPEED_ONLY); every stage that runs a model, and the report (it prints their digest),
    lists compute's other keys one by one."""
    stages = paramslib.read_yaml(ROOT / "dvc.yaml")["stages"]
    deciding = {f"compute.{k}" for k in paramslib.Compute.model_fields} - set(paramslib.SPEED_ONLY)
    assert deciding == {"compute.device", "compute.devices", "compute.precision", "compute.sync_bn"}
    for name, stage in stages.items():
        listed = [str(p).split("#")[0].strip() for p in stage.get("params", []) if str(p).startswith("compute")]
        if name in ("recipes", "download"):
            assert listed == [], name
        else:
            assert set(listed) == deciding, name
