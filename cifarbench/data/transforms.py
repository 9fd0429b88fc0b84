"""Batched image transforms on the training device (the airbench recipe).

The dataset stays a uint8 (N, 3, 32, 32) tensor on the device; a batch is
cropped, flipped, jittered, resized to the model's img_size and normalised as
tensor ops, each image with its own random draw. No PIL, no worker processes:
this is what keeps a GPU busy on 32 px images, and it is faster on CPU too.
Evaluation uses `prepare` alone, and `predict` feeds single images through it,
so every path sees exactly the same resize and normalisation.
"""

import contextlib
import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def to_tensor(images_nhwc, device):
    """uint8 (N, H, W, 3) numpy → uint8 (N, 3, H, W) tensor on `device`."""
    return torch.from_numpy(np.ascontiguousarray(images_nhwc)).to(device).permute(0, 3, 1, 2).contiguous()


@contextlib.contextmanager
def one_cpu_thread(device):
    """Run the enclosed tensor ops on one CPU thread (no-op on GPUs).

    A batch of 128 images at 32 px is ~400k values: each crop, jitter or
    normalisation op takes a fraction of a millisecond on one core. Split
    across threads, every op also waits at an OpenMP barrier for the other
    threads, and when another process holds a core that wait is a scheduler
    time slice: on a shared 2-core machine the ~20 ops of a batch measured
    ~4 ms each with 2 threads and ~0.2 ms with one. The big ops (the model, the
    resize to 224 px) run outside and keep every thread. The corruptions
    (cifarbench.data.corruptions) run under it too, for the same reason: the
    15 corruptions of 1,000 images took 2.6-4.3 s on 2 threads and 1.8-2.1 s
    on one (load average 4).
    """
    threads = torch.get_num_threads()
    if torch.device(device).type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@functools.lru_cache(maxsize=16)
def _channel_stats(mean, std, device, dtype):
    """mean and std as (1, 3, 1, 1) tensors, made once per device rather than every batch."""
    with torch.inference_mode(False):  # ordinary tensors even when first asked for under infer()
        return tuple(torch.tensor(v, device=device, dtype=dtype).view(1, 3, 1, 1) for v in (mean, std))


@dataclass(frozen=True)
class Preprocess:
    """Resize to the model's input size and normalise with the model's own mean/std."""

    img_size: int
    mean: tuple
    std: tuple
    channels_last: bool = False

    def __call__(self, x):
        """uint8 or [0, 1] float (N, 3, H, W) → normalised float32 (N, 3, img_size, img_size)."""
        return self.resized(self.native(x))

    def _plan(self, x):
        """(resize?, upsampling?, memory layout) for an input of x's size."""
        resize = x.shape[-1] != self.img_size or x.shape[-2] != self.img_size
        # Normalising is per-channel affine and bilinear weights sum to 1, so the
        # two commute: do it at whichever size has fewer pixels (before a 32 → 224
        # upsampling that is 49x less work; equal up to float rounding).
        upsample = resize and x.shape[-1] * x.shape[-2] < self.img_size**2
        return resize, upsample, torch.channels_last if self.channels_last else torch.contiguous_format

    def native(self, x):
        """The first half, at the input's own size: layout, to float, normalise (unless shrinking later).

        Per image and per element, so splitting a batch before or after this
        half gives the same values; `training_batches` runs it over many
        batches at once on a GPU.
        """
        resize, upsample, layout = self._plan(x)
        with one_cpu_thread(x.device):
            if self.channels_last and resize:
                x = x.contiguous(memory_format=layout)  # cheap at 32 px; the resize then writes NHWC directly
            if x.dtype == torch.uint8:
                x = x.float().div_(255)
            if not resize or upsample:
                x = self._normalize(x, layout)
        return x

    def resized(self, x):
        """The second half, on `native`'s output: resize to img_size (normalising after a shrink)."""
        resize, upsample, layout = self._plan(x)
        if resize:
            # bilinear; antialias only matters when shrinking
            x = F.interpolate(
                x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False, antialias=not upsample
            )
            if not upsample:
                x = self._normalize(x, layout)
        return x.contiguous(memory_format=layout)

    def _normalize(self, x, layout):
        mean, std = _channel_stats(self.mean, self.std, x.device, x.dtype)
        # written straight into the model's memory layout: no separate channels_last copy
        return torch.sub(x, mean, out=torch.empty_like(x, memory_format=layout)).div_(std)


