"""Shared test helpers: the real params.yaml shrunk to a CPU smoke run.

Tests never use a second config: they load the committed params.yaml and
apply the demo's overrides (per model family, as `make demo` computes them)
plus a few that make models and data tiny.
"""

import copy
import json
import os
import sys
from pathlib import Path

# Under `make test` (pytest-xdist) every worker runs its own torch and its own stage processes; at the
# default of one thread per core, two workers on two cores oversubscribe them, and OpenMP's spinning
# threads then run ~50x slower (measured: 40-100 img/s against ~4,000 on one thread). One thread per
# worker process, inherited by every stage process it starts; set before torch is imported.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_threads, "1")

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # so tests can import their helper modules

from cifarbench import params as paramslib  # noqa: E402
from cifarbench.commands import demo  # noqa: E402
from cifarbench.commands.demo import set_dotted  # noqa: E402,F401  (tests import it from here)

# On top of the demo (real CNNs at 32 px): fewer images and epochs and a narrower ViT,
# so every stage takes seconds.
TINY_DATA = {
    "data.limit": 300,
    "data.val_size": 0.2,
    "evaluate.corruptions": ["gaussian_noise", "fog"],
    "evaluate.severities": [1, 5],
    "evaluate.corruption_images": 40,
    "evaluate.timing_seconds": 0.2,
    "probe.shots": [1],
    "probe.draws": 2,
    "probe.c_grid": [0.01, 1.0],
    "probe.max_iter": 50,
}
TINY_VIT = {"img_size": 28, "kwargs": {"depth": 2, "embed_dim": 48, "num_heads": 2, "patch_size": 7}}
TINY_RECIPE = {"epochs": 2, "batch_size": 32}


def committed_params():
    """params.yaml as DVC and the pipeline read it (YAML 1.2)."""
    return paramslib.read_yaml(ROOT / "params.yaml")


def tiny_overrides(raw):
    """The demo's overrides of `raw` (per model family) made tiny."""
    parsed = paramslib.parse(raw)
    out = {**demo.overrides(parsed), **TINY_DATA}
    for key in parsed.keys:
        if out.get(f"models.{key}.img_size") == demo.SIZES["vit"]["img_size"]:  # a ViT
            out.update({f"models.{key}.{k}": v for k, v in TINY_VIT.items()})
            if out[f"transfer.{key}.freeze_blocks"]:
                out[f"transfer.{key}.freeze_blocks"] = 1  # of the tiny ViT's 2 blocks
        for section in ("train", "transfer"):
            out.update({f"{section}.{key}.{k}": v for k, v in TINY_RECIPE.items()})
    return out


def apply(raw, overrides):
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        if key.startswith("models.") and key.endswith(".kwargs"):
            set_dotted(raw, key, None)  # the tiny ViT replaces the demo's kwargs, not merges with them
        set_dotted(raw, key, value)
    return raw


def tiny_params(base=None, **extra):
    """The committed params (or `base`) with the tiny overrides and `extra` (dotted keys with __ for dots)."""
    raw = copy.deepcopy(base) if base is not None else committed_params()
    raw = apply(raw, tiny_overrides(raw))
    return apply(raw, {k.replace("__", "."): v for k, v in extra.items()})


def dump(raw):
    """YAML text for a params mapping (floats in a form YAML 1.1 and 1.2 both read as floats)."""
    return yaml.safe_dump(raw, sort_keys=False)


def write_params(folder, raw=None):
    """A project folder's params.yaml, the recipes/ folder the recipes stage would write for it (training stages
    refuse to run with recipes older than params.yaml) and, with tuning off, the tuning files the tune stages
    would write (the recipe's lr and weight decay, which a training reads)."""
    from cifarbench import paths
    from cifarbench.pipeline import recipes, tuned

    raw = tiny_params() if raw is None else raw
    folder = Path(folder)
    (folder / "params.yaml").write_text(dump(raw))
    p = paramslib.parse(raw)
    for path, content in recipes.contents(p).items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(recipes._text(content))
    if not p.tune.enabled:
        for stage in paths.TRAIN_STAGE.values():
            for key in p.keys:
                path = folder / paths.tuning(stage, key)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(tuned.untuned(p, stage, key)))


