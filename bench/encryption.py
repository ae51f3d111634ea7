"""Encryption-at-rest benchmark: the kms-plugin against the fake KMS (20 ms latency) and a
real kube-apiserver; results in docs/performance.md ("Encryption at rest").

Why these numbers: the apiserver calls Status every minute and under health probes (it must
cost no KMS call), Encrypt once per seed and Decrypt once per seed after a restart (not once
per object), and `reencrypt` must move a whole cluster's Secrets in minutes.

Run: `python -m bench.encryption --secrets 10000` (`make bench`); small sizes for a quick look.
`python -m bench.encryption --outage 10,30,60,90` measures how long the apiserver's
/readyz/kms-providers stays failing after the plugin is back from an outage of each length.
`python -m bench.encryption --overhead-only` measures only the plugin's own cost per call (no
apiserver): Encrypt through the plugin's socket and the same Encrypt straight through the SDK,
interleaved call by call so that both see the same machine load; the overhead is the median
of the per-pair differences (and, as before, the difference of the two medians).
Prints one JSON document (with the machine it ran on); `--out FILE` writes it too.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import yaml
from kubernetes import client, config

from bench.procs import REPO, FakeCloudProcess
from controller.kmsplugin.proto import api_pb2, api_pb2_grpc
from controller.providers.alibaba.identity import ACCESS_KEY, Identity, IdentityPool
from controller.providers.alibaba.kms import Endpoint, Kms
from controller.providers.alibaba.kms_crypto import KmsCrypto
from tests.cluster import ControlPlane, free_port
from tests.fakecloud import FakeCloudAdmin

AK = ("LTAI5tBenchEncryption1", "bench-encryption-secret-1")
PROVIDER = "alibaba-kms"


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    out.update(ACCESS_KEY_ID=AK[0], SECRET_ACCESS_KEY=AK[1])
    return out


class Plugin:
    """The kms-plugin as a process on `sock`, restartable."""

    def __init__(self, cloud: FakeCloudProcess, key: str, sock: Path) -> None:
        self.cloud, self.key, self.sock = cloud, key, sock
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def status_calls(self) -> float:
        """Status calls this plugin process has answered (its /metrics; 0 if unreachable)."""
        import urllib.request

        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return 0.0
        prefix = 'ack_secret_manager_kmsplugin_grpc_requests_total{method="Status",result="ok"} '
        return next((float(line[len(prefix):]) for line in text.splitlines()
                     if line.startswith(prefix)), 0.0)

    def start(self) -> Plugin:
        port = self.port = free_port()
        cmd = [sys.executable, "-m", "controller", "kms-plugin", "--key-id", self.key,
               "--path-to-unix-socket", str(self.sock), "--cluster-name", "bench",
               "--kms-endpoint", self.cloud.info["kms_endpoint"], "--kms-protocol", "http",
               "--key-refresh-interval", "30s",
               "--health-probe-bind-address", f"127.0.0.1:{port}",
               "--metrics-bind-address", f"127.0.0.1:{port}", "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, env=env(), cwd=str(REPO), stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not self.sock.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("kms-plugin did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def direct_kms_p50(cloud: FakeCloudProcess, key: str, calls: int) -> float:
    """Encrypt through KmsCrypto in this process: the KMS round trip without the plugin."""
    kms, crypto = direct_crypto(cloud)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        crypto.encrypt(key, os.urandom(32), {"kubernetes-cluster": "bench"})
        times.append(time.perf_counter() - started)
    kms.close()
    return round(statistics.median(times) * 1000, 2)


def direct_crypto(cloud: FakeCloudProcess) -> tuple[Kms, KmsCrypto]:
    kms = Kms(IdentityPool(), region="cn-hangzhou")
    crypto = KmsCrypto(kms, Identity(ACCESS_KEY, access_key_id=AK[0], access_key_secret=AK[1]),
                       Endpoint(cloud.info["kms_endpoint"], "http"))
    return kms, crypto


def overhead(sock: Path, cloud: FakeCloudProcess, key: str, calls: int) -> dict[str, Any]:
    """Plugin Encrypt vs direct SDK Encrypt, alternating (which goes first alternates too)."""
    channel = grpc.insecure_channel(f"unix://{sock}")
    stub = api_pb2_grpc.KeyManagementServiceStub(channel)
    kms, crypto = direct_crypto(cloud)
    context = {"kubernetes-cluster": "bench"}

    def via_plugin() -> float:
        started = time.perf_counter()
        stub.Encrypt(api_pb2.EncryptRequest(plaintext=os.urandom(32)), timeout=5)
        return time.perf_counter() - started

    def direct() -> float:
        started = time.perf_counter()
        crypto.encrypt(key, os.urandom(32), context)
        return time.perf_counter() - started

    for _ in range(20):  # warm-up: connections, imports, caches
        via_plugin()
        direct()
    plugin_times, direct_times = [], []
    for i in range(calls):
        if i % 2:
            plugin_times.append(via_plugin())
            direct_times.append(direct())
        else:
            direct_times.append(direct())
            plugin_times.append(via_plugin())
    status_times = []
    for _ in range(calls):  # the gRPC round trip alone: Status answers from its cache
        started = time.perf_counter()
        stub.Status(api_pb2.StatusRequest(), timeout=5)
        status_times.append(time.perf_counter() - started)
    kms.close()
    channel.close()
    pairs = [p - d for p, d in zip(plugin_times, direct_times, strict=True)]
    ms = 1000.0
    return {"calls": calls,
            "plugin_encrypt_p50_ms": round(statistics.median(plugin_times) * ms, 2),
            "direct_encrypt_p50_ms": round(statistics.median(direct_times) * ms, 2),
            "overhead_p50_ms": round((statistics.median(plugin_times)
                                      - statistics.median(direct_times)) * ms, 2),
            "overhead_paired_median_ms": round(statistics.median(pairs) * ms, 2),
            "overhead_paired_p90_ms": round(percentile(pairs, 0.9) * ms, 2),
            "status_round_trip_p50_ms": round(statistics.median(status_times) * ms, 2)}


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        model = next((line.split(":", 1)[1].strip() for line in fh
                      if line.startswith("model name")), "")
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": sys.version.split()[0],
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def run_overhead(latency: float, calls: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-ovh-", dir="/tmp"))
    cloud = FakeCloudProcess(work, {}, AK, latency).start()
    result: dict[str, Any] = {"kms_latency_ms": latency * 1000, "machine": machine()}
    try:
        key = FakeCloudAdmin(cloud.admin_url).create_key(description="bench")
        runner = Plugin(cloud, key, work / "kms.sock").start()
        try:
            result["overhead"] = overhead(runner.sock, cloud, key, calls)
        finally:
            runner.stop()
    finally:
        cloud.stop()
        shutil.rmtree(work, ignore_errors=True)
    result["machine"]["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    return result


def readyz_ok(cp: ControlPlane) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(cp.url + "/readyz/kms-providers", context=cp.ssl_context(),
                                    timeout=5) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def await_true(check: Callable[[], bool], timeout: float, interval: float) -> float:
    """Seconds until `check` held (polled every `interval`); RuntimeError after `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"not within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - started


def recovery(cp: ControlPlane, runner: Plugin, timeout: float = 300) -> dict[str, float]:
    """Seconds from the plugin's start until the apiserver's first call reached it (its gRPC
    client reconnected) and until /readyz/kms-providers was ok; polled every 0.25 s."""
    started = time.monotonic()
    first_call = ready = 0.0
    while not ready:
        now = time.monotonic() - started
        if now > timeout:
            raise RuntimeError(f"readyz not ok {timeout}s after the plugin came back")
        if not first_call and runner.status_calls() > 0:
            first_call = now
        if readyz_ok(cp):
            ready = time.monotonic() - started
        else:
            time.sleep(0.25)
    return {"first_apiserver_call_after_back_s": round(first_call or ready, 1),
            "readyz_failing_after_back_s": round(ready, 1)}


def run_outages(lengths: list[float]) -> dict[str, Any]:
    """For each outage length: stop the plugin, wait until the apiserver's readyz fails, keep
    it down for the length (counted from the stop), start it, then time the apiserver's
    reconnection and readyz (`recovery`)."""
    work = Path(tempfile.mkdtemp(prefix="bench-out-", dir="/tmp"))
    cloud = FakeCloudProcess(work, {}, AK, 0.0).start()
    result: dict[str, Any] = {"machine": machine(), "outages": []}
    try:
        key = FakeCloudAdmin(cloud.admin_url).create_key(description="bench")
        runner = Plugin(cloud, key, work / "kms.sock").start()
        try:
            with ControlPlane(extra_apiserver_args=["--encryption-provider-config={dir}/enc.yaml"],
                              files={"enc.yaml": encryption_file(runner.sock)},
                              with_controller_manager=False) as cp:
                for length in lengths:
                    runner.stop()
                    down = time.monotonic()
                    await_true(lambda: not readyz_ok(cp), 60, 0.5)
                    time.sleep(max(0.0, length - (time.monotonic() - down)))
                    runner.start()
                    result["outages"].append({"plugin_down_s": round(length, 1),
                                              **recovery(cp, runner)})
        finally:
            runner.stop()
    finally:
        cloud.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result


def grpc_latencies(sock: Path, admin: FakeCloudAdmin, calls: int) -> dict[str, Any]:
    stub = api_pb2_grpc.KeyManagementServiceStub(grpc.insecure_channel(f"unix://{sock}"))
    before = admin.calls("DescribeKey")
    for _ in range(calls):
        stub.Status(api_pb2.StatusRequest(), timeout=5)
    status_kms_calls = admin.calls("DescribeKey") - before
    enc, dec = [], []
    for _ in range(calls):
        t0 = time.perf_counter()
        out = stub.Encrypt(api_pb2.EncryptRequest(plaintext=os.urandom(32)), timeout=5)
        t1 = time.perf_counter()
        stub.Decrypt(api_pb2.DecryptRequest(ciphertext=out.ciphertext, key_id=out.key_id,
                                            annotations=out.annotations), timeout=5)
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
    return {"status_calls": calls, "status_kms_calls": status_kms_calls,
            "encrypt_p50_ms": round(statistics.median(enc) * 1000, 2),
            "encrypt_p99_ms": round(percentile(enc, 0.99) * 1000, 2),
            "decrypt_p50_ms": round(statistics.median(dec) * 1000, 2),
            "decrypt_p99_ms": round(percentile(dec, 0.99) * 1000, 2)}


def write_secrets(core: Any, namespace: str, count: int, workers: int = 16) -> float:
    core.create_namespace({"metadata": {"name": namespace}})
    payload = base64.b64encode(os.urandom(48)).decode()

    def one(i: int) -> None:
        core.create_namespaced_secret(namespace, {"metadata": {"name": f"s-{i:05d}"},
                                                  "data": {"v": payload}})

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(count)))
    return time.perf_counter() - started


def encryption_file(sock: Path) -> str:
    return yaml.safe_dump({
        "apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
        "resources": [{"resources": ["secrets"], "providers": [
            {"kms": {"apiVersion": "v2", "name": PROVIDER, "endpoint": f"unix://{sock}",
                     "timeout": "3s"}}, {"identity": {}}]}]})


def timed(step: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = step()
    return time.perf_counter() - started, result


def reencrypt(cp: ControlPlane, namespace: str) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "controller", "reencrypt", "--kubeconfig", str(cp.kubeconfig),
           "-n", namespace, "--qps", "5000", "--workers", "16"]
    seconds, out = timed(lambda: subprocess.run(cmd, env=env(), cwd=str(REPO), check=True,
                                                capture_output=True, text=True))
    return seconds, out.stdout.strip().splitlines()[-1]


def run(count: int, latency: float, calls: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-enc-", dir="/tmp"))
    cloud = FakeCloudProcess(work, {}, AK, latency).start()
    result: dict[str, Any] = {"secrets": count, "kms_latency_ms": latency * 1000}
    try:
        admin = FakeCloudAdmin(cloud.admin_url)
        key = admin.create_key(description="bench")
        runner = Plugin(cloud, key, work / "kms.sock").start()
        try:
            result["grpc"] = grpc_latencies(runner.sock, admin, calls)
            direct = direct_kms_p50(cloud, key, calls)
            result["grpc"]["kms_direct_encrypt_p50_ms"] = direct
            result["grpc"]["plugin_overhead_p50_ms"] = round(
                result["grpc"]["encrypt_p50_ms"] - direct, 2)
            result.update(cluster_numbers(admin, runner, count))
        finally:
            runner.stop()
    finally:
        cloud.stop()
        shutil.rmtree(work, ignore_errors=True)
    return result


def cluster_numbers(admin: FakeCloudAdmin, runner: Plugin, count: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with ControlPlane(with_controller_manager=False) as plain:
        core = client.CoreV1Api(config.new_client_from_config(str(plain.kubeconfig)))
        out["write_plain_s"] = round(write_secrets(core, "bench", count), 2)
    encrypts = admin.calls("Encrypt")
    with ControlPlane(extra_apiserver_args=["--encryption-provider-config={dir}/enc.yaml"],
                      files={"enc.yaml": encryption_file(runner.sock)},
                      with_controller_manager=False) as cp:
        core = client.CoreV1Api(config.new_client_from_config(str(cp.kubeconfig)))
        out["write_encrypted_s"] = round(write_secrets(core, "bench", count), 2)
        out["write_ratio"] = round(out["write_encrypted_s"] / out["write_plain_s"], 2)
        out["encrypt_calls_start_and_writes"] = admin.calls("Encrypt") - encrypts
        decrypts = admin.calls("Decrypt")
        cp.restart_apiserver()  # its watch cache reads (and decrypts) every Secret at start
        core = client.CoreV1Api(config.new_client_from_config(str(cp.kubeconfig)))
        seconds, listed = timed(lambda: core.list_namespaced_secret("bench").items)
        out["list_after_restart_s"] = round(seconds, 2)
        out["listed"] = len(listed)
        out["decrypt_calls_restart_and_list"] = admin.calls("Decrypt") - decrypts
        admin.rotate_key(runner.key)
        # Restarts instead of waiting: the plugin's next DescribeKey (30 s) and the
        # apiserver's next Status (a minute) would pick the rotation up by themselves.
        runner.stop()
        runner.start()
        cp.restart_apiserver()
        seconds, summary = reencrypt(cp, "bench")
        out["reencrypt_s"] = round(seconds, 2)
        out["reencrypt_per_s"] = round(count / seconds, 1)
        out["reencrypt_summary"] = summary
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.encryption")
    p.add_argument("--secrets", type=int, default=1000)
    p.add_argument("--latency", type=float, default=0.02, help="KMS latency in seconds")
    p.add_argument("--grpc-calls", type=int, default=200)
    p.add_argument("--outage", default="",
                   help="comma-separated plugin outage lengths in seconds: time the "
                   "apiserver's readyz recovery after each")
    p.add_argument("--overhead-only", action="store_true",
                   help="only the plugin's cost per Encrypt over a direct SDK call")
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        os.environ.pop(name, None)
    if args.outage:
        result = run_outages([float(x) for x in args.outage.split(",")])
    elif args.overhead_only:
        result = run_overhead(args.latency, args.grpc_calls)
    else:
        result = run(args.secrets, args.latency, args.grpc_calls)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
