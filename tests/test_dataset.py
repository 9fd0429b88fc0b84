"""Prepared data files: limit, validation split, atomic folder swap, clear errors for missing inputs."""

import json
from pathlib import Path

import numpy as np
import pytest

from cifarbench import atomic
from cifarbench.data import dataset
from cifarbench.data.dataset import Dataset, Split
from cifarbench.errors import BenchError


def toy(n_train=200, n_test=50, classes=4, seed=0):
    rng = np.random.default_rng(seed)

    def split(n):
        labels = np.arange(n) % classes
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        images[:, 0, 0, 0] = np.arange(n) % 256  # a tag to follow images through the split
        return Split(images, labels, labels // 2)

    return Dataset(
        "cifar10", "toy", [f"c{i}" for i in range(classes)], split(n_train), split(n_test), coarse_classes=["a", "b"]
    )


def test_limit_caps_train_and_test_proportionally_and_stays_balanced():
    splits = dataset.prepare(toy(), limit=100, val_size=20, seed=0)
    assert len(splits["train"]) + len(splits["val"]) == 100
    assert len(splits["val"]) == 20
    assert len(splits["test"]) == 25  # 50 * 100 / 200
    assert np.bincount(splits["val"].labels).tolist() == [5, 5, 5, 5]


def test_validation_is_disjoint_from_training_and_seeded():
    a = dataset.prepare(toy(), limit=0, val_size=0.25, seed=0)
    b = dataset.prepare(toy(), limit=0, val_size=0.25, seed=0)
    c = dataset.prepare(toy(), limit=0, val_size=0.25, seed=1)
    assert len(a["val"]) == 50 and len(a["train"]) == 150
    train_rows = {img.tobytes() for img in a["train"].images}
    assert not any(img.tobytes() in train_rows for img in a["val"].images)
    assert np.array_equal(a["val"].images, b["val"].images)
    assert not np.array_equal(a["val"].images, c["val"].images)


@pytest.mark.parametrize("val_size", [200, 500, 1.0 - 1e-9])
def test_val_size_must_leave_training_images(val_size):
    with pytest.raises(BenchError, match=r"data\.val_size: .* from 200 training images"):
        dataset.prepare(toy(), limit=0, val_size=val_size, seed=0)


def test_save_and_load_round_trip(tmp_path):
    ds = toy()
    splits = dataset.prepare(ds, 0, 20, 0)
    dataset.save(ds, splits, tmp_path / "cifar10")
    for name, split in splits.items():
        loaded = dataset.load_split(tmp_path / "cifar10", name)
        assert np.array_equal(loaded.images, split.images) and np.array_equal(loaded.coarse, split.coarse)
    meta = dataset.load_meta(tmp_path / "cifar10")
    assert meta["counts"] == {"train": 180, "val": 20, "test": 50} and meta["coarse_classes"] == ["a", "b"]
    mapping = dataset.fine_to_coarse(splits["test"], 4)
    assert mapping.tolist() == [0, 0, 1, 1]


def test_a_crash_while_saving_leaves_the_old_folder_whole(tmp_path, monkeypatch):
    out = tmp_path / "cifar10"
    old = toy(seed=1)
    dataset.save(old, dataset.prepare(old, 0, 20, 0), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    real_save = atomic.save_npz
    calls = {"n": 0}

    def crash_on_second(path, **arrays):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # as if killed half-way
        real_save(path, **arrays)

    monkeypatch.setattr(atomic, "save_npz", crash_on_second)
    new = toy(seed=2)
    with pytest.raises(KeyboardInterrupt):
        dataset.save(new, dataset.prepare(new, 0, 20, 0), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar10"]  # no staging folder left behind


def test_missing_inputs_say_which_stage_to_run(tmp_path):
    with pytest.raises(BenchError, match=r"run `dvc repro download@cifar100` first"):
        dataset.load_split(tmp_path / "data" / "cifar100", "train")
    with pytest.raises(BenchError, match=r"run `dvc repro download@cifar10` first"):
        dataset.load_meta(tmp_path / "data" / "cifar10")


def test_atomic_write_never_leaves_a_partial_file(tmp_path):
    path = tmp_path / "metrics.json"
    atomic.write_json(path, {"top1": 0.5})
    with pytest.raises(ZeroDivisionError):
        with atomic.atomic_path(path) as tmp:
            tmp.write_text('{"top1": 0.')
            raise ZeroDivisionError("a crash halfway through writing")
    assert path.read_text() == '{\n  "top1": 0.5\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_files_get_the_usual_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "report.html", "<html></html>")
    finally:
        os.umask(mask)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644


def test_the_same_tensors_saved_twice_are_the_same_bytes(tmp_path):
    """DVC compares hashes: a training that computes the same weights again must write the same file, whatever
    temporary name the atomic write took (torch names an archive's folder after the file it is given)."""
    import torch

    state = {"weights": torch.arange(6.0).reshape(2, 3), "epoch": 3}
    atomic.torch_save(tmp_path / "a.pt", state)
    first = (tmp_path / "a.pt").read_bytes()
    atomic.torch_save(tmp_path / "a.pt", state)
    atomic.torch_save(tmp_path / "b.pt", state)
    assert (tmp_path / "a.pt").read_bytes() == first == (tmp_path / "b.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "b.pt", weights_only=True)["weights"], state["weights"])


# --- damaged inputs: every fault is one BenchError naming the file, the fault and the fix ---


@pytest.fixture
def prepared(tmp_path):
    """data/cifar10 as the download stage writes it: 10 classes in 5 coarse groups."""
    ds = toy(n_train=60, n_test=20, classes=10)
    ds.coarse_classes = list("abcde")
    folder = tmp_path / "data" / "cifar10"
    dataset.save(ds, dataset.prepare(ds, 0, 10, 0), folder)
    return folder


def rewrite_npz(path, **changes):
    """Save `path` again with some arrays replaced (or removed, given None)."""
    with np.load(path) as f:
        arrays = {name: f[name] for name in f.files}
    arrays.update(changes)
    with open(path, "wb") as f:
        np.savez(f, **{k: v for k, v in arrays.items() if v is not None})


def rewrite_meta(folder, **changes):
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(changes)
    for key in [k for k, v in changes.items() if v is ...]:
        del meta[key]
    (folder / "meta.json").write_text(json.dumps(meta))


def damage_report(call, path):
    with pytest.raises(BenchError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path} is damaged (")
    assert "rerun its stage: dvc repro -f download@cifar10" in message
    assert f"restore it: dvc checkout --force {path}" in message
    return message


def train_arrays(folder):
    with np.load(folder / "train.npz") as f:
        return {name: f[name] for name in f.files}


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "damage, expected",
    [
        (truncate, "not a readable .npz: File is not a zip file"),
        (lambda p: p.write_text("images,labels\n"), "not a readable .npz"),
        (lambda p: np.save(open(p, "wb"), np.zeros(3)), "not a readable .npz: it holds a single .npy array"),
        (lambda p: rewrite_npz(p, labels=None), "no labels array; it holds images, coarse"),
        (
            lambda p: rewrite_npz(p, images=train_arrays(p.parent)["images"].astype(np.float32)),
            "images are float32 (50, 32, 32, 3), expected uint8 (N, 32, 32, 3)",
        ),
        (lambda p: rewrite_npz(p, images=train_arrays(p.parent)["images"][:, :16]), "expected uint8 (N, 32, 32, 3)"),
        (
            lambda p: rewrite_npz(p, labels=train_arrays(p.parent)["labels"].astype(np.float64)),
            "labels are float64 (50,), expected integers (50,)",
        ),
        (
            lambda p: rewrite_npz(p, labels=np.where(np.arange(50) == 7, 52, train_arrays(p.parent)["labels"])),
            "labels run from 0 to 52, but meta.json has 10 classes: 0 to 9",
        ),
        (lambda p: rewrite_npz(p, labels=train_arrays(p.parent)["labels"] - 1), "labels run from -1 to 8"),
        (
            lambda p: rewrite_npz(p, coarse=train_arrays(p.parent)["coarse"] + 3),
            "coarse run from 3 to 7, but meta.json has 5 classes: 0 to 4",
        ),
        (
            lambda p: rewrite_npz(p, **{k: v[:-2] for k, v in train_arrays(p.parent).items()}),
            "48 images, but meta.json counts 50",
        ),
    ],
)
def test_damaged_split_is_named_with_the_fault_and_the_fix(prepared, damage, expected):
    path = prepared / "train.npz"
    damage(path)
    assert expected in damage_report(lambda: dataset.load_split(prepared, "train"), path)


def test_a_bad_label_is_caught_with_meta_given_too(prepared):
    meta = dataset.load_meta(prepared)
    rewrite_npz(prepared / "val.npz", labels=np.full(10, 52))
    assert "labels run from 52 to 52" in damage_report(
        lambda: dataset.load_split(prepared, "val", meta), prepared / "val.npz"
    )


def write_text(folder, text):
    (folder / "meta.json").write_text(text)


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda f: truncate(f / "meta.json"), "not valid JSON: "),
        (lambda f: (f / "meta.json").write_bytes(b"\xff\xfe\x00garbage"), "not valid JSON: 'utf-8' codec can't decode"),
        (lambda f: write_text(f, "[1, 2]"), "not a JSON object but [1, 2]"),
        (lambda f: rewrite_meta(f, classes=..., counts=...), "no classes, counts keys"),
        (
            lambda f: rewrite_meta(f, classes="0123456789"),
            'classes should be a non-empty list of class names, not "0123',
        ),
        (lambda f: rewrite_meta(f, classes=[]), "classes should be a non-empty list of class names, not []"),
        (lambda f: rewrite_meta(f, stand_in="no"), 'stand_in should be true or false, not "no"'),
        (lambda f: rewrite_meta(f, image_size=[32]), "image_size should be [height, width], not [32]"),
        (lambda f: rewrite_meta(f, counts={"train": "50"}), "counts should be an object of image counts per split"),
        (
            lambda f: rewrite_meta(f, fine_to_coarse=[0, 1]),
            "fine_to_coarse should be null or 10 coarse indices below 5",
        ),
        (lambda f: rewrite_meta(f, coarse_classes=None), "fine_to_coarse should be null or 10 coarse indices below 0"),
    ],
)
def test_damaged_meta_is_named_with_the_fault_and_the_fix(prepared, damage, expected):
    damage(prepared)
    for load in (lambda: dataset.load_meta(prepared), lambda: dataset.load_split(prepared, "test")):
        assert expected in damage_report(load, prepared / "meta.json")


def test_meta_without_the_split_count_is_named(prepared):
    rewrite_meta(prepared, counts={"train": 50, "val": 10})
    assert "counts has no 'test' entry" in damage_report(
        lambda: dataset.load_split(prepared, "test"), prepared / "meta.json"
    )


def test_checks_change_nothing_a_good_folder_loads_as(prepared):
    meta = dataset.load_meta(prepared)
    assert meta == json.loads((prepared / "meta.json").read_text())
    for name in dataset.SPLITS:
        split = dataset.load_split(prepared, name)
        with np.load(prepared / f"{name}.npz") as f:
            assert np.array_equal(split.images, f["images"]) and np.array_equal(split.labels, f["labels"])
            assert np.array_equal(split.coarse, f["coarse"]) and split.labels.dtype == np.int64


def test_broken_json_handed_between_stages_names_the_stage_and_git_restore(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = Path("metrics/evaluate/resnet18-cifar10.json")
    atomic.write_json(path, {"top1": 0.5})
    assert atomic.read_json(path) == {"top1": 0.5}
    path.write_text('{"top1": ')  # cut short
    with pytest.raises(BenchError) as err:
        atomic.read_json(path)
    assert str(err.value) == (
        "metrics/evaluate/resnet18-cifar10.json is damaged (not valid JSON: Expecting value: line 1 column 10 "
        "(char 9)); rerun its stage: dvc repro -f evaluate@resnet18-cifar10, or restore it: "
        "git checkout metrics/evaluate/resnet18-cifar10.json"
    )
    with pytest.raises(
        BenchError,
        match=r"logs/train-cifar10/resnet18/metrics.json is missing: "
        r"run `dvc repro train-cifar10@resnet18` first",
    ):
        atomic.read_json(Path("logs/train-cifar10/resnet18/metrics.json"))
