"""The CIFAR-10-C corruptions as batched tensor ops on uint8 images, deterministic under a seed.

The protocol of Hendrycks & Dietterich 2019, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations": 15 corruptions x 5
severities applied to the 32x32 test images. The constants are those of the
CIFAR-10-C generator (make_cifar_c.py in github.com/hendrycks/robustness,
ImageNet-C/create_c/), which are milder than ImageNet-C's. Each corruption
follows the reference step by step (same draws, same order of operations, same
uint8 truncations), but for a whole batch at once on the images' device, in
float32: filters and zooms as products with 32x32 matrices that also carry the
reference's border rule, gathers for shifts and shuffles, grid_sample for
warps, instead of per-image numpy loops. Where the reference truncates a value
that is an integer up to rounding, float32 and float64 can fall on either side:
a value may end one level away from the reference's, never more.
Two places follow the maintained port `imagecorruptions` instead of the 2019
script, because the script's own dependencies are gone: motion blur (ImageMagick
through Wand in the script) uses imagecorruptions' numpy port of
ImageMagick's kernel, and frost uses the same frost pictures, resized by 0.2
with OpenCV's bilinear resize as the script does (frost_textures.npz beside this
file, 130 KB, five pictures; derived from the Apache-2.0 frost images shipped
with imagecorruptions). Pixelate and JPEG compression are Pillow's, image by
image, as in the script (exact, and on 32x32 images faster than tensor
versions); they run on the CPU whatever the images' device.

`corrupt(images, name, severity, seed)` takes a uint8 tensor (N, 3, 32, 32) on
any device and returns one of the same layout on the same device; a uint8 numpy
array (N, 32, 32, 3) gives one back in that layout. An image's corrupted bytes
depend only on the seed, the corruption, the severity and the image's index in
the test split (`index`, by default its position in `images`): each image draws
from its own torch.Generator on the CPU, seeded from those four (`image_seeds`),
and its draws then move to the images' device. So `corrupt(x, ...)[:k]` equals
`corrupt(x[:k], ...)`, a subset of the test set corrupted with its indices gets
the bytes the whole set gets, and the chunks the batch is cut into (`chunk_size`:
1,024 images on a CPU, where memory stays at a few times 12 MB whatever N; the
whole test set at once on a GPU, where every op is a kernel launch) change
nothing. On another device the draws are the same numbers, and the float32
arithmetic after them may round the other way where the reference truncates: a
value may end one level away, as against the reference (above). The two Pillow
corruptions (ON_HOST) have no draws.
tests/test_corruptions.py checks each corruption against the
reference libraries (imagecorruptions, OpenCV, scikit-image, SciPy, Pillow) on
sample images with the same random draws.
"""

import functools
import io
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cifarbench.data import transforms

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
SIZE = 32  # the constants below are for 32x32 images only

# Per corruption, the constants for severities 1-5, copied from make_cifar_c.py.
_IM = SIZE  # the script's IMSIZE in elastic_transform
CONSTANTS = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # noise std on [0, 1]
    "shot_noise": (500, 250, 100, 75, 50),  # photons per unit intensity
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),  # fraction of salt-and-pepper values
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),  # disk radius, alias blur
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),  # sigma, delta, iterations
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # radius, sigma
    "zoom_blur": tuple(tuple(np.arange(1, stop, 0.01)) for stop in (1.06, 1.11, 1.16, 1.21, 1.26)),
    # loc, scale, zoom, threshold, blur radius, blur sigma, image weight
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),  # image weight, frost weight
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),  # strength, fractal decay
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # added to HSV value
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # factor on the distance to the channel mean
    "elastic_transform": (
        (_IM * 0, _IM * 0, _IM * 0.08),
        (_IM * 0.05, _IM * 0.2, _IM * 0.07),
        (_IM * 0.08, _IM * 0.06, _IM * 0.06),
        (_IM * 0.1, _IM * 0.04, _IM * 0.05),
        (_IM * 0.1, _IM * 0.03, _IM * 0.03),
    ),  # alpha, sigma, affine jitter
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # size factor of the box downsampling
    "jpeg_compression": (80, 65, 58, 50, 40),  # quality
}
FROST_TEXTURES = Path(__file__).with_name("frost_textures.npz")
# Images per internal batch on a CPU. The float temporaries of 1,024 images
# (12 MB) stay in cache: 10,000 images in one batch ran 1.5-3x slower per image
# than in chunks of 1,000. The chunks change no byte (each image draws alone).
CHUNK = 1024
# On a GPU: a test set of CIFAR's 10,000 images in one chunk. Each corruption is tens of
# kernel launches per chunk (glass blur's pixel shuffle 1,568 at severities 4 and 5), which
# cost as much as the work on 1,024 images; 16,384 float images are 200 MB per temporary.
DEVICE_CHUNK = 16384
# Corruptions whose reference is Pillow's 8-bit code: made on the CPU whatever the device
ON_HOST = ("pixelate", "jpeg_compression")


