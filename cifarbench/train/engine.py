"""The training engine shared by train-cifar10 and transfer-cifar100: optimizer, schedule, epochs.

Data stay uint8 tensors on the device (see data/transforms.py). Per step there is no
host synchronisation: loss and accuracy are summed on the device and read once
per epoch, so a GPU never waits for Python. Validation goes through
inference.infer, the same path evaluate uses.
"""

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from tqdm import tqdm

from cifarbench.data import transforms
from cifarbench.errors import BenchError
from cifarbench.models import inference
from cifarbench.models import timm_models as modellib
from cifarbench.runtime import distributed
from cifarbench.train import schedules

# Read the loss back every this many steps to catch NaN/inf early; one scalar
# copy per 50 steps costs nothing measurable, unlike one per step.
FINITE_CHECK_EVERY = 50


class NonFiniteLoss(BenchError):
    """The training loss turned NaN or infinite: a stage stops on it, a tuning trial records it as its result."""


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


def build_optimizer(model, recipe, device="cpu"):
    """timm's optimizer factory: no weight decay on norms/biases, optional layer-wise lr decay.

    With layer_decay each parameter group carries timm's `lr_scale`, which the
    timm scheduler applies every time it sets the lr (see schedules.py).
    On CUDA torch's fused implementation: one kernel updates a group's tensors in one
    pass, where the default (foreach) makes several passes over weights, gradients and
    moments; the same update up to float rounding.
    """
    extra = {"momentum": recipe.momentum} if recipe.optimizer == "sgd" else {}
    if torch.device(device).type == "cuda":
        extra["fused"] = True
    return create_optimizer_v2(
        model,
        opt=recipe.optimizer,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        layer_decay=recipe.layer_decay,
        **extra,
    )


