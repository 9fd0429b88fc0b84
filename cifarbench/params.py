"""Read and validate params.yaml, the pipeline's only configuration.

Everything is checked on load, before any work: an unknown key (a typo), a
missing key or a bad value stops the stage with one line naming the key and
what is allowed. Checks that need the model itself (does the timm name exist,
is img_size a multiple of the ViT patch, does freeze_blocks fit the depth) run
on meta-device models, which cost no memory and no download.
"""

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cifarbench import MODELS
from cifarbench.errors import BenchError

DEFAULT_PATH = Path("params.yaml")

PositiveInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]


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
    devices: PositiveInt  # processes (GPUs) per training stage; >1 runs under torchrun
    precision: Literal["auto", "bf16", "fp16", "fp32"]
    compile: bool
    eval_batch_size: PositiveInt

    @field_validator("device")
    @classmethod
    def _known_device(cls, v):
        if v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("must be auto, cpu, cuda, cuda:N or mps")


class ModelSpec(Section):
    arch: str  # any timm model name, optionally with a pretrained tag ("resnet18.a1_in1k")
    pretrained: bool | str  # true: timm hub weights; false: random init; str: a local weights file
    img_size: Annotated[int, Field(ge=8)]
    kwargs: dict = {}  # passed to timm.create_model (drop_path_rate, or tiny sizes for tests)


class Augment(Section):
    crop_padding: NonNegInt  # pixels of padding for the random crop, at the native 32 px
    flip: bool  # random horizontal flip
    jitter: Fraction  # brightness and contrast factors drawn from [1 - jitter, 1 + jitter]


class Recipe(Section):
    optimizer: Literal["sgd", "adamw"]
    lr: Annotated[float, Field(gt=0)]
    momentum: Fraction  # SGD (Nesterov) momentum; ignored by AdamW
    weight_decay: Annotated[float, Field(ge=0)]
    layer_decay: Annotated[float, Field(gt=0, le=1)] | None  # per-block lr decay (timm); null = off
    batch_size: PositiveInt
    epochs: PositiveInt
    warmup_epochs: NonNegInt  # linear lr warm-up before the plateau scheduler takes over
    label_smoothing: Fraction
    early_stopping: NonNegInt  # stop after this many epochs without a better val accuracy; 0 = off
    plateau_factor: Annotated[float, Field(gt=0, lt=1)]  # ReduceLROnPlateau on val accuracy
    plateau_patience: NonNegInt
    augment: Augment


class TransferRecipe(Recipe):
    init: Literal["cifar10", "imagenet"]  # start from our CIFAR-10 checkpoint or the model's own weights
    freeze_blocks: NonNegInt  # stem plus this many blocks stay frozen


def _per_model(spec):
    """A section with exactly one entry per benchmarked model."""
    return type(f"{spec.__name__}PerModel", (Section,), {"__annotations__": {m: spec for m in MODELS}})


class Params(Section):
    seed: NonNegInt
    data: Data
    compute: Compute
    models: _per_model(ModelSpec)
    train: _per_model(Recipe)
    transfer: _per_model(TransferRecipe)

    def model(self, key):
        return getattr(self.models, key)

    def recipe(self, stage, key):
        return getattr(self.train if stage == "train" else self.transfer, key)

    def digest(self):
        """12 hex digits of SHA-256 over the validated params (canonical JSON): equal digest, equal run settings."""
        import hashlib
        import json

        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


_TYPE_TAGS = {"bool", "str", "int", "float", "dict", "list", "none"}


def _describe(error):
    """One line for the first validation problem: the dotted key, then what is wrong."""
    err = error.errors()[0]
    # pydantic appends union member tags ("int", "constrained-float") after the real key
    key = ".".join(str(p) for p in err["loc"] if str(p) not in _TYPE_TAGS and "-" not in str(p))
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key (a typo?); see params.yaml's comments for the allowed keys"
    if kind == "missing":
        return f"{key}: missing key"
    got = err.get("input")
    return f"{key}: {err['msg'].removeprefix('Value error, ')} (got {got!r})"


def parse(raw, source="params.yaml"):
    """Validate an already-loaded mapping; BenchError with one line on the first problem."""
    if not isinstance(raw, dict):
        raise BenchError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        params = Params.model_validate(raw)
    except ValidationError as exc:
        raise BenchError(f"{source}: {_describe(exc)}") from None
    from cifarbench import models  # late import: torch/timm only once the YAML is known good

    for key in MODELS:
        models.check_spec(key, params.model(key), params.recipe("transfer", key).freeze_blocks)
    return params


def load(path=DEFAULT_PATH):
    path = Path(path)
    if not path.is_file():
        raise BenchError(f"{path} not found: run the stage from the project root (where params.yaml lives)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise BenchError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse(raw, source=str(path))
