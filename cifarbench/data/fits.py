"""Settings that cannot work on the data at hand, refused by the download stage before anything trains.

The download stage is the first that sees both params.yaml and the images, so it checks
what later stages will need from the splits it is about to write: every class in the
training split (a class with no image cannot be learned or probed), and enough training
images per class for the largest few-shot probe (`probe.shots`). A failure is one line
that names the key, the numbers and the fix, summarised (never a list of every class),
and comes before the data folder is replaced, so the old data stay.
"""

import numpy as np

from cifarbench.errors import BenchError


def _per_class(split, n_classes):
    return np.bincount(split.labels, minlength=n_classes)


def check(name, splits, classes, limit, shots):
    """BenchError unless `splits` (train/val/test) serve every stage: each class trained, probes drawable.

    name: the dataset slot; classes: its class names; limit, shots: data.limit and probe.shots.
    """
    counts = _per_class(splits["train"], len(classes))
    missing = int((counts == 0).sum())
    limit_note = f" (data.limit: {limit})" if limit else ""
    if missing:
        raise BenchError(
            f"{name}: {missing} of {len(classes)} classes have no training image{limit_note}; "
            f"raise data.limit to at least a few images per class (e.g. {20 * len(classes)})"
        )
    need, fewest = max(shots), int(counts.min())
    if need > fewest:
        short = int((counts < need).sum())
        raise BenchError(
            f"probe.shots: the {need}-shot probe needs {need} training images per class, but {short} of "
            f"{len(classes)} {name} classes have fewer (as few as {fewest}){limit_note}; "
            f"keep probe.shots at or below {fewest}, or raise data.limit"
        )
