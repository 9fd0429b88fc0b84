"""Where and how tensors run: device, mixed precision, channels_last, torch.compile.

One place turns params' `compute` section into concrete torch settings, so the
CUDA path (bf16 autocast, channels_last, compile) and the CPU path share code.
"""

import contextlib
import os
from dataclasses import dataclass

import torch

from cifarbench.errors import BenchError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


@dataclass
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None = full fp32
    compile: bool

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

    @property
    def reason(self):
        return self.describe()

    def describe(self):
        if self.device.type == "cuda":
            return f"{torch.cuda.get_device_name(self.device)} ({self.precision})"
        return f"CPU, {torch.get_num_threads()} threads ({self.precision})"


def _pick_device(name):
    local_rank = os.environ.get("LOCAL_RANK")  # set by torchrun: one GPU per process
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BenchError(f"compute.device: {name} asked for but no CUDA GPU is visible; use auto or cpu")
        if name == "cuda" and local_rank is not None:
            name = f"cuda:{local_rank}"
        index = torch.device(name).index or 0
        if index >= torch.cuda.device_count():
            raise BenchError(f"compute.device: {name} but only {torch.cuda.device_count()} GPU(s) are visible")
    return torch.device(name)


def resolve(compute):
    device = _pick_device(compute.device)
    precision = compute.precision
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"  # CPU autocast is slower than fp32 on most laptops
    if precision == "fp16" and device.type != "cuda":
        raise BenchError("compute.precision: fp16 needs a CUDA device; use fp32 or bf16 on CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BenchError("compute.precision: this GPU has no bf16; use fp16 or auto")
    return Runtime(device=device, amp_dtype=_DTYPES[precision], compile=compute.compile)


def uses_channels_last(model):
    """CNNs run faster in NHWC on tensor cores and oneDNN; ViTs see tokens, not images."""
    return getattr(model, "patch_embed", None) is None
