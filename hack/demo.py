"""`make demo`: the local test bed answering, end to end (until the sync engine lands).

Starts the real control plane and the fake Alibaba Cloud, shows the server version and a KMS
read through the real SDK, then stops everything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alibabacloud_kms20160120.client import Client as KmsClient  # noqa: E402
from alibabacloud_kms20160120.models import GetSecretValueRequest  # noqa: E402
from alibabacloud_tea_openapi.models import Config  # noqa: E402

from tests.cluster import ControlPlane, ensure_tools  # noqa: E402
from tests.fakecloud import FakeCloud  # noqa: E402


def main() -> int:
    kubectl = str(ensure_tools().kubectl)
    with ControlPlane() as cluster, FakeCloud() as cloud:
        print(f"control plane: {cluster.url}  (kubeconfig {cluster.kubeconfig})")
        subprocess.run([kubectl, "--kubeconfig", str(cluster.kubeconfig), "version"], check=True)
        cloud.add_access_key("LTAIdemo", "demo-secret", "demo")
        cloud.put_secret("demo-db", '{"user": "app", "password": "s3cret"}')
        kms = KmsClient(Config(access_key_id="LTAIdemo", access_key_secret="demo-secret",
                               endpoint=cloud.kms_endpoint, protocol="http"))
        body = kms.get_secret_value(GetSecretValueRequest(secret_name="demo-db")).body
        print(f"fake KMS at {cloud.kms_endpoint}: {body.secret_name} version {body.version_id}")
    print("stopped everything")
    return 0


if __name__ == "__main__":
    sys.exit(main())