def chunk_size(device):
    """Images per internal batch: CHUNK on a CPU, DEVICE_CHUNK on a GPU (one batch per test set)."""
    return CHUNK if torch.device(device).type == "cpu" else DEVICE_CHUNK


class ImageDraws:
    """Random draws for a batch of images, each image from its own generator (seeds: one per image).

    Each method returns (n, *shape) on `device`: one draw of `shape` per image,
    named and parameterised like numpy's (uniform(low, high), normal(loc, scale),
    randint with an exclusive high), so the corruptions read like the reference
    and a test can hand in the reference's own per-image numpy draws instead. The
    generators are the CPU's whatever the device (a CUDA generator gives other
    numbers): an image's draws are the same wherever it is corrupted and
    whichever images share its batch.
    """

    def __init__(self, seeds, device):
        self.n, self.device, self.seeds = len(seeds), torch.device(device), seeds
        self._generators = None

    @property
    def generators(self):
        if self._generators is None:  # made on first use: pixelate and JPEG draw nothing
            self._generators = [torch.Generator().manual_seed(int(s)) for s in self.seeds]
        return self._generators

    def _rows(self, shape, fill, dtype=torch.float32):
        """(n, *shape) with row i filled in place from generator i (what torch.rand and friends do inside)."""
        out = torch.empty((self.n, *shape), dtype=dtype)
        for row, generator in zip(out, self.generators):
            fill(row, generator)
        return out.to(self.device)

    def random(self, shape=()):
        return self._rows(shape, lambda row, g: row.uniform_(generator=g))

    def uniform(self, low, high, shape=()):
        return low + (high - low) * self.random(shape)

    def normal(self, loc, scale, shape=()):
        return loc + scale * self._rows(shape, lambda row, g: row.normal_(generator=g))

    def poisson(self, lam):
        rates = lam.cpu()
        drawn = [torch.poisson(rate, generator=g) for rate, g in zip(rates, self.generators)]
        return torch.stack(drawn).to(lam.device)

    def randint(self, low, high, shape=()):
        """Integers in [low, high); `high` may be a per-image tensor of shape (n,)."""
        if not torch.is_tensor(high):
            return self._rows(shape, lambda row, g: row.random_(low, high, generator=g), torch.int64)
        u = self._rows(shape, lambda row, g: row.uniform_(generator=g), torch.float64)
        span = (high - low).to(torch.float64).reshape(-1, *[1] * len(shape))
        return low + (u * span).long()


def stream_seed(seed, name, severity):
    """The seed of one (corruption, severity): independent child streams of `seed`."""
    sequence = np.random.SeedSequence(seed, spawn_key=(CORRUPTIONS.index(name), severity))
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


_GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def image_seeds(seed, name, severity, index):
    """One generator seed per test-split index: output `i` of SplitMix64 started at the (corruption, severity)
    stream's seed (Steele et al. 2014; what numpy and Java use to seed many generators from one), computed
    for every index at once in numpy's wrapping uint64 arithmetic."""
    z = np.uint64(stream_seed(seed, name, severity)) + (np.asarray(index, dtype=np.uint64) + np.uint64(1)) * np.uint64(
        _GOLDEN_GAMMA
    )
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))).tolist()


