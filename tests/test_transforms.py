"""Batched on-device augmentation: per-image randomness, exact crops, shared preprocessing."""

import numpy as np
import pytest
import torch

from cifarbench.data import transforms
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
        matches = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if torch.equal(padded[i, :, dy : dy + 32, dx : dx + 32], out[i])
        ]
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
    ratios = out.mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3))
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


def test_crop_and_flip_together_are_a_mirrored_or_plain_window_per_image():
    x = _batch()
    aug = Augment(crop_padding=4, flip=True, jitter=0.0)
    out = transforms.augment(x, aug, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4)).float() / 255
    flipped = 0
    for i in range(len(x)):
        windows = [padded[i, :, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        plain = any(torch.equal(w, out[i]) for w in windows)
        mirrored = any(torch.equal(w.flip(2), out[i]) for w in windows)
        assert plain or mirrored, f"image {i} is neither a crop nor a mirrored crop"
        flipped += mirrored and not plain
    assert 10 < flipped < 54


def test_training_batch_is_select_augment_preprocess():
    x, index = _batch(), torch.tensor([5, 0, 63, 7])
    aug = Augment(crop_padding=4, flip=True, jitter=0.2)
    prep = transforms.Preprocess(32, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), channels_last=True)
    got = transforms.training_batch(x, index, aug, prep, torch.Generator().manual_seed(2))
    want = prep(transforms.augment(x[index], aug, torch.Generator().manual_seed(2)))
    assert torch.equal(got, want) and got.is_contiguous(memory_format=torch.channels_last)


def test_upsampling_normalises_first_with_the_same_result():
    # normalise-then-upsample (49x fewer pixels to normalise at 224 px) equals upsample-then-normalise
    x = _batch(8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for channels_last in (True, False):
        out = transforms.Preprocess(96, mean, std, channels_last=channels_last)(x)
        up = torch.nn.functional.interpolate(x.float() / 255, size=(96, 96), mode="bilinear", align_corners=False)
        want = (up - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        torch.testing.assert_close(out, want, rtol=0, atol=1e-5)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert out.is_contiguous(memory_format=layout)


def test_one_cpu_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(RuntimeError):
            with transforms.one_cpu_thread("cpu"):
                assert torch.get_num_threads() == 1
                raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_training_batches_on_cpu_are_training_batch_per_step():
    x, order = _batch(), torch.randperm(64, generator=torch.Generator().manual_seed(0))
    aug = Augment(crop_padding=4, flip=True, jitter=0.2)
    prep = transforms.Preprocess(48, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), channels_last=True)
    got = list(transforms.training_batches(x, order, 16, 3, aug, prep, torch.Generator().manual_seed(3)))
    gen = torch.Generator().manual_seed(3)
    assert len(got) == 3
    for step, (index, batch) in enumerate(got):
        assert torch.equal(index, order[step * 16 : (step + 1) * 16])
        assert torch.equal(batch, transforms.training_batch(x, index, aug, prep, gen))


def test_chunked_training_batches_match_their_images(monkeypatch):
    # the GPU path (many batches per chunk), run on CPU: every step's input is its own images' crops
    monkeypatch.setattr(transforms, "batches_per_chunk", lambda device, batch_size: 2)
    x, order = _batch(), torch.arange(63, -1, -1)
    aug = Augment(crop_padding=0, flip=False, jitter=0.0)  # no randomness: the input is exactly preprocess(x)
    prep = transforms.Preprocess(40, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), channels_last=True)
    got = list(transforms.training_batches(x, order, 8, 5, aug, prep, torch.Generator().manual_seed(0)))
    assert [len(i) for i, _ in got] == [8] * 5
    for index, batch in got:
        assert batch.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(batch, prep(x[index]), rtol=0, atol=1e-6)


def test_native_then_resized_is_the_whole_preprocess_for_any_split():
    x = _batch(12)
    for size in (24, 32, 64):  # shrink, same size, upsample
        prep = transforms.Preprocess(size, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), channels_last=True)
        native = prep.native(x)
        split = torch.cat([prep.resized(native[:5]), prep.resized(native[5:])])
        assert torch.equal(split, prep(x))
