"""The in-memory dataset every source produces, and the prepared files stages read.

A source (official archive, image folder, digits stand-in) yields a `Dataset`
of uint8 (N, 32, 32, 3) arrays. `prepare` caps it (`data.limit`) and carves the
validation split out of the training set; `save` writes one small .npz per
split plus meta.json under data/<dataset>/. Training reads train and val only;
the test split is read only by evaluate and embed. `load_meta` and `load_split`
check each file (arrays, shapes, dtypes, label range, counts) against meta.json
before a stage uses it: a damaged file stops the stage in one line naming it.
"""

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifarbench import atomic, inputs
from cifarbench.errors import BenchError

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    images: np.ndarray  # (N, H, W, 3) uint8, HWC like the official archives
    labels: np.ndarray  # (N,) int64 fine labels
    coarse: np.ndarray | None = None  # (N,) int64 CIFAR-100 superclass labels

    def __post_init__(self):
        self.images = np.ascontiguousarray(self.images, dtype=np.uint8)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.coarse is not None:
            self.coarse = np.asarray(self.coarse, dtype=np.int64)
        if self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be (N, H, W, 3), got {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self):
        return len(self.labels)

    def subset(self, index):
        coarse = None if self.coarse is None else self.coarse[index]
        return Split(self.images[index], self.labels[index], coarse)


@dataclass
class Dataset:
    name: str  # the pipeline slot: cifar10 or cifar100
    source: str  # what filled it: "CIFAR-10 archive", "digits stand-in", ...
    classes: list[str]
    train: Split
    test: Split
    coarse_classes: list[str] | None = None
    stand_in: bool = False  # True for the offline digits data: never presented as CIFAR


def _stratified_take(split, n, seed):
    """Indices of a class-balanced random subset of n items (plain random if a class is too small)."""
    if n >= len(split):
        return np.arange(len(split))
    from sklearn.model_selection import train_test_split  # 2 s import: only the download stage needs it

    index = np.arange(len(split))
    counts = np.bincount(split.labels)
    stratify = split.labels if counts[counts > 0].min() >= 2 and n >= len(np.unique(split.labels)) else None
    taken, _ = train_test_split(index, train_size=n, random_state=seed, stratify=stratify)
    return np.sort(taken)


def resolve_val_count(val_size, n_train):
    """data.val_size is a count (int >= 1) or a fraction of the training set (0 < x < 1)."""
    count = round(val_size * n_train) if isinstance(val_size, float) and val_size < 1 else int(val_size)
    if not 1 <= count < n_train:
        raise BenchError(
            f"data.val_size: {val_size} gives {count} validation images from {n_train} training images; "
            f"use a count between 1 and {n_train - 1} or a fraction between 0 and 1"
        )
    return count


def test_digest(images, labels):
    """sha256 over the test labels and pixels as scored (dtype and shape included): equal digests, same test set."""
    import hashlib

    h = hashlib.sha256()
    for array in (np.asarray(labels, dtype="<i8"), np.asarray(images)):
        array = np.ascontiguousarray(array)
        h.update(f"{array.dtype.str}{array.shape};".encode())
        h.update(array.tobytes())
    return f"sha256:{h.hexdigest()}"


def test_index(ds, limit, seed):
    """Each test-split image's index in the source's test set: all of them, or data.limit's stratified share."""
    if limit and limit < len(ds.train):
        return _stratified_take(ds.test, max(1, round(len(ds.test) * limit / len(ds.train))), seed)
    return np.arange(len(ds.test))


def prepare(ds, limit, val_size, seed):
    """Apply data.limit and split validation off the training set; returns {split: Split}."""
    train, test = ds.train, ds.test.subset(test_index(ds, limit, seed))
    if limit and limit < len(train):
        train = train.subset(_stratified_take(train, limit, seed))
    n_val = resolve_val_count(val_size, len(train))
    val_index = _stratified_take(train, n_val, seed + 1)
    keep = np.ones(len(train), dtype=bool)
    keep[val_index] = False
    return {"train": train.subset(np.flatnonzero(keep)), "val": train.subset(val_index), "test": test}


