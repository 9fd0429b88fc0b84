"""Debian packages a test needs (Chromium, SLURM): installed with apt-get where the test runs as root.

CI (.ci/run) installs them before the suite; this is for a developer's machine that lacks them.
"""

import os
import shutil
import subprocess


def install(packages, missing):
    """Try apt-get for `packages`; None when it ran and `missing()` (the binaries the caller needs
    and has not found) is then empty, else the one-line reason."""
    if shutil.which("apt-get") is None:
        return "apt-get not found (not a Debian-like system)"
    if os.geteuid() != 0:
        return "not root, so apt-get cannot install them"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for args in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", *packages],
    ):
        try:
            proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(args[:2])}` timed out"
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            return f"`{' '.join(args[:2])}` failed: {tail}"
    still = missing()
    return f"apt-get ran but {', '.join(still)} are still missing" if still else None
