"""`cifarbench sweep --slurm`: a sweep in DVC's syntax as one SLURM array task per experiment.

DVC's queue runs its workers on one machine (`LocalCeleryQueue`; `dvc machine`
was removed), so a sweep past one machine is SLURM's job array, with what DVC's
maintainers advise for parallel workers: a git clone per worker, one shared DVC
cache, experiments shared through `dvc exp push` to a git remote and their
cached outputs through a DVC remote. `-S` is expanded by DVC's own function
(dvc.utils.hydra.get_hydra_sweeps, what `dvc exp run --queue -S` calls: the
product of the lists), and each combination is applied to a copy of
params.yaml by DVC's own `apply_overrides` and validated by cifarbench.params
before anything is submitted.

Task i (1-based, as DVC numbers a named sweep) clones the git remote at the
submitted commit into `.dvc/tmp/sweeps/<name>/work/<i>`, points it at the
project's DVC cache, runs `dvc exp run -S ... --name <name>-<i>` with this
python's environment (PATH) and the clone's own package (PYTHONPATH), pushes
the experiment (`dvc exp push -r <dvc remote> <git remote> <name>-<i>`), and
removes its clone. Its exit status goes to `<i>.exit` beside its log `<i>.log`,
which `--wait` reads (no accounting database needed). A failed task touches no
other task's clone or experiment; `sbatch --array=<i> <script>` reruns it alone.

Every problem found before submitting (no sbatch, uncommitted changes, no git
or DVC remote, a commit the git remote lacks, an `-S` key params.yaml does not
have, a bad value) is one line and exit status 2, and nothing is submitted.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cifarbench import params as paramslib
from cifarbench.errors import BenchError

SWEEPS = Path(".dvc") / "tmp" / "sweeps"  # git-ignored by DVC's own .dvc/.gitignore
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a git ref part and a folder name
POLL_SECONDS = 2

# The batch script. {{...}} are filled in (shell-quoted) by `script()`; everything else is bash.
TEMPLATE = """\
#!/bin/bash
# CIFARbench sweep {{name}}, written by `cifarbench sweep --slurm` from commit {{commit}}.
# One array task per experiment: task i clones the git remote at that commit into a folder of its
# own, shares the project's DVC cache, runs `dvc exp run` with its overrides as experiment
# {{name}}-i and pushes it (dvc exp push: git refs to the git remote, cached outputs to the DVC
# remote). Gather every experiment on any machine: dvc exp pull {{git_remote}} && dvc exp show
# Rerun one failed task alone: sbatch --array=<i> {{script}}
#SBATCH --job-name={{name}}
#SBATCH --array=1-{{count}}
#SBATCH --nodes={{nodes}}
#SBATCH --output={{sweep_dir}}/%a.log
{{sbatch_args}}
set -euo pipefail
TASK=$SLURM_ARRAY_TASK_ID
SWEEP={{sweep_dir}}
# the exit status, for `cifarbench sweep --wait`: 143 when cancelled (scancel, the time limit), no file
# when killed outright
rm -f "$SWEEP/$TASK.exit"
trap 'echo $? > "$SWEEP/$TASK.exit"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# this task's overrides (dvc exp run -S ...) as the arguments "$@", as DVC's sweep expansion
# (dvc exp run --queue -S) makes them
case $TASK in
{{cases}}
  *) echo "error: this sweep has tasks 1-{{count}}, not $TASK" >&2; exit 2 ;;
esac

# the environment that ran `cifarbench sweep`: its python, dvc and torchrun
export PATH={{bin_dir}}:$PATH
WORK=$SWEEP/work/$TASK
rm -rf "$WORK"  # a resubmitted task starts from a fresh clone
git clone --quiet {{git_url}} "$WORK"
cd "$WORK"
git checkout --quiet --detach {{commit}}
git config user.name {{git_user}}
git config user.email {{git_email}}
dvc config --local cache.dir {{cache_dir}}  # one DVC cache for the project and every task
dvc config --local cache.shared group  # its files group-writable: tasks (and users) share it
export PYTHONPATH=$WORK  # the stages import this commit's cifarbench, not an installed copy

