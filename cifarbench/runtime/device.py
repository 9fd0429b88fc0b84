"""Where and how tensors run: device, mixed precision, channels_last, torch.compile.

One place turns params' `compute` section into concrete torch settings, so the
CUDA path (bf16 autocast, channels_last, compile), Apple's MPS and the CPU share
code. `compute.device: auto` takes CUDA, else MPS, else the CPU, and every
choice carries its reason (`Runtime.describe_choice()`, a stage's first line).
It never lands on the CPU silently: when the NVIDIA driver answers but torch
cannot use the GPU (a CPU-only wheel, or a wheel built for a newer CUDA than
the driver's), it stops with one line that says what it found and the two ways out.
"""

import contextlib
import importlib.metadata
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import torch

from cifarbench.errors import BenchError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}

NVIDIA_SMI_TIMEOUT = 10  # seconds: a hung driver must not hang the stage
# The CUDA builds PyTorch publishes for recent releases (https://download.pytorch.org/whl/cuXYZ;
# the list per release: https://pytorch.org/get-started/locally/). A driver runs every build of
# its own CUDA major version (NVIDIA's minor version compatibility) and of older ones.
TORCH_CUDA_BUILDS = ((12, 6), (12, 8), (13, 0))


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None = full fp32
    compile: bool
    reason: str = ""  # why this device, e.g. "compute.device: auto found CUDA"
    # compute.compile: auto: a compile that fails on the first step falls back to eager (train/engine.py)
    compile_fallback: bool = False

    @property
    def precision(self):
        return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}[self.amp_dtype]

    @property
    def needs_grad_scaler(self):
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range
        return self.amp_dtype is torch.float16

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def describe(self):
        """The hardware and precision, as the efficiency files record it."""
        if self.device.type == "cuda":
            return f"{torch.cuda.get_device_name(self.device)} ({self.precision})"
        if self.device.type == "mps":
            return f"{_mps_name()}, MPS ({self.precision})"
        return f"CPU, {_threads()} ({self.precision})"

    def describe_choice(self):
        """One line for the top of a stage's output: which device, and why.

        e.g. `device: cuda:0 (NVIDIA H100 80GB HBM3, bf16) - compute.device: auto found CUDA`
        """
        if self.device.type == "cuda":
            index = torch.cuda.current_device() if self.device.index is None else self.device.index
            where, detail = f"cuda:{index}", torch.cuda.get_device_name(index)
        elif self.device.type == "mps":
            where, detail = "mps", _mps_name()
        else:
            where, detail = str(self.device), _threads()
        line = f"device: {where} ({detail}, {self.precision})"
        return f"{line} - {self.reason}" if self.reason else line


def _threads():
    """'1 thread' or 'N threads': the CPU threads torch's ops use in this process."""
    n = torch.get_num_threads()
    return f"{n} thread{'s' if n != 1 else ''}"


def _mps_name():
    get_name = getattr(torch.backends.mps, "get_name", None)  # torch 2.6+
    try:
        return get_name() if get_name else "Apple GPU"
    except RuntimeError:
        return "Apple GPU"


def _mps_available():
    return torch.backends.mps.is_available()


@dataclass(frozen=True)
class NvidiaGpus:
    """What the NVIDIA driver reports through nvidia-smi."""

    names: tuple[str, ...]
    driver: str  # e.g. "535.104.05"
    cuda: str | None  # the newest CUDA the driver runs, e.g. "12.2"; None when nvidia-smi does not say

    def __str__(self):
        counts = {name: self.names.count(name) for name in self.names}
        return ", ".join(name if n == 1 else f"{n}x {name}" for name, n in counts.items())


def nvidia_gpus():
    """(NvidiaGpus, "") when the driver answers, else (None, why not). Never raises."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None, "no nvidia-smi"
    try:
        query = subprocess.run(
            [exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT,
        )
        rows = [line.rsplit(",", 1) for line in query.stdout.splitlines() if "," in line]
        if query.returncode != 0 or not rows:
            said = (query.stdout + query.stderr).strip().splitlines()
            return None, f"nvidia-smi failed: {said[0] if said else f'exit status {query.returncode}'}"
        summary = subprocess.run([exe], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, f"nvidia-smi did not answer within {NVIDIA_SMI_TIMEOUT} s"
    except (OSError, UnicodeDecodeError) as exc:
        return None, f"nvidia-smi could not run: {exc}"
    cuda = re.search(r"CUDA Version:\s*(\d+\.\d+)", summary.stdout)
    return NvidiaGpus(
        names=tuple(name.strip() for name, _ in rows), driver=rows[0][1].strip(), cuda=cuda.group(1) if cuda else None
    ), ""


def _version(text):
    return tuple(int(part) for part in text.split(".")[:2])


def _installed(package):
    try:
        return importlib.metadata.version(package).split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_fix(driver_cuda):
    """The first way out: which torch build to install for a driver that runs CUDA `driver_cuda`."""
    guide = "https://pytorch.org/get-started/locally/"
    if driver_cuda is None:
        return f"install the torch build that matches the driver's CUDA ({guide})"
    driver = _version(driver_cuda)
    if torch.version.cuda and _version(torch.version.cuda)[0] <= driver[0]:
        return (
            "find out why torch cannot see it (`python -c 'import torch; torch.cuda.init()'` says) "
            f"and reinstall torch if needed ({guide})"
        )
    builds = [build for build in TORCH_CUDA_BUILDS if build[0] <= driver[0]]
    if not builds:
        oldest = ".".join(map(str, TORCH_CUDA_BUILDS[0]))
        return f"update the NVIDIA driver (it runs CUDA {driver_cuda}; torch's builds need CUDA {oldest} or newer)"
    tag = "cu" + "".join(map(str, max(builds)))
    pins = " ".join(
        f"{package}=={version}+{tag}" for package in ("torch", "torchvision") if (version := _installed(package))
    )
    newer = " (or update the NVIDIA driver)" if torch.version.cuda else ""
    return (
        f"install the torch build for this driver: pip install {pins or 'torch torchvision'} "
        f"--index-url https://download.pytorch.org/whl/{tag}{newer}"
    )


def _unusable_gpu(asked, gpus):
    build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    runs = f"runs CUDA {gpus.cuda}" if gpus.cuda else "does not say which CUDA it runs"
    return BenchError(
        f"compute.device: {asked} found {gpus} (driver {gpus.driver}, {runs}) but torch "
        f"{torch.__version__} ({build}) cannot use it; either {_torch_fix(gpus.cuda)}, "
        f"or set compute.device: cpu to train on the CPU deliberately"
    )


def _gpus_hidden():
    """CUDA_VISIBLE_DEVICES set to nothing (or -1) hides every GPU on purpose."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return visible is not None and (visible.strip() == "" or visible.strip().startswith("-"))


