"""One training run as a pipeline stage: data in, best checkpoint, resumable state and DVCLive logs out.

Shared by train-cifar10 and transfer-cifar100, which differ only in the model they
start from (`start`) and their recipe, and by the tune stages' trials, which write
their resumable state alone (`Outputs.trial`). Each epoch reads train -> validate
-> step the schedule -> save, and a run killed at any point continues from its
last saved epoch (see train/resume.py).
"""

import dataclasses
from pathlib import Path

import torch
from dvclive import Live

from cifarbench import atomic, paths, sourcefiles
from cifarbench.data import dataset, transforms
from cifarbench.errors import BenchError
from cifarbench.models import checkpoint, inference, timm_models
from cifarbench.pipeline import entry
from cifarbench.runtime import distributed, memory
from cifarbench.train import engine, resume

DATASET = {stage: ds for ds, stage in paths.TRAIN_STAGE.items()}
SECTION = {"train-cifar10": "train", "transfer-cifar100": "transfer"}
LOGGED = (
    ("train/loss", "train_loss"),
    ("train/acc", "train_acc"),
    ("val/loss", "val_loss"),
    ("val/acc", "val_acc"),
    ("lr", "lr"),
    ("epoch_seconds", "seconds"),
    ("images_per_second", "images_per_second"),
)
# plotted per epoch, but kept out of the summary DVC compares: they change on every run
TIMINGS = ("epoch_seconds", "images_per_second")


@dataclasses.dataclass(frozen=True)
class Outputs:
    """Where one training run writes: a training stage's files, or a tuning trial's resumable state alone."""

    state: Path
    checkpoint: Path | None = None  # None: a trial, whose validation score is all it is for, keeps no weights
    log_dir: Path | None = None  # DVCLive's folder (None: the epochs are printed only)
    cost: Path | None = None

    @classmethod
    def of_stage(cls, ds, key, seed):
        return cls(
            state=paths.training_state(ds, key, seed),
            checkpoint=paths.checkpoint(ds, key, seed),
            log_dir=paths.train_log(ds, key, seed),
            cost=paths.train_cost(ds, key, seed),
        )

    @classmethod
    def trial(cls, state):
        return cls(state=state)

    @property
    def is_trial(self):
        return self.checkpoint is None


def start(params, stage, key, seed, init_seed=None):
    """The model a training of `stage` starts from, and the checkpoint it is read from (None: timm's weights).

    train-cifar10: the registry's model with a new 10-class head. transfer-cifar100: the CIFAR-10
    checkpoint of seed `init_seed` (default: `seed`) with a new 100-class head, or the model's own weights
    (init: imagenet), then the stem and the recipe's blocks frozen. `seed` draws the new head's weights."""
    ds = DATASET[stage]
    n_classes = len(dataset.load_meta(paths.data_dir(ds))["classes"])
    torch.manual_seed(seed)  # the new head's (or the whole model's) initial weights
    if stage == "train-cifar10":
        return timm_models.create(params.model(key), num_classes=n_classes, key=key), None
    recipe = params.recipe("transfer", key)
    init_path = paths.checkpoint("cifar10", key, seed if init_seed is None else init_seed)
    if recipe.init == "cifar10":
        model, _ = checkpoint.load_model(init_path)
        model.reset_classifier(n_classes)
    else:  # straight from the model's own (ImageNet) weights, skipping CIFAR-10
        model, init_path = timm_models.create(params.model(key), num_classes=n_classes, key=key), None
    blocks = timm_models.block_count(model)
    n_frozen = recipe.frozen_blocks(blocks)
    frozen = timm_models.freeze(model, n_frozen)
    total, trainable = timm_models.count_parameters(model)
    if entry.is_first_rank():  # before the process group exists (training joins it later)
        print(
            f"init from {recipe.init}; frozen: stem + {n_frozen} of {blocks} blocks ({len(frozen)} modules); "
            f"{trainable:,} of {total:,} parameters trainable",
            flush=True,
        )
    return model, init_path


def _log_epoch(live, result):
    if live is None:  # a tuning trial: its epochs are printed, its score goes into the tuning's file
        return
    for name, field in LOGGED:
        live.log_metric(name, result[field], plot=True)
    for name in TIMINGS:
        live.summary.pop(name, None)
    live.next_step()


def _print_epoch(r):
    print(
        f"epoch {r['epoch']:3d}  train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f}  "
        f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.4f}  lr {r['lr']:.2e}  "
        f"{r['seconds']:.1f}s ({r['images_per_second']:.0f} img/s){'  *best' if r['improved'] else ''}",
        flush=True,
    )


def _cpu_weights(model):
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _tensors(data_dir, meta, device):
    train, val = dataset.load_split(data_dir, "train", meta), dataset.load_split(data_dir, "val", meta)
    return (
        transforms.to_tensor(train.images, device),
        torch.from_numpy(train.labels).to(device),
        transforms.to_tensor(val.images, device),
        torch.from_numpy(val.labels).to(device),
    )


