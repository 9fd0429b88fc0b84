"""Device choice: CUDA, else MPS, else the CPU, each with its reason; never the CPU silently.

An NVIDIA GPU is faked by an `nvidia-smi` on PATH that prints what a real driver
prints, and torch's CUDA and MPS availability are monkeypatched, so every case runs
on a machine without a GPU (and gives the same answers on one with a GPU).
"""

import importlib.metadata
import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT

from cifarbench.errors import BenchError
from cifarbench.params import Compute
from cifarbench.runtime import device as runtimelib

H100_SUMMARY = """\
Wed Nov 27 10:00:00 2026
+---------------------------------------------------------------------------------------+
| NVIDIA-SMI 535.104.05             Driver Version: 535.104.05   CUDA Version: {cuda}     |
|-----------------------------------------+----------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id        Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |         Memory-Usage | GPU-Util  Compute M. |
|                                         |                      |               MIG M. |
|=========================================+======================+======================|
|   0  NVIDIA H100 80GB HBM3          On  | 00000000:19:00.0 Off |                    0 |
| N/A   33C    P0              70W / 700W |      2MiB / 81559MiB |      0%      Default |
|                                         |                      |             Disabled |
+-----------------------------------------+----------------------+----------------------+
"""


def compute(device="auto", precision="auto"):
    return Compute(device=device, devices=1, precision=precision, compile=False, eval_batch_size=8, sync_bn=False)


