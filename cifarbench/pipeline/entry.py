"""The one entry every stage script goes through, so a script holds only its own logic.

`run(logic, doc, args=...)` parses the stage's arguments (model keys checked
against params.yaml's registry, seeds against `seeds`), loads params, prints
first which device the stage uses, and turns a user error (BenchError,
ParamsError) into one line on stderr and exit status 2. Stages that run
models go through model_entry.run, which adds the model checks, the device
choice and torchrun on top of this; this module stays free of torch, so a
file-only stage's code is small (see sourcefiles.py).
"""

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

from cifarbench import params as paramslib
from cifarbench.errors import BenchError
from cifarbench.paths import DATASETS

ARGUMENTS = ("model", "dataset", "seed")  # what a stage may take, in this order on its command line


@dataclass
class Stage:
    """What a stage's logic gets: validated params, its arguments, and where tensors run."""

    params: paramslib.Params
    model: str | None = None
    dataset: str | None = None
    seed: int | None = None
    runtime: Any = None  # a runtime.Runtime for stages that run models (model_entry), else None
    script: str = ""  # the stage script's path: its import closure is the stage's code (sourcefiles.py)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, not the usage block
        raise BenchError(f"{self.prog}: {message} (see `python {sys.argv[0]} --help`)")


def _arguments(doc, names, argv):
    parser = _Parser(description=doc, prog=os.path.basename(sys.argv[0]))
    helps = {
        "model": "a model key under params.yaml's models:",
        "dataset": " or ".join(DATASETS),
        "seed": "a training seed from params.yaml's seeds:",
    }
    for name in names:
        parser.add_argument(name, help=helps[name])
    return parser.parse_args(argv)


def _checked(ns, params):
    model, dataset, seed = (getattr(ns, name, None) for name in ARGUMENTS)
    if model is not None and model not in params.models:
        raise BenchError(f"unknown model {model!r}: params.yaml's models: has {', '.join(params.keys)}")
    if dataset is not None and dataset not in DATASETS:
        raise BenchError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    if seed is not None:
        if not seed.isdigit() or int(seed) not in params.seeds:
            raise BenchError(f"seed {seed!r} is not in params.yaml's seeds: {params.seeds}")
        seed = int(seed)
    return Stage(params, model, dataset, seed, script=sys.argv[0])


def is_first_rank():
    """Rank 0 under torchrun (RANK is set before the process group exists), or a plain process."""
    return os.environ.get("RANK", "0") == "0"


def run(logic, doc, *, args=(), setup=None, report_error=None, argv=None):
    """Run a stage script's `logic(Stage)`; returns its result.

    setup(Stage) -> Stage | None: prepares what the logic needs (device, checks) and prints
    the device line itself; None means the stage ran elsewhere (torchrun workers).
    report_error(message) -> bool: hands the error line on instead of printing it (torchrun workers).
    """
    unknown = set(args) - set(ARGUMENTS)
    assert not unknown, f"stage arguments are {ARGUMENTS}, not {unknown}"
    try:
        ns = _arguments(doc, [a for a in ARGUMENTS if a in args], argv)
        s = _checked(ns, paramslib.load())
        if setup is None:
            print("device: none (this stage reads and writes files only)", flush=True)
        else:
            s = setup(s)
            if s is None:
                return None
        return logic(s)
    except (BenchError, paramslib.ParamsError) as exc:
        if not (report_error and report_error(str(exc))):
            print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
