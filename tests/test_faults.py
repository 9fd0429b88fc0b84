"""Faults seen from the outside: stage scripts fail in one line, write nothing half-done, run no foreign code."""

import pickle
import sys

import numpy as np
import pytest
import torch
import yaml
from cifar_fixtures import fake_dataset, write_official_archive
from conftest import dump, run_stage_here, tiny_params, write_params

from cifarbench import paths
from cifarbench.data import dataset
from cifarbench.data.sources import released_c
from cifarbench.errors import BenchError
from cifarbench.models import checkpoint


def run_stage(folder, script, *args):
    """The stage script in `folder`, run in this process (conftest.run_stage_here: the same code, no ~8 s of
    imports per run)."""
    return run_stage_here(folder, script, *args)


def one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_truncated_archive_leaves_no_data_folder_and_keeps_the_old_one(tmp_path):
    raw_dir = tmp_path / "data" / "raw"
    path, _ = write_official_archive(raw_dir, "cifar10", n_train=25, n_test=10)
    params = tiny_params(
        data__source="archive", data__dir=str(raw_dir), data__verify=False, data__limit=0, data__val_size=5
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage(tmp_path, "download.py", "cifar10")
    assert proc.returncode == 0, proc.stderr
    good = {p.name: p.read_bytes() for p in (tmp_path / "data" / "cifar10").iterdir()}

    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # cut short, as by an interrupted download
    line = one_line_error(run_stage(tmp_path, "download.py", "cifar10"))
    assert "cifar-10-python.tar.gz" in line
    assert {p.name: p.read_bytes() for p in (tmp_path / "data" / "cifar10").iterdir()} == good
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cifar10", "raw"]


def test_later_stage_without_data_says_to_run_download(tmp_path):
    write_params(tmp_path)
    line = one_line_error(run_stage(tmp_path, "train_cifar10.py", "resnet18", "0"))
    assert "dvc repro download@cifar10" in line


def test_training_with_stale_recipes_says_to_run_dvc_repro(tmp_path):
    write_params(tmp_path)
    (tmp_path / "params.yaml").write_text(dump(tiny_params(train__resnet18__lr=0.123)))  # edited after recipes ran
    line = one_line_error(run_stage(tmp_path, "train_cifar10.py", "resnet18", "0"))
    assert line == (
        "error: recipes/train-cifar10/resnet18.json is out of date with params.yaml: run `dvc repro` "
        "(its recipes stage resolves params.yaml first)"
    )


def test_evaluate_without_checkpoint_says_which_stage_to_run(tmp_path):
    write_params(tmp_path)
    assert run_stage(tmp_path, "download.py", "cifar10").returncode == 0
    line = one_line_error(run_stage(tmp_path, "evaluate.py", "resnet18", "cifar10", "0"))
    assert "dvc repro train-cifar10@resnet18-0" in line


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # would create a file on unpickling


def refused(path):
    with pytest.raises(BenchError) as err:
        checkpoint.read(path)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_checkpoint_with_pickled_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "cifar10" / "resnet18.pt"
    path.parent.mkdir()
    torch.save({"format": 1, "state_dict": {}, "evil": _Payload(marker)}, path)
    assert "cannot be loaded safely" in refused(path)
    assert not marker.exists()


def test_checkpoint_that_is_not_ours_is_refused(tmp_path):
    path = tmp_path / "m.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    assert "not a CIFARbench checkpoint" in refused(path)
    path.write_bytes(pickle.dumps([1, 2, 3])[:5])  # truncated
    assert "is damaged (not a readable checkpoint" in refused(path)


def test_truncated_checkpoint_names_the_stage_that_writes_it(tmp_path):
    path = tmp_path / "models" / "cifar100" / "resnet18-0.pt"  # the per-seed name
    path.parent.mkdir(parents=True)
    torch.save({"format": 1, "state_dict": {"w": torch.zeros(1000)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert refused(path) == (
        f"{path} is damaged (not a readable checkpoint: PytorchStreamReader failed reading zip archive: failed "
        f"finding central directory); rerun its stage: dvc repro -f transfer-cifar100@resnet18-0, "
        f"or restore it: dvc checkout --force {path}"
    )


@pytest.mark.parametrize(
    "path, stage",
    [
        ("data/cifar10/train.npz", "download@cifar10"),
        ("/elsewhere/data/cifar100/meta.json", "download@cifar100"),
        ("models/cifar10/resnet18.pt", "train-cifar10@resnet18"),
        ("models/cifar10/dinov2_vitb14-2.pt", "train-cifar10@dinov2_vitb14-2"),
        ("models/cifar100/efficientnet_b0.state.pt", "transfer-cifar100@efficientnet_b0"),
        ("models/umap/resnet18-cifar100-0.npz", "embed@resnet18-cifar100-0"),
        ("logs/transfer-cifar100/resnet18-0/metrics.json", "transfer-cifar100@resnet18-0"),
        ("metrics/efficiency/resnet18-cifar10-0.json", "evaluate@resnet18-cifar10-0"),
        ("metrics/embed/resnet18-cifar100-1.json", "embed@resnet18-cifar100-1"),
        ("metrics/summary.json", "report"),
        ("metrics/cost.json", "report"),
        ("recipes/train-cifar10/resnet18.json", "recipes"),
        ("params.yaml", None),
    ],
)
def test_every_handed_over_file_has_its_producing_stage(path, stage):
    assert paths.producing_stage(path) == stage


def prepared_project(folder, *datasets):
    write_params(folder)
    for name in datasets:
        ds = fake_dataset(name, n_train=40, n_test=10)
        dataset.save(ds, dataset.prepare(ds, 0, 8, 0), folder / paths.data_dir(name))
        released_c.write({"set": name, "source": "generated", "why": "a test's data"}, folder / paths.data_dir(name))


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def label_52(path):
    with np.load(path) as f:
        labels = f["labels"].copy()
        images = f["images"]
    labels[3] = 52  # as in the issue: "IndexError: Target 52 is out of bounds"
    with open(path, "wb") as f:
        np.savez(f, images=images, labels=labels)


def truncated_checkpoint(folder):
    path = folder / paths.checkpoint("cifar10", "resnet18", 0)
    path.parent.mkdir(parents=True)
    torch.save({"format": 1, "state_dict": {"w": torch.zeros(1000)}}, path)
    truncate(path)


@pytest.mark.parametrize(
    "script, damage, expected",
    [
        (
            "train_cifar10.py",
            lambda f: truncate(f / "data/cifar10/train.npz"),
            "error: data/cifar10/train.npz is damaged (not a readable .npz: File is not a zip file); rerun its stage: "
            "dvc repro -f download@cifar10, or restore it: dvc checkout --force data/cifar10/train.npz",
        ),
        (
            "train_cifar10.py",
            lambda f: label_52(f / "data/cifar10/train.npz"),
            "error: data/cifar10/train.npz is damaged (labels run from 0 to 52, but meta.json has 10 classes: "
            "0 to 9); rerun its stage: dvc repro -f download@cifar10, or restore it: "
            "dvc checkout --force data/cifar10/train.npz",
        ),
        (
            "transfer_cifar100.py",
            truncated_checkpoint,
            "error: models/cifar10/resnet18-0.pt is damaged (not a readable checkpoint: PytorchStreamReader failed "
            "reading zip archive: failed finding central directory); rerun its stage: "
            "dvc repro -f train-cifar10@resnet18-0, "
            "or restore it: dvc checkout --force models/cifar10/resnet18-0.pt",
        ),
    ],
    ids=["truncated-npz", "label-52", "truncated-checkpoint"],
)
def test_stage_with_a_damaged_input_stops_in_one_line(tmp_path, script, damage, expected):
    prepared_project(tmp_path, "cifar10", "cifar100")
    damage(tmp_path)
    proc = run_stage(tmp_path, script, "resnet18", "0")
    assert one_line_error(proc) == expected
    assert "Traceback" not in proc.stdout


def test_damaged_training_curve_names_the_training_stage(tmp_path, monkeypatch):
    from cifarbench.pipeline import report

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "logs/train-cifar10/resnet18-0/plots/metrics/val/acc.tsv"
    path.parent.mkdir(parents=True)
    path.write_text("timestamp\tstep\tacc\n1\t0\t0.5\n2\t1\n")  # the last row cut short
    with pytest.raises(BenchError) as err:
        report.read_curve("logs/train-cifar10/resnet18-0", "val/acc")
    message = str(err.value)
    assert message.startswith("logs/train-cifar10/resnet18-0/plots/metrics/val/acc.tsv is damaged (not a DVCLive table")
    assert message.endswith(
        "rerun its stage: dvc repro -f train-cifar10@resnet18-0, or restore it: "
        "git checkout logs/train-cifar10/resnet18-0/plots/metrics/val/acc.tsv"
    )


def test_settings_the_data_cannot_serve_stop_at_download_keeping_the_old_data(tmp_path):
    """data.limit 600 on the 100-class slot leaves ~5 training images per class: the default 25-shot probe
    cannot run. The download stage says so in one short line, before any model trains, and keeps the old data."""
    write_params(tmp_path, tiny_params(data__source="digits", data__limit=600, data__val_size=0.1, probe__shots=[1]))
    assert run_stage(tmp_path, "download.py", "cifar100").returncode == 0
    good = {p.name: p.read_bytes() for p in (tmp_path / "data" / "cifar100").iterdir()}
    write_params(
        tmp_path, tiny_params(data__source="digits", data__limit=600, data__val_size=0.1, probe__shots=[1, 5, 10, 25])
    )
    line = one_line_error(run_stage(tmp_path, "download.py", "cifar100"))
    assert line.startswith("error: probe.shots: the 25-shot probe needs 25 training images per class, but 100 of 100 ")
    assert "(data.limit: 600)" in line and "keep probe.shots at or below " in line and len(line) < 240, line
    assert {p.name: p.read_bytes() for p in (tmp_path / "data" / "cifar100").iterdir()} == good
    write_params(tmp_path, tiny_params(data__source="digits", data__limit=50, data__val_size=0.1))
    line = one_line_error(run_stage(tmp_path, "download.py", "cifar100"))
    assert "classes have no training image (data.limit: 50); raise data.limit" in line, line


def test_out_of_memory_outside_training_names_the_eval_batch(tmp_path, monkeypatch, capsys):
    """evaluate, embed and probe run at compute.eval_batch_size: torch's out-of-memory error there is one line."""
    from cifarbench.pipeline import model_entry

    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)

    def runs_out(s):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")

    monkeypatch.setattr(sys, "argv", ["stages/evaluate.py"])
    with pytest.raises(SystemExit) as stopped:
        model_entry.run(runs_out, "doc", args=("model", "dataset", "seed"), argv=["resnet18", "cifar100", "0"])
    assert stopped.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: out of memory in evaluate.py resnet18 at compute.eval_batch_size 512 on the CPU's ")
    assert line.endswith(" GiB; lower compute.eval_batch_size, or use a card with more memory")
