"""One training run as a pipeline stage: data in, best checkpoint, resumable state and DVCLive logs out.

Shared by train-cifar10 and transfer-cifar100; the two stages differ only in
how they make the starting model (stages/*.py) and which recipe they use.
Each epoch reads train -> validate -> step the schedule -> save, and a run
killed at any point continues from its last saved epoch (see train/resume.py).
"""

import dataclasses

import torch
from dvclive import Live

from cifarbench import atomic, paths, sourcefiles
from cifarbench.data import dataset, transforms
from cifarbench.errors import BenchError
from cifarbench.models import checkpoint, inference, timm_models
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


def _log_epoch(live, result):
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


def run(s, stage, model, init_path=None):
    """Train `model` for stage `stage` of s.model / s.seed, keeping the best-validation checkpoint; resumes if it can.

    s: the cifarbench.pipeline.entry.Stage (params, model key, seed, runtime). Returns the Trainer, or
    None when the run had finished before and its outputs were written again from its state.
    """
    ds, key, seed, rt, params = DATASET[stage], s.model, s.seed, s.runtime, s.params
    spec, recipe = params.model(key), params.recipe(SECTION[stage], key)
    data_dir = paths.data_dir(ds)
    checkpoint_path, state_path = paths.checkpoint(ds, key, seed), paths.training_state(ds, key, seed)
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
    state, why = resume.load(state_path, fingerprint)
    if state and state["finished"]:
        if _written_again(state, checkpoint_path, paths.train_log(ds, key, seed), paths.train_cost(ds, key, seed)):
            if main:
                print(f"{why}: its outputs are written again from the saved state, without training", flush=True)
            distributed.shutdown()
            return None
        why, state = f"{why}, but {checkpoint_path} is missing or changed since: training again", None

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
        if main:
            checkpoint.save(
                checkpoint_path,
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
    live = _live_at(paths.train_log(ds, key, seed)) if main else None
    for logged in history if main else []:
        _log_epoch(live, logged)
    if best:
        save_best()  # an older run's checkpoint may be in its place (a persist output: DVC leaves it)
    try:
        for epoch in trainer.epochs(*tensors):  # train -> validate -> step the schedule, then save
            result = dataclasses.asdict(epoch)
            history.append(result)
            if epoch.improved:
                best = {"epoch": epoch.epoch, "val_acc": epoch.val_acc, "state_dict": _cpu_weights(model)}
                save_best()
            trainer_state = trainer.state_dict()  # a collective: every rank takes part
            if not main:
                continue
            current_is_best = best["epoch"] == trainer.epoch
            resume.save(
                state_path,
                fingerprint,
                trainer_state,
                history,
                dict(best, state_dict=None) if current_is_best else best,
            )
            _log_epoch(live, result)
            _print_epoch(result)
    except torch.OutOfMemoryError:  # the state of the last completed epoch stays as it was
        raise BenchError(_out_of_memory(s, stage, trainer)) from None
    if main:
        summary = {
            "best_val_acc": trainer.best_acc,
            "best_epoch": best["epoch"],
            "epochs_run": trainer.epoch,
            "stopped_early": trainer.stopped_early,
        }
        cost = _cost(trainer, history, rt, (total_params, trainable_params))
        cost.update(blocks=blocks, frozen_blocks=getattr(recipe, "freeze_blocks", 0))
        _finish(live, summary, cost, paths.train_cost(ds, key, seed))
        resume.mark_finished(
            state_path,
            fingerprint,
            history=history,
            summary=summary,
            cost=cost,
            checkpoint_md5=resume.file_digest(checkpoint_path),
        )
    distributed.shutdown()
    return trainer


def _written_again(state, checkpoint_path, log_dir, cost_path):
    """A finished run's outputs written again from its record, when its checkpoint is still the one it saved.

    The checkpoint is a persist output: DVC leaves it in place when it reruns the stage. The logs and the
    cost file it removes; they are replayed from the record, the same bytes as the finished run wrote."""
    if not (checkpoint_path.is_file() and resume.file_digest(checkpoint_path) == state["checkpoint_md5"]):
        return False
    if distributed.is_main():
        live = _live_at(log_dir)
        for logged in state["history"]:
            _log_epoch(live, logged)
        _finish(live, state["summary"], state["cost"], cost_path)
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
    live.summary.update(summary)
    live.end()
    atomic.write_json(cost_path, cost)
