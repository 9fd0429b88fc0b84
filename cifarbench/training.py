"""One training run as a pipeline stage: data in, best checkpoint and DVCLive logs out.

Shared by train-cifar10 and transfer-cifar100; the two stages differ only in
how they make the starting model and which recipe they pass.
"""

import time

import torch
from dvclive import Live

from cifarbench import checkpoint, dataset, efficiency, engine, models, runtime as runtimelib, transforms


def _log_epoch(live, result):
    for name, value in (
        ("train/loss", result.train_loss), ("train/acc", result.train_acc),
        ("val/loss", result.val_loss), ("val/acc", result.val_acc),
        ("lr", result.lr), ("epoch_seconds", result.seconds), ("images_per_second", result.images_per_second),
    ):
        live.log_metric(name, value, plot=True)
    live.next_step()


def run(*, key, spec, recipe, params, model, data_dir, checkpoint_path, log_dir):
    """Train `model` on data_dir's train split, keeping the best-validation checkpoint."""
    rt = runtimelib.resolve(params.compute)
    efficiency.reset_peak_memory(rt.device)
    total_params, trainable_params = models.count_parameters(model)  # after any freezing
    meta = dataset.load_meta(data_dir)
    train, val = dataset.load_split(data_dir, "train"), dataset.load_split(data_dir, "val")
    model = engine.prepare_model(model, rt)
    preprocess = engine.preprocess_for(model, rt, spec.img_size)
    trainer = engine.Trainer(model, recipe, rt, preprocess, params.seed, params.compute.eval_batch_size)
    tensors = [transforms.to_tensor(train.images, rt.device), torch.from_numpy(train.labels).to(rt.device),
               transforms.to_tensor(val.images, rt.device), torch.from_numpy(val.labels).to(rt.device)]
    print(f"{meta['dataset']} ({meta['source']}): {len(train)} train / {len(val)} val images; "
          f"{spec.arch} at {spec.img_size} px on {rt.describe()}", flush=True)

    live = Live(dir=str(log_dir), dvcyaml=None, save_dvc_exp=False, report=None)
    seconds = []
    start = time.perf_counter()
    for result in trainer.epochs(*tensors):
        _log_epoch(live, result)
        seconds.append(result.seconds)
        if result.improved:
            checkpoint.save(checkpoint_path, model, key=key, spec=spec, dataset=meta["dataset"],
                            classes=meta["classes"], coarse_classes=meta["coarse_classes"],
                            image_size=meta["image_size"], epoch=result.epoch, val_acc=result.val_acc)
        print(f"epoch {result.epoch:3d}  train loss {result.train_loss:.4f} acc {result.train_acc:.4f}  "
              f"val loss {result.val_loss:.4f} acc {result.val_acc:.4f}  lr {result.lr:.2e}  "
              f"{result.seconds:.1f}s ({result.images_per_second:.0f} img/s){'  *best' if result.improved else ''}",
              flush=True)
    live.summary.update({
        "best_val_acc": trainer.best_acc,
        "epochs_run": trainer.epoch,
        "stopped_early": trainer.stopped_early,
        "train_seconds": round(time.perf_counter() - start, 3),
        "seconds_per_epoch": round(sum(seconds) / len(seconds), 3),
        "device": rt.describe(),
        "params": total_params,
        "trainable_params": trainable_params,
        "peak_memory_mb": round(efficiency.peak_memory(rt.device)[0], 1),
    })
    live.end()
    return trainer
