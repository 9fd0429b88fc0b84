"""Files one stage hands the next: read them or stop with one line naming the file, the fault and the fix.

Disks, copies between machines and hand edits damage files. A stage never
trusts what an earlier stage wrote: every problem becomes a `BenchError`
(`error: <file> is damaged (<what>); rerun its stage: dvc repro -f <stage>,
or restore it: dvc checkout --force <file>`), never a zipfile or JSON traceback.
The stage that writes each file is looked up in `paths.producing_stage`.
"""

import json
import zipfile
import zlib
from pathlib import Path

import numpy as np

from cifarbench import paths
from cifarbench.errors import BenchError


def fix(path):
    """How to get a good `path` back: rerun the stage that writes it, or restore the committed copy."""
    stage = paths.producing_stage(path)
    rerun = f"dvc repro -f {stage}" if stage else "dvc repro -f <the stage that writes it>"
    return f"rerun its stage: {rerun}, or restore it: {paths.restore_command(path)}"


def unusable(path, what):
    """`<path> <what>; <fix>` as a BenchError (what: 'is not a CIFARbench checkpoint', ...)."""
    return BenchError(f"{path} {what}; {fix(path)}")


def damaged(path, problem):
    return unusable(path, f"is damaged ({problem})")


def missing(path):
    stage = paths.producing_stage(path)
    if stage is None:
        return BenchError(f"{path} is missing: run `dvc repro` to produce every stage's output first")
    return BenchError(f"{path} is missing: run `dvc repro {stage}` first")


def first_line(exc):
    """The gist of an exception's message: its first sentence, or its type when it has none."""
    text = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
    return text.rstrip(".") or type(exc).__name__


def read_json(path):
    """A JSON file another stage wrote, checked to be readable, well-formed JSON."""
    path = Path(path)
    if not path.is_file():
        raise missing(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(path, f"not valid JSON: {first_line(exc)}") from None


def read_npz(path, required, optional=()):
    """The named arrays of an .npz another stage wrote: {name: array} with every `required` name.

    Reads each array once, as np.load would anyway; never unpickles object arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise missing(path)
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise damaged(path, "not a readable .npz: it holds a single .npy array")
        with f:
            absent = [name for name in required if name not in f.files]
            if absent:
                held = ", ".join(f.files) or "nothing"
                raise damaged(path, f"no {', '.join(absent)} array{'s' if len(absent) > 1 else ''}; it holds {held}")
            return {name: f[name] for name in (*required, *optional) if name in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        # truncated or overwritten zip, bad CRC, pickled objects, an array header numpy cannot parse
        raise damaged(path, f"not a readable .npz: {first_line(exc)}") from None