def run_stage_here(folder, script, *args):
    """`python stages/<script> args` in `folder`, run in this process: a CompletedProcess (status, stdout, stderr).

    For the checks of a stage's own behaviour (its one-line errors, what it leaves on disk): a new process
    spends ~8 s importing torch and timm before it reaches the line under test; this one has them. The stage
    runs as Python runs a script (`__main__`, its argv, its folder); an exception that escapes is printed
    with its traceback to stderr and gives status 1, as in a process. The process's own exit path is
    tested once, in a real process (tests/test_params.py)."""
    return run_script_here(folder, ROOT / "stages" / script, *args)


def run_script_here(folder, path, *args):
    """`python <path> args` in `folder`, run in this process as run_stage_here runs a stage script."""
    import runpy

    path = str(path)

    def script():
        runpy.run_path(path, run_name="__main__")

    return run_here(folder, script, argv=[path, *map(str, args)], command=[sys.executable, path, *map(str, args)])


def run_here(folder, call, *, argv=None, command=None):
    """`call()` in `folder`, in this process, as a process would run it: a CompletedProcess (status, stdout, stderr).

    Its return value or SystemExit is the status (None: 0); `sys.exit("message")` prints the message, and an
    exception that escapes its traceback, to stderr (status 1). Warnings go to stderr under the interpreter's default
    filters, as a fresh process shows them (pytest would otherwise keep them), and the working directory, sys.argv
    and sys.path are put back afterwards (a script that inserts its own folder does not change later imports)."""
    import contextlib
    import io
    import subprocess
    import traceback
    import warnings

    out, err, status = io.StringIO(), io.StringIO(), 0
    cwd, saved_argv, saved_path = os.getcwd(), sys.argv, sys.path[:]
    try:
        os.chdir(folder)
        if argv is not None:
            sys.argv = argv
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            with warnings.catch_warnings(record=True) as caught:
                _interpreter_warning_filters()
                try:
                    status = call() or 0
                except SystemExit as exc:
                    status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
                    if exc.code is not None and not isinstance(exc.code, int):
                        print(exc.code, file=sys.stderr)  # as the interpreter prints sys.exit("message")
                except Exception:  # noqa: BLE001 - what would end a process with a traceback
                    traceback.print_exc()
                    status = 1
            for w in caught:
                err.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    finally:
        os.chdir(cwd)
        sys.argv, sys.path[:] = saved_argv, saved_path
    return subprocess.CompletedProcess(command or argv or [], status, out.getvalue(), err.getvalue())


def _interpreter_warning_filters():
    """The warning filters of a plain `python` process (no -W): DeprecationWarning shown only from __main__."""
    import warnings

    warnings.resetwarnings()
    for category in (ResourceWarning, ImportWarning, PendingDeprecationWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")


@pytest.fixture
def tiny_raw():
    return tiny_params()


@pytest.fixture(scope="session")
def chromium():
    """A headless Chromium (Selenium driver); skips with the reason when there is none (fails under CI)."""
    import browser

    driver, reason = browser.chromium_driver()
    if driver is None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (.ci/run installs them: check its apt-get step)")
        pytest.skip(reason)
    yield driver
    driver.quit()


# `make test` runs the suite on two workers, a module per worker at a time (pytest -n auto --dist
# loadfile: a module's shared fixture, such as its DVC repo, is built once; the end-to-end repo's full
# repro once for its two modules, whichever worker asks first: tests/e2e_repo.py). Workers take modules in
# collection order (--no-loadscope-reorder: xdist's default order is by number of tests, which put the
# five long benchmark tests last), so the longest modules go first: the last module a worker starts
# then ends near the others' end instead of after them. The order is by measured time (`make test`'s
# --durations, summed per module), except that test_pipeline_reruns.py waits until its build is done.
LONGEST_FIRST = (
    "test_pipeline_dvc.py",
    "test_slurm.py",
    "test_compare.py",
    "test_pipeline_reruns.py",  # after two others: by then the build it copies is done (tests/e2e_repo.py)
    "test_resume.py",
    "test_benchmark.py",
    "test_distributed.py",
    "test_tune.py",
    "test_probe.py",
    "test_engine.py",
    "test_params.py",
    "test_faults.py",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order within a module stays as written
