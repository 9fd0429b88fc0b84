"""Atomic file writes: write a temporary file in the same folder, then rename.

A crash or a kill never leaves a truncated file that a later stage would read:
readers see either the old file or the complete new one. `read_json` is the
reading side of the JSON files stages hand each other (checked in inputs.py).
"""

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give them the usual permissions
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # flush to disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask():
    mask = os.umask(0)  # the only way to read the umask is to set it
    os.umask(mask)
    return mask


def write_text(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path, data):
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path):
    """A JSON file another stage wrote; missing or broken, a one-line BenchError (see inputs.py)."""
    from cifarbench import inputs  # late: inputs reads, this module writes

    return inputs.read_json(path)


def save_npz(path, **arrays):
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object stops numpy appending ".npz"
            np.savez(f, **arrays)


def torch_save(path, obj):
    """torch.save through an open file: given a path, torch names the archive's inner folder after the file, and
    the temporary file's name is random, so saving the same tensors twice gave other bytes and DVC, which compares
    hashes, reran every stage after a training that had computed exactly the same weights."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def save_figure(path, fig, **kwargs):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
