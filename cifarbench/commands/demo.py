"""`make demo`: the whole pipeline, offline, on CPU, on the digits stand-in.

The demo is not a second configuration: it is a list of overrides of
params.yaml run as a DVC experiment (`dvc exp run -S key=value ...`), so it
goes through exactly the stages and code of the real benchmark, and shows up in
`dvc exp show`. params.yaml is restored byte for byte afterwards, so the next
`dvc repro` runs the real benchmark (and sees that every stage needs a rerun).

Sizes are chosen for a 2-core laptop per model family, not per model: every
model in the registry is built from random init (pretrained weights cannot be
downloaded offline), CNNs at 32 px, ViTs shrunk to 4 blocks on 28 px images,
with a recipe per family and a few epochs on a few thousand images. A model
added to params.yaml's registry is in the demo with no edit here.
"""

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

from cifarbench import params as paramslib
from cifarbench import paths
from cifarbench.errors import BenchError
from cifarbench.models import timm_models
from cifarbench.paths import DATASETS
from cifarbench.render import styles

# per family: the model's size, and the recipe that converges from random init in a few epochs
SIZES = {
    "cnn": {"img_size": 32},
    # a toy ViT of the model's own architecture: 4 blocks of width 192, 7 px patches on 28 px images
    "vit": {"img_size": 28, "kwargs": {"depth": 4, "embed_dim": 192, "num_heads": 3, "patch_size": 7}},
}
COMMON_RECIPE = {
    "batch_size": 64,
    "label_smoothing": 0.0,
    "layer_decay": None,
    "schedule": "cosine",
    "warmup_lr": 1.0e-4,
    "min_lr": 1.0e-5,
    "early_stopping": 0,
    "augment.crop_padding": 2,
    "augment.flip": False,  # digits are not mirror-symmetric
    "augment.jitter": 0.1,
}
RECIPES = {
    # from random init, BatchNorm CNNs need a low rate and no warm-up: at 0.05 per 64 images, or with
    # the cosine decay starting after a warm-up epoch, EfficientNet-B0 is still at 55-70 % when 6 epochs
    # end. Batches of 128 (lr 0.02, the same rate per image as 0.01 at 64) run 25-60 % more images/s
    # on 2 CPU cores than 64: the 32 px steps are too small to keep both cores busy
    "cnn": {
        **COMMON_RECIPE,
        "optimizer": "sgd",
        "batch_size": 128,
        "lr": 0.02,
        "momentum": 0.9,
        "weight_decay": 5.0e-4,
        "warmup_epochs": 0,
    },
    "vit": {**COMMON_RECIPE, "optimizer": "adamw", "lr": 2.0e-3, "weight_decay": 0.05, "warmup_epochs": 1},
}
# from a trained CIFAR-10 checkpoint the CNNs take (and need) a higher rate: 0.1 per 128 images (ResNet-18
# ends its 5 epochs at 94 % validation accuracy on the 100-class slot, against 89 % at 0.05)
TRANSFER_CHANGES = {"cnn": {"lr": 0.1}, "vit": {}}
# at 32 px an epoch takes seconds; the toy ViT needs its 10 + 6 (at 8 + 5 it ends 16 points lower on the 10 digits)
EPOCHS = {"train": {"cnn": 10, "vit": 10}, "transfer": {"cnn": 5, "vit": 6}}
VIT_FROZEN_BLOCKS = 2  # of the toy's 4, where the real recipe freezes some (DINOv2: 9 of 12)

DATA = {
    "data.source": "digits",
    "data.limit": 2500,  # 25 two-digit images per class in the cifar100 slot (the cifar10 slot has 1,347)
    "data.val_size": 0.1,
    "compute.device": "cpu",
    "compute.eval_batch_size": 512,
    # one corruption of each CIFAR-10-C family (noise, blur, weather, digital) at three severities; the
    # report says which it ran
    "evaluate.corruptions": ["gaussian_noise", "motion_blur", "fog", "jpeg_compression"],
    "evaluate.severities": [1, 3, 5],
    "evaluate.corruption_images": 300,
    "evaluate.timing_seconds": 0.5,  # a CPU's img/s and latency at demo size settle within half a second
    # the CIFAR-100 slot has ~22 training images per class. Two C values two decades apart, two draws
    # and lbfgs stopped at scikit-learn's default tolerance keep a 100-class probe stage near 20 s (five
    # C values: 18-52 s; the committed settings: 4-6 minutes each on 2 cores; the demo's probes are
    # marked as such in its report)
    "probe.shots": [1, 2, 5, 10],
    "probe.draws": 2,
    "probe.c_grid": [1.0e-2, 1.0],
    "probe.tol": 1.0e-4,
    # every demo-size fit stops at the cap either way (100-class, up to 1,280 features): 50 iterations
    # halve the probes' time, and the report marks the fits unconverged, as it did at 100
    "probe.max_iter": 50,
}


