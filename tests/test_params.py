"""params.yaml validation: read as DVC reads it, recipes as defaults plus differences, one line naming the key."""

import copy
import subprocess
import sys

import pytest
from conftest import ROOT, committed_params, dump, run_stage_here, set_dotted

from cifarbench import params, paths
from cifarbench.errors import BenchError
from cifarbench.models import checks


def test_committed_params_are_the_real_benchmark():
    p = params.load(ROOT / "params.yaml")
    assert p.data.source == "auto" and p.data.limit == 0 and p.seeds == [0]
    assert p.keys == ["resnet18", "efficientnet_b0", "dinov2_vitb14"]
    for key in p.keys:
        assert p.model(key).pretrained is True and p.model(key).img_size == 224
        assert p.recipe("train", key).schedule == "cosine" and p.recipe("train", key).warmup_epochs == 1
    assert p.recipe("transfer", "dinov2_vitb14").freeze_blocks == 9
    assert p.recipe("train", "dinov2_vitb14").optimizer == "adamw" and p.recipe("train", "resnet18").optimizer == "sgd"
    assert p.recipe("train", "dinov2_vitb14").lr == 5e-5 and p.recipe("train", "dinov2_vitb14").layer_decay == 0.75
    assert p.recipe("train", "efficientnet_b0").weight_decay == 1e-4  # its own
    assert p.recipe("train", "efficientnet_b0").batch_size == 128  # from train.defaults
    # a transfer recipe starts from train.defaults, then transfer.defaults, then the model's own keys
    assert p.recipe("transfer", "resnet18").init == "cifar10" and p.recipe("transfer", "resnet18").epochs == 15
    assert (
        p.recipe("transfer", "dinov2_vitb14").lr == 1e-4 and p.recipe("transfer", "dinov2_vitb14").layer_decay is None
    )
    checks.check(p)


def test_tiny_params_validate(tiny_raw):
    p = params.parse(tiny_raw)
    assert p.data.source == "digits"


def test_a_model_is_one_registry_entry():
    """A model with no train:/transfer: section of its own trains with the defaults."""
    raw = committed_params()
    raw["models"]["resnet10t"] = {"arch": "resnet10t", "img_size": 176}
    p = params.parse(raw)
    assert p.keys[-1] == "resnet10t" and p.model("resnet10t").pretrained is True
    defaults = raw["train"]["defaults"]
    assert p.recipe("train", "resnet10t").lr == defaults["lr"] and p.recipe("train", "resnet10t").epochs == 15
    assert p.recipe("transfer", "resnet10t").freeze_blocks == 0
    checks.check(p)


def test_a_full_per_model_section_still_works():
    raw = committed_params()
    full = copy.deepcopy(raw["train"]["defaults"])
    full.update(lr=0.123, epochs=7)
    keys = ("resnet18", "efficientnet_b0", "dinov2_vitb14")
    raw["train"] = {key: full for key in keys}  # no defaults at all, as the pre-registry params.yaml was
    raw["transfer"] = {key: dict(full, init="cifar10", freeze_blocks=1) for key in keys}
    p = params.parse(raw)
    assert p.recipe("train", "resnet18").lr == 0.123 and p.recipe("train", "dinov2_vitb14").epochs == 7
    assert p.recipe("transfer", "dinov2_vitb14").freeze_blocks == 1


def test_a_nested_override_merges_key_by_key():
    raw = committed_params()
    raw["train"]["resnet18"]["augment"] = {"flip": False}
    augment = params.parse(raw).recipe("train", "resnet18").augment
    assert augment.flip is False and augment.crop_padding == 4  # the rest from train.defaults


# every spelling `dvc exp run -S` writes into params.yaml, read as DVC reads it (YAML 1.2)
SPELLINGS = [("2e-05", 2e-5), ("1e-3", 1e-3), ("1E-4", 1e-4), (".5", 0.5), ("5", 5.0), ("5.0e-5", 5e-5)]


@pytest.mark.parametrize("text,value", SPELLINGS, ids=[s for s, _ in SPELLINGS])
def test_float_spellings_load_as_dvc_reads_them(tmp_path, text, value):
    source = (ROOT / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(source.replace("    lr: 5.0e-5\n", f"    lr: {text}\n", 1))
    assert params.load(path).recipe("train", "dinov2_vitb14").lr == pytest.approx(value)


@pytest.mark.parametrize("text,value", [("true", True), ("false", False)])
def test_booleans_load(tmp_path, text, value):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace("  verify: true", f"  verify: {text}", 1))
    assert params.load(path).data.verify is value


def test_a_string_where_a_number_belongs_names_the_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace("    lr: 5.0e-5\n", "    lr: fast\n", 1))
    with pytest.raises(params.ParamsError, match=r"^[^\n]*train\.dinov2_vitb14\.lr: Input should be a valid number"):
        params.load(path)


