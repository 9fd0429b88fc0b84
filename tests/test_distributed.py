"""DDP on CPU with gloo: a 2-process training stage completes; 2-process evaluation equals 1-process."""

import json
import subprocess
import sys

import pytest
import torch

from cifarbench import paths
from conftest import ROOT, tiny_params, write_params

MODEL = "dinov2_vitb14"


def run(cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def trained_with_two_processes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    # data.limit 301 gives 101 test images: the two ranks hold unequal shares (51 and 50)
    params = tiny_params(compute__devices=2, data__limit=301, **{f"train__{MODEL}__epochs": 2})
    write_params(folder, params)
    run([sys.executable, str(ROOT / "stages" / "download.py"), "cifar10"], folder)
    out = run([sys.executable, str(ROOT / "stages" / "train_cifar10.py"), MODEL, "0"], folder)
    return folder, out


def test_two_process_training_completes_and_only_rank_0_writes(trained_with_two_processes):
    folder, out = trained_with_two_processes
    assert "x 2 processes" in out
    assert out.count("epoch   1 ") == 1  # one rank prints
    summary = json.loads((folder / paths.train_summary("cifar10", MODEL, 0)).read_text())
    cost = json.loads((folder / paths.train_cost("cifar10", MODEL, 0)).read_text())
    assert cost["processes"] == 2 and summary["epochs_run"] == 2
    rows = (folder / paths.train_log("cifar10", MODEL, 0) / "plots" / "metrics" / "val" / "acc.tsv").read_text()
    assert len(rows.strip().splitlines()) == 1 + 2  # not one row per rank
    ckpt = torch.load(folder / paths.checkpoint("cifar10", MODEL, 0), weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])  # the bare model, not the DDP wrapper
    state = torch.load(folder / paths.training_state("cifar10", MODEL, 0), weights_only=True)
    assert state["finished"]


def test_two_process_evaluation_counts_each_image_once(trained_with_two_processes, tmp_path):
    folder, _ = trained_with_two_processes
    script = str(ROOT / "tests" / "distributed_infer.py")
    args = [str(folder / paths.checkpoint("cifar10", MODEL, 0)), str(folder / "data" / "cifar10")]
    results = {}
    for world in (1, 2):
        out_path = tmp_path / f"world{world}.json"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}"]
        run([*launcher, script, *args, str(out_path)], ROOT)
        results[world] = json.loads(out_path.read_text())
    n_test = json.loads((folder / "data" / "cifar10" / "meta.json").read_text())["counts"]["test"]
    assert n_test == 101
    assert results[2]["world"] == 2 and results[2]["rows"] == n_test
    assert results[2]["correct"] == results[1]["correct"]
    assert results[2]["predicted"] == results[1]["predicted"]


def test_a_worker_error_comes_back_as_one_line(tmp_path):
    write_params(tmp_path, tiny_params(compute__devices=2))
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "train_cifar10.py"), MODEL, "0"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: data/cifar10/meta.json is missing: run `dvc repro download@cifar10` first"
