"""Alibaba Cloud's side of a store: from a SecretStore (or none) to the identity and the
endpoint an entry's read uses (the `Source`, this provider's client key), and a store's own
check. The engine finds the store and applies the rules every provider shares (namespaces,
ClusterSecretStore conditions, the private CA bound); what is Alibaba's is here.

Resolution follows ack-secret-manager's documented priority (ServiceAccount RRSA > RRSA >
AccessKey + AssumeRole > AccessKey > worker role), with a cross-account role on top. Anything
wrong (a missing credential Secret, no credentials at all, an endpoint not allowed) becomes a
`StoreProblem` that names the object, the field and the fix; it never becomes a crash, and
never carries key material.

Boundaries (docs/security.md): the controller's own identity (its environment's AccessKey or
role, its projected token, the node's worker role) serves only the namespaces in
--controller-identity-namespaces (the engine's rule, asked through `StoreRules`). Endpoints
named by stores and entries are parsed (`parse_endpoint`: scheme, host and port, nothing
else), their hostname must be a name under aliyuncs.com or on --allowed-endpoints, https
unless --allow-http-endpoints, and only the parsed host[:port] is handed on; the operator's
own --kms-endpoint is not allow-listed but is parsed the same way. A store's private CA is
named by `private_ca` (what the engine counts against --max-cas-per-namespace).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from controller import api
from controller.providers.alibaba.blocks import (
    OOS_PROVIDER,
    DedicatedKMSAuth,
    KMSAuth,
    KMSProvider,
    kms_of,
    oos_of,
)
from controller.providers.alibaba.identity import (
    ACCESS_KEY,
    CLIENT_KEY,
    ECS_RAM_ROLE,
    OIDC_ROLE_ARN,
    RAM_ROLE_ARN,
    Identity,
)
from controller.providers.alibaba.kms import Endpoint
from controller.providers.base import FetchError, PrivateCa, RemoteRef, StoreProblem, StoreRules
from controller.settings import Settings

CREDENTIAL_TTL = 60.0  # re-read credential Secrets at least this often
# Where ack-secret-manager's chart (rrsa.enable) projects the controller's token, and where a
# store's RRSA reads it when neither oidcTokenFilePath nor the environment names a file.
DEFAULT_OIDC_TOKEN_FILE = "/var/run/secrets/tokens/ack-secret-manager"
MIN_SESSION_SECONDS, MAX_SESSION_SECONDS = 900, 43200
KMS, OOS, DKMS = "kms", "oos", "dkms"  # which reader a Source reads with


@dataclass(frozen=True)
class Source:
    """This provider's client key: the identity, the endpoint, and which reader (KMS, OOS,
    a KMS instance with a client key)."""

    identity: Identity
    endpoint: Endpoint
    provider: str = KMS

    @property
    def credential(self) -> Hashable:
        return self.identity

    @property
    def seed(self) -> str:
        return f"{self.identity.fingerprint()}/{self.endpoint.host}"

    def describe(self, ref: RemoteRef) -> str:
        if self.provider == OOS:
            return f"OOS parameter {ref.name}@{ref.version_id or 'latest'} on " \
                f"{self.endpoint.host}"
        version = ref.version_id or ref.version_stage or "ACSCurrent"
        return f"{ref.name}@{version} on {self.endpoint.host}"


# Endpoints: the text a store or entry names is parsed into scheme, hostname and port; nothing
# else (userinfo, path, query, fragment) is accepted, the allow-list compares the parsed
# hostname, and only the parsed host[:port] reaches an SDK. The CRD carries this same pattern
# (hack/gen_crds.py imports ENDPOINT_PATTERN and MAX_ENDPOINT; a unit test checks the CRDs).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
ENDPOINT_PATTERN = (r"^(?:https?://)?(?:" + _LABEL + r"(?:\." + _LABEL + r")*"
                    r"|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?/?$")
MAX_ENDPOINT = 300  # characters: a hostname is at most 253, plus scheme, port and "/"
_ENDPOINT_RE = re.compile(ENDPOINT_PATTERN)
ALIBABA_SUFFIX = ".aliyuncs.com"


@dataclass(frozen=True)
class ParsedEndpoint:
    """An endpoint reduced to what a request needs: `host` is what an SDK is handed."""

    protocol: str
    hostname: str  # lower case; an IPv6 address without brackets
    port: int | None = None

    @property
    def host(self) -> str:
        name = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return name if self.port is None else f"{name}:{self.port}"


def parse_endpoint(text: str, default_protocol: str) -> ParsedEndpoint:
    """`[http[s]://]host[:port][/]` -> its parts; ValueError (saying what is wrong, without
    quoting the text) for anything else: userinfo, a path, a query, a fragment, whitespace,
    control characters, an empty host, a bad port, a label or name too long."""
    if len(text) > MAX_ENDPOINT:
        raise ValueError(f"is longer than {MAX_ENDPOINT} characters")
    if any(ch.isspace() or not ch.isprintable() or ord(ch) > 0x7E for ch in text):
        raise ValueError("contains whitespace, control or non-ASCII characters")
    if _ENDPOINT_RE.fullmatch(text) is None:
        raise ValueError(_why_not(text))
    protocol = default_protocol
    rest = text
    for scheme in ("https", "http"):
        if rest.startswith(f"{scheme}://"):
            protocol, rest = scheme, rest[len(scheme) + 3:]
            break
    rest = rest.removesuffix("/")
    port: int | None = None
    if rest.startswith("["):
        hostname, _, tail = rest[1:].partition("]")
        try:
            hostname = str(ipaddress.IPv6Address(hostname))
        except ValueError:
            raise ValueError("has a bracketed host that is not an IPv6 address") from None
        if tail:
            port = _port(tail[1:])
    else:
        hostname, colon, tail = rest.partition(":")
        if colon:
            port = _port(tail)
        if len(hostname) > 253:
            raise ValueError("has a hostname longer than 253 characters")
    return ParsedEndpoint(protocol, hostname.lower(), port)


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError("has a port outside 1-65535")
    return port


def _why_not(text: str) -> str:
    """Which part of an endpoint is not allowed (for the message; never quotes the text)."""
    rest = text.split("://", 1)[1] if "://" in text else text
    if "://" in text and not text.startswith(("https://", "http://")):
        return "has a scheme other than https:// or http://"
    for mark, what in (("@", "user information (user@)"), ("?", "a query (?)"),
                       ("#", "a fragment (#)"), ("\\", "a backslash")):
        if mark in rest:
            return f"has {what}"
    if "/" in rest.rstrip("/") or rest.endswith("//"):
        return "has a path (only host[:port] is allowed)"
    if not rest.split(":", 1)[0].strip("/"):
        return "has no host"
    return "is not host[:port] (letters, digits, '-' and '.' in the host, digits in the port)"




class AlibabaStores:
    """From a store (or none) to the identity and endpoint an entry's read uses, and a
    store's own check."""

    def __init__(
        self,
        settings: Settings,
        *,
        sa_token_file: Callable[[api.ServiceAccountRef, str], tuple[str, str]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        check_client_key: Callable[[Identity], None] | None = None,
    ) -> None:
        self.settings = settings
        # check: opens a dedicatedKMSAuth client key (under the reader's bounds and memory
        # of failures) and raises FetchError when it cannot be used.
        self.check_client_key = check_client_key
        # (ServiceAccountRef, default namespace) -> (token file path, role ARN)
        self.sa_token_file = sa_token_file
        # (store uid, resourceVersion) -> (when resolved, identity); an entry is used for
        # CREDENTIAL_TTL seconds, and swept (amortized, at most once per TTL) after that, so
        # old resourceVersions and deleted stores do not stay.
        self._cache: dict[tuple[str, str], tuple[float, Identity]] = {}
        self._swept = 0.0
        self.clock = clock
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public
    def resolve(self, es: api.ExternalSecret, entry: api.DataEntry,
                store: api.SecretStore | None, rules: StoreRules) -> Source:
        """The client `entry` reads through: the store's identity and endpoint (KMS, a KMS
        instance, OOS by the ExternalSecret's provider); `store` None: the controller's own
        identity. The engine found the store and admitted it (conditions, CA place)."""
        oos = es.spec.provider == OOS_PROVIDER
        if store is None:
            rules.may_use_controller_identity(
                es.namespace, f"{entry.spec_field} has no secretStoreRef, so it")
            identity = self._controller_identity()
            if oos:
                return Source(identity, self._oos_endpoint(), provider=OOS)
            return Source(identity, self._endpoint(entry, None, "", None))
        if oos:
            return self._oos_source(es, store, rules)
        kms = kms_of(store)
        if kms is None:
            raise StoreProblem("InvalidStore", f"{_store_name(store.ref)} has no KMS provider")
        if kms.dedicated is not None:
            return self._dedicated_source(store, kms.dedicated, rules)
        identity = self._identity_of(store, kms.auth, rules)
        if identity.borrowed and store.kind == api.StoreKind.SECRET_STORE:
            rules.may_use_controller_identity(
                es.namespace, f"{_store_name(store.ref)} names no credentials of its own, so it")
        ca = self._ca(store, rules)
        return Source(identity, self._endpoint(entry, kms, ca, store))

    def check(self, store: api.SecretStore, rules: StoreRules) -> bool:
        """Whether a store can work as written, without an ExternalSecret and without a call
        to Alibaba Cloud: it has a provider, its credential Secrets and keys exist, its
        endpoint is allowed, its identity resolves (a SecretStore borrowing the controller's
        identity: as its own namespace would), a dedicatedKMSAuth client key opens (once per
        key content, under the reader's bounds). A serviceAccountRef is checked as far as the
        store says (namespace, OIDC provider); its token is minted when an ExternalSecret
        first reads through it, not here. Raises StoreProblem with the reason and message an
        ExternalSecret using the store would get; returns whether the check read Secrets."""
        ref, kms, oos = store.ref, kms_of(store), oos_of(store)
        if kms is None and oos is None:
            raise StoreProblem("InvalidStore", f"{_store_name(ref)} has neither spec.KMS nor "
                               "spec.OOS; add spec.KMS.KMSAuth (or spec.OOS.OOSAuth)")
        auths = [kms.auth] if kms is not None and kms.dedicated is None else []
        if oos is not None:
            auths.append(oos.auth)
        for auth in auths:
            identity = self._store_identity(store, auth, rules, mint=False)
            if identity.borrowed and store.kind == api.StoreKind.SECRET_STORE:
                rules.may_use_controller_identity(
                    store.namespace, f"{_store_name(ref)} names no credentials of its own, so it")
        if kms is not None and kms.dedicated is not None:
            source = self._dedicated_source(store, kms.dedicated, rules)
            if self.check_client_key is not None:
                try:
                    self.check_client_key(source.identity)
                except FetchError as exc:  # refused, wrong password, not a client key
                    raise StoreProblem(exc.code, exc.reason) from None
        elif kms is not None:
            self._ca(store, rules)
            if kms.endpoint:
                self._tenant_endpoint(kms.endpoint,
                                      f"{_store_name(ref)}: spec.KMS.endpoint")
        return uses_secrets(store)

    def _oos_source(self, es: api.ExternalSecret, store: api.SecretStore,
                    rules: StoreRules) -> Source:
        """provider: oos reads OOS encryption parameters with the identity of the store's
        spec.OOS.OOSAuth (the same fields and priority as KMSAuth)."""
        oos = oos_of(store)
        if oos is None:
            raise StoreProblem(
                "InvalidStore",
                f"{_store_name(store.ref)} has no OOS provider, but the ExternalSecret's "
                "spec.provider is oos; use a store with spec.OOS.OOSAuth, or provider: kms")
        identity = self._identity_of(store, oos.auth, rules)
        if identity.borrowed and store.kind == api.StoreKind.SECRET_STORE:
            rules.may_use_controller_identity(
                es.namespace, f"{_store_name(store.ref)} names no credentials of its own, so it")
        return Source(identity, self._oos_endpoint(), provider=OOS)

    def _dedicated_source(self, store: api.SecretStore,
                          auth: DedicatedKMSAuth, rules: StoreRules) -> Source:
        """dedicatedKMSAuth: the KMS instance's endpoint and CA, the client key's content and
        password from the store's Secrets; ignoreSSL only with the operator's flag."""
        where = _store_name(store.ref)
        field = "spec.KMS.dedicatedKMSAuth"
        if auth.protocol.lower() != "https":
            raise StoreProblem("EndpointRefused", f"{where}: {field}.protocol is "
                               f"{auth.protocol[:10]!r}; KMS instances are reached over https")
        if auth.ignore_ssl and not self.settings.allow_insecure_kms_instance_tls:
            raise StoreProblem(
                "InsecureTLSRefused",
                f"{where}: {field}.ignoreSSL is true, which turns off TLS verification of the "
                "KMS instance; give its CA in dedicatedKMSAuth.ca instead, or ask the cluster "
                "admin to start the controller with --allow-insecure-kms-instance-tls")
        parsed = self._tenant_endpoint(auth.endpoint, f"{where}: {field}.endpoint")
        if parsed.protocol != "https":
            raise StoreProblem("EndpointRefused", f"{where}: {field}.endpoint is http://; KMS "
                               "instances are reached over https")
        content = self._secret_value(store, rules, "clientKeyContent", auth.client_key_content,
                                     path=f"{field}.clientKeyContent")
        password = self._secret_value(store, rules, "password", auth.password,
                                      path=f"{field}.password")
        identity = Identity(CLIENT_KEY, client_key_content=content,
                            client_key_password=password, source=where)
        return Source(identity, Endpoint(host=parsed.host, protocol="https", ca_pem=auth.ca,
                                         insecure=auth.ignore_ssl), provider=DKMS)

    def _oos_endpoint(self) -> Endpoint:
        parsed = _operator_endpoint(self.settings.default_oos_endpoint(),
                                    self.settings.kms_protocol, "--oos-endpoint")
        return Endpoint(host=parsed.host, protocol=parsed.protocol)

    def _identity_of(self, store: api.SecretStore, auth: KMSAuth | None,
                     rules: StoreRules) -> Identity:
        """The store's identity, cached for CREDENTIAL_TTL per store version."""
        cache_key = (store.uid, store.resource_version)
        with self._lock:
            hit = self._cache.get(cache_key)
        if hit is not None and self.clock() - hit[0] < CREDENTIAL_TTL:
            return hit[1]
        identity = self._store_identity(store, auth, rules)
        self._remember(cache_key, identity)
        return identity

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

    def cached(self) -> int:
        with self._lock:
            return len(self._cache)

    def _remember(self, key: tuple[str, str], identity: Identity) -> None:
        now = self.clock()
        with self._lock:
            self._cache[key] = (now, identity)
            if now - self._swept < CREDENTIAL_TTL:
                return
            self._swept = now
            for old in [k for k, (at, _s) in self._cache.items() if now - at >= CREDENTIAL_TTL]:
                del self._cache[old]

    # -------------------------------------------------------------- identity
    def _controller_identity(self) -> Identity:
        """The controller's own identity, from its environment, in priority order: RRSA,
        AccessKey + AssumeRole, AccessKey, then the worker role if enabled."""
        c = self.settings.credentials
        common: dict[str, Any] = {
            "remote_role_arn": c.remote_role_arn,
            "remote_role_session_name": c.remote_role_session_name,
            "sts_endpoint": self.settings.sts_endpoint,
            "session_seconds": _clamp_session(c.role_session_expiration),
            "role_session_name": c.role_session_name or "ack-secret-manager",
            "source": "the controller's environment",
        }
        common["borrowed"] = True
        if c.role_arn and c.oidc_provider_arn:
            return Identity(OIDC_ROLE_ARN, role_arn=c.role_arn,
                            oidc_provider_arn=c.oidc_provider_arn,
                            oidc_token_file=c.oidc_token_file or DEFAULT_OIDC_TOKEN_FILE,
                            **common)
        if c.access_key_id and c.access_key_secret:
            kind = RAM_ROLE_ARN if c.role_arn else ACCESS_KEY
            return Identity(kind, access_key_id=c.access_key_id,
                            access_key_secret=c.access_key_secret, role_arn=c.role_arn,
                            **common)
        if self.settings.enable_worker_role:
            return Identity(ECS_RAM_ROLE, metadata_proxy=self.settings.metadata_proxy,
                            **{**common, "source": "the node's ECS instance"})
        raise StoreProblem(
            "NoCredentials",
            "the controller has no credentials of its own (used by entries without a "
            "secretStoreRef and by stores without spec.KMS.KMSAuth): set a secretStoreRef "
            "whose store names an identity, give the controller RRSA (rrsa.enable with "
            "ALICLOUD_ROLE_ARN and ALICLOUD_OIDC_PROVIDER_ARN) or AccessKey environment "
            "variables (ACCESS_KEY_ID, SECRET_ACCESS_KEY), or start it with "
            "--enable-worker-role",
        )

    def _store_identity(self, store: api.SecretStore, auth: KMSAuth | None,
                        rules: StoreRules, *,
                        mint: bool = True) -> Identity:
        """The identity a store names, in priority order: ServiceAccount RRSA, RRSA,
        AccessKey + AssumeRole, AccessKey; without KMSAuth (or with only a cross-account
        role) the controller's own identity. A cross-account role goes on top of any."""
        if auth is None:
            return self._controller_identity()
        where = _store_name(store.ref)
        common: dict[str, Any] = {
            "remote_role_arn": auth.remote_ram_role_arn,
            "remote_role_session_name": auth.remote_ram_role_session_name,
            "sts_endpoint": self.settings.sts_endpoint,
            "session_seconds": _seconds(auth.role_session_expiration),
            "role_session_name": auth.ram_role_session_name or "ack-secret-manager",
            "source": where,
        }
        c = self.settings.credentials
        if auth.service_account_ref is not None:
            return self._service_account_identity(store, auth, auth.service_account_ref, common,
                                                  rules, mint=mint)
        if auth.oidc_provider_arn and auth.ram_role_arn:
            # A token file is a file of the controller's Pod (its projected token by default):
            # using one is using the controller's own identity.
            token_file = auth.oidc_token_file_path or c.oidc_token_file or \
                DEFAULT_OIDC_TOKEN_FILE
            return Identity(OIDC_ROLE_ARN, role_arn=auth.ram_role_arn,
                            oidc_provider_arn=auth.oidc_provider_arn,
                            oidc_token_file=token_file, **{**common, "borrowed": True})
        if auth.access_key is not None or auth.access_key_secret is not None:
            ak_id = self._secret_value(store, rules, "accessKey", auth.access_key)
            ak_secret = self._secret_value(store, rules, "accessKeySecret", auth.access_key_secret)
            kind = RAM_ROLE_ARN if auth.ram_role_arn else ACCESS_KEY
            return Identity(kind, access_key_id=ak_id, access_key_secret=ak_secret,
                            role_arn=auth.ram_role_arn, **common)
        if auth.ram_role_arn:
            # ack-secret-manager: a role alone is RRSA with the cluster's OIDC provider.
            if not c.oidc_provider_arn:
                raise StoreProblem(
                    "InvalidStore",
                    f"{where}: spec.KMS.KMSAuth.ramRoleARN needs a way to assume the role: "
                    "add oidcProviderARN (RRSA) or accessKey and accessKeySecret (AssumeRole)")
            return Identity(OIDC_ROLE_ARN, role_arn=auth.ram_role_arn,
                            oidc_provider_arn=c.oidc_provider_arn,
                            oidc_token_file=auth.oidc_token_file_path or c.oidc_token_file
                            or DEFAULT_OIDC_TOKEN_FILE, **{**common, "borrowed": True})
        base = self._controller_identity()
        if auth.remote_ram_role_arn:
            return dataclasses.replace(
                base, remote_role_arn=auth.remote_ram_role_arn,
                remote_role_session_name=auth.remote_ram_role_session_name,
                source=f"{where}, on top of {base.source}")
        return base

    def _service_account_identity(self, store: api.SecretStore, auth: KMSAuth,
                                  ref: api.ServiceAccountRef,
                                  common: dict[str, Any], rules: StoreRules, *,
                                  mint: bool = True) -> Identity:
        where = _store_name(store.ref)
        field = "spec.KMS.KMSAuth.serviceAccountRef"
        if self.sa_token_file is None:
            raise StoreProblem("InvalidStore", f"{where}: {field} is not supported")
        namespace = ref.namespace or store.namespace
        rules.same_namespace(store, namespace, f"{field} names ServiceAccount "
                             f"{namespace}/{ref.name}", "use a ServiceAccount in the store's "
                             "namespace")
        provider = auth.oidc_provider_arn or self.settings.credentials.oidc_provider_arn
        if not provider:
            raise StoreProblem(
                "InvalidStore",
                f"{where}: {field} needs oidcProviderARN in the store or "
                "ALIBABA_CLOUD_OIDC_PROVIDER_ARN in the controller's environment")
        if not mint:  # a store's check: no token minted for a store nobody reads through
            return Identity(OIDC_ROLE_ARN, oidc_provider_arn=provider, **common)
        try:
            token_file, role_arn = self.sa_token_file(
                dataclasses.replace(ref, namespace=namespace), store.namespace)
        except StoreProblem:
            raise
        except Exception as exc:  # noqa: BLE001 - the token source's errors carry the fix
            reason = str(getattr(exc, "reason", "") or "TokenRequestFailed")
            raise StoreProblem(reason, f"{where}: {field}: {exc}") from None
        return Identity(OIDC_ROLE_ARN, role_arn=role_arn, oidc_provider_arn=provider,
                        oidc_token_file=token_file,
                        **{**common, "source": f"{where}, ServiceAccount {namespace}/{ref.name}"})

    def _secret_value(self, store: api.SecretStore, rules: StoreRules, field: str,
                      ref: api.SecretRef | None, *, path: str = "") -> str:
        path = path or f"spec.KMS.KMSAuth.{field}"
        if ref is None:
            raise StoreProblem(
                "InvalidStore",
                f"{_store_name(store.ref)}: {path} is missing; set both accessKey and "
                "accessKeySecret")
        return rules.credential(store, ref, path)

    # -------------------------------------------------------------- endpoint
    def _ca(self, store: api.SecretStore, rules: StoreRules) -> str:
        kms = kms_of(store)
        if kms is None:
            return ""
        if kms.ca:
            return kms.ca
        if kms.ca_secret_ref is not None:
            ref = kms.ca_secret_ref
            value = rules.secret_key(store, ref, "spec.KMS.caSecretRef")
            if value is None:
                raise StoreProblem(
                    "CredentialsNotFound",
                    f"{_store_name(store.ref)}: spec.KMS.caSecretRef refers to key {ref.key} of "
                    f"Secret {ref.namespace}/{ref.name}, which does not exist; create it with "
                    "the KMS instance's CA certificate (PEM) or fix the reference")
            return value.decode()
        return ""

    def _endpoint(self, entry: api.DataEntry, kms: KMSProvider | None, ca: str,
                  store: api.SecretStore | None) -> Endpoint:
        if entry.kms_endpoint:
            text, field = entry.kms_endpoint, f"{entry.spec_field}.kmsEndpoint"
        elif kms is not None and kms.endpoint:
            text = kms.endpoint
            field = f"{_store_name(store.ref)}: spec.KMS.endpoint" if store else "spec.KMS.endpoint"
        else:  # the operator's own choice (--kms-endpoint, --region): not allow-listed
            parsed = _operator_endpoint(self.settings.default_kms_endpoint(),
                                        self.settings.kms_protocol, "--kms-endpoint")
            return Endpoint(host=parsed.host, protocol=parsed.protocol, ca_pem=ca)
        parsed = self._tenant_endpoint(text, field)
        # A store's CA verifies TLS; a plain-http endpoint (when allowed) has nothing to verify.
        return Endpoint(host=parsed.host, protocol=parsed.protocol,
                        ca_pem=ca if parsed.protocol == "https" else "")

    def _tenant_endpoint(self, text: str, field: str) -> ParsedEndpoint:
        """An endpoint a store or entry names, parsed and checked against the allow-list."""
        try:
            parsed = parse_endpoint(text, "https")
        except ValueError as exc:
            raise StoreProblem(
                "EndpointRefused",
                f"{field} {exc}; give only https://host[:port], e.g. "
                "https://kms.cn-hangzhou.aliyuncs.com") from None
        host = parsed.host
        if parsed.protocol == "http" and not self.settings.allow_http_endpoints:
            raise StoreProblem(
                "EndpointRefused",
                f"{field}: http://{host} is plain HTTP, which would send signed requests "
                f"unencrypted; use https://{host}, or ask the operator to start the "
                "controller with --allow-http-endpoints")
        if not endpoint_allowed(parsed, self.settings.allowed_endpoints):
            raise StoreProblem(
                "EndpointRefused",
                f"{field}: {host} is not an Alibaba Cloud endpoint (*.aliyuncs.com) nor on "
                "the controller's --allowed-endpoints; use the KMS endpoint of your region or "
                "instance, or ask the operator to allow the host")
        return parsed


def private_ca(store: api.SecretStore, settings: Settings) -> PrivateCa | None:
    """The private CA a store's reads use, as the engine counts it (secretstore/cas.py): the
    endpoint host it is used with (the store's endpoint, else the operator's) and the SHA-256
    of its PEM, or the Secret key a caSecretRef names (so the rule reads nothing). None: no
    private CA, or an endpoint that does not parse (refused as such, no session)."""
    kms = kms_of(store)
    if kms is None:
        return None
    text, protocol = kms.endpoint, "https"
    if not text:
        text, protocol = settings.default_kms_endpoint(), settings.kms_protocol
    if kms.dedicated is not None:
        if not kms.dedicated.ca:
            return None
        text, protocol = kms.dedicated.endpoint, "https"
        field, digest = "spec.KMS.dedicatedKMSAuth.ca", _sha256(kms.dedicated.ca)
    elif kms.ca:
        field, digest = "spec.KMS.ca", _sha256(kms.ca)
    elif kms.ca_secret_ref is not None:
        ref = kms.ca_secret_ref
        field, digest = "spec.KMS.caSecretRef", f"secret:{ref.namespace}/{ref.name}/{ref.key}"
    else:
        return None
    try:
        host = parse_endpoint(text, protocol).host
    except ValueError:
        return None
    return PrivateCa((host, digest), field)


def _sha256(pem: str) -> str:
    return "sha256:" + hashlib.sha256(pem.encode()).hexdigest()


def _operator_endpoint(text: str, protocol: str, flag: str) -> ParsedEndpoint:
    """The operator's endpoint (a flag, or built from --region): trusted, but parsed all the
    same, so that an SDK is only ever handed host[:port]."""
    try:
        return parse_endpoint(text, protocol)
    except ValueError as exc:
        raise StoreProblem("InvalidEndpointFlag",
                           f"the controller's {flag} (or --region) {exc}; the operator "
                           "must give https://host[:port]") from None


def operator_endpoints(settings: Settings) -> tuple[str, ...]:
    """The endpoint hosts the operator named (--kms-endpoint or the region's, --oos-endpoint,
    exact --allowed-endpoints entries) as host[:port]: the ones metrics label by name."""
    texts = [(settings.default_kms_endpoint(), settings.kms_protocol),
             (settings.default_oos_endpoint(), settings.kms_protocol),
             *((entry, "https") for entry in settings.allowed_endpoints
               if not entry.startswith("*."))]
    hosts = []
    for text, protocol in texts:
        try:
            hosts.append(parse_endpoint(text.strip(), protocol).host)
        except ValueError:
            continue
    return tuple(dict.fromkeys(hosts))


def endpoint_allowed(endpoint: ParsedEndpoint, allowed: tuple[str, ...]) -> bool:
    """The parsed hostname is a name under aliyuncs.com (a DNS-suffix match on whole labels),
    or matches an entry of `allowed`: an exact host (any port), an exact host:port, or
    '*.suffix' (any name below suffix). Entries that are not host[:port] match nothing."""
    name = endpoint.hostname
    if name.endswith(ALIBABA_SUFFIX) and ":" not in name:
        return True
    for entry in allowed:
        entry = entry.strip().lower()
        if entry.startswith("*."):
            if ":" not in name and name.endswith(entry[1:]) and len(entry) > 2:
                return True
            continue
        try:
            rule = parse_endpoint(entry, endpoint.protocol)
        except ValueError:
            continue
        if rule.hostname == name and rule.port in (None, endpoint.port):
            return True
    return False


def _store_name(ref: api.StoreRef) -> str:
    if ref.kind == api.StoreKind.CLUSTER_SECRET_STORE:
        return f"ClusterSecretStore {ref.name}"
    return f"SecretStore {ref.namespace}/{ref.name}"


def _clamp_session(seconds: int) -> int:
    return min(MAX_SESSION_SECONDS, max(MIN_SESSION_SECONDS, seconds))


def _seconds(text: str) -> int:
    """roleSessionExpiration ("3600", "1h") in seconds, within what STS accepts (900-43200)."""
    text = (text or "").strip()
    if not text:
        return 3600
    if text.isdigit():
        return _clamp_session(int(text))
    try:
        return _clamp_session(int(api.parse_duration(text)))
    except (api.SpecError, ValueError):
        return 3600


def uses_secrets(store: api.SecretStore) -> bool:
    """Whether the store's check reads Secrets (which are not watched): it is re-checked."""
    kms, oos = kms_of(store), oos_of(store)
    auths = [p.auth for p in (kms, oos) if p is not None]
    if any(a is not None and (a.access_key or a.access_key_secret) for a in auths):
        return True
    if kms is None:
        return False
    dedicated = kms.dedicated
    return kms.ca_secret_ref is not None or (dedicated is not None and bool(
        dedicated.client_key_content or dedicated.password))