BAD = [
    ("data.sourc", "digits", "data.sourc: unknown key"),
    ("train.resnet34", {"lr": 0.1}, "train.resnet34: no model 'resnet34' under models:"),
    ("train.resnet18.lr", 0, "train.resnet18.lr: Input should be greater than 0"),
    ("train.resnet18.lr", -0.1, "train.resnet18.lr"),
    ("train.defaults.lr", -0.1, "train.defaults.lr: Input should be greater than 0"),  # even where overridden
    ("train.resnet18.lrr", 0.1, "train.resnet18.lrr: unknown key"),
    ("train.defaults.schedule", "linear", "train.defaults.schedule: Input should be 'cosine'"),
    (
        "transfer.efficientnet_b0.epochs",
        0,
        "transfer.efficientnet_b0.epochs: Input should be greater than or equal to 1",
    ),
    ("transfer.defaults.init", "scratch", "transfer.defaults.init: Input should be 'cifar10' or 'imagenet'"),
    ("data.source", "torrent", "data.source: Input should be 'auto', 'download', 'archive', 'folder' or 'digits'"),
    ("data.limit", -1, "data.limit: Input should be greater than or equal to 0"),
    ("data.val_size", 1.5, "data.val_size"),
    ("compute.device", "tpu", "compute.device: must be auto, cpu, cuda, cuda:N or mps"),
    ("train.resnet18.optimizer", "lion", "train.resnet18.optimizer"),
    ("train.resnet18.augment.flip", "yes", "train.resnet18.augment.flip: Input should be a valid boolean"),
    ("train.resnet18.epochs", 1, "train.resnet18: warmup_epochs (1) must be fewer than epochs (1)"),
    ("models.resnet18.img_size", 4, "models.resnet18.img_size: Input should be greater than or equal to 8"),
    ("models.bad-key", {"arch": "resnet18", "img_size": 32}, "models.bad-key: a model key is letters, digits and _"),
    ("seeds", [0, 0], "seeds: [0, 0] repeats a seed"),
    ("seeds", [], "seeds: List should have at least 1 item"),
    ("evaluate.bootstrap", 10, "evaluate.bootstrap: Input should be greater than or equal to 1000"),
    ("tune.lr_scale", [1.0, 1.0], "tune.lr_scale: [1.0, 1.0] repeats a value; list each factor once"),
    ("tune.lr_scale", [], "tune.lr_scale: List should have at least 1 item"),
    ("tune.lr_scale", [0.0, 1.0], "tune.lr_scale.0: Input should be greater than 0"),
    ("tune.epochs", 0, "tune.epochs: Input should be greater than or equal to 1"),
    ("tune.enable", True, "tune.enable: unknown key"),
    ("protocol", "fair", "protocol: Input should be 'recipes' or 'matched'"),
    ("matched.evaluate", {}, "matched.evaluate: unknown key; matched: holds train: and transfer:"),
    ("matched.train", 5, "matched.train: Input should be a valid dictionary (got 5)"),
    ("matched.train.optimizer", "lion", "matched.train.optimizer"),  # checked even under protocol: recipes
    ("matched.transfer.freeze_share", 1.5, "matched.transfer.freeze_share: Input should be less than or equal to 1"),
]


@pytest.mark.parametrize("key,value,message", BAD, ids=[b[0] + "=" + str(b[1]) for b in BAD])
def test_bad_value_names_the_key(key, value, message):
    raw = committed_params()
    set_dotted(raw, key, value)
    with pytest.raises(params.ParamsError) as err:
        params.parse(raw)
    text = str(err.value)
    assert message in text
    assert "\n" not in text


# what only timm can tell: checked by cifarbench.models.checks before any stage works
BAD_MODELS = [
    ("models.resnet18.arch", "resnet_does_not_exist", "models.resnet18.arch: unknown timm model"),
    ("models.dinov2_vitb14.img_size", 100, "models.dinov2_vitb14.img_size: 100 is not a multiple of"),
    ("transfer.dinov2_vitb14.freeze_blocks", 13, "transfer.dinov2_vitb14.freeze_blocks: 13 is more than the 12 blocks"),
    ("transfer.resnet18.freeze_blocks", 5, "transfer.resnet18.freeze_blocks: 5 is more than the 4 blocks"),
    ("models.resnet18.kwargs", {"no_such_argument": 1}, "models.resnet18.kwargs: timm cannot build"),
]


@pytest.mark.parametrize("key,value,message", BAD_MODELS, ids=[b[0] + "=" + str(b[1]) for b in BAD_MODELS])
def test_model_that_timm_cannot_build_names_the_key(key, value, message):
    raw = committed_params()
    set_dotted(raw, key, value)
    with pytest.raises(BenchError) as err:
        checks.check(params.parse(raw))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_missing_key_is_named():
    raw = committed_params()
    del raw["train"]["defaults"]["momentum"]
    with pytest.raises(params.ParamsError, match=r"train\.defaults\.momentum: missing key"):
        params.parse(raw)


