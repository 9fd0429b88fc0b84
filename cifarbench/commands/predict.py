"""Classify image files with a pipeline checkpoint, exactly as evaluate classifies the test split.

Any image file becomes what the pipeline's data are, a uint8 RGB image at the
dataset's native size (32×32 for CIFAR and the stand-in, stored in the
checkpoint), and then takes evaluate's own path: `transforms.to_tensor` →
`inference.infer` with the checkpoint's `Preprocess` (resize to the model's
img_size, the model's mean/std). Conversion, in order:

- the EXIF orientation is applied; an animated file gives its first frame;
- transparency (RGBA, LA, a palette or a colour key with transparency) is
  composited onto white, as a page shows it; plain dropping of alpha would
  expose whatever colour hides under transparent pixels;
- 16-bit greyscale is scaled from 0..65535 to 0..255, float greyscale clipped
  to 0..255; palette, greyscale, CMYK and the rest convert to RGB;
- a non-square image is centre-cropped to its largest square (CIFAR images are
  square crops), then resized with Pillow's antialiased bicubic filter; an image
  already at the native size is used pixel for pixel.

Pillow's decompression-bomb guard stays on, and stricter: an image over
Image.MAX_IMAGE_PIXELS (about 89 megapixels) is refused before it is decoded.
"""

import struct
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import ValidationError

from cifarbench.data import transforms
from cifarbench.errors import BenchError
from cifarbench.models import inference
from cifarbench.params import Compute
from cifarbench.runtime import device as runtimelib

BATCH_SIZE = 256
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


def image_files(arguments):
    """The files to predict: each file argument, and the image files (by extension) in each folder argument."""
    files = []
    for argument in map(Path, arguments):
        if argument.is_dir():
            extensions = Image.registered_extensions()
            found = sorted(
                p
                for p in argument.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in extensions
            )
            if not found:
                raise BenchError(f"{argument}: no image files in this folder")
            files += found
        elif argument.is_file():
            files.append(argument)
        else:
            raise BenchError(f"{argument}: no such file or folder")
    return files


def to_rgb(image):
    """A Pillow image of any mode as 8-bit RGB (see the module docstring for the rules)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257).clip(0, 255).round().astype(np.uint8))
    elif image.mode == "F":
        image = Image.fromarray(np.asarray(image, dtype=np.float64).clip(0, 255).round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert("RGB")


def load_image(path, size):
    """uint8 (H, W, 3) array of one image file at size = (H, W); BenchError with one line if it cannot be read."""
    height, width = size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refuse above the limit, don't just warn
            with Image.open(path) as image:
                image = to_rgb(ImageOps.exif_transpose(image))
                image = ImageOps.fit(image, (width, height), method=Image.Resampling.BICUBIC)
    except UnidentifiedImageError:
        raise BenchError(f"{path}: not an image file (Pillow cannot identify it)") from None
    except _DECODE_ERRORS as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BenchError(f"{path}: cannot read the image ({first})") from None
    return np.asarray(image, dtype=np.uint8)


def predict(arguments, checkpoint_path, topk=5, device="auto"):
    """[{"path", "top": [{"class", "index", "probability"}, ...]}] for every image file in `arguments`."""
    files = image_files(arguments)
    try:
        compute = Compute(
            device=device, devices=1, precision="auto", compile=False, eval_batch_size=BATCH_SIZE, sync_bn=False
        )
    except ValidationError:
        raise BenchError(f"--device: {device!r} is not auto, cpu, cuda, cuda:N or mps") from None
    if not Path(checkpoint_path).is_file():
        raise BenchError(
            f"checkpoint {checkpoint_path} not found under {Path.cwd()}: run cifarbench from the project "
            f"root once the pipeline has trained the model (`dvc repro` or `make demo`)"
        )
    rt = runtimelib.resolve(compute)
    model, preprocess, info = inference.load(checkpoint_path, rt)
    size = info.get("image_size") or (32, 32)  # checkpoints from before image_size was stored: CIFAR's 32 px
    images = np.stack([load_image(path, size) for path in files])
    logits = inference.infer(model, transforms.to_tensor(images, rt.device), preprocess, rt, BATCH_SIZE)
    probabilities = torch.softmax(logits.double(), dim=1).cpu()
    top = probabilities.topk(min(topk, probabilities.shape[1]), dim=1)
    classes = info["classes"]
    return [
        {
            "path": str(path),
            "top": [
                {"class": classes[i], "index": int(i), "probability": float(p)}
                for p, i in zip(values.tolist(), indices.tolist())
            ],
        }
        for path, values, indices in zip(files, top.values, top.indices)
    ]
