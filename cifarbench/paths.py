"""Every file the pipeline reads or writes, in one place (dvc.yaml spells the same paths).

All paths are relative to the project root, where DVC runs the stages. A
training run is a model key and a training seed: its files carry both,
`<key>-<seed>`, as DVC's matrix names its stages (`train-cifar10@resnet18-0`).
A leaf: imports nothing from cifarbench.
"""

import re
from pathlib import Path

DATASETS = ("cifar10", "cifar100")  # the two pipeline slots: dvc.yaml's download matrix spells the same
DATA = Path("data")
MODELS = Path("models")
LOGS = Path("logs")
METRICS = Path("metrics")
PLOTS = Path("plots")
RECIPES = Path("recipes")
FIGURES = PLOTS / "figures"
SUMMARY = METRICS / "summary.json"  # accuracy-type results, {dataset: {model: {...}}}
COST = METRICS / "cost.json"  # timings, memory and sizes, same shape
COMPARISONS = METRICS / "comparisons.json"  # paired tests between models
TOP1 = METRICS / "top1.json"  # {c10|c100: {model: top-1}}: the headline, narrow enough for `dvc exp show`
SHORT_DATASET = {"cifar10": "c10", "cifar100": "c100"}  # top1.json's keys: short column names in `dvc exp show`
REPORT = PLOTS / "report.md"
REPORT_HTML = PLOTS / "report.html"

TRAIN_STAGE = {"cifar10": "train-cifar10", "cifar100": "transfer-cifar100"}
TUNE_STAGE = {"cifar10": "tune-cifar10", "cifar100": "tune-cifar100"}  # each tunes its TRAIN_STAGE's lr


def run_name(key, seed):
    return f"{key}-{seed}"


_TRAINED = {stage: ds for ds, stage in TRAIN_STAGE.items()}

# Which stage writes which file, matched on the end of the path so absolute paths work too.
# The one place to update when dvc.yaml's stages or file names change. A checkpoint's stem
# (<model>-<seed>) is its stage's matrix item.
_PRODUCERS = (
    (
        re.compile(r"(?:^|/)(?:data/)?(?P<ds>[^/]+)/(?:train\.npz|val\.npz|test\.npz|meta\.json)$"),
        lambda m: f"download@{m['ds']}",
    ),
    (
        re.compile(r"(?:^|/)models/(?P<kind>umap|predictions)/(?P<run>[^/]+)\.npz$"),
        lambda m: f"{'embed' if m['kind'] == 'umap' else 'evaluate'}@{m['run']}",
    ),
    (
        re.compile(r"(?:^|/)(?:models/)?(?P<ds>cifar10|cifar100)/(?P<run>[^/]+?)(?:\.state)?\.pt$"),
        lambda m: f"{TRAIN_STAGE[m['ds']]}@{m['run']}",
    ),
    (re.compile(r"(?:^|/)logs/(?P<stage>[^/]+)/(?P<run>[^/]+)/"), lambda m: f"{m['stage']}@{m['run']}"),
    (
        re.compile(r"(?:^|/)metrics/(?P<kind>evaluate|efficiency|per_image|embed|probe)/(?P<run>[^/]+)\.json$"),
        lambda m: f"{'evaluate' if m['kind'] in ('efficiency', 'per_image') else m['kind']}@{m['run']}",
    ),
    (re.compile(r"(?:^|/)metrics/per_image/probe/(?P<run>[^/]+)\.json$"), lambda m: f"probe@{m['run']}"),
    (re.compile(r"(?:^|/)metrics/(?:summary|cost|comparisons|top1)\.json$"), lambda m: "report"),
    (
        re.compile(r"(?:^|/)(?:metrics|models)/tune/(?P<stage>[^/]+)/(?P<key>[^/.]+)"),
        lambda m: f"{TUNE_STAGE[_TRAINED[m['stage']]]}@{m['key']}" if m["stage"] in _TRAINED else None,
    ),
    (re.compile(r"(?:^|/)recipes/"), lambda m: "recipes"),
)


def producing_stage(path):
    """The DVC stage that writes `path` (e.g. `download@cifar10`), or None when no known stage does."""
    text = Path(path).as_posix()
    for pattern, stage in _PRODUCERS:
        match = pattern.search(text)
        if match:
            return stage(match)
    return None


