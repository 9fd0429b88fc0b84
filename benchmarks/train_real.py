"""Train one model through CIFARbench's engine on the real CIFAR-10 JPEG images and report img/s.

    python benchmarks/train_real.py --archive /path/to/cifar10-jpeg-train.tar.gz \
        [--model resnet18] [--img-size 32] [--epochs 3] [--compile] [--json]

The check that the training path works end to end on real images on the
current device (on a GPU: bf16 autocast, channels_last, optionally
torch.compile), without DVC and without downloads: the archive holds only
CIFAR-10's 50,000 training images, so `--val-size` of them (default 5,000,
as params.yaml) are held out for validation and the rest are trained on, with
the model's recipe from params.yaml (`train.<model>`) and random init (no
pretrained weights are fetched). Per epoch it prints what the pipeline logs
(train/val accuracy, seconds, images/s over training plus validation) and the
training-only images/s; `--json` ends with one JSON line of the results.

It also gives what the issue's cost table needs without a full run: the
achieved training FLOP/s (3 x the forward FLOPs of `torch.utils.flop_counter`
per image, forward plus backward, times the steady training img/s), its share
of the card's dense bf16 peak (`--peak-tflops`; known for H100/H200/A100 from
the device name), and the recipe's projected time per dataset (the steady
epoch's seconds, validation included, times params.yaml's train and transfer
epochs for this model).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as a plain script from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import load_images, sync  # noqa: E402

from cifarbench import params as paramslib  # noqa: E402
from cifarbench.data import transforms
from cifarbench.eval import efficiency  # noqa: E402
from cifarbench.models import inference, timm_models
from cifarbench.runtime import device as runtimelib  # noqa: E402
from cifarbench.train import engine


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archive", required=True, help="CIFAR-10 JPEG .tar.gz or extracted train/<class>/ folder")
    parser.add_argument("--model", default="resnet18", help="a model key of params.yaml's registry")
    parser.add_argument("--img-size", type=int, help="default: params.yaml's models.<model>.img_size")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=50000, help="images read from the archive (default all)")
    parser.add_argument("--val-size", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, help="default: the recipe's")
    parser.add_argument("--lr", type=float, help="default: the recipe's")
    parser.add_argument("--device", help="override compute.device")
    parser.add_argument("--precision", help="override compute.precision")
    parser.add_argument("--compile", action="store_true", help="torch.compile the training step")
    parser.add_argument(
        "--peak-tflops", type=float, help="the card's dense bf16 peak in TFLOP/s (default: known for H100, H200, A100)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    params = paramslib.load(ROOT / "params.yaml")
    if args.model not in params.models:
        sys.exit(f"error: --model {args.model!r} is not in params.yaml's models: ({', '.join(params.keys)})")
    overrides = {"device": args.device, "precision": args.precision, "compile": args.compile or None}
    rt = runtimelib.resolve(params.compute.model_copy(update={k: v for k, v in overrides.items() if v is not None}))
    spec = params.model(args.model).model_copy(
        update={"pretrained": False, "img_size": args.img_size or params.model(args.model).img_size}
    )
    recipe = params.recipe("train", args.model).model_copy(
        update={
            "epochs": args.epochs,
            "early_stopping": 0,
            "compile": True,  # --compile (compute.compile) decides here, whatever the recipe's own `compile`
            **({"batch_size": args.batch_size} if args.batch_size else {}),
            **({"lr": args.lr} if args.lr else {}),
        }
    )

    start = time.perf_counter()
    images_np, labels_np, source = load_images(args.archive, args.images, params.seed)
    if source.startswith("random"):
        sys.exit(f"error: {args.archive} not found; pass the CIFAR-10 JPEG archive with --archive")
    decode_seconds = time.perf_counter() - start
    split = np.random.default_rng(params.seed).permutation(len(images_np))
    val, train = split[: args.val_size], split[args.val_size :]
    to = lambda a: torch.from_numpy(a).to(rt.device)  # noqa: E731
    train_x, val_x = transforms.to_tensor(images_np[train], rt.device), transforms.to_tensor(images_np[val], rt.device)
    train_y, val_y = to(labels_np[train]), to(labels_np[val])

    train_flops_per_image = training_flops(spec)
    torch.manual_seed(params.seed)
    model = inference.prepare_model(timm_models.create(spec, num_classes=10), rt)
    preprocess = inference.preprocess_for(model, rt, spec.img_size)
    trainer = engine.Trainer(
        model,
        recipe,
        rt,
        preprocess,
        seed=params.seed,
        eval_batch_size=params.compute.eval_batch_size,
        n_train=len(train),
    )
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    print(
        f"{rt.describe()}, compile={rt.compile}; {source} in {decode_seconds:.0f} s; {args.model} at "
        f"{spec.img_size} px, batch {recipe.batch_size}; {len(train)} train / {len(val)} val images",
        flush=True,
    )
    epochs = []
    while not trainer.finished:  # the engine's own epoch (training.run's loop), with the training pass timed alone
        start = time.perf_counter()
        sync(rt.device)
        train_start = time.perf_counter()
        train_loss, train_acc, seen = trainer.train_epoch(train_x, train_y)  # ends with one .item(): synchronised
        train_seconds = time.perf_counter() - train_start
        val_loss, val_acc = trainer.validate(val_x, val_y)
        trainer.end_epoch(val_acc)
        seconds = time.perf_counter() - start
        result = engine.EpochResult(
            epoch=trainer.epoch,
            train_loss=train_loss,
            train_acc=train_acc,
            val_loss=val_loss,
            val_acc=val_acc,
            lr=trainer.lr,
            seconds=seconds,
            images_per_second=seen / seconds,
            improved=False,
        )
        train_rate = seen / train_seconds
        epochs.append(
            {
                "epoch": result.epoch,
                "train_acc": round(result.train_acc, 4),
                "val_acc": round(result.val_acc, 4),
                "seconds": round(result.seconds, 2),
                "epoch_img_s": round(result.images_per_second),
                "train_img_s": round(train_rate),
            }
        )
        print(
            f"epoch {result.epoch}: train acc {result.train_acc:.3f}, val acc {result.val_acc:.3f}, "
            f"{result.seconds:.1f} s, {result.images_per_second:,.0f} img/s with validation, "
            f"{train_rate:,.0f} img/s training",
            flush=True,
        )
    # the first epoch pays for cuDNN autotuning and compilation: the steady rate is over the rest
    steady = [e["train_img_s"] for e in epochs[1:]] or [epochs[0]["train_img_s"]]
    steady_epoch_s = float(np.median([e["seconds"] for e in epochs[1:]] or [epochs[0]["seconds"]]))
    steady_img_s = float(np.median(steady))
    achieved_tflops = train_flops_per_image * steady_img_s / 1e12
    peak = args.peak_tflops or peak_bf16_tflops(rt.device)
    recipe_epochs = {section: params.recipe(section, args.model).epochs for section in ("train", "transfer")}
    summary = {
        "device": rt.describe(),
        "compile": rt.compile,
        "model": args.model,
        "img_size": spec.img_size,
        "batch_size": recipe.batch_size,
        "best_val_acc": max(e["val_acc"] for e in epochs),
        "steady_train_img_s": round(steady_img_s),
        "steady_epoch_s": float(f"{steady_epoch_s:.3g}"),
        "train_gflops_per_image": round(train_flops_per_image / 1e9, 3),
        # significant figures, not decimals: a slow or busy CPU reaches a few GFLOP/s, which 2 decimals make 0.0
        "achieved_tflops": float(f"{achieved_tflops:.3g}"),
        "share_of_peak": float(f"{achieved_tflops / peak:.3g}") if peak else None,
        # per dataset, at this run's images per epoch (CIFAR-100 has as many training images)
        "projected_recipe_s": {k: round(steady_epoch_s * n) for k, n in recipe_epochs.items()},
        "epochs": epochs,
        "peak_cuda_mem_gb": round(torch.cuda.max_memory_allocated(rt.device) / 2**30, 2)
        if rt.device.type == "cuda"
        else None,
    }
    share = f" = {summary['share_of_peak']:.0%} of the {peak:.0f} TFLOP/s bf16 peak" if peak else ""
    print(
        f"best val acc {summary['best_val_acc']:.3f}; steady training {summary['steady_train_img_s']:,} img/s, "
        f"{achieved_tflops:.1f} TFLOP/s{share}; at {len(train):,} images per epoch, recipe time "
        f"{summary['projected_recipe_s']['train']} s "
        f"(CIFAR-10, {recipe_epochs['train']} epochs) + {summary['projected_recipe_s']['transfer']} s "
        f"(CIFAR-100, {recipe_epochs['transfer']} epochs)"
    )
    if args.json:
        print(json.dumps(summary))


def training_flops(spec):
    """FLOPs of one image's training step: 3 x the forward's (forward + backward), counted on a plain CPU copy
    (the flop counter does not see through torch.compile)."""
    return 3 * efficiency.count_flops(timm_models.create(spec, num_classes=10), (1, 3, spec.img_size, spec.img_size))


# dense (not sparse) bf16 tensor-core peaks from NVIDIA's data sheets; the first name the device's contains
PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H200": 989.0, "H100": 989.0, "A100": 312.0}


def peak_bf16_tflops(device):
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for card, peak in PEAK_BF16_TFLOPS.items() if card in name), None)


if __name__ == "__main__":
    main()
