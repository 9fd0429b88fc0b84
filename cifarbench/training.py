"""One training run as a pipeline stage: data in, best checkpoint, resumable state and DVCLive logs out.

Shared by train-cifar10 and transfer-cifar100; the two stages differ only in
how they make the starting model and which recipe they pass.
"""

import dataclasses

import torch
from dvclive import Live

from cifarbench import checkpoint, dataset, distributed, efficiency, engine, models, resume, transforms
from cifarbench import runtime as runtimelib

LOGGED = (("train/loss", "train_loss"), ("train/acc", "train_acc"), ("val/loss", "val_loss"),
          ("val/acc", "val_acc"), ("lr", "lr"), ("epoch_seconds", "seconds"),
          ("images_per_second", "images_per_second"))


def _log_epoch(live, result):
    for name, field in LOGGED:
        live.log_metric(name, result[field], plot=True)
    live.next_step()


def _print_epoch(r):
    print(f"epoch {r['epoch']:3d}  train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f}  "
          f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.4f}  lr {r['lr']:.2e}  "
          f"{r['seconds']:.1f}s ({r['images_per_second']:.0f} img/s){'  *best' if r['improved'] else ''}", flush=True)


def _cpu_weights(model):
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def run(*, stage, key, spec, recipe, params, model, data_dir, checkpoint_path, log_dir, state_path, init_path=None):
    """Train `model` on data_dir's train split, keeping the best-validation checkpoint; resumes if it can."""
    rt = runtimelib.resolve(params.compute)
    distributed.init(rt.device)  # under torchrun: join the other ranks (see distributed.py)
    main = distributed.is_main()  # only rank 0 writes checkpoints, state, logs and prints
    efficiency.reset_peak_memory(rt.device)
    total_params, trainable_params = models.count_parameters(model)  # after any freezing
    meta = dataset.load_meta(data_dir)
    train, val = dataset.load_split(data_dir, "train", meta), dataset.load_split(data_dir, "val", meta)
    model = engine.prepare_model(model, rt)
    preprocess = engine.preprocess_for(model, rt, spec.img_size)
    trainer = engine.Trainer(model, recipe, rt, preprocess, params.seed, params.compute.eval_batch_size)
    tensors = [transforms.to_tensor(train.images, rt.device), torch.from_numpy(train.labels).to(rt.device),
               transforms.to_tensor(val.images, rt.device), torch.from_numpy(val.labels).to(rt.device)]
    if main:
        print(f"{meta['dataset']} ({meta['source']}): {len(train)} train / {len(val)} val images; "
              f"{spec.arch} at {spec.img_size} px on {rt.describe()}"
              f"{f' x {distributed.world_size()} processes' if distributed.world_size() > 1 else ''}", flush=True)

    inputs = [data_dir / "train.npz", data_dir / "val.npz", data_dir / "meta.json"] + ([init_path] if init_path else [])
    fingerprint = resume.fingerprint(stage=stage, spec=spec, recipe=recipe, seed=params.seed,
                                     compute=params.compute, inputs=inputs)
    state, why = resume.load(state_path, fingerprint)
    if main:
        print(why, flush=True)
    history, best = [], None
    if state:
        trainer.load_state_dict(state["trainer"])
        history, best = state["history"], state["best"]
        if best["state_dict"] is None:  # the best epoch was the last completed one
            best = dict(best, state_dict=_cpu_weights(model))

    def save_best():
        if main:
            checkpoint.save(checkpoint_path, model, key=key, spec=spec, dataset=meta["dataset"],
                            classes=meta["classes"], coarse_classes=meta["coarse_classes"],
                            image_size=meta["image_size"], epoch=best["epoch"], val_acc=best["val_acc"],
                            state_dict=best["state_dict"])

    # starts the logs afresh, then replays the completed epochs, so a resumed run's logs continue
    live = Live(dir=str(log_dir), dvcyaml=None, save_dvc_exp=False, report=None) if main else None
    for logged in history if main else []:
        _log_epoch(live, logged)
    if best:
        save_best()  # DVC removed the checkpoint before rerunning the stage
    for result in trainer.epochs(*tensors):
        result = dataclasses.asdict(result)
        history.append(result)
        if result["improved"]:
            best = {"epoch": result["epoch"], "val_acc": result["val_acc"], "state_dict": _cpu_weights(model)}
            save_best()
        trainer_state = trainer.state_dict()  # a collective: every rank takes part
        if not main:
            continue
        current_is_best = best["epoch"] == trainer.epoch
        resume.save(state_path, fingerprint, trainer_state, history,
                    dict(best, state_dict=None) if current_is_best else best)
        _log_epoch(live, result)
        _print_epoch(result)
    if not main:
        distributed.shutdown()
        return trainer
    seconds = [r["seconds"] for r in history]
    live.summary.update({
        "best_val_acc": trainer.best_acc,
        "best_epoch": best["epoch"],
        "epochs_run": trainer.epoch,
        "stopped_early": trainer.stopped_early,
        "train_seconds": round(sum(seconds), 3),
        "seconds_per_epoch": round(sum(seconds) / len(seconds), 3),
        "device": rt.describe(),
        "processes": distributed.world_size(),
        "params": total_params,
        "trainable_params": trainable_params,
        "peak_memory_mb": round(efficiency.peak_memory(rt.device)[0], 1),
    })
    live.end()
    resume.mark_finished(state_path, fingerprint)
    distributed.shutdown()
    return trainer
