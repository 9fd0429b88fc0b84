"""Every file the pipeline reads or writes, in one place (dvc.yaml spells the same paths).

All paths are relative to the project root, where DVC runs the stages. A
training run is a model key and a training seed: its files carry both,
`<key>-<seed>`, as DVC's matrix names its stages (`train-cifar10@resnet18-0`).
A leaf: imports nothing from cifarbench.
"""

from pathlib import Path

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
REPORT = PLOTS / "report.md"
REPORT_HTML = PLOTS / "report.html"

TRAIN_STAGE = {"cifar10": "train-cifar10", "cifar100": "transfer-cifar100"}


def run_name(key, seed):
    return f"{key}-{seed}"


def data_dir(dataset):
    return DATA / dataset


def recipe(stage, key):
    """The resolved recipe a training stage depends on (written by the recipes stage); stage: a TRAIN_STAGE or 'probe'."""
    return RECIPES / stage / f"{key}.json"


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