def _test_indices(index, n):
    if index is None:
        return range(n)
    index = np.asarray(index)
    if index.shape != (n,) or (n and (not np.issubdtype(index.dtype, np.integer) or index.min() < 0)):
        raise ValueError(f"index must hold one non-negative test-split index per image ({n}), got {index.shape}")
    return index.tolist()


def corrupt(images, name, severity, seed=0, index=None):
    """Apply corruption `name` at `severity` (1-5) to uint8 images, deterministically under `seed`.

    images: uint8 torch tensor (N, 3, 32, 32) on any device, or uint8 numpy
    array (N, 32, 32, 3). index: each image's index in the test split (default
    0..N-1), which with the seed fixes its draws. Returns uint8 images in the
    same layout, type and device.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; allowed: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    numpy_in = isinstance(images, np.ndarray)
    device = torch.device("cpu") if numpy_in else images.device
    constants = CONSTANTS[name][int(severity) - 1]
    with transforms.one_cpu_thread(device):
        nhwc = _as_nhwc(images)
        seeds = image_seeds(int(seed), name, int(severity), _test_indices(index, nhwc.shape[0]))
        out = nhwc.clone()
        size = chunk_size(device)
        for start in range(0, nhwc.shape[0], size):
            draws = ImageDraws(seeds[start : start + size], device)
            out[start : start + size] = apply(nhwc[start : start + size], name, constants, draws)
        return out.numpy() if numpy_in else out.permute(0, 3, 1, 2).contiguous()


def apply(nhwc, name, constants, draws):
    """One corruption with explicit constants and draws: uint8 (N, H, W, 3) -> uint8 (N, H, W, 3)."""
    with transforms.one_cpu_thread(nhwc.device):
        out = values(nhwc, name, constants, draws)
        if out.dtype != torch.uint8:
            # The reference ends every corruption with np.uint8(float image in [0, 255]): truncation.
            out = out.clamp_(0, 255).floor_().to(torch.uint8)
        return out


def values(nhwc, name, constants, draws):
    """The corrupted images before the final truncation to uint8: float (N, H, W, 3) in [0, 255]
    (uint8 already for pixelate and JPEG, whose reference works in 8 bits throughout)."""
    if nhwc.shape[0] == 0:
        return nhwc.clone()
    return _FUNCTIONS[name](nhwc, constants, draws)


def _as_nhwc(images):
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (SIZE, SIZE, 3):
            raise ValueError(f"numpy images must be uint8 (N, {SIZE}, {SIZE}, 3), got {images.dtype} {images.shape}")
        return torch.from_numpy(np.ascontiguousarray(images))
    if (
        not torch.is_tensor(images)
        or images.dtype != torch.uint8
        or images.ndim != 4
        or tuple(images.shape[1:]) != (3, SIZE, SIZE)
    ):
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"images must be a uint8 tensor (N, 3, {SIZE}, {SIZE}), got {shape}")
    return images.permute(0, 2, 3, 1).contiguous()


def _unit(nhwc):
    return nhwc.to(torch.float32) / 255


def _nchw(x):
    return x.permute(0, 3, 1, 2)


def _nhwc(x):
    return x.permute(0, 2, 3, 1)


# ---------------------------------------------------------------- noise


def _gaussian_noise(x, c, draws):
    n, h, w, ch = x.shape
    return (_unit(x) + draws.normal(0.0, c, (h, w, ch))).clamp(0, 1) * 255


def _shot_noise(x, c, draws):
    return (draws.poisson(_unit(x) * c) / c).clamp(0, 1) * 255


def _impulse_noise(x, c, draws):
    # scikit-image's random_noise(mode='s&p'): a value flips with probability c,
    # to 1 or 0 with equal odds; two uniform draws over the image, in that order.
    n, h, w, ch = x.shape
    flipped = draws.random((h, w, ch)) <= c
    salted = draws.random((h, w, ch)) <= 0.5
    return torch.where(flipped, salted.to(torch.float32), _unit(x)) * 255


# ---------------------------------------------------------------- blur


def _fold(index, size, mode):
    """An out-of-range sample index mapped back into [0, size): 'nearest' (edge repeated),
    'reflect101' (OpenCV's BORDER_REFLECT_101, numpy's 'reflect') or 'symmetric' (scipy.ndimage's
    'reflect': d c b a | a b c d)."""
    if mode == "nearest":
        return min(max(index, 0), size - 1)
    period = 2 * size - 2 if mode == "reflect101" else 2 * size
    index %= period
    return index if index < size else period - index - (mode == "symmetric")


@functools.cache
def filter_matrix(taps, size, mode):
    """(size x size) matrix M: M @ signal = the signal correlated with `taps` (odd count, centred),
    borders by `mode` (see _fold). On 32-pixel images two such matmuls per channel (rows, then
    columns) beat a depthwise convolution many times over on a CPU, and bake in any border rule."""
    radius = len(taps) // 2
    matrix = np.zeros((size, size))
    for i in range(size):
        for k, tap in enumerate(taps):
            matrix[i, _fold(i + k - radius, size, mode)] += tap
    return matrix


# Images per matrix product on a CPU and on a GPU (see _in_blocks).
IMAGE_BLOCK = {"cpu": 128, "cuda": 1024}


def _in_blocks(x, function):
    """function(x) for images x (N, ...), computed IMAGE_BLOCK images at a time, the last block padded with
    zeros (and any block not 64-byte aligned copied into a fresh buffer).

    For matrix products: a BLAS library picks its kernel, and with it the order of its sums, by the
    product's shape (MKL also by the data's alignment). In blocks of one shape an image's values do not
    depend on how many images share the call; else the rounding before the reference's uint8 truncations
    would, and flip a level here and there."""
    n = x.shape[0]
    block = IMAGE_BLOCK.get(x.device.type, IMAGE_BLOCK["cuda"])
    parts = []
    for start in range(0, n, block):
        part = x[start : start + block]
        count = part.shape[0]
        if count < block or not part.is_contiguous() or part.data_ptr() % 64:
            padded = x.new_zeros(block, *x.shape[1:])
            padded[:count] = part
            part = padded
        parts.append(function(part)[:count])
    return torch.cat(parts) if parts else function(x)


def _separable(x, rows, cols):
    """x (N, ..., H, W) filtered by row matrix `rows` (H x H) and column matrix `cols` (W x W): rows @ x @ cols.T."""
    rows = torch.as_tensor(rows, dtype=x.dtype, device=x.device)
    cols = torch.as_tensor(cols, dtype=x.dtype, device=x.device)
    return _in_blocks(x, lambda part: rows @ part @ cols.T)


def _cv2_gaussian_blur_reflect101(array, ksize, sigma):
    """cv2.GaussianBlur(array, (ksize, ksize), sigma) in numpy: separable, BORDER_REFLECT_101."""
    taps = np.exp(-((np.arange(ksize) - (ksize - 1) / 2) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    pad = ksize // 2
    padded = np.pad(array.astype(np.float64), pad, mode="reflect")  # numpy's reflect is reflect-101
    rows = sum(taps[i] * padded[i : i + array.shape[0]] for i in range(ksize))
    return sum(taps[i] * rows[:, i : i + array.shape[1]] for i in range(ksize))


@functools.cache
def disk_kernel(radius, alias_blur):
    """The defocus kernel: an aliased disk on a 17x17 grid (wider for radius > 8), anti-aliased
    by a small Gaussian blur, cropped to its non-zero support (the zero border adds nothing)."""
    half, ksize = (8, 3) if radius <= 8 else (int(radius), 5)
    grid = np.arange(-half, half + 1)
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    disk /= disk.sum()
    kernel = _cv2_gaussian_blur_reflect101(disk, ksize, alias_blur).astype(np.float32)
    used = np.flatnonzero(kernel.any(axis=0))
    reach = max(half - used.min(), used.max() - half)
    return kernel[half - reach : half + reach + 1, half - reach : half + reach + 1]


@functools.cache
def _disk_factors(radius, alias_blur, size):
    """The disk kernel as a sum of separable terms (SVD, rank 2-3 here), as row/column filter matrices."""
    kernel = disk_kernel(radius, alias_blur).astype(np.float64)
    u, s, vt = np.linalg.svd(kernel)
    return tuple(
        (filter_matrix(tuple(u[:, r] * s[r]), size, "reflect101"), filter_matrix(tuple(vt[r]), size, "reflect101"))
        for r in range(len(s))
        if s[r] > 1e-12 * s[0]
    )


def _defocus_blur(x, c, draws):
    # cv2.filter2D with the disk kernel; its default border is BORDER_REFLECT_101.
    image = _nchw(_unit(x))
    out = sum(_separable(image, rows, cols) for rows, cols in _disk_factors(*c, x.shape[1]))
    return _nhwc(out).clamp(0, 1) * 255


def _gaussian_taps(sigma, truncate):
    """scipy.ndimage.gaussian_filter1d's kernel: radius int(truncate * sigma + 0.5)."""
    radius = int(truncate * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return tuple(taps / taps.sum())


def _gaussian(x, sigma, truncate, mode):
    """scipy.ndimage.gaussian_filter over the last two axes of x (..., H, W)."""
    taps = _gaussian_taps(sigma, truncate)
    if len(taps) == 1:
        return x  # radius 0: scipy's kernel is [1.0]
    return _separable(x, filter_matrix(taps, x.shape[-2], mode), filter_matrix(taps, x.shape[-1], mode))


def _gaussian_nearest(x_nchw, sigma):
    """skimage.filters.gaussian(sigma, channel_axis=-1) with its defaults: mode 'nearest', truncate 4."""
    return _gaussian(x_nchw, sigma, 4.0, "nearest")


def _glass_blur(x, c, draws):
    sigma, delta, iterations = c
    n, h, w, ch = x.shape
    blurred = _gaussian_nearest(_nchw(_unit(x)), sigma)
    pixels = _nhwc((blurred * 255).floor()).reshape(n, h * w, ch)  # the script's np.uint8(...)
    # The script visits (row, col) from (h - delta, w - delta) down to (delta + 1, delta + 1),
    # each time with a random offset in [-delta, delta) per axis, and does
    # `x[r, c], x[r2, c2] = x[r2, c2], x[r, c]`. On numpy pixel views that is a copy, not a
    # swap: the second assignment reads the already-overwritten first pixel. So each visit sets
    # pixel (r, c) to pixel (r + dy, c + dx) of the current image.
    rows = torch.arange(h - delta, delta, -1, device=x.device)
    cols = torch.arange(w - delta, delta, -1, device=x.device)
    steps = len(rows) * len(cols)
    offsets = draws.randint(-delta, delta, (iterations * steps, 2)).reshape(n, iterations, steps, 2)
    target = (rows[:, None] * w + cols[None, :]).reshape(-1)
    for it in range(iterations):
        source = target + offsets[:, it, :, 1] * w + offsets[:, it, :, 0]
        if delta == 1:
            # Offsets in {-1, 0} only read pixels up and to the left, which the descending visit
            # order has not overwritten yet: every copy of the iteration reads the image as it
            # was at its start, so they can all happen at once.
            pixels[:, target] = torch.gather(pixels, 1, source[..., None].expand(-1, -1, ch))
        else:
            batch = torch.arange(n, device=x.device)
            # plain ints index a view; a 0-d tensor would be an advanced index, a kernel more per step
            for step, pixel in enumerate(target.tolist()):
                pixels[:, pixel] = pixels[batch, source[:, step]]
    shuffled = _nchw(pixels.reshape(n, h, w, ch) / 255)
    return _nhwc(_gaussian_nearest(shuffled, sigma)).clamp(0, 1) * 255


def motion_blur_taps(radius, sigma):
    """ImageMagick's motion-blur kernel (as ported by imagecorruptions): 2 * radius + 1 taps of a
    one-sided Gaussian, normalised."""
    width = 2 * int(radius) + 1
    taps = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2)) / (math.sqrt(2 * math.pi) * sigma)
    return taps / taps.sum()


