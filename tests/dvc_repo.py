"""A copy of the project in a fresh git repo, driven through the real DVC CLI (the end-to-end tests' helper).

`copy_project` copies what a fresh clone would hold; `Repo` runs git, DVC and the copy's own
`cifarbench` package (PYTHONPATH points at the copy) there.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, dump, set_dotted
from ruamel.yaml import YAML

from cifarbench import atomic
from cifarbench.paths import DATASETS


def stages_for(models, seeds=(0,)):
    runs = [f"{m}-{s}" for m in models for s in seeds]
    return (
        {"recipes", "report"}
        | {f"download@{d}" for d in DATASETS}
        | {f"{stage}@{r}" for stage in ("train-cifar10", "transfer-cifar100") for r in runs}
        | {f"{stage}@{m}" for stage in ("tune-cifar10", "tune-cifar100") for m in models}
        | {f"{stage}@{m}-{d}-{s}" for stage in ("evaluate", "embed") for m in models for d in DATASETS for s in seeds}
        | {f"probe@{m}-{d}" for m in models for d in DATASETS}
    )


def project_files():
    """The files a fresh clone would have (tracked, plus new files not yet committed)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [f for f in out.splitlines() if (ROOT / f).is_file()]


def copy_project(dest):
    for rel in project_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    # results of a local `make demo` would look like committed outputs: a fresh clone has none
    for generated in ("dvc.lock", "metrics", "plots", "logs", "recipes"):
        path = dest / generated
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def cut_pipeline(folder, stages, datasets=None):
    """The copy's dvc.yaml with only `stages` (download's matrix cut to `datasets` when given) and no top-level
    metrics or plots (they name the report's outputs): a pipeline whose point is not every stage."""
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: the stages as written
    pipeline = yaml.load(folder / "dvc.yaml")
    pipeline["stages"] = {k: v for k, v in pipeline["stages"].items() if k in stages}
    if datasets is not None:
        pipeline["stages"]["download"]["matrix"]["dataset"] = list(datasets)
    for top in ("metrics", "plots"):
        del pipeline[top]
    yaml.dump(pipeline, folder / "dvc.yaml")


def built_once(tmp_path_factory, name, build):
    """The folder `name`, made by `build(folder)` once per test session for every module and every xdist worker
    that asks: the first to ask builds it under a file lock while the others wait on the lock. Returns the folder
    (with `build`'s return value saved beside it as text, see `built_note`); a caller copies it (`copy_built`) and
    changes only its copy. A build that failed is not tried again: every later asker fails with its error."""
    shared = tmp_path_factory.getbasetemp()
    if shared.name.startswith("popen-gw"):
        shared = shared.parent  # an xdist worker's base folder sits in the session's, which its workers share
    folder, done, failed = shared / name, shared / f"{name}.done", shared / f"{name}.failed"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this worker dies
        if failed.exists():
            raise AssertionError(f"building {name} failed (in this or another worker):\n{failed.read_text()}")
        if not done.exists():
            try:
                shutil.rmtree(folder, ignore_errors=True)  # a build cut short by a killed worker
                folder.mkdir()
                note = build(folder)
            except BaseException as exc:
                failed.write_text(f"{type(exc).__name__}: {exc}")
                raise
            atomic.write_text(done, note or "")  # whole or absent: a worker killed while writing leaves no note
    return folder


def built_note(folder):
    """What `build` returned for a folder of `built_once` (e.g. the output of the command that built it)."""
    return folder.with_name(f"{folder.name}.done").read_text()


def copy_built(template, dest):
    """A Repo on a copy of a built repo (git history, DVC cache and outputs; DVC hashes the copies again)."""
    shutil.copytree(template, dest, symlinks=True)
    return Repo(dest)


class Repo:
    def __init__(self, path):
        self.path = path
        bin_dir = str(Path(sys.executable).parent)
        self.env = dict(
            os.environ,
            PATH=bin_dir + os.pathsep + os.environ["PATH"],
            PYTHONPATH=str(path),  # the copy's package, not the checkout's
            DVC_NO_ANALYTICS="1",
            PYTHONUNBUFFERED="1",
        )

    def run(self, *args, check=True, **kwargs):
        proc = subprocess.run(args, cwd=self.path, env=self.env, capture_output=True, text=True, **kwargs)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
            )
        return proc

    def dvc(self, *args, check=True):
        return self.run(sys.executable, "-m", "dvc", *args, check=check)

    def stages_run(self, *args):
        out = self.dvc(*args).stdout
        return set(re.findall(r"Running stage '([^']+)'", out))

    def params(self):
        return YAML(typ="safe").load((self.path / "params.yaml").read_text())

    def write_params(self, raw):
        (self.path / "params.yaml").write_text(dump(raw))

    def set_param(self, key, value):
        raw = self.params()
        set_dotted(raw, key, value)
        self.write_params(raw)

    def commit(self, message):
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "--allow-empty", "-m", message)

    def restore(self):
        """Back to the last commit: tracked files (params, dvc.lock, metrics) and DVC-cached outputs."""
        self.run("git", "checkout", "-q", "--", ".")
        self.run("git", "clean", "-q", "-fd", "--", "metrics", "plots", "logs", "recipes")
        self.dvc("checkout", "--force")

    def json(self, rel):
        return json.loads((self.path / rel).read_text())


def queue_states(repo, names):
    """{experiment name: Queued | Running | Success | Failed} from `dvc queue status`."""
    out = repo.dvc("queue", "status").stdout
    return {
        name: m.group(1)
        for name in names
        if (m := re.search(rf"^\w+\s+{re.escape(name)}\s.*\b(Queued|Running|Success|Failed)\s*$", out, re.M))
    }


def run_queue(repo, names, jobs=2, timeout=900):
    """`dvc queue start -j jobs`, watched until every named experiment ended; returns (final states,
    whether `jobs` of them were Running at the same moment)."""
    # not through repo.dvc: the workers it spawns inherit captured stdout/stderr pipes, and reading
    # those to the end would wait for the workers to finish
    subprocess.run(
        [sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
        cwd=repo.path,
        env=repo.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    together, deadline = False, time.monotonic() + timeout
    while (states := queue_states(repo, names)) and any(s in ("Queued", "Running") for s in states.values()):
        together |= sum(s == "Running" for s in states.values()) == jobs
        assert time.monotonic() < deadline, f"the queue did not finish in {timeout} s: {states}"
        # each look is a `dvc queue status` process (~1.5 s of a core, taken from the workers it watches); an
        # experiment runs for tens of seconds, so a look every 5 s still sees two running at once
        time.sleep(5)
    return states, together
