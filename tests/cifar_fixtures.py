"""Small CIFAR archives in the official formats, written by tests that must not download.

`write_official_archive(data_dir, "cifar10")` puts a tiny `cifar-10-python.tar.gz`
(or `cifar-100-python.tar.gz`) in data_dir, with the official member names,
pickle keys and R|G|B row layout, and returns the path plus the Dataset it
holds. Images carry a class-dependent colour so that end-to-end tests can see a
model learn something.
"""

import gzip
import io
import pickle
import struct
import tarfile

import numpy as np

from cifarbench.data.dataset import Dataset, Split
from cifarbench.data.sources.cifar_names import (
    CIFAR10_CLASSES,
    CIFAR100_COARSE_CLASSES,
    CIFAR100_FINE_CLASSES,
    CIFAR100_FINE_TO_COARSE,
)
from cifarbench.data.sources.download import archive_path

FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
PICKLE_STYLES = ("python2", "bytes-keys", "str-keys")


def fake_dataset(dataset, n_train=25, n_test=10, seed=0):
    """Random images whose colour depends on the class; every class appears when n allows."""
    rng = np.random.default_rng(seed)
    if dataset == "cifar10":
        classes, coarse_classes = list(CIFAR10_CLASSES), None
    else:
        classes, coarse_classes = list(CIFAR100_FINE_CLASSES), list(CIFAR100_COARSE_CLASSES)

    def split(n):
        labels = rng.permutation(np.arange(n) % len(classes))
        tint = (labels[:, None] * np.array([37, 91, 53])) % 128  # (n, 3) class colour
        images = rng.integers(0, 128, size=(n, 32, 32, 3)) + tint[:, None, None, :]
        coarse = np.asarray(CIFAR100_FINE_TO_COARSE)[labels] if coarse_classes else None
        return Split(images.astype(np.uint8), labels, coarse)

    return Dataset(dataset, "fake", classes, split(n_train), split(n_test), coarse_classes)


def to_rows(images):
    """(N, 32, 32, 3) HWC -> the archives' (N, 3072) rows: all red, then green, then blue."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), -1)


def write_official_archive(data_dir, dataset, n_train=25, n_test=10, seed=0, **options):
    """Write fake_dataset(...) as the official archive in data_dir; returns (path, dataset)."""
    ds = fake_dataset(dataset, n_train, n_test, seed)
    path = archive_path(dataset, data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_archive(path, ds, **options)
    return path, ds


def write_archive(path, ds, pickle_style="python2", numpy_module="numpy.core.multiarray", replace=None):
    """Write `ds` in the official layout of ds.name.

    pickle_style: "python2" writes byte strings as Python 2 `str` (what the
    official cPickle files hold); "bytes-keys"/"str-keys" are Python 3 pickles.
    numpy_module: the module the pickles name for numpy's `_reconstruct`
    (the official files say numpy.core.multiarray). replace: {member name:
    bytes} to swap a member's content, e.g. for a malicious pickle.
    """
    members = official_members(ds, pickle_style, numpy_module)
    members.update(replace or {})
    folder = FOLDERS[ds.name]
    entries = [(directory(folder), None)] + [(regular(name), data) for name, data in members.items()]
    write_tar_gz(path, entries)


def official_members(ds, pickle_style="python2", numpy_module="numpy.core.multiarray"):
    """{member name: pickle bytes} in the official layout, plus the readme the archives carry."""
    folder = FOLDERS[ds.name]

    def dump(record):
        return dumps(record, pickle_style, numpy_module)

    if ds.name == "cifar10":
        members = {f"{folder}/batches.meta": dump({"label_names": ds.classes, "num_cases_per_batch": 10000})}
        batches = np.array_split(np.arange(len(ds.train)), 5)  # the official five batches, tiny
        for number, index in enumerate(batches, start=1):
            members[f"{folder}/data_batch_{number}"] = dump(_cifar10_batch(ds.train.subset(index), number))
        members[f"{folder}/test_batch"] = dump(_cifar10_batch(ds.test, "test"))
        members[f"{folder}/readme.html"] = b"<html>CIFAR-10</html>"
        return members
    return {
        f"{folder}/meta": dump({"fine_label_names": ds.classes, "coarse_label_names": ds.coarse_classes}),
        f"{folder}/train": dump(_cifar100_split(ds.train, "train")),
        f"{folder}/test": dump(_cifar100_split(ds.test, "test")),
        f"{folder}/file.txt~": b"",
    }


def _filenames(split):
    return [f"image_{i:05d}.png" for i in range(len(split))]


def _cifar10_batch(split, number):
    return {
        "batch_label": f"batch {number}",
        "labels": split.labels.tolist(),  # the official files hold plain lists of ints
        "data": to_rows(split.images),
        "filenames": _filenames(split),
    }


def _cifar100_split(split, name):
    return {
        "filenames": _filenames(split),
        "batch_label": f"{name} batch",
        "fine_labels": split.labels.tolist(),
        "coarse_labels": split.coarse.tolist(),
        "data": to_rows(split.images),
    }


class _Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (the BINSTRING opcode), as the official cPickle files do."""

    def save_bytes(self, obj):
        self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes}


def _as_bytes(obj):
    """Strings in `obj` (dict keys, names) as bytes, recursively."""
    if isinstance(obj, str):
        return obj.encode("latin1")
    if isinstance(obj, dict):
        return {_as_bytes(key): _as_bytes(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_as_bytes(item) for item in obj]
    return obj


def dumps(record, pickle_style="python2", numpy_module="numpy.core.multiarray"):
    if pickle_style == "python2":
        buffer = io.BytesIO()
        _Python2Pickler(buffer, protocol=2).dump(_as_bytes(record))
        data = buffer.getvalue()
    elif pickle_style == "bytes-keys":
        data = pickle.dumps(_as_bytes(record), protocol=2)
    else:
        data = pickle.dumps(record, protocol=2)
    # protocol 2 names globals as text lines, so the numpy module can be swapped in place
    for module in (b"numpy._core.multiarray", b"numpy.core.multiarray"):
        data = data.replace(b"c" + module + b"\n_reconstruct\n", b"c" + numpy_module.encode() + b"\n_reconstruct\n")
    return data


def regular(name):
    return tarfile.TarInfo(name)


def directory(name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info


def write_tar_gz(path, entries):
    """Write (TarInfo, bytes or None) entries as a reproducible .tar.gz (fixed mtimes)."""
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