def test_empty_registry_is_refused():
    raw = committed_params()
    raw["models"] = {}
    raw["train"] = {"defaults": raw["train"]["defaults"]}
    raw["transfer"] = {"defaults": raw["transfer"]["defaults"]}
    with pytest.raises(params.ParamsError, match="models: is empty"):
        params.parse(raw)


def test_invalid_yaml(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: [unclosed\n")
    with pytest.raises(params.ParamsError, match="not valid YAML"):
        params.load(path)


def test_stage_script_prints_one_line_and_no_traceback(tmp_path):
    raw = committed_params()
    raw["train"]["resnet18"]["lr"] = -1
    (tmp_path / "params.yaml").write_text(dump(raw))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train_cifar10.py"), "resnet18", "0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "train.resnet18.lr" in lines[0]
    assert not (tmp_path / "models").exists()  # nothing was started


def test_stage_refuses_a_model_or_seed_not_in_params(tmp_path):
    (tmp_path / "params.yaml").write_text(dump(committed_params()))
    for args, message in ((["resnet99", "0"], "unknown model 'resnet99'"), (["resnet18", "7"], "seed '7' is not in")):
        proc = run_stage_here(tmp_path, "train_cifar10.py", *args)  # in this process; a real one: the test above
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_the_digest_skips_speed_settings_and_follows_what_decides_the_numbers():
    """The report prints the digest and reruns for none of the speed settings (params.SPEED_ONLY)."""
    base = params.parse(committed_params()).digest()

    def digest(key, value):
        raw = committed_params()
        set_dotted(raw, key, value)
        return params.parse(raw).digest()

    for key, value in (
        ("compute.compile", False),
        ("compute.eval_batch_size", 64),
        ("compute.nodes", 2),
        ("train.efficientnet_b0.compile", True),
        ("transfer.efficientnet_b0.compile", True),
        ("train.resnet18.momentum", 0.9),  # the default written out again: the same resolved recipe
    ):
        assert digest(key, value) == base, key
    for key, value in (("compute.precision", "fp32"), ("train.resnet18.lr", 0.02), ("evaluate.bootstrap", 2000)):
        assert digest(key, value) != base, key


MATCHED_FIELDS = ("optimizer", "lr", "weight_decay", "layer_decay", "epochs", "batch_size", "schedule", "warmup_epochs")


def test_the_matched_protocol_gives_every_model_one_recipe_in_the_files_the_trainings_read():
    """protocol: matched: the recipe files of every model hold the same optimizer, schedule, epochs, batch and
    frozen share (only `compile`, a speed setting, stays each model's own); the committed recipes differ."""
    from cifarbench.pipeline import recipes

    def resolved(raw):
        files = recipes.contents(params.parse(raw))
        return {
            (stage, key): files[paths.recipe(stage, key)]["recipe"]
            for stage in ("train-cifar10", "transfer-cifar100")
            for key in raw["models"]
        }

    raw = committed_params()
    own = resolved(raw)
    assert len({own[("train-cifar10", k)]["optimizer"] for k in raw["models"]}) == 2  # SGD and AdamW
    raw["protocol"] = "matched"
    matched = resolved(raw)
    for stage in ("train-cifar10", "transfer-cifar100"):
        recipes_of_stage = [matched[(stage, key)] for key in raw["models"]]
        assert all(r == recipes_of_stage[0] for r in recipes_of_stage), stage
        for field in MATCHED_FIELDS:
            expected = {**raw["train"]["defaults"], **raw["matched"]["train"]}[field]
            assert recipes_of_stage[0][field] == expected, (stage, field)
    transfer = matched[("transfer-cifar100", "dinov2_vitb14")]
    assert transfer["freeze_share"] == 0.5 and transfer["freeze_blocks"] == 0  # not the ViT's own 9 blocks
    p = params.parse(raw)
    assert [p.recipe("train", k).compile for k in p.keys] == [True, False, True]  # speed: each model's own
    # the share as counts: 4, 7 and 12 block groups
    assert [p.recipe("transfer", "resnet18").frozen_blocks(n) for n in (4, 7, 12)] == [2, 4, 6]


def test_a_freeze_count_or_share_set_later_replaces_the_other():
    raw = committed_params()
    raw["transfer"]["defaults"]["freeze_share"] = 0.25
    p = params.parse(raw)
    assert p.recipe("transfer", "resnet18").frozen_blocks(12) == 3  # the default share
    assert p.recipe("transfer", "dinov2_vitb14").frozen_blocks(12) == 9  # the ViT's own count wins
    raw["transfer"]["dinov2_vitb14"]["freeze_share"] = 0.5
    with pytest.raises(params.ParamsError) as err:
        params.parse(raw)
    assert "transfer.dinov2_vitb14: freeze_blocks (9) and freeze_share (0.5) both set" in str(err.value)
