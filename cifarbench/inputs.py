"""Files one stage hands the next: read them or stop with one line naming the file, the fault and the fix.

Disks, copies between machines and hand edits damage files. A stage never
trusts what an earlier stage wrote: every problem becomes a `BenchError`
(`error: <file> is damaged (<what>); rerun its stage: dvc repro -f <stage>,
or restore it: dvc checkout --force <file>`), never a zipfile or JSON traceback.
The stage that writes each file is looked up in `paths.producing_stage`.
`per_image` checks the per-image predictions file, also as read at another
revision (`cifarbench compare`), where the fix names that revision.
"""

import base64
import binascii
import dataclasses
import json
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from cifarbench import paths
from cifarbench.errors import BenchError


def fix(path):
    """How to get a good `path` back: rerun the stage that writes it, or restore the committed copy."""
    stage = paths.producing_stage(path)
    rerun = f"dvc repro -f {stage}" if stage else "dvc repro -f <the stage that writes it>"
    return f"rerun its stage: {rerun}, or restore it: {paths.restore_command(path)}"


def unusable(path, what):
    """`<path> <what>; <fix>` as a BenchError (what: 'is not a CIFARbench checkpoint', ...)."""
    return BenchError(f"{path} {what}; {fix(path)}")


def damaged(path, problem):
    return unusable(path, f"is damaged ({problem})")


def missing(path):
    stage = paths.producing_stage(path)
    if stage is None:
        return BenchError(f"{path} is missing: run `dvc repro` to produce every stage's output first")
    return BenchError(f"{path} is missing: run `dvc repro {stage}` first")


def first_line(exc):
    """The gist of an exception's message: its first sentence, or its type when it has none."""
    text = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
    return text.rstrip(".") or type(exc).__name__


