"""The processes the benchmark runs besides the control plane: the fake Alibaba Cloud (its own
process, so its CPU is not counted as the controller's) and the controller itself.

Every child gets PR_SET_PDEATHSIG, so it is sent SIGTERM if the benchmark dies without
cleaning up (kill -9); the normal path stops each one by its own pid (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


try:  # loaded here, not in the child: no dlopen between fork and exec
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent() -> None:
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without proxies or cloud credentials (everything is on 127.0.0.1).
    Callers set TMPDIR to a directory of the benchmark's, so whatever a child leaves there
    (even when it has to be killed) goes with the benchmark's working directory."""
    env = {k: v for k, v in os.environ.items()
           if "proxy" not in k.lower()
           and not k.startswith(("ALIBABA_CLOUD", "ALICLOUD", "ACCESS_KEY", "SECRET_ACCESS_KEY"))}
    env.update(extra or {})
    return env


def spawn(args: Sequence[str], log: Path, env: dict[str, str] | None = None,
          stdout_pipe: bool = False) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            list(args), cwd=REPO, env=env or clean_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else fh, stderr=fh,
            preexec_fn=_die_with_parent)


def stop(proc: subprocess.Popen[bytes] | None, grace: float = 30.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


class FakeCloudProcess:
    """`python -m tests.fakecloud` with a secrets file, one AccessKey and a KMS latency."""

    def __init__(self, workdir: Path, secrets: dict[str, str], access_key: tuple[str, str],
                 latency: float) -> None:
        self.workdir = workdir
        self.secrets_file = workdir / "secrets.json"  # JSON is YAML: the loader reads it
        self.secrets_file.write_text(json.dumps({"secrets": secrets}))
        self.access_key = access_key
        self.latency = latency
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    def start(self, timeout: float = 60.0) -> FakeCloudProcess:
        ak_id, ak_secret = self.access_key
        tmp = self.workdir / "tmp-fakecloud"
        tmp.mkdir(exist_ok=True)
        self.proc = spawn([sys.executable, "-m", "tests.fakecloud",
                           "--secrets", str(self.secrets_file), "--latency", str(self.latency),
                           "--access-key", f"{ak_id}:{ak_secret}:bench"],
                          self.workdir / "fakecloud.log", env=clean_env({"TMPDIR": str(tmp)}),
                          stdout_pipe=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError("the fake cloud did not start:\n" +
                               (self.workdir / "fakecloud.log").read_text()[-2000:])
        self.info = json.loads(line)
        return self

    @property
    def kms_url(self) -> str:
        return f"http://{self.info['kms_endpoint']}"

    @property
    def admin_url(self) -> str:
        return str(self.info["admin_url"])

    def stop(self) -> None:
        stop(self.proc)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


class ControllerProcess:
    """`python -m controller` with metrics and probes on free 127.0.0.1 ports."""

    def __init__(self, workdir: Path, args: Sequence[str], metrics_port: int,
                 health_port: int, module: str = "controller",
                 env: dict[str, str] | None = None) -> None:
        self.log = workdir / "controller.log"
        self.args = list(args)
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.readyz_url = f"http://127.0.0.1:{health_port}/readyz"
        tmp = workdir / "tmp-controller"
        tmp.mkdir(exist_ok=True)
        self.env = clean_env({"ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true", "TMPDIR": str(tmp),
                              **(env or {})})
        self.cmd = [sys.executable, "-m", module, *self.args,
                    "--metrics-bind-address", f"127.0.0.1:{metrics_port}",
                    "--health-probe-bind-address", f"127.0.0.1:{health_port}"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ControllerProcess:
        self.started_at = time.monotonic()
        self.proc = spawn(self.cmd, self.log, env=self.env)
        return self

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"the controller exited with {self.proc.returncode}:\n"
                               + self.log_tail())

    def wait_http(self, url: str, timeout: float) -> float:
        """Seconds since start when `url` first answered 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError):
                if http_get(url, timeout=2)[0] == 200:
                    return time.monotonic() - self.started_at
            time.sleep(0.05)
        raise TimeoutError(f"{url} did not answer 200 within {timeout}s\n" + self.log_tail())

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 30.0) -> None:
        stop(self.proc, grace)
