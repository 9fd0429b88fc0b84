"""Print, one per line, the uv flags that make `uv pip install` look where pip would.

pip reads its package sources from pip.conf files and PIP_* variables (a machine may keep
wheels on local disk through find-links or a file:// extra index); uv reads neither. So that
tools/install.sh's uv path takes the same files pip would (and not, say, 3 GB of CUDA torch
from PyPI), it asks pip for its settings (`pip config list`, the same values pip itself uses)
and translates the ones that say where packages come from. Run with the Python that would run
pip. Prints nothing where pip has no such settings, or where this Python has no pip.
"""

import ast
import subprocess
import sys

# pip's option -> uv's flag; each value may list several entries, separated by whitespace
# (as pip splits them). Only where packages come from: pip's `constraint` (this machine caps
# torch at the release on its disk) is left out, because the lock pins every version with
# `==` already and uv's --require-hashes refuses a constraint without hashes.
FLAGS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
}
# pip's precedence, lowest first: [global] in any file, then [install], then PIP_* variables.
SECTIONS = ("global", "install", ":env:")


def pip_settings(python: str) -> dict[str, str]:
    done = subprocess.run([python, "-m", "pip", "config", "list"], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        return {}
    found: dict[str, dict[str, str]] = {section: {} for section in SECTIONS}
    for line in done.stdout.splitlines():  # section.key='value' (the value is a Python repr)
        name, sep, value = line.partition("=")
        section, dot, key = name.rpartition(".")
        if sep and dot and section in found:
            found[section][key] = ast.literal_eval(value)
    merged: dict[str, str] = {}
    for section in SECTIONS:
        merged.update(found[section])
    return merged


def uv_args(settings: dict[str, str]) -> list[str]:
    args = []
    for option, flag in FLAGS.items():
        for entry in settings.get(option, "").split():
            args += [flag, entry]
    if settings.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        args.append("--no-index")
    return args


if __name__ == "__main__":
    print("\n".join(uv_args(pip_settings(sys.argv[1] if len(sys.argv) > 1 else sys.executable))))
