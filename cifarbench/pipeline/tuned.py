"""What a tuning chose, and the recipe a training then runs: the tune stage's file, checked against params.yaml.

A tune stage (tune-cifar10@<model>, tune-cifar100@<model>) writes one file per model and training stage,
`metrics/tune/<stage>/<model>.json`: the grid it tried, every trial's validation top-1 and the chosen lr and
weight decay. The training stage depends on that file and trains at the chosen values. With tuning off
(`tune.enabled: false`) the file holds the recipe's own values and no trials, and no grid: changing
`tune.lr_scale` while tuning is off leaves the file, and so every training, as it is.

Light on purpose (no torch): with tuning off, the tune stage only writes this file.
"""

from cifarbench import atomic, inputs, paths

SECTION = {"train-cifar10": "train", "transfer-cifar100": "transfer"}  # training stage -> params section


def grid(params, stage, key):
    """Every trial's values for this model and stage, in grid order: the recipe's lr and weight decay times each
    pair of factors (tune.lr_scale x tune.weight_decay_scale)."""
    recipe = params.recipe(SECTION[stage], key)
    return [
        {"lr": recipe.lr * a, "weight_decay": recipe.weight_decay * b, "lr_scale": a, "weight_decay_scale": b}
        for a in params.tune.lr_scale
        for b in params.tune.weight_decay_scale
    ]


def header(params, stage, key, enabled=None):
    """What the tuning file records besides its trials, and what the training checks it against."""
    recipe = params.recipe(SECTION[stage], key)
    enabled = params.tune.enabled if enabled is None else enabled
    out = {"enabled": enabled, "recipe": {"lr": recipe.lr, "weight_decay": recipe.weight_decay}}
    if enabled:  # and what else decides a trial's score: the whole recipe and the trials' seed
        tune = params.tune
        out.update(lr_scale=list(tune.lr_scale), weight_decay_scale=list(tune.weight_decay_scale), epochs=tune.epochs)
        out.update(trained=recipe.deciding(), seed=params.seed)
    return out


def untuned(params, stage, key):
    """The file of a stage with tuning off: no trials, the recipe's own values chosen."""
    head = header(params, stage, key, enabled=False)
    return {**head, "trials": [], "chosen": dict(head["recipe"])}


def write(stage, key, record, states=()):
    """The tuning file, and the index of the trials' state files (`states`: one name per trial; none untuned)."""
    index = [
        {"state": name, **{k: t[k] for k in ("lr", "weight_decay", "diverged")}}
        for name, t in zip(states, record["trials"])
    ]
    atomic.write_json(paths.tuning_index(stage, key), {"trials": index})
    atomic.write_json(paths.tuning(stage, key), record)


def read(params, stage, key):
    """The tuning record of `key` for `stage`, checked to belong to today's params.yaml."""
    path = paths.tuning(stage, key)
    record = inputs.read_json(path)
    expected = header(params, stage, key)
    if not isinstance(record, dict) or {k: record.get(k) for k in expected} != expected:
        raise inputs.unusable(path, "is out of date with params.yaml (its recipe, seed or tune: changed)")
    if not isinstance(record.get("chosen"), dict) or not {"lr", "weight_decay"} <= set(record["chosen"]):
        raise inputs.damaged(path, "no chosen lr and weight_decay")
    return record


def recipe(params, stage, key):
    """The recipe the training of `stage` runs: params' recipe at the lr and weight decay its tuning chose."""
    chosen = read(params, stage, key)["chosen"]
    base = params.recipe(SECTION[stage], key)
    return base.model_copy(update={"lr": chosen["lr"], "weight_decay": chosen["weight_decay"]})
