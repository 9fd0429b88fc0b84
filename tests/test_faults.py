"""Faults seen from the outside: stage scripts fail in one line, write nothing half-done, run no foreign code."""

import pickle
import subprocess
import sys

import pytest
import torch
import yaml

from cifar_fixtures import write_official_archive
from cifarbench import checkpoint
from cifarbench.errors import BenchError
from conftest import ROOT, tiny_params


def run_stage(folder, script, *args):
    return subprocess.run([sys.executable, str(ROOT / "stages" / script), *args], cwd=folder,
                          capture_output=True, text=True)


def one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_truncated_archive_leaves_no_data_folder_and_keeps_the_old_one(tmp_path):
    raw_dir = tmp_path / "data" / "raw"
    path, _ = write_official_archive(raw_dir, "cifar10", n_train=25, n_test=10)
    params = tiny_params(data__source="archive", data__dir=str(raw_dir), data__verify=False,
                         data__limit=0, data__val_size=5)
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
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    line = one_line_error(run_stage(tmp_path, "train_cifar10.py", "resnet18"))
    assert "dvc repro download@cifar10" in line


def test_evaluate_without_checkpoint_says_which_stage_to_run(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    assert run_stage(tmp_path, "download.py", "cifar10").returncode == 0
    line = one_line_error(run_stage(tmp_path, "evaluate.py", "resnet18", "cifar10"))
    assert "dvc repro train-cifar10@resnet18" in line


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
    assert "cannot be loaded safely" in refused(path)
