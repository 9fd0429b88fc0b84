"""The offline stand-in: scikit-learn's bundled handwritten digits dressed as CIFAR.

`make demo` and the tests run the whole pipeline on it where the CIFAR
archives cannot be downloaded. It is NOT CIFAR and its numbers mean nothing
about CIFAR; it only has the same shapes (32x32 RGB uint8, 10 or 100 classes,
20 superclasses) so every stage and figure runs for real.

Train and test images come from disjoint scans (a fixed split, independent of
the params seed), so test accuracy is honest.
"""

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from cifarbench.data.dataset import Dataset, Split

SCAN_MAX = 16  # load_digits pixel values run 0..16
SPLIT_SEED = 0  # fixed: the same scans are test scans in every run and experiment
PAIR_SEED = 0  # fixed: the same two-digit images in every run
PAIRS_PER_CLASS = {"train": 50, "test": 10}
DIGIT_HEIGHT, DIGIT_WIDTH = 24, 16  # each digit of a pair fills half of the 32-wide image
SOURCE = "digits stand-in (scikit-learn handwritten digits, NOT CIFAR)"


def make_digits(dataset):
    scans, digits = _load_scans()
    train_idx, test_idx = train_test_split(
        np.arange(len(scans)), test_size=0.25, random_state=SPLIT_SEED, stratify=digits
    )
    if dataset == "cifar10":
        return _single_digits(scans, digits, train_idx, test_idx)
    return _digit_pairs(scans, digits, train_idx, test_idx)


def _load_scans():
    """The 1797 scans as uint8 grey 0..255, (N, 8, 8), and their digits."""
    bunch = load_digits()  # bundled with scikit-learn: no network
    scans = np.round(bunch.images * (255 / SCAN_MAX)).astype(np.uint8)
    return scans, bunch.target.astype(np.int64)


def _resize(scans, height, width):
    return np.stack(
        [np.asarray(Image.fromarray(scan).resize((width, height), Image.Resampling.BILINEAR)) for scan in scans]
    )


def _grey_to_rgb(grey):
    return np.repeat(grey[..., None], 3, axis=-1)


def _single_digits(scans, digits, train_idx, test_idx):
    images = _grey_to_rgb(_resize(scans, 32, 32))
    train = Split(images[train_idx], digits[train_idx])
    test = Split(images[test_idx], digits[test_idx])
    return Dataset("cifar10", SOURCE, [str(d) for d in range(10)], train, test, stand_in=True)


def _digit_pairs(scans, digits, train_idx, test_idx):
    """Class 'NM' shows digit N on the left and digit M on the right; superclasses group five numbers."""
    halves = _resize(scans, DIGIT_HEIGHT, DIGIT_WIDTH)
    rng = np.random.default_rng(PAIR_SEED)
    train = _pair_split(halves, digits, train_idx, PAIRS_PER_CLASS["train"], rng)
    test = _pair_split(halves, digits, test_idx, PAIRS_PER_CLASS["test"], rng)
    classes = [f"{n:02d}" for n in range(100)]
    coarse_classes = [f"{n:02d}-{n + 4:02d}" for n in range(0, 100, 5)]
    return Dataset("cifar100", SOURCE, classes, train, test, coarse_classes, stand_in=True)


def _pair_split(halves, digits, pool_idx, per_class, rng):
    """per_class images of each number 00..99, both digits drawn only from the scans in pool_idx."""
    pool_of_digit = [pool_idx[digits[pool_idx] == d] for d in range(10)]
    labels = np.repeat(np.arange(100), per_class)
    left = np.array([rng.choice(pool_of_digit[label // 10]) for label in labels])
    right = np.array([rng.choice(pool_of_digit[label % 10]) for label in labels])
    top = (32 - DIGIT_HEIGHT) // 2
    grey = np.zeros((len(labels), 32, 32), dtype=np.uint8)
    grey[:, top : top + DIGIT_HEIGHT, :DIGIT_WIDTH] = halves[left]
    grey[:, top : top + DIGIT_HEIGHT, DIGIT_WIDTH:] = halves[right]
    return Split(_grey_to_rgb(grey), labels, labels // 5)
