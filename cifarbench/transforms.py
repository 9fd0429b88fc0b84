"""Batched image transforms on the training device (the airbench recipe).

The dataset stays a uint8 (N, 3, 32, 32) tensor on the device; a batch is
cropped, flipped, jittered, resized to the model's img_size and normalised as
tensor ops, each image with its own random draw. No PIL, no worker processes:
this is what keeps a GPU busy on 32 px images, and it is faster on CPU too.
Evaluation uses `prepare` alone, and `predict` feeds single images through it,
so every path sees exactly the same resize and normalisation.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(images_nhwc, device):
    """uint8 (N, H, W, 3) numpy → uint8 (N, 3, H, W) tensor on `device`."""
    return torch.from_numpy(np.ascontiguousarray(images_nhwc)).to(device).permute(0, 3, 1, 2).contiguous()


@dataclass(frozen=True)
class Preprocess:
    """Resize to the model's input size and normalise with the model's own mean/std."""

    img_size: int
    mean: tuple
    std: tuple
    channels_last: bool = False

    def __call__(self, x):
        """uint8 or [0, 1] float (N, 3, H, W) → normalised float32 (N, 3, img_size, img_size)."""
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            # bilinear upsampling; antialias only matters when shrinking
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.img_size)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        x = (x - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def random_crop(x, padding, generator):
    """Zero-pad by `padding` and take a random crop of the original size, per image."""
    if padding == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (n, 1, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_flip(x, generator):
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_jitter(x, strength, generator):
    """Brightness then contrast, each factor from [1 - strength, 1 + strength], per image; x in [0, 1]."""
    if strength == 0:
        return x
    n = x.shape[0]
    low, span = 1 - strength, 2 * strength
    brightness = low + span * torch.rand(n, 1, 1, 1, device=x.device, generator=generator)
    contrast = low + span * torch.rand(n, 1, 1, 1, device=x.device, generator=generator)
    x = (x * brightness).clamp_(0, 1)
    grey = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).mean(dim=(1, 2)).view(n, 1, 1, 1)
    return ((x - grey) * contrast + grey).clamp_(0, 1)


def augment(x_uint8, aug, generator):
    """Training augmentation of a uint8 batch → [0, 1] float batch at the native size."""
    x = random_crop(x_uint8, aug.crop_padding, generator)
    if aug.flip:
        x = random_flip(x, generator)
    return random_jitter(x.float().div_(255), aug.jitter, generator)