dvc exp run "$@" --name {{name}}-$TASK{{targets}}
dvc exp push --remote {{dvc_remote}} origin {{name}}-$TASK  # origin: the clone's, the git remote
cd "$SWEEP"
rm -rf "$WORK"
"""


@dataclass
class Sweep:
    """What a sweep submits: one list of `-S` overrides per task, and where everything is."""

    name: str
    tasks: list  # [[override, ...], ...]: task i + 1's overrides
    nodes: int
    commit: str
    git_remote: str
    git_url: str
    dvc_remote: str
    cache_dir: str
    sweep_dir: Path
    bin_dir: str
    git_user: tuple
    sbatch_args: list
    targets: list

    @property
    def script_path(self):
        return self.sweep_dir / "sweep.sbatch"


def _git(*args, check=True):
    proc = subprocess.run(["git", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise BenchError(f"`git {' '.join(args)}` failed: {why}")
    return proc.stdout.rstrip() if proc.returncode == 0 else None


def expand(set_params):
    """DVC's own expansion of `-S` (what `dvc exp run --queue -S` queues): one override list per experiment."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import get_hydra_sweeps
    from hydra.errors import OverrideParseException

    if not set_params:
        return [[]]
    by_file = to_path_overrides(set_params)
    others = sorted(set(by_file) - {"params.yaml"})
    if others:
        raise BenchError(f"-S {others[0]}:...: CIFARbench's parameters are all in params.yaml; drop the file prefix")
    try:
        return [combo["params.yaml"] for combo in get_hydra_sweeps(by_file)]
    except OverrideParseException as exc:
        raise BenchError(f"-S: not DVC's override syntax ({str(exc).splitlines()[0]})") from None
    except InvalidArgumentError as exc:
        raise BenchError(f"-S: {exc}") from None


def validate(overrides, params_path="params.yaml"):
    """params.yaml with `overrides` applied as `dvc exp run -S` applies them, validated; ParamsError/BenchError."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "params.yaml"
        shutil.copyfile(params_path, copy)
        for override in overrides:  # one at a time, to name the one that fails
            try:
                apply_overrides(copy, [override])
            except InvalidArgumentError as exc:
                why = str(exc.__cause__ or exc)
                missing = re.match(r"Could not override '([^']+)'", why)
                if missing:
                    key = missing.group(1)
                    raise BenchError(
                        f"-S {override}: params.yaml has no key {key} (a typo? `++{override.lstrip('+')}` adds "
                        "a key where params.yaml allows one, e.g. a model's recipe key)"
                    ) from None
                raise BenchError(f"-S {override}: {why.splitlines()[0]}") from None
        return paramslib.parse(paramslib.read_yaml(copy), source=f"params.yaml with -S {' -S '.join(overrides)}")


def _clean_tree():
    status = _git("status", "--porcelain", "--untracked-files=normal")
    if status:
        first = status.splitlines()[0][3:]
        count = len(status.splitlines())
        raise BenchError(
            f"uncommitted changes ({first}{f' and {count - 1} more' if count > 1 else ''}): each task clones the "
            "committed project, as queued experiments see only committed files; commit them "
            "(git add -A && git commit) and push, or stash them"
        )


def _git_remote(name, commit, experiment_refs):
    """The remote's URL (absolute when it is a local path); BenchError unless it holds `commit` and none of the refs."""
    url = _git("remote", "get-url", name, check=False)
    if url is None:
        raise BenchError(
            f"no git remote {name!r}: tasks clone the project from it and push their experiments to it; "
            f"add one (git remote add {name} <url>, e.g. a bare repository on a shared filesystem) or name "
            "another with --git-remote"
        )
    if "://" not in url and not re.match(r"^[^/]+@[^/]+:", url) and Path(url).exists():
        url = str(Path(url).resolve())  # a relative path means nothing in a task's clone
    listing = _git("ls-remote", name, check=False)
    if listing is None:
        raise BenchError(f"git remote {name!r} ({url}) does not answer `git ls-remote`: check its URL and access")
    refs = dict(reversed(line.split("\t")) for line in listing.splitlines() if "\t" in line)
    taken = sorted(set(experiment_refs) & set(refs))
    if taken:
        raise BenchError(
            f"git remote {name!r} already has experiment {taken[0].rsplit('/', 1)[1]} of this commit: "
            "choose another --name"
        )
    heads = {sha for ref, sha in refs.items() if ref.startswith(("refs/heads/", "refs/tags/"))}
    if commit not in heads and not any(
        _git("merge-base", "--is-ancestor", commit, sha, check=False) is not None for sha in heads
    ):
        raise BenchError(
            f"commit {commit[:7]} is not on git remote {name!r}, and each task clones it from there: "
            f"push it first (git push {name} HEAD)"
        )
    return url