def restore_command(path):
    """The command that puts back the committed version of `path`.

    data/ and models/ live in DVC's cache (`--force`: DVC will not overwrite a changed file
    without it); metrics/, logs/, plots/ and recipes/ are `cache: false` outputs kept in git.
    """
    roots = re.findall(r"(?:^|/)(data|models|metrics|logs|plots|recipes)/", Path(path).as_posix())
    in_git = bool(roots) and roots[-1] in ("metrics", "logs", "plots", "recipes")
    return f"git checkout {path}" if in_git else f"dvc checkout --force {path}"


def data_dir(dataset):
    return DATA / dataset


def recipe(stage, key):
    """The resolved recipe a training stage depends on (written by the recipes stage).

    stage: a TRAIN_STAGE or 'probe'."""
    return RECIPES / stage / f"{key}.json"


def tuning(stage, key):
    """The tuning of `key` for training stage `stage`: {"trials": [...], "chosen": {"lr": ...}} (tune stages).

    Git-tracked (cache: false), what the training of that stage reads its lr from."""
    return METRICS / "tune" / stage / f"{key}.json"


def tuning_trials(stage, key):
    """The trials' resumable states, one file each, and their index (a persist: true output of the tune stage)."""
    return MODELS / "tune" / stage / key


def tuning_index(stage, key):
    """Which state file in tuning_trials() is which trial of the current tuning (none with tuning off)."""
    return tuning_trials(stage, key) / "trials.json"


def checkpoint(dataset, key, seed):
    return MODELS / dataset / f"{run_name(key, seed)}.pt"


def training_state(dataset, key, seed):
    """Resumable state of the stage that trains `key` on `dataset` (a persist: true output)."""
    return MODELS / dataset / f"{run_name(key, seed)}.state.pt"


def train_log(dataset, key, seed):
    """DVCLive directory of the stage that trains `key` on `dataset`."""
    return LOGS / TRAIN_STAGE[dataset] / run_name(key, seed)


def train_summary(dataset, key, seed):
    """DVCLive's summary (best validation accuracy, epochs): a declared metric of the training stage."""
    return train_log(dataset, key, seed) / "metrics.json"


def train_cost(dataset, key, seed):
    """Training time, memory and device of one training run (kept out of the metrics DVC compares)."""
    return train_log(dataset, key, seed) / "cost.json"


def evaluation(key, dataset, seed):
    return METRICS / "evaluate" / f"{key}-{dataset}-{seed}.json"


def efficiency(key, dataset, seed):
    """Timing, memory and size of the model (not byte-for-byte reproducible, unlike evaluation())."""
    return METRICS / "efficiency" / f"{key}-{dataset}-{seed}.json"


def predictions(key, dataset, seed):
    """Per test image: predicted class, top-1 and top-5 correctness (the report's paired tests and intervals)."""
    return MODELS / "predictions" / f"{key}-{dataset}-{seed}.npz"


def per_image(key, dataset, seed):
    """Per test image: the predicted class and whether it is right, with a digest of the test set scored.

    Small and git-tracked (cache: false, not a declared metric), so every commit and experiment
    carries what `cifarbench compare` pairs, without a DVC remote (format: inputs.per_image)."""
    return METRICS / "per_image" / f"{key}-{dataset}-{seed}.json"


def probe_per_image(key, dataset):
    """Per test image: whether the starting-weights probe gets it right (git-tracked, format inputs.PROBE_FORMAT)."""
    return METRICS / "per_image" / "probe" / f"{key}-{dataset}.json"


def embedding_metrics(key, dataset, seed):
    return METRICS / "embed" / f"{key}-{dataset}-{seed}.json"


def embedding_points(key, dataset, seed):
    """UMAP coordinates of the test split (DVC-cached, read by the report's panels)."""
    return MODELS / "umap" / f"{key}-{dataset}-{seed}.npz"


def probe_metrics(key, dataset):
    return METRICS / "probe" / f"{key}-{dataset}.json"


def confusion_rows(key, dataset, seed):
    """actual,predicted rows in test order, for DVC's confusion templates and the report's paired tests."""
    return PLOTS / "confusion" / f"{key}-{dataset}-{seed}.csv"


def figure(name):
    return FIGURES / f"{name}.png"
