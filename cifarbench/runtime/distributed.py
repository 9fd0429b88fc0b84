"""Multi-process (DDP) training: relaunch under torchrun, ranks, and the few collectives we need.

With `compute.devices > 1` a training stage started by DVC reruns itself under
`torchrun --standalone`, one process per device (NCCL on GPUs, gloo on CPU).
With `compute.nodes > 1` (inside a SLURM allocation, see slurm.py) it starts
one torchrun agent per node with `srun`, each running `compute.devices`
processes, joined by a c10d rendezvous on the allocation's first node (a free
port, the job id as rendezvous id). Outside torchrun every helper here
degrades to the single-process answer, so the engine has one code path.

BatchNorm under DDP: with `compute.sync_bn` on CUDA its layers become
SyncBatchNorm, which normalises over the global batch as one process would.
torch has no SyncBatchNorm for CPU tensors, so on CPU (gloo), or with sync_bn
off, each rank normalises over its own share of the batch, and the running
statistics a checkpoint keeps are rank 0's (DDP copies them to the other ranks
at each forward). Gradients are averaged either way; see `batchnorm_for_ddp`.
"""

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from cifarbench.errors import BenchError
from cifarbench.runtime import slurm


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


ERROR_DIR_ENV = "CIFARBENCH_WORKER_ERRORS"  # where workers leave their BenchError line for the launcher
RENDEZVOUS_ENV = "CIFARBENCH_RENDEZVOUS"  # host:port of the c10d rendezvous: set for the srun tasks (node agents)
PLACEMENT_ENV = "CIFARBENCH_PLACEMENT"  # the nodes and job a multi-node run got, for rank 0's log line
# The node agents run with torch's C++ log at ERROR: when one node's agent stops (its worker failed), the
# others log its store's closed connection as a warning with a C++ stack trace. Their workers get the
# level the stage itself had (kept here meanwhile; empty: none was set).
CPP_LOG_ENV, WORKER_CPP_LOG_ENV = "TORCH_CPP_LOG_LEVEL", "CIFARBENCH_WORKER_CPP_LOG_LEVEL"


def node_count():
    """How many nodes the ranks run on (torchrun's GROUP_WORLD_SIZE: one agent per node); 1 outside torchrun."""
    return int(os.environ.get("GROUP_WORLD_SIZE", "1")) if active() else 1


def placement():
    """'2 processes', or '4 processes on 2 nodes (n1, n2; SLURM job 7)', for the log; '' for one process."""
    if world_size() == 1:
        return ""
    text = f"{world_size()} processes"
    if node_count() > 1:
        text += f" on {node_count()} nodes"
        if PLACEMENT_ENV in os.environ:
            text += f" ({os.environ[PLACEMENT_ENV]})"
    return text


def relaunch_under_torchrun(devices, nodes=1):
    """Run this script again as torchrun workers (`devices` per node); returns True once they have finished.

    Called at the top of a stage's main(). In the DVC-launched process (not yet
    under torchrun): with nodes > 1 it starts one torchrun agent per node with
    srun and waits for them; with one node and devices > 1 it runs torchrun
    --standalone itself. In an srun task started that way it is that node's
    torchrun agent. Inside a worker, or with one device on one node, it returns
    False at once. A worker's BenchError comes back as the launcher's one error
    line, instead of torchrun's failure report (a traceback about the launcher itself).
    """
    if under_torchrun():
        return False
    if nodes > 1:
        endpoint = os.environ.get(RENDEZVOUS_ENV)
        if endpoint is None:
            _launch_node_agents(devices, nodes)
        else:  # an srun task: this node's agent, joining the others at the endpoint
            level = os.environ.pop(WORKER_CPP_LOG_ENV, "")  # the workers' C++ log level: the stage's own
            if level:
                os.environ[CPP_LOG_ENV] = level
            else:
                os.environ.pop(CPP_LOG_ENV, None)
            job = slurm.allocation().job_id
            rendezvous = ["--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={job}"]
            _torchrun([f"--nnodes={nodes}", f"--nproc-per-node={devices}", *rendezvous], devices)
        return True
    if devices <= 1:
        return False
    _torchrun(["--standalone", f"--nproc-per-node={devices}"], devices)
    return True


