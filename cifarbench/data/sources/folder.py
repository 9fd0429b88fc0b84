"""Read images from an ImageFolder tree: <root>/<dataset>/{train,test}/<class>/*.png|jpg|jpeg.

Lets users bring CIFAR in another packaging (e.g. PNG exports) or their own
32x32 data. Images of any mode and size become RGB 32x32; class indices follow
the sorted folder names, as torchvision's ImageFolder does.
"""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cifarbench.data.dataset import Dataset, Split
from cifarbench.data.sources.cifar_names import CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES, CIFAR100_FINE_TO_COARSE
from cifarbench.errors import BenchError

IMAGE_SIZE = (32, 32)
EXTENSIONS = {".png", ".jpg", ".jpeg"}


def read_folder(root, dataset):
    base = Path(root) / dataset
    layout = f"the folder source expects {base}/{{train,test}}/<class>/*.png|jpg|jpeg"
    train_files = _list_images(base / "train", layout)
    test_files = _list_images(base / "test", layout)
    classes = sorted(train_files)
    if sorted(test_files) != classes:
        only_train = sorted(set(classes) - set(test_files))
        only_test = sorted(set(test_files) - set(classes))
        raise BenchError(
            f"{base}: train and test must have the same class folders (only in train: {only_train}, "
            f"only in test: {only_test}); {layout}"
        )
    coarse_of = _official_coarse(dataset, classes)
    train = _load_split(train_files, classes, coarse_of)
    test = _load_split(test_files, classes, coarse_of)
    coarse_classes = list(CIFAR100_COARSE_CLASSES) if coarse_of is not None else None
    return Dataset(dataset, f"image folder ({base})", classes, train, test, coarse_classes)


def _visible(path):
    return not path.name.startswith(".")  # skip .ipynb_checkpoints, .DS_Store and the like


def _list_images(split_dir, layout):
    """{class name: sorted image paths} for one split; every class folder must hold images."""
    if not split_dir.is_dir():
        raise BenchError(f"{split_dir} is missing: {layout}")
    class_dirs = sorted(d for d in split_dir.iterdir() if d.is_dir() and _visible(d))
    if not class_dirs:
        raise BenchError(f"{split_dir} has no class folders: {layout}")
    files = {}
    for class_dir in class_dirs:
        images = sorted(
            f for f in class_dir.iterdir() if f.suffix.lower() in EXTENSIONS and f.is_file() and _visible(f)
        )
        if not images:
            raise BenchError(f"{class_dir} holds no .png/.jpg/.jpeg images: {layout}")
        files[class_dir.name] = images
    return files


def _official_coarse(dataset, classes):
    """CIFAR-100 superclass of each class index, when the folders carry exactly the official names."""
    if dataset == "cifar100" and tuple(classes) == CIFAR100_FINE_CLASSES:
        return np.asarray(CIFAR100_FINE_TO_COARSE, dtype=np.int64)
    return None


def _load_split(files, classes, coarse_of):
    paths = [path for name in classes for path in files[name]]
    labels = np.repeat(np.arange(len(classes)), [len(files[name]) for name in classes])
    # One thread on purpose: a 32x32 decode is mostly PIL's Python-level header
    # parsing under the GIL, and worker threads measured slower, not faster.
    images = np.stack([_load_image(path) for path in paths])
    return Split(images, labels, coarse_of[labels] if coarse_of is not None else None)


def _load_image(path):
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")  # drops alpha, replicates grey, expands palettes
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise BenchError(f"cannot read image {path} ({exc}); remove or replace the file") from exc
    if image.size != IMAGE_SIZE:
        image = image.resize(IMAGE_SIZE, Image.Resampling.BILINEAR)
    return np.asarray(image)
