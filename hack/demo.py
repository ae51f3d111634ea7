"""`make demo`: the controller, end to end, on the local test bed.

Starts the real control plane (CRDs installed) and the fake Alibaba Cloud, runs the controller
as a process, applies examples/demo.yaml (an AccessKey SecretStore and an ExternalSecret with
jmesPath and extract), prints the resulting Secret, changes the value in the fake KMS, shows
the Secret follow, and stops everything.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.cluster import ControlPlane, ensure_tools  # noqa: E402
from tests.fakecloud import FakeCloud  # noqa: E402

POLL = "5s"


def kubectl(cluster: ControlPlane, *args: str) -> str:
    cmd = [str(ensure_tools().kubectl), "--kubeconfig", str(cluster.kubeconfig), *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def secret_data(cluster: ControlPlane) -> dict[str, str] | None:
    try:
        raw = json.loads(kubectl(cluster, "get", "secret", "esdemo", "-o", "json"))
    except subprocess.CalledProcessError:
        return None
    return {k: base64.b64decode(v).decode() for k, v in sorted(raw.get("data", {}).items())}


def wait_for(check, what: str, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out waiting for {what}")


def show(title: str, data: dict[str, str]) -> None:
    print(f"\n{title}")
    for key, value in data.items():
        print(f"  {key:12} = {value}")


def main() -> int:
    print("demo: starting the control plane and the fake Alibaba Cloud ...")
    with ControlPlane(crds=[REPO / "helm/ack-secret-manager/crds"]) as cluster, \
            FakeCloud() as cloud, tempfile.TemporaryDirectory() as tmp:
        cloud.add_access_key("LTAIdemoAccessKey", "demo-access-key-secret", "demo")
        cloud.put_secret("demo-db", json.dumps({"user": "app", "password": "s3cret-v1"}))
        cloud.put_secret("demo-app-config", json.dumps({"log_level": "info", "region": "hz"}))
        print(f"demo: kube-apiserver {cluster.url}, fake KMS {cloud.kms_endpoint}")
        log_path = Path(tmp) / "controller.log"
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        with open(log_path, "wb") as log:
            controller = subprocess.Popen(
                [sys.executable, "-m", "controller", "--kubeconfig", str(cluster.kubeconfig),
                 "--kms-endpoint", f"http://{cloud.kms_endpoint}", "--polling-interval", POLL,
                 "--metrics-bind-address", "0", "--health-probe-bind-address", "0"],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            print(kubectl(cluster, "apply", "-n", "default", "-f",
                          str(REPO / "examples/demo.yaml")).rstrip())
            data = wait_for(lambda: secret_data(cluster), "the Secret esdemo")
            show("Secret default/esdemo, written by the controller:", data)
            print("\n" + kubectl(cluster, "get", "externalsecrets", "-n", "default").rstrip())
            print(f"\ndemo: rotating demo-db in the fake KMS (poll interval {POLL}) ...")
            start = time.monotonic()
            cloud.put_secret("demo-db", json.dumps({"user": "app", "password": "s3cret-v2"}))
            data = wait_for(lambda: (d := secret_data(cluster)) and
                            d.get("password") == "s3cret-v2" and d, "the rotated value")
            show(f"Secret followed KMS after {time.monotonic() - start:.1f}s:", data)
            print(f"\ndemo: KMS GetSecretValue calls so far: {cloud.calls('GetSecretValue')}")
        finally:
            controller.terminate()
            controller.wait(30)
            print("\ncontroller log (last lines):")
            print("\n".join(log_path.read_text().splitlines()[-6:]))
    print("\ndemo: stopped everything")
    return 0


if __name__ == "__main__":
    sys.exit(main())
