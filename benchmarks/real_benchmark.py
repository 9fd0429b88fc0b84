"""What `dvc repro` of the real benchmark costs on this machine's device, stage by stage, measured in one run.

    python benchmarks/real_benchmark.py --archive /path/to/cifar10-jpeg-train.tar.gz [--device D] [--images N]
        [--epochs E] [--img-size S] [--corruption-images N] [--models K,...] [--stages S,...]
        [--datasets D,...] [--budget SECONDS] [--params PATH] [--workdir DIR] [--json]

Every stage's own work runs in this process: each stage script's `main` (stages/*.py, the
function `dvc repro` runs after the process starts) on a Stage built from params.yaml, in an
order `dvc repro` may use: the recipes, then one model's chain after the other (train-cifar10,
transfer-cifar100, evaluate with the CIFAR-10-C protocol as params.yaml sets it, embed, probe),
then the report, in a scratch project folder (`--workdir`, default a temporary one).

What differs from the real run, and why the cost does not:
- weights: random init (`pretrained: false`); nothing can be downloaded here, and the
  arithmetic does not depend on the weights' values (the probes' lbfgs iterations may);
- data: `--images` CIFAR-10 training JPEGs from `--archive` (a .tar.gz or a folder of
  train/<class>/*.jpg; default 12,500, a quarter of CIFAR's 50,000): a tenth is the
  validation split, the rest the training split, and a test split of a fifth as many
  (2,500; CIFAR's 10,000 of 50,000) is drawn from the same images. CIFAR-100, which is not
  at hand, is the same images under 100 labels (10 per CIFAR-10 class, CIFAR-100's names and
  superclasses): the cost depends on the sizes, not on the pictures;
- training: `--epochs` (default 1) per stage instead of the recipe's; a training stage's
  projection is its measured time plus its steady epoch (the steps after the first fifth of
  the first epoch, clocked every 25 optimizer steps, and a second pass of its validation)
  times the recipe's remaining epochs;
- sizes: every stage but the report is projected to CIFAR's sizes in proportion to the images
  (an epoch, an inference pass, a full-size probe's lbfgs iterations and the UMAP all grow
  about linearly), less what does not grow with them, timed apart by wrapping the functions
  that do it: evaluate's efficiency measure, each stage's figures, the few-shot probes (k
  images per class whatever the dataset). `--corruption-images N` scores CIFAR-10-C on N test
  images (all 15 corruptions x 5 severities) and projects the rest; `--images 50000` measures
  every stage at its real size. `--img-size` sets every model's input size, a size a model
  cannot take (32 for a patch-14 ViT) rounded to the nearest it can;
- `--stages` and `--datasets` run some stages only; a checkpoint that no selected training
  stage writes is saved from random init first.
Every projection also adds a process start (Python, torch, timm, the device's first use),
measured once in a fresh process here; DVC's own bookkeeping (about half a second per stage)
is not counted. torch.compile's caches are reset between stages, as a new process starts
without them (its on-disk cache stays, as it does between `dvc repro`'s stages). A stage's
peak GPU memory is its own: what earlier stages still hold when it starts is collected or
subtracted.

On one H200 the defaults' stages took about 13 minutes in all by the stages measured there
(docs/performance.md, "Cost"; EfficientNet-B0 compiled then, and now trains eagerly, which by
those numbers takes about 2.5 minutes off): compilation does not shrink with the images, so a
lent GPU's 10-minute call needs `--budget` (no stage starts after it; the rest are listed as not
run) or `--models`/`--stages` to split the work.

Prints a table (stage, model, dataset, measured seconds, projected seconds) and the projected
total; `--json` ends with one JSON line: {"device", "stages": [{"stage", "model", "dataset",
"seconds", "projected_seconds", "peak_memory_mb", ...}, ...], "projected_total_s", "complete",
...}. The exit status is 1 when a stage failed or was not run.
"""

import argparse
import contextlib
import copy
import functools
import gc
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # runnable as a plain script from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import load_images, sync  # noqa: E402
from train_real import peak_bf16_tflops, training_flops  # noqa: E402

