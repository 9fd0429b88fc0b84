"""Accuracy under the CIFAR-10-C corruptions: test images corrupted at 32x32, then the model's own preprocessing.

The protocol of Hendrycks & Dietterich 2019: each corruption at each severity
is applied to the native 32x32 test images (cifarbench.data.corruptions, seeded;
each image's draws fixed by its index in the test split, so a subset scores the
images the whole set would),
and the model sees them through exactly the path evaluate uses for clean
images (inference.infer: resize to its img_size, its mean/std). The mean over
corruptions and severities is the headline number, `corruption_top1`.

On a GPU the corruptions run there (one chunk per test set), the hits stay on the
device until the end, and the two Pillow corruptions, which run on the CPU
(corruptions.ON_HOST), are made in a background thread from the start, while the
device infers the others: the card does not wait for the host's JPEG encoder.
"""

import contextlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from cifarbench.data import corruptions
from cifarbench.data.sources import released_c
from cifarbench.models import inference


def subset(n_total, n_images):
    """Evenly spaced test images (every class, whatever the order): all when n_images is 0 or too large."""
    if not n_images or n_images >= n_total:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, n_images).round().astype(np.int64))


def accuracy(model, images, labels, preprocess, runtime, batch_size, settings, seed, background=None, released=None):
    """({"corruptions": {name: {severity: top-1}}, "corruption_top1": mean, "corruption_images": n,
    "corruption_source": "generated" | "released"[, "extra_corruptions", "extra_corruption_top1"]}, per image).

    per image: (index, hits), the test-split indices scored and, for each, how many of the corruption x
    severity runs it was right in (uint8); corruption_top1 is the mean of hits / runs, so its interval
    resamples these images.

    images: uint8 (N, 3, 32, 32) tensor on the device; labels: int64 tensor on the same device.
    settings: params' `evaluate` section (corruptions, severities, corruption_images).
    released: data/<dataset>/corruptions.json of a released set (cifarbench.data.sources.released_c): its arrays
    are scored instead of generated images, and its 4 extra corruptions too, apart from the headline mean.
    background: make the Pillow corruptions in a background thread (default: on a GPU, not on a CPU, where
    the main thread makes them in turn; the results are the same).
    """
    if not settings.corruptions or not settings.severities:
        nothing = (np.zeros(0, np.int64), np.zeros(0, np.uint8))
        return {"corruptions": {}, "corruption_top1": None, "corruption_images": 0, "corruption_source": None}, nothing
    index = subset(len(labels), settings.corruption_images)
    images, labels = images[index], labels[index]
    runs = [(name, severity) for name in settings.corruptions for severity in settings.severities]
    if released is not None:
        table, right = _score(model, labels, preprocess, runtime, batch_size, runs, _released(released, index, images))
        result = {"corruption_source": "released"}
        extra = [(name, severity) for name in released["extra"] for severity in settings.severities]
        if extra:
            extra_table, extra_right = _score(
                model, labels, preprocess, runtime, batch_size, extra, _released(released, index, images)
            )
            result["extra_corruptions"] = extra_table
            result["extra_corruption_top1"] = float(extra_right.double().mean())
    else:
        maker = _generated(images, seed, index, background, runs)
        table, right = _score(model, labels, preprocess, runtime, batch_size, runs, maker)
        result = {"corruption_source": "generated"}  # by cifarbench.data.corruptions, not the released arrays
    result = {
        "corruptions": table,
        "corruption_top1": float(right.double().mean()),
        "corruption_images": int(len(index)),
        **result,
    }
    return result, (np.asarray(index, dtype=np.int64), right.sum(0).to(torch.uint8).cpu().numpy())


def _released(manifest, index, images):
    """make(name, severity): the released arrays' images of the test split's `index`, on the images' device."""

    def make(name, severity):
        array = released_c.read(manifest, name, severity, index)
        return torch.from_numpy(array).to(images.device).permute(0, 3, 1, 2)

    return contextlib.nullcontext(make)


@contextlib.contextmanager
def _generated(images, seed, index, background, runs):
    """make(name, severity): generated images; in the background (on a GPU by default) the Pillow corruptions of
    `runs` are started on the host at once, so the device does not wait for the host's JPEG encoder."""
    in_background = images.device.type != "cpu" if background is None else background
    with ThreadPoolExecutor(max_workers=1) as host:
        made_on_host = {}
        if in_background:
            nhwc = images.permute(0, 2, 3, 1).cpu().numpy()
            made_on_host = {
                run: host.submit(corruptions.corrupt, nhwc, *run, seed, index)
                for run in runs
                if run[0] in corruptions.ON_HOST
            }

        def make(name, severity):
            if (name, severity) in made_on_host:
                array = made_on_host.pop((name, severity)).result()
                return torch.from_numpy(array).to(images.device).permute(0, 3, 1, 2)
            return corruptions.corrupt(images, name, severity, seed, index)

        yield make


def _score(model, labels, preprocess, runtime, batch_size, runs, maker):
    """({name: {severity: top-1}}, (runs, images) bool tensor of right answers) over the corrupted images."""
    hits = []
    with maker as make:
        for name, severity in runs:
            logits = inference.infer(model, make(name, severity).contiguous(), preprocess, runtime, batch_size)
            hits.append(logits.argmax(1) == labels)
    right = torch.stack(hits)  # (runs, images), read back once
    top1 = (right.sum(1).double() / len(labels)).tolist()
    table = {}
    for (name, severity), value in zip(runs, top1):
        table.setdefault(name, {})[str(severity)] = value
    return table, right
