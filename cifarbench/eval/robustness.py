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

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from cifarbench.data import corruptions
from cifarbench.models import inference


def subset(n_total, n_images):
    """Evenly spaced test images (every class, whatever the order): all when n_images is 0 or too large."""
    if not n_images or n_images >= n_total:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, n_images).round().astype(np.int64))


def accuracy(model, images, labels, preprocess, runtime, batch_size, settings, seed, background=None):
    """{"corruptions": {name: {severity: top-1}}, "corruption_top1": mean, "corruption_images": n}.

    images: uint8 (N, 3, 32, 32) tensor on the device; labels: int64 tensor on the same device.
    settings: params' `evaluate` section (corruptions, severities, corruption_images).
    background: make the Pillow corruptions in a background thread (default: on a GPU, not on a CPU, where
    the main thread makes them in turn; the results are the same).
    """
    if not settings.corruptions or not settings.severities:
        return {"corruptions": {}, "corruption_top1": None, "corruption_images": 0}
    index = subset(len(labels), settings.corruption_images)
    images, labels = images[index], labels[index]
    runs = [(name, severity) for name in settings.corruptions for severity in settings.severities]
    hits = {}
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
        for run in runs:
            if run in made_on_host:
                corrupted = torch.from_numpy(made_on_host[run].result()).to(images.device).permute(0, 3, 1, 2)
            else:
                corrupted = corruptions.corrupt(images, *run, seed, index)
            logits = inference.infer(model, corrupted.contiguous(), preprocess, runtime, batch_size)
            hits[run] = (logits.argmax(1) == labels).sum()
    top1 = (torch.stack(list(hits.values())).double() / len(labels)).tolist()  # the one read back
    table = {name: {} for name in settings.corruptions}
    for (name, severity), accuracy in zip(hits, top1):
        table[name][str(severity)] = accuracy
    mean = float(np.mean(top1))
    return {"corruptions": table, "corruption_top1": mean, "corruption_images": int(len(index))}