from cifarbench import params as paramslib  # noqa: E402
from cifarbench import paths  # noqa: E402
from cifarbench.data import dataset  # noqa: E402
from cifarbench.data.sources import released_c  # noqa: E402
from cifarbench.data.sources.cifar_names import (  # noqa: E402
    CIFAR100_COARSE_CLASSES,
    CIFAR100_FINE_CLASSES,
    CIFAR100_FINE_TO_COARSE,
)
from cifarbench.eval import linear_probe, robustness  # noqa: E402
from cifarbench.models import checkpoint, timm_models  # noqa: E402
from cifarbench.pipeline import embed, entry, evaluate, tuned  # noqa: E402
from cifarbench.render import figures  # noqa: E402
from cifarbench.runtime import device as runtimelib  # noqa: E402
from cifarbench.runtime import memory  # noqa: E402
from cifarbench.train import engine  # noqa: E402

CIFAR_TRAIN_IMAGES = 50000  # per dataset, validation included; the test split is a fifth as many
DEFAULT_IMAGES = 12500  # a quarter: every stage but compilation a quarter as long as at CIFAR's size
VAL_SHARE, TEST_SHARE = 0.1, 0.2  # params.yaml's data.val_size (5,000 of 50,000); 10,000 test images
SYNC_EVERY = 25  # training steps between the clock readings that time the steady state
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# ---------------------------------------------------------------- params and data


def rounded_size(spec, size):
    """The nearest input size the model takes: a multiple of a ViT's patch, anything for a CNN."""
    patch = timm_models.patch_size(timm_models.structure(spec.model_copy(update={"img_size": 224})))
    return max(patch, round(size / patch) * patch) if patch else size


def benchmark_params(raw, args, per_class, keys):
    """params.yaml as the benchmark runs it: the models of `keys` in that order, random init, --epochs per
    training stage, --device, --img-size."""
    raw = copy.deepcopy(raw)
    raw["models"] = {key: raw["models"][key] for key in keys}
    for section in ("train", "transfer"):
        raw[section] = {k: v for k, v in raw[section].items() if k == paramslib.DEFAULTS or k in keys}
    parsed = paramslib.parse(raw)
    if args.device:
        raw["compute"]["device"] = args.device
    for key in parsed.keys:
        entry_ = raw["models"][key]
        entry_["pretrained"] = False
        if args.img_size:
            entry_["img_size"] = rounded_size(parsed.model(key), args.img_size)
        for section in ("train", "transfer"):
            warmup = parsed.recipe(section, key).warmup_epochs
            raw[section].setdefault(key, {}).update(
                epochs=args.epochs, warmup_epochs=min(warmup, args.epochs - 1), early_stopping=0
            )
    # a few-shot draw needs that many training images per class (at small --images, 100 classes have few)
    shots = [k for k in parsed.probe.shots if k <= per_class] or [1]
    raw["probe"]["shots"] = shots
    return raw


