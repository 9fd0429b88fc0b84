#!/usr/bin/env bash
# tools/install.sh REQUIREMENTS VENV
#
# Creates the virtual environment VENV (unless it exists) and installs into it the pins of
# REQUIREMENTS, a lock whose every pin carries sha256 hashes (`make setup` passes
# requirements.txt and .venv). Hash checking is on (--require-hashes): every file, downloaded
# or taken from this machine's disk, must match a hash in the lock, or nothing is installed.
#
#   UV       a uv executable: uv installs (parallel downloads and unpacking, several times
#            faster than pip). Empty or unset: pip installs, as on a machine without uv.
#   PYTHON   the interpreter VENV is made from (default python3).
#
# pip may be configured to take packages from local disk (find-links, a file:// index, in
# pip.conf or PIP_* variables); uv reads none of that, so uv is handed pip's own settings
# (tools/uv_args_from_pip.py) and takes the same files pip would. Where pip has no such
# settings uv uses PyPI, as pip does.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

if [ $# -ne 2 ]; then
    echo "usage: $0 REQUIREMENTS VENV (e.g. $0 requirements.txt .venv)" >&2
    exit 2
fi
if [ ! -f "$1" ]; then
    echo "error: $1: no such requirements file; pass the lock, e.g. requirements.txt" >&2
    exit 2
fi
req="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
venv=$2
PYTHON=${PYTHON:-python3}
UV=${UV:-}
if [ -n "$UV" ] && ! command -v "$UV" >/dev/null; then
    echo "error: UV=$UV is not an executable: unset UV to install with pip, or \`make setup\` to get uv" >&2
    exit 2
fi

# Under --require-hashes a pin without hashes makes pip and uv fail with a long message;
# this names the pin and the fix in one line first (offline).
"$here/lock.sh" hashes "$req" >/dev/null

# The same environment either way: a venv with pip in it (for the editable install that
# follows and for whoever adds a package by hand later).
if [ ! -x "$venv/bin/python" ]; then
    "$PYTHON" -m venv "$venv"
fi

start=$SECONDS
if [ -n "$UV" ]; then
    sources=()
    while IFS= read -r arg; do
        sources+=("$arg")
    done < <("$PYTHON" "$here/uv_args_from_pip.py")
    # unsafe-best-match: consider every index for each package, as pip does (uv's default takes
    # the first index that has the package at all, so a local index holding an older release
    # would hide PyPI's). Safe here: every file must match the lock's hash whichever index
    # serves it. --compile-bytecode: pip writes .pyc files at install; uv does only if asked,
    # and without them every process where PYTHONDONTWRITEBYTECODE is set recompiles torch.
    "$UV" pip install --quiet --python "$venv/bin/python" --require-hashes \
        --index-strategy unsafe-best-match --compile-bytecode \
        ${sources[@]+"${sources[@]}"} -r "$req"
    installer="$("$UV" --version)"
else
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$req"
    installer="pip $("$venv/bin/python" -m pip --version | cut -d' ' -f2)"
fi
echo "$venv: the pins of $(basename "$req") installed by $installer in $((SECONDS - start)) s, every file checked against its sha256"
