"""docs/troubleshooting.md names every reason and code the controller can show a user, so
that each has a meaning and a fix there: the reasons of stores, syncs and entries, and the
codes of fetch failures, found in the code itself (a new one without a row fails here)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.cluster.tools import REPO

DOC = REPO / "docs" / "troubleshooting.md"
CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*$")
# Not shown to a user as a reason: a read cancelled by the controller's own stop, the
# per-entry status words, and the kms-plugin's refusal (it has its own page).
NOT_USER_FACING = {"Cancelled", "Failed", "NotOurPlaintext"}
REASON_MODULES = {"reconciler.py", "render.py", "neterrors.py", "templates.py", "informer.py"}


def _reasons() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted((REPO / "controller").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            for text in _reason_texts(node, path):
                found.setdefault(text, str(path.relative_to(REPO)))
    return {k: v for k, v in found.items() if k not in NOT_USER_FACING}


def _reason_texts(node: ast.AST, path: Path) -> list[str]:
    if isinstance(node, ast.Call):
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        position = {"StoreProblem": 0, "TokenProblem": 0, "FetchError": 1,
                    "CryptoError": 1}.get(str(name))
        if position is not None and len(node.args) > position:
            arg = node.args[position]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                return [arg.value]
    if isinstance(node, ast.Assign) and path.name in REASON_MODULES:
        value = node.value
        if isinstance(value, ast.Constant) and isinstance(value.value, str) and \
                CAMEL.match(value.value) and all(isinstance(t, ast.Name) and t.id.isupper()
                                                 for t in node.targets):
            return [value.value]
    return []


def test_every_reason_and_code_has_a_row() -> None:
    doc = DOC.read_text()
    reasons = _reasons()
    assert len(reasons) > 30  # the walk found them
    missing = {r: where for r, where in reasons.items() if f"`{r}`" not in doc}
    assert not missing, f"add these to docs/troubleshooting.md: {missing}"


def test_every_cluster_external_secret_reason_has_a_row() -> None:
    source = (REPO / "controller/clusterexternalsecret/logic.py").read_text()
    reasons = set(re.findall(r'ready, reason(?:, message)? = "(?:True|False)", "([A-Za-z]+)"',
                             source))
    assert {"InvalidSpec", "TooManyNamespaces", "NamespacesFailed", "Provisioned"} <= reasons
    doc = DOC.read_text()
    assert all(f"`{r}`" in doc for r in reasons), reasons
