"""The released CIFAR-10-C / CIFAR-100-C arrays: found in data.dir as the tar or its folder, checked against the test
split, read a severity at a time without unpacking, and scored by evaluate in place of generated images.

The releases are made here in the official layout (one uncompressed tar, `<set>/<corruption>.npy` of uint8
(5 x n_test, 32, 32, 3), severity 1 first, and `labels.npy`) for a small official-format CIFAR archive, so the
download stage runs on them as on the real ones (with data.verify off: their MD5 is not the official one).
"""

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from cifar_fixtures import write_official_archive
from conftest import run_stage_here, tiny_params, write_params

from cifarbench.data.sources import released_c

NAMES = ("gaussian_noise", "fog", "saturate")  # two of the 15 and one of the 4 extra


def pixel(name, severity):
    """The value every pixel of a corruption's image has at a severity: which array a read came from."""
    return 40 * severity + NAMES.index(name)


def release_arrays(labels, names=NAMES, shuffle_labels=False):
    n = len(labels)
    arrays = {
        name: np.concatenate([np.full((n, 32, 32, 3), pixel(name, s), np.uint8) for s in range(1, 6)]) for name in names
    }
    for name in names:  # the image's index in the test set, in its first pixel: which rows a read took
        arrays[name][:, 0, 0, 0] = np.tile(np.arange(n), 5)
    tiled = np.tile(labels, 5)
    arrays["labels"] = np.random.default_rng(0).permutation(tiled) if shuffle_labels else tiled
    return arrays


def npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def write_tar(path, arrays, folder="CIFAR-10-C"):
    with tarfile.open(path, "w") as tar:  # uncompressed, as released
        for name, array in arrays.items():
            data = npy(array)
            info = tarfile.TarInfo(f"{folder}/{name}.npy")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def project(tmp_path, source="auto", limit=0, **extra):
    raw_dir = tmp_path / "raw"
    _, ds = write_official_archive(raw_dir, "cifar10", n_train=60, n_test=20)
    params = dict(
        data__source="archive",
        data__dir=str(raw_dir),
        data__verify=False,
        data__limit=limit,
        data__val_size=10,
        evaluate__corruption_source=source,
        evaluate__corruptions=["gaussian_noise", "fog"],
    )
    write_params(tmp_path, tiny_params(**{**params, **extra}))
    return raw_dir, ds


def download(tmp_path):
    return run_stage_here(tmp_path, "download.py", "cifar10")


def manifest(tmp_path):
    return json.loads((tmp_path / "data" / "cifar10" / "corruptions.json").read_text())


