"""dvc.yaml lists exactly the project files each stage runs, so code edits rerun only what they touch.

Fast (no DVC run): each stage's import closure within cifarbench/ and stages/
is computed from the source and compared with its dvc.yaml deps; a new import
that is not listed (or a listed file no longer imported) fails here, naming the
file, instead of going stale in silence.
"""

import ast
import re
import subprocess
import sys

import pytest
from conftest import ROOT
from ruamel.yaml import YAML

from cifarbench import sourcefiles

STAGES = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]
CODE = re.compile(r"^(cifarbench|stages)/")


def script_of(stage):
    return re.search(r"python (stages/\S+\.py)", stage["cmd"]).group(1)


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_deps_are_exactly_its_import_closure(name):
    stage = STAGES[name]
    listed = {d for d in stage["deps"] if isinstance(d, str) and CODE.match(d)}
    needed = set(sourcefiles.closure(ROOT / script_of(stage)))
    missing, extra = sorted(needed - listed), sorted(listed - needed)
    fix = "run `python tools/dvc_deps.py`"
    assert not missing, f"dvc.yaml stage {name!r} runs but does not list: {', '.join(missing)} ({fix})"
    assert not extra, f"dvc.yaml stage {name!r} lists files it does not import: {', '.join(extra)} ({fix})"


def test_training_code_holds_no_reporting_code():
    """Editing a figure, the report or evaluation measurements must never rerun a training."""
    reporting = (
        "cifarbench/render/",
        "cifarbench/eval/",
        "cifarbench/pipeline/report.py",
        "cifarbench/pipeline/summaries.py",
        "cifarbench/pipeline/evaluate.py",
        "cifarbench/pipeline/embed.py",
        "cifarbench/pipeline/probe.py",
    )
    for script in ("stages/train_cifar10.py", "stages/transfer_cifar100.py"):
        closure = sourcefiles.closure(ROOT / script)
        assert "cifarbench/train/engine.py" in closure  # the check looks at real paths
        found = [f for f in closure if f.startswith(reporting)]
        assert not found, f"{script} imports {found}"


def test_closure_follows_late_and_relative_imports_and_package_inits_with_code(tmp_path):
    (tmp_path / "stages").mkdir()
    package = tmp_path / "cifarbench"
    (package / "sub").mkdir(parents=True)
    (package / "room").mkdir()
    (package / "__init__.py").write_text('"""Only a docstring: runs nothing, so no stage depends on it."""\n')
    (package / "sub" / "__init__.py").write_text("CONSTANT = 1\n")  # code: importing sub runs it
    (package / "sub" / "leaf.py").write_text("import numpy\n")
    (package / "late.py").write_text("def f():\n    from cifarbench.sub import leaf\n")
    (package / "data.py").write_text("TABLE = 'table.npz'\n")
    (package / "table.npz").write_bytes(b"x")
    (package / "unused.py").write_text("")
    (package / "room" / "__init__.py").write_text("")
    (package / "room" / "a.py").write_text("from . import b\nfrom ..sub import leaf\n")
    (package / "room" / "b.py").write_text("from .c import thing\n")
    (package / "room" / "c.py").write_text("thing = 1\n")
    (tmp_path / "stages" / "s.py").write_text("from cifarbench import late, data\nfrom cifarbench.room import a\n")
    assert sourcefiles.closure(tmp_path / "stages" / "s.py") == [
        "cifarbench/data.py",
        "cifarbench/late.py",
        "cifarbench/room/a.py",
        "cifarbench/room/b.py",
        "cifarbench/room/c.py",
        "cifarbench/sub/__init__.py",
        "cifarbench/sub/leaf.py",
        "cifarbench/table.npz",
        "stages/s.py",
    ]


