"""The two request signatures Alibaba Cloud SDKs send, computed server-side.

A fake that accepted any signature would let a controller ship with broken
signing. These functions mirror, byte for byte, what the SDKs in this repo's
virtualenv produce (read from alibabacloud_tea_openapi 0.4.6 ``utils.py`` and
alibabacloud_credentials 1.0.12 ``parameter_helper.py``):

* ACS3-HMAC-SHA256 ("V3", the KMS SDK's default): every header the SDK set is
  signed; canonical request = METHOD, path, sorted query (values quoted with
  ``~`` safe), ``name:value`` lines of the signed headers (lower-cased,
  stripped, repeated values sorted and comma-joined), the signed header list,
  and the hex SHA-256 of the body. String to sign = algorithm + hex SHA-256 of
  the canonical request; signature = hex HMAC-SHA256 with the AccessKey secret.
* RPC "V1" (HMAC-SHA1, ``signature_algorithm="v2"`` in the SDK Config, and the
  credentials library's signed STS AssumeRole): all query and form parameters
  except ``Signature``, sorted, percent-encoded (space -> %20, ``~`` kept),
  joined; string to sign = ``METHOD&%2F&`` + encoded canonical string;
  signature = base64 HMAC-SHA1 keyed with ``secret + "&"``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

ACS3_ALGORITHM = "ACS3-HMAC-SHA256"


def percent_encode(value: str) -> str:
    return quote(value, safe="~", encoding="utf-8")


# --- RPC V1 -----------------------------------------------------------------


def rpc_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    canonical = "&".join(
        f"{percent_encode(key)}={percent_encode(params[key])}"
        for key in sorted(params)
        if key != "Signature"
    )
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical)}"


def rpc_signature(secret: str, string_to_sign: str) -> str:
    digest = hmac.new(
        (secret + "&").encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1
    ).digest()
    return base64.b64encode(digest).decode("ascii")


# --- ACS3 (V3) --------------------------------------------------------------


@dataclass(frozen=True)
class Acs3Authorization:
    algorithm: str
    access_key_id: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_acs3_authorization(value: str) -> Acs3Authorization:
    """Parse ``ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=a;b,Signature=hex``."""
    algorithm, _, rest = value.strip().partition(" ")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            fields[key] = val
    missing = {"Credential", "SignedHeaders", "Signature"} - fields.keys()
    if missing:
        raise ValueError(f"Authorization lacks {', '.join(sorted(missing))}")
    signed = tuple(h for h in fields["SignedHeaders"].split(";") if h)
    return Acs3Authorization(algorithm, fields["Credential"], signed, fields["Signature"])


def acs3_canonical_query(query: Mapping[str, str]) -> str:
    return "&".join(f"{percent_encode(k)}={percent_encode(query[k])}" for k in sorted(query))


def acs3_canonical_headers(
    headers: Mapping[str, Iterable[str]], signed_headers: Iterable[str]
) -> str:
    lines = []
    for name in signed_headers:
        values = sorted(v.strip() for v in headers.get(name, ()))
        lines.append(f"{name}:{','.join(values)}\n")
    return "".join(lines)


def acs3_canonical_request(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, Iterable[str]],
    signed_headers: tuple[str, ...],
    payload_sha256_hex: str,
) -> str:
    return "\n".join(
        [
            method.upper(),
            path or "/",
            acs3_canonical_query(query),
            acs3_canonical_headers(headers, signed_headers),
            ";".join(signed_headers),
            payload_sha256_hex,
        ]
    )


def acs3_string_to_sign(canonical_request: str) -> str:
    digest = hashlib.sha256(canonical_request.encode("utf-8")).hexdigest()
    return f"{ACS3_ALGORITHM}\n{digest}"


def acs3_signature(secret: str, string_to_sign: str) -> str:
    return hmac.new(
        secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256
    ).hexdigest()


def signatures_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
