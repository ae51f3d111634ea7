"""Stopping on time, as a Pod must (the chart's grace period is 30 s, the controller's whole
stop 25 s): with KMS unreachable and every worker inside a KMS call, while the caches are still
syncing, and with a start-up error that must be one line, not a traceback."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.cluster import ControlPlane
from tests.cluster.tools import REPO
from tests.fakecloud import FakeCloud
from tests.integration.conftest import K8s
from tests.waiting import wait_for


class BlackHole:
    """A TCP server on 127.0.0.1 that accepts connections and never answers (KMS unreachable
    in the worst way: every call waits for its read timeout)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def _es(name: str, key: str) -> dict[str, Any]:
    return {"kind": "ExternalSecret", "metadata": {"name": name},
            "spec": {"data": [{"key": key, "secretStoreRef": {"name": "store"}}]}}


def test_stop_within_the_deadline_with_kms_unreachable(
    k8s: K8s, cloud: FakeCloud, namespace: str, start_controller: Callable[..., Any],
    black_hole: BlackHole, cluster: ControlPlane,
) -> None:
    """Before: 3.5 minutes (queued polls kept being handed out, each retrying KMS for ~20 s,
    then each worker joined with its own 30 s) and the Lease expired while it still wrote."""
    k8s.access_key_store(namespace)
    controller = start_controller("--kms-endpoint", black_hole.address, "--workers", "4",
                                  "--leader-elect", "--leader-election-namespace", namespace,
                                  "--lease-duration", "15s", "--renew-deadline", "10s")
    for i in range(12):
        k8s.create(namespace, "externalsecrets", _es(f"app-{i}", f"s{i}"))
    wait_for(lambda: len(black_hole.accepted) >= 4, what="every worker inside a KMS call")
    started = time.monotonic()
    code = controller.stop(timeout=40)
    elapsed = time.monotonic() - started
    print(f"\nstop with KMS unreachable: {elapsed:.1f}s")
    assert code == 0, controller.log
    assert elapsed < 25, (elapsed, controller.log[-3000:])
    assert "shut down in" in controller.log
    lease = client.CoordinationV1Api(k8s.core.api_client).read_namespaced_lease(
        "ack-secret-manager", namespace)
    assert not lease.spec.holder_identity  # released, after the workers


def test_sigterm_while_the_caches_sync_is_honoured(
    black_hole: BlackHole, tmp_path: Path, start_controller: Callable[..., Any],
) -> None:
    """An apiserver that never answers: the caches never sync. Before: SIGTERM was logged and
    ignored for up to 120 s."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
        f"    server: http://{black_hole.address}\ncontexts:\n- name: c\n  context:\n"
        "    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user: {}\n")
    controller = start_controller(kubeconfig=str(kubeconfig))
    wait_for(lambda: len(black_hole.accepted) >= 1, what="the informers connecting")
    started = time.monotonic()
    code = controller.stop(timeout=30)
    assert code == 0, controller.log
    assert time.monotonic() - started < 5, controller.log


def test_a_missing_kubeconfig_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "controller", "--kubeconfig", str(tmp_path / "nope"),
         "--metrics-bind-address", "0", "--health-probe-bind-address", "0"],
        capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    # Refused with the other flags, before anything is contacted: one line on stderr.
    [line] = result.stderr.splitlines()
    assert "--kubeconfig" in line and "no such file" in line, line


def test_a_thread_a_library_left_behind_does_not_hold_the_exit(
    k8s: K8s, namespace: str, tmp_path: Path, start_controller: Callable[..., Any],
) -> None:
    """Python joins every non-daemon thread at exit, and the Alibaba credentials library
    refreshes on such threads (a ThreadPoolExecutor). A library thread that is still busy when
    the orderly stop ends (here: started through sitecustomize, it sleeps for 120 s) must not
    keep the process, or a Pod, alive past the stop. SIGQUIT, meanwhile, dumps every thread's
    stack and the controller carries on."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(120,), name='library-refresh',\n"
        "                 daemon=False).start()\n")
    controller = start_controller("--leader-elect", "--leader-election-namespace", namespace,
                                  env={"PYTHONPATH": f"{site}:{REPO}"})
    wait_for(lambda: "caches synced" in controller.log, timeout=60,
             what="the workers started (logged once they exist)")
    controller.proc.send_signal(signal.SIGQUIT)
    # Every thread: the main one waits in app.run, the workers in theirs (_work).
    try:
        wait_for(lambda: "in run" in controller.log and "in _work" in controller.log,
                 what="the stack dump")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{controller.log[-4000:]}") from None
    assert "Thread 0x" in controller.log
    assert controller.proc.poll() is None, "SIGQUIT stopped the controller"
    started = time.monotonic()
    code = controller.stop(timeout=60)
    elapsed = time.monotonic() - started
    # The log without the stack dump's frames, for the failure messages.
    lines = [line for line in controller.log.splitlines()
             if not line.startswith(("  File", "Thread 0x", "Current thread"))]
    said = "\n".join(lines[-40:])
    assert code == 0, (code, elapsed, said)
    assert elapsed < 10, (elapsed, said)
    assert lines[-1].endswith("stopped"), said
