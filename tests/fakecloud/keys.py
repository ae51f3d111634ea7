"""The fake KMS's customer master keys and their aliases: Encrypt, Decrypt, DescribeKey,
ListKeyVersions, CreateKey, CreateKeyVersion (a manual rotation), CreateAlias, UpdateAlias,
DeleteAlias and ListAliases.

Why: the KMS v2 plugin wraps the kube-apiserver's DEK seeds with a KMS key, so its tests need
a KMS that really encrypts, really has key versions (rotation makes a new primary version;
old versions still decrypt), key states (Enabled / Disabled / PendingDeletion) and checks the
EncryptionContext the way the service does (a ciphertext only decrypts with the context it
was made with). Real AES-GCM does the work, so a tampered or foreign blob fails for real.

CiphertextBlob (base64 text, opaque to callers): ``0x01 | key uuid (16) | version uuid (16)
| nonce (12) | AES-256-GCM(version material, plaintext text)``; the additional data binds the
key, the version and the canonical JSON of the EncryptionContext.

Errors follow the service's documented codes: ``Forbidden.KeyNotFound`` 404,
``Rejected.Disabled`` / ``Rejected.PendingDeletion`` 409, ``InvalidParameter`` 400 (a blob
that does not decrypt: wrong context, tampered, unknown version), ``MissingParameter`` 400.

Aliases (``alias/<name>``: letters, digits, ``_``, ``-``, ``/``; ``alias/acs/`` is reserved)
name one key each and can be re-pointed (UpdateAlias). Wherever a ``KeyId`` parameter is
taken, an alias name or an alias ARN (``acs:kms:<region>:<account>:alias/<name>``) or a key ARN
works too, and every answer carries the real KeyId (as the service does); permissions are
checked on the key, not the alias. Errors: ``Forbidden.AliasNotFound`` 404,
``Rejected.AliasExists`` 409, ``InvalidParameter.AliasName`` 400.

State changes go through ``KeyRing`` (``cloud.keys``) or the admin API (``/_admin/keys``,
see ``admin_route``); ``KeyAdmin`` adds the client side to ``FakeCloudAdmin``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .wire import ApiError

ENABLED, DISABLED, PENDING_DELETION = "Enabled", "Disabled", "PendingDeletion"
STATES = (ENABLED, DISABLED, PENDING_DELETION)
KEY_ACTIONS = frozenset({"Encrypt", "Decrypt", "DescribeKey", "ListKeyVersions",
                         "CreateKey", "CreateKeyVersion",
                         "CreateAlias", "UpdateAlias", "DeleteAlias", "ListAliases"})
ALIAS_PREFIX = "alias/"
_ALIAS_NAME = re.compile(r"alias/[A-Za-z0-9_/-]{1,255}")
MAX_PLAINTEXT = 6144
_BLOB_VERSION = b"\x01"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class KeyVersion:
    version_id: str
    material: bytes = field(repr=False)
    created: float


@dataclass
class Key:
    key_id: str
    created: float
    versions: list[KeyVersion] = field(default_factory=list)
    state: str = ENABLED
    last_rotation: float = 0.0
    description: str = ""

    @property
    def primary(self) -> KeyVersion:
        return self.versions[-1]

    def version(self, version_id: str) -> KeyVersion | None:
        return next((v for v in self.versions if v.version_id == version_id), None)


def _not_found(key_id: str) -> ApiError:
    return ApiError(404, "Forbidden.KeyNotFound", f"The specified Key {key_id} is not found.")


def _alias_not_found(alias: str) -> ApiError:
    return ApiError(404, "Forbidden.AliasNotFound", f"The specified Alias {alias} is not found.")


def _bad_blob() -> ApiError:
    return ApiError(400, "InvalidParameter",
                    'The specified parameter "CiphertextBlob" is not valid.')


def _context_bytes(context: dict[str, str]) -> bytes:
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


def parse_context(raw: str | None) -> dict[str, str]:
    """The EncryptionContext parameter: a JSON object of strings (absent = empty)."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        raise ApiError(400, "InvalidParameter",
                       'The specified parameter "EncryptionContext" is not valid.') from None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ApiError(400, "InvalidParameter",
                       'The specified parameter "EncryptionContext" is not valid.')
    return {str(k): v for k, v in value.items()}


