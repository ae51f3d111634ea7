"""What a PKCS#12 file (a KMS instance client key) will cost to open, read before opening it.

Why it exists: `cryptography`'s PKCS#12 loader derives keys with whatever iteration counts the
file names (the MAC's, each PBE's, PBES2's PBKDF2), holding the GIL while it does; a tenant's
file asking for 2^31-1 iterations cost about 11 minutes per attempt (issue 18, case 4). This
module reads the file's ASN.1 structure (a small DER/BER reader: tag, length, content) and
refuses, before the loader derives anything, a file whose key-derivation parameters ask for
more than `MAX_ITERATIONS` per derivation or `MAX_TOTAL_ITERATIONS` in all, or that uses a KDF
whose cost is not an iteration count (scrypt). Checked: the MAC (PKCS#12 MacData, PBMAC1),
every encrypted content's algorithm (PKCS#12 PBE, PBES1, PBES2) and every shrouded key bag,
also those inside an encrypted content: given the password, such a content is decrypted here
first (its own parameters already checked; PBES2 with AES or 3DES, PKCS#12 PBE with 3DES or
128-bit RC2), and its bags checked like the others. A content this module cannot decrypt
(40-bit RC2, RC4, a wrong password) is not looked into: the loader cannot reach its bags
either without the same decryption, and with the right password a file whose inner key bag
sits in such a content costs at most what that bag asks for (docs/security.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.algorithms import RC2, TripleDES
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

# OpenSSL and Go write 2,048 iterations, Java 10,000, cryptography 20,000 (PBES2) and
# 2,048-ish for legacy; 100,000 PBKDF2-SHA256 rounds cost ~40 ms, so one file at the ceiling
# in every place (MAC, contents, key) costs well under a second, once per key content.
MAX_ITERATIONS = 100_000
MAX_TOTAL_ITERATIONS = 4 * MAX_ITERATIONS
MAX_DEPTH = 32  # nesting the reader follows; real files nest about 10 deep
MAX_ITEMS = 1_000  # contents and bags looked at

SEQUENCE, INTEGER, OCTET_STRING, OID, CONTEXT_0 = 0x30, 0x02, 0x04, 0x06, 0xA0
_DATA = "1.2.840.113549.1.7.1"
_ENCRYPTED_DATA = "1.2.840.113549.1.7.6"
_SHROUDED_KEY_BAG = "1.2.840.113549.1.12.10.1.2"
_SAFE_CONTENTS_BAG = "1.2.840.113549.1.12.10.1.6"
_PKCS12_PBE = "1.2.840.113549.1.12.1."  # pbeWithSHAAnd...: params {salt, iterations}
_PBES1 = {f"1.2.840.113549.1.5.{n}" for n in (1, 3, 4, 6, 10, 11)}
_PBKDF2, _PBES2, _PBMAC1 = ("1.2.840.113549.1.5.12", "1.2.840.113549.1.5.13",
                            "1.2.840.113549.1.5.14")
_SCRYPT = "1.3.6.1.4.1.11591.4.11"


class Refused(ValueError):
    """The file asks for too much work, or is not a PKCS#12 file this reader can follow; the
    message says which (never a byte of the file)."""


@dataclass(frozen=True)
class Node:
    """One TLV: `tag` (the identifier byte), `body` (content; a constructed OCTET STRING's
    pieces joined)."""

    tag: int
    body: bytes

    def children(self) -> list[Node]:
        return list(_read_all(self.body, 0))

    def integer(self) -> int:
        if self.tag != INTEGER or not self.body:
            raise Refused("an INTEGER was expected")
        if len(self.body) > 8:
            return 1 << 64  # far above any ceiling; no need to build the number
        return int.from_bytes(self.body, "big", signed=True)

    def oid(self) -> str:
        if self.tag != OID or not self.body:
            raise Refused("an OBJECT IDENTIFIER was expected")
        parts, value = [], 0
        for byte in self.body:
            value = value << 7 | byte & 0x7F
            if not byte & 0x80:
                parts.append(value)
                value = 0
        if not parts or self.body[-1] & 0x80:
            raise Refused("a malformed OBJECT IDENTIFIER")
        first = min(parts[0] // 40, 2)
        return ".".join(str(p) for p in (first, parts[0] - 40 * first, *parts[1:]))


def read(data: bytes, depth: int = 0) -> Node:
    """The single TLV that `data` holds."""
    node, end = _read(data, 0, depth)
    if end != len(data):
        raise Refused("trailing bytes after the PKCS#12 structure")
    return node


def _read_all(data: bytes, depth: int) -> Iterator[Node]:
    pos = 0
    while pos < len(data):
        node, pos = _read(data, pos, depth)
        yield node


def _read(data: bytes, pos: int, depth: int) -> tuple[Node, int]:
    """One TLV at `pos` -> (node, end). Definite lengths (DER) and BER's indefinite lengths
    and constructed OCTET STRINGs, as PKCS#12 writers use them."""
    if depth > MAX_DEPTH:
        raise Refused("nested deeper than any PKCS#12 file")
    if pos + 2 > len(data):
        raise Refused("truncated")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise Refused("a multi-byte tag, which PKCS#12 does not use")
    pos += 2
    if first == 0x80:  # indefinite: children up to an end-of-contents (00 00)
        if not tag & 0x20:
            raise Refused("an indefinite length on a primitive value")
        start = pos
        while data[pos:pos + 2] != b"\x00\x00":
            _child, pos = _read(data, pos, depth + 1)
        end = pos + 2
        body = data[start:end - 2]
    else:
        if first & 0x80:
            count = first & 0x7F
            if count > 4 or pos + count > len(data):
                raise Refused("a length field that is too long")
            length = int.from_bytes(data[pos:pos + count], "big")
            pos += count
        else:
            length = first
        end = pos + length
        if end > len(data):
            raise Refused("truncated")
        body = data[pos:end]
    if tag == OCTET_STRING | 0x20:  # constructed OCTET STRING (BER): its pieces joined
        body = b"".join(piece.body for piece in _read_all(body, depth + 1))
        tag = OCTET_STRING
    return Node(tag, body), end


