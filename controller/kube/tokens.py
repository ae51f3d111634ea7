"""Per-ServiceAccount RRSA: a token for a tenant's ServiceAccount, minted with the TokenRequest
API and kept in a private file for the credentials library (which wants a path, and re-reads
the file on every STS refresh).

Why the controller mints tokens instead of borrowing its own: a SecretStore with
`serviceAccountRef` makes KMS reads as the role that *that* ServiceAccount may assume (its
annotation `ack.alibabacloud.com/role-arn`, trusted for `system:serviceaccount:<ns>:<name>`),
so a tenant gets exactly its own permissions.

Files live in a directory only this process can read (0700, files 0600) and are replaced
atomically, so a reader never sees half a token. Each token is minted again when half of its
lifetime has passed: on use, and by a background thread, because KMS polls reuse an identity
without asking for the file again. Needs RBAC: `get` on serviceaccounts and `create` on
serviceaccounts/token.

Who prunes the tokens: the refresher. A token that nobody asked for within `idle` seconds
and whose file no live identity reads any more (`in_use`, e.g.
`IdentityPool.token_file_in_use`) is no longer re-minted: it is forgotten and its file
removed. Without `in_use` the reader of a file is unknown (KMS polls reuse the identity
without asking here), so every token is kept and renewed, as before. With `hold` and
`release` (the log redactor's `hold_secret`/`release_secrets`), each token is redacted from
logs in its file's name while the file lives, and forgotten when the file goes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.kube.rest import SERVICE_ACCOUNTS, ApiError, Rest

log = logging.getLogger(__name__)

ROLE_ARN_ANNOTATION = "ack.alibabacloud.com/role-arn"
DEFAULT_AUDIENCE = "sts.aliyuncs.com"
TOKEN_SECONDS = 3600  # what we ask for; the apiserver refuses less than 600
TOKEN_IDLE = 600.0  # a token asked for this recently is kept even if no identity reads it yet
RELEASE_GRACE = 30.0  # release(): a token asked for this recently may be about to be read


class TokenProblem(Exception):
    """Why no token could be had: `reason` is a condition reason, `str()` says the fix."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass
class _Token:
    namespace: str
    name: str
    audiences: tuple[str, ...]
    path: str
    issued: float
    expires: float

    def due(self, now: float) -> bool:
        """Half its lifetime is gone: mint the next one."""
        return now >= self.issued + (self.expires - self.issued) / 2


