"""Every file the pipeline reads or writes, in one place (dvc.yaml spells the same paths).

All paths are relative to the project root, where DVC runs the stages.
"""

import re
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


# Which stage writes which file, matched on the end of the path so absolute paths work too.
# The one place to update when dvc.yaml's stages or file names change. Checkpoints may be
# named <model>.pt or <model>-<seed>.pt: the stage's matrix item is the file's stem either way.
_PRODUCERS = (
    (re.compile(r"(?:^|/)(?:data/)?(?P<ds>[^/]+)/(?:train\.npz|val\.npz|test\.npz|meta\.json)$"),
     lambda m: f"download@{m['ds']}"),
    (re.compile(r"(?:^|/)(?:models/)?(?P<ds>[^/]+)/(?P<run>[^/]+)-umap\.npz$"),
     lambda m: f"embed@{m['run']}-{m['ds']}"),
    (re.compile(r"(?:^|/)(?:models/)?(?P<ds>cifar10|cifar100)/(?P<run>[^/]+?)(?:\.state)?\.pt$"),
     lambda m: f"{TRAIN_STAGE[m['ds']]}@{m['run']}"),
    (re.compile(r"(?:^|/)logs/(?P<stage>[^/]+)/(?P<run>[^/]+)/"), lambda m: f"{m['stage']}@{m['run']}"),
    (re.compile(r"(?:^|/)metrics/(?P<kind>evaluate|efficiency|embed)/(?P<run>[^/]+)\.json$"),
     lambda m: f"{'embed' if m['kind'] == 'embed' else 'evaluate'}@{m['run']}"),
    (re.compile(r"(?:^|/)metrics/summary\.json$"), lambda m: "report"),
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
    without it); metrics/ and logs/ are `cache: false` outputs kept in git.
    """
    roots = re.findall(r"(?:^|/)(data|models|metrics|logs|plots)/", Path(path).as_posix())
    in_git = bool(roots) and roots[-1] in ("metrics", "logs", "plots")
    return f"git checkout {path}" if in_git else f"dvc checkout --force {path}"


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
