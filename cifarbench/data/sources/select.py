"""Where a dataset's images come from, chosen by `data.source`.

- download: fetch the official archive into data.dir unless it is there, then read it
- archive:  read the official archive that the user put in data.dir (no network)
- folder:   read <data.dir>/<dataset>/{train,test}/<class>/*.png|jpg|jpeg
- digits:   the offline stand-in built from scikit-learn's digits (NOT CIFAR)
- auto:     the archive when data.dir has it, else download

Every source returns a `cifarbench.dataset.Dataset`.
"""

from cifarbench.data.sources import download as _download
from cifarbench.data.sources.cifar_archive import read_archive
from cifarbench.data.sources.digits import make_digits
from cifarbench.data.sources.folder import read_folder
from cifarbench.errors import BenchError
from cifarbench.paths import DATASETS

SOURCES = ("auto", "download", "archive", "folder", "digits")


def load(dataset, source, data_dir, verify=True):
    """The Dataset for the pipeline slot `dataset` from `source`; BenchError names any problem and its fix."""
    if dataset not in DATASETS:
        raise BenchError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    if source == "download":
        return _from_download(dataset, data_dir, verify)
    if source == "archive":
        return _from_archive(dataset, data_dir, verify)
    if source == "folder":
        return read_folder(data_dir, dataset)
    if source == "digits":
        return make_digits(dataset)
    if source == "auto":
        return _from_auto(dataset, data_dir, verify)
    raise BenchError(f"data.source: unknown source {source!r}; use one of {', '.join(SOURCES)}")


def _read_verified(dataset, path, verify):
    if verify:
        _download.verify_md5(path, dataset)
    return read_archive(path, dataset)


def _from_archive(dataset, data_dir, verify):
    path = _download.archive_path(dataset, data_dir)
    if not path.is_file():
        archive = _download.ARCHIVES[dataset]
        raise BenchError(
            f"{path} is missing: data.source: archive reads the official {archive.filename} from data.dir; "
            f"put it there (from {archive.url}) or set data.source: download"
        )
    return _read_verified(dataset, path, verify)


def _from_download(dataset, data_dir, verify):
    path = _download.archive_path(dataset, data_dir)
    if path.is_file():
        return _read_verified(dataset, path, verify)
    return read_archive(_download.download(dataset, data_dir), dataset)  # download() checked the MD5


def _from_auto(dataset, data_dir, verify):
    path = _download.archive_path(dataset, data_dir)
    if path.is_file():
        return _read_verified(dataset, path, verify)
    try:
        downloaded = _download.download(dataset, data_dir)
    except _download.DownloadError as exc:
        archive = _download.ARCHIVES[dataset]
        raise BenchError(
            f"no CIFAR data for {dataset}: {path} does not exist and downloading {archive.url} failed "
            f"({exc.reason}); put the official {archive.filename} at {path}, "
            "or run `make demo` for the offline stand-in"
        ) from exc
    return read_archive(downloaded, dataset)
