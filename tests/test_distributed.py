"""DDP on CPU with gloo: 2 processes train as one model; a 2-process training stage completes;
2-process evaluation equals 1-process; BatchNorm under DDP is synchronised on CUDA, per rank on CPU.

The equivalence tests run tests/distributed_step.py (Trainer.train_epoch on
fixed images) in one plain process (this one) and under torchrun with 2
processes at the same global batch, and compare the weights each leaves.
"""

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, run_script_here, run_stage_here, tiny_params, write_params
from timm.layers import BatchNormAct2d, SyncBatchNormAct

from cifarbench import params as paramslib
from cifarbench import paths
from cifarbench.models import timm_models
from cifarbench.runtime import distributed

MODEL = "dinov2_vitb14"  # the tiny ViT: LayerNorm only
BN_MODEL = "resnet18"  # BatchNorm


def run(cmd, cwd):
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def torchrun(world):
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}"]


def run_world(world, script, args, cwd):
    """`script args` as `world` processes under torchrun, or, for one, as a plain process: this one (a process of its
    own spends seconds importing first)."""
    if world > 1:
        return run([*torchrun(world), str(script), *map(str, args)], cwd)
    done = run_script_here(cwd, script, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# --- one epoch of two steps through Trainer.train_epoch, with 1 and with 2 processes ---

STEP_RECIPE = {
    "batch_size": 8,
    "epochs": 1,
    "warmup_epochs": 0,  # the global batch; the peak lr at once
    "augment": {"crop_padding": 0, "flip": False, "jitter": 0.0},
}  # no per-rank random draws
RUNS = {1: ("vit", "cnn", "cnn-per-rank-bn"), 2: ("vit", "vit-without-ddp", "cnn")}  # scenarios per world size


@pytest.fixture(scope="module")
def stepped(tmp_path_factory):
    """{(scenario, world, rank): {"before", "after": state dicts, "batchnorm": the Trainer's note}}."""
    folder = tmp_path_factory.mktemp("step")
    write_params(
        folder,
        tiny_params(
            **{f"train__{key}__{name}": value for key in (MODEL, BN_MODEL) for name, value in STEP_RECIPE.items()}
        ),
    )
    for world, scenarios in RUNS.items():
        run_world(world, ROOT / "tests" / "distributed_step.py", [folder, *scenarios], folder)
    return {
        (scenario, world, rank): torch.load(folder / f"{scenario}-world{world}-rank{rank}.pt", weights_only=True)
        for world, scenarios in RUNS.items()
        for scenario in scenarios
        for rank in range(world)
    }


def close(a, b):
    """Equal up to float rounding (torch's float32 tolerances): the sums run in another order across ranks."""
    try:
        torch.testing.assert_close(a, b)
        return True
    except AssertionError:
        return False


def test_two_processes_train_as_one_model(stepped):
    """LayerNorm ViT: 2 ranks, each with half of every global batch, end where 1 process does."""
    one, two = stepped["vit", 1, 0], stepped["vit", 2, 0]
    assert all(not torch.equal(one["before"][k], one["after"][k]) for k in one["before"])  # every tensor moved
    assert not close(one["before"], one["after"])
    torch.testing.assert_close(two["before"], one["before"])
    torch.testing.assert_close(two["after"], one["after"])
    torch.testing.assert_close(stepped["vit", 2, 1]["after"], two["after"])  # rank 1 holds the same model


def test_without_the_ddp_wrapper_the_two_processes_drift_apart(stepped):
    """The test above has teeth: with Trainer's DDP wrapper removed each rank learns from its half only."""
    alone = stepped["vit-without-ddp", 2, 0]["after"]
    assert not close(alone, stepped["vit", 1, 0]["after"])
    assert not close(alone, stepped["vit-without-ddp", 2, 1]["after"])


def test_batchnorm_on_cpu_normalises_per_rank(stepped):
    """ResNet-18 with 2 gloo ranks (compute.sync_bn true, but SyncBatchNorm needs CUDA) equals 1 process whose
    BatchNorm normalises each rank's share apart, and not 1 process with whole-batch statistics."""
    two = stepped["cnn", 2, 0]
    assert (
        two["batchnorm"] == "BatchNorm: statistics per process, over its share of the batch "
        "(SyncBatchNorm runs on CUDA only)"
    )  # sync_bn was asked for
    assert stepped["vit", 2, 0]["batchnorm"] is None and stepped["cnn", 1, 0]["batchnorm"] is None
    torch.testing.assert_close(two["after"], stepped["cnn-per-rank-bn", 1, 0]["after"])
    assert not close(two["after"], stepped["cnn", 1, 0]["after"])  # the per-rank statistics do matter


# --- BatchNorm layers prepared for DDP (no processes needed: converting runs on CPU, only SyncBatchNorm's
# --- forward under a process group needs CUDA) ---


def tiny_model(key, freeze_blocks=0):
    p = paramslib.parse(tiny_params())
    torch.manual_seed(0)
    model = timm_models.create(p.model(key), num_classes=10, key=key)
    timm_models.freeze(model, freeze_blocks)
    return model


def batchnorm_types(model):
    return {type(m) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}


@pytest.mark.parametrize("key", [BN_MODEL, "efficientnet_b0"])
def test_sync_bn_on_cuda_converts_every_batchnorm_layer(key):
    model = tiny_model(key).eval()
    x = torch.rand(2, 3, 32, 32)
    expected = model(x)
    converted, note = distributed.batchnorm_for_ddp(model, torch.device("cuda"), sync_bn=True)
    assert note == "BatchNorm: statistics over the global batch (SyncBatchNorm)"
    assert batchnorm_types(converted) <= {torch.nn.SyncBatchNorm, SyncBatchNormAct}
    assert not any(type(m) is BatchNormAct2d for m in converted.modules())
    # outside a process group SyncBatchNorm is plain BatchNorm: the same outputs, EfficientNet's fused activations kept
    torch.testing.assert_close(converted.eval()(x), expected)


def test_frozen_layers_stay_frozen_and_in_eval_mode_after_conversion():
    model = tiny_model(BN_MODEL, freeze_blocks=2)  # the stem and the first 2 of 4 stages
    parameters = dict(model.named_parameters())
    converted, _ = distributed.batchnorm_for_ddp(model, torch.device("cuda"), sync_bn=True)
    assert dict(converted.named_parameters()) == parameters  # the same Parameter objects, frozen ones included
    timm_models.train_mode(converted)
    modules = dict(converted.named_modules())
    frozen = {name for top in converted.frozen_modules for name, _ in modules[top].named_modules(prefix=top)}
    synced = {name for name, m in modules.items() if isinstance(m, torch.nn.SyncBatchNorm)}
    assert synced & frozen and synced - frozen  # both kinds are there to check
    for name in synced:
        assert modules[name].training == (name not in frozen)
        assert all(p.requires_grad == (name not in frozen) for p in modules[name].parameters())


@pytest.mark.parametrize("device, sync_bn", [("cpu", True), ("cuda", False)])
def test_without_cuda_or_sync_bn_the_model_is_unchanged_and_the_log_says_so(device, sync_bn):
    model = tiny_model(BN_MODEL)
    same, note = distributed.batchnorm_for_ddp(model, torch.device(device), sync_bn)
    assert same is model and batchnorm_types(model) == {torch.nn.BatchNorm2d}
    why = "SyncBatchNorm runs on CUDA only" if sync_bn else "compute.sync_bn is false"
    assert note == f"BatchNorm: statistics per process, over its share of the batch ({why})"
    assert distributed.batchnorm_for_ddp(tiny_model(MODEL), torch.device(device), sync_bn)[1] is None  # no BatchNorm


# --- the training stage under torchrun ---


@pytest.fixture(scope="module")
def trained_with_two_processes(tmp_path_factory):
    """The BatchNorm CNN's train stage with compute.devices 2 (on CPU: gloo, per-rank BatchNorm statistics)."""
    folder = tmp_path_factory.mktemp("ddp")
    # data.limit 301 gives 101 test images: the two ranks hold unequal shares (51 and 50)
    params = tiny_params(compute__devices=2, data__limit=301, **{f"train__{BN_MODEL}__epochs": 2})
    write_params(folder, params)
    assert run_stage_here(folder, "download.py", "cifar10").returncode == 0  # the data: in this process
    out = run([sys.executable, str(ROOT / "stages" / "train_cifar10.py"), BN_MODEL, "0"], folder)
    return folder, out


def test_two_process_training_completes_and_only_rank_0_writes(trained_with_two_processes):
    folder, out = trained_with_two_processes
    assert "x 2 processes" in out
    assert out.count("epoch   1 ") == 1  # one rank prints
    assert out.count("BatchNorm: statistics per process") == 1
    summary = json.loads((folder / paths.train_summary("cifar10", BN_MODEL, 0)).read_text())
    cost = json.loads((folder / paths.train_cost("cifar10", BN_MODEL, 0)).read_text())
    assert cost["processes"] == 2 and summary["epochs_run"] == 2
    rows = (folder / paths.train_log("cifar10", BN_MODEL, 0) / "plots" / "metrics" / "val" / "acc.tsv").read_text()
    assert len(rows.strip().splitlines()) == 1 + 2  # not one row per rank
    ckpt = torch.load(folder / paths.checkpoint("cifar10", BN_MODEL, 0), weights_only=True)
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])  # the bare model, not the DDP wrapper
    state = torch.load(folder / paths.training_state("cifar10", BN_MODEL, 0), weights_only=True)
    assert state["finished"]


def test_two_process_evaluation_counts_each_image_once(trained_with_two_processes, tmp_path):
    folder, _ = trained_with_two_processes
    script = str(ROOT / "tests" / "distributed_infer.py")
    args = [str(folder / paths.checkpoint("cifar10", BN_MODEL, 0)), str(folder / "data" / "cifar10")]
    results = {}
    for world in (1, 2):
        out_path = tmp_path / f"world{world}.json"
        run_world(world, script, [*args, out_path], ROOT)
        results[world] = json.loads(out_path.read_text())
    n_test = json.loads((folder / "data" / "cifar10" / "meta.json").read_text())["counts"]["test"]
    assert n_test == 101
    assert results[2]["world"] == 2 and results[2]["rows"] == n_test
    assert results[2]["correct"] == results[1]["correct"]
    assert results[2]["predicted"] == results[1]["predicted"]


def test_a_worker_error_comes_back_as_one_line(tmp_path):
    write_params(tmp_path, tiny_params(compute__devices=2))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train_cifar10.py"), MODEL, "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: data/cifar10/meta.json is missing: run `dvc repro download@cifar10` first"