def _crop_flip(x, padding, flip, generator):
    """Per-image random crop (zero padding) and/or horizontal flip as one gather over the batch.

    Draws dy, dx (crop) then the flips, as random_crop followed by random_flip
    did, and gives exactly their result: a flipped crop is the crop window read
    right to left.
    """
    if not padding and not flip:
        return x
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).expand(n, h)
    cols = torch.arange(w, device=x.device).expand(n, w)
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
        rows = rows + torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)[:, None]
        cols = cols + torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)[:, None]
    if flip:
        flipped = torch.rand(n, device=x.device, generator=generator) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    height, width = x.shape[-2:]
    index = (rows[:, :, None] * width + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, height * width).gather(2, index).view(n, c, h, w)


def random_crop(x, padding, generator):
    """Zero-pad by `padding` and take a random crop of the original size, per image."""
    return _crop_flip(x, padding, False, generator)


def random_flip(x, generator):
    return _crop_flip(x, 0, True, generator)


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
    return x.sub_(grey).mul_(contrast).add_(grey).clamp_(0, 1)  # in place on our own copy: no new buffers


def augment(x_uint8, aug, generator):
    """Training augmentation of a uint8 batch → [0, 1] float batch at the native size."""
    with one_cpu_thread(x_uint8.device):
        x = _crop_flip(x_uint8, aug.crop_padding, aug.flip, generator)
        return random_jitter(x.float().div_(255), aug.jitter, generator)


def training_batch(images, index, aug, preprocess, generator):
    """One training step's model input: the images at `index` (uint8, on the device), augmented and preprocessed."""
    # index_select copies whole images: several times faster on CPU than images[index]
    return preprocess(augment(images.index_select(0, index), aug, generator))


# On a GPU each tensor op costs a kernel launch, paid on the CPU: 10-40 µs each,
# ~25 for augmenting and normalising a batch, next to a model step of a few ms.
# Done for many batches at once the launches are shared; the 32 px float chunk
# is small (8192 images: 100 MB). On CPUs the work is per element anyway, and
# per batch keeps it in cache (and the random draws as they always were).
CHUNK_IMAGES = 8192


def batches_per_chunk(device, batch_size):
    return 1 if torch.device(device).type == "cpu" else max(1, CHUNK_IMAGES // batch_size)


def inference_batches(images, batch_size, preprocess):
    """Model inputs for consecutive batches of uint8 images, the native-size half per chunk of batches."""
    chunk = batches_per_chunk(images.device, batch_size) * batch_size
    for start in range(0, len(images), chunk):
        native = preprocess.native(images[start : start + chunk])
        for first in range(0, len(native), batch_size):
            yield preprocess.resized(native[first : first + batch_size])


def training_batches(images, order, batch_size, steps, aug, preprocess, generator):
    """Yield (index, model input) for the first `steps` batches of `order`, as `training_batch` makes them.

    On CPU exactly `training_batch` per step. On a GPU the batch selection,
    augmentation and native-size preprocessing run once per chunk of batches
    (the same kinds of random draws, made per chunk), so each step launches
    only the resize.
    """
    per_chunk = batches_per_chunk(images.device, batch_size)
    for first in range(0, steps, per_chunk):
        count = min(per_chunk, steps - first)
        index = order[first * batch_size : (first + count) * batch_size]
        chunk = preprocess.native(augment(images.index_select(0, index), aug, generator))
        for k in range(count):
            part = slice(k * batch_size, (k + 1) * batch_size)
            yield index[part], preprocess.resized(chunk[part])
