"""The entry of stages that run models: entry.run plus model checks, the device and torchrun.

Before any work it checks that timm can build every model as params.yaml asks
(cifarbench.models.checks), chooses the device and prints it, with the reason, as the
stage's first line, and reruns a training stage under torchrun when
`compute.devices` > 1, or on several SLURM nodes (srun, one torchrun agent
each) when `compute.nodes` > 1; a worker's error line goes to the launcher.
"""

import os

import torch

from cifarbench.errors import BenchError
from cifarbench.models import checks
from cifarbench.pipeline import entry
from cifarbench.runtime import device as runtimelib
from cifarbench.runtime import distributed, memory


def run(logic, doc, *, args=(), torchrun=False, argv=None):
    """Run a model stage's `logic(Stage)` with `Stage.runtime` set; see entry.run."""

    def setup(s):
        checks.check(s.params)
        compute = s.params.compute
        if torchrun and distributed.relaunch_under_torchrun(compute.devices, compute.nodes):
            return None  # compute.devices or compute.nodes > 1: the torchrun workers ran this stage
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
