"""The project source files a stage script runs: its import closure within cifarbench/ and stages/.

dvc.yaml lists exactly these files as each stage's code dependencies, and a
training stage's resume fingerprint hashes the same files, so editing a
plotting module reruns no training and resumes none from a stale state,
while editing the training loop reruns every training. The closure is read
from the source (every `import` anywhere in a file, late imports included),
not from what a run happened to import, so it does not depend on the inputs.
Data files a module reads from its own folder (frost_textures.npz beside
data/corruptions.py) count too: a string in the module that names such a file.
A test recomputes it for every stage and compares with dvc.yaml.

A training's resume fingerprint hashes fewer files: its closure less NO_NUMBERS,
the modules that cannot change what a training computes. DVC still reruns the
stage when one of those changes (they are its code), and the stage then
resumes from, or finishes with, the state it saved (see train/resume.py).
"""

import ast
import hashlib
from pathlib import Path

PACKAGE = "cifarbench"

# Modules in a training stage's import closure that cannot change the numbers it computes, each with
# the reason. Editing one reruns the stage under DVC, but a killed run resumes across the edit and a
# finished one writes its outputs again from its state without training. Everything else a training
# imports (data, transforms, models, inference, runtime/device and distributed, the engine, schedules,
# resume, checkpoint and the stage scripts) counts: an edit there trains again.
NO_NUMBERS = {
    "cifarbench/errors.py": "the error class: what a stop says, not what a run computes",
    "cifarbench/atomic.py": "how files reach disk (temporary file, then rename), not what they hold",
    "cifarbench/paths.py": "where files go; the files' contents (data, starting checkpoint) are fingerprinted",
    "cifarbench/inputs.py": "checks files one stage hands another; a file it accepts is used as written",
    "cifarbench/params.py": "reads and validates params.yaml; its results (recipe, spec, compute) are fingerprinted",
    "cifarbench/sourcefiles.py": "lists the stage's files (this list); what they hold is fingerprinted",
    "cifarbench/models/checks.py": "checks before any work that timm can build every model as asked",
    "cifarbench/pipeline/entry.py": "parses the stage's arguments and prints its error line",
    "cifarbench/pipeline/model_entry.py": "prints the device line, starts torchrun, words out-of-memory stops",
    "cifarbench/pipeline/recipes.py": "writes and checks the recipe files; the resolved recipe is fingerprinted",
    "cifarbench/pipeline/tuned.py": "reads the tuning's choice; the recipe it gives the training is fingerprinted",
    "cifarbench/runtime/memory.py": "reads peak memory and words out-of-memory stops",
    "cifarbench/runtime/slurm.py": "reads the SLURM allocation; the world size is fingerprinted, not the nodes",
}


def _module_file(root, dotted):
    """The file of module `dotted` under root, or None when it is not one of ours."""
    parts = dotted.split(".")
    if parts[0] != PACKAGE:
        return None
    base = Path(root, *parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(root, path):
    """The dotted package a file under root belongs to (cifarbench.data for cifarbench/data/x.py)."""
    try:
        return ".".join(Path(path).resolve().relative_to(Path(root).resolve()).parent.parts)
    except ValueError:
        return ""  # not under root (a stage script given from elsewhere): no relative imports to resolve


def _imported_modules(path, root=None):
    """Dotted names of every module `path` imports (for `from a import b`, both a and a.b).

    Relative imports (`from . import x`, `from ..data import y`) resolve against the file's own
    package when root is given, so a dependency written either way is never dropped from dvc.yaml.
    """
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                package = _package_of(root, path).split(".") if root is not None else []
                base = package[: len(package) - (node.level - 1)] if node.level - 1 <= len(package) else []
                module = ".".join([*base, module] if module else base)
                if not base:
                    continue
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]
    return names


def has_code(path):
    """Whether a file holds more than a docstring (room __init__.py files hold only their docstring)."""
    body = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path)).body
    return not (len(body) <= 1 and all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body))


def _data_files(path):
    """Files beside `path` that it names in a string literal (data it loads, e.g. "frost_textures.npz")."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    names = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    beside = {p.name for p in Path(path).parent.iterdir() if p.is_file() and p.suffix != ".py"}
    return [Path(path).parent / name for name in sorted(names & beside)]


def _with_packages(root, path):
    """`path` plus the __init__.py of every package above it that holds code: importing a module runs them.

    A docstring-only __init__.py (every room's) runs nothing, so editing a room's description
    reruns no stage."""
    path = Path(path)
    files = [path]
    for parent in path.relative_to(root).parents:
        init = Path(root, parent, "__init__.py")
        if parent != Path(".") and init.is_file() and init != path and has_code(init):
            files.append(init)
    return files


def project_root(script):
    """The project a stage script belongs to: the folder holding its stages/ folder (and cifarbench/)."""
    return Path(script).resolve().parent.parent


def closure(script, root=None):
    """Sorted project-relative paths (str) of `script` and every project module it imports, transitively.

    root: the project folder (default: the script's, see project_root), not the working directory.
    """
    script = Path(script).resolve()
    root = Path(root).resolve() if root is not None else project_root(script)
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.suffix != ".py":
            continue  # a data file: nothing imported from it
        todo += [p.resolve() for p in _data_files(path)]
        for name in _imported_modules(path, root):
            found = _module_file(root, name)
            if found is not None and (found.name != "__init__.py" or has_code(found)):
                todo += [p.resolve() for p in _with_packages(root, found)]
    return sorted(p.relative_to(root).as_posix() for p in seen)


def numbers_closure(script, root=None):
    """closure(script) less NO_NUMBERS: the files whose edit can change what a training computes."""
    return [f for f in closure(script, root) if f not in NO_NUMBERS]


def digest(files, root):
    """MD5 over the files' names and bytes: changes exactly when one of them does."""
    h = hashlib.md5()
    for rel in sorted(files):
        h.update(rel.encode())
        h.update(Path(root, rel).read_bytes())
    return h.hexdigest()


if __name__ == "__main__":  # `python -m cifarbench.sourcefiles stages/evaluate.py`: the deps lines for dvc.yaml
    import sys

    for script in sys.argv[1:]:
        print(f"# {script}")
        print("\n".join(f"      - {f}" for f in [script] + [f for f in closure(script) if f != script]))
