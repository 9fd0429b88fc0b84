"""The released CIFAR-10-C and CIFAR-100-C arrays: where they are, their checksums, and one corruption at one
severity read without unpacking the rest.

Hendrycks & Dietterich 2019 published each set as one uncompressed tar (Zenodo records 2535967 and 3555552)
holding `<corruption>.npy`, uint8 (50,000, 32, 32, 3): the 10,000 test images at severity 1 first and those at
severity 5 last, in the official test order, and `labels.npy` (50,000,). A run reads the rows it needs straight
from the tar (or from the extracted folder): each member is a plain .npy at a known offset, so a memory map over
the file gives any severity's slice. `resolve` decides, for the download stage, which corrupted images the
evaluate stage scores (`evaluate.corruption_source`) and writes that decision, with where the arrays are, into
data/<dataset>/corruptions.json.
"""

import http.client
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cifarbench import atomic
from cifarbench.data.sources import download as _download
from cifarbench.errors import BenchError

MANIFEST = "corruptions.json"  # in data/<dataset>/, written by the download stage
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")  # released beside the 15, reported apart
SEVERITIES = 5  # corruptions.SEVERITIES's count (not imported: that module brings torch to the download stage)
SIZE = 32
# data.source values that read CIFAR's own test split (in the official order the arrays follow)
CIFAR_SOURCES = ("auto", "download", "archive")


@dataclass(frozen=True)
class Release:
    name: str  # CIFAR-10-C
    filename: str
    url: str
    md5: str
    size: int  # bytes: a quick check before the MD5 of 2.9 GB


RELEASES = {
    "cifar10": Release(
        "CIFAR-10-C",
        "CIFAR-10-C.tar",
        "https://zenodo.org/records/2535967/files/CIFAR-10-C.tar",
        "56bf5dcef84df0e2308c6dcbcbbd8499",
        2_918_471_680,
    ),
    "cifar100": Release(
        "CIFAR-100-C",
        "CIFAR-100-C.tar",
        "https://zenodo.org/records/3555552/files/CIFAR-100-C.tar",
        "11f0ed0f1191edbf9fa23466ae6021d3",
        2_918_473_216,
    ),
}


def locate(dataset, data_dir):
    """The release in data_dir: its extracted folder (<name>/labels.npy) or its tar; None where neither is."""
    release = RELEASES[dataset]
    folder = Path(data_dir) / release.name
    if (folder / "labels.npy").is_file():
        return folder
    tar = Path(data_dir) / release.filename
    return tar if tar.is_file() else None


def _members(location):
    """{member file name: (file, byte offset of its data)} of every .npy in the tar or folder."""
    if location.is_dir():
        return {p.name: (str(p), 0) for p in sorted(location.glob("*.npy"))}
    try:
        with tarfile.open(location, "r:") as tar:  # uncompressed, as released: members are read in place
            return {
                Path(m.name).name: (str(location), m.offset_data)
                for m in tar.getmembers()
                if m.isfile() and m.name.endswith(".npy")
            }
    except (tarfile.TarError, OSError) as exc:
        raise BenchError(f"{location} is not a readable uncompressed tar ({exc}); download it again") from None


def _header(path, offset):
    """(shape, dtype, offset of the array's first byte) of the .npy that starts at `offset` of `path`."""
    with open(path, "rb") as f:
        f.seek(offset)
        try:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(f)
        except ValueError as exc:
            raise ValueError(f"not a .npy array ({exc})") from None
        if fortran:
            raise ValueError("a Fortran-ordered array")
        return list(shape), dtype.str, f.tell()


def _array(entry):
    return np.memmap(entry["file"], dtype=entry["dtype"], mode="r", offset=entry["offset"], shape=tuple(entry["shape"]))


def _indexed(location, names, n_test):
    """{name: {"file", "offset", "shape", "dtype"}} for the corruptions `names` (those present of EXTRA too) and
    labels; ValueError naming the member whose count or shape does not fit a test split of n_test images."""
    found = _members(location)
    missing = [n for n in [*names, "labels"] if f"{n}.npy" not in found]
    if missing:
        raise ValueError(f"no {missing[0]}.npy in it")
    out = {}
    for name in [*names, *(e for e in EXTRA if f"{e}.npy" in found and e not in names), "labels"]:
        file, start = found[f"{name}.npy"]
        try:
            shape, dtype, offset = _header(file, start)
        except ValueError as exc:
            raise ValueError(f"{name}.npy is {exc}") from None
        expected = [SEVERITIES * n_test] + ([] if name == "labels" else [SIZE, SIZE, 3])
        if shape != expected or (name != "labels" and dtype != "|u1"):
            raise ValueError(f"{name}.npy is {dtype} {tuple(shape)}, expected {tuple(expected)} uint8 images")
        out[name] = {"file": file, "offset": offset, "shape": shape, "dtype": dtype}
    return out


def _check_labels(arrays, test_labels, test_index, location):
    labels = np.asarray(_array(arrays["labels"]))
    n = len(labels) // SEVERITIES
    for severity in range(SEVERITIES):
        block = labels[severity * n : (severity + 1) * n][test_index]
        if not np.array_equal(block, test_labels):
            wrong = int(np.count_nonzero(block != test_labels))
            raise BenchError(
                f"{location}: labels.npy disagrees with the test split at severity {severity + 1} ({wrong} of "
                f"{len(test_labels)} labels differ): not the arrays of this test set; use the official "
                f"{location.name} or set evaluate.corruption_source: generated"
            )


