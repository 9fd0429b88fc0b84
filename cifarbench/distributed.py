"""Multi-process (DDP) training: relaunch under torchrun, ranks, and the few collectives we need.

With `compute.devices > 1` a training stage started by DVC reruns itself under
`torchrun --standalone`, one process per device (NCCL on GPUs, gloo on CPU).
Outside torchrun every helper here degrades to the single-process answer, so
the engine has one code path.
"""

import os
import subprocess
import sys

import torch
import torch.distributed as dist


def under_torchrun():
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def active():
    return dist.is_available() and dist.is_initialized()


def world_size():
    return dist.get_world_size() if active() else 1


def rank():
    return dist.get_rank() if active() else 0


def is_main():
    return rank() == 0


def relaunch_under_torchrun(devices):
    """Run this script again as `devices` torchrun workers; returns True once they have finished.

    Called at the top of a stage's main(): in the DVC-launched process (not yet
    under torchrun) with devices > 1 it starts the workers and reports their
    exit status; inside a worker, or with one device, it returns False at once.
    """
    if devices <= 1 or under_torchrun():
        return False
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}",
           sys.argv[0], *sys.argv[1:]]
    returncode = subprocess.run(cmd).returncode
    if returncode:
        raise SystemExit(returncode)
    return True


def init(device):
    """Join the process group when running under torchrun (no-op otherwise)."""
    if not under_torchrun() or active():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")


def shutdown():
    if active():
        dist.destroy_process_group()


def all_reduce_sum(tensor):
    if active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def first_flagged_step(step):
    """The earliest step any rank flagged (-1 = none); every rank gets the same answer."""
    if not active():
        return int(step.item())
    none = torch.iinfo(torch.long).max
    value = torch.where(step >= 0, step, torch.full_like(step, none)).clone()
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return -1 if int(value.item()) == none else int(value.item())


def gather_rows(local, counts):
    """Concatenate each rank's rows in rank order; counts[r] = rows held by rank r (may differ)."""
    if not active():
        return local
    width = max(counts)
    padded = local.new_zeros((width, *local.shape[1:]))
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)  # collectives need equal shapes: pad, gather, trim
    return torch.cat([part[:n] for part, n in zip(parts, counts)])


def gather_objects(obj):
    """Every rank's picklable `obj`, in rank order (a one-element list without torchrun)."""
    if not active():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
