"""The training and inference engine shared by train-cifar10 and transfer-cifar100.

Data stay uint8 tensors on the device (see transforms.py). Per step there is no
host synchronisation: loss and accuracy are summed on the device and read once
per epoch, so a GPU never waits for Python. `infer` returns logits (or
features); metrics are computed from them elsewhere (metrics.py).
"""

import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from tqdm import tqdm

from cifarbench import distributed, transforms
from cifarbench import models as modellib
from cifarbench.errors import BenchError
from cifarbench.runtime import uses_channels_last

# Read the loss back every this many steps to catch NaN/inf early; one scalar
# copy per 50 steps costs nothing measurable, unlike one per step.
FINITE_CHECK_EVERY = 50


@dataclass
class EpochResult:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    images_per_second: float
    improved: bool


def prepare_model(model, runtime):
    model = model.to(runtime.device)
    if uses_channels_last(model):
        model = model.to(memory_format=torch.channels_last)
    return model


def preprocess_for(model, runtime, img_size):
    mean, std = modellib.normalization(model)
    return transforms.Preprocess(img_size, mean, std, channels_last=uses_channels_last(model))


@torch.inference_mode()
def infer(model, images, preprocess, runtime, batch_size, fn=None):
    """Run `fn` (default: the model, i.e. logits) over uint8 images in batches; float32 result on device.

    Under torchrun each rank takes one contiguous share of the images and every
    rank gets all rows back in order: each image is counted exactly once,
    whatever the number of ranks.
    """
    model.eval()
    fn = fn or model
    world = distributed.world_size() if len(images) >= distributed.world_size() else 1
    bounds = [len(share) for share in torch.tensor_split(torch.arange(len(images)), world)]
    start = sum(bounds[:distributed.rank()]) if world > 1 else 0
    mine = images[start:start + bounds[distributed.rank()]] if world > 1 else images
    outputs = []
    for x in transforms.inference_batches(mine, batch_size, preprocess):
        with runtime.autocast():
            outputs.append(fn(x).float())
    local = torch.cat(outputs) if outputs else torch.empty(0, device=runtime.device)
    return distributed.gather_rows(local, bounds) if world > 1 else local


def build_optimizer(model, recipe):
    """timm's optimizer factory: no weight decay on norms/biases, optional layer-wise lr decay."""
    extra = {"momentum": recipe.momentum} if recipe.optimizer == "sgd" else {}
    optimizer = create_optimizer_v2(
        model, opt=recipe.optimizer, lr=recipe.lr, weight_decay=recipe.weight_decay,
        layer_decay=recipe.layer_decay, **extra,
    )
    for group in optimizer.param_groups:
        # timm stores layer decay as lr_scale for its own schedulers; apply it here
        group["lr"] = recipe.lr * group.get("lr_scale", 1.0)
        group["initial_lr"] = group["lr"]
    return optimizer


