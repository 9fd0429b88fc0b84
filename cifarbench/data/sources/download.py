"""Where the official CIFAR archives live, their checksums, and the download itself."""

import hashlib
import http.client
from dataclasses import dataclass
from pathlib import Path

from cifarbench import atomic
from cifarbench.errors import BenchError


@dataclass(frozen=True)
class Archive:
    filename: str
    url: str
    md5: str


ARCHIVES = {
    "cifar10": Archive(
        "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": Archive(
        "cifar-100-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
    ),
}


class DownloadError(BenchError):
    """The download failed; `reason` is the short cause, for messages that add their own advice."""

    def __init__(self, message, reason):
        super().__init__(message)
        self.reason = reason


def archive_path(dataset, data_dir):
    return Path(data_dir) / ARCHIVES[dataset].filename


def file_md5(path):
    digest = hashlib.md5(usedforsecurity=False)  # a checksum against damage, not a security check
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path, dataset):
    expected = ARCHIVES[dataset].md5
    actual = file_md5(path)
    if actual != expected:
        raise BenchError(
            f"{path} has MD5 {actual}, expected {expected} for the official archive; delete it and "
            "download it again, or set data.verify: false to use a modified copy on purpose"
        )


def download(dataset, data_dir):
    """Fetch the official archive into data_dir (MD5-checked); returns its path.

    The file appears under its final name only once complete and verified, so an
    interrupted download never leaves a truncated archive that looks usable.
    """
    archive = ARCHIVES[dataset]
    path = archive_path(dataset, data_dir)
    try:
        with atomic.atomic_path(path) as tmp:
            _fetch(archive.url, tmp, archive.md5)
    except (OSError, http.client.HTTPException, RuntimeError) as exc:
        # torchvision raises RuntimeError when the downloaded file fails its MD5 check
        reason = f"{type(exc).__name__}: {exc}"
        raise DownloadError(
            f"could not download {archive.url} ({reason}); to work offline, put the official "
            f"{archive.filename} in {Path(data_dir)} (data.dir) and set data.source: archive, "
            "or run `make demo` for the offline stand-in",
            reason,
        ) from exc
    return path


def _fetch(url, path, md5):
    """torchvision's downloader: follows redirects, shows progress, checks the MD5."""
    # Imported here: torchvision takes seconds to import, and only a real download needs it.
    from torchvision.datasets.utils import download_url

    download_url(url, root=str(path.parent), filename=path.name, md5=md5)
