"""Checkpoints that carry what is needed to rebuild their model (the nanoGPT way).

A checkpoint is a plain dict of tensors, strings and numbers, so it loads with
`torch.load(weights_only=True)`: a downloaded or tampered file cannot run code.
"""

import pickle
from pathlib import Path

import torch

from cifarbench import atomic, inputs, paths
from cifarbench.errors import BenchError
from cifarbench.models import timm_models as modellib
from cifarbench.params import ModelSpec

FORMAT = 1


def save(path, model, *, key, spec, dataset, classes, coarse_classes, image_size, epoch, val_acc, state_dict=None):
    """Save `model` (or, given, `state_dict`: weights for the same architecture) with its rebuild recipe."""
    mean, std = modellib.normalization(model)
    if state_dict is None:
        state_dict = model.state_dict()
    state = {k: v.detach().cpu() for k, v in state_dict.items()}
    atomic.torch_save(
        path,
        {
            "format": FORMAT,
            "model_key": key,
            "spec": spec.model_dump(),
            "num_classes": len(classes),
            "dataset": dataset,
            "classes": list(classes),
            "coarse_classes": list(coarse_classes) if coarse_classes else None,
            "image_size": [int(v) for v in image_size],  # (H, W) of the dataset's images: predict resizes to it
            "mean": list(mean),
            "std": list(std),
            "epoch": epoch,
            "val_acc": val_acc,
            "state_dict": state,
        },
    )


def read(path):
    """The checkpoint dict, loaded without executing anything from the file."""
    path = Path(path)
    if not path.is_file():
        stage = paths.producing_stage(path) or "<the stage that writes it>"
        raise BenchError(f"checkpoint {path} not found: run `dvc repro {stage}` first")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors have many types; all mean "unusable file"
        raise _unreadable(path, exc) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise inputs.unusable(path, f"is not a CIFARbench checkpoint (format {FORMAT})")
    return ckpt


def _unreadable(path, exc):
    """A truncated or overwritten file is damaged; one whose pickle names a function or class is refused.

    torch wraps the weights-only unpickler's own error in a long help text: the cause is its context.
    """
    cause = exc.__context__ if isinstance(exc, pickle.UnpicklingError) and exc.__context__ else exc
    reason = inputs.first_line(cause)
    if "Unsupported global" in reason:  # the pickle would import and call something: refuse, never run it
        return inputs.unusable(path, f"cannot be loaded safely ({reason})")
    return inputs.damaged(path, f"not a readable checkpoint: {reason}")


def load_model(path):
    """Rebuild the model from the checkpoint alone (no params, no download); returns (model, info)."""
    ckpt = read(path)
    spec = ModelSpec.model_validate(ckpt["spec"])
    model = modellib.create(spec, ckpt["num_classes"], pretrained=False, key=ckpt["model_key"])
    model.load_state_dict(ckpt.pop("state_dict"))
    ckpt["spec"] = spec
    return model, ckpt
