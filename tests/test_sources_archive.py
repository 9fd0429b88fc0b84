"""The official-archive source: parsing, safety, MD5 check, download and the auto choice."""

import functools
import http.server
import pickle
import tarfile
import threading
import urllib.error
import warnings

import numpy as np
import pytest
from cifar_fixtures import (
    PICKLE_STYLES,
    dumps,
    fake_dataset,
    official_members,
    regular,
    write_archive,
    write_official_archive,
    write_tar_gz,
)

from cifarbench.data.sources import download, select
from cifarbench.data.sources.cifar_archive import read_archive
from cifarbench.data.sources.cifar_names import CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES
from cifarbench.errors import BenchError


def assert_same_split(actual, expected):
    np.testing.assert_array_equal(actual.images, expected.images)
    np.testing.assert_array_equal(actual.labels, expected.labels)
    if expected.coarse is None:
        assert actual.coarse is None
    else:
        np.testing.assert_array_equal(actual.coarse, expected.coarse)


@pytest.mark.parametrize("pickle_style", PICKLE_STYLES)
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_round_trip(tmp_path, dataset, pickle_style):
    path, expected = write_official_archive(tmp_path, dataset, pickle_style=pickle_style)
    ds = read_archive(path, dataset)
    assert ds.name == dataset
    assert ds.source == {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}[dataset] + " (official archive)"
    assert ds.classes == expected.classes
    assert ds.coarse_classes == expected.coarse_classes
    assert ds.train.images.shape == (25, 32, 32, 3) and ds.train.images.dtype == np.uint8
    assert_same_split(ds.train, expected.train)
    assert_same_split(ds.test, expected.test)


def test_cifar100_names_and_coarse_labels(tmp_path):
    path, expected = write_official_archive(tmp_path, "cifar100", n_train=200, n_test=100)
    ds = read_archive(path, "cifar100")
    assert ds.classes == list(CIFAR100_FINE_CLASSES)
    assert ds.coarse_classes == list(CIFAR100_COARSE_CLASSES)
    assert ds.classes[ds.train.labels[0]] == CIFAR100_FINE_CLASSES[expected.train.labels[0]]
    whale = CIFAR100_FINE_CLASSES.index("whale")
    assert set(ds.test.coarse[ds.test.labels == whale]) == {CIFAR100_COARSE_CLASSES.index("aquatic_mammals")}


def test_pixel_layout_rows_are_red_green_blue_planes(tmp_path):
    """A pixel written at (row 1, column 2) of each colour plane must land at [1, 2, :] in HWC."""
    rows = np.zeros((1, 3072), dtype=np.uint8)
    flat = 1 * 32 + 2
    rows[0, [flat, 1024 + flat, 2048 + flat]] = [10, 20, 30]
    batch = dumps({"batch_label": "b", "labels": [3], "data": rows, "filenames": ["x.png"]})
    path = tmp_path / "a.tar.gz"
    write_archive(path, fake_dataset("cifar10", n_train=5), replace={"cifar-10-batches-py/data_batch_1": batch})

    ds = read_archive(path, "cifar10")
    image = ds.train.images[0]
    np.testing.assert_array_equal(image[1, 2], [10, 20, 30])
    assert image.sum() == 60  # nothing else moved into the zero image
    assert ds.train.labels[0] == 3