def _torchrun(launch_args, devices):
    """torchrun's launcher, in this process, over this script; a worker's error line becomes a BenchError."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    # share the cores between workers (torchrun would pick 1 thread each and warn about it)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices)))
    args = get_args_parser().parse_args([*launch_args, sys.argv[0], *sys.argv[1:]])
    with tempfile.TemporaryDirectory() as errors:
        os.environ[ERROR_DIR_ENV] = errors
        try:
            run(args)
        except Exception as exc:
            # A worker's own error line first, whatever the agent then raised: on several nodes a worker
            # that fails at once can take the rendezvous store down with its node's agent, and the other
            # agents then fail on the lost connection (DistNetworkError), not with ChildFailedError
            messages = [p.read_text() for p in sorted(Path(errors).glob("rank*.txt"))]
            if messages:
                raise BenchError(messages[0]) from None
            if not isinstance(exc, ChildFailedError):
                raise
            codes = ", ".join(f"rank {f.local_rank}: exit code {f.exitcode}" for f in exc.failures.values())
            raise BenchError(f"torchrun workers failed ({codes}); see their output above") from None
        finally:
            del os.environ[ERROR_DIR_ENV]


def _launch_node_agents(devices, nodes):
    """srun this script once per node (each a torchrun agent); their error line comes back as one BenchError.

    The agents' stdout passes straight through; from their stderr the `error: `
    lines (the same line from every node, as a rule) are kept back and the first
    is raised, and srun's and slurmstepd's lines about tasks that exited or were
    stopped are shown only when no error line says why.
    """
    alloc = slurm.require(nodes)
    first = alloc.nodes[0]
    endpoint = f"{slurm.node_address(first)}:{slurm.free_port(first)}"
    used = ", ".join(alloc.nodes[:nodes])
    env = dict(os.environ, **{RENDEZVOUS_ENV: endpoint, PLACEMENT_ENV: f"{used}; SLURM job {alloc.job_id}"})
    env.update({CPP_LOG_ENV: "ERROR", WORKER_CPP_LOG_ENV: os.environ.get(CPP_LOG_ENV, "")})
    command = [*slurm.srun_command(alloc, nodes), sys.executable, sys.argv[0], *sys.argv[1:]]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, bufsize=1)
    errors, srun_lines = [], []
    for line in proc.stderr:
        if line.startswith("error: "):
            errors.append(line.removeprefix("error: ").strip())
        elif line.startswith(("srun: ", "slurmstepd")):  # tasks that exited, or were stopped with the others
            srun_lines.append(line)
        else:
            sys.stderr.write(line)
    if proc.wait() == 0 or not errors:
        sys.stderr.writelines(srun_lines)
    if proc.returncode == 0:
        return
    if errors:
        raise BenchError(errors[0])
    raise BenchError(f"the torchrun agents on {used} failed (srun exit code {proc.returncode}); see the lines above")


def report_worker_error(message):
    """In a torchrun worker: hand the error line to the launcher; False outside torchrun."""
    folder = os.environ.get(ERROR_DIR_ENV)
    if not (folder and under_torchrun()):
        return False
    (Path(folder) / f"rank{os.environ.get('RANK', '0')}.txt").write_text(message)
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


def uses_batchnorm(model):
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def batchnorm_for_ddp(model, device, sync_bn):
    """`model` ready for DDP's BatchNorm: (model, one line for the log, or None for a model without BatchNorm).

    sync_bn on CUDA: BatchNorm layers become SyncBatchNorm (timm's converter,
    which keeps the activation of its fused BatchNormAct2d layers). The new
    layers take over the old ones' Parameter objects, buffers, train/eval mode
    and names, so frozen layers stay frozen (requires_grad False) and
    models.train_mode still finds them by name and keeps them in eval mode,
    where SyncBatchNorm uses its running statistics and never communicates.
    Otherwise the model is unchanged and each rank normalises over its share.
    """
    if not uses_batchnorm(model):
        return model, None
    if sync_bn and device.type == "cuda":
        from timm.layers import convert_sync_batchnorm

        return convert_sync_batchnorm(model), "BatchNorm: statistics over the global batch (SyncBatchNorm)"
    why = "compute.sync_bn is false" if not sync_bn else "SyncBatchNorm runs on CUDA only"
    return model, f"BatchNorm: statistics per process, over its share of the batch ({why})"


def ddp(model, device):
    """The model wrapped so that backward() averages gradients across ranks (DistributedDataParallel)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


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
