"""The entry of stages that run models: stage.run plus model checks, the device and torchrun.

Before any work it checks that timm can build every model as params.yaml asks
(cifarbench.checks), chooses the device and prints it, with the reason, as the
stage's first line, and reruns a training stage under torchrun when
`compute.devices` > 1; a worker's error line goes to the launcher.
"""

from cifarbench import checks, distributed, stage
from cifarbench import runtime as runtimelib


def run(logic, doc, *, args=(), torchrun=False, argv=None):
    """Run a model stage's `logic(Stage)` with `Stage.runtime` set; see stage.run."""

    def setup(s):
        checks.check(s.params)
        if torchrun and distributed.relaunch_under_torchrun(s.params.compute.devices):
            return None  # compute.devices > 1: the torchrun workers ran this stage
        s.runtime = runtimelib.resolve(s.params.compute)
        if stage.is_first_rank():
            print(s.runtime.describe_choice(), flush=True)
        return s

    return stage.run(logic, doc, args=args, setup=setup, report_error=distributed.report_worker_error, argv=argv)