class _Cost:
    def __init__(self, password: bytes | None) -> None:
        self.total = 0
        self.items = 0
        self.password = password

    def iterations(self, node: Node, where: str) -> None:
        count = node.integer()
        if count > MAX_ITERATIONS:
            raise Refused(f"its {where} asks for {_amount(count)} key-derivation iterations, "
                          f"more than the controller's ceiling of {MAX_ITERATIONS:,}")
        self.total += max(count, 1)
        if self.total > MAX_TOTAL_ITERATIONS:
            raise Refused(f"its key derivations ask for more than {MAX_TOTAL_ITERATIONS:,} "
                          "iterations in all")

    def algorithm(self, node: Node, where: str, depth: int = 0) -> None:
        """An AlgorithmIdentifier: the iteration counts it carries, however nested."""
        if depth > 4:
            raise Refused(f"its {where} nests algorithms deeper than PBES2 does")
        parts = node.children()
        if node.tag != SEQUENCE or not parts:
            raise Refused(f"its {where} is not an algorithm identifier")
        oid = parts[0].oid()
        params = parts[1].children() if len(parts) > 1 and parts[1].tag == SEQUENCE else []
        if oid == _SCRYPT:
            raise Refused(f"its {where} uses scrypt; use PBKDF2 (what every tool writes)")
        if oid.startswith(_PKCS12_PBE) or oid in _PBES1 or oid == _PBKDF2:
            if len(params) < 2:
                raise Refused(f"its {where} has no iteration count")
            self.iterations(params[1], where)
        elif oid in (_PBES2, _PBMAC1):
            if not params:
                raise Refused(f"its {where} has no parameters")
            self.algorithm(params[0], where, depth + 1)

    def count(self) -> None:
        self.items += 1
        if self.items > MAX_ITEMS:
            raise Refused(f"it holds more than {MAX_ITEMS:,} contents and bags")


def check(blob: bytes, password: bytes | None = None) -> int:
    """Refuse (`Refused`) a PKCS#12 file whose opening would cost more than the ceilings, or
    that this reader cannot follow; returns the iterations its opening will cost. With the
    `password`, encrypted contents are decrypted to check the key bags inside."""
    try:
        return _check(blob, password)
    except (IndexError, RecursionError):
        raise Refused("it is not a well-formed PKCS#12 file") from None