@pytest.fixture
def no_gpu(monkeypatch, tmp_path):
    """torch sees neither CUDA nor MPS; PATH holds only an empty folder (no nvidia-smi)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def fake_nvidia_smi(bin_dir, *, gpus=("NVIDIA H100 80GB HBM3",), driver="535.104.05", cuda="12.2", body=None):
    """An nvidia-smi that answers as a real driver does (shell builtins only: PATH is just bin_dir).

    Every call appends a line to bin_dir/calls.
    """
    rows = "".join(f"{name}, {driver}\\n" for name in gpus)
    summary = H100_SUMMARY.format(cuda=cuda).replace("535.104.05", driver)
    body = body or (f"case \"$1\" in\n  --query-gpu=*) printf '{rows}' ;;\n  *) printf '%s\\n' '{summary}' ;;\nesac\n")
    script = bin_dir / "nvidia-smi"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{bin_dir}/calls"\n{body}')
    script.chmod(0o755)
    return bin_dir / "calls"


def error_line(monkeypatch, torch_cuda, **kwargs):
    monkeypatch.setattr(torch.version, "cuda", torch_cuda)
    with pytest.raises(BenchError) as info:
        runtimelib.resolve(compute(**kwargs))
    message = str(info.value)
    assert "\n" not in message
    return message


def torch_pins(tag):
    versions = {p: importlib.metadata.version(p).split("+")[0] for p in ("torch", "torchvision")}
    return f"torch=={versions['torch']}+{tag} torchvision=={versions['torchvision']}+{tag}"


# --- no silent CPU -----------------------------------------------------------------------------


def test_gpu_that_torch_cannot_use_stops_with_one_line_naming_it_and_both_ways_out(no_gpu, monkeypatch):
    fake_nvidia_smi(no_gpu, cuda="12.2")  # a CUDA 12 driver, a wheel built for CUDA 13
    message = error_line(monkeypatch, "13.0")
    assert message.startswith("compute.device: auto found NVIDIA H100 80GB HBM3 (driver 535.104.05, runs CUDA 12.2)")
    assert f"torch {torch.__version__} (built for CUDA 13.0) cannot use it" in message
    assert (
        f"pip install {torch_pins('cu128')} --index-url https://download.pytorch.org/whl/cu128 "
        f"(or update the NVIDIA driver)"
    ) in message
    assert message.endswith("or set compute.device: cpu to train on the CPU deliberately")


def test_cpu_only_torch_beside_a_gpu_points_to_the_cuda_build(no_gpu, monkeypatch):
    fake_nvidia_smi(no_gpu, driver="580.65.06", cuda="13.0")  # e.g. PyPI's CPU-only wheel on Windows
    message = error_line(monkeypatch, None)
    assert "found NVIDIA H100 80GB HBM3 (driver 580.65.06, runs CUDA 13.0)" in message
    assert "(a CPU-only build) cannot use it" in message
    assert f"pip install {torch_pins('cu130')} --index-url https://download.pytorch.org/whl/cu130," in message
    assert "set compute.device: cpu" in message


def test_several_gpus_are_counted_and_explicit_cuda_stops_the_same_way(no_gpu, monkeypatch):
    fake_nvidia_smi(no_gpu, gpus=("NVIDIA A100-SXM4-80GB",) * 2 + ("Tesla T4",), cuda="12.4")
    message = error_line(monkeypatch, "13.0", device="cuda")
    assert message.startswith("compute.device: cuda found 2x NVIDIA A100-SXM4-80GB, Tesla T4 (driver 535.104.05")


def test_a_driver_too_old_for_any_build_says_update_it(no_gpu, monkeypatch):
    fake_nvidia_smi(no_gpu, driver="470.256.02", cuda="11.4")
    message = error_line(monkeypatch, "13.0")
    assert "update the NVIDIA driver (it runs CUDA 11.4; torch's builds need CUDA 12.6 or newer)" in message
    assert "compute.device: cpu" in message


def test_a_driver_that_runs_torchs_build_asks_why_torch_cannot_see_it(no_gpu, monkeypatch):
    fake_nvidia_smi(no_gpu, driver="580.65.06", cuda="13.0")
    message = error_line(monkeypatch, "13.0")
    assert "find out why torch cannot see it (`python -c 'import torch; torch.cuda.init()'` says)" in message
    assert "compute.device: cpu" in message


def test_a_driver_without_a_cuda_version_still_stops(no_gpu, monkeypatch):
    fake_nvidia_smi(
        no_gpu,
        body=(
            "case \"$1\" in --query-gpu=*) printf 'NVIDIA L4, 550.54.15\\n' ;; *) printf 'something else\\n' ;; esac\n"
        ),
    )
    message = error_line(monkeypatch, "13.0")
    assert "found NVIDIA L4 (driver 550.54.15, does not say which CUDA it runs)" in message
    assert "https://pytorch.org/get-started/locally/" in message


# --- the CPU, deliberately or for a stated reason ------------------------------------------------


def test_no_nvidia_smi_means_the_cpu_with_its_reason(no_gpu):
    rt = runtimelib.resolve(compute())
    assert rt.device == torch.device("cpu") and rt.precision == "fp32"
    assert rt.reason == "compute.device: auto, no CUDA or MPS device"
    assert rt.describe_choice() == (
        f"device: cpu ({runtimelib._threads()}, fp32) - compute.device: auto, no CUDA or MPS device"
    )


def test_nvidia_smi_that_fails_means_the_cpu_and_the_reason_quotes_it(no_gpu):
    fake_nvidia_smi(
        no_gpu,
        body=(
            "printf '%s\\n' \"NVIDIA-SMI has failed because it couldn't communicate with "
            "the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and "
            'running."\nexit 9\n'
        ),
    )
    rt = runtimelib.resolve(compute())
    assert rt.device == torch.device("cpu")
    assert rt.reason == (
        "compute.device: auto, no CUDA or MPS device (nvidia-smi failed: NVIDIA-SMI has failed "
        "because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA "
        "driver is installed and running.)"
    )


def test_nvidia_smi_that_lists_no_gpu_means_the_cpu(no_gpu):
    fake_nvidia_smi(no_gpu, body="printf 'No devices were found\\n'\nexit 6\n")
    assert runtimelib.resolve(compute()).reason.endswith("(nvidia-smi failed: No devices were found)")


def test_nvidia_smi_that_hangs_times_out_to_the_cpu(no_gpu, monkeypatch):
    fake_nvidia_smi(no_gpu, body="exec /bin/sleep 30\n")
    monkeypatch.setattr(runtimelib, "NVIDIA_SMI_TIMEOUT", 0.5)
    start = time.perf_counter()
    rt = runtimelib.resolve(compute())
    assert time.perf_counter() - start < 10
    assert rt.device == torch.device("cpu")
    assert rt.reason.endswith("(nvidia-smi did not answer within 0.5 s)")


def test_nvidia_smi_that_cannot_run_means_the_cpu(no_gpu):
    (no_gpu / "nvidia-smi").write_text("#!/nonexistent/interpreter\n")
    (no_gpu / "nvidia-smi").chmod(0o755)
    rt = runtimelib.resolve(compute())
    assert rt.device == torch.device("cpu") and "nvidia-smi could not run" in rt.reason


def test_compute_device_cpu_beside_a_gpu_is_deliberate_and_asks_no_driver(no_gpu):
    calls = fake_nvidia_smi(no_gpu)
    rt = runtimelib.resolve(compute("cpu"))
    assert rt.device == torch.device("cpu") and rt.reason == "compute.device: cpu"
    assert rt.describe_choice().endswith(f"{runtimelib._threads()}, fp32) - compute.device: cpu")
    assert not calls.exists()


def test_gpus_hidden_by_cuda_visible_devices_mean_the_cpu_on_purpose(no_gpu, monkeypatch):
    calls = fake_nvidia_smi(no_gpu)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    rt = runtimelib.resolve(compute())
    assert rt.device == torch.device("cpu")
    assert rt.reason == "compute.device: auto, CUDA_VISIBLE_DEVICES='' hides every GPU"
    assert not calls.exists()


def test_explicit_cuda_without_any_gpu_says_so(no_gpu):
    with pytest.raises(BenchError, match="compute.device: cuda asked for but no CUDA GPU is visible; use auto or cpu"):
        runtimelib.resolve(compute("cuda"))


# --- CUDA and MPS ----------------------------------------------------------------------------


@pytest.fixture
def fake_cuda(no_gpu, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    return fake_nvidia_smi(no_gpu)


def test_auto_takes_cuda_with_bf16_and_says_so(fake_cuda):
    rt = runtimelib.resolve(compute())
    assert rt.device == torch.device("cuda") and rt.precision == "bf16"
    assert rt.describe_choice() == "device: cuda:0 (NVIDIA H100 80GB HBM3, bf16) - compute.device: auto found CUDA"
    assert rt.describe() == "NVIDIA H100 80GB HBM3 (bf16)"  # what the efficiency files record, unchanged
    assert not fake_cuda.exists()  # the driver is asked only when torch has no CUDA


def test_cuda_under_torchrun_takes_the_local_rank(fake_cuda, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    rt = runtimelib.resolve(compute("cuda"))
    assert rt.device == torch.device("cuda:1")
    assert rt.describe_choice() == (
        "device: cuda:1 (NVIDIA H100 80GB HBM3, bf16) - compute.device: cuda (torchrun's LOCAL_RANK=1)"
    )


@pytest.fixture
def fake_mps(no_gpu, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mps, "get_name", lambda: "Apple M2 Pro", raising=False)
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: True, raising=False)
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: True, raising=False)


def test_auto_takes_mps_when_there_is_no_cuda_in_fp32(fake_mps):
    rt = runtimelib.resolve(compute())
    assert rt.device == torch.device("mps") and rt.precision == "fp32"
    assert rt.describe_choice() == "device: mps (Apple M2 Pro, fp32) - compute.device: auto found Apple's MPS (no CUDA)"
    assert rt.describe() == "Apple M2 Pro, MPS (fp32)"


def test_cuda_comes_before_mps(fake_mps, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert runtimelib.resolve(compute()).device.type == "cuda"


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mps_autocasts_where_torch_supports_it(fake_mps, precision):
    rt = runtimelib.resolve(compute("mps", precision))
    assert rt.device == torch.device("mps") and rt.precision == precision
    assert rt.reason == "compute.device: mps"
    assert rt.needs_grad_scaler == (precision == "fp16")


def test_mps_bf16_is_refused_before_macos_14(fake_mps, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_macos_or_newer", lambda major, minor: False)
    with pytest.raises(
        BenchError,
        match=r"compute.precision: bf16 autocast on MPS needs macOS 14 and a torch that "
        r"supports it \(this is torch .*\); use fp32 or auto",
    ):
        runtimelib.resolve(compute("auto", "bf16"))


def test_mps_autocast_is_refused_where_torch_lacks_it(fake_mps, monkeypatch):
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    with pytest.raises(BenchError, match="compute.precision: fp16 autocast on MPS needs a torch that supports it"):
        runtimelib.resolve(compute("auto", "fp16"))


def test_explicit_mps_without_mps_is_refused(no_gpu):
    with pytest.raises(BenchError, match="compute.device: mps asked for but torch offers no MPS device"):
        runtimelib.resolve(compute("mps"))


def test_a_runtime_built_by_hand_describes_itself_without_a_reason():
    rt = runtimelib.Runtime(device=torch.device("cpu"), amp_dtype=None, compile=False)
    assert rt.describe_choice() == f"device: cpu ({runtimelib._threads()}, fp32)"


@pytest.mark.parametrize("threads, words", [(1, "1 thread"), (2, "2 threads")])
def test_a_cpu_runtime_counts_its_threads_in_words(monkeypatch, threads, words):
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    rt = runtimelib.Runtime(device=torch.device("cpu"), amp_dtype=None, compile=False)
    assert rt.describe() == f"CPU, {words} (fp32)" and rt.describe_choice() == f"device: cpu ({words}, fp32)"


def test_compile_auto_compiles_on_cuda_only():
    assert runtimelib.compiles("auto", "cuda") and runtimelib.compiles("auto", "cuda:1")
    assert not runtimelib.compiles("auto", "cpu") and not runtimelib.compiles("auto", "mps")
    assert runtimelib.compiles(True, "cpu") and not runtimelib.compiles(False, "cuda")
    rt = runtimelib.resolve(compute("cpu").model_copy(update={"compile": "auto"}))
    assert rt.compile is False


def test_a_umap_leaves_the_processs_torch_thread_count_as_it_was():
    """numba's OpenMP threading layer sets the process's OpenMP thread count, which torch shares, to every core the
    first time it runs; the embed stage's UMAP puts torch's count back, so a process started with one thread (each
    of `make test`'s) keeps one. In a fresh process: the first run is the one that resets it."""
    code = (
        "import numpy as np, torch; from cifarbench.pipeline import embed; "
        "embed.umap_2d(np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32), seed=0); "
        "print(torch.get_num_threads())"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "1"