def save(ds, splits, out_dir):
    """Write the splits and meta.json into a fresh folder, then swap it in whole.

    A crash mid-way leaves only a hidden temporary folder, never a data folder
    with some splits old and some new.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        _write(ds, splits, staging)
        if out_dir.exists():
            retired = staging.with_name(staging.name + ".old")
            out_dir.rename(retired)
            staging.rename(out_dir)
            shutil.rmtree(retired)
        else:
            staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write(ds, splits, out_dir):
    for name, split in splits.items():
        arrays = {"images": split.images, "labels": split.labels}
        if split.coarse is not None:
            arrays["coarse"] = split.coarse
        atomic.save_npz(out_dir / f"{name}.npz", **arrays)
    meta = {
        "dataset": ds.name,
        "source": ds.source,
        "stand_in": ds.stand_in,
        "classes": list(ds.classes),
        "coarse_classes": list(ds.coarse_classes) if ds.coarse_classes else None,
        "fine_to_coarse": _fine_to_coarse_list(splits.values(), len(ds.classes)),
        "counts": {name: len(split) for name, split in splits.items()},
        "image_size": list(splits["train"].images.shape[1:3]),
    }
    atomic.write_json(out_dir / "meta.json", meta)


# meta.json's keys; stages read every one of them
META_KEYS = ("dataset", "source", "stand_in", "classes", "coarse_classes", "fine_to_coarse", "counts", "image_size")


def load_meta(data_dir):
    """meta.json of a prepared data folder, checked to be well-formed; a BenchError names any fault."""
    path = Path(data_dir) / "meta.json"
    meta = inputs.read_json(path)
    problem = _meta_problem(meta)
    if problem:
        raise inputs.damaged(path, problem)
    return meta


def load_split(data_dir, split, meta=None):
    """One split, checked against meta.json (loaded when not given) before any stage uses it.

    Labels outside the class range would otherwise surface mid-training as an IndexError.
    For 50,000 CIFAR images (150 MB) the checks add one min and one max over the 50,000
    labels (well under a millisecond); shapes and dtypes cost nothing. No pass over the images.
    """
    data_dir = Path(data_dir)
    path = data_dir / f"{split}.npz"
    arrays = inputs.read_npz(path, ("images", "labels"), ("coarse",))
    meta = load_meta(data_dir) if meta is None else meta
    if split not in meta["counts"]:
        raise inputs.damaged(data_dir / "meta.json", f"counts has no {split!r} entry")
    problem = _split_problem(arrays, meta, meta["counts"][split])
    if problem:
        raise inputs.damaged(path, problem)
    return Split(arrays["images"], arrays["labels"], arrays.get("coarse"))


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_names(value):
    return isinstance(value, list) and len(value) > 0 and all(isinstance(v, str) for v in value)


def _brief(value):
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _meta_problem(meta):
    """What is wrong with meta.json's content (as save() writes it), or None."""
    if not isinstance(meta, dict):
        return f"not a JSON object but {_brief(meta)}"
    absent = [key for key in META_KEYS if key not in meta]
    if absent:
        return f"no {', '.join(absent)} key{'s' if len(absent) > 1 else ''}"
    checks = {
        "dataset": (isinstance(meta["dataset"], str), "a name"),
        "source": (isinstance(meta["source"], str), "a description"),
        "stand_in": (isinstance(meta["stand_in"], bool), "true or false"),
        "classes": (_is_names(meta["classes"]), "a non-empty list of class names"),
        "coarse_classes": (
            meta["coarse_classes"] is None or _is_names(meta["coarse_classes"]),
            "null or a non-empty list of class names",
        ),
        "counts": (
            isinstance(meta["counts"], dict) and all(_is_int(n) and n >= 0 for n in meta["counts"].values()),
            "an object of image counts per split",
        ),
        "image_size": (
            isinstance(meta["image_size"], list)
            and len(meta["image_size"]) == 2
            and all(_is_int(v) and v > 0 for v in meta["image_size"]),
            "[height, width]",
        ),
    }
    for key, (ok, expected) in checks.items():
        if not ok:
            return f"{key} should be {expected}, not {_brief(meta[key])}"
    mapping, coarse = meta["fine_to_coarse"], meta["coarse_classes"]
    if mapping is not None:
        n, groups = len(meta["classes"]), len(coarse or [])
        # -1 marks a fine class that none of the splits holds
        valid = isinstance(mapping, list) and len(mapping) == n
        if not (valid and all(_is_int(g) and -1 <= g < groups for g in mapping)):
            return f"fine_to_coarse should be null or {n} coarse indices below {groups}, not {_brief(mapping)}"
    return None


def _split_problem(arrays, meta, count):
    """What is wrong with a split's arrays, given meta.json, or None."""
    images = arrays["images"]
    height, width = meta["image_size"]
    if images.dtype != np.uint8 or images.shape[1:] != (height, width, 3):
        return f"images are {images.dtype} {images.shape}, expected uint8 (N, {height}, {width}, 3)"
    if len(images) != count:
        return f"{len(images)} images, but meta.json counts {count}"
    coarse = meta["coarse_classes"]
    if "coarse" in arrays and coarse is None:
        return "holds coarse labels, but meta.json has no coarse_classes"
    for name, n_classes in (("labels", len(meta["classes"])), ("coarse", len(coarse or []))):
        values = arrays.get(name)
        if values is None:
            continue
        if not np.issubdtype(values.dtype, np.integer) or values.shape != (count,):
            return f"{name} are {values.dtype} {values.shape}, expected integers ({count},)"
        low, high = (int(values.min()), int(values.max())) if count else (0, 0)
        if low < 0 or high >= n_classes:
            return f"{name} run from {low} to {high}, but meta.json has {n_classes} classes: 0 to {n_classes - 1}"
    return None


def fine_to_coarse(split, n_classes):
    """Coarse group of each fine class, read off the labels (None without coarse labels)."""
    if split.coarse is None:
        return None
    mapping = np.full(n_classes, -1, dtype=np.int64)
    mapping[split.labels] = split.coarse
    return mapping


def _fine_to_coarse_list(splits, n_classes):
    """meta.json's fine_to_coarse: the mapping read off every split (-1 for a class none of them has)."""
    mappings = [m for m in (fine_to_coarse(s, n_classes) for s in splits) if m is not None]
    if not mappings:
        return None
    return np.max(mappings, axis=0).tolist()
