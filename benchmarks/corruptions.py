"""What the CIFAR-10-C protocol costs: corruption throughput, ours against the per-image reference.

    python benchmarks/corruptions.py [--n 1000] [--archive cifar10-jpeg-train.tar.gz]
                                     [--device cpu|cuda] [--reference-n 200] [--json] [--full]
                                     [--baseline GIT_REV]

Times every corruption at severity 3 on N uint8 32x32 images (random ones, or
the first N CIFAR-10 JPEGs of --archive) with `cifarbench.corruptions.corrupt`
on the device (images already there, as in the pipeline; the clock covers the
call and the device's queue). Prints images per second, the extrapolated
seconds for the full protocol per dataset (10,000 test images x 5 severities x
15 corruptions, each corruption costed at its severity-3 speed), and, where the
`imagecorruptions` package imports, its per-image numpy speed on the first
--reference-n images with the ratio. The reference runs ImageNet-C constants
(it has no CIFAR ones): the same algorithms, larger kernels for the blurs, so
its blur timings are an upper bound on what the CIFAR script costs. Each
timing is the median of --repeats runs after one warm-up run. --full also runs
the whole protocol once (all 75 corruption-severity pairs on the N images, use
--n 10000) and prints the measured seconds. --baseline REV also times
cifarbench/data/corruptions.py as it was at git revision REV, in the same run,
corruption by corruption in turn with ours, and prints ours/baseline speed.
"""

import argparse
import importlib.util
import io
import json
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as a plain script from a checkout

from cifarbench.data import corruptions  # noqa: E402

TEST_IMAGES = 10_000
PROTOCOL_SEVERITIES = len(corruptions.SEVERITIES)


def load_images(archive, count, seed=0):
    """`count` uint8 (N, 32, 32, 3) images: the first JPEGs of a CIFAR archive, or random ones."""
    if archive is None:
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), "random uint8 images"
    images = []
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg"):
                with Image.open(io.BytesIO(tar.extractfile(member).read())) as image:
                    images.append(np.asarray(image.convert("RGB")))
                if len(images) == count:
                    break
    if not images:
        sys.exit(f"error: {archive} holds no .jpg images")
    reps = -(-count // len(images))
    return np.tile(np.stack(images), (reps, 1, 1, 1))[:count], f"CIFAR-10 JPEGs from {Path(archive).name}"


def baseline_module(rev):
    """cifarbench/data/corruptions.py as it was at git revision `rev`, imported as a module of its own."""
    proc = subprocess.run(
        ["git", "show", f"{rev}:cifarbench/data/corruptions.py"], cwd=ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(f"error: --baseline {rev}: {proc.stderr.strip()} (give a revision of this repository)")
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(f"corruptions_at_{rev}", loader=None))
    module.__file__ = str(ROOT / "cifarbench" / "data" / "corruptions.py")  # its frost pictures sit beside it
    exec(compile(proc.stdout, f"{rev}:cifarbench/data/corruptions.py", "exec"), module.__dict__)
    return module


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours(images, name, device, repeats, module=corruptions):
    module.corrupt(images[:64], name, 3, seed=0)  # warm-up: caches, kernels
    _sync(device)
    times = []
    for repeat in range(repeats):
        start = time.perf_counter()
        module.corrupt(images, name, 3, seed=repeat)
        _sync(device)
        times.append(time.perf_counter() - start)
    return images.shape[0] / statistics.median(times)


def time_reference(module, images, name, repeats):
    function = getattr(module, name)
    function(Image.fromarray(images[0]), 3)  # warm-up (numba compiles glass blur's shuffle)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for image in images:
            np.uint8(function(Image.fromarray(image), 3))
        times.append(time.perf_counter() - start)
    return images.shape[0] / statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="images per timing (default 1000)")
    parser.add_argument("--archive", help="CIFAR-10 JPEG .tar.gz (default: random images)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--reference-n", type=int, default=200, help="images for the reference (0: skip it)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--full", action="store_true", help="also time all 75 corruption-severity pairs")
    parser.add_argument("--baseline", metavar="REV", help="also time corruptions.py of this git revision")
    args = parser.parse_args(argv)
    baseline = baseline_module(args.baseline) if args.baseline else None

    device = torch.device(args.device)
    array, source = load_images(args.archive, args.n)
    images = torch.from_numpy(array).permute(0, 3, 1, 2).contiguous().to(device)
    reference = None
    if args.reference_n > 0:
        try:
            import imagecorruptions.corruptions as reference
        except ImportError as error:
            print(f"reference skipped: imagecorruptions does not import ({error})")
    print(
        f"{args.n} {source} on {device} (torch {torch.__version__}, {torch.get_num_threads()} threads), "
        f"severity 3, median of {args.repeats}"
    )
    base_head = f" {args.baseline + ' img/s':>16} {'ours/it':>7}" if baseline else ""
    print(f"{'corruption':<18} {'img/s':>9} {'protocol s':>11} {'ref img/s':>10} {'ratio':>7}{base_head}")
    rows, total, base_total = [], 0.0, 0.0
    for name in corruptions.CORRUPTIONS:
        speed = time_ours(images, name, device, args.repeats)
        protocol = TEST_IMAGES * PROTOCOL_SEVERITIES / speed
        total += protocol
        base_speed = time_ours(images, name, device, args.repeats, baseline) if baseline else None
        base_total += TEST_IMAGES * PROTOCOL_SEVERITIES / base_speed if baseline else 0.0
        ref_speed = None
        if reference is not None:
            ref_speed = time_reference(reference, array[: args.reference_n], name, args.repeats)
        row = {"corruption": name, "img_per_s": speed, "protocol_s": protocol, "reference_img_per_s": ref_speed}
        row["baseline_img_per_s"] = base_speed
        rows.append(row)
        ref_text = f"{ref_speed:10.0f} {speed / ref_speed:6.1f}x" if ref_speed else f"{'-':>10} {'-':>7}"
        base_text = f" {base_speed:16.0f} {speed / base_speed:6.2f}x" if baseline else ""
        print(f"{name:<18} {speed:9.0f} {protocol:11.1f} {ref_text}{base_text}")
    ref_total = sum(TEST_IMAGES * PROTOCOL_SEVERITIES / r["reference_img_per_s"] for r in rows) if reference else None
    print(
        f"full protocol per dataset ({TEST_IMAGES} images x 75): {total:.0f} s of corruption"
        + (f"; the per-image reference: {ref_total:.0f} s" if ref_total else "")
        + (f"; {args.baseline}: {base_total:.0f} s (ours/it {base_total / total:.2f}x speed)" if baseline else "")
    )
    measured = None
    if args.full:
        start = time.perf_counter()
        for name in corruptions.CORRUPTIONS:
            for severity in corruptions.SEVERITIES:
                corruptions.corrupt(images, name, severity, seed=0)
        _sync(device)
        measured = time.perf_counter() - start
        print(
            f"full protocol measured on {args.n} images: {measured:.0f} s "
            f"({measured * TEST_IMAGES / args.n:.0f} s per {TEST_IMAGES} images)"
        )
    if args.json:
        print(
            json.dumps(
                {
                    "device": str(device),
                    "images": args.n,
                    "source": source,
                    "rows": rows,
                    "protocol_s": total,
                    "reference_protocol_s": ref_total,
                    "baseline": args.baseline,
                    "baseline_protocol_s": base_total if baseline else None,
                    "measured_full_s": measured,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