def run(s, stage, model, init_path=None, *, recipe=None, seed=None, outputs=None, keep_group=False):
    """Train `model` for stage `stage` of s.model, keeping the best-validation checkpoint; resumes if it can.

    s: the cifarbench.pipeline.entry.Stage (params, model key, seed, runtime). recipe, seed, outputs: the
    stage's own (params' recipe, s.seed, Outputs.of_stage) unless given: a tuning trial passes its recipe
    and Outputs.trial. keep_group: leave the torchrun process group up for the next run in this process.
    Returns the run's summary (best_val_acc, ...), also when the run had finished before and its outputs were
    written again from its state. A trial whose loss turns NaN ends there: its summary says `diverged`.
    """
    ds, key, rt, params = DATASET[stage], s.model, s.runtime, s.params
    seed = s.seed if seed is None else seed
    spec = params.model(key)
    recipe = params.recipe(SECTION[stage], key) if recipe is None else recipe
    outputs = Outputs.of_stage(ds, key, seed) if outputs is None else outputs
    data_dir = paths.data_dir(ds)
    distributed.init(rt.device)  # under torchrun: join the other ranks (see distributed.py)
    main = distributed.is_main()  # only rank 0 writes checkpoints, state, logs and prints
    inputs = [data_dir / "train.npz", data_dir / "val.npz", data_dir / "meta.json"] + ([init_path] if init_path else [])
    # the files dvc.yaml lists as this stage's code, less those that change no number (sourcefiles.NO_NUMBERS)
    code = sourcefiles.digest(sourcefiles.numbers_closure(s.script), sourcefiles.project_root(s.script))
    fingerprint = resume.fingerprint(
        stage=stage,
        spec=spec,
        recipe=recipe,
        seed=seed,
        compute=params.compute,
        processes=distributed.world_size(),
        inputs=inputs,
        code=code,
    )
    state, why = resume.load(outputs.state, fingerprint)
    if state and state["finished"]:
        if _written_again(state, outputs):
            if main:
                print(f"{why}: its outputs are written again from the saved state, without training", flush=True)
            _shutdown(keep_group)
            return state["summary"]
        why, state = f"{why}, but {outputs.checkpoint} is missing or changed since: training again", None

    memory.reset_peak(rt.device)
    total_params, trainable_params = timm_models.count_parameters(model)  # after any freezing
    blocks = timm_models.block_count(model)  # the report's protocol table: frozen blocks as a share
    meta = dataset.load_meta(data_dir)
    tensors = _tensors(data_dir, meta, rt.device)
    model = inference.prepare_model(model, rt)
    preprocess = inference.preprocess_for(model, rt, spec.img_size)
    trainer = engine.Trainer(
        model,
        recipe,
        rt,
        preprocess,
        seed,
        params.compute.eval_batch_size,
        len(tensors[1]),
        sync_bn=params.compute.sync_bn,
    )
    model = trainer.model  # under DDP its BatchNorm layers may be SyncBatchNorm: the same weights and names
    if main:
        print(
            f"{meta['dataset']} ({meta['source']}): {len(tensors[1])} train / {len(tensors[3])} val images; "
            f"{spec.arch} at {spec.img_size} px, seed {seed}, {recipe.schedule} schedule"
            f"{f' x {distributed.placement()}' if distributed.world_size() > 1 else ''}",
            flush=True,
        )
        if trainer.batchnorm:
            print(trainer.batchnorm, flush=True)
        print(why, flush=True)
    history, best = [], None
    if state:
        trainer.load_state_dict(state["trainer"])
        history, best = state["history"], state["best"]
        if best["state_dict"] is None:  # the best epoch was the last completed one
            best = dict(best, state_dict=_cpu_weights(model))

    def save_best():
        if main and not outputs.is_trial:
            checkpoint.save(
                outputs.checkpoint,
                model,
                key=key,
                spec=spec,
                dataset=meta["dataset"],
                classes=meta["classes"],
                coarse_classes=meta["coarse_classes"],
                image_size=meta["image_size"],
                epoch=best["epoch"],
                val_acc=best["val_acc"],
                state_dict=best["state_dict"],
            )

    # starts the logs afresh, then replays the completed epochs, so a resumed run's logs continue
    live = _live_at(outputs.log_dir) if main and outputs.log_dir else None
    for logged in history if main else []:
        _log_epoch(live, logged)
    if best:
        save_best()  # an older run's checkpoint may be in its place (a persist output: DVC leaves it)
    try:
        for epoch in trainer.epochs(*tensors):  # train -> validate -> step the schedule, then save
            result = dataclasses.asdict(epoch)
            history.append(result)
            if epoch.improved:
                weights = None if outputs.is_trial else _cpu_weights(model)
                best = {"epoch": epoch.epoch, "val_acc": epoch.val_acc, "state_dict": weights}
                save_best()
            trainer_state = trainer.state_dict()  # a collective: every rank takes part
            if not main:
                continue
            current_is_best = best["epoch"] == trainer.epoch
            resume.save(
                outputs.state,
                fingerprint,
                trainer_state,
                history,
                dict(best, state_dict=None) if current_is_best else best,
            )
            _log_epoch(live, result)
            _print_epoch(result)
    except torch.OutOfMemoryError:  # the state of the last completed epoch stays as it was
        raise BenchError(_out_of_memory(s, stage, trainer)) from None
    except engine.NonFiniteLoss as exc:
        if not outputs.is_trial:
            raise
        # a diverged trial is a result (the worst score), recorded so that a rerun does not train it again
        summary = {"best_val_acc": None, "epochs_run": trainer.epoch, "diverged": str(exc).split(":")[0]}
        if main:
            resume.mark_finished(
                outputs.state, fingerprint, history=history, summary=summary, cost={}, checkpoint_md5=None
            )
        _shutdown(keep_group)
        return summary
    summary = {
        "best_val_acc": trainer.best_acc,
        "best_epoch": best["epoch"],
        "epochs_run": trainer.epoch,
        "stopped_early": trainer.stopped_early,
        "peak_lr": recipe.lr,  # the lr it used: the recipe's, or the one its tune stage chose
        # and `lr` says the same in `dvc exp show` (DVCLive's summary would hold the schedule's last, decayed lr;
        # the lr of every epoch is its curve, plots/metrics/lr.tsv)
        "lr": recipe.lr,
        "weight_decay": recipe.weight_decay,
    }
    if main:
        cost = _cost(trainer, history, rt, (total_params, trainable_params))
        cost.update(blocks=blocks, frozen_blocks=recipe.frozen_blocks(blocks))
        _finish(live, summary, cost, outputs.cost)
        resume.mark_finished(
            outputs.state,
            fingerprint,
            history=history,
            summary=summary,
            cost=cost,
            checkpoint_md5=None if outputs.is_trial else resume.file_digest(outputs.checkpoint),
        )
    _shutdown(keep_group)
    return summary