class Trainer:
    """Fit a classifier; keep the early-stopping counters; save and restore all of it exactly.

    The caller hands in device tensors (uint8 images, int64 labels) and runs
    the loop (see pipeline/train.py): `train_epoch`, `validate`, `end_epoch`
    (steps the schedule, counts epochs since the best), then saves.
    Under torchrun recipe.batch_size stays the global batch (see `plan`), and
    sync_bn (compute.sync_bn) decides how BatchNorm normalises (see
    distributed.batchnorm_for_ddp): `self.model` is the model as trained, its
    BatchNorm layers possibly converted, with the same weights and names.
    """

    def __init__(self, model, recipe, runtime, preprocess, seed, eval_batch_size, n_train, sync_bn=False):
        self.recipe = recipe
        self.runtime = runtime
        self.preprocess = preprocess
        self.eval_batch_size = eval_batch_size
        self.world, self.rank = distributed.world_size(), distributed.rank()
        # under DDP: SyncBatchNorm layers (sync_bn on CUDA) or per-rank statistics; `batchnorm` says which
        self.model, self.batchnorm = (
            distributed.batchnorm_for_ddp(model, runtime.device, sync_bn) if self.world > 1 else (model, None)
        )
        self.optimizer = build_optimizer(self.model, recipe, runtime.device)
        self.schedule = schedules.Schedule(self.optimizer, recipe, self.plan(n_train)[2])
        self.scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.needs_grad_scaler)
        # Every rank draws the same epoch order (then takes its own shard of it);
        # augmentation draws differ per rank.
        self.order_generator = torch.Generator(runtime.device).manual_seed(seed)
        self.augment_generator = torch.Generator(runtime.device).manual_seed(seed + 1 + self.rank)
        self.forward = self._eager_forward = self._parallel(self.model)
        # The step is kept as the plain function and called with the trainer: a bound method stored on the
        # trainer would be a reference cycle, which keeps a finished training's model, gradients and optimizer
        # state (GPU memory) alive until the garbage collector happens to run
        self.step_fn = Trainer._step
        # Compiled, a single process's loss and hit count join the model's kernels; under DDP only the
        # model is compiled, the form torch's DDP support expects. A recipe's `compile: false` keeps a
        # model eager where compute.compile compiles (where compiling costs it more than it saves)
        compiles = runtime.compile and recipe.compile
        if compiles and self.world == 1:
            self.step_fn = torch.compile(Trainer._step)
        elif compiles:
            self.forward = torch.compile(self.forward)
        self.compiled = compiles  # until a failed compile under compute.compile: auto turns it off
        self._first_compiled_step = compiles
        self.phase = "training"  # or "validation": what an epoch is doing, for an out-of-memory error line
        self.epoch = 0  # completed epochs
        self.best_acc = -1.0
        self.since_best = 0

    def _step(self, x, y):
        """The forward half of a training step: (loss, images right) of one batch, under autocast."""
        with self.runtime.autocast():
            logits = self.forward(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.recipe.label_smoothing)
        return loss, (logits.argmax(1) == y).sum()

    def _parallel(self, model):
        """What a training step calls: the model, or under torchrun the model in DDP (gradients averaged)."""
        return model if self.world == 1 else distributed.ddp(model, self.runtime.device)

    def plan(self, n_images):
        """(images per rank, batch per rank, steps) of an epoch over n_images.

        recipe.batch_size is the global batch: each of the `world` ranks takes its share of it.
        """
        per_rank = n_images // self.world
        batch = min(max(1, self.recipe.batch_size // self.world), per_rank)
        if batch < 1:
            raise BenchError(
                f"{n_images} training images cannot make one batch over {self.world} processes; "
                "use more images (data.limit) or fewer compute.devices"
            )
        return per_rank, batch, per_rank // batch  # drop the ragged tail: a 1-image batch breaks BatchNorm

    @property
    def finished(self):
        return self.epoch >= self.recipe.epochs or self.stopped_early

    @property
    def stopped_early(self):
        patience = self.recipe.early_stopping
        return bool(patience) and self.since_best >= patience

    @property
    def lr(self):
        """The lr now in effect (the head's group: the highest under layer decay)."""
        return max(g["lr"] for g in self.optimizer.param_groups)

    def state_dict(self):
        """Everything an interrupted run needs to continue exactly as if it had not stopped.

        A collective under torchrun: every rank must call it (each rank's RNGs are gathered).
        """
        cuda = torch.cuda.get_rng_state_all() if self.runtime.device.type == "cuda" else []
        return {
            "epoch": self.epoch,
            "best_acc": self.best_acc,
            "since_best": self.since_best,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "order_rng": self.order_generator.get_state(),
            # per rank: augmentation, and the global RNG that dropout and drop-path draw from
            "rank_rngs": distributed.gather_objects(
                {"augment": self.augment_generator.get_state(), "torch": torch.get_rng_state(), "cuda": cuda}
            ),
        }

    def load_state_dict(self, state):
        self.epoch, self.best_acc, self.since_best = state["epoch"], state["best_acc"], state["since_best"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.order_generator.set_state(state["order_rng"])
        mine = state["rank_rngs"][self.rank]
        self.augment_generator.set_state(mine["augment"])
        torch.set_rng_state(mine["torch"])
        if mine["cuda"] and self.runtime.device.type == "cuda":
            torch.cuda.set_rng_state_all(mine["cuda"])

    def train_epoch(self, images, labels):
        """One pass over this rank's shard: returns (mean loss, accuracy, images seen by all ranks)."""
        recipe, runtime = self.recipe, self.runtime
        per_rank, batch, steps = self.plan(len(labels))
        modellib.train_mode(self.model)
        order = torch.randperm(len(labels), device=runtime.device, generator=self.order_generator)
        order = order[self.rank :: self.world][:per_rank]  # this rank's disjoint shard
        loss_sum = torch.zeros((), device=runtime.device)
        correct = torch.zeros((), device=runtime.device, dtype=torch.long)
        first_bad_step = torch.full((), -1, device=runtime.device, dtype=torch.long)
        bar = tqdm(
            range(steps), desc=f"epoch {self.epoch + 1}", unit="batch", leave=False, mininterval=2, disable=None
        )  # None: a bar on a terminal, none in CI logs
        start = time.perf_counter()
        batches = transforms.training_batches(
            images, order, batch, steps, recipe.augment, self.preprocess, self.augment_generator
        )
        for step, (index, x) in zip(bar, batches):
            y = labels[index]
            loss, hits = self._forward_backward(x, y)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.schedule.after_update(self.epoch * steps + step + 1)
            loss_sum += loss.detach() * len(y)
            correct += hits
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

    def _forward_backward(self, x, y):
        """Loss and hits of one batch, gradients in place; the first compiled step may fall back to eager."""
        if not self._first_compiled_step:
            return self._backward(*self.step_fn(self, x, y))
        try:
            result = self._backward(*self.step_fn(self, x, y))
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # the compiler's own failure: no C compiler, a Triton or inductor error
            if not self.runtime.compile_fallback:
                raise
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            print(
                f"torch.compile failed on the first step ({type(exc).__name__}: {first}); "
                "compute.compile: auto goes on without it (set it to false to skip the attempt)",
                flush=True,
            )
            self.step_fn, self.forward, self.compiled = Trainer._step, self._eager_forward, False
            result = self._backward(*self.step_fn(self, x, y))
        self._first_compiled_step = False
        return result

    def _backward(self, loss, hits):
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        return loss, hits

    def _stop_if_not_finite(self, first_bad_step):
        bad = distributed.first_flagged_step(first_bad_step)
        if bad >= 0:
            raise NonFiniteLoss(
                f"training loss is NaN or infinite at epoch {self.epoch + 1}, step {bad + 1}: lower the lr "
                "or check the data; the checkpoint and state of the last completed epoch are kept"
            )

    def validate(self, images, labels):
        """(loss, accuracy) on held-out images, every image counted once whatever the number of ranks."""
        logits = inference.infer(self.model, images, self.preprocess, self.runtime, self.eval_batch_size)
        loss = F.cross_entropy(logits, labels).item()
        acc = (logits.argmax(1) == labels).float().mean().item()
        return loss, acc

    def end_epoch(self, val_acc):
        """Count the epoch, step the schedule, update early stopping; True when val_acc is the best so far."""
        self.epoch += 1
        self.schedule.after_epoch(self.epoch, val_acc)
        improved = val_acc > self.best_acc
        if improved:
            self.best_acc, self.since_best = val_acc, 0
        else:
            self.since_best += 1
        return improved

    def run_epoch(self, train_images, train_labels, val_images, val_labels):
        """One epoch: train, validate, step the schedule; the caller then saves what it needs."""
        start = time.perf_counter()
        self.phase = "training"
        train_loss, train_acc, seen = self.train_epoch(train_images, train_labels)
        self.phase = "validation"
        val_loss, val_acc = self.validate(val_images, val_labels)
        seconds = time.perf_counter() - start
        lr = self.lr  # the lr of the epoch's last update, before the epoch-end schedule step
        improved = self.end_epoch(val_acc)
        return EpochResult(
            epoch=self.epoch,
            train_loss=train_loss,
            train_acc=train_acc,
            val_loss=val_loss,
            val_acc=val_acc,
            lr=lr,
            seconds=seconds,
            images_per_second=seen / seconds,
            improved=improved,
        )

    def epochs(self, *tensors):
        """Yield run_epoch(*tensors) until recipe.epochs or early stopping."""
        while not self.finished:
            yield self.run_epoch(*tensors)
