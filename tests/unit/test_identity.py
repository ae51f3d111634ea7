"""Unit tests for the identity plumbing: credentials held until a quarter of their lifetime is
left (not refreshed per call), one rebuild when many calls see an expired token, evenly spaced
KMS calls, error classification that names the identity and the fix and never copies the
exception text, and ServiceAccount tokens minted into private files and renewed at half life.
Plain fakes and a fake clock; no network."""

from __future__ import annotations

import itertools
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_credentials.exceptions import CredentialException
from alibabacloud_tea_openapi.exceptions import ClientException, ThrottlingException

from controller.kube.rest import ApiError
from controller.kube.tokens import ROLE_ARN_ANNOTATION, ServiceAccountTokens, TokenProblem
from controller.providers.alibaba.errors import Kind, classify
from controller.providers.alibaba.identity import (
    ACCESS_KEY,
    CachedCredentials,
    Identity,
    IdentityPool,
)
from controller.providers.alibaba.kms import RateLimiter


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Creds:
    def __init__(self, n: int, expiration: int | None) -> None:
        self.n, self.expiration = n, expiration

    def get_access_key_id(self) -> str:
        return f"STS.id{self.n}"

    def get_access_key_secret(self) -> str:
        return f"secret-{self.n}"

    def get_security_token(self) -> str:
        return f"token-{self.n}"

    def get_expiration(self) -> int | None:
        return self.expiration


class Inner:
    """A provider that issues credentials living `lifetime` seconds (None: forever)."""

    def __init__(self, clock: Clock, lifetime: float | None) -> None:
        self.clock, self.lifetime, self.calls, self.fail = clock, lifetime, 0, False

    def get_credentials(self) -> Creds:
        self.calls += 1
        if self.fail:
            raise CredentialException("error refreshing credentials, http_code: 503")
        exp = None if self.lifetime is None else int(self.clock() + self.lifetime)
        return Creds(self.calls, exp)

    def get_provider_name(self) -> str:
        return "fake"


# ---------------------------------------------------------------- cached credentials


@pytest.mark.parametrize(("lifetime", "renew_after"), [
    (3600, 2700),   # one hour: renewed with 15 minutes left, like the library
    (900, 675),     # 15 minutes: the library would call STS on every KMS call
    (8, 6),         # a few seconds (tests): still not per call
])
def test_credentials_are_held_until_a_quarter_of_their_lifetime_is_left(
    lifetime: int, renew_after: int
) -> None:
    clock = Clock()
    inner = Inner(clock, lifetime)
    told: list[str] = []
    cached = CachedCredentials(inner, on_secret=told.append, clock=clock)
    first = cached.get_credentials()
    for _ in range(100):
        assert cached.get_credentials() is first
    clock.now += renew_after - 0.5
    assert cached.get_credentials() is first and inner.calls == 1
    clock.now += 1
    assert cached.get_credentials() is not first and inner.calls == 2
    assert told == ["secret-1", "token-1", "secret-2", "token-2"]  # for the log redactor


def test_long_term_access_keys_are_fetched_once() -> None:
    clock = Clock()
    inner = Inner(clock, None)
    cached = CachedCredentials(inner, clock=clock)
    cached.get_credentials()
    clock.now += 10 * 86400
    cached.get_credentials()
    assert inner.calls == 1


def test_a_failed_refresh_keeps_valid_credentials_and_tries_again_later() -> None:
    clock = Clock()
    inner = Inner(clock, 3600)
    cached = CachedCredentials(inner, clock=clock, retry_after_failure=5)
    first = cached.get_credentials()
    clock.now += 3000
    inner.fail = True
    assert cached.get_credentials() is first  # STS down: the held ones are still good
    assert cached.get_credentials() is first and inner.calls == 2  # no retry storm
    clock.now += 5
    inner.fail = False
    assert cached.get_credentials() is not first and inner.calls == 3
    clock.now += 3600  # expired and STS down: the caller learns it
    inner.fail = True
    with pytest.raises(CredentialException):
        cached.get_credentials()