@pytest.mark.parametrize("numpy_module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_both_numpy_module_names_load_without_warnings(tmp_path, numpy_module):
    path, expected = write_official_archive(tmp_path, "cifar10", numpy_module=numpy_module)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy.core access would warn under numpy 2
        ds = read_archive(path, "cifar10")
    assert_same_split(ds.test, expected.test)


class CreatesFile:
    """Unpickling this object opens (creates) a file: what a tampered archive could do."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    probe = tmp_path / "probe.txt"
    pickle.loads(pickle.dumps(CreatesFile(probe), protocol=2)).close()
    assert probe.exists()  # the payload really works with a plain unpickler

    target = tmp_path / "pwned.txt"
    ds = fake_dataset("cifar10")
    evil = pickle.dumps(CreatesFile(target), protocol=2)
    write_archive(tmp_path / "evil.tar.gz", ds, replace={"cifar-10-batches-py/test_batch": evil})
    with pytest.raises(BenchError, match=r"refusing to unpickle the global .*open"):
        read_archive(tmp_path / "evil.tar.gz", "cifar10")
    assert not target.exists()


def _archive_with_extra_member(tmp_path, info, data=None):
    ds = fake_dataset("cifar10")
    entries = [(regular(name), payload) for name, payload in official_members(ds).items()]
    path = tmp_path / "bad.tar.gz"
    write_tar_gz(path, entries + [(info, data)])
    return path


def _member(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    "info, data",
    [
        (regular("../escape.txt"), b"x"),
        (regular("cifar-10-batches-py/../../escape.txt"), b"x"),
        (regular("/tmp/absolute.txt"), b"x"),
        (_member("cifar-10-batches-py/link", tarfile.SYMTYPE, "/etc/passwd"), None),
        (_member("cifar-10-batches-py/hard", tarfile.LNKTYPE, "cifar-10-batches-py/test_batch"), None),
        (_member("cifar-10-batches-py/fifo", tarfile.FIFOTYPE), None),
        (_member("cifar-10-batches-py/tty", tarfile.CHRTYPE), None),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "fifo", "char-device"],
)
def test_unsafe_members_are_refused(tmp_path, info, data):
    path = _archive_with_extra_member(tmp_path, info, data)
    with pytest.raises(BenchError, match="refusing the archive because member") as caught:
        read_archive(path, "cifar10")
    assert info.name in str(caught.value)
    assert not (tmp_path.parent / "escape.txt").exists()


def test_truncated_archive_says_delete_and_download_again(tmp_path):
    path, _ = write_official_archive(tmp_path, "cifar10", n_train=50)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BenchError, match="delete it and download it again") as caught:
        read_archive(path, "cifar10")
    assert str(path) in str(caught.value)


def test_not_an_archive_at_all(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    path.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(BenchError, match="not a usable CIFAR archive"):
        read_archive(path, "cifar10")


def test_missing_member_is_named(tmp_path):
    ds = fake_dataset("cifar10")
    members = official_members(ds)
    del members["cifar-10-batches-py/data_batch_3"]
    path = tmp_path / "a.tar.gz"
    write_tar_gz(path, [(regular(name), data) for name, data in members.items()])
    with pytest.raises(BenchError, match="no member cifar-10-batches-py/data_batch_3"):
        read_archive(path, "cifar10")


def test_wrong_archive_for_the_dataset(tmp_path):
    path, _ = write_official_archive(tmp_path, "cifar100")
    with pytest.raises(BenchError, match="not the CIFAR-10 python-version archive"):
        read_archive(path, "cifar10")


def test_md5_mismatch_names_file_both_sums_and_the_way_out(tmp_path):
    path, _ = write_official_archive(tmp_path, "cifar10")
    with pytest.raises(BenchError) as caught:
        download.verify_md5(path, "cifar10")
    message = str(caught.value)
    assert str(path) in message
    assert download.ARCHIVES["cifar10"].md5 in message
    assert download.file_md5(path) in message
    assert "data.verify: false" in message


def test_archive_source_checks_md5_unless_verify_is_false(tmp_path):
    write_official_archive(tmp_path, "cifar100")
    with pytest.raises(BenchError, match="expected eb9058c3a382ffc7106e4002c42a8d85"):
        select.load("cifar100", "archive", tmp_path, verify=True)
    assert len(select.load("cifar100", "archive", tmp_path, verify=False).train) == 25


def test_archive_source_accepts_a_file_with_the_official_md5(tmp_path, monkeypatch):
    path, _ = write_official_archive(tmp_path, "cifar10")
    official = download.ARCHIVES["cifar10"]
    patched = download.Archive(official.filename, official.url, download.file_md5(path))
    monkeypatch.setitem(download.ARCHIVES, "cifar10", patched)
    assert select.load("cifar10", "archive", tmp_path).name == "cifar10"


def test_archive_source_without_the_file_says_where_to_put_it(tmp_path):
    with pytest.raises(BenchError, match="cifar-10-python.tar.gz is missing: .* data.dir"):
        select.load("cifar10", "archive", tmp_path)


def _fail_network(url, path, md5):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def _must_not_download(*args):
    raise AssertionError("no download expected")


def test_auto_reads_the_archive_when_present(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_fetch", _must_not_download)
    write_official_archive(tmp_path, "cifar10")
    ds = select.load("cifar10", "auto", tmp_path, verify=False)
    assert ds.source == "CIFAR-10 (official archive)"


def test_auto_without_archive_or_network_gives_one_combined_message(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_fetch", _fail_network)
    with pytest.raises(BenchError) as caught:
        select.load("cifar100", "auto", tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "cifar-100-python.tar.gz") in message
    assert "name resolution" in message
    assert "make demo" in message
    assert not list(tmp_path.iterdir())  # no half-written archive left behind


def test_download_failure_explains_the_offline_way(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "_fetch", _fail_network)
    with pytest.raises(BenchError) as caught:
        download.download("cifar10", tmp_path)
    message = str(caught.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert "data.source: archive" in message and "make demo" in message


def test_download_source_fetches_then_reads(tmp_path, monkeypatch):
    source_dir = tmp_path / "server"
    served, expected = write_official_archive(source_dir, "cifar10")

    def fake_fetch(url, path, md5):
        assert url == download.ARCHIVES["cifar10"].url and md5 == download.ARCHIVES["cifar10"].md5
        path.write_bytes(served.read_bytes())

    monkeypatch.setattr(download, "_fetch", fake_fetch)
    data_dir = tmp_path / "data"
    ds = select.load("cifar10", "download", data_dir, verify=False)
    assert_same_split(ds.test, expected.test)
    assert sorted(p.name for p in data_dir.iterdir()) == ["cifar-10-python.tar.gz"]


@pytest.fixture
def local_server(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving tmp_path/server (no outside network); yields its base URL."""
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    root = tmp_path / "server"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_real_downloader_against_a_local_server(tmp_path, monkeypatch, local_server):
    """torchvision's download_url as called here: fetch, MD5 check, the file under its final name only when good."""
    served, _ = write_official_archive(tmp_path / "server", "cifar10")
    good = download.Archive(served.name, f"{local_server}/{served.name}", download.file_md5(served))
    monkeypatch.setitem(download.ARCHIVES, "cifar10", good)
    path = download.download("cifar10", tmp_path / "data")
    assert path.read_bytes() == served.read_bytes()

    corrupt = download.Archive(good.filename, good.url, "0" * 32)
    monkeypatch.setitem(download.ARCHIVES, "cifar10", corrupt)
    with pytest.raises(BenchError, match="could not download"):
        download.download("cifar10", tmp_path / "other")
    assert not (tmp_path / "other").exists() or not list((tmp_path / "other").iterdir())


def test_unknown_source_and_dataset(tmp_path):
    with pytest.raises(BenchError, match="unknown source 'ftp'"):
        select.load("cifar10", "ftp", tmp_path)
    with pytest.raises(BenchError, match="unknown dataset 'mnist'"):
        select.load("mnist", "digits", tmp_path)