def _check(blob: bytes, password: bytes | None) -> int:
    pfx = read(blob).children()
    if len(pfx) < 2 or pfx[0].tag != INTEGER:
        raise Refused("it is not a PKCS#12 file")
    cost = _Cost(password)
    if len(pfx) > 2:  # MacData {DigestInfo {algorithm, digest}, salt, iterations DEFAULT 1}
        mac = pfx[2].children()
        digest_info = mac[0].children() if mac else []
        if digest_info:
            cost.algorithm(digest_info[0], "integrity MAC")
        if len(mac) > 2:
            cost.iterations(mac[2], "integrity MAC")
    for content in _contents(pfx[1], "the file"):
        cost.count()
        _content_info(content, cost)
    return cost.total


def _contents(info: Node, where: str) -> list[Node]:
    """The ContentInfos of the authenticated safe (a data ContentInfo)."""
    parts = info.children()
    if len(parts) < 2 or parts[0].oid() != _DATA:
        raise Refused(f"{where} is not password-integrity PKCS#12 (public-key modes are not "
                      "supported)")
    return read(_explicit(parts[1]).body).children()


def _content_info(content: Node, cost: _Cost) -> None:
    parts = content.children()
    if not parts:
        raise Refused("it holds an empty content")
    kind = parts[0].oid()
    if kind == _ENCRYPTED_DATA and len(parts) > 1:
        # EncryptedData {version, EncryptedContentInfo {type, algorithm, [0] content}}
        encrypted = _explicit(parts[1]).children()
        info = encrypted[1].children() if len(encrypted) > 1 else []
        if len(info) < 2:
            raise Refused("it holds a malformed encrypted content")
        cost.algorithm(info[1], "encrypted content")
        if cost.password is not None and len(info) > 2 and info[2].tag & 0x1F == 0:
            plain = _decrypt(info[1], info[2].body, cost.password)
            if plain is not None:  # else: the loader cannot look inside either
                _bags(read(plain).children(), cost, 0)
    elif kind == _DATA and len(parts) > 1:
        _bags(read(_explicit(parts[1]).body).children(), cost, 0)


def _bags(bags: list[Node], cost: _Cost, depth: int) -> None:
    """SafeBags: the parameters of each shrouded key bag, nested SafeContents included."""
    if depth > 4:
        raise Refused("it nests bags deeper than any PKCS#12 writer does")
    for bag in bags:
        cost.count()
        fields = bag.children()
        kind = fields[0].oid() if fields else ""
        if kind == _SHROUDED_KEY_BAG and len(fields) > 1:
            key = _explicit(fields[1]).children()  # EncryptedPrivateKeyInfo
            if key:
                cost.algorithm(key[0], "private key")
        elif kind == _SAFE_CONTENTS_BAG and len(fields) > 1:
            _bags(_explicit(fields[1]).children(), cost, depth + 1)


# --- decrypting an encrypted content (parameters already within the ceilings) ------------

CipherOf = Callable[[bytes], BlockCipherAlgorithm]
_PKCS12_CIPHERS: dict[str, tuple[CipherOf, int]] = {
    _PKCS12_PBE + "3": (TripleDES, 24), _PKCS12_PBE + "4": (TripleDES, 16),
    _PKCS12_PBE + "5": (RC2, 16)}
_PBES2_CIPHERS: dict[str, tuple[CipherOf, int]] = {
    "2.16.840.1.101.3.4.1.2": (algorithms.AES, 16), "2.16.840.1.101.3.4.1.22": (algorithms.AES, 24),
    "2.16.840.1.101.3.4.1.42": (algorithms.AES, 32), "1.2.840.113549.3.7": (TripleDES, 24)}
_PRFS: dict[str, hashes.HashAlgorithm] = {
    "1.2.840.113549.2.7": hashes.SHA1(),  # noqa: S303 - PBKDF2's default PRF, by the format
    "1.2.840.113549.2.8": hashes.SHA224(),
    "1.2.840.113549.2.9": hashes.SHA256(), "1.2.840.113549.2.10": hashes.SHA384(),
    "1.2.840.113549.2.11": hashes.SHA512()}


