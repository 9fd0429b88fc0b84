"""Run a training stage script and send it a signal in the middle of its second epoch.

    python tests/stop_in_second_epoch.py SIGNAL STATE_FILE STAGE_SCRIPT [ARGS...]

SIGNAL `OutOfMemoryError` instead raises torch's out-of-memory error there, as the CUDA allocator
does when a card is full, after copying the state file to STATE_FILE.before (a CPU cannot run out of
device memory on cue).

The signal comes from the stage's own process, right after the first optimizer step that follows
the first epoch's resumable state reaching disk: the weights, the optimizer and the random streams
have all moved past what was saved, as in a real interruption, and the stop lands at the same place
on a fast or a loaded machine. STATE_FILE is the stage's resumable state (cifarbench.paths.
training_state), written at the end of every epoch; only torch's public optimizer hook and that
file are used, nothing of the training code.

SIGINT is handled as in a program started from an interactive terminal (Python's
KeyboardInterrupt), whatever the test process inherited: a command a non-interactive shell starts
in the background (`make test &`, `nohup`, some CI runners) has SIGINT ignored, and so has every
process it starts (POSIX; /proc/self/status shows it in SigIgn). The suite run that way saw the
stage ignore the signal, finish its epochs and exit 0.
"""

import os
import runpy
import shutil
import signal
import sys
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

OUT_OF_MEMORY = "OutOfMemoryError"


def main(argv):
    sig, state_file, script, *args = argv
    state = Path(state_file)

    def after_step(optimizer, step_args, step_kwargs):
        if not state.is_file():  # written at the end of epoch 1, never before in a fresh run
            return
        if sig == OUT_OF_MEMORY:
            shutil.copyfile(state, f"{state}.before")
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (the test's launcher)")
        os.kill(os.getpid(), signal.Signals[sig])

    signal.signal(signal.SIGINT, signal.default_int_handler)
    register_optimizer_step_post_hook(after_step)
    sys.argv = [script, *args]
    sys.path[0] = str(Path(script).parent)  # as when Python runs the script itself
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
