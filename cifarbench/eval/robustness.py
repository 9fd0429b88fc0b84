"""Accuracy under the CIFAR-10-C corruptions: test images corrupted at 32x32, then the model's own preprocessing.

The protocol of Hendrycks & Dietterich 2019: each corruption at each severity
is applied to the native 32x32 test images (cifarbench.data.corruptions, seeded),
and the model sees them through exactly the path evaluate uses for clean
images (inference.infer: resize to its img_size, its mean/std). The mean over
corruptions and severities is the headline number, `corruption_top1`.
"""

import numpy as np

from cifarbench.data import corruptions
from cifarbench.models import inference


def subset(n_total, n_images):
    """Evenly spaced test images (every class, whatever the order): all when n_images is 0 or too large."""
    if not n_images or n_images >= n_total:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, n_images).round().astype(np.int64))


def accuracy(model, images, labels, preprocess, runtime, batch_size, settings, seed):
    """{"corruptions": {name: {severity: top-1}}, "corruption_top1": mean, "corruption_images": n}.

    images: uint8 (N, 3, 32, 32) tensor on the device; labels: int64 tensor on the same device.
    settings: params' `evaluate` section (corruptions, severities, corruption_images).
    """
    if not settings.corruptions or not settings.severities:
        return {"corruptions": {}, "corruption_top1": None, "corruption_images": 0}
    index = subset(len(labels), settings.corruption_images)
    images, labels = images[index], labels[index]
    table = {}
    for name in settings.corruptions:
        table[name] = {}
        for severity in settings.severities:
            corrupted = corruptions.corrupt(images, name, severity, seed)
            logits = inference.infer(model, corrupted, preprocess, runtime, batch_size)
            table[name][str(severity)] = float((logits.argmax(1) == labels).float().mean())
    mean = float(np.mean([acc for per_severity in table.values() for acc in per_severity.values()]))
    return {"corruptions": table, "corruption_top1": mean, "corruption_images": int(len(index))}