class KeyRing:
    """Every key of the fake account; thread-safe (its own lock)."""

    def __init__(self, account_id: str = "1234567890123456", region: str = "cn-hangzhou") -> None:
        self._keys: dict[str, Key] = {}
        self._aliases: dict[str, str] = {}  # alias/<name> -> KeyId
        self._lock = threading.Lock()
        self.account_id = account_id
        self.region = region

    # --- admin ----------------------------------------------------------------------------
    def create_key(self, key_id: str | None = None, *, description: str = "") -> str:
        """A new Enabled key with one version; returns its KeyId (a UUID unless given)."""
        kid = key_id or str(uuid.uuid4())
        with self._lock:
            if kid in self._keys:
                raise ValueError(f"key {kid} already exists")
            now = time.time()
            key = Key(kid, now, description=description)
            key.versions.append(KeyVersion(str(uuid.uuid4()), os.urandom(32), now))
            self._keys[kid] = key
        return kid

    def rotate_key(self, key_id: str) -> str:
        """Make a new primary version (old ones still decrypt); returns its KeyVersionId."""
        with self._lock:
            key = self._get(key_id)
            now = time.time()
            version = KeyVersion(str(uuid.uuid4()), os.urandom(32), now)
            key.versions.append(version)
            key.last_rotation = now
            return version.version_id

    def set_state(self, key_id: str, state: str) -> None:
        if state not in STATES:
            raise ValueError(f"key state {state!r}: use one of {', '.join(STATES)}")
        with self._lock:
            self._get(key_id).state = state

    def key_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._keys)

    # --- aliases (also the API's CreateAlias / UpdateAlias / DeleteAlias / ListAliases) ---
    def create_alias(self, alias: str, key_id: str) -> None:
        """A new alias for an existing key; Rejected.AliasExists if the name is taken."""
        self._check_alias_name(alias)
        with self._lock:
            target = self._get(self._resolve(key_id)).key_id
            if alias in self._aliases:
                raise ApiError(409, "Rejected.AliasExists",
                               f"The specified Alias {alias} already exists.")
            self._aliases[alias] = target

    def update_alias(self, alias: str, key_id: str) -> None:
        """Re-point an existing alias to another (existing) key."""
        with self._lock:
            if alias not in self._aliases:
                raise _alias_not_found(alias)
            self._aliases[alias] = self._get(self._resolve(key_id)).key_id

    def delete_alias(self, alias: str) -> None:
        """Remove the alias (never the key)."""
        with self._lock:
            if self._aliases.pop(alias, None) is None:
                raise _alias_not_found(alias)

    def aliases(self) -> dict[str, str]:
        with self._lock:
            return dict(self._aliases)

    def resolve(self, key_ref: str) -> str:
        """The KeyId a KeyId parameter names (alias, alias ARN, key ARN or KeyId)."""
        with self._lock:
            return self._resolve(key_ref)

    # --- the API --------------------------------------------------------------------------
    def describe(self, key_id: str) -> dict[str, Any]:
        with self._lock:
            key = self._get(self._resolve(key_id))
            meta: dict[str, Any] = {
                "KeyId": key.key_id,
                "Arn": f"acs:kms:{self.region}:{self.account_id}:key/{key.key_id}",
                "KeyState": key.state,
                "KeySpec": "Aliyun_AES_256",
                "KeyUsage": "ENCRYPT/DECRYPT",
                "Origin": "Aliyun_KMS",
                "ProtectionLevel": "SOFTWARE",
                "Creator": self.account_id,
                "CreationDate": _iso(key.created),
                "PrimaryKeyVersion": key.primary.version_id,
                "AutomaticRotation": "Disabled",
                "Description": key.description,
            }
            if key.last_rotation:
                meta["LastRotationDate"] = _iso(key.last_rotation)
            if key.state == PENDING_DELETION:
                meta["DeleteDate"] = _iso(time.time() + 7 * 86400)
            return meta

    def list_versions(self, key_id: str) -> list[dict[str, str]]:
        with self._lock:
            key = self._get(self._resolve(key_id))
            return [{"KeyId": key.key_id, "KeyVersionId": v.version_id,
                     "CreationDate": _iso(v.created)} for v in key.versions]

    def encrypt(self, key_id: str, plaintext: str, context: dict[str, str]) -> dict[str, str]:
        data = plaintext.encode()
        if len(data) > MAX_PLAINTEXT:
            raise ApiError(400, "InvalidParameter",
                           'The specified parameter "Plaintext" is not valid.')
        with self._lock:
            key = self._usable(self._resolve(key_id))
            version = key.primary
        nonce = os.urandom(12)
        aad = self._aad(key.key_id, version.version_id, context)
        sealed = AESGCM(version.material).encrypt(nonce, data, aad)
        blob = (_BLOB_VERSION + uuid.UUID(key.key_id).bytes + uuid.UUID(version.version_id).bytes
                + nonce + sealed)
        return {"CiphertextBlob": base64.b64encode(blob).decode(), "KeyId": key.key_id,
                "KeyVersionId": version.version_id}

    def decrypt(self, blob_text: str, context: dict[str, str]) -> dict[str, str]:
        try:
            blob = base64.b64decode(blob_text, validate=True)
        except (binascii.Error, ValueError):
            raise _bad_blob() from None
        if len(blob) < 1 + 16 + 16 + 12 + 16 or blob[:1] != _BLOB_VERSION:
            raise _bad_blob()
        key_id = str(uuid.UUID(bytes=blob[1:17]))
        version_id = str(uuid.UUID(bytes=blob[17:33]))
        with self._lock:
            key = self._usable(key_id)
            version = key.version(version_id)
        if version is None:
            raise _bad_blob()
        aad = self._aad(key_id, version_id, context)
        try:
            plain = AESGCM(version.material).decrypt(blob[33:45], blob[45:], aad)
        except InvalidTag:
            raise _bad_blob() from None
        return {"Plaintext": plain.decode(), "KeyId": key_id, "KeyVersionId": version_id}

    # --- private --------------------------------------------------------------------------
    def _resolve(self, key_ref: str) -> str:
        """Under the lock: alias name or ARN -> its KeyId; a key ARN -> the KeyId."""
        if key_ref.startswith("acs:kms:"):
            resource = key_ref.split(":", 4)[-1]
            if resource.startswith("key/"):
                return resource[len("key/"):]
            key_ref = resource
        if key_ref.startswith(ALIAS_PREFIX):
            target = self._aliases.get(key_ref)
            if target is None:
                raise _alias_not_found(key_ref)
            return target
        return key_ref

    @staticmethod
    def _check_alias_name(alias: str) -> None:
        if not _ALIAS_NAME.fullmatch(alias) or alias.startswith("alias/acs/"):
            raise ApiError(400, "InvalidParameter.AliasName",
                           f"The specified AliasName {alias!r} is not valid.")

    def _get(self, key_id: str) -> Key:
        key = self._keys.get(key_id)
        if key is None:
            raise _not_found(key_id)
        return key

    def _usable(self, key_id: str) -> Key:
        key = self._get(key_id)
        if key.state == DISABLED:
            raise ApiError(409, "Rejected.Disabled",
                           "The request was rejected because the key state is Disabled.")
        if key.state == PENDING_DELETION:
            raise ApiError(409, "Rejected.PendingDeletion",
                           "The request was rejected because the key state is PendingDeletion.")
        return key

    @staticmethod
    def _aad(key_id: str, version_id: str, context: dict[str, str]) -> bytes:
        return key_id.encode() + b"|" + version_id.encode() + b"|" + _context_bytes(context)


