"""Models at inference: on the device in their memory layout, inputs preprocessed, logits or features out.

`infer` is the one path from uint8 images to model outputs: validation during
training, evaluate, embed, the probes, the throughput measurement and
`cifarbench predict` all use it, so they see the same resize and normalisation.
It returns outputs; metrics are computed from them elsewhere (metrics.py).
"""

import torch

from cifarbench.data import transforms
from cifarbench.models import checkpoint
from cifarbench.models import timm_models as modellib
from cifarbench.runtime import distributed
from cifarbench.runtime.device import uses_channels_last


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
    start = sum(bounds[: distributed.rank()]) if world > 1 else 0
    mine = images[start : start + bounds[distributed.rank()]] if world > 1 else images
    outputs = []
    for x in transforms.inference_batches(mine, batch_size, preprocess):
        with runtime.autocast():
            outputs.append(fn(x).float())
    local = torch.cat(outputs) if outputs else torch.empty(0, device=runtime.device)
    return distributed.gather_rows(local, bounds) if world > 1 else local


def load(checkpoint_path, runtime):
    """A checkpoint's model on the device in eval mode, with the preprocessing it was trained with."""
    model, info = checkpoint.load_model(checkpoint_path)
    model = prepare_model(model, runtime).eval()
    preprocess = transforms.Preprocess(
        info["spec"].img_size, tuple(info["mean"]), tuple(info["std"]), channels_last=uses_channels_last(model)
    )
    return model, preprocess, info
