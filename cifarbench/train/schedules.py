"""Learning-rate schedules from timm (`timm.scheduler.create_scheduler_v2`), set by a recipe.

`schedule` names one of timm's schedules with a warm-up from `warmup_lr` and a
floor `min_lr`. Schedules that are functions of time (cosine, tanh, poly,
step, multistep, constant) move the lr after every optimizer update, which
matters for the few-epoch fine-tuning this benchmark runs; `plateau` (the
original notebooks' ReduceLROnPlateau on validation accuracy) can only act
once per epoch, when the accuracy is known. The state saves and restores
exactly, so a resumed run gets the lr an uninterrupted one would have had.
"""

import warnings

from timm.scheduler import create_scheduler_v2

PER_EPOCH = {"plateau"}  # schedules that need the epoch's validation accuracy


class Schedule:
    """A timm scheduler plus when to call it: `after_update` per optimizer step, `after_epoch` per epoch."""

    def __init__(self, optimizer, recipe, updates_per_epoch):
        self.per_epoch = recipe.schedule in PER_EPOCH
        with warnings.catch_warnings():
            # timm deprecates its plateau scheduler (its counters are not in timm's checkpoints);
            # we keep it on purpose and save its full state ourselves (state_dict below)
            warnings.simplefilter("ignore", FutureWarning)
            self.scheduler, _ = create_scheduler_v2(
                optimizer,
                sched=recipe.schedule,
                num_epochs=recipe.epochs,
                decay_epochs=recipe.decay_epochs,
                decay_milestones=list(recipe.decay_milestones),
                decay_rate=recipe.plateau_factor if recipe.schedule == "plateau" else recipe.decay_rate,
                patience_epochs=recipe.plateau_patience,
                min_lr=recipe.min_lr,
                warmup_lr=recipe.warmup_lr,
                warmup_epochs=recipe.warmup_epochs,
                plateau_mode="max",
                step_on_epochs=self.per_epoch,
                updates_per_epoch=updates_per_epoch,
            )

    def after_update(self, num_updates):
        """After optimizer update number `num_updates` (counted from 1 over the whole run)."""
        if not self.per_epoch:
            self.scheduler.step_update(num_updates)

    def after_epoch(self, epoch, val_acc):
        """After `epoch` completed epochs, with that epoch's validation accuracy."""
        if self.per_epoch:
            self.scheduler.step(epoch, val_acc)

    def state_dict(self):
        # plain numbers, lists and strings only: it loads with torch.load(weights_only=True)
        state = {k: v for k, v in self.scheduler.__dict__.items() if k not in ("optimizer", "lr_scheduler")}
        inner = getattr(self.scheduler, "lr_scheduler", None)  # plateau: torch's ReduceLROnPlateau
        if inner is not None:
            state["lr_scheduler"] = {k: v for k, v in inner.state_dict().items() if k != "optimizer"}
        return state

    def load_state_dict(self, state):
        state = dict(state)
        inner = state.pop("lr_scheduler", None)
        self.scheduler.__dict__.update(state)
        if inner is not None:
            self.scheduler.lr_scheduler.load_state_dict(inner)