@pytest.mark.parametrize("layout", ["tar", "folder"])
def test_the_release_in_data_dir_is_read_a_severity_at_a_time(tmp_path, layout):
    raw_dir, ds = project(tmp_path, limit=30)  # data.limit: a stratified share of the test images
    arrays = release_arrays(ds.test.labels)
    if layout == "tar":
        write_tar(raw_dir / "CIFAR-10-C.tar", arrays)
    else:
        (raw_dir / "CIFAR-10-C").mkdir()
        for name, array in arrays.items():
            np.save(raw_dir / "CIFAR-10-C" / f"{name}.npy", array)
    proc = download(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "cifar10 corruptions: released (the released CIFAR-10-C from" in proc.stdout
    found = manifest(tmp_path)
    assert found["source"] == "released" and found["set"] == "CIFAR-10-C" and found["extra"] == ["saturate"]
    test = np.load(tmp_path / "data" / "cifar10" / "test.npz")
    index = np.asarray(found["test_index"])
    assert len(index) == len(test["labels"]) == 10 and np.array_equal(ds.test.labels[index], test["labels"])
    for name in ("fog", "saturate"):
        for severity in (1, 4):
            images = released_c.read(found, name, severity, [0, 3, 9])
            assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
            assert (images[:, 1:] == pixel(name, severity)).all()  # the severity's block of the array
            assert list(images[:, 0, 0, 0]) == list(index[[0, 3, 9]])  # the test split's images, in the set


def test_arrays_that_do_not_match_the_test_split_stop_the_download_in_one_line(tmp_path):
    raw_dir, ds = project(tmp_path)
    write_tar(raw_dir / "CIFAR-10-C.tar", release_arrays(ds.test.labels, shuffle_labels=True))
    proc = download(tmp_path)
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("error: ")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert line.startswith(f"error: {raw_dir / 'CIFAR-10-C.tar'}: labels.npy disagrees with the test split")
    assert not (tmp_path / "data" / "cifar10").exists()  # nothing written
    write_tar(raw_dir / "CIFAR-10-C.tar", {k: v[:-5] for k, v in release_arrays(ds.test.labels).items()})
    [line] = [x for x in download(tmp_path).stderr.splitlines() if x.startswith("error: ")]
    assert "gaussian_noise.npy is |u1 (95, 32, 32, 3), expected (100, 32, 32, 3) uint8 images" in line
    arrays = release_arrays(ds.test.labels)
    del arrays["fog"]
    write_tar(raw_dir / "CIFAR-10-C.tar", arrays)
    [line] = [x for x in download(tmp_path).stderr.splitlines() if x.startswith("error: ")]
    assert line.startswith(f"error: {raw_dir / 'CIFAR-10-C.tar'}: no fog.npy in it")


def test_the_official_size_and_md5_are_checked(tmp_path, monkeypatch):
    import dataclasses
    from types import SimpleNamespace

    from cifarbench.errors import BenchError

    raw_dir, ds = project(tmp_path)
    tar = raw_dir / "CIFAR-10-C.tar"
    write_tar(tar, release_arrays(ds.test.labels))
    data = SimpleNamespace(source="archive", dir=str(raw_dir), verify=True)
    evaluate = SimpleNamespace(corruption_source="auto", corruptions=["fog"])
    fix = "delete it and download it again, or set data.verify: false to use a modified copy on purpose"
    with pytest.raises(BenchError) as caught:
        released_c.resolve("cifar10", data, evaluate, ds.test.labels, np.arange(20), 20)
    size = tar.stat().st_size
    assert (
        str(caught.value) == f"{tar} is {size:,} bytes, expected 2,918,471,680 for the official CIFAR-10-C.tar; {fix}"
    )
    official = dataclasses.replace(released_c.RELEASES["cifar10"], size=size)  # the size alone passes: the MD5
    monkeypatch.setitem(released_c.RELEASES, "cifar10", official)
    with pytest.raises(BenchError) as caught:
        released_c.resolve("cifar10", data, evaluate, ds.test.labels, np.arange(20), 20)
    assert str(caught.value).startswith(f"{tar} has MD5 ") and str(caught.value).endswith(
        f", expected 56bf5dcef84df0e2308c6dcbcbbd8499 for the official CIFAR-10-C.tar; {fix}"
    )


def test_auto_generates_where_no_release_is_at_hand_and_released_refuses(tmp_path):
    project(tmp_path)  # data.source archive: offline, and no release in data.dir
    proc = download(tmp_path)
    assert proc.returncode == 0
    assert "cifar10 corruptions: generated (no CIFAR-10-C.tar or CIFAR-10-C/ in" in proc.stdout
    assert manifest(tmp_path)["source"] == "generated"
    project(tmp_path, source="released")
    line = [x for x in download(tmp_path).stderr.splitlines() if x.startswith("error: ")]
    assert line == [
        f"error: evaluate.corruption_source: released: no CIFAR-10-C.tar or CIFAR-10-C/ in {tmp_path / 'raw'} "
        "(data.source archive: offline); put the official CIFAR-10-C.tar "
        "(https://zenodo.org/records/2535967/files/CIFAR-10-C.tar) in data.dir"
    ]
    write_params(tmp_path, tiny_params(evaluate__corruption_source="released"))  # the digits stand-in
    line = [x for x in download(tmp_path).stderr.splitlines() if x.startswith("error: ")]
    assert line == [
        "error: evaluate.corruption_source: released needs CIFAR's own test split, not data.source digits; "
        "set evaluate.corruption_source: auto or generated"
    ]


def test_evaluate_scores_the_released_images_and_the_extra_ones_apart(tmp_path):
    """robustness.accuracy with a released manifest: the images the model sees are the arrays' rows of the
    scored test images at each severity; the 4 extra corruptions (here saturate) are scored apart."""
    from types import SimpleNamespace

    from cifarbench.data.transforms import Preprocess
    from cifarbench.eval import robustness
    from cifarbench.models import inference
    from cifarbench.runtime.device import Runtime

    raw_dir, ds = project(tmp_path)
    write_tar(raw_dir / "CIFAR-10-C.tar", release_arrays(ds.test.labels))
    assert download(tmp_path).returncode == 0
    found = manifest(tmp_path)
    labels = torch.from_numpy(ds.test.labels)
    seen = []

    def infer(model, images, preprocess, runtime, batch_size):
        seen.append(images.clone())
        # right exactly where the image came from severity 1 (pixel value below 80)
        right = images[:, 1, 5, 5] < 80
        logits = torch.zeros(len(images), 10)
        logits[
            torch.arange(len(images)), torch.where(right, labels[: len(images)], (labels[: len(images)] + 1) % 10)
        ] = 1
        return logits

    settings = SimpleNamespace(corruptions=["gaussian_noise", "fog"], severities=[1, 3], corruption_images=0)
    rt = Runtime(device=torch.device("cpu"), amp_dtype=None, compile=False)
    images = torch.zeros((20, 3, 32, 32), dtype=torch.uint8)  # never corrupted here: the arrays are used
    original = inference.infer
    inference.infer = infer
    try:
        result, (index, hits) = robustness.accuracy(
            None, images, labels, Preprocess(32, (0.5,) * 3, (0.25,) * 3), rt, 16, settings, 0, released=found
        )
    finally:
        inference.infer = original
    assert result["corruption_source"] == "released"
    assert result["corruptions"] == {"gaussian_noise": {"1": 1.0, "3": 0.0}, "fog": {"1": 1.0, "3": 0.0}}
    assert result["corruption_top1"] == 0.5 and list(hits) == [2] * 20
    assert result["extra_corruptions"] == {"saturate": {"1": 1.0, "3": 0.0}} and result["extra_corruption_top1"] == 0.5
    first = seen[0].permute(0, 2, 3, 1).numpy()  # gaussian_noise at severity 1: the array's rows, test order
    assert list(first[:, 0, 0, 0]) == list(range(20)) and (first[:, 1:] == pixel("gaussian_noise", 1)).all()


def test_auto_downloads_the_release_where_data_dir_lacks_it(tmp_path, monkeypatch):
    """data.source auto: the release is fetched over HTTP (a local server stands in for Zenodo), checked against
    its size and MD5, and used; the download stage's line says so."""
    import dataclasses
    import functools
    import http.server
    import threading
    from types import SimpleNamespace

    from cifarbench.data.sources import download as archives

    raw_dir, ds = project(tmp_path)
    served = tmp_path / "zenodo"
    served.mkdir()
    write_tar(served / "CIFAR-10-C.tar", release_arrays(ds.test.labels))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        release = dataclasses.replace(
            released_c.RELEASES["cifar10"],
            url=f"http://127.0.0.1:{server.server_address[1]}/CIFAR-10-C.tar",
            md5=archives.file_md5(served / "CIFAR-10-C.tar"),
            size=(served / "CIFAR-10-C.tar").stat().st_size,
        )
        monkeypatch.setitem(released_c.RELEASES, "cifar10", release)
        data = SimpleNamespace(source="auto", dir=str(raw_dir), verify=True)
        evaluate = SimpleNamespace(corruption_source="auto", corruptions=["gaussian_noise", "fog"])
        found = released_c.resolve("cifar10", data, evaluate, ds.test.labels, np.arange(20), 20)
    finally:
        server.shutdown()
    assert found["source"] == "released" and found["why"].endswith("(MD5 checked)")
    assert (raw_dir / "CIFAR-10-C.tar").read_bytes() == (served / "CIFAR-10-C.tar").read_bytes()
    assert (released_c.read(found, "fog", 2, [5])[0, 1:] == pixel("fog", 2)).all()
