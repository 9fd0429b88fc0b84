"""The image-folder and digits sources, and the official class-name tables."""

import numpy as np
import pytest
from PIL import Image

from cifarbench.data.sources import select
from cifarbench.data.sources.cifar_names import (
    CIFAR10_CLASSES,
    CIFAR100_COARSE_CLASSES,
    CIFAR100_FINE_CLASSES,
    CIFAR100_FINE_TO_COARSE,
)
from cifarbench.data.sources.digits import make_digits
from cifarbench.data.sources.folder import read_folder
from cifarbench.errors import BenchError

# The superclass table as printed on https://www.cs.toronto.edu/~kriz/cifar.html
# (plural/spaced names there, the archive's names here): an independent spelling
# of CIFAR100_FINE_TO_COARSE to check it against.
WEBSITE_SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}


def test_cifar100_tables_match_the_website_superclass_listing():
    assert len(CIFAR100_FINE_CLASSES) == len(set(CIFAR100_FINE_CLASSES)) == 100
    assert list(CIFAR100_FINE_CLASSES) == sorted(CIFAR100_FINE_CLASSES)  # the archive lists them sorted
    assert list(CIFAR100_COARSE_CLASSES) == list(WEBSITE_SUPERCLASSES)
    for fine, coarse in zip(CIFAR100_FINE_CLASSES, CIFAR100_FINE_TO_COARSE, strict=True):
        assert fine in WEBSITE_SUPERCLASSES[CIFAR100_COARSE_CLASSES[coarse]], fine
    assert len(CIFAR10_CLASSES) == 10 and CIFAR10_CLASSES[0] == "airplane" and CIFAR10_CLASSES[9] == "truck"


# ---- folder source -------------------------------------------------------------------------------


def save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def solid(shape, value):
    return np.full(shape, value, dtype=np.uint8)


def make_tree(root, dataset, classes, per_class=2, split_classes=None):
    """Plain 32x32 RGB PNGs whose pixel value encodes (class, index); returns {split: {class: arrays}}."""
    written = {}
    for split in ("train", "test"):
        written[split] = {}
        for c, name in enumerate((split_classes or {}).get(split, classes)):
            written[split][name] = []
            for i in range(per_class):
                array = solid((32, 32, 3), (10 * c + i) % 256)
                array[0, 0] = [1, 2, 3]
                save(root / dataset / split / name / f"{i}.png", array)
                written[split][name].append(array)
    return written