def test_one_refresh_at_a_time_per_identity() -> None:
    clock = Clock()
    inner = Inner(clock, 3600)
    slow_get = inner.get_credentials

    def slow() -> Creds:
        time.sleep(0.05)
        return slow_get()

    inner.get_credentials = slow  # type: ignore[method-assign]
    cached = CachedCredentials(inner, clock=clock)
    threads = [threading.Thread(target=cached.get_credentials) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inner.calls == 1


def test_a_slow_refresh_does_not_hold_up_callers_while_the_held_credentials_are_valid() -> None:
    clock = Clock()
    inner = Inner(clock, 3600)
    cached = CachedCredentials(inner, clock=clock)
    first = cached.get_credentials()
    clock.now += 2800  # due for renewal, still valid for 800 s
    entered, release = threading.Event(), threading.Event()
    plain_get = inner.get_credentials

    def blocked() -> Creds:
        entered.set()
        release.wait(5)
        return plain_get()

    inner.get_credentials = blocked  # type: ignore[method-assign]
    refresher = threading.Thread(target=cached.get_credentials)
    refresher.start()
    assert entered.wait(5)
    started = time.monotonic()
    assert cached.get_credentials() is first  # not waiting for STS
    assert time.monotonic() - started < 1
    release.set()
    refresher.join()
    assert cached.get_credentials() is not first and inner.calls == 2


def test_identity_pool_rebuilds_once_when_many_calls_see_an_expired_token() -> None:
    pool = IdentityPool(on_secret=None)
    identity = Identity(ACCESS_KEY, access_key_id="id", access_key_secret="secret-value")
    old = pool.credential(identity)
    assert pool.credential(identity) is old and pool.builds == 1
    assert pool.invalidate(identity, old) is True
    new = pool.credential(identity)
    assert pool.invalidate(identity, old) is False  # a late failure of the old one
    assert pool.credential(identity) is new and pool.builds == 2


def test_identity_descriptions_carry_no_key_material() -> None:
    identity = Identity("oidc_role_arn", access_key_secret="s3cr3t-value",
                        role_arn="acs:ram::1:role/app", remote_role_arn="acs:ram::2:role/far",
                        source="SecretStore a/b")
    text = identity.describe()
    assert text == ("cross-account role acs:ram::2:role/far assumed with RRSA role "
                    "acs:ram::1:role/app (SecretStore a/b)")
    assert "s3cr3t" not in repr(identity) and "s3cr3t" not in identity.fingerprint()


# --------------------------------------------------------------------------- rate limit


def test_calls_start_evenly_spaced_so_no_second_holds_more_than_the_rate() -> None:
    limiter = RateLimiter(50)
    starts: list[float] = []
    lock = threading.Lock()

    def call() -> None:
        limiter.acquire()
        with lock:
            starts.append(time.monotonic())

    burst = [threading.Thread(target=call, daemon=True) for _ in range(11)]  # all at once
    for t in burst:
        t.start()
    for t in burst:
        t.join(10)
    starts.sort()
    assert limiter.period == pytest.approx(1.1 / 50)
    assert len(starts) == 11
    # Never closer than a period (a start is taken at or after its time, never before) ...
    assert all(b - a >= limiter.period - 0.002 for a, b in itertools.pairwise(starts))
    # ... so any 51 consecutive starts would span more than a second (by the 100 ms guard).
    limiter = RateLimiter(5)
    before = time.monotonic()
    limiter.acquire()  # idle for a while: no credit saved up, the first call goes at once
    limiter.acquire()
    assert time.monotonic() - before >= limiter.period - 0.002
    assert limiter.slots._value == 5  # type: ignore[attr-defined] # concurrency cap


def test_a_caller_served_less_recently_takes_the_next_start_time() -> None:
    """Start times go to the caller served least recently, not in arrival order: another
    tenant's call starts at the next start time, ahead of a busy tenant's waiting call."""
    limiter = RateLimiter(2)  # a start every 0.55 s, two calls at once
    order: list[str] = []

    def call(caller: str) -> None:
        with limiter.turn(caller):
            limiter.acquire()
            order.append(caller)

    first = threading.Thread(target=call, args=("busy",))
    first.start()
    first.join(5)  # "busy" was served just now; the next start is a period away
    busy = threading.Thread(target=call, args=("busy",))
    busy.start()  # "busy" asks first ...
    deadline = time.monotonic() + 5
    while not limiter._waiting and time.monotonic() < deadline:  # its call is waiting
        time.sleep(0.001)
    other = threading.Thread(target=call, args=("other",))
    other.start()  # ... "other" asks later, within the same period
    for t in (busy, other):
        t.join(5)
    assert order == ["busy", "other", "busy"]


# -------------------------------------------------------------------------- errors


class Wrapped(Exception):
    """What the SDK raises when something under it failed (UnretryableException)."""

    def __init__(self, inner: BaseException) -> None:
        super().__init__(str(inner))
        self.inner_exception = inner


STS_BODY = ('error refreshing credentials from oidc_role_arn, http_code: {status}, result: '
            '{{"RequestId": "R-1", "Code": "{code}", "Message": "x RequestId: R-1"}}')
WHO = "RRSA role acs:ram::1:role/app (SecretStore a/b)"


@pytest.mark.parametrize(("code", "status", "kind", "fix"), [
    ("AuthenticationFail.NoPermission", 401, Kind.AUTH, "trust policy"),
    ("AuthenticationFail.OIDCToken.Expired", 401, Kind.AUTH, "ServiceAccount token"),
    ("EntityNotExist.Role", 404, Kind.AUTH, "fix the role ARN"),
    ("NoPermission", 403, Kind.AUTH, "trust policy"),
    ("InternalError", 500, Kind.TRANSIENT, "will retry"),
])
def test_sts_refusals_name_the_identity_and_the_fix(
    code: str, status: int, kind: Kind, fix: str
) -> None:
    exc = Wrapped(CredentialException(STS_BODY.format(status=status, code=code)))
    error = classify(exc, who=WHO, endpoint="kms.example")
    assert (error.kind, error.code) == (kind, code)
    assert WHO in error.reason and fix in error.reason
    assert "R-1" not in error.reason  # no request id: the status would churn


def test_kms_denial_and_bad_credentials_name_the_identity() -> None:
    denied = classify(ClientException(code="Forbidden.NoPermission", status_code=403,
                                      message="no RequestId: R-2"), who=WHO)
    assert denied.kind == Kind.DENIED and WHO in denied.reason
    assert "kms:GetSecretValue" in denied.reason and "kms:Decrypt" in denied.reason
    expired = classify(ClientException(code="InvalidSecurityToken.Expired", status_code=400))
    assert expired.kind == Kind.AUTH and expired.token_expired
    throttled = classify(ThrottlingException(code="Rejected.Throttling", status_code=400,
                                             retry_after=1500))
    assert throttled.retryable and throttled.retry_after == 1.5
    missing = classify(ClientException(code="Forbidden.ResourceNotFound", status_code=404))
    assert missing.kind == Kind.NOT_FOUND and not missing.retryable


def test_local_failures_never_copy_the_exception_text() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    url = f"/?Action=AssumeRoleWithOIDC&OIDCToken={token}"
    sts_down = classify(Wrapped(OSError(f"Max retries exceeded with url: {url}")), who=WHO)
    assert sts_down.kind == Kind.TRANSIENT and "STS" in sts_down.reason
    tls = classify(Wrapped(OSError("SSLError(SSLCertVerificationError(1, '[SSL: "
                                   "CERTIFICATE_VERIFY_FAILED] ...'))")),
                   who=WHO, endpoint="kst-1.cryptoservice.kms.aliyuncs.com")
    assert (tls.kind, tls.code) == (Kind.CONFIG, "TLSVerifyFailed") and not tls.retryable
    assert "kst-1.cryptoservice.kms.aliyuncs.com" in tls.reason and "spec.KMS.ca" in tls.reason
    drop = classify(Wrapped(OSError("Connection aborted.")), endpoint="kms.example")
    assert drop.kind == Kind.TRANSIENT and "kms.example" in drop.reason
    token_file = classify(Wrapped(FileNotFoundError(2, "No such file", "/var/run/token")),
                          who=WHO)
    assert token_file.code == "TokenFileUnreadable" and "/var/run/token" in token_file.reason
    disabled = classify(ValueError("IMDS credentials is disabled"), who="worker role")
    assert disabled.kind == Kind.CONFIG and "IMDS credentials is disabled" in disabled.reason
    metadata = classify(Wrapped(CredentialException(
        "Failed to get RAM session credentials from ECS metadata service. HttpCode=404")))
    assert metadata.code == "WorkerRoleUnavailable" and "attach a RAM role" in metadata.reason
    assert metadata.own_identity and not sts_down.own_identity  # the engine names the store
    for error in (sts_down, tls, drop, token_file, disabled, metadata):
        assert token not in error.reason and "eyJ" not in error.reason


# ------------------------------------------------------------------ ServiceAccount tokens


class FakeRest:
    """The two API calls ServiceAccountTokens makes, answered from dicts."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.accounts: dict[tuple[str, str], dict[str, str]] = {}
        self.minted: list[tuple[str, str, list[str], int]] = []
        self.refuse: int | None = None

    def get(self, path: str, **_query: Any) -> dict[str, Any]:
        ns, name = _sa(path)
        if (ns, name) not in self.accounts:
            raise ApiError(404, "Not Found")
        return {"metadata": {"name": name, "annotations": self.accounts[(ns, name)]}}

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.refuse:
            raise ApiError(self.refuse, "Forbidden")
        ns, name = _sa(path.removesuffix("/token"))
        spec = body["spec"]
        self.minted.append((ns, name, spec["audiences"], spec["expirationSeconds"]))
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                time.gmtime(self.clock() + spec["expirationSeconds"]))
        return {"status": {"token": f"jwt-{len(self.minted)}", "expirationTimestamp": expires}}


def _sa(path: str) -> tuple[str, str]:
    parts = path.split("/")
    return parts[4], parts[6]


class Ref:
    def __init__(self, name: str, namespace: str = "", audiences: tuple[str, ...] = ()) -> None:
        self.name, self.namespace, self.audiences = name, namespace, audiences


def _tokens(tmp_path: Path) -> tuple[ServiceAccountTokens, FakeRest, Clock, list[str]]:
    clock = Clock(time.time())
    rest = FakeRest(clock)
    rest.accounts[("team-a", "app")] = {ROLE_ARN_ANNOTATION: "acs:ram::1:role/app"}
    seen: list[str] = []
    tokens = ServiceAccountTokens(rest, clock=clock, on_token=seen.append,  # type: ignore[arg-type]
                                  refresh_every=3600)
    return tokens, rest, clock, seen


def test_token_is_minted_into_a_private_file_and_renewed_at_half_life(tmp_path: Path) -> None:
    tokens, rest, clock, seen = _tokens(tmp_path)
    try:
        path, role = tokens(Ref("app"), "team-a")
        assert role == "acs:ram::1:role/app"
        assert rest.minted == [("team-a", "app", ["sts.aliyuncs.com"], 3600)]
        assert Path(path).read_text() == "jwt-1" and seen == ["jwt-1"]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tokens.directory).st_mode) == 0o700
        clock.now += 1700
        assert tokens(Ref("app"), "team-a")[0] == path and len(rest.minted) == 1
        assert tokens.refresh_due() == 0
        clock.now += 200  # past half of 3600 s
        assert tokens.refresh_due() == 1  # the background renewal (KMS polls never ask)
        assert Path(path).read_text() == "jwt-2"
        other, _ = tokens(Ref("app", audiences=("sts.example",)), "team-a")
        assert other != path and rest.minted[-1][2] == ["sts.example"]
    finally:
        tokens.close()
    assert not Path(tokens.directory).exists()


def test_token_problems_say_which_service_account_and_the_fix(tmp_path: Path) -> None:
    tokens, rest, _clock, _seen = _tokens(tmp_path)
    rest.accounts[("team-a", "plain")] = {}
    try:
        with pytest.raises(TokenProblem) as err:
            tokens(Ref("plain"), "team-a")
        assert err.value.reason == "CredentialsNotFound"
        assert "ServiceAccount team-a/plain" in str(err.value)
        assert f"annotate serviceaccount plain {ROLE_ARN_ANNOTATION}=" in str(err.value)
        with pytest.raises(TokenProblem) as err:
            tokens(Ref("ghost"), "team-a")
        assert err.value.reason == "CredentialsNotFound" and "does not exist" in str(err.value)
        rest.refuse = 403
        with pytest.raises(TokenProblem) as err:
            tokens(Ref("app"), "team-a")
        assert err.value.reason == "TokenRequestFailed"
        assert "serviceaccounts/token" in str(err.value) and "403" in str(err.value)
    finally:
        tokens.close()


@pytest.mark.parametrize(("kind", "fields"), [
    (ACCESS_KEY, {"access_key_id": "", "access_key_secret": " "}),
    ("ram_role_arn", {"access_key_id": "", "access_key_secret": "", "role_arn": "acs:ram::1:r"}),
    ("oidc_role_arn", {"role_arn": "", "oidc_provider_arn": "", "oidc_token_file": ""}),
])
def test_empty_credentials_never_fall_back_to_the_controllers_environment(
        monkeypatch: pytest.MonkeyPatch, kind: str, fields: dict[str, str]) -> None:
    """The credentials library takes an empty argument as "not given" and reads the process
    environment: with the controller's own AccessKey or RRSA there, a tenant's empty
    credentials would sign as the controller."""
    from controller.providers.alibaba.identity import build_provider

    for name, value in {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIcontroller",
                        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "controller-secret",
                        "ALIBABA_CLOUD_ROLE_ARN": "acs:ram::1:role/controller",
                        "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": "acs:ram::1:oidc-provider/p",
                        "ALIBABA_CLOUD_OIDC_TOKEN_FILE": "/var/run/token"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="is empty"):
        build_provider(Identity(kind, **fields))


def test_one_identity_holds_at_most_two_places_at_an_endpoint_others_go_first() -> None:
    """Fair between identities: a caller's third call waits at its own gate (not in the
    endpoint's queue of start times), while another caller's call takes a free slot at once."""
    limiter = RateLimiter(10, per_caller=2)
    inside = threading.Semaphore(0)
    leave = threading.Event()
    third_in = threading.Event()

    def call(caller: str, entered: threading.Event | None = None) -> None:
        with limiter.turn(caller):
            if entered is not None:
                entered.set()
            inside.release()
            assert leave.wait(5)

    busy = [threading.Thread(target=call, args=("tenant-a",), daemon=True) for _ in range(2)]
    for t in busy:
        t.start()
    for _ in busy:
        assert inside.acquire(timeout=5)
    third = threading.Thread(target=call, args=("tenant-a", third_in), daemon=True)
    third.start()
    other_in = threading.Event()
    other = threading.Thread(target=call, args=("tenant-b", other_in), daemon=True)
    other.start()
    assert other_in.wait(5)  # tenant-b is not behind tenant-a's third call
    assert not third_in.is_set()  # held at tenant-a's gate (2 places taken)
    leave.set()
    assert third_in.wait(5)
    for t in (*busy, third, other):
        t.join(5)
    assert len(limiter._callers) == 0  # each caller's gate went with its last call


def test_a_started_call_gives_its_place_to_the_callers_next_call() -> None:
    """The place bounds the calls waiting for a start time, not those in flight: one identity
    alone still fills every slot when the service is slow."""
    limiter = RateLimiter(10, per_caller=1)
    started = threading.Event()
    leave = threading.Event()

    def slow_call() -> None:
        with limiter.turn("only-tenant"):
            limiter.acquire()
            started.set()
            assert leave.wait(5)  # in flight

    first = threading.Thread(target=slow_call, daemon=True)
    first.start()
    assert started.wait(5)
    second_in = threading.Event()

    def next_call() -> None:
        with limiter.turn("only-tenant"):
            second_in.set()

    second = threading.Thread(target=next_call, daemon=True)
    second.start()
    assert second_in.wait(5)  # while the first is still in flight
    leave.set()
    first.join(5)
    second.join(5)
