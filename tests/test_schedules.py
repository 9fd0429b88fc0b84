"""Learning-rate schedules from timm: their shape, layer decay applied once, and an exact save/restore."""

import io
import math

import pytest
import torch
from conftest import tiny_params

from cifarbench import params
from cifarbench.train import engine, schedules

STEPS = 10  # optimizer updates per epoch


def recipe(**changes):
    """The tiny CNN recipe (train.resnet18) with `changes`."""
    raw = tiny_params(**{f"train__resnet18__{k}": v for k, v in changes.items()})
    return params.parse(raw).recipe("train", "resnet18")


def lrs(r, epochs=None, val_accs=None, model=None):
    """The lr of every update (and after each epoch) when nothing else happens: a dry run of the schedule."""
    model = model or torch.nn.Linear(4, 2)
    optimizer = engine.build_optimizer(model, r)
    schedule = schedules.Schedule(optimizer, r, STEPS)
    seen = []
    for epoch in range(epochs or r.epochs):
        for step in range(STEPS):
            seen.append(optimizer.param_groups[0]["lr"])
            schedule.after_update(epoch * STEPS + step + 1)
        schedule.after_epoch(epoch + 1, (val_accs or [0.5] * 100)[epoch])
    return seen


def test_cosine_warms_up_then_decays_to_the_floor_every_update():
    r = recipe(schedule="cosine", epochs=5, warmup_epochs=1, lr=0.1, warmup_lr=0.001, min_lr=0.0001)
    seen = lrs(r)
    assert seen[0] == pytest.approx(0.001)  # the warm-up starts at warmup_lr
    # timm's warm-up overlaps the cosine's start (warmup_prefix=False, its train.py default): the peak is
    # the cosine's value after one of five epochs, cos(pi / 5) of the way down
    assert max(seen) == seen[STEPS] == pytest.approx(0.0001 + 0.5 * (0.1 - 0.0001) * (1 + math.cos(math.pi / 5)))
    after = seen[STEPS:]
    assert all(a > b for a, b in zip(after, after[1:]))  # then falls at every update, not once per epoch
    assert after[-1] == pytest.approx(0.0001, abs=0.002)  # close to the floor at the end


def test_step_schedule_multiplies_by_the_rate_every_decay_epochs():
    r = recipe(schedule="step", epochs=6, warmup_epochs=0, lr=0.1, decay_epochs=2, decay_rate=0.5)
    per_epoch = lrs(r)[::STEPS]
    assert per_epoch == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])


def test_plateau_cuts_the_lr_when_validation_accuracy_stalls():
    r = recipe(
        schedule="plateau", epochs=6, warmup_epochs=0, lr=0.1, plateau_factor=0.2, plateau_patience=1, min_lr=0.0
    )
    per_epoch = lrs(r, val_accs=[0.5, 0.6, 0.6, 0.6, 0.6, 0.6])[::STEPS]
    # best after epoch 2; epochs 3 and 4 do not improve: two bad epochs > patience 1, so epoch 5 runs at lr x 0.2
    assert per_epoch == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.02, 0.02])


def test_layer_decay_scales_each_group_once():
    import timm

    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=32,
        num_heads=2,
        num_classes=2,
    )
    r = recipe(schedule="constant", epochs=1, warmup_epochs=0, lr=0.1, layer_decay=0.5, optimizer="adamw")
    optimizer = engine.build_optimizer(model, r)
    schedules.Schedule(optimizer, r, STEPS)
    scales = {round(g.get("lr_scale", 1.0), 6) for g in optimizer.param_groups}
    assert len(scales) > 1  # really layer-decayed
    for group in optimizer.param_groups:
        assert group["lr"] == pytest.approx(0.1 * group.get("lr_scale", 1.0))


@pytest.mark.parametrize("name", ["cosine", "plateau", "step"])
def test_saved_state_continues_exactly(name):
    """Stop after 2 epochs, save through torch.save (weights_only load), restore into a fresh schedule:
    the lr sequence is the uninterrupted one."""
    r = recipe(schedule=name, epochs=5, warmup_epochs=1, lr=0.1, plateau_patience=0, decay_epochs=1)
    accs = [0.5, 0.6, 0.55, 0.55, 0.7]
    full = lrs(r, val_accs=accs)

    model = torch.nn.Linear(4, 2)
    optimizer = engine.build_optimizer(model, r)
    schedule = schedules.Schedule(optimizer, r, STEPS)
    for epoch in range(2):
        for step in range(STEPS):
            schedule.after_update(epoch * STEPS + step + 1)
        schedule.after_epoch(epoch + 1, accs[epoch])
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    optimizer2 = engine.build_optimizer(torch.nn.Linear(4, 2), r)
    schedule2 = schedules.Schedule(optimizer2, r, STEPS)
    optimizer2.load_state_dict(saved["optimizer"])
    schedule2.load_state_dict(saved["schedule"])
    resumed = []
    for epoch in range(2, 5):
        for step in range(STEPS):
            resumed.append(optimizer2.param_groups[0]["lr"])
            schedule2.after_update(epoch * STEPS + step + 1)
        schedule2.after_epoch(epoch + 1, accs[epoch])
    assert resumed == full[2 * STEPS :]
