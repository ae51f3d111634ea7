"""The KMS v2 plugin's logic without sockets: key_id scheme, the key-state cache, the checks of
Status/Encrypt/Decrypt, settings, and the command's subcommand dispatch."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import grpc
import pytest

from controller import cli
from controller.kmsplugin import keyids
from controller.kmsplugin import settings as plugin_settings
from controller.kmsplugin.keystate import KeyStateCache
from controller.kmsplugin.metrics import PluginMetrics
from controller.kmsplugin.service import MAX_PLAINTEXT, KeyService, PluginError
from controller.providers.alibaba.errors import Kind
from controller.providers.alibaba.kms_crypto import CryptoError, KeyInfo, Unwrapped, Wrapped

KEY = "key-1111"
CONTEXT = {"kubernetes-cluster": "c1"}
FQDN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeKms:
    """Crypto + DescribeKey with a primary version the test moves, and aliases."""

    def __init__(self) -> None:
        self.primary, self.state = "v1", "Enabled"
        self.fail: CryptoError | None = None
        self.calls: list[str] = []
        self.answer_version: str | None = None
        self.aliases: dict[str, str] = {}
        self.padding = 0  # extra ciphertext bytes (an over-long KMS answer)

    def resolve(self, key_id: str) -> str:
        return self.aliases.get(key_id, key_id)

    def describe_key(self, key_id: str) -> KeyInfo:
        self.calls.append("DescribeKey")
        if self.fail:
            raise self.fail
        return KeyInfo(self.resolve(key_id), self.state, self.primary)

    def encrypt(self, key_id: str, plaintext: bytes, context: dict[str, str]) -> Wrapped:
        self.calls.append(f"Encrypt {key_id}")
        if self.fail:
            raise self.fail
        assert context == CONTEXT
        real = self.resolve(key_id)
        return Wrapped(f"blob:{real}:{self.primary}:{plaintext.hex()}" + "0" * self.padding,
                       real, self.primary)

    def decrypt(self, key_id: str, ciphertext: str, context: dict[str, str]) -> Unwrapped:
        self.calls.append("Decrypt")
        if self.fail:
            raise self.fail
        _, real, version, data = ciphertext.split(":")
        return Unwrapped(bytes.fromhex(data), real, self.answer_version or version)


@pytest.fixture
def kms() -> FakeKms:
    return FakeKms()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(kms: FakeKms, clock: Clock) -> KeyStateCache:
    return KeyStateCache(KEY, kms.describe_key, interval=30, stale_after=100, clock=clock)


@pytest.fixture
def service(kms: FakeKms, cache: KeyStateCache) -> KeyService:
    cache.refresh()
    kms.calls.clear()
    return KeyService(kms_key_id=KEY, cluster="c1", context=CONTEXT, crypto=kms, keys=cache,
                      metrics=PluginMetrics())


# --- key ids ------------------------------------------------------------------------------

def test_key_id_changes_with_every_version_and_is_stable() -> None:
    ids = {keyids.key_id_for(KEY, f"v{i}") for i in range(100)}
    assert len(ids) == 100
    assert keyids.key_id_for(KEY, "v1") == keyids.key_id_for(KEY, "v1")
    assert keyids.key_id_for(KEY, "v1") != keyids.key_id_for("key-2222", "v1")
    assert len(keyids.key_id_for(KEY, "v1")) <= 1024 and KEY not in keyids.key_id_for(KEY, "v1")


def test_annotation_names_are_what_the_apiserver_accepts() -> None:
    for name in keyids.annotations_for(KEY, "v1", "c1"):
        assert FQDN.fullmatch(name) and "/" not in name, name


# --- the key-state cache --------------------------------------------------------------------

def test_health_from_cache_blips_and_staleness(kms: FakeKms, cache: KeyStateCache,
                                               clock: Clock) -> None:
    assert not cache.health().ok and KEY in cache.health().healthz
    assert cache.refresh()
    assert cache.health() == cache.health() and cache.health().ok
    assert cache.health().key_id == keyids.key_id_for(KEY, "v1")
    kms.fail = CryptoError(Kind.TRANSIENT, "NetworkError", "NetworkError: unreachable")
    assert not cache.refresh()
    clock.now += 50
    assert cache.health().ok  # a blip does not flip health
    clock.now += 100
    health = cache.health()
    assert not health.ok and "NetworkError" in health.healthz and KEY in health.healthz
    assert health.key_id == keyids.key_id_for(KEY, "v1")


@pytest.mark.parametrize(("state", "fix"), [("Disabled", "EnableKey"),
                                            ("PendingDeletion", "CancelKeyDeletion")])
def test_unusable_key_is_unhealthy_naming_key_and_state(kms: FakeKms, cache: KeyStateCache,
                                                        state: str, fix: str) -> None:
    kms.state = state
    cache.refresh()
    health = cache.health()
    assert not health.ok and KEY in health.healthz and state in health.healthz
    assert fix in health.healthz


def test_rotation_changes_key_id_and_reports_once(kms: FakeKms, clock: Clock) -> None:
    seen: list[str] = []
    cache = KeyStateCache(KEY, kms.describe_key, interval=30, on_change=seen.append, clock=clock)
    cache.refresh()
    cache.refresh()
    kms.primary = "v2"
    cache.refresh()
    assert seen == [keyids.key_id_for(KEY, "v1"), keyids.key_id_for(KEY, "v2")]


# --- Status / Encrypt / Decrypt --------------------------------------------------------------

def test_status_costs_no_kms_call(service: KeyService, kms: FakeKms) -> None:
    for _ in range(100):
        assert service.status() == ("ok", keyids.key_id_for(KEY, "v1"))
    assert kms.calls == []


def test_encrypt_takes_key_id_from_kms_answer_and_moves_status(service: KeyService,
                                                               kms: FakeKms) -> None:
    kms.primary = "v2"  # rotated since the last refresh
    result = service.encrypt(b"seed")
    assert result.key_id == keyids.key_id_for(KEY, "v2")
    assert service.status() == ("ok", result.key_id)  # Status agrees at once
    assert result.annotations[keyids.VERSION_ANNOTATION] == b"v2"
    assert service.decrypt(result.ciphertext, result.key_id, result.annotations) == b"seed"


def test_decrypt_round_trip_of_an_earlier_version(service: KeyService, kms: FakeKms) -> None:
    first = service.encrypt(b"old-seed")
    kms.primary = "v2"
    service.keys.refresh()
    assert service.decrypt(first.ciphertext, first.key_id, first.annotations) == b"old-seed"


@pytest.mark.parametrize(("change", "code", "words"), [
    ({"drop": keyids.VERSION_ANNOTATION}, grpc.StatusCode.INVALID_ARGUMENT, "missing"),
    ({keyids.KEY_ANNOTATION: b"key-other", "key_id": keyids.key_id_for("key-other", "v1")},
     grpc.StatusCode.FAILED_PRECONDITION, "wrapped with KMS key key-other"),
    ({"key_id": "alibaba-kms-0000"}, grpc.StatusCode.INVALID_ARGUMENT, "never issued"),
    # A real key_id of this plugin with annotations of another version (e.g. a KMS v1 blob
    # sent with v2's key_id): said as it is, not "never issued".
    ({keyids.VERSION_ANNOTATION: b"v0"}, grpc.StatusCode.INVALID_ARGUMENT,
     "was issued by this plugin for KMS key key-1111 version v1, but the annotations name"),
    ({"drop": keyids.KEY_ANNOTATION}, grpc.StatusCode.INVALID_ARGUMENT,
     "is one this plugin issued (KMS key key-1111 version v1), but the annotations"),
    ({keyids.CLUSTER_ANNOTATION: b"c2"}, grpc.StatusCode.FAILED_PRECONDITION, "'c2'"),
])
def test_decrypt_refuses_what_it_did_not_issue(service: KeyService, kms: FakeKms,
                                               change: dict[str, Any], code: Any,
                                               words: str) -> None:
    good = service.encrypt(b"seed")
    annotations = dict(good.annotations)
    key_id = change.pop("key_id", good.key_id)
    if "drop" in change:
        del annotations[change.pop("drop")]
    annotations.update(change)
    kms.calls.clear()
    with pytest.raises(PluginError) as err:
        service.decrypt(good.ciphertext, key_id, annotations)
    assert err.value.code == code and words in err.value.message
    assert kms.calls == []  # refused before KMS is asked
    assert "seed" not in err.value.message and good.ciphertext.decode() not in err.value.message


def test_decrypt_refuses_a_kms_answer_from_another_version(service: KeyService,
                                                           kms: FakeKms) -> None:
    good = service.encrypt(b"seed")
    kms.answer_version = "v9"
    with pytest.raises(PluginError) as err:
        service.decrypt(good.ciphertext, good.key_id, good.annotations)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and "tampered" in err.value.message


@pytest.mark.parametrize(("kind", "code"), [(Kind.TRANSIENT, grpc.StatusCode.UNAVAILABLE),
                                            (Kind.THROTTLED, grpc.StatusCode.UNAVAILABLE),
                                            (Kind.DENIED, grpc.StatusCode.PERMISSION_DENIED),
                                            (Kind.CONFIG, grpc.StatusCode.FAILED_PRECONDITION)])
def test_kms_failures_map_to_grpc_codes(service: KeyService, kms: FakeKms, kind: Kind,
                                        code: Any) -> None:
    kms.fail = CryptoError(kind, "Code.X", f"Code.X: Encrypt with KMS key {KEY} failed: fix")
    with pytest.raises(PluginError) as err:
        service.encrypt(b"secret-seed-bytes")
    assert err.value.code == code and KEY in err.value.message
    assert "secret-seed-bytes" not in err.value.message


def test_oversized_ciphertext_from_kms_is_refused(service: KeyService, kms: FakeKms) -> None:
    kms.padding = 1024
    with pytest.raises(PluginError) as err:
        service.encrypt(b"x" * 32)
    assert err.value.code == grpc.StatusCode.INTERNAL
    assert "KMS returned a ciphertext of" in err.value.message and "1024" in err.value.message


def test_encrypt_bounds_its_input_before_kms(service: KeyService, kms: FakeKms) -> None:
    assert service.encrypt(b"s" * MAX_PLAINTEXT).key_id  # the ceiling itself is accepted
    kms.calls.clear()
    for size in (MAX_PLAINTEXT + 1, 6000, 1 << 20):
        with pytest.raises(PluginError) as err:
            service.encrypt(b"s" * size)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert f"plaintext of {size} bytes exceeds" in err.value.message
        assert f"{MAX_PLAINTEXT}-byte limit" in err.value.message
    assert kms.calls == []  # refused before KMS is asked


def test_oversized_ciphertext_to_decrypt_is_said_so(service: KeyService, kms: FakeKms) -> None:
    good = service.encrypt(b"seed")
    kms.calls.clear()
    with pytest.raises(PluginError) as err:
        service.decrypt(b"A" * 6000, good.key_id, good.annotations)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "6000 bytes is over the KMS v2 API's 1024" in err.value.message
    assert "another key" not in err.value.message and kms.calls == []


# --- an alias as --key-id ---------------------------------------------------------------------

def test_alias_is_resolved_and_the_key_id_used_everywhere(kms: FakeKms, clock: Clock) -> None:
    kms.aliases["alias/etcd"] = KEY
    seen: list[str] = []
    cache = KeyStateCache("alias/etcd", kms.describe_key, interval=30, on_change=seen.append,
                          clock=clock)
    cache.refresh()
    service = KeyService(kms_key_id="alias/etcd", cluster="c1", context=CONTEXT, crypto=kms,
                         keys=cache, metrics=PluginMetrics())
    healthz, status_key_id = service.status()
    assert (healthz, status_key_id) == ("ok", keyids.key_id_for(KEY, "v1"))
    first = service.encrypt(b"seed-1")
    assert first.key_id == status_key_id  # the apiserver accepts the seed only then
    assert first.annotations[keyids.KEY_ANNOTATION] == KEY.encode()
    assert f"Encrypt {KEY}" in kms.calls  # KMS is asked with the resolved KeyId
    assert service.decrypt(first.ciphertext, first.key_id, first.annotations) == b"seed-1"

    # Re-pointing the alias is a rotation: the next refresh moves Status's key_id.
    kms.aliases["alias/etcd"] = "key-2222"
    cache.refresh()
    assert service.status()[1] == keyids.key_id_for("key-2222", "v1") != status_key_id
    assert seen == [status_key_id, keyids.key_id_for("key-2222", "v1")]
    second = service.encrypt(b"seed-2")
    assert second.key_id == service.status()[1]
    assert second.annotations[keyids.KEY_ANNOTATION] == b"key-2222"
    # Data under the key the alias named before still decrypts (until reencrypt moved it).
    assert service.decrypt(first.ciphertext, first.key_id, first.annotations) == b"seed-1"
    assert service.decrypt(second.ciphertext, second.key_id, second.annotations) == b"seed-2"


def test_a_key_id_flag_still_refuses_other_keys(service: KeyService, kms: FakeKms) -> None:
    kms.aliases["alias/other"] = "key-2222"
    other = KeyService(kms_key_id="alias/other", cluster="c1", context=CONTEXT, crypto=kms,
                       keys=KeyStateCache("alias/other", kms.describe_key, interval=30),
                       metrics=PluginMetrics())
    other.keys.refresh()
    foreign = other.encrypt(b"seed")
    with pytest.raises(PluginError) as err:
        service.decrypt(foreign.ciphertext, foreign.key_id, foreign.annotations)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "wrapped with KMS key key-2222" in err.value.message


# --- settings and the command -----------------------------------------------------------------

def load(*argv: str, **env: str) -> plugin_settings.PluginSettings:
    return plugin_settings.load(list(argv), env)


def test_settings_need_a_key_and_an_identity() -> None:
    with pytest.raises(plugin_settings.SettingsError, match="--key-id"):
        load(ACCESS_KEY_ID="a", SECRET_ACCESS_KEY="b")
    with pytest.raises(plugin_settings.SettingsError, match="no identity"):
        load("--key-id", KEY)
    with pytest.raises(plugin_settings.SettingsError, match="both"):
        load("--key-id", KEY, ACCESS_KEY_ID="a")
    with pytest.raises(plugin_settings.SettingsError, match="--role-arn needs"):
        load("--key-id", KEY, "--role-arn", "acs:ram::1:role/x", "--enable-worker-role")
    with pytest.raises(plugin_settings.SettingsError, match="cluster-name"):
        load("--key-id", KEY, "--cluster-name", "bad name", ACCESS_KEY_ID="a",
             SECRET_ACCESS_KEY="b")


def test_settings_read_peer_environment_names() -> None:
    cfg = load(ACK_KMS_KEY_ID=KEY, ACK_KMS_REGION_ID="cn-beijing", ALIBABA_CLOUD_ACCESS_KEY_ID="a",
               ALIBABA_CLOUD_ACCESS_KEY_SECRET="s3cr3t-value")
    assert (cfg.key_id, cfg.endpoint_host, cfg.access_key_id) == (
        KEY, "kms-vpc.cn-beijing.aliyuncs.com", "a")
    assert "s3cr3t-value" not in repr(cfg)
    assert cfg.encryption_context == {"kubernetes-cluster": "kubernetes"}
    cfg = load("--key-id", KEY, "--kms-endpoint", "kst-1.cryptoservice.kms.aliyuncs.com",
               "--enable-worker-role")
    assert cfg.endpoint_host == "kst-1.cryptoservice.kms.aliyuncs.com" and cfg.enable_worker_role


def test_access_key_file(tmp_path: Path) -> None:
    good = tmp_path / "ak.yaml"
    good.write_text("accessKeyId: id1\naccessKeySecret: sec1\n")
    cfg = load("--key-id", KEY, "--access-key-file", str(good))
    assert (cfg.access_key_id, cfg.access_key_secret) == ("id1", "sec1")
    (tmp_path / "bad.yaml").write_text("accessKeyId: id1\n")
    with pytest.raises(plugin_settings.SettingsError, match="accessKeySecret"):
        load("--key-id", KEY, "--access-key-file", str(tmp_path / "bad.yaml"))
    with pytest.raises(plugin_settings.SettingsError, match="cannot read"):
        load("--key-id", KEY, "--access-key-file", str(tmp_path / "missing.yaml"))


def test_subcommands_dispatch_and_the_controller_stays_the_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ACK_KMS_KEY_ID", raising=False)
    assert cli.main(["kms-plugin"]) == 2
    assert "--key-id is required" in capsys.readouterr().err
    assert cli.main(["reencrypt", "--resources", "a.b"]) == 2
    assert "<plural>.<group>/<version>" in capsys.readouterr().err
    seen: list[Any] = []
    monkeypatch.setattr("controller.app.run", lambda cfg: seen.append(cfg) or 0)
    assert cli.main(["--polling-interval", "30s", "--region", "cn-shanghai"]) == 0
    assert (seen[0].polling_interval, seen[0].region) == (30.0, "cn-shanghai")


def test_socket_path_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from controller.kmsplugin.app import SocketError, prepare_socket

    with pytest.raises(SocketError, match="does not exist"):
        prepare_socket(str(tmp_path / "missing" / "kms.sock"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(SocketError, match="not a socket"):
        prepare_socket(str(tmp_path / "file"))
    stale = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:  # left by an earlier run: replaced
        sock.bind(str(stale))
    prepare_socket(str(stale))
    assert not stale.exists()
    # Root passes every permission check, so the unwritable case is simulated.
    monkeypatch.setattr("controller.kmsplugin.app.os.access", lambda *_a: False)
    with pytest.raises(SocketError, match="not writable"):
        prepare_socket(str(tmp_path / "kms.sock"))


def test_refreshes_are_counted_after_the_key_id_moved(kms: FakeKms, clock: Clock) -> None:
    metrics = PluginMetrics()
    seen: list[tuple[bool, str]] = []

    def on_refresh(ok: bool) -> None:  # what reencrypt --wait-for-key-rotation relies on
        metrics.count_refresh(ok)
        seen.append((ok, cache.health().key_id))

    cache = KeyStateCache(KEY, kms.describe_key, interval=30, on_refresh=on_refresh,
                          clock=clock)
    cache.refresh()
    kms.primary = "v2"
    cache.refresh()
    kms.fail = CryptoError(Kind.TRANSIENT, "NetworkError", "NetworkError: unreachable")
    cache.refresh()
    assert seen == [(True, keyids.key_id_for(KEY, "v1")), (True, keyids.key_id_for(KEY, "v2")),
                    (False, keyids.key_id_for(KEY, "v2"))]
    text = metrics.route()("").body.decode()
    assert 'ack_secret_manager_kmsplugin_key_refreshes_total{result="ok"} 2.0' in text
    assert 'ack_secret_manager_kmsplugin_key_refreshes_total{result="error"} 1.0' in text