def _motion_blur_values(x, radius, sigma, angles):
    """imagecorruptions' _motion_blur for a batch: x (N, H, W, C) float, angles (N,) in degrees.

    Tap i samples the image shifted by ceil(i * (cos, sin)(angle) - 0.5) pixels, edges
    replicated; like the reference, taps stop at the first one shifted past the image.
    """
    n, h, w, ch = x.shape
    taps = torch.from_numpy(motion_blur_taps(radius, sigma)).to(x.device)
    width = taps.numel()
    radians = torch.deg2rad(angles.to(torch.float64))
    point_y, point_x = width * torch.sin(radians), width * torch.cos(radians)
    hypot = torch.hypot(point_y, point_x)
    i = torch.arange(width, device=x.device, dtype=torch.float64)
    shift_y = torch.ceil(i * (point_y / hypot)[:, None] - 0.5).long()  # (N, width)
    shift_x = torch.ceil(i * (point_x / hypot)[:, None] - 0.5).long()
    past_edge = (shift_y.abs() >= h) | (shift_x.abs() >= w)
    weights = torch.where(past_edge.int().cummax(dim=1).values.bool(), 0.0, taps).to(x.dtype)
    flat = _nchw(x).reshape(n, ch, h * w)
    row = torch.arange(h, device=x.device)
    col = torch.arange(w, device=x.device)
    out = torch.zeros_like(flat)
    for tap in range(width):
        rows = (row[None, :] + shift_y[:, tap, None]).clamp(0, h - 1)
        cols = (col[None, :] + shift_x[:, tap, None]).clamp(0, w - 1)
        index = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w).expand(-1, ch, -1)
        out += weights[:, tap, None, None] * torch.gather(flat, 2, index)
    return _nhwc(out.reshape(n, ch, h, w))


