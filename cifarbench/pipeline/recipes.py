"""The resolved recipe of every model, one small file each: what a training stage depends on.

params.yaml's recipes are shared defaults plus each model's differences. DVC
tracks a stage's params by key, and a key must exist, so a model added as one
entry under `models:` (no `train.<key>` of its own) could not be tracked that
way. Instead the `recipes` stage tracks the whole sections and writes, per
model, the spec and merged recipe that model's training uses; a training
stage depends on its file. DVC compares contents, so a change reruns exactly
the models whose resolved recipe it changes: a default reruns every model that
uses it, `train.resnet18.lr` only ResNet-18's chain, a display name nothing.
A recipe's `compile` changes how fast it trains, not what: the files leave it
out (Recipe.deciding, params.SPEED_ONLY), so switching it retrains nothing.
"""

import json

from cifarbench import atomic, paths
from cifarbench.errors import BenchError

PROBE = "probe"  # the probe stage depends only on the model spec (its starting weights)


def contents(params):
    """{path: JSON-ready dict} of every recipe file for these params."""
    out = {}
    for key in params.keys:
        spec = params.model(key).model_dump(mode="json")
        for section, stage in (("train", "train-cifar10"), ("transfer", "transfer-cifar100")):
            out[paths.recipe(stage, key)] = {
                "model": spec,
                "recipe": params.recipe(section, key).deciding(),
            }
        out[paths.recipe(PROBE, key)] = {"model": spec}
    return out


def _text(content):
    return json.dumps(content, indent=2, sort_keys=True) + "\n"


def write(params):
    """Write every recipe file (the stage's output folder is fresh: DVC removed it); returns the paths."""
    files = contents(params)
    for path, content in files.items():
        atomic.write_text(path, _text(content))
    return sorted(files)


def check_current(params, stage, key):
    """A training stage runs with the recipe DVC tracked: stop if recipes/ is older than params.yaml."""
    path = paths.recipe(stage, key)
    expected = contents(params)[path]
    found = path.read_text(encoding="utf-8") if path.is_file() else None
    if found != _text(expected):
        state = "missing" if found is None else "out of date with params.yaml"
        raise BenchError(f"{path} is {state}: run `dvc repro` (its recipes stage resolves params.yaml first)")
