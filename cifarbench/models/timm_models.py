"""Models by timm name: creation, input normalisation, block freezing, embeddings.

timm owns the architectures, the pretrained weights and each model's own
mean/std; this module only adds what the benchmark needs on top: checks that a
spec can be built, "freeze the stem and the first N blocks" (from timm's own
block grouping, the one it uses for layer-wise lr decay), and pre-logit features.
"""

from pathlib import Path

import timm
import torch
from timm.models import get_pretrained_cfg, group_modules, split_model_name_tag

from cifarbench.errors import BenchError


def _takes_img_size(arch):
    """ViTs are built for one input size (position embeddings); timm resizes them on load."""
    cfg = get_pretrained_cfg(split_model_name_tag(arch)[0])
    return bool(cfg and cfg.fixed_input_size)


def _build_kwargs(spec, num_classes):
    kwargs = dict(spec.kwargs, num_classes=num_classes)
    if _takes_img_size(spec.arch):
        kwargs["img_size"] = spec.img_size
    return kwargs


def create(spec, num_classes, pretrained=None, key="model"):
    """Build `spec.arch` with a fresh `num_classes` head.

    pretrained: None follows spec.pretrained (true = timm's hub weights, a path =
    that local file, false = random init); False forces random init, as when a
    checkpoint's weights are about to be loaded anyway.
    """
    pretrained = spec.pretrained if pretrained is None else pretrained
    kwargs = _build_kwargs(spec, num_classes)
    if isinstance(pretrained, str):
        if not Path(pretrained).is_file():
            raise BenchError(
                f"models.{key}.pretrained: weights file {pretrained} not found; give an existing path, true or false"
            )
        kwargs["pretrained_cfg_overlay"] = {"file": str(pretrained)}
        pretrained = True
    try:
        return timm.create_model(spec.arch, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:  # hub unreachable, bad weights file
        if not pretrained:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(
            f"models.{key}: could not load pretrained weights for {spec.arch} ({first}); "
            f"set models.{key}.pretrained to a local weights file, or false for random init"
        ) from None


def normalization(model):
    """The mean/std the model's pretrained weights expect (timm's pretrained config)."""
    cfg = timm.data.resolve_data_config({}, model=model)
    return tuple(float(v) for v in cfg["mean"]), tuple(float(v) for v in cfg["std"])


def patch_size(model):
    embed = getattr(model, "patch_embed", None)
    return int(embed.patch_size[0]) if embed is not None else None


def _groups(model):
    """timm's coarse grouping: [stem, block 1, …, block n, head] as lists of module names."""
    return list(group_modules(model, model.group_matcher(coarse=True)).values())


def block_count(model):
    return len(_groups(model)) - 2


def freeze(model, n_blocks):
    """Freeze the stem and the first n_blocks blocks; returns the frozen modules' names.

    Frozen modules also stay in eval mode during training (see train_mode), so
    their BatchNorm statistics stay as they were, not just their weights.
    """
    if n_blocks == 0:
        model.frozen_modules = []
        return []
    names = [name for group in _groups(model)[: n_blocks + 1] for name in group]
    modules = dict(model.named_modules())
    for name in names:
        for p in modules[name].parameters():
            p.requires_grad_(False)
    model.frozen_modules = names
    return names


def train_mode(model):
    model.train()
    modules = dict(model.named_modules())
    for name in getattr(model, "frozen_modules", []):
        modules[name].eval()


def count_parameters(model):
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def features(model, x):
    """Penultimate-layer embedding (pooled, before the classifier), not logits."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def family(model):
    """'vit' for models that see patches (position embeddings, LayerNorm), else 'cnn'."""
    return "vit" if patch_size(model) else "cnn"


def structure(spec, num_classes=10):
    """The model's structure only, on the meta device: no memory, no weights, no download."""
    with torch.device("meta"):
        return timm.create_model(spec.arch, pretrained=False, **_build_kwargs(spec, num_classes))


def check_spec(key, spec, freeze_blocks):
    """Fail early, naming the params key, if a spec cannot be built as asked; returns the meta-device model."""
    if not timm.is_model(spec.arch):
        raise BenchError(f"models.{key}.arch: unknown timm model {spec.arch!r}; pick a name from timm.list_models()")
    try:
        model = structure(spec)
    except (TypeError, ValueError, AssertionError) as exc:
        raise BenchError(f"models.{key}.kwargs: timm cannot build {spec.arch} with {spec.kwargs} ({exc})") from None
    patch = patch_size(model)
    if patch and spec.img_size % patch:
        near = max(patch, round(spec.img_size / patch) * patch)
        raise BenchError(
            f"models.{key}.img_size: {spec.img_size} is not a multiple of {spec.arch}'s patch size {patch}; "
            f"use e.g. {near}"
        )
    depth = block_count(model)
    if freeze_blocks > depth:
        raise BenchError(
            f"transfer.{key}.freeze_blocks: {freeze_blocks} is more than the {depth} blocks of {spec.arch}"
        )
    return model