def _motion_blur(x, c, draws):
    radius, sigma = c
    angles = draws.uniform(-45, 45)
    return _motion_blur_values(x.to(torch.float32), radius, sigma, angles)


@functools.cache
def zoom_matrix(size, factor, centred=True):
    """(size x size) matrix Z with Z @ image @ Z.T = the script's clipped_zoom of one channel.

    clipped_zoom crops the central ceil(size / factor) pixels, zooms them with
    scipy.ndimage.zoom(order=1) to round(crop * factor) pixels (sample k reads
    input coordinate k * (crop - 1) / (out - 1)), then keeps the central `size`
    (centred=False keeps the first `size`, as imagecorruptions does).
    """
    crop = int(np.ceil(size / factor))
    top = (size - crop) // 2
    out = int(round(crop * factor))
    trim = (out - size) // 2 if centred else 0
    ratio = (crop - 1) / (out - 1) if out > 1 else 1.0
    matrix = np.zeros((size, size))
    for i in range(size):
        position = (i + trim) * ratio
        left = int(np.floor(position))
        weight = position - left
        matrix[i, top + left] += 1 - weight
        if weight > 0:
            matrix[i, top + left + 1] += weight
    return matrix


@functools.cache
def _zoom_blur_operator(size, factors, centred=True):
    """The whole zoom blur as one linear map of flattened images: (x + sum of zooms) / (count + 1)."""
    total = np.eye(size * size)
    for factor in factors:
        zoom = zoom_matrix(size, factor, centred)
        total += np.kron(zoom, zoom)
    return torch.from_numpy((total / (len(factors) + 1)).astype(np.float32))


