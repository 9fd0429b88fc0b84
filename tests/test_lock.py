"""The lock refuses tampered packages: `make setup` installs requirements.txt hash-checked.

Fast and offline. A tiny real wheel, made here, is served from a find-links folder that
pip's config names (as this machine's config names its folders of wheels); the very
installer `make setup` runs (tools/install.sh) takes it when its sha256 is the one in the
requirements file, and refuses it, installing nothing, once a wheel of other content lies
under the same name, there or in a file:// simple index whose page claims the locked hash.
Both installers are checked: pip, and uv (the one `make setup` uses; `make check-lock` or
`make setup` installs it under .tools/, from tools/uv-requirements.txt, hash-checked).
Also: `tools/lock.sh hashes` fails, naming the pin and `make lock`, when one pin of the
lock lost its hashes.
"""

import base64
import hashlib
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "tools" / "install.sh"
LOCK_SH = ROOT / "tools" / "lock.sh"
NAME, VERSION = "cifarbench_lockprobe", "1.0"
WHEEL = f"{NAME}-{VERSION}-py3-none-any.whl"


def make_wheel(path, body):
    """A valid pure-Python wheel (METADATA, WHEEL, RECORD with each file's hash) of one module."""
    dist = f"{NAME}-{VERSION}.dist-info"
    files = {
        f"{NAME}.py": body.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {VERSION}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests/test_lock.py\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}"
        for name, data in files.items()
    ]
    files[f"{dist}/RECORD"] = ("\n".join(record + [f"{dist}/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0)), data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def project_uv():
    """The uv `make setup` runs (.tools/uv-<version>, locked in tools/uv-requirements.txt), else one on PATH."""
    version = re.search(r"^uv==([^ ;]+)", (ROOT / "tools" / "uv-requirements.txt").read_text(), re.MULTILINE).group(1)
    pinned = ROOT / ".tools" / f"uv-{version}" / "bin" / "uv"
    return str(pinned) if pinned.exists() else shutil.which("uv")


def machine_free_env(tmp_path, pip_conf):
    """The environment with `pip_conf` as the only pip config the installers see: none of the
    machine's PIP_*/UV_* variables, user or XDG pip.conf files, uv.toml files or uv cache."""
    conf = tmp_path / "pip.conf"
    conf.write_text(pip_conf)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(
        PIP_CONFIG_FILE=str(conf),
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_CONFIG_DIRS=str(tmp_path / "config-dirs"),
        UV_NO_CONFIG="1",
        UV_CACHE_DIR=str(tmp_path / "uv-caches"),
        PYTHON=sys.executable,
    )
    (tmp_path / "uv-caches").mkdir(exist_ok=True)
    return env


@pytest.fixture
def index(tmp_path):
    """A find-links folder, the only package source; no network index."""
    links = tmp_path / "links"
    links.mkdir()
    return links, machine_free_env(tmp_path, f"[global]\nno-index = true\nfind-links = {links}\n")


def lying_index(tmp_path, wheel, claimed):
    """A file:// simple index (PEP 503) serving `wheel`, its page claiming sha256 `claimed`."""
    project = tmp_path / "simple" / NAME.replace("_", "-")
    project.mkdir(parents=True)
    shutil.copy(wheel, tmp_path / WHEEL)
    (project / "index.html").write_text(
        f'<html><body><a href="../../{WHEEL}#sha256={claimed}">{WHEEL}</a></body></html>\n'
    )
    return machine_free_env(tmp_path, f"[global]\nindex-url = {(tmp_path / 'simple').as_uri()}\n")


def install(requirements, venv, env, uv):
    """tools/install.sh, as `make setup` runs it (uv None: pip), each time with an empty uv cache."""
    cache = Path(env["UV_CACHE_DIR"]) / str(len(list(Path(env["UV_CACHE_DIR"]).glob("*"))))
    return subprocess.run(
        ["bash", str(INSTALL), str(requirements), str(venv)],
        env={**env, "UV": uv or "", "UV_CACHE_DIR": str(cache)},
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def installed(venv):
    return list((venv / "lib").glob(f"python3*/site-packages/{NAME}-*.dist-info"))


@pytest.mark.parametrize("installer", ["pip", "uv"])
def test_setup_installs_a_locked_wheel_and_refuses_a_tampered_one(tmp_path, index, installer):
    uv = None
    if installer == "uv":
        uv = project_uv()
        if uv is None:
            pytest.skip("no uv: `make check-lock` or `make setup` installs the project's into .tools/")
    links, env = index
    digest = make_wheel(links / WHEEL, "VALUE = 'locked'\n")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{NAME}=={VERSION} \\\n    --hash=sha256:{digest}\n")
    venv = tmp_path / "venv"

    done = install(requirements, venv, env, uv)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checked against its sha256" in done.stdout
    value = subprocess.run(
        [venv / "bin" / "python", "-c", f"import {NAME}; print({NAME}.VALUE)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert value.strip() == "locked"

    # The same name, the same version, a well-formed wheel: only its content differs.
    uninstall = (
        [uv, "pip", "uninstall", "--python", venv / "bin" / "python"]
        if uv
        else [venv / "bin" / "python", "-m", "pip", "uninstall", "--yes"]
    )
    subprocess.run([*uninstall, NAME], env=env, capture_output=True, check=True)
    assert not installed(venv)
    tampered = make_wheel(links / WHEEL, "VALUE = 'tampered'\n")
    assert tampered != digest

    for source, source_env in [
        ("find-links", env),
        ("an index claiming the locked hash", lying_index(tmp_path / "index", links / WHEEL, digest)),
    ]:
        done = install(requirements, venv, source_env, uv)
        output = done.stdout + done.stderr
        assert done.returncode != 0, f"{source}: {output}"
        assert re.search(r"hash", output, re.IGNORECASE) and tampered in output, (
            f"{source}: {output}"
        )  # the file's real hash
        assert not installed(venv), source


def test_install_refuses_a_lock_without_hashes(tmp_path, index):
    links, env = index
    make_wheel(links / WHEEL, "VALUE = 'locked'\n")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{NAME}=={VERSION}\n")
    done = install(requirements, tmp_path / "venv", env, None)
    assert done.returncode != 0
    assert done.stderr.strip() == (
        f"error: {requirements}: {NAME}=={VERSION} has no --hash=sha256: "
        f"run `make lock` to write the hashes, and commit {requirements}"
    )
    assert not (tmp_path / "venv").exists()  # refused before anything was made


def lock_hashes(path):
    return subprocess.run(
        ["bash", str(LOCK_SH), "hashes", str(path)], check=False, capture_output=True, text=True, timeout=30
    )


def test_committed_lock_carries_hashes_for_every_pin():
    for lock in ("requirements.txt", "tools/uv-requirements.txt"):  # the project's, and uv's own
        done = lock_hashes(ROOT / lock)
        assert done.returncode == 0, done.stderr
    # torch's wheels for Linux x86-64, macOS arm64 and Windows x86-64, Python 3.11 to 3.14
    torch = re.search(
        r"^torch==\S+((?: \\\n +--hash=sha256:[0-9a-f]{64})+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE
    )
    assert torch and torch.group(1).count("--hash") >= 12


def test_check_lock_names_a_pin_whose_hashes_were_removed(tmp_path):
    lock = (ROOT / "requirements.txt").read_text()
    stripped, count = re.subn(
        r"^(torch==[^ \n]+)(?: \\\n +--hash=sha256:[0-9a-f]{64})+", r"\1", lock, flags=re.MULTILINE
    )
    assert count == 1
    path = tmp_path / "requirements.txt"
    path.write_text(stripped)
    done = lock_hashes(path)
    assert done.returncode == 1
    torch = re.search(r"^torch==(\S+)", lock, re.MULTILINE).group(1)
    expected = (
        f"error: {path}: torch=={torch} has no --hash=sha256: run `make lock` to write the hashes, and commit {path}"
    )
    assert done.stderr.splitlines() == [expected]


def test_uv_is_handed_the_package_sources_pip_is_configured_with(tmp_path):
    env = machine_free_env(
        tmp_path,
        (
            "[global]\nindex-url = https://mirror.example/simple\n"
            "extra-index-url = file:///srv/a/simple\n    file:///srv/b/simple\n"
            "find-links = /srv/wheels\nconstraint = /srv/cap.txt\n"
            "[install]\nfind-links = /srv/install-wheels\n"
        ),
    )
    env["PIP_EXTRA_INDEX_URL"] = "file:///srv/env/simple"  # a variable beats the files, as in pip
    done = subprocess.run(
        [sys.executable, ROOT / "tools" / "uv_args_from_pip.py", sys.executable],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == [
        "--index-url",
        "https://mirror.example/simple",
        "--extra-index-url",
        "file:///srv/env/simple",
        "--find-links",
        "/srv/install-wheels",
    ]
    # no config at all (a plain machine): uv gets no flags and uses PyPI, as pip does
    plain = {k: v for k, v in env.items() if k != "PIP_EXTRA_INDEX_URL"}
    done = subprocess.run(
        [sys.executable, ROOT / "tools" / "uv_args_from_pip.py", sys.executable],
        env={**plain, "PIP_CONFIG_FILE": os.devnull},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.split() == []
