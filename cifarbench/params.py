"""Read and validate params.yaml, the pipeline's only configuration.

- Read exactly as DVC reads it: YAML 1.2 through ruamel.yaml's safe loader, so
  every value `dvc exp run -S` writes (`2e-05`, `1E-4`, `.5`, `true`) means here
  what it means to DVC. (PyYAML's YAML 1.1 reads `2e-05` as a string.)
- `models:` is the registry: one entry per model (`arch`, `pretrained`,
  `img_size`, `kwargs`, `name`), and dvc.yaml's stage matrices iterate its keys.
- `train:` and `transfer:` are recipes: `defaults` shared by every model plus,
  under the model's key, only what that model does differently (a section
  written out in full works too). `recipe(stage, key)` is the merged result.
- Everything is checked on load: an unknown key, a missing key or a bad value
  raises ParamsError with one line naming the key (`train.resnet18.lr: ...`).

A leaf: imports nothing from cifarbench. Checks that need timm (does the
architecture exist, does img_size fit the patch) live in cifarbench.models.checks.
"""

import copy
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_PATH = Path("params.yaml")
RECIPE_SECTIONS = {"train": "train-cifar10", "transfer": "transfer-cifar100"}  # params section -> its stage
DEFAULTS = "defaults"  # the shared recipe inside train: and transfer:; not a model key
PROTOCOLS = ("recipes", "matched")  # each model's own recipe | every model under `matched:`, the same for all
MODEL_KEY = re.compile(r"^[A-Za-z0-9_]+$")  # a stage-name and file-name part: no '-', '@', '/' or spaces
MAX_MODELS = 10  # one distinct colour each in every figure

# Settings that decide how fast a run goes or where it runs, never what it computes: no stage lists
# them as params in dvc.yaml, the resume fingerprint (train/resume.py) and the report's digest leave
# them out, and the resolved recipes (pipeline/recipes.py) hold no `compile`. Changing one after a
# finished run reruns nothing, and a killed training resumes under the new value.
SPEED_ONLY = {
    "compute.nodes": "which machines the ranks run on; a new world size starts a fresh state (docs/clusters.md)",
    "compute.compile": "torch.compile runs the eager step's computation (fusion may move the last bits of rounding)",
    "compute.eval_batch_size": "inference runs in eval mode, where every image is computed on its own",
    "train.<model>.compile": "a model's own opt-out of compute.compile: the same computation, eagerly",
    "transfer.<model>.compile": "the same for the transfer stage",
}
COMPUTE_SPEED_ONLY = frozenset(k.split(".")[1] for k in SPEED_ONLY if k.startswith("compute."))
RECIPE_SPEED_ONLY = frozenset(k.rsplit(".", 1)[1] for k in SPEED_ONLY if not k.startswith("compute."))

PositiveInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]


class ParamsError(ValueError):
    """params.yaml is wrong: the message is one line naming the key and what is allowed."""


class Section(BaseModel):
    # strict: "yes" is not a bool and 1.5 is not an int; extra keys are typos
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Data(Section):
    source: Literal["auto", "download", "archive", "folder", "digits"]
    dir: str
    verify: bool
    limit: NonNegInt  # 0 = everything; else at most this many training images per dataset
    val_size: Annotated[float, Field(gt=0)] | Annotated[int, Field(ge=1)]  # count, or fraction < 1

    @field_validator("val_size")
    @classmethod
    def _fraction_or_count(cls, v):
        if isinstance(v, float) and v >= 1:
            raise ValueError("a float val_size is a fraction and must be below 1 (use an int for a count)")
        return v


class Compute(Section):
    device: str  # auto | cpu | cuda | cuda:N | mps
    devices: PositiveInt  # processes (GPUs) per training stage and node; >1 runs under torchrun
    nodes: PositiveInt = 1  # SLURM nodes per training stage; >1: srun starts one torchrun agent per node
    precision: Literal["auto", "bf16", "fp16", "fp32"]
    compile: Literal["auto"] | bool  # auto: compile on CUDA only (see runtime/device.py)
    eval_batch_size: PositiveInt
    sync_bn: bool  # under DDP on CUDA: BatchNorm over the global batch (SyncBatchNorm); on CPU/gloo per process

    def deciding(self):
        """The keys that decide what a run computes (SPEED_ONLY left out), JSON-ready."""
        return self.model_dump(mode="json", exclude=COMPUTE_SPEED_ONLY)

    @field_validator("device")
    @classmethod
    def _known_device(cls, v):
        if v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("must be auto, cpu, cuda, cuda:N or mps")