def handle(keys: KeyRing, action: str, params: dict[str, str]) -> dict[str, Any]:
    """One key API call (already authenticated); the payload without RequestId."""
    if action in _ALIAS_ACTIONS:
        return _alias_action(keys, action, params)
    if action == "CreateKey":
        spec = params.get("KeySpec") or "Aliyun_AES_256"
        if spec != "Aliyun_AES_256":
            raise ApiError(400, "InvalidParameter.KeySpec",
                           f"The specified KeySpec {spec} is not supported by this KMS.")
        created = keys.create_key(description=params.get("Description", ""))
        return {"KeyMetadata": keys.describe(created)}
    if action == "Decrypt":
        blob = params.get("CiphertextBlob")
        if not blob:
            raise ApiError(400, "MissingParameter",
                           'The parameter "CiphertextBlob" is needed but not provided.')
        return keys.decrypt(blob, parse_context(params.get("EncryptionContext")))
    key_id = params.get("KeyId")
    if not key_id:
        raise ApiError(400, "MissingParameter", 'The parameter "KeyId" is needed but not provided.')
    if action == "DescribeKey":
        return {"KeyMetadata": keys.describe(key_id)}
    if action == "CreateKeyVersion":
        real = keys.resolve(key_id)
        version = keys.rotate_key(real)
        return {"KeyVersion": {"KeyId": real, "KeyVersionId": version,
                               "CreationDate": _iso(time.time())}}
    if action == "ListKeyVersions":
        versions = keys.list_versions(key_id)
        return {"KeyVersions": {"KeyVersion": versions}, "TotalCount": len(versions),
                "PageNumber": 1, "PageSize": len(versions)}
    plaintext = params.get("Plaintext")
    if plaintext is None:
        raise ApiError(400, "MissingParameter",
                       'The parameter "Plaintext" is needed but not provided.')
    return keys.encrypt(key_id, plaintext, parse_context(params.get("EncryptionContext")))