def test_folder_reads_classes_labels_and_exact_pixels(tmp_path):
    written = make_tree(tmp_path, "cifar10", ["cat", "airplane", "dog"])
    (tmp_path / "cifar10" / "train" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "cifar10" / "train" / ".ipynb_checkpoints").mkdir()
    ds = read_folder(tmp_path, "cifar10")
    assert ds.classes == ["airplane", "cat", "dog"]  # sorted folder names
    assert ds.coarse_classes is None and ds.train.coarse is None
    assert ds.train.images.shape == (6, 32, 32, 3) and ds.test.images.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(ds.train.labels, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(ds.train.images[2], written["train"]["cat"][0])
    assert "image folder" in ds.source


def test_folder_converts_modes_and_sizes(tmp_path):
    make_tree(tmp_path, "cifar10", ["a", "b"], per_class=1)
    extra = tmp_path / "cifar10" / "train" / "b"
    rgba = solid((32, 32, 4), 200)
    rgba[..., 3] = 0  # fully transparent: alpha is dropped, colour kept
    save(extra / "rgba.png", rgba, "RGBA")
    save(extra / "grey.PNG", solid((32, 32), 77), "L")
    save(extra / "big.jpg", solid((48, 40, 3), 120))
    save(extra / "small.JPEG", solid((8, 8, 3), 50))
    ds = read_folder(tmp_path, "cifar10")
    b_images = ds.train.images[ds.train.labels == 1]
    assert b_images.shape == (5, 32, 32, 3)
    by_name = dict(zip(["0.png", "big.jpg", "grey.PNG", "rgba.png", "small.JPEG"], b_images, strict=True))
    assert (by_name["rgba.png"] == 200).all()
    assert (by_name["grey.PNG"] == 77).all()
    assert abs(int(by_name["big.jpg"].mean()) - 120) <= 2  # JPEG is lossy
    assert abs(int(by_name["small.JPEG"].mean()) - 50) <= 2


def test_folder_fills_coarse_labels_for_the_official_cifar100_names(tmp_path):
    make_tree(tmp_path, "cifar100", list(CIFAR100_FINE_CLASSES), per_class=1)
    ds = read_folder(tmp_path, "cifar100")
    assert ds.classes == list(CIFAR100_FINE_CLASSES)
    assert ds.coarse_classes == list(CIFAR100_COARSE_CLASSES)
    np.testing.assert_array_equal(ds.test.coarse, CIFAR100_FINE_TO_COARSE)


def test_folder_other_cifar100_names_have_no_coarse_labels(tmp_path):
    make_tree(tmp_path, "cifar100", ["x", "y"], per_class=1)
    ds = read_folder(tmp_path, "cifar100")
    assert ds.coarse_classes is None and ds.train.coarse is None


def test_folder_missing_dataset_folder_names_layout(tmp_path):
    with pytest.raises(BenchError, match=r"cifar10/train is missing: .*<class>/\*\.png"):
        select.load("cifar10", "folder", tmp_path)


def test_folder_test_split_needs_the_same_classes(tmp_path):
    make_tree(tmp_path, "cifar10", ["a", "b"], per_class=1, split_classes={"test": ["a", "c"]})
    with pytest.raises(BenchError, match=r"only in train: \['b'\], only in test: \['c'\]"):
        read_folder(tmp_path, "cifar10")


def test_folder_class_folder_without_images(tmp_path):
    make_tree(tmp_path, "cifar10", ["a"], per_class=1)
    (tmp_path / "cifar10" / "test" / "a" / "0.png").unlink()
    with pytest.raises(BenchError, match=r"test/a holds no \.png/\.jpg/\.jpeg images"):
        read_folder(tmp_path, "cifar10")


def test_folder_split_without_class_folders(tmp_path):
    make_tree(tmp_path, "cifar10", ["a"], per_class=1)
    (tmp_path / "cifar10" / "test" / "a" / "0.png").unlink()
    (tmp_path / "cifar10" / "test" / "a").rmdir()
    with pytest.raises(BenchError, match="test has no class folders"):
        read_folder(tmp_path, "cifar10")


def test_folder_unreadable_image_is_named(tmp_path):
    make_tree(tmp_path, "cifar10", ["a"], per_class=1)
    broken = tmp_path / "cifar10" / "train" / "a" / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(BenchError, match="cannot read image .*broken.jpg"):
        read_folder(tmp_path, "cifar10")


# ---- digits stand-in -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits10():
    return make_digits("cifar10")


@pytest.fixture(scope="module")
def digits100():
    return make_digits("cifar100")


def rows_of(images):
    return {image.tobytes() for image in images}


def test_digits_cifar10_slot(digits10):
    ds = digits10
    assert ds.name == "cifar10" and ds.classes == [str(d) for d in range(10)]
    assert "digits stand-in" in ds.source and "NOT CIFAR" in ds.source
    assert len(ds.train) + len(ds.test) == 1797 and len(ds.test) == 450
    assert ds.train.images.shape[1:] == (32, 32, 3) and ds.train.images.dtype == np.uint8
    assert ds.train.images.max() == 255  # 0..16 scaled to 0..255
    assert (ds.train.images[..., 0] == ds.train.images[..., 2]).all()  # grey in all three channels
    test_share = np.bincount(ds.test.labels) / (np.bincount(ds.test.labels) + np.bincount(ds.train.labels))
    assert np.allclose(test_share, 0.25, atol=0.01)  # stratified
    assert ds.stand_in
    assert ds.coarse_classes is None and ds.train.coarse is None


def test_digits_train_and_test_images_are_disjoint(digits10, digits100):
    for ds in (digits10, digits100):
        assert not rows_of(ds.train.images) & rows_of(ds.test.images)


def test_digits_are_the_same_in_every_call(digits10):
    again = make_digits("cifar10")
    np.testing.assert_array_equal(again.test.images, digits10.test.images)


def test_digits_cifar100_slot(digits100):
    ds = digits100
    assert ds.classes == [f"{n:02d}" for n in range(100)]
    assert ds.stand_in and "NOT CIFAR" in ds.source
    assert ds.coarse_classes[:2] == ["00-04", "05-09"] and ds.coarse_classes[-1] == "95-99"
    assert len(ds.coarse_classes) == 20
    assert (np.bincount(ds.train.labels) == 50).all() and (np.bincount(ds.test.labels) == 10).all()
    for split in (ds.train, ds.test):
        np.testing.assert_array_equal(split.coarse, split.labels // 5)
        assert split.images.shape[1:] == (32, 32, 3)
        assert not split.images[:, :4].any() and not split.images[:, 28:].any()  # padding rows


def test_digits_cifar100_left_half_is_the_tens_digit(digits100):
    """Numbers with the same tens digit share their pool of left halves; different tens digits never do."""
    ds = digits100
    left = ds.train.images[:, 4:28, :16]
    halves_of_tens = [rows_of(left[ds.train.labels // 10 == t]) for t in range(10)]
    for t in range(10):
        for other in range(t + 1, 10):
            assert not halves_of_tens[t] & halves_of_tens[other]
    right_of_units_1 = rows_of(ds.train.images[ds.train.labels % 10 == 1][:, 4:28, 16:])
    assert halves_of_tens[1] & right_of_units_1  # digit-1 scans appear on both sides