class Trainer:
    """Fit a classifier with early stopping on validation accuracy.

    The caller hands in device tensors (uint8 images, int64 labels) and gets an
    `EpochResult` per epoch from `epochs()`; it decides what to log and save.
    """

    def __init__(self, model, recipe, runtime, preprocess, seed, eval_batch_size):
        self.model = model
        self.recipe = recipe
        self.runtime = runtime
        self.preprocess = preprocess
        self.eval_batch_size = eval_batch_size
        self.optimizer = build_optimizer(model, recipe)
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=recipe.plateau_factor, patience=recipe.plateau_patience
        )
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.needs_grad_scaler)
        self.world, self.rank = distributed.world_size(), distributed.rank()
        # Every rank draws the same epoch order (then takes its own shard of it);
        # augmentation draws differ per rank.
        self.order_generator = torch.Generator(runtime.device).manual_seed(seed)
        self.augment_generator = torch.Generator(runtime.device).manual_seed(seed + 1 + self.rank)
        if self.world > 1:  # gradients are all-reduced across ranks in backward()
            from torch.nn.parallel import DistributedDataParallel

            ids = [runtime.device] if runtime.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids)
        self.step_fn = torch.compile(model) if runtime.compile else model
        self.epoch = 0  # completed epochs
        self.best_acc = -1.0
        self.since_best = 0

    @property
    def finished(self):
        return self.epoch >= self.recipe.epochs or self.stopped_early

    def state_dict(self):
        """Everything an interrupted run needs to continue exactly as if it had not stopped.

        A collective under torchrun: every rank must call it (each rank's RNGs are gathered).
        """
        cuda = torch.cuda.get_rng_state_all() if self.runtime.device.type == "cuda" else []
        return {
            "epoch": self.epoch, "best_acc": self.best_acc, "since_best": self.since_best,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "plateau": self.plateau.state_dict(),
            "scaler": self.scaler.state_dict(),
            "order_rng": self.order_generator.get_state(),
            # per rank: augmentation, and the global RNG that dropout and drop-path draw from
            "rank_rngs": distributed.gather_objects(
                {"augment": self.augment_generator.get_state(), "torch": torch.get_rng_state(), "cuda": cuda}),
        }

    def load_state_dict(self, state):
        self.epoch, self.best_acc, self.since_best = state["epoch"], state["best_acc"], state["since_best"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.plateau.load_state_dict(state["plateau"])
        self.scaler.load_state_dict(state["scaler"])
        self.order_generator.set_state(state["order_rng"])
        mine = state["rank_rngs"][self.rank]
        self.augment_generator.set_state(mine["augment"])
        torch.set_rng_state(mine["torch"])
        if mine["cuda"] and self.runtime.device.type == "cuda":
            torch.cuda.set_rng_state_all(mine["cuda"])

    @property
    def stopped_early(self):
        patience = self.recipe.early_stopping
        return bool(patience) and self.since_best >= patience

    def _warmup(self, step, warmup_steps):
        if step < warmup_steps:
            scale = (step + 1) / warmup_steps
            for group in self.optimizer.param_groups:
                group["lr"] = group["initial_lr"] * scale

    def _train_epoch(self, images, labels):
        recipe, runtime = self.recipe, self.runtime
        modellib.train_mode(self.model)
        # recipe.batch_size is the global batch: each of the `world` ranks takes its share of it
        per_rank = len(labels) // self.world
        batch = min(max(1, recipe.batch_size // self.world), per_rank)
        steps = per_rank // batch  # drop the ragged tail: a 1-image batch breaks BatchNorm
        warmup_steps = recipe.warmup_epochs * steps
        order = torch.randperm(len(labels), device=runtime.device, generator=self.order_generator)
        order = order[self.rank::self.world][:per_rank]  # this rank's disjoint shard
        loss_sum = torch.zeros((), device=runtime.device)
        correct = torch.zeros((), device=runtime.device, dtype=torch.long)
        first_bad_step = torch.full((), -1, device=runtime.device, dtype=torch.long)
        bar = tqdm(range(steps), desc=f"epoch {self.epoch + 1}", unit="batch", leave=False, mininterval=2,
                   disable=None)  # None: a bar on a terminal, none in CI logs
        start = time.perf_counter()
        batches = transforms.training_batches(images, order, batch, steps, recipe.augment, self.preprocess,
                                              self.augment_generator)
        for step, (index, x) in zip(bar, batches):
            self._warmup(self.epoch * steps + step, warmup_steps)
            y = labels[index]
            with runtime.autocast():
                logits = self.step_fn(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(1) == y).sum()
            # remember the first non-finite step on the device; read it back only now and then
            bad = ~torch.isfinite(loss.detach()) & (first_bad_step < 0)
            first_bad_step = torch.where(bad, step, first_bad_step)
            if (step + 1) % FINITE_CHECK_EVERY == 0 or step + 1 == steps:
                self._stop_if_not_finite(first_bad_step)
            bar.set_postfix_str(f"{(step + 1) * batch / (time.perf_counter() - start):.0f} img/s", refresh=False)
        bar.close()
        totals = distributed.all_reduce_sum(torch.stack([loss_sum, correct.float()]))  # the epoch's one sync
        seen = steps * batch * self.world
        return (totals[0] / seen).item(), (totals[1] / seen).item(), seen

    def _stop_if_not_finite(self, first_bad_step):
        bad = distributed.first_flagged_step(first_bad_step)
        if bad >= 0:
            raise BenchError(
                f"training loss is NaN or infinite at epoch {self.epoch + 1}, step {bad + 1}: lower the lr "
                "or check the data; the checkpoint and state of the last completed epoch are kept"
            )

    def evaluate(self, images, labels):
        logits = infer(self.model, images, self.preprocess, self.runtime, self.eval_batch_size)
        loss = F.cross_entropy(logits, labels).item()
        acc = (logits.argmax(1) == labels).float().mean().item()
        return loss, acc

    def epochs(self, train_images, train_labels, val_images, val_labels):
        """Yield one EpochResult per epoch until recipe.epochs or early stopping."""
        while not self.finished:
            start = time.perf_counter()
            train_loss, train_acc, seen = self._train_epoch(train_images, train_labels)
            val_loss, val_acc = self.evaluate(val_images, val_labels)
            seconds = time.perf_counter() - start
            self.epoch += 1
            if self.epoch > self.recipe.warmup_epochs:  # warm-up owns the lr until it is done
                self.plateau.step(val_acc)
            improved = val_acc > self.best_acc
            if improved:
                self.best_acc, self.since_best = val_acc, 0
            else:
                self.since_best += 1
            yield EpochResult(
                epoch=self.epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss,
                val_acc=val_acc, lr=max(g["lr"] for g in self.optimizer.param_groups), seconds=seconds,
                images_per_second=seen / seconds, improved=improved,
            )


def load_for_inference(checkpoint_path, runtime):
    """A checkpoint's model on the device in eval mode, with the preprocessing it was trained with."""
    from cifarbench import checkpoint

    model, info = checkpoint.load_model(checkpoint_path)
    model = prepare_model(model, runtime).eval()
    preprocess = transforms.Preprocess(info["spec"].img_size, tuple(info["mean"]), tuple(info["std"]),
                                       channels_last=uses_channels_last(model))
    return model, preprocess, info