def _dvc_remote(name):
    """(remote name, cache dir): the DVC remote, defined where a task's clone sees it, and the project's cache."""
    from dvc.repo import Repo

    repo = Repo(".")
    try:
        config = repo.config
        name = name or config["core"].get("remote")
        if not name:
            raise BenchError(
                "no DVC remote: tasks push their models and data there, and other machines pull them from it; "
                "add a default one (dvc remote add -d store /shared/dvc-store, then commit .dvc/config) "
                "or name one with --dvc-remote"
            )
        if name not in config["remote"]:
            known = ", ".join(config["remote"]) or "none"
            raise BenchError(f"--dvc-remote {name}: no such DVC remote (dvc remote list: {known})")
        if not any(name in repo.config.read(level).get("remote", {}) for level in ("repo", "global", "system")):
            raise BenchError(
                f"DVC remote {name!r} is defined in .dvc/config.local only, which a task's clone does not have: "
                f"add it to .dvc/config (dvc remote add {name} <url>) and commit that"
            )
        url = config["remote"][name]["url"]
        if "://" not in url and not os.path.isabs(url):
            raise BenchError(
                f"DVC remote {name!r} is a relative path ({url}), which each task's clone would resolve elsewhere: "
                f"make it absolute (dvc remote modify {name} url /abs/path) and commit .dvc/config"
            )
        return name, str(Path(repo.cache.local_cache_dir).resolve())
    finally:
        repo.close()


def _git_user():
    user, email = _git("config", "user.name", check=False), _git("config", "user.email", check=False)
    if not (user and email):
        raise BenchError(
            "no git identity (git config user.name / user.email): each task's `dvc exp run` commits its "
            "experiment; set them (git config user.name 'Your Name'; git config user.email you@example.org)"
        )
    return user, email


def _nodes(requested, tasks, parsed):
    """Nodes per task: --nodes (then compute.nodes follows in every task) or compute.nodes, equal in every task."""
    if requested is not None:
        if any(o.lstrip("+").startswith("compute.nodes=") for task in tasks for o in task):
            raise BenchError("give the nodes per task with --nodes or with -S compute.nodes, not both")
        return requested
    counts = sorted({p.compute.nodes for p in parsed})
    if len(counts) > 1:
        raise BenchError(
            f"-S varies compute.nodes ({', '.join(map(str, counts))}), but every task of an array gets the "
            "same nodes: submit one sweep per node count (--nodes)"
        )
    return counts[0]


def prepare(args):
    """Every check, in order, before anything is written or submitted; the Sweep to submit."""
    if not Path("params.yaml").is_file() or not Path("dvc.yaml").is_file():
        raise BenchError("run `cifarbench sweep` from the project root (where params.yaml and dvc.yaml are)")
    if not args.dry_run and shutil.which("sbatch") is None:
        raise BenchError(
            "sbatch not found on PATH: run `cifarbench sweep --slurm` on a SLURM login node "
            "(or see the batch script with --dry-run)"
        )
    for arg in args.sbatch_arg:
        if "\n" in arg or not arg.startswith("-"):
            raise BenchError(f"--sbatch-arg {arg!r}: one sbatch option, such as --sbatch-arg=--partition=gpu")
    name = args.name or time.strftime("sweep-%Y%m%d-%H%M%S")
    if not NAME.match(name):
        raise BenchError(f"--name {name!r}: letters, digits, '.', '_' and '-' only (it names git refs and folders)")
    sweep_dir = (SWEEPS / name).resolve()
    if sweep_dir.exists():
        raise BenchError(f"sweep {name} exists already ({SWEEPS / name}): choose another --name")
    if _git("rev-parse", "--show-toplevel", check=False) is None:
        raise BenchError("not a git repository: a sweep clones the project's committed state from its git remote")
    _clean_tree()
    commit = _git("rev-parse", "HEAD")
    tasks = expand(args.set_param)
    parsed = [validate(task) for task in tasks]  # ParamsError names the key and the value
    nodes = _nodes(args.nodes, tasks, parsed)
    if args.nodes is not None:
        tasks = [[*task, f"++compute.nodes={nodes}"] for task in tasks]  # ++: also where params.yaml lacks it
        parsed = [validate(task) for task in tasks]
    refs = [f"refs/exps/{commit[:2]}/{commit[2:]}/{name}-{i}" for i in range(1, len(tasks) + 1)]
    git_url = _git_remote(args.git_remote, commit, refs)
    dvc_remote, cache_dir = _dvc_remote(args.dvc_remote)
    python = Path(os.path.abspath(args.python or sys.executable))  # not resolved: a venv's python is a link
    if not python.is_file():
        raise BenchError(f"--python {python}: no such file")
    return Sweep(
        name=name,
        tasks=tasks,
        nodes=nodes,
        commit=commit,
        git_remote=args.git_remote,
        git_url=git_url,
        dvc_remote=dvc_remote,
        cache_dir=cache_dir,
        sweep_dir=sweep_dir,
        bin_dir=str(python.parent),
        git_user=_git_user(),
        sbatch_args=list(args.sbatch_arg),
        targets=list(args.targets),
    )