class ModelSpec(Section):
    """What builds a model; the checkpoint carries it, so a checkpoint alone rebuilds its model."""

    arch: str  # any timm model name, optionally with a pretrained tag ("resnet18.a1_in1k")
    pretrained: bool | str = True  # true: timm hub weights; false: random init; str: a local weights file
    img_size: Annotated[int, Field(ge=8)]
    kwargs: dict = {}  # passed to timm.create_model (drop_path_rate, or tiny sizes for tests)


class ModelEntry(ModelSpec):
    """A registry entry: the spec plus how reports name the model (never part of what trains)."""

    name: str | None = None  # display name; derived from the timm architecture when absent

    def spec(self):
        return ModelSpec.model_validate(self.model_dump(exclude={"name"}))


class Augment(Section):
    crop_padding: NonNegInt  # pixels of padding for the random crop, at the native 32 px
    flip: bool  # random horizontal flip
    jitter: Fraction  # brightness and contrast factors drawn from [1 - jitter, 1 + jitter]


SCHEDULES = ("cosine", "tanh", "poly", "step", "multistep", "plateau", "constant")  # timm's create_scheduler_v2


class Recipe(Section):
    optimizer: Literal["sgd", "adamw"]
    lr: Annotated[float, Field(gt=0)]  # peak lr, reached at the end of warm-up
    momentum: Fraction  # SGD (Nesterov) momentum; ignored by AdamW
    weight_decay: NonNegFloat
    layer_decay: Annotated[float, Field(gt=0, le=1)] | None  # per-block lr decay (timm); null = off
    batch_size: PositiveInt
    epochs: PositiveInt
    label_smoothing: Fraction
    schedule: Literal[SCHEDULES]
    warmup_epochs: NonNegInt  # linear warm-up from warmup_lr to lr
    warmup_lr: NonNegFloat
    min_lr: NonNegFloat  # the floor that cosine, tanh, poly and plateau decay to
    decay_epochs: PositiveInt  # step: multiply the lr by decay_rate every decay_epochs
    decay_milestones: list[PositiveInt]  # multistep: the epochs at which to multiply by decay_rate
    decay_rate: Annotated[float, Field(gt=0)]  # step/multistep factor; poly: the power
    plateau_factor: Annotated[float, Field(gt=0, lt=1)]  # plateau: ReduceLROnPlateau on validation accuracy
    plateau_patience: NonNegInt
    early_stopping: NonNegInt  # stop after this many epochs without a better val accuracy; 0 = off
    augment: Augment
    # false: this model trains eagerly even where compute.compile compiles; the numbers do not depend on it
    compile: bool = True

    def frozen_blocks(self, blocks):
        """How many of the model's `blocks` block groups stay frozen: none (a transfer recipe may freeze some)."""
        return 0

    def deciding(self):
        """The recipe less its speed settings (SPEED_ONLY), JSON-ready: what the recipe files and the resume
        fingerprint hold."""
        return self.model_dump(mode="json", exclude=RECIPE_SPEED_ONLY)

    @model_validator(mode="after")
    def _warmup_fits(self):
        if self.warmup_epochs >= self.epochs and self.schedule != "constant":
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs ({self.epochs})")
        return self