_ALIAS_ACTIONS = frozenset({"CreateAlias", "UpdateAlias", "DeleteAlias", "ListAliases"})


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise ApiError(400, "MissingParameter",
                       f'The parameter "{name}" is needed but not provided.')
    return value


def _alias_action(keys: KeyRing, action: str, params: dict[str, str]) -> dict[str, Any]:
    if action == "ListAliases":
        rows = [{"AliasName": name, "KeyId": key_id,
                 "AliasArn": f"acs:kms:{keys.region}:{keys.account_id}:{name}"}
                for name, key_id in sorted(keys.aliases().items())]
        return {"Aliases": {"Alias": rows}, "TotalCount": len(rows), "PageNumber": 1,
                "PageSize": max(len(rows), 1)}
    alias = _required(params, "AliasName")
    if action == "DeleteAlias":
        keys.delete_alias(alias)
    elif action == "CreateAlias":
        keys.create_alias(alias, _required(params, "KeyId"))
    else:
        keys.update_alias(alias, _required(params, "KeyId"))
    return {}


def admin_route(
    keys: KeyRing, method: str, route: str, body: dict[str, Any]
) -> dict[str, Any] | None:
    """``/_admin/keys`` routes:

      GET  /keys                          {"keys": [...]}
      POST /keys                          {key_id?, description?} -> {"key_id"}
      GET  /keys/<id>                     DescribeKey's KeyMetadata
      POST /keys/<id>/rotate              -> {"version_id"}
      PUT  /keys/<id>/state               {"state": Enabled|Disabled|PendingDeletion}
      GET  /aliases                       {"aliases": {alias: key id}}
      POST /aliases                       {alias, key_id}: CreateAlias
      PUT  /aliases                       {alias, key_id}: UpdateAlias (re-point)
      POST /aliases/delete                {alias}: DeleteAlias
    """
    if route.rstrip("/").startswith("/aliases"):
        return _alias_route(keys, method, route.rstrip("/"), body)
    parts = route.strip("/").split("/")
    if parts == ["keys"] and method == "GET":
        return {"keys": keys.key_ids()}
    if parts == ["keys"] and method == "POST":
        return {"key_id": keys.create_key(body.get("key_id"),
                                          description=body.get("description", ""))}
    try:
        if len(parts) == 2 and method == "GET":
            return keys.describe(parts[1])
        if len(parts) == 3 and parts[2] == "rotate" and method == "POST":
            return {"version_id": keys.rotate_key(parts[1])}
        if len(parts) == 3 and parts[2] == "state" and method == "PUT":
            keys.set_state(parts[1], body["state"])
            return {"ok": True}
    except ApiError as err:
        raise KeyError(err.message) from None
    return None


def _alias_route(keys: KeyRing, method: str, route: str,
                 body: dict[str, Any]) -> dict[str, Any] | None:
    try:
        if (method, route) == ("GET", "/aliases"):
            return {"aliases": keys.aliases()}
        if (method, route) == ("POST", "/aliases"):
            keys.create_alias(body["alias"], body["key_id"])
        elif (method, route) == ("PUT", "/aliases"):
            keys.update_alias(body["alias"], body["key_id"])
        elif (method, route) == ("POST", "/aliases/delete"):
            keys.delete_alias(body["alias"])
        else:
            return None
    except ApiError as err:
        raise KeyError(err.message) from None
    return {"ok": True}


class KeyAdmin:
    """The client side of ``admin_route``, mixed into ``FakeCloudAdmin``."""

    def _call(self, method: str, route: str, body: Any = None, **query: Any) -> dict[str, Any]:
        raise NotImplementedError

    def create_key(self, key_id: str | None = None, *, description: str = "") -> str:
        body: dict[str, Any] = {"description": description}
        if key_id:
            body["key_id"] = key_id
        return str(self._call("POST", "/keys", body)["key_id"])

    def rotate_key(self, key_id: str) -> str:
        return str(self._call("POST", f"/keys/{key_id}/rotate", {})["version_id"])

    def set_key_state(self, key_id: str, state: str) -> None:
        self._call("PUT", f"/keys/{key_id}/state", {"state": state})

    def describe_key(self, key_id: str) -> dict[str, Any]:
        return self._call("GET", f"/keys/{key_id}")

    def create_alias(self, alias: str, key_id: str) -> None:
        self._call("POST", "/aliases", {"alias": alias, "key_id": key_id})

    def update_alias(self, alias: str, key_id: str) -> None:
        self._call("PUT", "/aliases", {"alias": alias, "key_id": key_id})

    def delete_alias(self, alias: str) -> None:
        self._call("POST", "/aliases/delete", {"alias": alias})

    def aliases(self) -> dict[str, str]:
        return dict(self._call("GET", "/aliases")["aliases"])
