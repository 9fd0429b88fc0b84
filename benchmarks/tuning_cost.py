"""What equal-budget tuning costs against one training, at demo size (or any params), per model and stage.

    python benchmarks/tuning_cost.py [--models resnet18,dinov2_vitb14] [--lr-scale 0.3,1,3] [--epochs 3]
                                     [--stage train-cifar10|both] [--demo|--no-demo] [--keep DIR]

In a scratch copy of params.yaml (the demo's overrides on top unless --no-demo, tuning turned on
with the given grid and epochs per trial), runs the stages as `dvc repro` would, one process each:
download, recipes, then per model tune-cifar10 and train-cifar10 (and, with --stage both,
tune-cifar100 and transfer-cifar100). Prints each stage's wall-clock seconds, the tuning's
seconds against its training's (the ratio, in the same run on the same machine), and the chosen
lr with every trial's validation top-1, read from metrics/tune/<stage>/<model>.json. Process
start-up (imports) is in both sides, as it is under `dvc repro`.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as a plain script from a checkout

from cifarbench import params as paramslib  # noqa: E402
from cifarbench import paths  # noqa: E402
from cifarbench.commands import demo  # noqa: E402


def numbers(text):
    return [float(v) for v in text.split(",")]


def stage(folder, script, *args):
    """One stage as its own process in `folder`: its seconds; stops the benchmark with its output if it fails."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / script), *args], cwd=folder, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{script} {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated model keys (default: every model in params.yaml)")
    parser.add_argument("--lr-scale", type=numbers, default=[0.3, 1.0, 3.0])
    parser.add_argument("--epochs", type=int, default=3, help="each trial's epochs (tune.epochs)")
    parser.add_argument("--stage", choices=("train-cifar10", "both"), default="train-cifar10")
    parser.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()

    raw = paramslib.read_yaml(ROOT / "params.yaml")
    if args.demo:
        raw = demo.apply(raw, demo.overrides(paramslib.parse(raw)))
    raw = demo.apply(raw, {"tune.enabled": True, "tune.lr_scale": args.lr_scale, "tune.epochs": args.epochs})
    keys = args.models.split(",") if args.models else list(raw["models"])
    for key in [k for k in raw["models"] if k not in keys]:
        del raw["models"][key]
        for section in ("train", "transfer"):
            raw[section].pop(key, None)
    p = paramslib.parse(raw)  # a bad option stops here, in one line
    folder = args.keep or Path(tempfile.mkdtemp(prefix="tuning-cost-"))
    folder.mkdir(parents=True, exist_ok=True)
    from ruamel.yaml import YAML

    with open(folder / "params.yaml", "w") as f:
        YAML(typ="safe").dump(raw, f)
    datasets = ["cifar10"] if args.stage == "train-cifar10" else ["cifar10", "cifar100"]
    for ds in datasets:
        stage(folder, "download.py", ds)
    stage(folder, "recipes.py")
    print(f"{len(args.lr_scale)} trials x {args.epochs} epochs per model and stage; seconds per stage process")
    print(
        f"{'model':<16} {'stage':<18} {'tuning s':>9} {'training s':>11} {'ratio':>6}  chosen lr (val top-1 per trial)"
    )
    for key in keys:
        for ds in datasets:
            train_stage = paths.TRAIN_STAGE[ds]
            tuning = stage(folder, "tune.py", key, ds)
            script = "train_cifar10.py" if ds == "cifar10" else "transfer_cifar100.py"
            training = stage(folder, script, key, str(p.seeds[0]))
            record = json.loads((folder / paths.tuning(train_stage, key)).read_text())
            trials = ", ".join(f"x{t['lr_scale']:g}: {t['val_top1']:.3f}" for t in record["trials"])
            epochs = p.recipe(tune_section(train_stage), key).epochs
            print(
                f"{key:<16} {train_stage:<18} {tuning:>9.1f} {training:>11.1f} {tuning / training:>6.2f}  "
                f"{record['chosen']['lr']:.3g} ({trials}); training: {epochs} epochs"
            )
    if not args.keep:
        shutil.rmtree(folder)


def tune_section(train_stage):
    return {"train-cifar10": "train", "transfer-cifar100": "transfer"}[train_stage]


if __name__ == "__main__":
    main()
