"""The entry of stages that run models: entry.run plus model checks, the device and torchrun.

It reruns a training stage under torchrun when `compute.devices` > 1, or on
several SLURM nodes (srun, one torchrun agent each) when `compute.nodes` > 1,
before importing anything the workers alone need; a worker's error line goes
to the launcher. Then, before any work, it checks that timm can build every
model as params.yaml asks (cifarbench.models.checks), chooses the device and
prints it, with the reason, as the stage's first line.
"""

import os

import torch

from cifarbench.errors import BenchError
from cifarbench.pipeline import entry
from cifarbench.runtime import device as runtimelib
from cifarbench.runtime import distributed, memory


def run(logic, doc, *, args=(), torchrun=False, argv=None):
    """Run a model stage's `logic(Stage)` with `Stage.runtime` set; see entry.run."""

    def setup(s):
        compute = s.params.compute
        # First: with compute.devices or compute.nodes > 1 this process (and each node's agent) only starts
        # torchrun's workers, which run everything below, the model checks included (a worker's error line
        # comes back as this process's), so it never imports timm (~1.5 s of a core each)
        if torchrun and distributed.relaunch_under_torchrun(compute.devices, compute.nodes):
            return None  # the torchrun workers ran this stage
        from cifarbench.models import checks  # timm

        checks.check(s.params)
        s.runtime = runtimelib.resolve(s.params.compute)
        if entry.is_first_rank():
            print(s.runtime.describe_choice(), flush=True)
        return s

    def guarded(s):
        try:
            return logic(s)
        except torch.OutOfMemoryError:  # one line, as every other stop; training's own names its recipe's batch
            batches = "its recipe's batch_size or compute.eval_batch_size" if torchrun else "compute.eval_batch_size"
            where = f"in {os.path.basename(s.script)} {s.model}"
            doing = f"{where} at compute.eval_batch_size {s.params.compute.eval_batch_size}"
            fix = f"lower {batches}, or use a card with more memory"
            raise BenchError(memory.out_of_memory(s.runtime.device, doing, fix)) from None

    return entry.run(guarded, doc, args=args, setup=setup, report_error=distributed.report_worker_error, argv=argv)