class TransferRecipe(Recipe):
    init: Literal["cifar10", "imagenet"]  # start from our CIFAR-10 checkpoint or the model's own weights
    freeze_blocks: NonNegInt = 0  # stem plus this many blocks stay frozen
    # or the stem plus this share of the model's block groups (timm's grouping), rounded to the nearest count:
    # the same share for models of different depths. A layer that sets one of the two unsets the other.
    freeze_share: Annotated[float, Field(ge=0, le=1)] | None = None

    def frozen_blocks(self, blocks):
        """How many of the model's `blocks` block groups stay frozen (half-way shares round up; the count alone
        where the number of groups is not known)."""
        if self.freeze_share is None or blocks is None:
            return self.freeze_blocks
        return min(blocks, math.floor(self.freeze_share * blocks + 0.5))

    @model_validator(mode="after")
    def _one_freeze(self):
        if self.freeze_share is not None and self.freeze_blocks:
            raise ValueError(
                f"freeze_blocks ({self.freeze_blocks}) and freeze_share ({self.freeze_share}) both set: "
                "set one of them (freeze_blocks: 0 or freeze_share: null)"
            )
        return self


class Tune(Section):
    """Equal-budget tuning (tune stages): every model gets the same grid and the same epochs per trial."""

    enabled: bool = False
    # factors on each model's recipe lr, and on its weight decay; every pair is one trial
    lr_scale: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)] = [0.3, 1.0, 3.0]
    weight_decay_scale: Annotated[list[NonNegFloat], Field(min_length=1)] = [1.0]
    epochs: PositiveInt = 3  # each trial's epochs (its schedule is the recipe's, over these epochs)

    @field_validator("lr_scale", "weight_decay_scale")
    @classmethod
    def _distinct(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"{v} repeats a value; list each factor once")
        return v


class Evaluate(Section):
    bootstrap: Annotated[int, Field(ge=1000)]  # resamples of the test images for the 95 % intervals
    corruptions: list[str]  # CIFAR-10-C corruption names (cifarbench.data.corruptions), [] = none
    severities: list[Annotated[int, Field(ge=1, le=5)]]
    corruption_images: NonNegInt  # test images per corruption and severity; 0 = the whole test split
    timing_seconds: Annotated[float, Field(gt=0)]  # least clock time of the throughput + latency timings
    # which corrupted images: the released CIFAR-10-C / CIFAR-100-C arrays, generated ones, or auto (released for
    # CIFAR's own test split where data.dir has them or they download, else generated)
    corruption_source: Literal["auto", "released", "generated"] = "auto"


class Probe(Section):
    shots: list[PositiveInt]  # labelled training images per class for the few-shot curve
    draws: PositiveInt  # random draws per shot count
    c_grid: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1)]  # L2 strengths tried, best on val
    tol: Annotated[
        float, Field(gt=0)
    ]  # lbfgs's stopping tolerance (1e-6: the optimum; see cifarbench/eval/linear_probe.py)
    max_iter: PositiveInt  # lbfgs iterations per fit at most (a fit that stops there is reported unconverged)
    # auto: torch on CUDA (every C and few-shot draw as one batch on the GPU), numpy (scikit-learn) elsewhere
    backend: Literal["auto", "numpy", "torch"] = "auto"
    # a k-shot probe's C: from its k shots per class alone (cross-validation over them; the grid's smallest C
    # at 1 shot), or on the full validation split, as papers that report few-shot probes that way do
    fewshot_c: Literal["shots", "validation"] = "shots"


class _Top(Section):
    seed: NonNegInt
    seeds: Annotated[list[NonNegInt], Field(min_length=1)]
    data: Data
    compute: Compute
    models: dict[str, ModelEntry]
    train: dict[str, dict]
    transfer: dict[str, dict]
    evaluate: Evaluate
    probe: Probe
    tune: Tune = Tune()
    protocol: Literal[PROTOCOLS] = "recipes"
    matched: dict[str, dict] = {}  # the matched protocol: {train: {...}, transfer: {...}}, recipe keys


