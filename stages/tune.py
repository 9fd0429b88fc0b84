"""Stage tune-<dataset>@<model>: equal-budget tuning of the model's lr for the stage that trains on <dataset>
(cifar10: train-cifar10, cifar100: transfer-cifar100); with tuning off, the recipe's own values."""

from cifarbench import params as paramslib
from cifarbench import paths
from cifarbench.paths import TRAIN_STAGE
from cifarbench.pipeline import entry, recipes, tuned

ARGS = ("model", "dataset")


def untuned(s):
    """tune.enabled false: no model, no torch; the file says the recipe's values stand."""
    stage = TRAIN_STAGE[s.dataset]
    recipes.check_current(s.params, stage, s.model)
    record = tuned.untuned(s.params, stage, s.model)
    # the trials' folder is the stage's output either way, its index empty; states of an earlier tuning stay there
    # for the next one
    paths.tuning_trials(stage, s.model).mkdir(parents=True, exist_ok=True)
    tuned.write(stage, s.model, record)
    print(f"{s.model} {stage}: tuning off (tune.enabled: false): the recipe's lr {record['chosen']['lr']:g} stands")


def trials(s):
    from cifarbench.pipeline import tune  # torch and timm: only where trials train

    stage = TRAIN_STAGE[s.dataset]
    recipes.check_current(s.params, stage, s.model)
    tune.run(s, stage)


def enabled():
    try:
        return paramslib.load().tune.enabled
    except paramslib.ParamsError:
        return False  # entry.run reports the problem in one line


if __name__ == "__main__":
    if enabled():
        from cifarbench.pipeline import model_entry

        model_entry.run(trials, __doc__, args=ARGS, torchrun=True)
    else:
        entry.run(untuned, __doc__, args=ARGS)
