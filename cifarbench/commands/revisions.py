"""Revisions as `dvc metrics diff` names them, and files read at them without checking anything out.

A revision is the workspace, a git commit (anything git resolves: a sha, branch, tag, `HEAD~2`) or a
DVC experiment's name (`dvc exp show`). DVC 3.x keeps an experiment as the git ref
`refs/exps/<baseline sha[:2]>/<baseline sha[2:]>/<name>` and resolves a name git does not know
through those refs, taking the one based on HEAD when several experiments share the name
(dvc/scm.py `resolve_rev`); this module does the same with git's own commands, in milliseconds
(importing DVC takes seconds). Files at commits come through one `git cat-file --batch` for any
number of revisions and paths; the workspace's from disk.
"""

import dataclasses
import re
import subprocess
from pathlib import Path

from cifarbench.errors import BenchError

WORKSPACE = "workspace"  # what `dvc metrics diff` calls the working tree
_EXPERIMENT_REF = re.compile(r"^refs/exps/(?P<a>[0-9a-f]{2})/(?P<b>[0-9a-f]{38})/(?P<name>[^/]+)$")


@dataclasses.dataclass(frozen=True)
class Revision:
    """One side of a comparison: the workspace (sha None), a commit, or an experiment (a commit with a baseline)."""

    name: str  # as the user gave it, or the experiment's name
    sha: str | None = None
    baseline: str | None = None  # an experiment's baseline commit

    @property
    def label(self):
        return WORKSPACE if self.sha is None else f"{self.name} ({self.sha[:7]})"

    @property
    def experiment(self):
        return self.baseline is not None


def _git(*args, stdin=None):
    try:
        return subprocess.run(["git", *args], input=stdin, capture_output=True, check=False)
    except FileNotFoundError:
        raise BenchError("git is not installed: `cifarbench compare` reads results through git") from None


def project_prefix():
    """The project folder's path inside its git repository ('' at the top), checking that there is one."""
    proc = _git("rev-parse", "--show-prefix")
    if proc.returncode != 0:
        raise BenchError("not inside a git repository: run `cifarbench compare` from the project root of a git clone")
    return proc.stdout.decode().strip()


def _commit(text):
    proc = _git("rev-parse", "--verify", "--quiet", f"{text}^{{commit}}")
    return proc.stdout.decode().strip() if proc.returncode == 0 else None


def experiments():
    """Every experiment DVC keeps: [Revision], oldest first (as they ran), then by name."""
    proc = _git("for-each-ref", "--format=%(refname) %(objectname) %(committerdate:unix)", "refs/exps/")
    found = []
    for line in proc.stdout.decode().splitlines():
        ref, sha, when = line.split(" ")
        match = _EXPERIMENT_REF.match(ref)
        if match:
            found.append((int(when or 0), match["name"], Revision(match["name"], sha, match["a"] + match["b"])))
    return [revision for _, _, revision in sorted(found, key=lambda f: f[:2])]


def resolve(text):
    """The Revision `text` names: 'workspace', a commit git resolves, or an experiment name (as DVC resolves it)."""
    if text == WORKSPACE:
        return Revision(WORKSPACE)
    if not text or text.startswith("-"):
        raise BenchError(f"{text!r} is not a revision: give a commit, branch, tag or experiment name")
    sha = _commit(text)
    if sha:
        return Revision(text, sha)
    named = [e for e in experiments() if e.name == text]
    if len(named) > 1:
        head = _commit("HEAD")
        named = [e for e in named if e.baseline == head] or named
        if len(named) > 1:
            raise BenchError(
                f"experiment name {text!r} is ambiguous: {len(named)} experiments of different commits share it "
                "(`dvc exp show -A` lists them); give its commit instead (`dvc exp show --sha`)"
            )
    if named:
        return named[0]
    raise BenchError(
        f"unknown revision {text!r}: not a commit, branch or tag git knows (`git log --oneline`, `git branch`, "
        "`git tag`) nor an experiment `dvc exp show` lists"
    )


def experiments_of(baseline):
    """The experiments whose baseline is commit `baseline` (a Revision), oldest first."""
    return [e for e in experiments() if e.baseline == baseline.sha]


def read(requests):
    """The bytes of each (Revision, path) in `requests`, None where the revision has no such file.

    Paths are relative to the project root (the current folder). One `git cat-file --batch`
    serves every request at a commit; the workspace's files are read from disk.
    """
    out = [None] * len(requests)
    at_commits = []
    for i, (revision, path) in enumerate(requests):
        if revision.sha is None:
            file = Path(path)
            out[i] = file.read_bytes() if file.is_file() else None
        else:
            at_commits.append(i)
    if not at_commits:
        return out
    prefix = project_prefix()
    names = "".join(f"{requests[i][0].sha}:{prefix}{Path(requests[i][1]).as_posix()}\n" for i in at_commits)
    proc = _git("cat-file", "--batch", stdin=names.encode())
    if proc.returncode != 0:
        raise BenchError(f"git cat-file failed: {proc.stderr.decode().strip() or proc.returncode}")
    data, pos = proc.stdout, 0
    for i in at_commits:
        end = data.index(b"\n", pos)
        header = data[pos:end].split(b" ")
        pos = end + 1
        if len(header) == 3 and header[2].isdigit():  # <oid> <type> <size>, then the content and a newline
            size = int(header[2])
            if header[1] == b"blob":
                out[i] = data[pos : pos + size]
            pos += size + 1
    return out