def family_overrides(key, family, transfer_frozen):
    """Every override that makes model `key` (of `family`) a demo-sized random-init model with its family's recipe."""
    out = {f"models.{key}.pretrained": False}
    out.update({f"models.{key}.{k}": v for k, v in SIZES[family].items()})
    for section in ("train", "transfer"):
        out.update({f"{section}.{key}.{k}": v for k, v in RECIPES[family].items()})
        out[f"{section}.{key}.epochs"] = EPOCHS[section][family]
    out.update({f"transfer.{key}.{k}": v for k, v in TRANSFER_CHANGES[family].items()})
    out[f"transfer.{key}.freeze_blocks"] = VIT_FROZEN_BLOCKS if family == "vit" and transfer_frozen else 0
    return out


def overrides(params):
    """The demo's overrides of these params: the data and compute settings, then each model by its family."""
    out = dict(DATA)
    for key in params.keys:
        family = timm_models.family(timm_models.structure(params.model(key)))
        out.update(family_overrides(key, family, params.recipe("transfer", key).freeze_blocks > 0))
    return out


def set_dotted(raw, key, value):
    """Set `a.b.c` in nested dicts in place, as `dvc exp run -S ++a.b.c=value` sets set_arguments' list:
    missing levels are made, and a dict value sets each of its entries (merging into what is there)."""
    if isinstance(value, dict) and value:
        for sub, item in value.items():
            set_dotted(raw, f"{key}.{sub}", item)
        return
    node = raw
    *parents, last = key.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = copy.deepcopy(value)


def apply(raw, overrides_):
    """A copy of a raw params mapping with these overrides set: what the demo's `-S` list makes of it."""
    raw = copy.deepcopy(raw)
    for key, value in overrides_.items():
        set_dotted(raw, key, value)
    return raw


def hydra_value(value):
    """A Python value in the override grammar `dvc exp run -S` speaks (Hydra's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    return str(value)


def set_arguments(overrides_):
    """`-S ++key=value` per override (`++` sets a key whether or not params.yaml has it yet);
    a dict sets each of its entries."""
    args = []
    for key, value in overrides_.items():
        items = {f"{key}.{sub}": v for sub, v in value.items()} if isinstance(value, dict) else {key: value}
        args += [a for k, v in items.items() for a in ("-S", f"++{k}={hydra_value(v)}")]
    return args


def dvc(*args, check=True):
    return subprocess.run([sys.executable, "-m", "dvc", *args], check=check)


def _print_table(summary, names):
    width = max(len(n) for n in names.values()) + 2
    print(f"\n{'model':<{width}}" + "".join(f"{styles.dataset_name(d) + ' top-1':>16}" for d in DATASETS))
    for key, name in names.items():
        print(f"{name:<{width}}" + "".join(f"{summary[d][key]['top1']:>16.1%}" for d in DATASETS))


def main():
    if not Path("dvc.yaml").is_file():
        sys.exit("error: run `make demo` from the CIFARbench project root")
    if subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        sys.exit("error: `make demo` runs a DVC experiment, which needs a git clone with at least one commit")
    try:
        params = paramslib.load()
        demo = overrides(params)
    except (paramslib.ParamsError, BenchError) as exc:
        sys.exit(f"error: {exc}")
    params_file = Path("params.yaml")
    original = params_file.read_bytes()
    start = time.perf_counter()
    try:
        result = dvc("exp", "run", *set_arguments(demo), check=False)
        demo_params = paramslib.load()
    finally:
        if params_file.read_bytes() != original:
            params_file.write_bytes(original)  # the next `dvc repro` must run the real benchmark
    minutes = (time.perf_counter() - start) / 60
    if result.returncode != 0:
        sys.exit(f"error: the demo pipeline failed after {minutes:.1f} min (see the stage output above)")
    _print_table(json.loads(paths.SUMMARY.read_text()), styles.names(demo_params))
    print(f"\ndemo pipeline finished in {minutes:.1f} min on the digits stand-in (not CIFAR)")
    print(f"report: {paths.REPORT.resolve()} (self-contained: {paths.REPORT_HTML.resolve()})")
    print("params.yaml is unchanged: `dvc repro` now runs the real benchmark; `dvc exp show` lists the demo run")


if __name__ == "__main__":
    main()
