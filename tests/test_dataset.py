"""Prepared data files: limit, validation split, atomic folder swap, clear errors for missing inputs."""

import numpy as np
import pytest

from cifarbench import atomic, dataset
from cifarbench.dataset import Dataset, Split
from cifarbench.errors import BenchError


def toy(n_train=200, n_test=50, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    def split(n):
        labels = np.arange(n) % classes
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        images[:, 0, 0, 0] = np.arange(n) % 256  # a tag to follow images through the split
        return Split(images, labels, labels // 2)
    return Dataset("cifar10", "toy", [f"c{i}" for i in range(classes)], split(n_train), split(n_test),
                   coarse_classes=["a", "b"])


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
            1 / 0
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