class Params:
    """The validated params: the sections as attributes, plus the registry and merged recipes."""

    def __init__(self, top, recipes, raw):
        self._top, self._recipes, self._raw = top, recipes, raw
        self.seed, self.seeds = top.seed, list(top.seeds)
        self.data, self.compute, self.evaluate, self.probe = top.data, top.compute, top.evaluate, top.probe
        self.tune, self.protocol, self.matched = top.tune, top.protocol, dict(top.matched)
        self.models = dict(top.models)  # key -> ModelEntry, in params.yaml's order

    @property
    def keys(self):
        """Model keys in registry order: the order of every table, legend and colour."""
        return list(self.models)

    def model(self, key):
        """The ModelSpec that builds `key` (without its display name)."""
        return self.models[key].spec()

    def recipe(self, section, key):
        """`train` or `transfer` recipe of `key`: the defaults with the model's own keys on top."""
        return self._recipes[section][key]

    def numbers_raw(self):
        """params.yaml's content less the settings that change no number (SPEED_ONLY), compute and each model's
        recipes resolved (a default written out again changes nothing)."""
        raw = copy.deepcopy(self._raw)
        raw["compute"] = self.compute.deciding()
        for section in RECIPE_SECTIONS:
            raw[section] = {key: self.recipe(section, key).deciding() for key in self.keys}
        return raw

    def digest(self):
        """12 hex digits of SHA-256 over numbers_raw(): equal digest, equal settings that decide the numbers.

        Settings that only change how fast a run goes (compute.compile, ...) leave it as it is, so the
        report, which prints it, reruns for none of them."""
        canonical = json.dumps(self.numbers_raw(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


_TYPE_TAGS = {"bool", "str", "int", "float", "dict", "list", "none"}
_TAG_PREFIXES = ("constrained-", "function-", "literal[", "list[", "dict[")


def _describe(error, prefix=""):
    """One line for the first validation problem: the dotted key, then what is wrong."""
    err = error.errors()[0]
    # pydantic appends union member tags ("int", "constrained-float") after the real key
    parts = [str(p) for p in err["loc"] if str(p) not in _TYPE_TAGS and not str(p).startswith(_TAG_PREFIXES)]
    key = ".".join(p for p in [prefix, *parts] if p)
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key (a typo?); see params.yaml's comments for the allowed keys"
    if kind == "missing":
        return f"{key}: missing key"
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"  # a whole section would not fit one line
    return f"{key}: {err['msg'].removeprefix('Value error, ')}{shown}"


def _merge(base, override):
    """`base` with `override` on top; nested mappings (augment) merge key by key."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _layered(layers):
    """The layers merged in order. Of freeze_blocks and freeze_share the one a later layer sets decides: setting
    one unsets the other (a share in transfer.defaults, then a count under one model, is that count)."""
    merged = {}
    for _, layer in layers:
        merged = _merge(merged, layer)
        if "freeze_blocks" in layer and "freeze_share" not in layer:
            merged["freeze_share"] = None
        if layer.get("freeze_share") is not None and "freeze_blocks" not in layer:
            merged["freeze_blocks"] = 0
    return merged


def _blame(exc, layers, fallback):
    """ParamsError for the first problem, naming the last layer that holds the offending key."""
    loc = exc.errors()[0]["loc"]
    holders = [name for name, layer in layers if (str(loc[0]) in layer if loc else layer)]
    return ParamsError(_describe(exc, holders[-1] if holders else fallback))


def _check_defaults(layers, recipe_cls):
    """A bad default is an error even where every model overrides it (it would bite the next model added)."""
    merged = _layered(layers)
    try:
        recipe_cls.model_validate(merged)
    except ValidationError as exc:
        # defaults may leave keys to the models (full per-model sections): only wrong values count here
        wrong = [e for e in exc.errors() if e["type"] != "missing"]
        if wrong:
            raise _blame(ValidationError.from_exception_data(exc.title, wrong), layers, layers[-1][0]) from None


def _recipes(section, raw, recipe_cls, keys, base=None, matched=()):
    """Merged recipe per model key: `base` (train.defaults, for transfer), `<section>.defaults`, `<section>.<key>`.

    matched: under the matched protocol, its layers (`matched.train`, `matched.transfer`) go on top of the
    defaults and a model's own keys count only where they change no number (its `compile`), so every model
    gets the same recipe. An error names the layer that holds the bad value (`train.resnet18.lr`,
    `train.defaults.lr`); a key missing everywhere is missing from the section's defaults.
    """
    unknown = [k for k in raw if k != DEFAULTS and k not in keys]
    if unknown:
        raise ParamsError(
            f"{section}.{unknown[0]}: no model {unknown[0]!r} under models: (a typo?); "
            f"recipe sections are {DEFAULTS!r} and the model keys {', '.join(keys)}"
        )
    layers = [(f"{section}.{DEFAULTS}", raw.get(DEFAULTS) or {}), *matched]
    if base is not None:
        layers.insert(0, base)
    for name, layer in layers:
        if not isinstance(layer, dict):
            raise ParamsError(f"{name}: expected a mapping of recipe keys, got {layer!r}")
    _check_defaults(layers, recipe_cls)
    out = {}
    for key in keys:
        own = (f"{section}.{key}", raw.get(key) or {})
        if not isinstance(own[1], dict):
            raise ParamsError(
                f"{own[0]}: expected a mapping of recipe keys (only those that differ "
                f"from {section}.{DEFAULTS}), got {own[1]!r}"
            )
        if matched:  # the same recipe for every model: only its speed settings stay its own
            own = (own[0], {k: v for k, v in own[1].items() if k in RECIPE_SPEED_ONLY})
        merged = _layered([*layers, own])
        try:
            out[key] = recipe_cls.model_validate(merged)
        except ValidationError as exc:
            raise _blame(exc, [*layers, own], f"{section}.{DEFAULTS}") from None
    return out


def parse(raw, source="params.yaml"):
    """Validate an already-loaded mapping; ParamsError with one line on the first problem."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    for key in raw.get("models") or {} if isinstance(raw.get("models"), dict) else {}:
        if not MODEL_KEY.match(str(key)) or key == DEFAULTS:
            raise ParamsError(
                f"{source}: models.{key}: a model key is letters, digits and _ only "
                f"(it names stages and files) and not {DEFAULTS!r}"
            )
    try:
        top = _Top.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(f"{source}: {_describe(exc)}") from None
    keys = list(top.models)
    if not keys:
        raise ParamsError(f"{source}: models: is empty; add at least one model (arch, img_size)")
    if len(keys) > MAX_MODELS:
        raise ParamsError(f"{source}: models: {len(keys)} models, at most {MAX_MODELS} (one distinct colour each)")
    if len(set(top.seeds)) != len(top.seeds):
        raise ParamsError(f"{source}: seeds: {top.seeds} repeats a seed; list each training seed once")
    unknown = [k for k in top.matched if k not in RECIPE_SECTIONS]
    if unknown:
        raise ParamsError(f"{source}: matched.{unknown[0]}: unknown key; matched: holds train: and transfer:")
    matched = [(f"matched.{s}", top.matched.get(s) or {}) for s in RECIPE_SECTIONS]  # mappings: _Top checked them
    try:
        # a transfer recipe starts from train.defaults too: transfer: holds only what transfer does differently
        base = ("train." + DEFAULTS, top.train.get(DEFAULTS) or {})
        # the matched protocol's values are checked whichever protocol runs (a typo there bites the day it runs)
        _check_defaults([base, *matched[:1]], Recipe)
        _check_defaults([base, ("transfer." + DEFAULTS, top.transfer.get(DEFAULTS) or {}), *matched], TransferRecipe)
        on = top.protocol == "matched"
        train = _recipes("train", top.train, Recipe, keys, matched=matched[:1] if on else ())
        transfer = _recipes("transfer", top.transfer, TransferRecipe, keys, base, matched=matched if on else ())
        recipes = {"train": train, "transfer": transfer}
    except ParamsError as exc:
        raise ParamsError(f"{source}: {exc}") from None
    return Params(top, recipes, raw)


def read_yaml(path):
    """params.yaml as DVC reads it (YAML 1.2, ruamel's safe loader); ParamsError if it is not YAML."""
    from ruamel.yaml import YAML, YAMLError

    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found: run the stage from the project root (where params.yaml lives)")
    try:
        return YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None


def load(path=DEFAULT_PATH):
    return parse(read_yaml(path), source=str(path))
