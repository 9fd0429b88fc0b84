"""`cifarbench predict`: any image file, evaluate's preprocessing, one-line errors."""

import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import dump, tiny_params
from PIL import Image

from cifarbench import cli, params
from cifarbench.commands import predict
from cifarbench.data import transforms
from cifarbench.models import checkpoint, inference, timm_models
from cifarbench.runtime import device as runtimelib

CLASSES = [f"class{i}" for i in range(10)]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder holding a tiny ResNet-18 checkpoint (seed 0), as the pipeline writes it."""
    root = tmp_path_factory.mktemp("project")
    raw = tiny_params()
    (root / "params.yaml").write_text(dump(raw))
    p = params.parse(raw)
    spec = p.model("resnet18")
    torch.manual_seed(0)
    model = timm_models.create(spec, num_classes=10, key="resnet18")
    checkpoint.save(
        root / "models" / "cifar10" / "resnet18-0.pt",
        model,
        key="resnet18",
        spec=spec,
        dataset="cifar10",
        classes=CLASSES,
        coarse_classes=None,
        image_size=(32, 32),
        epoch=1,
        val_acc=0.1,
    )
    return root


def images_32(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def reference_probabilities(root, images):
    """What evaluate computes for uint8 (N, 32, 32, 3) images."""
    rt = runtimelib.resolve(params.parse(tiny_params()).compute)
    model, preprocess, _ = inference.load(root / "models" / "cifar10" / "resnet18-0.pt", rt)
    logits = inference.infer(model, transforms.to_tensor(images, rt.device), preprocess, rt, 512)
    return torch.softmax(logits.double(), dim=1).numpy()


def run_cli(capsys, *args):
    try:
        code = cli.main(list(args))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_gives_evaluates_probabilities_for_a_folder(project, monkeypatch, capsys):
    images = images_32(6)
    folder = project / "pngs"
    folder.mkdir(exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image, and not an image extension: skipped in a folder")
    monkeypatch.chdir(project)
    code, out, err = run_cli(
        capsys, "predict", "pngs", "--model", "resnet18", "--dataset", "cifar10", "--json", "--topk", "3"
    )
    assert code == 0 and err == ""
    results = json.loads(out)
    assert [Path(r["path"]).name for r in results] == [f"{i}.png" for i in range(6)]
    expected = reference_probabilities(project, images)
    for result, probs in zip(results, expected):
        top = np.argsort(-probs)[:3]
        assert [t["index"] for t in result["top"]] == top.tolist()
        assert [t["class"] for t in result["top"]] == [CLASSES[i] for i in top]
        assert [t["probability"] for t in result["top"]] == pytest.approx(probs[top].tolist(), abs=1e-6)


def test_text_output_lists_topk_classes_with_probabilities(project, monkeypatch, capsys):
    Image.fromarray(images_32(1)[0]).save(project / "one.png")
    monkeypatch.chdir(project)
    code, out, _ = run_cli(capsys, "predict", "one.png", "--model", "resnet18", "--dataset", "cifar10")
    lines = out.splitlines()
    assert code == 0 and lines[0] == "one.png" and len(lines) == 6  # path, then the top 5
    assert lines[1].lstrip().startswith("1. class") and lines[1].endswith("%")


def test_any_mode_and_size_becomes_32px_rgb(tmp_path):
    rgb = images_32(1)[0]
    cases = {
        "rgb.png": Image.fromarray(rgb),
        "grey.png": Image.fromarray(rgb[..., 0]),
        "palette.gif": Image.fromarray(rgb).quantize(16),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full((32, 32), 255, np.uint8)])),
        "grey16.png": Image.fromarray(rgb[..., 0].astype(np.uint16) * 257),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "large.jpg": Image.fromarray(rgb).resize((640, 480)),
        "tiny.bmp": Image.fromarray(rgb).resize((5, 9)),
        "mono.png": Image.fromarray(rgb[..., 0]).convert("1"),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
        out = predict.load_image(tmp_path / name, (32, 32))
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8, name
    assert (predict.load_image(tmp_path / "rgb.png", (32, 32)) == rgb).all()  # native size: pixel for pixel
    assert (predict.load_image(tmp_path / "rgba.png", (32, 32)) == rgb).all()  # opaque alpha changes nothing
    grey = predict.load_image(tmp_path / "grey.png", (32, 32))
    assert (grey == rgb[..., :1]).all()  # grey repeated in R, G and B
    assert (predict.load_image(tmp_path / "grey16.png", (32, 32)) == grey).all()  # 16-bit scaled to 8


def test_transparency_is_composited_onto_white(tmp_path):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 200  # red everywhere, hidden where alpha is 0
    rgba[:16, :, 3] = 255  # top half opaque, bottom half transparent
    rgba[16:24, :, 3] = 0
    rgba[24:, :, 3] = 128  # half transparent: half way to white
    Image.fromarray(rgba).save(tmp_path / "a.png")
    out = predict.load_image(tmp_path / "a.png", (32, 32)).astype(int)
    assert (out[:16] == [200, 0, 0]).all()
    assert (out[16:24] == 255).all()
    assert np.abs(out[24:] - [228, 127, 127]).max() <= 1  # 200*a + 255*(1-a), 255*(1-a) with a = 128/255

    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.putpixel((0, 0), 1)
    palette.info["transparency"] = 0  # palette entry 0 is transparent
    palette.save(tmp_path / "p.png", transparency=0)
    out = predict.load_image(tmp_path / "p.png", (8, 8))
    assert (out[0, 0] == [10, 20, 30]).all() and (out[1:, :] == 255).all()


def test_non_square_images_are_centre_cropped(tmp_path):
    wide = np.zeros((32, 96, 3), np.uint8)
    wide[:, 32:64] = 255  # the centre square is white, the sides black
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert (predict.load_image(tmp_path / "wide.png", (32, 32)) == 255).all()


def png_header_only(path, width, height):
    """A PNG that claims width x height pixels with almost no data: a decompression bomb's header."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def test_bad_inputs_are_one_line_errors(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    Image.fromarray(images_32(1)[0]).save(project / "ok.png")
    (project / "text.png").write_text("hello, I am not a picture")
    full = (project / "ok.png").read_bytes()
    (project / "truncated.png").write_bytes(full[: len(full) // 2])
    png_header_only(project / "bomb.png", 100_000, 100_000)  # 10 gigapixels
    cases = {
        ("text.png",): "not an image file",
        ("truncated.png",): "cannot read the image (image file is truncated",
        ("bomb.png",): "could be decompression bomb",
        ("missing.png",): "no such file or folder",
        ("models",): "no image files in this folder",
    }
    for paths, message in cases.items():
        start = time.perf_counter()
        code, out, err = run_cli(capsys, "predict", *paths, "--model", "resnet18", "--dataset", "cifar10")
        assert code == 2 and out == "", paths
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
        assert time.perf_counter() - start < 10, paths  # the bomb is refused from its header, not decoded
    code, _, err = run_cli(capsys, "predict", "ok.png", "--model", "resnet18", "--dataset", "cifar100")
    assert code == 2 and err.count("\n") == 1 and "checkpoint models/cifar100/resnet18-0.pt not found" in err
    code, _, err = run_cli(capsys, "predict", "ok.png", "--model", "vgg16", "--dataset", "cifar10")
    assert code == 2 and err.count("\n") == 1 and "--model: unknown model 'vgg16'; params.yaml's models: has" in err
    code, _, err = run_cli(capsys, "predict", "ok.png", "--model", "resnet18", "--dataset", "cifar10", "--seed", "3")
    assert code == 2 and err.count("\n") == 1 and "--seed: 3 is not one of params.yaml's seeds [0]" in err
    code, _, err = run_cli(capsys, "predict", "ok.png", "--model", "resnet18", "--dataset", "cifar10", "--topk", "0")
    assert code == 2 and err.count("\n") == 1 and "--topk" in err


def test_console_script_reports_errors_without_traceback(project):
    script = Path(sys.executable).parent / "cifarbench"
    assert script.is_file(), "the package installs a `cifarbench` console script"
    (project / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a complete JPEG")
    proc = subprocess.run(
        [str(script), "predict", "garbage.jpg", "--model", "resnet18", "--dataset", "cifar10"],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: garbage.jpg: ") and proc.stderr.count("\n") == 1, proc.stderr