class ServiceAccountTokens:
    """`tokens(ref, store_namespace) -> (token file path, role ARN)`, for `StoreResolver`.

    `ref` is any object with `name`, `namespace` and `audiences` (model.ServiceAccountRef);
    an empty namespace means the store's. The cross-namespace rule is the resolver's.
    """

    def __init__(self, rest: Rest, *, seconds: int = TOKEN_SECONDS,
                 directory: str | None = None, clock: Callable[[], float] = time.time,
                 on_token: Callable[[str], None] | None = None,
                 refresh_every: float = 60.0,
                 in_use: Callable[[str], bool] | None = None,
                 idle: float | None = None,
                 hold: Callable[[Hashable, str], None] | None = None,
                 release: Callable[[Hashable], object] | None = None) -> None:
        self.rest = rest
        self.seconds = seconds
        self.clock = clock
        self.on_token = on_token or (lambda _token: None)
        # Redaction owned by the token file: each token is held in its file's name (the
        # holder keeps the last few) and released when the file goes.
        self._hold, self._unhold = hold, release
        self.refresh_every = refresh_every
        self.in_use = in_use
        self.idle = TOKEN_IDLE if idle is None else idle
        self._directory = directory or ""  # made on first use: no token, no temp dir
        self._cleanup: weakref.finalize[Any, Any] | None = None
        self._tokens: dict[tuple[str, str, tuple[str, ...]], _Token] = {}
        self._asked: dict[tuple[str, str, tuple[str, ...]], float] = {}  # last request (clock)
        self._by_path: dict[str, tuple[str, str, tuple[str, ...]]] = {}  # file -> key
        self._releasing: set[str] = set()  # released while just asked for: retried later
        self._lock = threading.Lock()  # guards _tokens; minting is serialised under it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.mints = 0

    @property
    def directory(self) -> str:
        """The private directory of the token files (mkdtemp: mode 0700), made on first use
        and removed by `close()` or at exit."""
        if not self._directory:
            self._directory = tempfile.mkdtemp(prefix="asm-sa-tokens-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._directory, True)
        return self._directory

    def __call__(self, ref: Any, store_namespace: str) -> tuple[str, str]:
        namespace = ref.namespace or store_namespace
        audiences = tuple(ref.audiences) or (DEFAULT_AUDIENCE,)
        role_arn = self._role_arn(namespace, ref.name)
        key = (namespace, ref.name, audiences)
        with self._lock:
            token = self._tokens.get(key)
            if token is None or token.due(self.clock()):
                token = self._mint(namespace, ref.name, audiences)
                self._tokens[key] = token
                self._by_path[token.path] = key
            self._asked[key] = self.clock()
        self._start_refresher()
        return token.path, role_arn

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)

    def refresh_due(self) -> int:
        """Mint again every token past half its lifetime; returns how many were minted.
        A ServiceAccount that is gone, or a token no longer used (see the module docstring),
        is forgotten (and its file removed)."""
        minted = 0
        with self._lock:
            for path in list(self._releasing):  # released while just asked for: again now
                self._release_locked(path, RELEASE_GRACE, defer=False)
            for key, token in list(self._tokens.items()):
                if self._unused(key, token):
                    log.debug("forgetting the unused token of ServiceAccount %s/%s",
                              token.namespace, token.name)
                    self._drop(key, token)
                    continue
                if not token.due(self.clock()):
                    continue
                try:
                    self._tokens[key] = self._mint(token.namespace, token.name, token.audiences)
                    minted += 1
                except TokenProblem as problem:
                    log.warning("could not renew the token of ServiceAccount %s/%s: %s",
                                token.namespace, token.name, problem)
                    if problem.reason == "CredentialsNotFound":
                        self._drop(key, token)
        return minted

    def release(self, paths: set[str], *, grace: float = RELEASE_GRACE) -> int:
        """The identities that read these token files are gone (their last ExternalSecret
        was deleted): forget those tokens now and remove their files, unless a live identity
        still reads one or it was asked for within `grace` seconds (a store being set up
        right now mints before its identity exists): such a token is released again by the
        refresher once `grace` has passed. Returns how many were forgotten now."""
        dropped = 0
        with self._lock:
            for path in paths:
                dropped += self._release_locked(path, grace, defer=True)
        return dropped

    def _release_locked(self, path: str, grace: float, *, defer: bool) -> bool:
        """Drop the token of `path` if nobody reads it and it was not asked for within
        `grace`; one asked for just now is retried by the refresher (`defer`), so that it
        goes within a refresh period rather than at the idle bound."""
        key = self._by_path.get(path)
        token = self._tokens.get(key) if key is not None else None
        if key is None or token is None or (self.in_use is not None and self.in_use(path)):
            self._releasing.discard(path)  # gone already, or read again: not ours to drop
            return False
        if self.clock() - self._asked.get(key, token.issued) < grace:
            if defer:
                self._releasing.add(path)
            return False
        self._drop(key, token)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop renewing and remove the token files (their directory)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._cleanup is not None:
            self._cleanup()

    # ------------------------------------------------------------------ private
    def _unused(self, key: tuple[str, str, tuple[str, ...]], token: _Token) -> bool:
        if self.in_use is None:
            return False
        if self.clock() - self._asked.get(key, token.issued) < self.idle:
            return False
        return not self.in_use(token.path)

    def _drop(self, key: tuple[str, str, tuple[str, ...]], token: _Token) -> None:
        self._tokens.pop(key, None)
        self._asked.pop(key, None)
        self._by_path.pop(token.path, None)
        self._releasing.discard(token.path)
        _remove(token.path)
        if self._unhold is not None:
            self._unhold(("token", token.path))

    def _role_arn(self, namespace: str, name: str) -> str:
        try:
            sa = self.rest.get(SERVICE_ACCOUNTS.path(namespace, name))
        except ApiError as exc:
            raise _api_problem(exc, namespace, name, "get serviceaccounts") from None
        annotations = (sa.get("metadata") or {}).get("annotations") or {}
        role_arn = str(annotations.get(ROLE_ARN_ANNOTATION) or "").strip()
        if not role_arn:
            raise TokenProblem(
                "CredentialsNotFound",
                f"ServiceAccount {namespace}/{name} has no annotation {ROLE_ARN_ANNOTATION}; "
                f"annotate it with the ARN of the RAM role it may assume (kubectl -n "
                f"{namespace} annotate serviceaccount {name} "
                f"{ROLE_ARN_ANNOTATION}=acs:ram::<account-id>:role/<role-name>)")
        return role_arn

    def _mint(self, namespace: str, name: str, audiences: tuple[str, ...]) -> _Token:
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": list(audiences), "expirationSeconds": self.seconds}}
        issued = self.clock()
        try:
            answer = self.rest.create(SERVICE_ACCOUNTS.path(namespace, name, "token"), body)
        except ApiError as exc:
            raise _api_problem(exc, namespace, name, "create serviceaccounts/token") from None
        status = answer.get("status") or {}
        token = str(status.get("token") or "")
        if not token:
            raise TokenProblem("TokenRequestFailed",
                               f"the TokenRequest for ServiceAccount {namespace}/{name} "
                               "returned no token; will retry")
        self.on_token(token)
        expires = _timestamp(status.get("expirationTimestamp")) or issued + self.seconds
        try:
            path = os.path.join(self.directory, _file_name(namespace, name, audiences))
            _write_private(path, token)
        except OSError as exc:
            raise TokenProblem("TokenRequestFailed",
                               f"could not write the token of ServiceAccount {namespace}/{name} "
                               f"to a private temporary file ({type(exc).__name__}); the "
                               "controller needs a writable TMPDIR (the chart mounts /tmp); "
                               "will retry"
                               ) from None
        if self._hold is not None:
            self._hold(("token", path), token)
        self.mints += 1
        log.info("minted a token for ServiceAccount %s/%s (audiences %s)", namespace, name,
                 ",".join(audiences))
        return _Token(namespace, name, audiences, path, issued, max(expires, issued + 1))

    def _start_refresher(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._refresh_loop,
                                            name="sa-token-refresher", daemon=True)
            self._thread.start()

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_every):
            try:
                self.refresh_due()
            except Exception:  # keep renewing the others next round
                log.exception("renewing ServiceAccount tokens failed")


def _api_problem(exc: ApiError, namespace: str, name: str, verb: str) -> TokenProblem:
    if exc.status == 404:
        return TokenProblem(
            "CredentialsNotFound",
            f"ServiceAccount {namespace}/{name} does not exist; create it or fix the reference")
    if exc.status == 403:
        return TokenProblem(
            "TokenRequestFailed",
            f"the controller may not {verb} for ServiceAccount {namespace}/{name} (403); grant "
            "its ClusterRole get on serviceaccounts and create on serviceaccounts/token")
    return TokenProblem(
        "TokenRequestFailed",
        f"{verb} for ServiceAccount {namespace}/{name} failed ({exc.status} {exc.reason}); "
        "will retry")


def _file_name(namespace: str, name: str, audiences: tuple[str, ...]) -> str:
    digest = hashlib.sha256(repr((namespace, name, audiences)).encode()).hexdigest()[:16]
    return f"{digest}.jwt"


def _write_private(path: str, text: str) -> None:
    tmp = f"{path}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _timestamp(text: object) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
