"""Every per-object, per-identity and per-host map has an owner that prunes it (issue 10,
point 4): entries unused for longer than their bound go in an amortized sweep, on a fake
clock. The churn benchmark (bench/churn.py) checks the same end to end on RSS."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from controller.kube.access import NAMESPACE_TTL, KubeAccess
from controller.kube.rest import ApiError
from controller.kube.tokens import ROLE_ARN_ANNOTATION, ServiceAccountTokens
from controller.providers.alibaba.identity import (
    ACCESS_KEY,
    OIDC_ROLE_ARN,
    Identity,
    IdentityPool,
    IdleSweep,
)
from controller.providers.alibaba.kms import Endpoint, Kms
from controller.providers.alibaba.kms_instance import InstanceEndpoint, KmsInstance
from controller.providers.alibaba.oos import Oos
from controller.providers.alibaba.pool import CallPolicy
from controller.providers.alibaba.provider import NAMES, Alibaba
from controller.providers.alibaba.shape import SHAPE as ALIBABA
from controller.providers.alibaba.stores import CREDENTIAL_TTL, Source
from controller.providers.fake import serving
from controller.secretstore.stores import StoreResolver
from tests import shaped
from tests.unit.test_stores import AK, AK_REFS, NS, FakeSecrets, _settings, _store

HOST = Endpoint("kms.cn-hangzhou.aliyuncs.com")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Ref:
    def __init__(self, name: str) -> None:
        self.name, self.namespace, self.audiences = name, "", ()


class FakeRest:
    """GET ServiceAccount and create TokenRequest, from a dict."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.accounts: dict[tuple[str, str], dict[str, str]] = {}
        self.minted: list[tuple[str, str]] = []

    def get(self, path: str, **_query: Any) -> dict[str, Any]:
        parts = path.split("/")
        if (parts[4], parts[6]) not in self.accounts:
            raise ApiError(404, "Not Found")
        return {"metadata": {"annotations": self.accounts[(parts[4], parts[6])]}}

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        parts = path.split("/")
        self.minted.append((parts[4], parts[6]))
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(
            self.clock() + body["spec"]["expirationSeconds"]))
        token = f"jwt-token-{len(self.minted)}"
        return {"status": {"token": token, "expirationTimestamp": expires}}


def _ak(n: int) -> Identity:
    return Identity(ACCESS_KEY, access_key_id=f"LTAI{n:04d}", access_key_secret=f"secret{n}")


# ------------------------------------------------------------------------------ the sweep
def test_the_sweep_runs_at_most_once_per_period_and_names_the_idle_keys() -> None:
    clock = Clock(100.0)
    sweep = IdleSweep(40.0, clock=clock)  # every 10 s
    assert sweep.due() is None
    clock.now = 110.0
    assert sweep.due() == 70.0
    assert sweep.due() is None  # not again within the period
    assert IdleSweep.stale({"old": 69.0, "new": 75.0}, 70.0) == ["old"]


# ------------------------------------------------------------------------------ identities
def test_identity_pool_drops_credentials_nobody_used_for_the_idle_bound() -> None:
    clock = Clock(0.0)
    pool = IdentityPool(on_secret=None, idle=100.0, clock=clock)
    kept, idle = _ak(1), _ak(2)
    first = pool.credential(kept)
    pool.credential(idle)
    for now in range(10, 200, 10):  # `kept` is used every 10 s, `idle` never again
        clock.now = float(now)
        pool.touch(kept)
    assert len(pool) == 1
    assert pool.credential(kept) is first and pool.builds == 2
    pool.credential(idle)
    assert pool.builds == 3  # built again when it came back


def test_identity_pool_knows_which_token_files_live_identities_read() -> None:
    pool = IdentityPool(on_secret=None, idle=100.0, clock=Clock(0.0))
    one = Identity(OIDC_ROLE_ARN, role_arn="acs:ram::1:role/a", oidc_provider_arn="p",
                   oidc_token_file="/t/1.jwt")
    other = Identity(OIDC_ROLE_ARN, role_arn="acs:ram::1:role/b", oidc_provider_arn="p",
                     oidc_token_file="/t/1.jwt")
    pool.credential(one)
    pool.credential(other)
    assert pool.token_file_in_use("/t/1.jwt") and not pool.token_file_in_use("/t/2.jwt")
    assert pool.discard(one) and pool.token_file_in_use("/t/1.jwt")
    assert pool.invalidate(other)
    assert not pool.token_file_in_use("/t/1.jwt")
    assert not pool.discard(one)


