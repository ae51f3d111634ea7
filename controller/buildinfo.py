"""Which commit is running: for `--version` and the `build_info` metric.

In order: the environment variable ACK_SECRET_MANAGER_COMMIT (the image sets it from its
REVISION build argument), the HEAD of the git checkout the package runs from (read from
.git directly: the image has no git, and a checkout needs no subprocess), else "unknown".
"""

from __future__ import annotations

import functools
import os
import pathlib
import re

ENV = "ACK_SECRET_MANAGER_COMMIT"
_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@functools.cache
def commit() -> str:
    from_env = os.environ.get(ENV, "").strip().lower()
    if re.fullmatch(r"[0-9a-f]{7,64}(-dirty)?", from_env):  # the image: git rev-parse HEAD
        return from_env
    try:
        return _git_head(pathlib.Path(__file__).resolve().parent.parent) or "unknown"
    except (OSError, UnicodeDecodeError):
        return "unknown"


def short() -> str:
    value = commit()
    return value[:12] if value != "unknown" else value


def _git_dir(root: pathlib.Path) -> pathlib.Path | None:
    dot = root / ".git"
    if dot.is_dir():
        return dot
    if dot.is_file():  # a worktree or submodule: "gitdir: <path>"
        text = dot.read_text().strip()
        if text.startswith("gitdir:"):
            path = pathlib.Path(text[len("gitdir:"):].strip())
            return path if path.is_absolute() else (root / path).resolve()
    return None


def _git_head(root: pathlib.Path) -> str:
    git = _git_dir(root)
    if git is None:
        return ""
    head = (git / "HEAD").read_text().strip()
    if _SHA.fullmatch(head):
        return head  # detached
    if not head.startswith("ref:"):
        return ""
    ref = head[len("ref:"):].strip()
    common = git
    if (git / "commondir").is_file():  # worktrees keep refs in the main repository
        common = (git / (git / "commondir").read_text().strip()).resolve()
    for base in (git, common):
        loose = base / ref
        if loose.is_file():
            value = loose.read_text().strip()
            return value if _SHA.fullmatch(value) else ""
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name == ref and _SHA.fullmatch(sha):
                return sha
    return ""