def _zoom_blur(x, c, draws, centred=True):
    n, h, w, ch = x.shape
    operator = _zoom_blur_operator(h, tuple(c), centred).to(x.device)
    flat = _nchw(_unit(x)).reshape(n, ch, h * w)
    return _nhwc(_in_blocks(flat, lambda part: part @ operator.T).reshape(n, ch, h, w)).clamp(0, 1) * 255


# ---------------------------------------------------------------- weather


def _snow(x, c, draws):
    loc, scale, factor, threshold, radius, sigma, weight = c
    n, h, w, ch = x.shape
    layer = draws.normal(loc, scale, (h, w)).to(torch.float32)
    zoom = zoom_matrix(h, factor)
    layer = _separable(layer, zoom, zoom)
    layer = torch.where(layer < threshold, 0.0, layer)
    layer = (layer.clamp(0, 1) * 255).floor()  # the script's .astype(np.uint8) before the blur
    layer = _motion_blur_values(layer[..., None], radius, sigma, draws.uniform(-135, -45))
    layer = torch.round(layer) / 255  # the blur's 8-bit output
    image = _unit(x)
    grey = 0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]  # cv2 RGB2GRAY
    image = weight * image + (1 - weight) * torch.maximum(image, grey[..., None] * 1.5 + 0.5)
    return (image + layer + layer.flip(1, 2)).clamp(0, 1) * 255


