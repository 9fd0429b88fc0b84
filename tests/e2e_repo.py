"""The end-to-end tests' project: the real project in a fresh git repo with tiny params, through the real DVC CLI.

Its registry holds one committed model, the tiny ViT, and a timm model, resnet10t, added through params.yaml alone
(two models: every table, comparison and figure has more than one row; a third would cost eight more stage
processes and test nothing new; one test builds every committed model: tests/test_models.py). Its full `dvc
repro` runs once per test session (`built_once`, whichever module asks first, its output kept); each module works
on a copy of the result: tests/test_pipeline_dvc.py checks what the repro made and what reads it,
tests/test_pipeline_reruns.py what each kind of change reruns.
"""

import re

from conftest import committed_params, dump, tiny_params
from dvc_repo import Repo, built_note, built_once, copy_built, copy_project, stages_for

FOURTH = "resnet10t"  # a timm model added through params.yaml alone
VIT = "dinov2_vitb14"  # the committed model kept: the tiny ViT, the fastest to train
MODELS = [VIT, FOURTH]
SEED = 0
# 600 images a slot (480 to train): 4.8 a class on the 100-class slot, where every model then learns above
# chance in its epochs (at 300 both stayed at 0-3 right of 60 test images)
LIMIT = 600
# The tiny ViT (2 blocks of width 48) needs a few hundred AdamW steps to learn (3 epochs stay at chance): 40 epochs
# on the 10 digits (0.57 top-1) and 20 on the 100 numbers (0.067), ~10 s together; also room to kill its
# training mid-way (tests/test_pipeline_reruns.py's last test)
VIT_EPOCHS = 40
VIT_RECIPES = {
    "train": {"epochs": VIT_EPOCHS, "lr": 3e-3, "warmup_epochs": 2},
    "transfer": {"epochs": 20, "lr": 3e-3, "warmup_epochs": 1},
}
# Tuning on, as `dvc exp run -S tune.enabled=true` turns it on: every model's lr over the same 2 factors, 1 epoch a
# trial, in both training stages (8 trials, ~10 s; tests/test_tune.py checks a trial's best of several epochs). A
# trial of the tiny ViT stays near chance in 1 epoch, so its choice is noise: both factors give an lr its trainings
# reach tests/test_pipeline_dvc.py's REACHED at (x1 is the recipe's own; x2 is what trials of 3 epochs chose)
TUNE = {"enabled": True, "lr_scale": [1.0, 2.0], "epochs": 1}


ALL_STAGES = stages_for(MODELS)


def with_fourth_model(raw):
    """The committed params plus resnet10t: one entry under models:, nothing else."""
    raw["models"][FOURTH] = {"arch": "resnet10t.c3_in1k", "img_size": 176}
    return raw


def two_model_params():
    """The tiny params of the ViT and resnet10t: the other committed models leave the registry."""
    raw = tiny_params(with_fourth_model(committed_params()), compute__eval_batch_size=64, data__limit=LIMIT)
    for key in [k for k in raw["models"] if k not in MODELS]:
        del raw["models"][key]
        for section in ("train", "transfer"):
            raw[section].pop(key, None)
    for section, changes in VIT_RECIPES.items():
        raw[section][VIT].update(changes)
    raw["tune"] = dict(TUNE)
    return raw


def build(folder):
    """The repo, committed with its params, then its full `dvc repro`, committed: the repro's output."""
    copy_project(folder)
    # the tiny sizes come from the demo's per-family rule: resnet10t is shrunk as a CNN with no edit
    (folder / "params.yaml").write_text(dump(two_model_params()))
    r = Repo(folder)
    r.run("git", "init", "-q", "-b", "main")
    # a fresh machine has no global git identity: DVC experiments need one
    r.run("git", "config", "user.name", "CIFARbench test")
    r.run("git", "config", "user.email", "test@cifarbench.invalid")
    r.commit("tiny project")
    out = r.dvc("repro").stdout
    r.commit("tiny run")
    return out


def repo_copy(tmp_path_factory, name):
    """A Repo on a copy of the session's built repo, and the output of the repro that built it."""
    template = built_once(tmp_path_factory, "e2e-built", build)
    return copy_built(template, tmp_path_factory.mktemp(name) / "repo"), built_note(template)


def chain(model, transfer_only=False):
    """What a recipe change of one model reruns: its stages, the recipes that resolve it, the report."""
    run = f"{model}-{SEED}"
    stages = {
        "recipes",
        f"tune-cifar100@{model}",
        f"transfer-cifar100@{run}",
        f"evaluate@{model}-cifar100-{SEED}",
        f"embed@{model}-cifar100-{SEED}",
        "report",
    }
    if not transfer_only:
        stages |= {
            f"tune-cifar10@{model}",
            f"train-cifar10@{run}",
            f"evaluate@{model}-cifar10-{SEED}",
            f"embed@{model}-cifar10-{SEED}",
            f"probe@{model}-cifar10",
            f"probe@{model}-cifar100",
        }
    return stages


def stages_changed(repo):
    """The stages `dvc status` lists as changed (what `dvc repro` would run first)."""
    return set(re.findall(r"^(\S+):$", repo.dvc("status").stdout, re.M))