def _decrypt(algorithm: Node, data: bytes, password: bytes) -> bytes | None:
    """The plaintext of an encrypted content, or None when this module cannot decrypt it (an
    algorithm it does not know, a wrong password)."""
    parts = algorithm.children()
    oid = parts[0].oid()
    params = parts[1].children() if len(parts) > 1 and parts[1].tag == SEQUENCE else []
    try:
        if oid in _PKCS12_CIPHERS and len(params) >= 2:
            cipher, size = _PKCS12_CIPHERS[oid]
            salt, count = params[0].body, params[1].integer()
            secret = _bmp(password)
            key = _pkcs12_kdf(secret, salt, count, 1, size)
            iv = _pkcs12_kdf(secret, salt, count, 2, 8)
            return _cbc(cipher(key), iv, data)
        if oid == _PBES2 and len(params) >= 2:
            return _pbes2(params[0].children(), params[1].children(), data, password)
    except (ValueError, UnicodeDecodeError):
        return None
    return None


def _pbes2(kdf: list[Node], scheme: list[Node], data: bytes, password: bytes) -> bytes | None:
    if not kdf or kdf[0].oid() != _PBKDF2 or len(scheme) < 2:
        return None
    cipher_oid = scheme[0].oid()
    if cipher_oid not in _PBES2_CIPHERS:
        return None
    cipher, size = _PBES2_CIPHERS[cipher_oid]
    fields = kdf[1].children()
    salt, count = fields[0].body, fields[1].integer()
    prf: hashes.HashAlgorithm = hashes.SHA1()  # noqa: S303 - the format's default PRF
    for extra in fields[2:]:
        if extra.tag == SEQUENCE:
            found = _PRFS.get(extra.children()[0].oid())
            if found is None:
                return None
            prf = found
    key = PBKDF2HMAC(prf, size, salt, count).derive(password)
    return _cbc(cipher(key), scheme[1].body, data)


def _cbc(algorithm: BlockCipherAlgorithm, iv: bytes, data: bytes) -> bytes:
    decryptor = Cipher(algorithm, modes.CBC(iv)).decryptor()
    padded = decryptor.update(data) + decryptor.finalize()
    unpadder = padding.PKCS7(algorithm.block_size).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


def _bmp(password: bytes) -> bytes:
    """A PKCS#12 password as the KDF takes it: BMPString (UTF-16BE) with a final NUL."""
    return password.decode("utf-8").encode("utf-16-be") + b"\x00\x00"


def _pkcs12_kdf(password: bytes, salt: bytes, iterations: int, purpose: int,
                size: int) -> bytes:
    """RFC 7292 appendix B.2 with SHA-1 (what the PKCS#12 PBE algorithms use)."""
    u, v = 20, 64

    def fill(data: bytes) -> bytes:  # repeated to a whole number of v-byte blocks
        if not data:
            return b""
        size = v * -(-len(data) // v)
        return (data * (size // len(data) + 1))[:size]

    block = fill(salt) + fill(password)
    out = b""
    while len(out) < size:
        # SHA-1 because the format says so (a key derivation, not a signature).
        digest = hashlib.sha1(bytes([purpose]) * v + block, usedforsecurity=False).digest()
        for _ in range(max(iterations, 1) - 1):
            digest = hashlib.sha1(digest, usedforsecurity=False).digest()
        out += digest
        step = int.from_bytes((digest * (v // u + 1))[:v], "big") + 1
        block = b"".join(((int.from_bytes(block[j:j + v], "big") + step) % (1 << 8 * v))
                         .to_bytes(v, "big") for j in range(0, len(block), v))
    return out[:size]


def _explicit(node: Node) -> Node:
    """The value inside an [0] EXPLICIT tag."""
    if node.tag != CONTEXT_0:
        raise Refused("an [0] tagged value was expected")
    return read(node.body)


def _amount(count: int) -> str:
    return f"{count:,}" if count < 1 << 63 else "more than 2^63"