def script(sweep):
    """The batch script's text."""
    q = shlex.quote
    cases = "\n".join(
        f"  {i}) set -- {' '.join(f'-S {q(o)}' for o in task)} ;;" for i, task in enumerate(sweep.tasks, 1)
    )
    values = {
        "name": sweep.name,
        "commit": sweep.commit,
        "count": str(len(sweep.tasks)),
        "nodes": str(sweep.nodes),
        "git_remote": sweep.git_remote,
        "script": q(str(sweep.script_path)),
        "sweep_dir": q(str(sweep.sweep_dir)),
        "sbatch_args": "".join(f"#SBATCH {arg}\n" for arg in sweep.sbatch_args),
        "cases": cases,
        "bin_dir": q(sweep.bin_dir),
        "git_url": q(sweep.git_url),
        "git_user": q(sweep.git_user[0]),
        "git_email": q(sweep.git_user[1]),
        "cache_dir": q(sweep.cache_dir),
        "dvc_remote": q(sweep.dvc_remote),
        "targets": "".join(f" {q(t)}" for t in sweep.targets),
    }
    text = TEMPLATE
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    assert "{{" not in text, text
    return text.replace("set --  ;;", "set -- ;;  # the committed params as they are")


def submit(sweep):
    """Write the script and submit it; the job id."""
    sweep.sweep_dir.mkdir(parents=True)
    sweep.script_path.write_text(script(sweep))
    (sweep.sweep_dir / "tasks.json").write_text(json.dumps({"commit": sweep.commit, "tasks": sweep.tasks}, indent=1))
    proc = subprocess.run(["sbatch", "--parsable", str(sweep.script_path)], capture_output=True, text=True)
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise BenchError(f"sbatch refused the sweep: {why} (the batch script: {_shown(sweep.script_path)})")
    return proc.stdout.strip().split(";")[0]


def _shown(path):
    """A path relative to the project root where it is under it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def wait(job_id):
    """Until every task of the array has left SLURM's queue."""
    while subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True, text=True).stdout.strip():
        time.sleep(POLL_SECONDS)


def failures(sweep):
    """[(task, why)] for the tasks that did not end with status 0 (from their .exit files)."""
    out = []
    for i in range(1, len(sweep.tasks) + 1):
        status = sweep.sweep_dir / f"{i}.exit"
        code = status.read_text().strip() if status.is_file() else None
        if code != "0":
            why = {"143": "cancelled (scancel or its time limit)", None: "killed (no exit status)"}
            out.append((i, why.get(code, f"exit status {code}")))
    return out


def describe(task):
    return " ".join(task) or "(params.yaml as committed)"


def run(args):
    """The `cifarbench sweep` command; its exit status."""
    sweep = prepare(args)
    if args.dry_run:
        print(script(sweep), end="")
        return 0
    job = submit(sweep)
    script_path, folder = _shown(sweep.script_path), _shown(sweep.sweep_dir)
    print(
        f"sweep {sweep.name}: SLURM job {job}, {len(sweep.tasks)} experiments from commit {sweep.commit[:7]}, "
        f"{sweep.nodes} node{'s' if sweep.nodes > 1 else ''} each"
    )
    for i, task in enumerate(sweep.tasks, 1):
        print(f"  {sweep.name}-{i}  {describe(task)}")
    print(f"batch script {script_path}; logs {folder}/<i>.log; rerun task i alone: sbatch --array=<i> {script_path}")
    if not args.wait:
        print(f"gather them on any machine when they are done: dvc exp pull {sweep.git_remote} && dvc exp show")
        return 0
    wait(job)
    failed = failures(sweep)
    for i, why in failed:
        print(
            f"task {i} ({sweep.name}-{i}: {describe(sweep.tasks[i - 1])}) failed, {why}: log {folder}/{i}.log; "
            f"rerun it alone: sbatch --array={i} {script_path}",
            file=sys.stderr,
        )
    done = len(sweep.tasks) - len(failed)
    print(
        f"{done} of {len(sweep.tasks)} experiments pushed to {sweep.git_remote}; gather them: "
        f"dvc exp pull {sweep.git_remote} && dvc exp show"
    )
    return 1 if failed else 0
