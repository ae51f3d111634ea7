"""The secret redactor: what every log line, Event and status text passes before it leaves.

Why this module exists: the controller handles secret values and cloud credentials all
day, and a log line is the easiest place to leak one: an exception that quotes a request
URL, a library that prints its HTTP headers, a careless f-string. So every line passes a
`Redactor` on its way out (ops/logs.py), which replaces with "[REDACTED]":

- values registered at runtime with `register_secret` (the engine registers each fetched
  secret value, each value derived from one by jmesPath, extract or a template, and each
  credential). Only hashes are kept, in a bounded FIFO, or, for values that have an owner
  (`hold_secret`: an identity's credentials, a ServiceAccount token), for as long as the
  owner holds them: its last few values, all forgotten by `release_secrets` when the owner
  goes, so that churn of identities does not fill the FIFO. Their JSON-escaped, repr-escaped,
  URL-encoded and base64 forms (Kubernetes Secret data) and, for multi-line values, each
  line are registered too. Forms of 6 characters or more are found anywhere in a line; a
  value shorter than that (a PIN, "true"; not a short line of a longer value) only in what
  a log record carries (message, arguments, fields, traceback; not the timestamp) and only
  as a whole word (not inside a longer word), so that it does not scrub ordinary words in
  passing: a short secret then hides that word wherever a log message has it on its own.
  Single characters are not tracked (every lone digit would go). Lookup cost is linear in
  the line's length, whatever the number of registered values.
- credential material by shape: AccessKeySecret / SecurityToken / OIDCToken / Signature
  as query parameters (also percent-encoded, as in Alibaba's "string to sign" errors),
  JSON or Python keys and HTTP headers; Authorization headers; bearer tokens; JWTs;
  STS security tokens ("CAIS..."); PEM private keys.

Text that leaves the process another way (Event messages, status) goes through `scrub`,
which applies the substring and shape rules but not the whole-word rule for short values:
those texts are kept free of values by construction (they name keys, never values), and a
word-level scrub there would garble a user's message for no gain.

ops/logs.py routes every log record through `RedactingFilter` and a handler that use the
default `Redactor` of this module.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import threading
from collections.abc import Hashable, Iterable
from urllib.parse import quote

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "Redactor",
    "default_redactor",
    "hold_secret",
    "register_secret",
    "release_secrets",
    "scrub",
]


REDACTED = "[REDACTED]"
MIN_SECRET_LENGTH = 6
DEFAULT_MAX_ENTRIES = 200_000  # ~30 MB at most; about 10,000 ExternalSecrets' worth

# -- redaction by value -----------------------------------------------------------------


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def secret_variants(value: str | bytes) -> set[str]:
    """The forms in which `value` could show up in a log line that are long enough to be
    found anywhere (>= MIN_SECRET_LENGTH): the value escaped and encoded, and each line."""
    text = value if isinstance(value, str) else _utf8_or_none(value)
    forms = _whole_forms(value)
    if text is not None:
        forms |= {line.strip() for line in text.splitlines()}
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def short_variants(value: str | bytes) -> set[str]:
    """For a value shorter than MIN_SECRET_LENGTH: its forms of 2 to 5 characters, found
    only as whole words. A long value has none: the short lines of a config file ("end",
    "[db]") must not hide those words in every log line."""
    text = value if isinstance(value, str) else _utf8_or_none(value)
    if len(text if text is not None else value) >= MIN_SECRET_LENGTH:
        return set()
    return {form for form in _whole_forms(value) if 1 < len(form) < MIN_SECRET_LENGTH}


def _whole_forms(value: str | bytes) -> set[str]:
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    text = value if isinstance(value, str) else _utf8_or_none(value)
    if not raw:
        return set()
    forms = {base64.b64encode(raw).decode("ascii")}
    if isinstance(value, bytes):
        forms.add(repr(value)[2:-1])
    if text is not None:
        forms |= {text, json.dumps(text)[1:-1], repr(text)[1:-1], quote(text, safe="")}
    return {form.strip() for form in forms if form.strip()}


def _utf8_or_none(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class _Generation:
    """Digests of registered forms, indexed by a hash of their first characters."""

    __slots__ = ("anchors", "digests", "short", "short_hashes", "short_lengths")

    def __init__(self) -> None:
        self.digests: set[bytes] = set()
        # forms shorter than MIN_SECRET_LENGTH, matched as whole words: their digests, and
        # their (per-process salted) str hashes as a cheap first check
        self.short: set[bytes] = set()
        self.short_hashes: set[int] = set()
        self.short_lengths: set[int] = set()
        # anchor -> the length of the forms starting with it (a set in the rare shared case)
        self.anchors: dict[int, int | frozenset[int]] = {}

    def add(self, digest: bytes, anchor: int, length: int) -> None:
        self.digests.add(digest)
        known = self.anchors.get(anchor)
        if known is None or known == length:
            self.anchors[anchor] = length
        else:
            lengths = known if isinstance(known, frozenset) else frozenset({known})
            self.anchors[anchor] = lengths | {length}

    def lengths(self, anchor: int) -> Iterable[int]:
        known = self.anchors.get(anchor)
        if known is None:
            return ()
        return known if isinstance(known, frozenset) else (known,)


_FORM = struct.Struct("<8sqI")  # a held form: digest, anchor (a str hash), length


class Redactor:
    """Registered secret values (as hashes) and credential patterns, scrubbed from text.

    Each registered form is indexed by the hash of its first MIN_SECRET_LENGTH characters,
    so `scrub` hashes one short window per position of the text and checks a full digest
    only on an anchor hit. Forms are kept in two generations of `max_entries // 2`: when
    the current one is full it becomes the previous one and the old previous one is
    dropped, so memory stays bounded (~150 bytes a form) and values that stopped being
    registered age out; registering a value again keeps it in the current generation.
    Values with an owner (`hold`) are kept apart, outside the generations, for as long as
    their owner holds them, and forgotten by `release(owner)`: an identity's credentials
    live and go with the identity, however many identities come and go.
    Thread-safe.
    """

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.capacity = max(1, max_entries // 2)
        self._lock = threading.Lock()
        self._current = _Generation()
        self._previous = _Generation()
        # Forms held by owners (`hold`): outside the generations, forgotten by `release`.
        # Compact, since there is one owner per identity and per token file: each value is
        # one bytes record of its forms (digest, anchor, length: _FORM.size bytes each).
        self._owned = _Generation()
        self._owners: dict[Hashable, tuple[bytes, ...]] = {}  # owner -> its values' records
        self._shared: dict[bytes, int] = {}  # digest -> holdings beyond the first (rare)
        self._stale_anchors = 0  # anchors of forgotten forms left in _owned.anchors

    def __len__(self) -> int:
        """How many distinct forms are remembered."""
        with self._lock:
            return len(self._current.digests | self._previous.digests
                       | self._owned.digests) + \
                len(self._current.short | self._previous.short)

    def owned(self) -> tuple[int, int]:
        """(owners, distinct forms they hold): for tests and the churn benchmark."""
        with self._lock:
            return len(self._owners), len(self._owned.digests)

    def hold(self, owner: Hashable, value: str | bytes, *, keep: int = 2) -> None:
        """`owner` (an identity, a token file) holds `value`: redact it until `owner` has
        held `keep` newer values (credentials that were refreshed twice) or is released.
        A value shorter than MIN_SECRET_LENGTH has no owner: it goes to the generations, as
        with `register` (credentials are never that short)."""
        if short_variants(value):
            self.register(value)
            return
        record = b"".join(_FORM.pack(_digest(f), hash(f[:MIN_SECRET_LENGTH]), len(f))
                          for f in sorted(secret_variants(value)))
        with self._lock:
            values = self._owners.get(owner, ())
            if record in values:
                return  # the same value again (a credential handed out once more)
            values = (*values, record)
            for form in _FORM.iter_unpack(record):
                self._own_locked(*form)
            while len(values) > max(1, keep):
                self._disown_locked(values[0])
                values = values[1:]
            self._owners[owner] = values

    def release(self, owner: Hashable) -> int:
        """`owner` is gone: forget the values it held (unless another owner holds the same
        value, or it was also registered without an owner). Returns how many values."""
        with self._lock:
            values = self._owners.pop(owner, ())
            for record in values:
                self._disown_locked(record)
            return len(values)

    def _own_locked(self, digest: bytes, anchor: int, length: int) -> None:
        if digest in self._owned.digests:
            self._shared[digest] = self._shared.get(digest, 0) + 1
        else:
            self._owned.add(digest, anchor, length)

    def _disown_locked(self, record: bytes) -> None:
        for digest, _anchor, _length in _FORM.iter_unpack(record):
            extra = self._shared.pop(digest, 0)
            if extra > 1:
                self._shared[digest] = extra - 1
            elif not extra:
                self._owned.digests.discard(digest)
                self._stale_anchors += 1  # its anchor may serve another form: left in place
        live = len(self._owned.digests)
        if not live:
            self._owned.anchors, self._stale_anchors = {}, 0
        elif self._stale_anchors > max(1024, live):
            self._rebuild_anchors_locked()

    def _rebuild_anchors_locked(self) -> None:
        """The anchors of the forms still held, and no others (amortized: after as many
        forgotten forms as there are live ones)."""
        fresh = _Generation()
        fresh.digests = self._owned.digests
        for values in self._owners.values():
            for record in values:
                for digest, anchor, length in _FORM.iter_unpack(record):
                    if digest in fresh.digests:
                        fresh.add(digest, anchor, length)
        self._owned, self._stale_anchors = fresh, 0

    def register(self, value: str | bytes) -> None:
        for form in secret_variants(value):
            self._add(form)
        for form in short_variants(value):  # one character: every lone digit would go
            self._add_short(form)

    def clear(self) -> None:
        with self._lock:
            self._current, self._previous = _Generation(), _Generation()
            self._owned, self._owners, self._shared = _Generation(), {}, {}
            self._stale_anchors = 0

    def scrub(self, text: str) -> str:
        """Registered values of 6 characters or more and credential shapes (for any text)."""
        return scrub_patterns(self._scrub_registered(text))

    def scrub_log(self, text: str) -> str:
        """`scrub`, and registered short values where they stand as a whole word (logs)."""
        text = self.scrub(text)
        with self._lock:
            generations = [g for g in (self._current, self._previous) if g.short]
            spans = list(_short_matches(text, generations)) if generations else []
        return _replace_spans(text, spans)

    def _add_short(self, form: str) -> None:
        digest = _digest(form)
        with self._lock:
            if digest in self._current.short:
                return
            self._make_room_locked()
            self._current.short.add(digest)
            self._current.short_hashes.add(hash(form))
            self._current.short_lengths.add(len(form))

    def _add(self, form: str) -> None:
        digest, anchor = _digest(form), hash(form[:MIN_SECRET_LENGTH])
        with self._lock:
            if digest in self._current.digests:
                return
            self._make_room_locked()
            self._current.add(digest, anchor, len(form))

    def _make_room_locked(self) -> None:
        """A full current generation becomes the previous one (the old previous is dropped)."""
        if len(self._current.digests) + len(self._current.short) >= self.capacity:
            self._previous, self._current = self._current, _Generation()

    def _scrub_registered(self, text: str) -> str:
        with self._lock:
            generations = [g for g in (self._current, self._previous, self._owned)
                           if g.digests]
            spans = list(self._matches(text, generations)) if generations else []
        return _replace_spans(text, spans)

    @staticmethod
    def _matches(text: str, generations: list[_Generation]) -> Iterable[tuple[int, int]]:
        end = len(text)
        for start in range(end - MIN_SECRET_LENGTH + 1):
            anchor = hash(text[start : start + MIN_SECRET_LENGTH])
            longest = 0
            for generation in generations:
                if anchor not in generation.anchors:  # the common case: one dict miss
                    continue
                for n in generation.lengths(anchor):
                    fits = n > longest and start + n <= end
                    if fits and _digest(text[start : start + n]) in generation.digests:
                        longest = n
            if longest:
                yield start, start + longest


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _short_matches(text: str, generations: list[_Generation]) -> Iterable[tuple[int, int]]:
    """Spans of `text` that are a registered short form standing as a whole word: no word
    character runs on across either end (so "ab" is found in "x=ab," but not in "abc")."""
    end = len(text)
    lengths = sorted(set().union(*(g.short_lengths for g in generations)), reverse=True)
    for start in range(end):
        if text[start].isspace() or (start and _is_word(text[start - 1])
                                     and _is_word(text[start])):
            continue
        for n in lengths:  # longest first
            stop = start + n
            if stop > end:
                continue
            if stop < end and _is_word(text[stop - 1]) and _is_word(text[stop]):
                continue
            window = text[start:stop]
            h = hash(window)
            if any(h in g.short_hashes and _digest(window) in g.short for g in generations):
                yield start, stop
                break


def _replace_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """`text` with each (start, end) span, merged where they overlap, replaced by REDACTED."""
    if not spans:
        return text
    out, cursor, open_start, open_end = [], 0, spans[0][0], spans[0][1]
    for start, end in spans[1:]:
        if start <= open_end:
            open_end = max(open_end, end)
            continue
        out += [text[cursor:open_start], REDACTED]
        cursor, open_start, open_end = open_end, start, end
    out += [text[cursor:open_start], REDACTED, text[open_end:]]
    return "".join(out)


# -- redaction by shape ------------------------------------------------------------------

_SECRET_KEYS = r"access[_-]?key[_-]?secret|security[_-]?token|oidc[_-]?token|signature"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # PEM private keys, whole.
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----",
                re.DOTALL), REDACTED),
    # Authorization headers in any spelling: "Authorization: acs AK:sig", "authorization : ..."
    (re.compile(r"""(?i)(authorization\\?["']?\s*[:=]\s*\\?["']?)[^\n"'\\]+"""),
     rf"\1{REDACTED}"),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/-]+=*"), rf"\1{REDACTED}"),
    # Key, separator, value: query (k=v, k%3Dv), JSON ("k": "v"), Python (k='v'), header (k: v).
    # A value ends at whitespace, a quote, a delimiter or an encoded "&" (%26).
    (re.compile(
        rf"""(?i)({_SECRET_KEYS})(\\?["']?\s*(?:=|%3D|:)\s*\\?["']?)"""
        r"""(?:[^\s"'&,;<>(){}\[\]%\\]|%(?!26)[0-9A-Fa-f]{2}|\\(?!["']))+"""),
     rf"\1\2{REDACTED}"),
    # JWTs (OIDC / ServiceAccount tokens): header.payload.signature, both JSON so "eyJ".
    (re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"), REDACTED),
    # Alibaba STS security tokens on their own.
    (re.compile(r"CAIS[A-Za-z0-9+/]{60,}={0,2}"), REDACTED),
)


def scrub_patterns(text: str) -> str:
    """`text` with credential-shaped material replaced (no registered values needed)."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


_DEFAULT = Redactor()


def default_redactor() -> Redactor:
    """The process-wide redactor that `register_secret` feeds and `setup_logging` uses."""
    return _DEFAULT


def register_secret(value: str | bytes) -> None:
    """Never log `value` (nor its escaped/base64 forms) from now on (a value shorter than
    MIN_SECRET_LENGTH: wherever it stands as a whole word in a log message; one character:
    not at all)."""
    _DEFAULT.register(value)


def hold_secret(owner: Hashable, value: str | bytes, *, keep: int = 2) -> None:
    """`owner` holds `value` (a credential): never log it while `owner` holds it and has
    not held `keep` newer values since; `release_secrets(owner)` forgets it."""
    _DEFAULT.hold(owner, value, keep=keep)


def release_secrets(owner: Hashable) -> int:
    """`owner` is gone: the values it held are no longer redacted (nothing holds them)."""
    return _DEFAULT.release(owner)


def scrub(text: str) -> str:
    """`text` as it would be logged: registered values and credential shapes redacted.

    Also for text that leaves the process another way (Event messages, status).
    """
    return _DEFAULT.scrub(text)