def stand_in_data(images, labels, seed):
    """(cifar10, cifar100) Datasets of the same images: CIFAR-10's labels, and 100 labels, 10 per CIFAR-10 class."""
    n = len(images)
    n_test = max(1, round(n * TEST_SHARE))
    test = np.random.default_rng(seed).permutation(n)[:n_test]  # drawn from the same pool: content does not matter
    rank = np.zeros(n, dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        rank[where] = np.arange(len(where))
    fine = labels * 10 + rank % 10
    coarse = np.asarray(CIFAR100_FINE_TO_COARSE)[fine]
    cifar10 = dataset.Dataset(
        "cifar10",
        "CIFAR-10 JPEG training images (benchmark stand-in)",
        list(CIFAR10_CLASSES),
        dataset.Split(images, labels),
        dataset.Split(images[test], labels[test]),
    )
    cifar100 = dataset.Dataset(
        "cifar100",
        "CIFAR-10 JPEG training images under 100 labels (benchmark stand-in)",
        list(CIFAR100_FINE_CLASSES),
        dataset.Split(images, fine, coarse),
        dataset.Split(images[test], fine[test], coarse[test]),
        coarse_classes=list(CIFAR100_COARSE_CLASSES),
    )
    return cifar10, cifar100


def write_data(datasets, val_count, seed):
    for ds in datasets:
        splits = dataset.prepare(ds, 0, val_count, seed)
        dataset.save(ds, splits, paths.data_dir(ds.name))
        # JPEG stand-ins are not CIFAR's test split: generated corruptions, as the download stage would choose
        why = "benchmark stand-in images, not CIFAR's test split"
        released_c.write(
            {"set": released_c.RELEASES[ds.name].name, "source": "generated", "why": why}, paths.data_dir(ds.name)
        )


# ---------------------------------------------------------------- timing


class TrainingClock:
    """Times the engine's training passes and validations (Trainer.train_epoch and validate, wrapped: the same
    functions, the device synchronised around them), and reads the clock after the first optimizer step of a
    stage's first pass and every SYNC_EVERY steps, for the steady rate after compilation and autotuning."""

    def __init__(self, device):
        self.device, self.counting = device, False
        self.originals = engine.Trainer.train_epoch, engine.Trainer.validate
        engine.Trainer.train_epoch = self._timed(self.originals[0], "passes")
        engine.Trainer.validate = self._timed(self.originals[1], "validations")
        self.handle = register_optimizer_step_post_hook(self._after_step)
        self.reset()

    def reset(self):
        self.passes, self.validations, self.readings, self.count = [], [], [], 0
        self.again, self.extra_seconds = None, 0.0  # a second first validation, timed apart

    def restore(self):
        engine.Trainer.train_epoch, engine.Trainer.validate = self.originals
        self.handle.remove()

    def _timed(self, function, times):
        clock = self

        def timed(trainer, *args, **kwargs):
            sync(clock.device)
            start = time.perf_counter()
            clock.counting, clock.pass_start = times == "passes" and not clock.passes, start
            try:
                result = function(trainer, *args, **kwargs)
            finally:
                sync(clock.device)
                getattr(clock, times).append(time.perf_counter() - start)
                clock.counting = False
            if times == "validations" and clock.again is None:  # once warm, for the steady epoch
                start = time.perf_counter()
                function(trainer, *args, **kwargs)
                sync(clock.device)
                clock.again = clock.extra_seconds = time.perf_counter() - start
            return result

        return timed

    def _after_step(self, optimizer, args, kwargs):
        if not self.counting:
            return
        self.count += 1
        if self.count == 1 or self.count % SYNC_EVERY == 0:
            sync(self.device)
            self.readings.append((self.count, time.perf_counter() - self.pass_start))

    def steady_step_seconds(self, steps):
        """Seconds per training step once warm: from the readings after the first pass's first fifth, else
        the first pass less its first step; None before any pass."""
        warm = [(n, t) for n, t in self.readings if n >= max(SYNC_EVERY, steps // 5)]
        if len(warm) >= 2:
            return (warm[-1][1] - warm[0][1]) / (warm[-1][0] - warm[0][0])
        if self.readings and self.passes and steps > 1:
            return (self.passes[0] - self.readings[0][1]) / (steps - 1)
        return None

    def steady_epoch_seconds(self, steps):
        """An epoch once warm: the later epochs' mean when there are any, else the steady steps and the first
        validation's second pass (the first pays for the inference kernels' first use)."""
        if len(self.passes) >= 2:
            return (sum(self.passes[1:]) + sum(self.validations[1:])) / (len(self.passes) - 1)
        per_step = self.steady_step_seconds(steps)
        return (steps * per_step if per_step else self.passes[0]) + self.again


def process_start_seconds(device):
    """A fresh Python process importing what a model stage imports and touching the device once."""
    code = (
        "import torch, timm, dvclive, sklearn; "
        "from cifarbench.pipeline import model_entry, train, evaluate, embed, probe; "
        f"torch.zeros(1, device={str(device)!r}).sum().item()"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
    return time.perf_counter() - start


# ---------------------------------------------------------------- the stages


@functools.lru_cache
def stage_main(script):
    """The `main(s)` of stages/<script>: the function the stage's process runs."""
    spec = importlib.util.spec_from_file_location(f"stage_{Path(script).stem}", ROOT / "stages" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


STAGES = {  # dvc.yaml's stage name: its script
    "train-cifar10": "train_cifar10.py",
    "transfer-cifar100": "transfer_cifar100.py",
    "evaluate": "evaluate.py",
    "embed": "embed.py",
    "probe": "probe.py",
    "report": "report.py",
}


def planned(params, keys):
    """(stage, model, dataset, seed) in an order `dvc repro` may run them: one model's chain after the other
    (so a run stopped by --budget has whole chains), the report last."""
    runs = []
    for k in keys:
        runs += [("train-cifar10", k, "cifar10", s) for s in params.seeds]
        runs += [("transfer-cifar100", k, "cifar100", s) for s in params.seeds]
        for stage in ("evaluate", "embed"):
            runs += [(stage, k, d, s) for d in paths.DATASETS for s in params.seeds]
        runs += [("probe", k, d, None) for d in paths.DATASETS]
    return runs + [("report", None, None, None)]


class FunctionClock:
    """Seconds spent in one function of a pipeline module, which the module calls by its global name: the
    same function, wrapped, the device synchronised around it."""

    def __init__(self, module, name, device):
        self.module, self.name, self.device, self.seconds = module, name, device, 0.0
        self.function = getattr(module, name)
        setattr(module, name, self._timed)

    def _timed(self, *args, **kwargs):
        sync(self.device)
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            sync(self.device)
            self.seconds += time.perf_counter() - start

    def restore(self):
        setattr(self.module, self.name, self.function)


FIXED_FIGURES = ("confusion", "sample_predictions", "umap_scatter")  # a stage's figures: no bigger with more images


def random_checkpoints(params, keys, stages):
    """The checkpoints a selected stage reads but no selected training stage writes: saved from random init,
    as a training stage saves them (the cost of evaluate, embed and probe does not depend on the weights)."""
    for key in keys:
        for ds, training in (("cifar10", "train-cifar10"), ("cifar100", "transfer-cifar100")):
            if training in stages:
                continue
            meta = dataset.load_meta(paths.data_dir(ds))
            for seed in params.seeds:
                torch.manual_seed(seed)
                spec = params.model(key)
                checkpoint.save(
                    paths.checkpoint(ds, key, seed),
                    timm_models.create(spec, num_classes=len(meta["classes"]), key=key),
                    key=key,
                    spec=spec,
                    dataset=ds,
                    classes=meta["classes"],
                    coarse_classes=meta["coarse_classes"],
                    image_size=meta["image_size"],
                    epoch=0,
                    val_acc=0.0,
                )


def run_stage(name, key, ds, seed, params, rt, clocks):
    """Run one stage's main; (seconds, its own peak CUDA memory in MiB or None, error line or None)."""
    s = entry.Stage(params, key, ds, seed, rt, script=str(ROOT / "stages" / STAGES[name]))
    main = stage_main(STAGES[name])
    if rt.compile:
        torch._dynamo.reset()  # a new process starts with no compiled code in memory
    # A stage of `dvc repro` is a fresh process: what earlier stages left on the device (tensors in reference
    # cycles, such as a caught error's traceback and its frames, wait for the garbage collector) is not its own
    gc.collect()
    left_over = torch.cuda.memory_allocated(rt.device) / 2**20 if rt.device.type == "cuda" else 0.0
    memory.reset_peak(rt.device)
    sync(rt.device)
    error = None
    for clock in [clocks.corruption, *clocks.fixed]:
        clock.seconds = 0.0
    clocks.training.reset()
    start = time.perf_counter()
    try:
        main(s)
    except Exception as exc:  # noqa: BLE001 - the table says what failed; the other stages still run
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    sync(rt.device)
    seconds = time.perf_counter() - start - clocks.training.extra_seconds  # not the benchmark's own extra pass
    peak = memory.peak(rt.device)[0] - left_over if rt.device.type == "cuda" else None
    return seconds, peak, error


def project(run, seconds, ctx):
    """Projected seconds of a stage at CIFAR's sizes (and, for training, the committed recipe's epochs),
    with the training stages' steady img/s; (projected, extra fields for the stage's row)."""
    name, key, ds, seed = run
    if name == "report":
        return ctx.startup + seconds, {}
    # what does not grow with the images: the timed efficiency measure, a stage's figures, the few-shot fits
    fixed = sum(clock.seconds for clock in ctx.clocks.fixed)
    if name == "evaluate":  # and CIFAR-10-C at the protocol's images
        corrupt = ctx.clocks.corruption.seconds
        return ctx.startup + fixed + (seconds - fixed - corrupt + corrupt * ctx.corruption_scale) * ctx.scale, {}
    if name not in SECTION:
        return ctx.startup + fixed + (seconds - fixed) * ctx.scale, {}
    epochs_run = json.loads(paths.train_cost(ds, key, seed).read_text())["epochs"]
    recipe = ctx.params.recipe(SECTION[name], key)
    steps = dataset.load_meta(paths.data_dir(ds))["counts"]["train"] // recipe.batch_size
    steady_epoch = ctx.clocks.training.steady_epoch_seconds(steps)
    epochs = ctx.committed.recipe(SECTION[name], key).epochs
    extra = {"recipe_epochs": epochs, "steady_epoch_s": round(steady_epoch, 4)}
    per_step = ctx.clocks.training.steady_step_seconds(steps)
    if per_step:
        rate = recipe.batch_size / per_step
        extra["train_images_per_second"] = round(rate)
        flops = ctx.train_flops.get(key)
        if flops:
            extra["train_tflops"] = float(f"{flops * rate / 1e12:.3g}")
            if ctx.peak_tflops:
                extra["share_of_peak"] = float(f"{flops * rate / 1e12 / ctx.peak_tflops:.3g}")
    return ctx.startup + seconds + steady_epoch * (epochs * ctx.scale - epochs_run), extra


SECTION = {stage: section for section, stage in paramslib.RECIPE_SECTIONS.items()}  # training stage: recipe


@dataclass
class Context:
    """What every projection needs: the params run and committed, the scales, the clocks, the FLOP counts."""

    params: object
    committed: object
    scale: float  # CIFAR's images over the images measured
    corruption_scale: float  # the protocol's corrupted images over those measured
    startup: float
    clocks: object
    train_flops: dict  # model key: training FLOPs per image (3 x forward)
    peak_tflops: float | None


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archive", required=True, help="CIFAR-10 JPEG .tar.gz or extracted train/<class>/ folder")
    parser.add_argument("--device", help="override compute.device (auto, cpu, cuda, cuda:N)")
    parser.add_argument(
        "--images",
        type=int,
        default=DEFAULT_IMAGES,
        help=f"images per dataset (default {DEFAULT_IMAGES:,}; CIFAR: 50,000)",
    )
    parser.add_argument("--epochs", type=int, default=1, help="epochs per training stage (default 1)")
    parser.add_argument("--img-size", type=int, help="every model's input size (default: params.yaml's)")
    parser.add_argument(
        "--corruption-images",
        type=int,
        default=0,
        help="test images per corruption and severity measured (default 0: as params.yaml sets it, the whole "
        "test split); the rest of the protocol is projected in proportion",
    )
    parser.add_argument("--models", help="comma-separated model keys, in the order to run them (default: all)")
    parser.add_argument(
        "--stages",
        help=f"comma-separated stages to run (default: all of {', '.join(STAGES)}); a checkpoint that no selected "
        "training stage writes is saved from random init first",
    )
    parser.add_argument("--datasets", help="comma-separated datasets of the stages to run (default: both)")
    parser.add_argument("--budget", type=float, help="start no stage after this many seconds (the rest: not run)")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"), help="the params to measure")
    parser.add_argument("--workdir", help="scratch project folder (default: a temporary one, removed after)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = parser.parse_args()
    if args.epochs < 1 or args.images < 20 or args.corruption_images < 0:
        parser.error("--epochs must be at least 1, --images at least 20, --corruption-images at least 0")
    began = time.perf_counter()
    committed_raw = paramslib.read_yaml(args.params)
    committed = paramslib.parse(committed_raw)
    keys = args.models.split(",") if args.models else committed.keys
    unknown = [k for k in keys if k not in committed.models]
    if unknown:
        parser.error(f"--models: {', '.join(unknown)} not in {args.params}'s models: ({', '.join(committed.keys)})")
    stages = args.stages.split(",") if args.stages else list(STAGES)
    if set(stages) - set(STAGES):
        parser.error(f"--stages: {', '.join(sorted(set(stages) - set(STAGES)))} unknown; use {', '.join(STAGES)}")
    datasets = args.datasets.split(",") if args.datasets else list(paths.DATASETS)
    if set(datasets) - set(paths.DATASETS):
        parser.error(f"--datasets: use {' or '.join(paths.DATASETS)}")

    images, labels, source = load_images(args.archive, args.images, committed.seed)
    if source.startswith("random"):
        sys.exit(f"error: {args.archive} not found; pass the CIFAR-10 JPEG archive (or its folder) with --archive")
    decode_seconds = time.perf_counter() - began
    val_count = max(1, round(args.images * VAL_SHARE))
    raw = benchmark_params(committed_raw, args, per_class=(args.images - val_count) // 100, keys=keys)
    n_test = max(1, round(args.images * TEST_SHARE))
    protocol = committed.evaluate.corruption_images or n_test  # 0: the whole test split
    measured = min(args.corruption_images or protocol, protocol)
    raw["evaluate"]["corruption_images"] = measured
    params = paramslib.parse(raw)
    rt = runtimelib.resolve(params.compute)

    with contextlib.ExitStack() as stack:
        folder = Path(args.workdir) if args.workdir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        folder.mkdir(parents=True, exist_ok=True)
        stack.enter_context(contextlib.chdir(folder))
        (folder / "params.yaml").write_text(json.dumps(raw, indent=1))  # JSON is YAML: what ran, for the curious
        write_data(stand_in_data(images, labels, committed.seed), val_count, committed.seed)
        clocks = SimpleNamespace(
            training=TrainingClock(rt.device),
            corruption=FunctionClock(robustness, "accuracy", rt.device),
            fixed=[
                FunctionClock(evaluate, "cost", rt.device),
                *(FunctionClock(figures, name, rt.device) for name in FIXED_FIGURES),
                # k images per class and draw, whatever the dataset's size (only their scoring grows)
                FunctionClock(linear_probe, "fewshot_curve", rt.device),
            ],
        )
        for clock in [clocks.training, clocks.corruption, *clocks.fixed]:
            stack.callback(clock.restore)
        ctx = Context(
            params=params,
            committed=committed,
            scale=CIFAR_TRAIN_IMAGES / args.images,
            corruption_scale=protocol / measured,
            startup=process_start_seconds(rt.device),
            clocks=clocks,
            train_flops={key: training_flops(params.model(key)) for key in params.keys},
            peak_tflops=peak_bf16_tflops(rt.device),
        )
        stage_main("recipes.py")(entry.Stage(params, script=str(ROOT / "stages" / "recipes.py")))
        # the tune stages with tuning off: each writes its recipe's lr for the training (no model, not timed);
        # a tuning itself is benchmarks/tuning_cost.py's
        if params.tune.enabled:
            sys.exit(
                "error: tune.enabled is true: this measures the pipeline with tuning off (the committed "
                "params); benchmarks/tuning_cost.py measures a tuning"
            )
        for key in params.keys:
            for train_stage in paths.TRAIN_STAGE.values():
                tuned.write(train_stage, key, tuned.untuned(params, train_stage, key))
        random_checkpoints(params, keys, stages)
        start = time.perf_counter()
        if "embed" in stages:
            embed.warm_numba_cache()  # what `make setup` does once per environment
        notes = [
            f"{source}, decoded in {decode_seconds:.0f} s; {args.images:,} images per dataset ({val_count:,} "
            f"validation), {n_test:,} test images drawn from the same pool; CIFAR-100 is the same images under "
            "100 labels",
            f"random init (nothing downloaded); {args.epochs} epoch(s) per training, projected to the recipe's; "
            f"CIFAR-10-C on {measured:,} of {protocol:,} test images per corruption and severity, projected",
            f"process start {ctx.startup:.1f} s (in every projection); umap's numba code warmed in "
            f"{time.perf_counter() - start:.0f} s first, as make setup does",
        ]
        print(f"{rt.describe_choice()}, torch.compile {'on' if rt.compile else 'off'}", flush=True)
        print("\n".join(notes), flush=True)
        rows = []
        for run in [r for r in planned(params, keys) if r[0] in stages and r[2] in (None, *datasets)]:
            name, key, ds, seed = run
            row = {"stage": name, "model": key, "dataset": ds}
            if args.budget is not None and time.perf_counter() - began > args.budget:
                rows.append({**row, "seconds": None, "projected_seconds": None, "skipped": "over --budget"})
                continue
            seconds, peak, error = run_stage(name, key, ds, seed, params, rt, clocks)
            projected, extra = (None, {}) if error else project(run, seconds, ctx)
            row.update(
                seconds=round(seconds, 2),
                projected_seconds=None if projected is None else round(projected, 1),
                peak_memory_mb=None if peak is None else round(peak),
                **extra,
                **({"error": error} if error else {}),
            )
            rows.append(row)
            print(f"[real_benchmark] {line(row)}", flush=True)

    done = [r for r in rows if r["projected_seconds"] is not None]
    total = sum(r["projected_seconds"] for r in done)
    print()
    print(table(rows, total, rt, notes))
    if args.json:
        print(
            json.dumps(
                {
                    "device": rt.describe(),
                    "compiled": rt.compile,
                    "images": args.images,
                    "epochs": args.epochs,
                    "corruption_images": measured,
                    "img_sizes": {key: params.model(key).img_size for key in keys},
                    "process_start_s": round(ctx.startup, 2),
                    "stages": rows,
                    "projected_total_s": round(total, 1),
                    "complete": len(done) == len(rows),
                    "wall_s": round(time.perf_counter() - began, 1),
                    "notes": notes,
                }
            )
        )
    if len(done) < len(rows):
        sys.exit(1)


def line(row):
    where = " ".join(v for v in (row["model"], row["dataset"]) if v)
    if row.get("skipped"):
        return f"{row['stage']} {where}: not run ({row['skipped']})"
    if "error" in row:
        return f"{row['stage']} {where}: FAILED after {row['seconds']:.1f} s: {row['error']}"
    return f"{row['stage']} {where}: {row['seconds']:.1f} s, projected {row['projected_seconds']:.1f} s"


def table(rows, total, rt, notes):
    out = [
        f"Measured on {rt.describe()} (torch.compile {'on' if rt.compile else 'off'}); seconds",
        *notes,
        "",
        f"| {'stage':<17} | {'model':<16} | {'dataset':<8} | {'measured':>9} | {'projected':>9} | {'peak MiB':>8} |",
        f"| {'-' * 17} | {'-' * 16} | {'-' * 8} | {'-' * 8}: | {'-' * 8}: | {'-' * 7}: |",
    ]
    for r in rows:
        if r["seconds"] is None:
            measured, projected, peak = "not run", "", ""
        else:
            measured = f"{r['seconds']:.1f}"
            projected = "failed" if "error" in r else f"{r['projected_seconds']:.1f}"
            peak = "" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:,}"
        out.append(
            f"| {r['stage']:<17} | {r['model'] or '':<16} | {r['dataset'] or '':<8} | {measured:>9} "
            f"| {projected:>9} | {peak:>8} |"
        )
    measured = sum(r["seconds"] or 0 for r in rows)
    out.append(f"| {'total':<17} | {'':<16} | {'':<8} | {measured:>9.1f} | {total:>9.1f} | {'':>8} |")
    out.append("")
    out.append(f"projected `dvc repro`: {total:.0f} s ({total / 60:.1f} min)")
    for r in rows:
        if "train_images_per_second" in r:
            share = f", {r['share_of_peak']:.0%} of the dense bf16 peak" if "share_of_peak" in r else ""
            tflops = f", {r['train_tflops']:g} TFLOP/s" if "train_tflops" in r else ""
            out.append(f"{r['stage']} {r['model']}: {r['train_images_per_second']:,} img/s steady{tflops}{share}")
    return "\n".join(out)


if __name__ == "__main__":
    main()
