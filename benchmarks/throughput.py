"""How close CIFARbench runs to the hardware's limit: input path, training and evaluation.

    python benchmarks/throughput.py --archive /path/to/cifar10-jpeg-train.tar.gz [--quick] [--json]

For ResNet-18 at 32 px and 224 px and EfficientNet-B0 at 32 px on a CPU, and
every model of the registry at 224 px plus ResNet-18 at 32 px on a GPU (random init:
speed does not depend on the weights), on the current device (params.yaml's
`compute` section; `--device`/`--precision` override it), three pairs of
measurements, in images per second:

- input path: CIFARbench's, exactly what the Trainer does for its input each
  step (`transforms.training_batches`: select the batch from the uint8 images
  on the device, per-image random crop, flip and brightness/contrast jitter,
  resize to img_size, normalise, all as batched tensor ops; on a GPU the work
  before the resize runs per chunk of batches) against a
  torchvision DataLoader with 2 worker processes doing the same work per image
  with PIL (RandomCrop with padding, RandomHorizontalFlip,
  ColorJitter(brightness, contrast), Resize, ToTensor, Normalize) on PIL
  images made from the same uint8 array, as torchvision's CIFAR10 dataset
  does. Both sides end with the same normalised float batch on the device, in
  the model's memory layout (channels_last for CNNs).
- training: one epoch of `engine.Trainer`'s training loop (`train_epoch`: the
  epoch without its validation pass) over N images against the bare
  forward/backward/step loop on tensors already in memory: the same weights,
  optimizer (`engine.build_optimizer`), loss, precision, channels_last and
  batch size, but the batches made and preprocessed before the clock starts.
  The bare loop has NO augmentation (the issue's "bare loop on tensors already
  in memory"): CIFARbench's ratio pays for its own per-step batch selection,
  augmentation, preprocessing and bookkeeping.
- evaluation: `inference.infer` on uint8 images (resize and normalisation
  included) against `model(x)` under inference_mode on pre-made tensors.

Fairness: the same images for both sides; warm-up outside the clock; each
round runs both sides back to back, alternating which goes first; the ratio is
the median of the per-round ratios (slow drift in a shared machine's load
cancels out), throughputs are medians over rounds. The CUDA queue is
synchronised before every clock read. Images come from the CIFAR-10 JPEG
archive (decoded once into a uint8 array) when `--archive` points at it (a
.tar.gz or an extracted train/<class>/*.jpg folder), else random images, which
the output says. Defaults take about 5 minutes on a 2-core CPU (`--quick`: 2-3).
"""

import argparse
import copy
import io
import json
import statistics
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as a plain script from a checkout

from cifarbench import params as paramslib  # noqa: E402
from cifarbench.data import transforms
from cifarbench.models import inference, timm_models
from cifarbench.render import styles
from cifarbench.runtime import device as runtimelib  # noqa: E402
from cifarbench.train import engine  # noqa: E402

CASES = (("resnet18", 32), ("resnet18", 224), ("efficientnet_b0", 32))
# on a GPU, every model of the real benchmark at its real size (ResNet-18 at 32 px stays: the launch-bound case)
GPU_CASES = (("resnet18", 32), ("resnet18", 224), ("efficientnet_b0", 224), ("dinov2_vitb14", 224))
DEFAULT_ARCHIVE = ROOT / "data" / "raw" / "cifar10-jpeg-train.tar.gz"
LOADER_WORKERS = 2


# ---------------------------------------------------------------- images


