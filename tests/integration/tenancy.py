"""What the tenant-isolation tests share: the hostile tenant's stores and objects, the other
tenant's change-to-Secret time, and the controller's memory (issue 18; docs/security.md)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from tests.fakecloud import FakeCloud
from tests.integration.conftest import K8s
from tests.waiting import wait_for

CHART_LIMIT_MIB = 256  # helm/ack-secret-manager/values.yaml: resources.limits.memory
# A change's time to its Secret on this shared 2-core machine (other jobs running) varies by
# tens of milliseconds whatever the controller does (the watch, the apiserver, this test's
# 20 ms polling): the baseline counts as at least this.
BASELINE_FLOOR = 0.05


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class RssWatch:
    """Samples a process's RSS every 50 ms in a thread; `peak` is the largest sample."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mib(self.pid))

    def __enter__(self) -> RssWatch:
        self.peak = rss_mib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def templated(name: str, template: dict[str, Any], key: str = "db",
              **entry: Any) -> dict[str, Any]:
    """An ExternalSecret reading KMS secret `key` through SecretStore "store", templated."""
    return {"kind": "ExternalSecret", "metadata": {"name": name},
            "spec": {"data": [{"key": key, "name": "db", "secretStoreRef": {"name": "store"},
                               **entry}],
                     "target": {"template": template}}}


def change_time(k8s: K8s, ns: str, name: str, n: int) -> float:
    """Seconds from a spec change of the other tenant's ExternalSecret (made by `templated`
    with data `{{ .db }}-N`) to its Secret."""
    started = time.monotonic()
    k8s.patch(ns, "externalsecrets", name,
              {"spec": {"target": {"template": {"data": {"db": f"{{{{ .db }}}}-{n}"}}}}})
    wait_for(lambda: (k8s.secret_data(ns, name) or {}).get("db") == f"pw-{n}",
             timeout=60, what=f"change {n} in {ns}/{name}", interval=0.02)
    return time.monotonic() - started


def key_secret(k8s: K8s, ns: str, name: str, content: str, password: str) -> None:
    """Secret `<name>-key` holding a KMS instance client key file and its password."""
    k8s.core.create_namespaced_secret(ns, {"metadata": {"name": f"{name}-key"}, "stringData": {
        "content": content, "password": password}})


def dkms_store(k8s: K8s, cloud: FakeCloud, ns: str, name: str, **extra: Any) -> None:
    """A dedicatedKMSAuth SecretStore on the fake KMS instance, its client key in Secret
    `<name>-key` (see `key_secret`)."""
    k8s.create(ns, "secretstores", {"kind": "SecretStore", "metadata": {"name": name},
                                    "spec": {"KMS": {"dedicatedKMSAuth": {
                                        "protocol": "https", "endpoint": cloud.dkms_endpoint,
                                        "ca": cloud.ca_pem, "ignoreSSL": False,
                                        "clientKeyContent": {"name": f"{name}-key",
                                                             "key": "content"},
                                        "password": {"name": f"{name}-key", "key": "password"},
                                        **extra}}}})