def _shutdown(keep_group):
    if not keep_group:
        distributed.shutdown()


def _written_again(state, outputs):
    """A finished run's outputs written again from its record, when its checkpoint is still the one it saved.

    The checkpoint is a persist output: DVC leaves it in place when it reruns the stage. The logs and the
    cost file it removes; they are replayed from the record, the same bytes as the finished run wrote.
    A trial has neither: its record is its result."""
    if outputs.is_trial:
        return True
    checkpoint_path = outputs.checkpoint
    if not (checkpoint_path.is_file() and resume.file_digest(checkpoint_path) == state["checkpoint_md5"]):
        return False
    if distributed.is_main():
        live = _live_at(outputs.log_dir)
        for logged in state["history"]:
            _log_epoch(live, logged)
        _finish(live, state["summary"], state["cost"], outputs.cost)
    return True


def _live_at(log_dir):
    """DVCLive in the stage's own log folder: no dvc.yaml rewrite, no experiment saved (dvc repro makes it)."""
    return Live(dir=str(log_dir), dvcyaml=None, save_dvc_exp=False, report=None)


def _out_of_memory(s, stage, trainer):
    section, key = SECTION[stage], s.model
    batch = trainer.recipe.batch_size
    if trainer.phase == "validation":
        doing = f"validating {key} at compute.eval_batch_size {trainer.eval_batch_size}"
        fix = "lower compute.eval_batch_size"
    else:
        per = f" ({batch // trainer.world} per process)" if trainer.world > 1 else ""
        doing = f"training {key} at batch size {batch}{per}"
        fix = (
            f"lower {section}.{key}.batch_size (its lr is not scaled for you), spread the batch over more GPUs "
            "(compute.devices), or use a card with more memory"
        )
    kept = f"the saved state of epoch {trainer.epoch} is kept" if trainer.epoch else "no epoch had finished"
    return memory.out_of_memory(s.runtime.device, f"{doing} in {stage}", f"{fix}; {kept}")


def _cost(trainer, history, rt, parameter_counts):
    """The run's cost: timings, memory, device (metrics/cost.json's training columns)."""
    seconds = [r["seconds"] for r in history]
    return {
        "train_seconds": round(sum(seconds), 3),
        "seconds_per_epoch": round(sum(seconds) / len(seconds), 3),
        "epochs": trainer.epoch,
        "device": rt.describe(),
        "compiled": trainer.compiled,  # torch.compile of the training step (compute.compile)
        "processes": distributed.world_size(),
        "nodes": distributed.node_count(),
        "params": parameter_counts[0],
        "trainable_params": parameter_counts[1],
        "peak_memory_mb": round(memory.peak(rt.device)[0], 1),
    }


def _finish(live, summary, cost, cost_path):
    """The DVCLive summary (what `dvc exp show` compares) and the run's cost file."""
    if live is not None:
        live.summary.update(summary)
        live.end()
    if cost_path is not None:
        atomic.write_json(cost_path, cost)