@functools.cache
def frost_textures():
    """The five frost pictures the CIFAR script draws from, already resized by 0.2, RGB uint8."""
    with np.load(FROST_TEXTURES) as archive:
        return tuple(archive[f"frost{i}"] for i in range(1, 6))


@functools.lru_cache(maxsize=4)
def _frost_stack(device):
    textures = frost_textures()
    height = max(t.shape[0] for t in textures)
    width = max(t.shape[1] for t in textures)
    stack = np.zeros((len(textures), height, width, 3), np.uint8)
    for i, texture in enumerate(textures):
        stack[i, : texture.shape[0], : texture.shape[1]] = texture
    sizes = torch.tensor([t.shape[:2] for t in textures], device=device)
    return torch.from_numpy(stack).to(device), sizes


def _frost(x, c, draws):
    image_weight, frost_weight = c
    n, h, w, ch = x.shape
    stack, sizes = _frost_stack(x.device)
    which = draws.randint(0, 5)  # the script's randint(5): frost6 is never used
    top = draws.randint(0, sizes[which, 0] - h)
    left = draws.randint(0, sizes[which, 1] - w)
    rows = top[:, None, None] + torch.arange(h, device=x.device)[None, :, None]
    cols = left[:, None, None] + torch.arange(w, device=x.device)[None, None, :]
    crop = stack[which[:, None, None], rows, cols].to(torch.float32)
    return (image_weight * x.to(torch.float32) + frost_weight * crop).clamp(0, 255)


def plasma_fractal(draws, mapsize, decay):
    """Diamond-square height maps (N, mapsize, mapsize) in [0, 1], as the script's plasma_fractal."""
    maps = torch.zeros((draws.n, mapsize, mapsize), device=draws.device)
    step, wibble = mapsize, 100.0

    def wibbled_mean(total):
        return total / 4 + wibble * draws.uniform(-wibble, wibble, tuple(total.shape[1:])).to(total)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, dims=1)
        squares = squares + squares.roll(-1, dims=2)
        maps[:, half::step, half::step] = wibbled_mean(squares)
        centres = maps[:, half::step, half::step]
        corners = maps[:, 0::step, 0::step]
        left_top = centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2)
        maps[:, 0::step, half::step] = wibbled_mean(left_top)
        top_left = centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1)
        maps[:, half::step, 0::step] = wibbled_mean(top_left)
        step //= 2
        wibble /= decay
    maps = maps - maps.amin(dim=(1, 2), keepdim=True)
    return maps / maps.amax(dim=(1, 2), keepdim=True)


def _fog(x, c, draws):
    strength, decay = c
    n, h, w, ch = x.shape
    image = _unit(x)
    peak = image.amax(dim=(1, 2, 3), keepdim=True)
    fog = plasma_fractal(draws, 32, decay)[:, :h, :w, None]
    return ((image + strength * fog) * peak / (peak + strength)).clamp(0, 1) * 255


def _brightness(x, c, draws):
    # HSV value + c: with hue and saturation fixed every channel scales by new/old value
    # (skimage's rgb2hsv -> hsv2rgb round trip, in closed form); black becomes grey c.
    image = _unit(x)
    value = image.amax(dim=3, keepdim=True)
    brighter = (value + c).clamp(max=1)
    scaled = image * (brighter / value.clamp(min=1e-12))
    return torch.where(value > 0, scaled, brighter).clamp(0, 1) * 255


# ---------------------------------------------------------------- digital


def _contrast(x, c, draws):
    image = _unit(x)
    means = image.mean(dim=(1, 2), keepdim=True)
    return ((image - means) * c + means).clamp(0, 1) * 255


