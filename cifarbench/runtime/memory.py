"""Peak memory of a stage: CUDA max allocated on a GPU, the process's peak resident set on CPU.

Its own small module because training reports its peak memory too, and a
stage's code dependencies are its imports: training must not depend on
evaluation's FLOP and speed measurements (eval/efficiency.py).
"""

import sys

import torch


def reset_peak(device):
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak(device):
    """(MiB, what it measures)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "CUDA max allocated"
    try:
        import resource
    except ImportError:  # Windows: psutil reports the peak working set there
        import psutil

        return psutil.Process().memory_info().peak_wset / 2**20, "process peak RSS"
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return usage / (2**20 if sys.platform == "darwin" else 2**10), "process peak RSS"


def capacity(device):
    """What memory the device has, for an error line: 'NVIDIA H200 with 139.8 GiB, 12.3 GiB free' or 'the CPU's
    23.5 GiB' (its RAM)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return f"{torch.cuda.get_device_name(device)} with {total / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"
    import psutil

    return f"the {'MPS device' if device.type == 'mps' else 'CPU'}'s {psutil.virtual_memory().total / 2**30:.1f} GiB"


def out_of_memory(device, doing, fix):
    """The one line a stage stops with when torch runs out of device memory: what, where, how much, the fix."""
    return f"out of memory {doing} on {capacity(device)}; {fix}"