# ------------------------------------------------------------------------------ clients
def test_kms_drops_idle_clients_limiters_and_cooldowns_and_their_credentials() -> None:
    clock = Clock(0.0)
    pool = IdentityPool(on_secret=None, idle=100.0, clock=clock)
    kms = Kms(pool, region="cn-hangzhou", policy=CallPolicy(idle=100.0, clock=clock))
    busy, gone = _ak(1), _ak(2)
    kept = kms.client(busy, HOST)
    kms.client(gone, HOST)
    kms.client(gone, Endpoint("other.example:443", protocol="http"))
    kms._limiter("other.example:443")
    kms._cool_down((gone.fingerprint(), HOST.host), 5.0)
    assert kms.sizes()["clients"] == 3 and kms.sizes()["cooldowns"] == 1
    for now in range(10, 200, 10):
        clock.now = float(now)
        kms.client(busy, HOST)
        kms._limiter(HOST.host)
    sizes = kms.sizes()
    assert (sizes["clients"], sizes["limiters"], sizes["cooldowns"]) == (1, 1, 0), sizes
    assert sizes["identities"] == 1
    assert kms.client(busy, HOST) is kept


def test_kms_forget_identity_drops_its_clients_and_credentials_at_once() -> None:
    pool = IdentityPool(on_secret=None)
    kms = Kms(pool, region="cn-hangzhou")
    kms.client(_ak(1), HOST)
    kms.client(_ak(2), HOST)
    kms._cool_down((_ak(1).fingerprint(), HOST.host), 5.0)
    assert kms.forget_identity(_ak(1)) == 1
    sizes = kms.sizes()
    assert (sizes["clients"], sizes["cooldowns"], sizes["identities"]) == (1, 0, 1)


def test_oos_drops_idle_clients_and_limiters() -> None:
    clock = Clock(0.0)
    pool = IdentityPool(on_secret=None, idle=100.0, clock=clock)
    oos = Oos(pool, region="cn-hangzhou", policy=CallPolicy(idle=100.0, clock=clock))
    host = Endpoint("oos.cn-hangzhou.aliyuncs.com")
    oos._client(_ak(1), host)
    oos._client(_ak(2), host)
    oos._limiter("old.example")
    for now in range(10, 200, 10):
        clock.now = float(now)
        oos._client(_ak(1), host)
        oos._limiter(host.host)
    assert oos.sizes() == {"clients": 1, "limiters": 1}
    assert oos.forget_identity(_ak(1)) == 1 and oos.sizes()["clients"] == 0
    assert len(pool) == 0


def test_kms_instance_closes_and_drops_idle_connection_pools() -> None:
    clock = Clock(0.0)
    instance = KmsInstance(CallPolicy(idle=100.0, clock=clock))
    old = instance._pool(InstanceEndpoint("old.cryptoservice.kms.aliyuncs.com"))
    closed: list[bool] = []
    old.close = lambda: closed.append(True)  # type: ignore[method-assign]
    for now in range(10, 200, 10):
        clock.now = float(now)
        instance._pool(InstanceEndpoint("busy.cryptoservice.kms.aliyuncs.com"))
        instance._limiter("busy.cryptoservice.kms.aliyuncs.com")
    assert instance.sizes() == {"pools": 1, "limiters": 1} and closed == [True]


# ------------------------------------------------------------------------------ tokens
def _tokens(in_use: set[str] | None) -> tuple[ServiceAccountTokens, FakeRest, Clock]:
    clock = Clock(time.time())
    rest = FakeRest(clock)
    for name in ("app", "old"):
        rest.accounts[("team-a", name)] = {ROLE_ARN_ANNOTATION: "acs:ram::1:role/app"}
    check = None if in_use is None else in_use.__contains__
    tokens = ServiceAccountTokens(rest, clock=clock, refresh_every=3600,  # type: ignore[arg-type]
                                  in_use=check, idle=600.0)
    return tokens, rest, clock


def test_a_token_nobody_reads_is_no_longer_minted_and_its_file_goes() -> None:
    read: set[str] = set()
    tokens, rest, clock = _tokens(read)
    try:
        app, _ = tokens(Ref("app"), "team-a")
        old, _ = tokens(Ref("old"), "team-a")
        read.add(app)  # a live identity reads app's file; nobody reads old's any more
        clock.now += 300
        assert tokens.refresh_due() == 0 and len(tokens) == 2  # asked for recently: kept
        clock.now += 1600  # past half of the hour: both are due
        assert tokens.refresh_due() == 1
        assert len(tokens) == 1 and Path(app).exists() and not Path(old).exists()
        assert [m[1] for m in rest.minted] == ["app", "old", "app"]
        again, _ = tokens(Ref("old"), "team-a")  # asked for again: minted again
        assert Path(again).read_text() == f"jwt-token-{len(rest.minted)}"
    finally:
        tokens.close()


