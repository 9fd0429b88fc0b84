"""Batched on-device augmentation: per-image randomness, exact crops, shared preprocessing."""

import numpy as np
import torch

from cifarbench import transforms
from cifarbench.params import Augment


def _batch(n=64):
    # every pixel unique per image so crops and flips are identifiable
    base = torch.arange(32 * 32, dtype=torch.int64).view(1, 1, 32, 32) % 251
    return (base + torch.arange(n).view(n, 1, 1, 1) * 3).repeat(1, 3, 1, 1).to(torch.uint8)


def test_to_tensor_is_nchw_uint8():
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    images[1, 5, 7] = (10, 20, 30)
    x = transforms.to_tensor(images, "cpu")
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.uint8
    assert x[1, :, 5, 7].tolist() == [10, 20, 30]


def test_random_crop_is_an_exact_shifted_window_per_image():
    x = _batch()
    g = torch.Generator().manual_seed(0)
    out = transforms.random_crop(x, 4, g)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    offsets = set()
    for i in range(len(x)):
        matches = [(dy, dx) for dy in range(9) for dx in range(9)
                   if torch.equal(padded[i, :, dy:dy + 32, dx:dx + 32], out[i])]
        assert matches, f"image {i} is not a crop of its padded self"
        offsets.add(matches[0])
    assert len(offsets) > 10  # per-image draws, not one offset for the batch


def test_flip_is_per_image():
    x = _batch()
    out = transforms.random_flip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_jitter_stays_in_range_and_varies_per_image():
    x = torch.rand(64, 3, 8, 8)
    out = transforms.random_jitter(x, 0.4, torch.Generator().manual_seed(0))
    assert out.min() >= 0 and out.max() <= 1
    ratios = (out.mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3)))
    assert ratios.std() > 0.05
    assert torch.equal(transforms.random_jitter(x, 0.0, None), x)


def test_augment_is_reproducible_with_the_same_seed():
    x = _batch()
    aug = Augment(crop_padding=4, flip=True, jitter=0.2)
    a = transforms.augment(x, aug, torch.Generator().manual_seed(3))
    b = transforms.augment(x, aug, torch.Generator().manual_seed(3))
    c = transforms.augment(x, aug, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_preprocess_resizes_and_normalises():
    x = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    prep = transforms.Preprocess(64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), channels_last=True)
    out = prep(x)
    assert out.shape == (2, 3, 64, 64)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, torch.full_like(out, 2.0))  # (1 - 0.5) / 0.25
    same = transforms.Preprocess(32, (0.0,) * 3, (1.0,) * 3)(x)
    torch.testing.assert_close(same, torch.ones(2, 3, 32, 32))