def read_json(path):
    """A JSON file another stage wrote, checked to be readable, well-formed JSON."""
    path = Path(path)
    if not path.is_file():
        raise missing(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(path, f"not valid JSON: {first_line(exc)}") from None


def read_npz(path, required, optional=()):
    """The named arrays of an .npz another stage wrote: {name: array} with every `required` name.

    Reads each array once, as np.load would anyway; never unpickles object arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise missing(path)
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise damaged(path, "not a readable .npz: it holds a single .npy array")
        with f:
            absent = [name for name in required if name not in f.files]
            if absent:
                held = ", ".join(f.files) or "nothing"
                raise damaged(path, f"no {', '.join(absent)} array{'s' if len(absent) > 1 else ''}; it holds {held}")
            return {name: f[name] for name in (*required, *optional) if name in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        # truncated or overwritten zip, bad CRC, pickled objects, an array header numpy cannot parse
        raise damaged(path, f"not a readable .npz: {first_line(exc)}") from None


# metrics/per_image/<model>-<dataset>-<seed>.json, written by the evaluate stage (pipeline/evaluate.py):
# {"format": PER_IMAGE_FORMAT, "n_test": N, "n_classes": C, "test_digest": "sha256:<64 hex>",
#  "dtype": "uint8" | "uint16", "predicted": base64 of N little-endian classes, "correct": base64 of
#  np.packbits(predicted == label)}: about 1.5 bytes an image, the same bytes on every rerun. Since the
# intervals on every number, also (files without them are read for top-1 alone): "confidence", base64 of N
# float32 top softmax probabilities; "n_out" and "ood_scores", the out-of-distribution images' float32 scores;
# "corruption_runs", "corruption_index" (base64 of the corrupted test images' indices, uint16, or uint32 past
# 65,536 images) and "corruption_hits" (base64 of uint8: in how many runs each was right). About 12 bytes an
# image with the out-of-distribution scores: 162 kB of JSON at CIFAR's 10,000 test images (measured).
PER_IMAGE_FORMAT = "cifarbench per-image predictions 1"
CLASS_DTYPES = {"uint8": "<u1", "uint16": "<u2"}
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# metrics/per_image/probe/<model>-<dataset>.json, written by the probe stage: {"format": PROBE_FORMAT,
# "n_test", "test_digest", "correct": base64 of np.packbits(the starting-weights probe's test predictions
# right)}
PROBE_FORMAT = "cifarbench per-image probe 1"


@dataclasses.dataclass(frozen=True)
class PerImage:
    """One evaluate run's per-image results: predicted classes, their correctness, the test set's digest, and
    (None in files written before them) what the other numbers' comparisons pair."""

    predicted: np.ndarray  # (n_test,) int64
    correct: np.ndarray  # (n_test,) bool: predicted == the test label
    n_classes: int
    test_digest: str  # sha256 over the test labels and pixels evaluate scored
    confidence: np.ndarray | None = None  # (n_test,) float32: the top softmax probability
    ood_scores: np.ndarray | None = None  # (n_out,) float32: the other dataset's test images' scores
    corruption_index: np.ndarray | None = None  # (n_corrupted,) int64: test images corrupted
    corruption_hits: np.ndarray | None = None  # (n_corrupted,) int: runs each was right in
    corruption_runs: int = 0

    @property
    def top1(self):
        return float(self.correct.mean())


def _decoded(record, field, size):
    text = record.get(field)
    if not isinstance(text, str):
        raise ValueError(f"no {field} string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ValueError(f"{field} is not base64") from None
    if len(raw) != size:
        raise ValueError(f"{field} holds {len(raw)} bytes where n_test needs {size}")
    return raw


def _record(data, format_):
    """A per-image file's JSON object (bytes or text) in format `format_`; ValueError says what is wrong."""
    try:
        record = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON: {first_line(exc)}") from None
    if not isinstance(record, dict) or record.get("format") != format_:
        raise ValueError(f"its format is not {format_!r}")
    return record


def _per_image(data):
    record = _record(data, PER_IMAGE_FORMAT)
    n, n_classes, dtype = record.get("n_test"), record.get("n_classes"), record.get("dtype")
    for name, value in (("n_test", n), ("n_classes", n_classes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} is not a positive whole number")
    if dtype not in CLASS_DTYPES:
        raise ValueError(f"dtype is not one of {', '.join(CLASS_DTYPES)}")
    digest = record.get("test_digest")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ValueError("no test_digest (sha256:<64 hex digits>)")
    item = np.dtype(CLASS_DTYPES[dtype])
    predicted = np.frombuffer(_decoded(record, "predicted", n * item.itemsize), dtype=item).astype(np.int64)
    if predicted.max() >= n_classes:
        raise ValueError(f"a predicted class is {int(predicted.max())}, past n_classes {n_classes}")
    return PerImage(predicted, _bits(record, "correct", n), n_classes, digest, **_extras(record, n))


def _bits(record, field, n):
    bits = np.unpackbits(np.frombuffer(_decoded(record, field, (n + 7) // 8), dtype=np.uint8))
    if bits[n:].any():
        raise ValueError(f"{field} has bits set past n_test")
    return bits[:n].astype(bool)


def _count(record, field):
    value = record.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{field} is not a whole number")
    return value


def _extras(record, n):
    """The per-image arrays of the other numbers, where the file has them."""
    out = {}
    if "confidence" in record:
        out["confidence"] = np.frombuffer(_decoded(record, "confidence", 4 * n), dtype="<f4")
    if "ood_scores" in record:
        n_out = _count(record, "n_out")
        out["ood_scores"] = np.frombuffer(_decoded(record, "ood_scores", 4 * n_out), dtype="<f4")
    if "corruption_hits" in record:
        runs, count = _count(record, "corruption_runs"), _count(record, "corruption_images")
        index_dtype = np.dtype("<u2" if n <= 1 << 16 else "<u4")
        index = np.frombuffer(_decoded(record, "corruption_index", count * index_dtype.itemsize), index_dtype)
        hits = np.frombuffer(_decoded(record, "corruption_hits", count), dtype=np.uint8)
        if count and (index.max() >= n or hits.max() > runs):
            raise ValueError("corruption_index or corruption_hits out of range")
        out.update(corruption_index=index.astype(np.int64), corruption_hits=hits.astype(np.int64), corruption_runs=runs)
    return out


@dataclasses.dataclass(frozen=True)
class ProbePerImage:
    """One probe stage's per-image results: whether the starting-weights probe got each test image right."""

    correct: np.ndarray
    test_digest: str


def _probe_per_image(data):
    record = _record(data, PROBE_FORMAT)
    n, digest = _count(record, "n_test"), record.get("test_digest")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise ValueError("no test_digest (sha256:<64 hex digits>)")
    return ProbePerImage(_bits(record, "correct", n), digest)


def probe_per_image(data, path, revision=None):
    """A probe per-image file's content, checked: a ProbePerImage, or one line naming the file and the fix."""
    return _checked(_probe_per_image, data, path, revision)


def per_image(data, path, revision=None):
    """A per-image predictions file's content (bytes or text), checked: a PerImage, or one line naming the
    file (and the revision it was read at: 'HEAD (1a2b3c4)', an experiment) and the fix."""
    return _checked(_per_image, data, path, revision)


def _checked(parse, data, path, revision):
    """parse(data), or BenchError in one line naming the file, the revision it was read at and the fix."""
    try:
        return parse(data)
    except ValueError as exc:
        if revision is None:
            raise damaged(path, str(exc)) from None
        stage = paths.producing_stage(path) or "<the stage that writes it>"
        raise BenchError(
            f"{path} at {revision} is damaged ({exc}); rerun its stage on that revision "
            f"(`dvc repro -f {stage}`) and commit the result"
        ) from None