def test_fingerprint_code_changes_with_the_training_loop_not_with_a_figure_or_an_error_message(tmp_path):
    """The resume fingerprint's code digest: a stale state is never resumed; a figure edit, and an edit of a
    module that changes no number (an error message), keep it."""
    import shutil

    for folder in ("cifarbench", "stages"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    script = tmp_path / "stages" / "train_cifar10.py"

    def digest():
        return sourcefiles.digest(sourcefiles.numbers_closure(script), sourcefiles.project_root(script))

    before = digest()
    for harmless in ("cifarbench/render/figures.py", "cifarbench/errors.py", "cifarbench/runtime/slurm.py"):
        with open(tmp_path / harmless, "a") as f:
            f.write("# a caption or message fix\n")
        assert digest() == before, harmless
    with open(tmp_path / "cifarbench" / "train" / "engine.py", "a") as f:
        f.write("# a training-loop change\n")
    assert digest() != before


def test_files_left_out_of_the_fingerprint_are_training_files_with_a_reason():
    """NO_NUMBERS names real files of the training stages' closures, each with its reason, and none of the
    modules that decide what an epoch computes."""
    closures = {
        f for s in ("stages/train_cifar10.py", "stages/transfer_cifar100.py") for f in sourcefiles.closure(ROOT / s)
    }
    for path, reason in sourcefiles.NO_NUMBERS.items():
        assert path in closures, f"{path} is not imported by a training stage: drop it from NO_NUMBERS"
        assert len(reason.split()) >= 5, path
    deciding = {
        "cifarbench/train/engine.py",
        "cifarbench/train/schedules.py",
        "cifarbench/train/resume.py",
        "cifarbench/data/dataset.py",
        "cifarbench/data/transforms.py",
        "cifarbench/models/timm_models.py",
        "cifarbench/models/inference.py",
        "cifarbench/models/checkpoint.py",
        "cifarbench/runtime/device.py",
        "cifarbench/runtime/distributed.py",
        "cifarbench/pipeline/train.py",
        "stages/train_cifar10.py",
        "stages/transfer_cifar100.py",
    }
    assert deciding <= closures and not deciding & set(sourcefiles.NO_NUMBERS)
    assert set(sourcefiles.numbers_closure(ROOT / "stages/train_cifar10.py")) == (
        set(sourcefiles.closure(ROOT / "stages/train_cifar10.py")) - set(sourcefiles.NO_NUMBERS)
    )


def _package_imports():
    """{module file: set of cifarbench module files it imports}, for every file of the package."""
    graph = {}
    for path in sorted((ROOT / "cifarbench").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        graph[rel] = set()
        for name in sourcefiles._imported_modules(path, ROOT):
            found = sourcefiles._module_file(ROOT, name)
            if found is not None and found.resolve() != path.resolve() and sourcefiles.has_code(found):
                graph[rel].add(found.relative_to(ROOT).as_posix())  # (a docstring-only __init__ runs nothing)
    return graph


# The rooms, and the rooms each may import besides its own (the foundations at the package root are
# below every room). A room never imports one above it: the tree reads bottom-up.
FOUNDATIONS = {"errors", "params", "paths", "atomic", "inputs", "sourcefiles"}
ROOMS = {
    "data": set(),
    "runtime": set(),
    "models": {"data", "runtime"},
    "train": {"data", "runtime", "models"},
    "eval": {"data", "runtime", "models"},
    "render": set(),
    "pipeline": {"data", "runtime", "models", "train", "eval", "render"},
    "commands": {"data", "runtime", "models", "train", "eval", "render", "pipeline"},
}


def room_of(rel):
    """'foundations', a room name, 'cli' or 'package' (an __init__.py) for a file under cifarbench/."""
    parts = rel.split("/")[1:]
    if len(parts) == 1:
        name = parts[0].removesuffix(".py")
        return "foundations" if name in FOUNDATIONS else name
    return parts[0]


def test_the_package_is_foundations_rooms_and_cli_only():
    rooms = {room_of(rel) for rel in _package_imports()}
    assert rooms == {"foundations", "__init__", "cli"} | set(ROOMS), sorted(rooms)


def test_every_package_init_is_a_docstring_only():
    """Re-exports would grow every stage's import closure; a docstring runs nothing (sourcefiles skips it)."""
    for init in sorted((ROOT / "cifarbench").rglob("__init__.py")):
        assert ast.get_docstring(ast.parse(init.read_text())), f"{init.relative_to(ROOT)} has no docstring"
        assert not sourcefiles.has_code(init), f"{init.relative_to(ROOT)} holds code: move it into a module"


def test_foundations_import_only_foundations_and_rooms_only_rooms_below_them():
    graph = _package_imports()
    for leaf in ("cifarbench/errors.py", "cifarbench/params.py", "cifarbench/paths.py"):
        assert graph[leaf] == set(), f"{leaf} imports {sorted(graph[leaf])}"
    for rel, deps in graph.items():
        room = room_of(rel)
        allowed = (
            {"foundations"}
            if room in ("foundations", "__init__")
            else {"foundations", room} | ROOMS[room]
            if room in ROOMS
            else {"foundations"} | set(ROOMS)
        )
        for dep in deps:
            assert room_of(dep) in allowed, f"{rel} ({room}) imports {dep} ({room_of(dep)}): a room above it"


def test_imports_run_one_way():
    graph = _package_imports()
    # no cycle anywhere in the package: a depth-first search finds no back edge
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                raise AssertionError("import cycle: " + " -> ".join(trail + [node, nxt]))
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [])
    assert not any("stages/" in dep for deps in graph.values() for dep in deps)


def test_the_room_rule_fails_on_an_upward_import(monkeypatch):
    """The direction test can fail: a data module importing the pipeline is caught."""
    graph = _package_imports()
    graph["cifarbench/data/dataset.py"] = graph["cifarbench/data/dataset.py"] | {"cifarbench/pipeline/report.py"}
    monkeypatch.setattr(sys.modules[__name__], "_package_imports", lambda: graph)
    with pytest.raises(AssertionError, match="a room above it"):
        test_foundations_import_only_foundations_and_rooms_only_rooms_below_them()


def declared_output_prefixes():
    """The fixed part (before the first `${`) of every path a stage writes, plus dvc.lock."""
    doc = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())
    paths = ["dvc.lock"]
    for stage in doc["stages"].values():
        for field in ("outs", "metrics", "plots"):
            for entry in stage.get(field, []):
                paths.append(entry if isinstance(entry, str) else next(iter(entry)))
    for entry in doc.get("metrics", []) + [next(iter(p)) if isinstance(p, dict) else p for p in doc.get("plots", [])]:
        paths.append(entry)
    return sorted({p.split("${")[0] for p in paths})


def test_the_repository_commits_no_pipeline_output():
    """Results belong to whoever ran the pipeline: a committed demo dvc.lock or metrics file would
    make a fresh clone's `dvc status` and `dvc metrics diff` report someone else's run."""
    proc = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip("not a git checkout")
    prefixes = declared_output_prefixes()
    assert "metrics/" in prefixes or any(p.startswith("metrics/") for p in prefixes), prefixes
    committed = [f for f in proc.stdout.splitlines() if any(f.startswith(p) for p in prefixes)]
    assert not committed, f"pipeline outputs are committed (git rm -r --cached them): {committed[:5]}"