def test_without_a_reader_check_every_token_is_renewed_as_before() -> None:
    tokens, _rest, clock = _tokens(None)
    try:
        path, _ = tokens(Ref("old"), "team-a")
        clock.now += 7200
        assert tokens.refresh_due() == 1 and Path(path).exists()
    finally:
        tokens.close()


# ------------------------------------------------------------------------------ kube caches
class _Namespaces:
    def get(self, path: str, **_query: Any) -> dict[str, Any]:
        return {"metadata": {"name": path.rsplit("/", 1)[-1], "labels": {"team": "a"}}}


def test_namespace_labels_older_than_their_ttl_are_swept() -> None:
    clock = Clock(0.0)
    access = KubeAccess(_Namespaces(), None,  # type: ignore[arg-type]
                        external_secrets=lambda ns: None, secret_stores=lambda ns: None,
                        cluster_secret_stores=None, secrets=lambda ns: None)
    access.clock = clock
    for i in range(50):
        access.namespace_labels(f"gone-{i}")
    assert access.namespace_labels_cached() == 50
    clock.now = NAMESPACE_TTL + 1
    assert access.namespace_labels("live") == {"team": "a"}
    assert access.namespace_labels_cached() == 1


def test_store_resolver_sweeps_identities_of_old_resource_versions() -> None:
    clock = Clock(0.0)
    stores: dict[str, dict[str, Any]] = {}
    provider = Alibaba(_settings(), clock=clock)
    resolver = StoreResolver(_settings(), lambda _k, _ns, name: stores.get(name),
                             FakeSecrets(AK), lambda _ns: {},
                             serving(provider, *NAMES, shape=ALIBABA))
    es = shaped.parse_external_secret({
        "metadata": {"name": "app", "namespace": NS, "uid": "u"},
        "spec": {"data": [{"key": "db", "secretStoreRef": {"name": "s"}}]}})
    for version in range(20):  # the store edited 20 times, then deleted
        store = _store("s", {"KMSAuth": AK_REFS})
        store["metadata"]["resourceVersion"] = str(version)
        stores["s"] = store
        resolver.resolve(es, es.spec.data[0])
    assert provider.stores.cached() == 20
    clock.now = CREDENTIAL_TTL + 1
    resolver.resolve(es, es.spec.data[0])
    assert provider.stores.cached() == 1


# ------------------------------------------------------- released by their owner at once


def test_the_last_read_through_a_client_releases_it_and_its_identity() -> None:
    from controller.externalsecret.fetcher import FetchRequest
    from controller.externalsecret.polls import PollSchedule

    schedule = PollSchedule(lambda _r: None)
    other = Endpoint("kms-vpc.cn-hangzhou.aliyuncs.com")
    a, b = FetchRequest(Source(_ak(1), HOST), "db"), FetchRequest(Source(_ak(1), HOST), "api")
    c = FetchRequest(Source(_ak(1), other), "db")
    schedule.track(("ns", "x"), frozenset({a}), 60.0)
    schedule.track(("ns", "y"), frozenset({b, c}), 60.0)
    schedule.forget(("ns", "x"))
    assert schedule.take_released() == (set(), set())  # b still reads through (kms, HOST, 1)
    schedule.track(("ns", "y"), frozenset({c}), 60.0)  # y drops b: HOST's client goes
    assert schedule.take_released() == ({("kms", Source(_ak(1), HOST))}, set())  # c uses _ak(1)
    schedule.forget(("ns", "y"))
    assert schedule.take_released() == ({("kms", Source(_ak(1), other))}, {_ak(1)})
    sizes = schedule.sizes()
    assert (sizes["via"], sizes["as"], sizes["released"], sizes["users"]) == (0, 0, 0, 0)


def test_a_deleted_external_secret_releases_its_kms_client_credentials_and_token() -> None:
    """Through the manager: the DELETED event of the last ExternalSecret that reads with an
    identity drops the KMS client and the credentials at once (not 10 minutes later), and the
    ServiceAccount token the identity read."""
    from controller import settings
    from controller.externalsecret.controller import ExternalSecrets
    from controller.externalsecret.fetcher import FetchRequest

    pool = IdentityPool(on_secret=None)
    kms = Kms(pool, region="cn-hangzhou")
    released: list[set[str]] = []

    class Tokens:
        def __call__(self, ref: Any, store_namespace: str) -> tuple[str, str]:
            raise AssertionError("no token is minted here")

        def release(self, paths: set[str], **_kw: Any) -> int:
            released.append(paths)
            return 0

    cfg = settings.load([], {})
    manager = ExternalSecrets(cfg, rest=None,  # type: ignore[arg-type]
                      providers=serving(Alibaba(cfg, kms=kms, identities=pool, tokens=Tokens()),
                                        *NAMES, shape=ALIBABA),
                      instance="test")
    token_file = "/tokens/team-a/app"
    rrsa = Identity(OIDC_ROLE_ARN, role_arn="acs:ram::1:role/app",
                    oidc_provider_arn="acs:ram::1:oidc-provider/ack", oidc_token_file=token_file)
    obj = {"metadata": {"namespace": "team-a", "name": "app", "generation": 1},
           "spec": {"data": [{"key": "db"}]}}
    manager._started.set()
    manager._on_external_secret("ADDED", obj)
    kms.client(rrsa, HOST)
    pool.credential(rrsa)
    manager._track(("team-a", "app"), frozenset({FetchRequest(Source(rrsa, HOST), "db")}), 60.0)
    assert kms.sizes()["clients"] == 1 and len(pool) == 1
    manager._on_external_secret("DELETED", obj)
    assert kms.sizes()["clients"] == 0 and len(pool) == 0
    assert released == [{token_file}]


