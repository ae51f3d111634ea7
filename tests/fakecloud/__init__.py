"""A fake Alibaba Cloud (KMS, STS, ECS metadata) that the real SDKs talk to unmodified.

Why: the controller must be tested against the wire behaviour of the real
``alibabacloud_kms20160120`` / ``alibabacloud_credentials`` libraries —
signatures, security tokens, error bodies, throttling headers, TLS — without a
cloud account. Everything binds 127.0.0.1.

In tests::

    with FakeCloud() as cloud:
        cloud.add_access_key("AK", "SK", identity="alice")
        cloud.put_secret("db", "s3cret")
        config = Config(access_key_id="AK", access_key_secret="SK",
                        endpoint=cloud.kms_endpoint, protocol="http")

Endpoints: ``kms_endpoint`` (http), ``kms_tls_endpoint`` (https, the KMS
instance endpoint stand-in; ``Config(ca=cloud.ca_file)``), ``sts_endpoint``
(https), ``metadata_proxy`` (``http://127.0.0.1:PORT``, pass as the
credentials ``proxy`` for ``ecs_ram_role``), ``admin_url`` with ``admin=True``.

Trusting the CA for STS (measured with alibabacloud-credentials 1.0.12): the
library offers no CA option for STS; it builds its https session with
``ssl.create_default_context()``, which reads ``SSL_CERT_FILE`` once per
endpoint (host:port) per process, when that session is first created. So set
``os.environ.update(cloud.trust_env())`` (``SSL_CERT_FILE=cloud.ca_bundle_file``,
the fake CA plus the public roots) before the first STS call.
``REQUESTS_CA_BUNDLE`` has no effect (the SDK calls ``Session.send`` directly).

Identities and access: AccessKeys map to an identity string; STS and ECS
credentials map to the role ARN. An identity with no rules may read every
secret; with rules, only secrets matching an ``allow`` glob and no ``deny``
glob (``Forbidden.NoPermission`` 403 otherwise).

Public API (``CloudState`` methods, all thread-safe, also on ``FakeCloud``):
``put_secret``, ``delete_secret``, ``add_access_key``, ``add_role`` (with
``Trust``), ``set_oidc_jwks``, ``set_ecs_role``, ``allow``, ``deny``,
``expire_all_tokens``, ``inject``, ``clear_faults``, ``latency``, ``calls``,
``request_log``, ``peak_rate``, ``peak_concurrency``, ``reset_counters``,
``metadata_require_token``.

OOS encryption parameters (GetSecretParameter, versions 1, 2, ...): ``cloud.oos``
(``put``, ``delete``), endpoint ``oos_endpoint`` (http), admin ``/_admin/oos/parameters``,
seed key ``secretParameters``; see ``oos.py``. KMS instance gateway as the client-key SDK
speaks it (protobuf, RSA-signed): ``dkms_endpoint`` (https, ``ca_file``), client keys from
``cloud.dkms.create_client_key(identity, password)``, admin ``/_admin/dkms/client-keys``;
see ``dkms.py``.

KMS keys (Encrypt, Decrypt, DescribeKey, ListKeyVersions): ``cloud.keys`` (a ``KeyRing``:
``create_key``, ``rotate_key``, ``set_state``), admin ``/_admin/keys``; see ``keys.py``.

Run alone: ``python -m tests.fakecloud --secrets file.yaml [--latency 0.02]
[--access-key ID:SECRET[:IDENTITY]]...`` prints one JSON line with the
endpoints, CA paths and ``admin_url``, then serves until SIGTERM/SIGINT. Drive
it with ``FakeCloudAdmin(admin_url)``.

Secrets file (YAML; the same document is accepted as JSON by ``/_admin/seed``)::

    secrets:
      db-password: "s3cret"                  # text, one version (v1, ACSCurrent)
      db-json: {json: {user: app, password: pw}}   # stored as JSON text
      tls-blob: {binary: "aGVsbG8="}         # base64 of the bytes; served as binary
      rotated:
        versions:                            # applied in order, like PutSecretValue
          - {id: v1, data: old}
          - {id: v2, data: new}              # takes ACSCurrent; v1 becomes ACSPrevious
          - {id: v3, data: next, stages: [ACSPending]}
    secretParameters:                        # OOS encryption parameters
      app-db-password: "s3cret"              # version 1
      app-token: {versions: [old, new]}      # versions 1 and 2; 2 is served by default
    accessKeys:
      - {id: AKID, secret: AKSECRET, identity: alice}
    rules:
      - {identity: alice, allow: ["app-*"], deny: ["app-admin"]}
    oidcProviders:
      - {arn: "acs:ram::1234567890123456:oidc-provider/ack-rrsa",
         jwksFile: jwks.json,                # or jwks: {...}
         audience: sts.aliyuncs.com, issuer: "https://..."}   # issuer optional
    roles:
      - arn: "acs:ram::1234567890123456:role/app"
        lifetimeSeconds: 3600
        trust:
          - principals: [alice]              # may AssumeRole (globs)
          - oidcProviderArn: "acs:ram::1234567890123456:oidc-provider/ack-rrsa"
            subjects: ["system:serviceaccount:default:*"]
    ecsRole: {name: worker-role, lifetimeSeconds: 3600}
    latency: 0.02
"""

from .admin import AdminError, FakeCloudAdmin
from .cloud import FakeCloud
from .iam import Trust
from .jwtissuer import OidcIssuer, service_account_subject
from .state import DEFAULT_ACCOUNT_ID, CloudState

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "AdminError",
    "CloudState",
    "FakeCloud",
    "FakeCloudAdmin",
    "OidcIssuer",
    "Trust",
    "service_account_subject",
]
