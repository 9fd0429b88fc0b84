"""The SLURM allocation a training stage runs in, and the `srun` that starts one torchrun agent per node.

Read from what SLURM sets in a job: SLURM_JOB_ID, SLURM_JOB_NUM_NODES,
SLURM_JOB_NODELIST (expanded with `scontrol show hostnames`) and
SLURM_JOB_CPUS_PER_NODE. The rendezvous host is the first node's NodeAddr
(`scontrol show node`), the address slurmd itself is reached at, so it works
where node names are not host names. None of this enters params or the resume
fingerprint: the same recipe, submitted again, resumes on whichever nodes it
gets.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass

from cifarbench.errors import BenchError

SCONTROL_TIMEOUT = 30  # seconds: a controller that does not answer must not hang the stage


@dataclass(frozen=True)
class Allocation:
    job_id: str
    nodes: tuple  # host names, in SLURM's order (the first runs the batch script)
    cpus_per_node: int  # the fewest CPUs any of its nodes has for this job (0 = unknown)


def _scontrol(*args):
    tool = shutil.which("scontrol")
    if tool is None:
        raise BenchError("scontrol not found on PATH: run the stage on a SLURM node, or set compute.nodes: 1")
    try:
        proc = subprocess.run([tool, *args], capture_output=True, text=True, timeout=SCONTROL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BenchError(f"`scontrol {' '.join(args)}` did not answer in {SCONTROL_TIMEOUT} s") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise BenchError(f"`scontrol {' '.join(args)}` failed: {why}")
    return proc.stdout


def cpus_per_node(text):
    """The fewest CPUs per node in SLURM_JOB_CPUS_PER_NODE's form ('4(x2),8' -> 4); 0 when it is unreadable."""
    counts = [int(m.group(1)) for m in re.finditer(r"(\d+)(?:\(x\d+\))?(?:,|$)", text or "")]
    return min(counts) if counts else 0


def allocation(environ=None):
    """The allocation this process runs in, or None outside a SLURM job."""
    env = os.environ if environ is None else environ
    job = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job:
        return None
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    nodes = tuple(_scontrol("show", "hostnames", nodelist).split()) if nodelist else ()
    return Allocation(job, nodes, cpus_per_node(env.get("SLURM_JOB_CPUS_PER_NODE", "")))


def require(nodes, environ=None):
    """The allocation, if it has at least `nodes` nodes; else BenchError naming what was found and the fix."""
    found = allocation(environ)
    fix = f"submit it with `sbatch -N {nodes} --wrap 'dvc repro'` (or salloc -N {nodes}), or set compute.nodes: 1"
    if found is None:
        raise BenchError(f"compute.nodes is {nodes}, but this runs outside a SLURM allocation (no SLURM_JOB_ID): {fix}")
    if len(found.nodes) < nodes:
        raise BenchError(
            f"compute.nodes is {nodes}, but SLURM job {found.job_id} has {len(found.nodes)} node"
            f"{'' if len(found.nodes) == 1 else 's'} ({', '.join(found.nodes) or 'none listed'}): {fix}"
        )
    return found


def node_address(node):
    """The address slurmd on `node` is reached at (its NodeAddr; the node name where SLURM shows none)."""
    match = re.search(r"\bNodeAddr=(\S+)", _scontrol("show", "node", "-o", node))
    return match.group(1) if match else node


FREE_PORT = "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"


def free_port(node):
    """A TCP port free now on `node`: asked here when this process runs there (a batch script does), else by srun."""
    if os.environ.get("SLURMD_NODENAME") == node or socket.gethostname().split(".")[0] == node:
        with socket.socket() as s:
            s.bind(("", 0))
            return s.getsockname()[1]
    out = subprocess.run(
        ["srun", "--nodes=1", "--ntasks=1", f"--nodelist={node}", "--export=ALL", sys.executable, "-c", FREE_PORT],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0 or not out.stdout.strip().isdigit():
        raise BenchError(f"could not find a free port on {node} for the rendezvous (srun: {out.stderr.strip()[-200:]})")
    return int(out.stdout.strip())


def srun_command(alloc, nodes):
    """srun that starts one task (a torchrun agent) on each of the first `nodes` nodes, with their CPUs.

    The first node is among them: it hosts the rendezvous.
    The step gets every GPU the job holds on each node (srun's default for generic
    resources); --export=ALL even under `sbatch --export=NONE`, so the agents see the
    rendezvous; --kill-on-bad-exit stops the other agents when one fails.
    """
    if shutil.which("srun") is None:
        raise BenchError(f"srun not found on PATH inside SLURM job {alloc.job_id}: run the stage on a SLURM node")
    cpus = [f"--cpus-per-task={alloc.cpus_per_node}"] if alloc.cpus_per_node else []
    return [
        "srun",
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        f"--nodelist={','.join(alloc.nodes[:nodes])}",
        "--ntasks-per-node=1",
        *cpus,
        "--kill-on-bad-exit=1",
        "--export=ALL",
    ]
