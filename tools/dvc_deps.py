"""Rewrite each dvc.yaml stage's code deps to its import closure: `python tools/dvc_deps.py [--check]`.

A stage lists exactly the project files its script imports (cifarbench.sourcefiles.closure), so a
code edit reruns only the stages that run the edited file. After adding or moving an import, run
this instead of editing the lists by hand; tests/test_stage_code.py fails while a list is stale.
Only the `- cifarbench/...` and `- stages/...` lines of each `deps:` change; data deps, comments
and everything else in dvc.yaml stay as written.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cifarbench import sourcefiles  # noqa: E402

CODE = re.compile(r"^(\s+)- (cifarbench|stages)/\S+\s*$")


def rewritten(text):
    out, script, in_deps = [], None, False
    for line in text.splitlines(keepends=True):
        if m := re.search(r"cmd: python (stages/\S+\.py)", line):
            script = m.group(1)
        if re.match(r"^\s+deps:\s*$", line):
            in_deps, indent = True, None
            out.append(line)
            continue
        if in_deps:
            m = CODE.match(line)
            if m:
                if indent is None:  # the first code line: the whole closure goes here
                    indent = m.group(1)
                    files = sourcefiles.closure(ROOT / script, ROOT)
                    out += [f"{indent}- {f}\n" for f in [script] + [f for f in files if f != script]]
                continue
            if not re.match(r"^\s+- ", line):
                in_deps = False
        out.append(line)
    return "".join(out)


def main():
    path = ROOT / "dvc.yaml"
    text = path.read_text()
    new = rewritten(text)
    if "--check" in sys.argv[1:]:
        sys.exit(0 if new == text else "dvc.yaml's code deps are stale: run `python tools/dvc_deps.py`")
    path.write_text(new)
    print("dvc.yaml: code deps " + ("unchanged" if new == text else "rewritten"))


if __name__ == "__main__":
    main()