def _sample(image_nchw, rows, cols, align_corners):
    """Bilinear samples of image (N, C, H, W) at pixel coordinates rows, cols (N, H, W).

    grid_sample's 'reflection' padding with align_corners=True mirrors about the
    edge pixels' centres (OpenCV's BORDER_REFLECT_101); with align_corners=False
    about their outer edges (scipy.ndimage's 'reflect', the edge sample repeated).
    """
    h, w = image_nchw.shape[-2:]
    if align_corners:
        grid = torch.stack([cols * (2 / (w - 1)) - 1, rows * (2 / (h - 1)) - 1], dim=-1)
    else:
        grid = torch.stack([(2 * cols + 1) / w - 1, (2 * rows + 1) / h - 1], dim=-1)
    return F.grid_sample(
        image_nchw, grid.to(image_nchw.dtype), mode="bilinear", padding_mode="reflection", align_corners=align_corners
    )


def _elastic_transform(x, c, draws):
    alpha, sigma, jitter = c
    n, h, w, ch = x.shape
    # A random affine map that moves three fixed points by up to `jitter` pixels
    # (cv2.getAffineTransform + cv2.warpAffine, bilinear, BORDER_REFLECT_101) ...
    centre, side = SIZE // 2, SIZE // 3
    source = torch.tensor(
        [[centre + side] * 2, [centre + side, centre - side], [centre - side] * 2], dtype=torch.float32, device=x.device
    )
    target = source + draws.uniform(-jitter, jitter, (3, 2)).to(torch.float32)
    points = torch.cat([source, torch.ones(3, 1, device=x.device)], dim=1).to(torch.float64)
    forward = torch.linalg.solve(points, target.to(torch.float64)).transpose(1, 2)  # (N, 2, 3): x', y'
    inverse = torch.linalg.inv(forward[:, :, :2])
    row, col = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    grid = torch.stack([col, row]).reshape(2, -1).to(torch.float64)  # (x, y) of every output pixel
    offset = grid[None] - forward[:, :, 2:]  # (N, 2, H*W)
    # where each output pixel comes from: inverse @ offset, written out (a batched product's rounding
    # could depend on the batch)
    src = inverse[:, :, 0:1] * offset[:, None, 0] + inverse[:, :, 1:2] * offset[:, None, 1]
    image = _sample(_nchw(_unit(x)), src[:, 1].reshape(n, h, w), src[:, 0].reshape(n, h, w), True)
    # ... then a smooth random displacement field (scipy map_coordinates, bilinear, mode 'reflect').
    noise_x, noise_y = draws.uniform(-1, 1, (h, w)), draws.uniform(-1, 1, (h, w))
    if alpha == 0:
        return _nhwc(image).clamp(0, 1) * 255  # severity 1: no displacement (and sigma 0)
    dx = _gaussian(noise_x.to(torch.float64), sigma, 3.0, "symmetric") * alpha
    dy = _gaussian(noise_y.to(torch.float64), sigma, 3.0, "symmetric") * alpha
    image = _sample(image, row[None] + dy.float(), col[None] + dx.float(), False)
    return _nhwc(image).clamp(0, 1) * 255


def _with_pillow(x, transform):
    """Apply `transform` (PIL image -> PIL image) to each image of x (N, H, W, 3) on the CPU.

    For the two corruptions whose reference is Pillow's own 8-bit code, Pillow is
    the exact implementation and, on 32x32 images, also the fast one: pixelate
    ran 20,000-30,000 images/s on the build machine's CPU, five to eight times
    an exact float64 matrix version; libjpeg has no batched form. On a GPU the
    images make a round trip to the host (30 MB for the test set).
    """
    images = x.cpu().numpy()
    out = np.empty_like(images)
    for i, image in enumerate(images):
        out[i] = np.asarray(transform(Image.fromarray(image)).convert("RGB"))
    return torch.from_numpy(out).to(x.device)


def _pixelate(x, c, draws):
    n, h, w, ch = x.shape
    small = (int(w * c), int(h * c))
    return _with_pillow(x, lambda image: image.resize(small, Image.BOX).resize((w, h), Image.BOX))


def _jpeg(image, quality):
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(buffer)


def _jpeg_compression(x, c, draws):
    return _with_pillow(x, lambda image: _jpeg(image, c))


_FUNCTIONS = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}