def _pick_auto():
    """(device name, reason) for compute.device: auto; raises rather than fall back to the CPU silently."""
    if torch.cuda.is_available():
        return "cuda", "compute.device: auto found CUDA"
    if _mps_available():
        return "mps", "compute.device: auto found Apple's MPS (no CUDA)"
    if _gpus_hidden():
        hidden = os.environ["CUDA_VISIBLE_DEVICES"]
        return "cpu", f"compute.device: auto, CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU"
    gpus, why_not = nvidia_gpus()
    if gpus is not None:
        raise _unusable_gpu("auto", gpus)
    note = "" if why_not == "no nvidia-smi" else f" ({why_not})"
    return "cpu", f"compute.device: auto, no CUDA or MPS device{note}"


def _pick_device(name):
    """(torch.device, reason) for a validated compute.device value."""
    reason = f"compute.device: {name}"
    if name == "auto":
        name, reason = _pick_auto()
    if name == "mps" and not _mps_available():
        raise BenchError(
            "compute.device: mps asked for but torch offers no MPS device (Apple silicon, "
            "macOS 14 or later); use auto or cpu"
        )
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            gpus, _ = (None, "") if _gpus_hidden() else nvidia_gpus()
            if gpus is not None:
                raise _unusable_gpu(name, gpus)
            raise BenchError(f"compute.device: {name} asked for but no CUDA GPU is visible; use auto or cpu")
        local_rank = os.environ.get("LOCAL_RANK")  # set by torchrun: one GPU per process
        if name == "cuda" and local_rank is not None:
            name = f"cuda:{local_rank}"
            reason += f" (torchrun's LOCAL_RANK={local_rank})"
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise BenchError(f"compute.device: {name} but only {torch.cuda.device_count()} GPU(s) are visible")
    return torch.device(name), reason


def _mps_supports(precision):
    """Whether this torch autocasts to `precision` on MPS (bf16 also needs macOS 14)."""
    available = getattr(torch.amp, "is_autocast_available", None)  # torch 2.4+
    if available is None or not available("mps"):
        return False
    newer = getattr(torch.backends.mps, "is_macos_or_newer", None)
    return precision == "fp16" or (newer is not None and newer(14, 0))


def _precision(asked, device):
    if asked == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        # CPU autocast is slower than fp32 on most laptops; MPS autocast is unmeasured here
        return "fp32"
    if asked == "fp32":
        return asked
    if device.type == "mps" and not _mps_supports(asked):
        needs = "macOS 14 and a torch" if asked == "bf16" else "a torch"
        raise BenchError(
            f"compute.precision: {asked} autocast on MPS needs {needs} that supports it "
            f"(this is torch {torch.__version__}); use fp32 or auto"
        )
    if asked == "fp16" and device.type == "cpu":
        raise BenchError("compute.precision: fp16 needs a CUDA device (or Apple's MPS); use fp32 or bf16 on CPU")
    if asked == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BenchError("compute.precision: this GPU has no bf16; use fp16 or auto")
    return asked


def compiles(setting, device):
    """Whether `compute.compile: setting` compiles on `device`: auto means on CUDA only.

    On CUDA torch.compile fuses the many small kernels of a training step (docs/performance.md
    measures what it gains per model); on a CPU or Apple's MPS it costs its compile time and, at
    the demo's sizes, gains nothing, so it stays off there unless asked for.
    """
    return torch.device(device).type == "cuda" if setting == "auto" else bool(setting)


def resolve(compute):
    device, reason = _pick_device(compute.device)
    precision = _precision(compute.precision, device)
    return Runtime(
        device=device,
        amp_dtype=_DTYPES[precision],
        compile=compiles(compute.compile, device),
        reason=reason,
        compile_fallback=compute.compile == "auto",
    )


def uses_channels_last(model):
    """CNNs run faster in NHWC on tensor cores and oneDNN; ViTs see tokens, not images."""
    return getattr(model, "patch_embed", None) is None
