"""Equal-budget tuning of one model for one training stage: every trial of the grid, scored on validation.

Every model gets the same grid of factors on its recipe's lr (and weight decay) and the same
`tune.epochs` per trial: the comparison Kornblith et al. 2019 make ("Do Better ImageNet Models
Transfer Better?"), who tune each model on images held out from its training set. A trial is a
training run of the stage (the same starting weights, engine and recipe, at the trial's lr and
weight decay, its schedule over tune.epochs) on the training split, scored by its best validation
top-1; the test split is never read. The chosen values are the best score's; a tie goes to the
values nearest the recipe's own (the smallest |log factor|), then to grid order.

Each trial keeps a resumable state of its own under models/tune/<stage>/<model>/, so a killed
tuning continues inside the trial it was in, and a rerun of a finished tuning trains nothing. A trial
whose loss turns NaN scores as the worst (0, `diverged: true`) and the others go on; if every trial diverges
the stage stops with one line.
"""

import gc
import math
import time

import torch
from scipy import stats as sps

from cifarbench import paths
from cifarbench.data import dataset
from cifarbench.errors import BenchError
from cifarbench.pipeline import train, tuned
from cifarbench.runtime import distributed

CHOSEN = ("lr", "weight_decay", "lr_scale", "weight_decay_scale", "val_top1", "val_top1_ci")  # the best trial's


def trial_recipe(params, stage, key, point):
    """The stage's recipe at the trial's lr and weight decay, its schedule compressed to tune.epochs: the warm-up
    cut to fewer epochs than that, a step or multistep schedule's epochs scaled by tune.epochs / epochs."""
    base = params.recipe(tuned.SECTION[stage], key)
    epochs = params.tune.epochs
    scale = epochs / base.epochs
    return base.model_copy(
        update={
            "lr": point["lr"],
            "weight_decay": point["weight_decay"],
            "epochs": epochs,
            "warmup_epochs": min(base.warmup_epochs, epochs - 1),
            "decay_epochs": max(1, round(base.decay_epochs * scale)),
            "decay_milestones": sorted({max(1, round(m * scale)) for m in base.decay_milestones}),
        }
    )


def trial_state(stage, key, point):
    name = f"lr{point['lr']:.6g}-wd{point['weight_decay']:.6g}.state.pt"
    return paths.tuning_trials(stage, key) / name


def val_interval(top1, n):
    """95 % Wilson interval of a validation accuracy over n images (scipy's binomtest)."""
    hits = round(top1 * n)
    interval = sps.binomtest(hits, n).proportion_ci(0.95, method="wilson")
    return [round(float(interval.low), 6), round(float(interval.high), 6)]


def choose(trials):
    """The best trial that did not diverge: highest val_top1; ties to the factors nearest 1, then grid order."""
    scored = [(i, t) for i, t in enumerate(trials) if not t["diverged"]]
    if not scored:
        return None
    best = max(t["val_top1"] for _, t in scored)
    tied = [(i, t) for i, t in scored if t["val_top1"] == best]

    def distance(item):  # from the recipe's own values (factor 1); a weight-decay factor of 0 is the farthest
        i, t = item
        decay = t["weight_decay_scale"]
        return abs(math.log(t["lr_scale"])), abs(math.log(decay)) if decay else math.inf, i

    return min(tied, key=distance)[1]


def run(s, stage):
    """Every trial of s.model's tuning for `stage`, then the tuning file; returns the record."""
    params, key = s.params, s.model
    seed = params.seed  # the trials' seed; a transfer trial starts from the first training seed's checkpoint
    n_val = dataset.load_meta(paths.data_dir(train.DATASET[stage]))["counts"]["val"]
    points = tuned.grid(params, stage, key)
    distributed.init(s.runtime.device)  # under torchrun: join the ranks first, so only rank 0 writes and prints
    main = distributed.is_main()
    folder = paths.tuning_trials(stage, key)
    folder.mkdir(parents=True, exist_ok=True)
    if main:  # states of values no longer in the grid: nothing reads them again
        kept = {trial_state(stage, key, p).name for p in points}
        for old in folder.glob("*.state.pt"):
            if old.name not in kept:
                old.unlink(missing_ok=True)
    trials, started = [], time.perf_counter()
    for number, point in enumerate(points, 1):
        if main:
            print(
                f"trial {number}/{len(points)}: lr {point['lr']:.3g} (x{point['lr_scale']:g}), weight decay "
                f"{point['weight_decay']:.3g} (x{point['weight_decay_scale']:g}), {params.tune.epochs} epochs",
                flush=True,
            )
        model, init_path = train.start(params, stage, key, seed, init_seed=params.seeds[0])
        summary = train.run(
            s,
            stage,
            model,
            init_path,
            recipe=trial_recipe(params, stage, key, point),
            seed=seed,
            outputs=train.Outputs.trial(trial_state(stage, key, point)),
            keep_group=True,
        )
        diverged = summary.get("diverged")
        top1 = 0.0 if diverged else summary["best_val_acc"]  # a diverged trial scores the worst there is
        trials.append(
            {
                **point,
                "val_top1": top1,
                "val_top1_ci": None if diverged else val_interval(top1, n_val),
                "diverged": bool(diverged),
            }
        )
        if diverged and main:
            print(f"trial {number}: {diverged}: scored as the worst, the other trials go on", flush=True)
        _release(s.runtime)
    distributed.shutdown()
    best = choose(trials)
    if best is None:
        raise BenchError(
            f"every trial of {key}'s {stage} tuning diverged (NaN or infinite loss): use smaller tune.lr_scale factors"
        )
    chosen = {k: best[k] for k in CHOSEN}
    record = {**tuned.header(params, stage, key), "val_images": n_val, "trials": trials, "chosen": chosen}
    if main:
        tuned.write(stage, key, record, [trial_state(stage, key, p).name for p in points])
        print(
            f"{key} {stage}: chose lr {chosen['lr']:.3g} (x{chosen['lr_scale']:g}), weight decay "
            f"{chosen['weight_decay']:.3g}: validation top-1 {chosen['val_top1']:.4f} of "
            + ", ".join("diverged" if t["diverged"] else f"{t['val_top1']:.4f}" for t in trials)
            + f"; {len(trials)} trials x {params.tune.epochs} epochs in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
    return record


def _release(runtime):
    """What a trial leaves behind, dropped before the next: its compiled graphs (each trial compiles its own step;
    torch.compile stops compiling after a few recompilations of one function) and its device memory."""
    if runtime.compile:
        torch._dynamo.reset()
    gc.collect()
    if runtime.device.type == "cuda":
        torch.cuda.empty_cache()