def read(manifest, name, severity, rows):
    """uint8 (len(rows), 32, 32, 3): corruption `name` at `severity` of the test split's images `rows` (positions
    in the test split), from the released arrays the manifest names."""
    entry = manifest["arrays"][name]
    n = entry["shape"][0] // SEVERITIES
    official = np.asarray(manifest["test_index"], dtype=np.int64)[np.asarray(rows, dtype=np.int64)]
    return np.ascontiguousarray(_array(entry)[(severity - 1) * n + official])


def _fetch(dataset, data_dir):
    """The release downloaded into data_dir (MD5-checked); DownloadError where it cannot be had."""
    release = RELEASES[dataset]
    path = Path(data_dir) / release.filename
    try:
        with atomic.atomic_path(path) as tmp:
            _download._fetch(release.url, tmp, release.md5)
    except (OSError, http.client.HTTPException, RuntimeError) as exc:
        raise _download.DownloadError(f"could not download {release.url}", f"{type(exc).__name__}: {exc}") from exc
    return path


def _verify(dataset, path):
    release = RELEASES[dataset]
    if path.stat().st_size != release.size:
        raise BenchError(
            f"{path} is {path.stat().st_size:,} bytes, expected {release.size:,} for the official {release.filename}; "
            "delete it and download it again, or set data.verify: false to use a modified copy on purpose"
        )
    actual = _download.file_md5(path)
    if actual != release.md5:
        raise BenchError(
            f"{path} has MD5 {actual}, expected {release.md5} for the official {release.filename}; delete it and "
            "download it again, or set data.verify: false to use a modified copy on purpose"
        )
    return actual


def resolve(dataset, data, evaluate, test_labels, test_index, source_count):
    """data/<dataset>/corruptions.json's content: which corrupted images evaluate scores, and why.

    data, evaluate: params' sections. test_labels: the test split's labels; test_index: each test image's index in
    the source's test set of source_count images (10,000 for CIFAR). "released": the arrays, checked against the
    test split (count, shape, labels: a mismatch stops in one line naming the file); "generated":
    cifarbench.data.corruptions. `auto` takes the release for
    CIFAR's own test split where it is in data.dir or can be downloaded, else generates; the manifest's `why`
    says which, in one line.
    """
    setting, name = evaluate.corruption_source, RELEASES[dataset].name
    generated = {"set": name, "source": "generated"}
    if setting == "generated" or not evaluate.corruptions:
        return {**generated, "why": "evaluate.corruption_source: generated" if evaluate.corruptions else "none run"}
    if data.source not in CIFAR_SOURCES:
        if setting == "released":
            raise BenchError(
                f"evaluate.corruption_source: released needs CIFAR's own test split, not data.source {data.source}; "
                "set evaluate.corruption_source: auto or generated"
            )
        return {**generated, "why": f"data.source {data.source} is not CIFAR's test split: {name} generated"}
    location = locate(dataset, data.dir)
    if location is None:
        if data.source == "archive":  # offline by choice
            problem = f"no {RELEASES[dataset].filename} or {name}/ in {data.dir} (data.source archive: offline)"
        else:
            try:
                location = _fetch(dataset, data.dir)
            except _download.DownloadError as exc:
                problem = f"no {RELEASES[dataset].filename} in {data.dir} and {exc} ({exc.reason})"
        if location is None:
            if setting == "released":
                raise BenchError(
                    f"evaluate.corruption_source: released: {problem}; put the official "
                    f"{RELEASES[dataset].filename} ({RELEASES[dataset].url}) in data.dir"
                )
            return {**generated, "why": f"{problem}: {name} generated"}
    md5 = _verify(dataset, location) if location.is_file() and data.verify else None
    try:
        arrays = _indexed(location, list(evaluate.corruptions), source_count)
    except ValueError as exc:
        raise BenchError(
            f"{location}: {exc}; use the official {name} or set evaluate.corruption_source: generated"
        ) from None
    test_index = np.asarray(test_index, dtype=np.int64)
    _check_labels(arrays, np.asarray(test_labels), test_index, location)
    return {
        "set": name,
        "source": "released",
        "why": f"the released {name} from {location}" + (" (MD5 checked)" if md5 else ""),
        "location": str(location),
        "md5": md5,
        "arrays": {k: v for k, v in arrays.items() if k != "labels"},
        "extra": [e for e in EXTRA if e in arrays],
        "test_index": test_index.tolist(),
    }


def write(manifest, data_dir):
    atomic.write_json(Path(data_dir) / MANIFEST, manifest)


def load(data_dir):
    """data/<dataset>/corruptions.json (a BenchError naming it where it is missing or damaged)."""
    from cifarbench import inputs

    path = Path(data_dir) / MANIFEST
    manifest = atomic.read_json(path)
    if not isinstance(manifest, dict) or manifest.get("source") not in ("released", "generated"):
        raise inputs.damaged(path, "its source is neither released nor generated")
    return manifest
