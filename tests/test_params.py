"""params.yaml validation: bad input stops early with one line naming the key."""

import subprocess
import sys

import pytest
import yaml

from cifarbench import params
from cifarbench.errors import BenchError
from conftest import ROOT, committed_params, set_dotted


def test_committed_params_are_the_real_benchmark():
    p = params.load(ROOT / "params.yaml")
    assert p.data.source == "auto" and p.data.limit == 0
    for key in ("resnet18", "efficientnet_b0", "dinov2_vitb14"):
        assert p.model(key).pretrained is True and p.model(key).img_size == 224
    assert p.transfer.dinov2_vitb14.freeze_blocks == 9
    assert p.train.dinov2_vitb14.optimizer == "adamw" and p.train.resnet18.optimizer == "sgd"


def test_tiny_params_validate(tiny_raw):
    p = params.parse(tiny_raw)
    assert p.data.source == "digits"


BAD = [
    ("data.sourc", "digits", "data.sourc: unknown key"),
    ("models.resnet34", {"arch": "resnet34", "pretrained": False, "img_size": 32}, "models.resnet34: unknown key"),
    ("models.resnet18.arch", "resnet_does_not_exist", "models.resnet18.arch: unknown timm model"),
    ("train.resnet18.lr", 0, "train.resnet18.lr: Input should be greater than 0"),
    ("train.resnet18.lr", -0.1, "train.resnet18.lr"),
    ("transfer.efficientnet_b0.epochs", 0, "transfer.efficientnet_b0.epochs: Input should be greater than or equal to 1"),
    ("models.dinov2_vitb14.img_size", 100, "models.dinov2_vitb14.img_size: 100 is not a multiple of"),
    ("transfer.dinov2_vitb14.freeze_blocks", 13, "transfer.dinov2_vitb14.freeze_blocks: 13 is more than the 12 blocks"),
    ("transfer.resnet18.freeze_blocks", 5, "transfer.resnet18.freeze_blocks: 5 is more than the 4 blocks"),
    ("data.source", "torrent", "data.source: Input should be 'auto', 'download', 'archive', 'folder' or 'digits'"),
    ("data.limit", -1, "data.limit: Input should be greater than or equal to 0"),
    ("data.val_size", 1.5, "data.val_size"),
    ("compute.device", "tpu", "compute.device: must be auto, cpu, cuda, cuda:N or mps"),
    ("train.resnet18.optimizer", "lion", "train.resnet18.optimizer"),
    ("train.resnet18.augment.flip", "yes", "train.resnet18.augment.flip: Input should be a valid boolean"),
    ("models.resnet18.kwargs", {"no_such_argument": 1}, "models.resnet18.kwargs: timm cannot build"),
]


@pytest.mark.parametrize("key,value,message", BAD, ids=[b[0] + "=" + str(b[1]) for b in BAD])
def test_bad_value_names_the_key(key, value, message):
    raw = committed_params()
    set_dotted(raw, key, value)
    with pytest.raises(BenchError) as err:
        params.parse(raw)
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_missing_key_is_named():
    raw = committed_params()
    del raw["train"]["resnet18"]["lr"]
    with pytest.raises(BenchError, match=r"train\.resnet18\.lr: missing key"):
        params.parse(raw)


def test_missing_model_is_named():
    raw = committed_params()
    del raw["models"]["efficientnet_b0"]
    with pytest.raises(BenchError, match=r"models\.efficientnet_b0: missing key"):
        params.parse(raw)


def test_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: [unclosed\n")
    with pytest.raises(BenchError, match="not valid YAML"):
        params.load(path)


def test_stage_script_prints_one_line_and_no_traceback(tmp_path):
    raw = committed_params()
    raw["train"]["resnet18"]["lr"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "train_cifar10.py"), "resnet18"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "train.resnet18.lr" in lines[0]
    assert not (tmp_path / "models").exists()  # nothing was started
