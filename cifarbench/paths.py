"""Every file the pipeline reads or writes, in one place (dvc.yaml spells the same paths).

All paths are relative to the project root, where DVC runs the stages.
"""

from pathlib import Path

DATA = Path("data")
MODELS = Path("models")
LOGS = Path("logs")
METRICS = Path("metrics")
PLOTS = Path("plots")
FIGURES = PLOTS / "figures"
SUMMARY = METRICS / "summary.json"
REPORT = PLOTS / "report.md"
REPORT_HTML = PLOTS / "report.html"

TRAIN_STAGE = {"cifar10": "train-cifar10", "cifar100": "transfer-cifar100"}


def data_dir(dataset):
    return DATA / dataset


def checkpoint(dataset, model):
    return MODELS / dataset / f"{model}.pt"


def training_state(dataset, model):
    """Resumable state of the stage that trains `model` on `dataset` (a persist: true output)."""
    return MODELS / dataset / f"{model}.state.pt"


def train_log(dataset, model):
    """DVCLive directory of the stage that trains `model` on `dataset`."""
    return LOGS / TRAIN_STAGE[dataset] / model


def evaluation(model, dataset):
    return METRICS / "evaluate" / f"{model}-{dataset}.json"


def efficiency(model, dataset):
    """Timing, memory and size of the model (not byte-for-byte reproducible, unlike evaluation())."""
    return METRICS / "efficiency" / f"{model}-{dataset}.json"


def embedding_metrics(model, dataset):
    return METRICS / "embed" / f"{model}-{dataset}.json"


def embedding_points(model, dataset):
    """UMAP coordinates of the test split (DVC-cached, read by the report's panels)."""
    return MODELS / dataset / f"{model}-umap.npz"


def confusion_rows(model, dataset):
    """actual,predicted rows for DVC's confusion templates."""
    return PLOTS / "confusion" / f"{model}-{dataset}.csv"


def figure(name):
    return FIGURES / f"{name}.png"