def test_released_tokens_go_unless_read_or_just_asked_for() -> None:
    read: set[str] = set()
    tokens, _rest, clock = _tokens(read)
    try:
        app, _ = tokens(Ref("app"), "team-a")
        old, _ = tokens(Ref("old"), "team-a")
        assert tokens.release({app, old}) == 0  # both asked for just now: a store being set up
        clock.now += 60
        read.add(app)  # a live identity still reads app's file
        assert tokens.release({app, old}) == 1
        assert len(tokens) == 1 and Path(app).exists() and not Path(old).exists()
    finally:
        tokens.close()


# ------------------------------------------------------------------------------ redaction
def test_an_identitys_credentials_are_redacted_while_held_and_released_with_it() -> None:
    """The credentials an identity obtained are held in its name in the redactor, and the
    redactor forgets them when the identity is dropped: identities that come and go (the
    churn benchmark) do not fill it."""
    from controller.ops.redact import REDACTED, Redactor

    redactor = Redactor()
    pool = IdentityPool(hold=lambda owner, value: redactor.hold(owner, value, keep=8),
                        release=redactor.release)
    identity = _ak(7)
    pool.credential(identity).get_credential()  # the provider hands out the AccessKey
    assert redactor.scrub("secret7 in a line") == f"{REDACTED} in a line"
    assert redactor.owned()[0] == 1  # one owner (its forms: the value, base64)
    assert pool.discard(identity)
    assert redactor.owned() == (0, 0)
    assert redactor.scrub("secret7") == "secret7"


def test_a_token_is_held_in_its_files_name_and_released_when_the_file_goes() -> None:
    from controller.ops.redact import REDACTED, Redactor

    redactor = Redactor()
    clock = Clock(time.time())
    rest = FakeRest(clock)
    rest.accounts[("team-a", "app")] = {ROLE_ARN_ANNOTATION: "acs:ram::1:role/app"}
    tokens = ServiceAccountTokens(rest, clock=clock, refresh_every=3600,  # type: ignore[arg-type]
                                  in_use=lambda _path: False, idle=600.0,
                                  hold=lambda owner, value: redactor.hold(owner, value, keep=2),
                                  release=redactor.release)
    try:
        path, _ = tokens(Ref("app"), "team-a")
        assert redactor.scrub("jwt-token-1") == REDACTED and redactor.owned()[0] == 1
        clock.now += 60
        assert tokens.release({path}) == 1
        assert redactor.owned() == (0, 0) and redactor.scrub("jwt-token-1") == "jwt-token-1"
    finally:
        tokens.close()


def test_a_token_released_while_just_asked_for_goes_at_the_next_refresh() -> None:
    """Released while just asked for (a sync resolved its store a moment ago): not dropped
    then, but by the refresher once the grace has passed, rather than at the 10-minute idle
    bound; a token that a live identity reads again in between stays."""
    read: set[str] = set()
    tokens, _rest, clock = _tokens(read)
    try:
        app, _ = tokens(Ref("app"), "team-a")
        old, _ = tokens(Ref("old"), "team-a")
        assert tokens.release({app, old}) == 0
        read.add(app)  # app's identity came back
        clock.now += 31
        tokens.refresh_due()
        assert len(tokens) == 1 and Path(app).exists() and not Path(old).exists()
        read.discard(app)
        clock.now += 31
        tokens.refresh_due()
        assert len(tokens) == 1  # app left the releasing set when it was read: idle bound
    finally:
        tokens.close()


def test_a_refresh_that_ends_after_the_identity_was_dropped_holds_nothing() -> None:
    from controller.ops.redact import Redactor

    redactor = Redactor()
    pool = IdentityPool(hold=lambda owner, value: redactor.hold(owner, value, keep=8),
                        release=redactor.release)
    identity = _ak(8)
    client = pool.credential(identity)
    pool.discard(identity)
    client.get_credential()  # the old client's provider, still in someone's hands
    assert redactor.owned() == (0, 0)
