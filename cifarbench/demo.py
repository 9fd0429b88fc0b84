"""`make demo`: the whole pipeline, offline, on CPU, on the digits stand-in.

The demo is not a second configuration: it is a list of overrides of
params.yaml run as a DVC experiment (`dvc exp run -S key=value ...`), so it
goes through exactly the stages and code of the real benchmark, and shows up in
`dvc exp show`. params.yaml is restored byte for byte afterwards, so the next
`dvc repro` runs the real benchmark (and sees that every stage needs a rerun).

Sizes are chosen for a 2-core laptop: small random-init models at 32 px (no
download of pretrained weights), a few epochs, a few thousand images.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from cifarbench import DATASETS, MODELS, paths

CNN_RECIPE = {
    "optimizer": "sgd", "lr": 0.05, "weight_decay": 5.0e-4, "batch_size": 64, "warmup_epochs": 0,
    "label_smoothing": 0.0, "early_stopping": 3, "plateau_patience": 1,
    "augment.crop_padding": 2, "augment.flip": False,  # digits are not mirror-symmetric
    "augment.jitter": 0.1,
}
RECIPES = {
    "resnet18": CNN_RECIPE,
    "efficientnet_b0": dict(CNN_RECIPE, lr=0.01),  # from random init, higher rates diverge
    "dinov2_vitb14": dict(CNN_RECIPE, optimizer="adamw", lr=2.0e-3, weight_decay=0.05, warmup_epochs=1),
}
EPOCHS = {
    "train": {"resnet18": 6, "efficientnet_b0": 6, "dinov2_vitb14": 10},  # the toy ViT's epochs take seconds
    "transfer": {"resnet18": 3, "efficientnet_b0": 4, "dinov2_vitb14": 6},
}

OVERRIDES = {
    "data.source": "digits",
    "data.limit": 2500,  # 25 two-digit images per class in the cifar100 slot (the cifar10 slot has 1,347)
    "data.val_size": 0.1,
    "compute.device": "cpu",
    "compute.eval_batch_size": 512,
    # random init: pretrained weights cannot be downloaded offline
    **{f"models.{m}.pretrained": False for m in MODELS},
    **{f"models.{m}.img_size": 32 for m in ("resnet18", "efficientnet_b0")},
    # a DINOv2-architecture ViT at toy size: 4 blocks of width 192, 7 px patches on 28 px images
    "models.dinov2_vitb14.img_size": 28,
    "models.dinov2_vitb14.kwargs": {"depth": 4, "embed_dim": 192, "num_heads": 3, "patch_size": 7},
    **{f"{stage}.{m}.{k}": v for stage in EPOCHS for m, recipe in RECIPES.items() for k, v in recipe.items()},
    **{f"{stage}.{m}.epochs": n for stage, per_model in EPOCHS.items() for m, n in per_model.items()},
    "transfer.efficientnet_b0.lr": 0.05,  # from a trained checkpoint it takes (and needs) the higher rate
    "transfer.dinov2_vitb14.freeze_blocks": 2,  # the real run freezes 9 of 12; here 2 of 4
}


def hydra_value(value):
    """A Python scalar in the override grammar `dvc exp run -S` speaks (Hydra's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def set_arguments(overrides):
    """`-S key=value` per override; a dict sets each of its entries (`++` adds keys that are not there yet)."""
    args = []
    for key, value in overrides.items():
        if isinstance(value, dict):
            args += [a for sub, v in value.items() for a in ("-S", f"++{key}.{sub}={hydra_value(v)}")]
        else:
            args += ["-S", f"{key}={hydra_value(value)}"]
    return args


def dvc(*args, check=True):
    return subprocess.run([sys.executable, "-m", "dvc", *args], check=check)


def _print_table(summary):
    print(f"\n{'model':<18}" + "".join(f"{d + ' top-1':>16}" for d in DATASETS))
    for key in MODELS:
        print(f"{key:<18}" + "".join(f"{summary[d][key]['top1']:>16.1%}" for d in DATASETS))


def main():
    if not Path("dvc.yaml").is_file():
        sys.exit("error: run `make demo` from the CIFARbench project root")
    if subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        sys.exit("error: `make demo` runs a DVC experiment, which needs a git clone with at least one commit")
    params = Path("params.yaml")
    original = params.read_bytes()
    start = time.perf_counter()
    try:
        result = dvc("exp", "run", *set_arguments(OVERRIDES), check=False)
    finally:
        if params.read_bytes() != original:
            params.write_bytes(original)  # the next `dvc repro` must run the real benchmark
    minutes = (time.perf_counter() - start) / 60
    if result.returncode != 0:
        sys.exit(f"error: the demo pipeline failed after {minutes:.1f} min (see the stage output above)")
    _print_table(json.loads(paths.SUMMARY.read_text()))
    print(f"\ndemo pipeline finished in {minutes:.1f} min on the digits stand-in (not CIFAR)")
    print(f"report: {paths.REPORT.resolve()} (self-contained: {paths.REPORT_HTML.resolve()})")
    print("params.yaml is unchanged: `dvc repro` now runs the real benchmark; `dvc exp show` lists the demo run")


if __name__ == "__main__":
    main()
