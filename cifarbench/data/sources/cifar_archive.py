"""Read the official CIFAR "python version" archives without trusting them.

The archives come from the internet, so this module never extracts to disk
(members are read into memory in one streaming pass), refuses links, device
files and paths that climb out of the archive, and unpickles with an
allow-list that admits only what numpy arrays need: a tampered pickle cannot
run code.
"""

import _codecs
import io
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from cifarbench.data.dataset import Dataset, Split
from cifarbench.errors import BenchError

try:  # numpy >= 2 keeps the array machinery in numpy._core
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

# Member names inside each archive, and the pickle keys that hold the labels.
LAYOUTS = {
    "cifar10": {
        "title": "CIFAR-10",
        "train": [f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)],
        "test": ["cifar-10-batches-py/test_batch"],
        "meta": "cifar-10-batches-py/batches.meta",
        "label_key": "labels",
        "names_key": "label_names",
    },
    "cifar100": {
        "title": "CIFAR-100",
        "train": ["cifar-100-python/train"],
        "test": ["cifar-100-python/test"],
        "meta": "cifar-100-python/meta",
        "label_key": "fine_labels",
        "names_key": "fine_label_names",
    },
}

# The official pickles were written by numpy 1.x (numpy.core...); pickles written
# by numpy 2 name numpy._core. Both resolve to the same function, taken from the
# import above so that loading never touches the deprecated numpy.core module.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,  # how protocol-2 pickles spell bytes
}

IMAGE_SIDE = 32
ROW_LENGTH = 3 * IMAGE_SIDE * IMAGE_SIDE
# The largest official member (CIFAR-100 train) is about 155 MB; a member far
# beyond that is not CIFAR and must not be read into memory.
MAX_MEMBER_BYTES = 512 * 2**20


def read_archive(path, dataset):
    """Parse the official archive of `dataset` ("cifar10" or "cifar100") at `path`."""
    layout = LAYOUTS[dataset]
    path = Path(path)
    members = _read_members(path, layout)
    meta = _unpickle(members[layout["meta"]], path, layout["meta"])
    classes = _names(meta, layout["names_key"], path, layout["meta"])
    coarse_classes = _names(meta, "coarse_label_names", path, layout["meta"]) if dataset == "cifar100" else None
    train = _read_split(members, layout["train"], path, layout, dataset)
    test = _read_split(members, layout["test"], path, layout, dataset)
    for split in (train, test):
        _check_label_range(split.labels, len(classes), path, "labels")
        if coarse_classes is not None:
            _check_label_range(split.coarse, len(coarse_classes), path, "coarse labels")
    return Dataset(dataset, f"{layout['title']} (official archive)", classes, train, test, coarse_classes)


def _corrupt(path, problem):
    return BenchError(
        f"{path} is not a usable CIFAR archive ({problem}); delete it and download it again, "
        "or put a good copy of the official file in its place"
    )


def _read_members(path, layout):
    """Bytes of every member the layout names; one streaming pass that checks every member."""
    if not path.is_file():
        raise BenchError(f"{path} is missing: put the official {layout['title']} archive there")
    wanted = {*layout["train"], *layout["test"], layout["meta"]}
    found = {}
    try:
        with tarfile.open(path, mode="r|*") as tar:  # stream: each member is decompressed once
            for member in tar:
                _refuse_unsafe_member(member, path)
                name = member.name.removeprefix("./")
                if name in wanted and member.isfile():
                    if member.size > MAX_MEMBER_BYTES:
                        raise _corrupt(path, f"{name} is {member.size} bytes, far larger than CIFAR data")
                    found[name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise _corrupt(path, f"{type(exc).__name__}: {exc}") from exc
    missing = sorted(wanted - found.keys())
    if missing:
        raise _corrupt(path, f"no member {missing[0]}: not the {layout['title']} python-version archive")
    return found


def _refuse_unsafe_member(member, path):
    """A CIFAR archive holds plain files and folders at relative paths, nothing else."""
    name = member.name
    if name.startswith("/"):
        reason = "an absolute path"
    elif ".." in name.split("/"):
        reason = "a '..' path component"
    elif member.issym() or member.islnk():
        reason = "a link"
    elif member.isdev():
        reason = "a device or fifo"
    elif not (member.isfile() or member.isdir()):
        reason = "not a plain file"
    else:
        return
    raise BenchError(
        f"{path}: refusing the archive because member {name!r} is {reason}, which the official "
        "CIFAR archives never contain; delete it and download the official archive again"
    )


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals numpy arrays need; anything else is refused."""

    def __init__(self, data, source):
        super().__init__(io.BytesIO(data), encoding="latin1")  # the official pickles are Python 2 cPickle
        self.source = source

    def find_class(self, module, name):
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise BenchError(
                f"{self.source}: refusing to unpickle the global {module}.{name}, which CIFAR data never "
                "needs (the file may be tampered with); delete it and download the official archive again"
            )
        return allowed


def _unpickle(data, path, member):
    try:
        obj = _RestrictedUnpickler(data, f"{path}:{member}").load()
    except BenchError:
        raise
    except Exception as exc:  # a damaged pickle can fail in many ways; all mean "bad file"
        raise _corrupt(path, f"{member} is not a readable pickle: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise _corrupt(path, f"{member} holds a {type(obj).__name__}, not a dict")
    return {_text(key): value for key, value in obj.items()}  # str and bytes keys alike


def _text(value):
    return value.decode("latin1") if isinstance(value, bytes) else value


def _field(record, key, path, member):
    if key not in record:
        raise _corrupt(path, f"{member} has no {key!r} entry")
    return record[key]


def _names(meta, key, path, member):
    names = _field(meta, key, path, member)
    if not isinstance(names, (list, tuple)):
        raise _corrupt(path, f"{member} {key} is a {type(names).__name__}, not a list")
    return [str(_text(name)) for name in names]


def _read_split(members, batch_names, path, layout, dataset):
    """Concatenate the batches of one split; rows are R(1024) G(1024) B(1024), turned into HWC."""
    images, labels, coarse = [], [], []
    for member in batch_names:
        record = _unpickle(members.pop(member), path, member)  # pop: free each pickle once parsed
        rows = np.asarray(_field(record, "data", path, member))
        if rows.dtype != np.uint8 or rows.ndim != 2 or rows.shape[1] != ROW_LENGTH:
            raise _corrupt(path, f"{member} data is {rows.dtype} {rows.shape}, expected uint8 (N, {ROW_LENGTH})")
        images.append(rows.reshape(-1, 3, IMAGE_SIDE, IMAGE_SIDE).transpose(0, 2, 3, 1))
        labels.append(_labels(record, layout["label_key"], len(rows), path, member))
        if dataset == "cifar100":
            coarse.append(_labels(record, "coarse_labels", len(rows), path, member))
    return Split(
        np.concatenate(images),
        np.concatenate(labels),
        np.concatenate(coarse) if coarse else None,
    )


def _labels(record, key, count, path, member):
    try:
        labels = np.asarray(_field(record, key, path, member), dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise _corrupt(path, f"{member} {key} are not integers") from exc
    if labels.shape != (count,):
        raise _corrupt(path, f"{member} has {labels.size} {key} for {count} images")
    return labels


def _check_label_range(labels, n_classes, path, what):
    if len(labels) and not 0 <= labels.min() <= labels.max() < n_classes:
        raise _corrupt(path, f"{what} outside 0..{n_classes - 1}")