def _decode(data):
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def load_images(archive, count, seed):
    """`count` CIFAR-10 training images (uint8 NHWC) and labels, spread over the archive; or random ones."""
    archive = Path(archive) if archive else DEFAULT_ARCHIVE
    if not archive.exists():
        rng = np.random.default_rng(seed)
        return (
            rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, count),
            f"random uint8 images ({archive} not found: pass --archive for real CIFAR-10 images)",
        )
    if archive.is_dir():
        files = sorted(archive.glob("**/*.jpg"))
        classes = sorted({f.parent.name for f in files})
        picked = [files[i] for i in _spread(len(files), count)]
        images = [_decode(f.read_bytes()) for f in picked]
        labels = [classes.index(f.parent.name) for f in picked]
    else:
        with tarfile.open(archive) as tar:
            members = sorted(
                (m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")), key=lambda m: m.name
            )
            classes = sorted({Path(m.name).parent.name for m in members})
            picked = [members[i] for i in _spread(len(members), count)]
            picked.sort(key=lambda m: m.offset_data)  # in archive order: a .gz can only seek forward cheaply
            images = [_decode(tar.extractfile(m).read()) for m in picked]
            labels = [classes.index(Path(m.name).parent.name) for m in picked]
    if not images:
        sys.exit(f"error: {archive} holds no train/<class>/*.jpg images")
    reps = -(-count // len(images))  # a small archive is repeated to reach `count`
    return (
        np.tile(np.stack(images), (reps, 1, 1, 1))[:count],
        np.tile(labels, reps)[:count],
        f"CIFAR-10 JPEG images from {archive.name} ({len(images)} decoded)",
    )


def _spread(total, count):
    """`count` indices spread evenly over range(total): every class, not the first folder's images."""
    return np.linspace(0, total - 1, min(count, total)).astype(int)


class PILImages(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: uint8 array → PIL image → transforms."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def pil_loader(images, labels, aug, img_size, mean, std, batch_size, device):
    from torchvision import transforms as T

    steps = [T.RandomCrop(32, padding=aug.crop_padding)] if aug.crop_padding else []
    steps += [T.RandomHorizontalFlip()] if aug.flip else []
    steps += [T.ColorJitter(brightness=aug.jitter, contrast=aug.jitter)] if aug.jitter else []
    steps += [T.Resize(img_size)] if img_size != 32 else []
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return torch.utils.data.DataLoader(
        PILImages(images, labels, T.Compose(steps)),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=LOADER_WORKERS,
        persistent_workers=True,
        pin_memory=device.type == "cuda",
    )


# ---------------------------------------------------------------- the two sides of each comparison


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, images):
    """Images per second of fn()."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return images / (time.perf_counter() - start)


def loader_pass(loader, device, channels_last):
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y.to(device, non_blocking=True)


def cifarbench_input_pass(images, aug, preprocess, batch_size, generator):
    """What engine.Trainer does for its input each step: a shuffled order, then transforms.training_batches."""
    order = torch.randperm(len(images), device=images.device, generator=generator)
    for _ in transforms.training_batches(
        images, order, batch_size, len(images) // batch_size, aug, preprocess, generator
    ):
        pass


def bare_train(model, optimizer, batches, rt, label_smoothing):
    """The limit: forward/backward/step on batches already preprocessed, no augmentation, nothing else."""
    model.train()
    for x, y in batches:
        with rt.autocast():
            loss = F.cross_entropy(model(x).float(), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.inference_mode()
def bare_infer(model, batches, rt):
    model.eval()
    for x in batches:
        with rt.autocast():
            model(x)


def compare(name, baseline, ours, rounds):
    """Run both sides `rounds` times, alternating which goes first; (median baseline, median ours, median ratio)."""
    base, mine = [], []
    for r in range(rounds):
        if r % 2:
            mine.append(ours())
            base.append(baseline())
        else:
            base.append(baseline())
            mine.append(ours())
        print(
            f"  {name} round {r + 1}/{rounds}: baseline {_rate(base[-1])} img/s, CIFARbench {_rate(mine[-1])} img/s",
            file=sys.stderr,
            flush=True,
        )
    return statistics.median(base), statistics.median(mine), statistics.median(m / b for m, b in zip(mine, base))


# ---------------------------------------------------------------- one model at one size


def run_case(key, img_size, params, rt, data, args):
    images_np, labels_np = data
    # ResNet-18 at 224 px is ~50x the work of 32 px: on a CPU, smaller batches and fewer rounds
    big_on_cpu = img_size > 32 and rt.device.type == "cpu"
    spec = params.model(key).model_copy(update={"pretrained": False, "img_size": img_size})  # speed, not accuracy
    batch = args.batch_size or (16 if big_on_cpu else params.recipe("train", key).batch_size)
    # compile as --compile says for every model, whatever the recipe's own `compile` (the bare side does)
    recipe = params.recipe("train", key).model_copy(update={"batch_size": batch, "warmup_epochs": 0, "compile": True})
    rounds = max(3, args.rounds // 2) if big_on_cpu else args.rounds
    torch.manual_seed(params.seed)
    model = inference.prepare_model(timm_models.create(spec, num_classes=10), rt)
    preprocess = inference.preprocess_for(model, rt, img_size)
    images = transforms.to_tensor(images_np, rt.device)
    labels = torch.from_numpy(labels_np).to(rt.device)
    row = {
        "model": key,
        "name": styles.base_name(params.models[key]),
        "img_size": img_size,
        "batch_size": batch,
        "rounds": rounds,
    }

    if "input" in args.parts:
        count = (args.input_images // 8 if img_size > 32 else args.input_images) // batch * batch
        row["input"] = compare_input(
            images_np[:count], labels_np[:count], recipe.augment, preprocess, batch, rt, params.seed, rounds
        )
    # training and evaluation measure the same first n images
    n = train_images(model, images, labels, recipe, preprocess, rt, args)
    row["train_images"] = n
    if "train" in args.parts:
        row["train"] = compare_train(model, images[:n], labels[:n], recipe, preprocess, rt, params.seed, rounds)
    if "eval" in args.parts:
        row["eval"] = compare_eval(model, images[:n], preprocess, rt, params.compute.eval_batch_size, rounds)
    return row


def train_images(model, images, labels, recipe, preprocess, rt, args):
    """Images per training measurement: --steps batches, or as many as take about --seconds on this machine."""
    batch = recipe.batch_size
    if args.steps:
        steps = args.steps
    else:  # time two steps of the bare loop on a throw-away copy (the first one warms up)
        probe = copy.deepcopy(model)
        x = preprocess(images[:batch])
        step = [(x, labels[:batch])]
        optimizer = engine.build_optimizer(probe, recipe)
        bare_train(probe, optimizer, step, rt, recipe.label_smoothing)
        seconds = batch / timed(
            lambda: bare_train(probe, optimizer, step, rt, recipe.label_smoothing), rt.device, batch
        )
        steps = round(args.seconds / seconds)
    return max(1, min(steps, len(images) // batch)) * batch


def compare_input(images_np, labels_np, aug, preprocess, batch, rt, seed, rounds):
    """Both sides turn every image into an augmented, normalised float batch on the device, once per pass."""
    n = len(images_np)
    images = transforms.to_tensor(images_np, rt.device)
    generator = torch.Generator(rt.device).manual_seed(seed)
    loader = pil_loader(
        images_np, labels_np, aug, preprocess.img_size, preprocess.mean, preprocess.std, batch, rt.device
    )

    def ours():
        return timed(lambda: cifarbench_input_pass(images, aug, preprocess, batch, generator), rt.device, n)

    def base():
        return timed(lambda: loader_pass(loader, rt.device, preprocess.channels_last), rt.device, n)

    base(), ours()  # warm-up: worker start-up, allocator
    result = compare("input", base, ours, rounds)
    loader = None  # the last reference: its worker processes stop
    return result


def compare_train(model, images, labels, recipe, preprocess, rt, seed, rounds):
    """An engine.Trainer epoch over the images vs the bare loop over them, pre-made; each side trains its own copy."""
    n, batch = len(images), recipe.batch_size
    bare_model = copy.deepcopy(model)
    trainer = engine.Trainer(model, recipe, rt, preprocess, seed=seed, eval_batch_size=batch, n_train=n)
    optimizer = engine.build_optimizer(bare_model, recipe)
    if rt.compile:  # the limit compiles too, or the comparison would measure the compiler, not the engine
        bare_model = torch.compile(bare_model)
    made = preprocess(transforms.augment(images, recipe.augment, torch.Generator(rt.device).manual_seed(seed)))
    batches = [(made[i : i + batch], labels[i : i + batch]) for i in range(0, n, batch)]

    def ours():
        return timed(lambda: trainer.train_epoch(images, labels), rt.device, n)

    def base():
        return timed(lambda: bare_train(bare_model, optimizer, batches, rt, recipe.label_smoothing), rt.device, n)

    # warm-up, one step each: allocator, oneDNN/cuDNN kernel choice, compile
    trainer.train_epoch(images[:batch], labels[:batch])
    bare_train(bare_model, optimizer, batches[:1], rt, recipe.label_smoothing)
    return compare("train", base, ours, rounds)


def compare_eval(model, images, preprocess, rt, batch, rounds):
    """inference.infer over uint8 images vs model(x) over the same images, preprocessed beforehand."""
    n = len(images)
    made = preprocess(images)
    batches = [made[i : i + batch] for i in range(0, n, batch)]

    def ours():
        return timed(lambda: inference.infer(model, images, preprocess, rt, batch), rt.device, n)

    def base():
        return timed(lambda: bare_infer(model, batches, rt), rt.device, n)

    ours(), base()  # warm-up
    return compare("eval", base, ours, rounds)


# ---------------------------------------------------------------- output


def label(row):
    return f"{row['name']} {row['img_size']} px (batch {row['batch_size']})"


def _rate(images_per_second):
    return f"{images_per_second:,.0f}" if images_per_second >= 100 else f"{images_per_second:.3g}"


def table(rows):
    lines = [
        "| Model | Input: DataLoader+PIL (2 workers) | Input: CIFARbench | Speedup | Train: bare loop | "
        "Train: CIFARbench | Ratio | Eval: bare | Eval: CIFARbench | Ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        cells = [label(row)]
        for part in ("input", "train", "eval"):
            if part not in row:
                cells += ["–"] * 3
                continue
            base, ours, ratio = row[part]
            cells += [_rate(base), _rate(ours), f"{ratio:.1f}×" if part == "input" else f"{ratio:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(rows, device, source, args):
    out = {
        "device": device,
        "compile": args.compiled,
        "torch_threads": torch.get_num_threads(),
        "images": source,
        "rounds": args.rounds,
        "torch": torch.__version__,
    }
    for row in rows:
        suffix = f"{row['img_size']}" if row["model"] == "resnet18" else f"{row['model']}_{row['img_size']}"
        for part, name, digits in (
            ("input", "input_speedup", 2),
            ("train", "train_ratio", 4),
            ("eval", "eval_ratio", 4),
        ):
            if part in row:  # ResNet-18 at 32 px names the targets: input_speedup_32, train_ratio, eval_ratio
                key = f"{name}_{suffix}" if part == "input" or suffix != "32" else name
                out[key] = round(row[part][2], digits)
    return out


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archive", help=f"CIFAR-10 JPEG .tar.gz or extracted folder (default {DEFAULT_ARCHIVE})")
    parser.add_argument("--device", help="override compute.device (auto, cpu, cuda, cuda:N)")
    parser.add_argument("--precision", help="override compute.precision (auto, bf16, fp16, fp32)")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile both training loops, or --no-compile for neither (default: compute.compile, which "
        "compiles on CUDA)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        help="aim for this long per training measurement (default 2; --quick 1): sets the steps from a timed bare step",
    )
    parser.add_argument("--steps", type=int, help="training steps per measurement, instead of --seconds")
    parser.add_argument(
        "--rounds",
        type=int,
        help="measurements per side, median taken (default 7; halved, at least 3, for 224 px on CPU)",
    )
    parser.add_argument("--batch-size", type=int, help="default: the train recipe's (16 for 224 px on CPU)")
    parser.add_argument(
        "--input-images",
        type=int,
        help="images per input-path pass at 32 px (default 2048 on CPU, 16384 on CUDA; 1/8 of it at 224 px)",
    )
    parser.add_argument(
        "--only",
        choices=sorted({f"{k}@{s}" for k, s in CASES + GPU_CASES}),
        action="append",
        help="run only these cases (repeatable; default: the CPU's or the GPU's list)",
    )
    parser.add_argument("--parts", default="input,train,eval", help="comma-separated subset of input,train,eval")
    parser.add_argument("--quick", action="store_true", help="fewer steps, rounds and images (about half the time)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the ratios")
    args = parser.parse_args()
    args.parts = set(args.parts.split(","))

    params = paramslib.load(ROOT / "params.yaml")
    compute = params.compute.model_copy(
        update={
            k: v
            for k, v in (("device", args.device), ("precision", args.precision), ("compile", args.compile))
            if v is not None
        }
    )
    rt = runtimelib.resolve(compute)
    cuda, args.compiled = rt.device.type == "cuda", rt.compile
    args.seconds = args.seconds or (1.0 if args.quick else 2.0)
    args.rounds = args.rounds or (5 if args.quick else 7)
    args.input_images = args.input_images or (1024 if args.quick else 2048) * (8 if cuda else 1)
    needed = max(args.input_images, (args.steps or 1) * (args.batch_size or 128), 16384 if cuda else 4096)
    images, labels, source = load_images(args.archive, needed, params.seed)
    device = rt.describe()
    print(f"device: {device}, compile={rt.compile}; torch {torch.__version__}; {source}", file=sys.stderr, flush=True)

    rows = []
    cases = [(c.split("@")[0], int(c.split("@")[1])) for c in args.only] if args.only else GPU_CASES if cuda else CASES
    for key, size in cases:
        print(f"{key} at {size} px", file=sys.stderr, flush=True)
        rows.append(run_case(key, size, params, rt, (images, labels), args))
    print(
        f"\nThroughput in images/s on {device}; {source}; medians of interleaved rounds "
        f"({', '.join(str(r['rounds']) for r in rows)})"
    )
    print(table(rows))
    if args.json:
        print(json.dumps(summary(rows, device, source, args)))


if __name__ == "__main__":
    main()
