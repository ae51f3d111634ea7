"""The API's shared toolkit: the bounds every resource shares, the spec error that names the
object, the field and the fix, durations, names, Go regular expressions, and the readers of raw
dicts that collect every problem while parsing goes on. The parsers of each resource
(externalsecret.py, secretstore.py, clusterexternalsecret.py) are built from these, and
hack/gen_crds.py takes the same bounds and patterns into the CRD schema.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import re2

# Bounds on one object. hack/gen_crds.py puts these same constants (and the patterns below)
# into the CRD schema; tests/unit/test_crd_schema.py checks each one is on the fields it governs.
MAX_FIELD_LENGTH = 4096  # any string field (PEM CAs excepted: MAX_PEM_LENGTH)
MAX_PEM_LENGTH = 65536
MAX_DATA = 100  # spec.data items
MAX_DATA_PROCESS = 20  # spec.dataProcess items
MAX_JMES_PATHS = 100  # jmesPath items of one entry
MAX_REPLACE_RULES = 50  # replaceRule items of one dataProcess
MAX_TEMPLATE_ITEMS = 64  # labels, annotations, data templates, templateFrom items
MAX_TEMPLATE_FROM = 16  # spec.target.template.templateFrom


@dataclass(frozen=True, slots=True)
class IntervalBounds:
    """The refreshInterval range the operator allows (seconds); 0 (never poll) is always
    allowed."""

    minimum: float = 10.0
    maximum: float = 30 * 24 * 3600.0


DEFAULT_BOUNDS = IntervalBounds()


# ---------------------------------------------------------------- errors


class SpecError(Exception):
    """A problem in a user's spec: which object, which field, what is wrong, the fix.

    ``message`` is a predicate that reads after the field name ("is required"), and
    ``fix`` an instruction ("set it to ..."). ``errors`` holds every problem found in
    the same object when this one is raised by a parse function.
    """

    def __init__(self, field: str, message: str, fix: str, obj: str = "") -> None:
        self.field = field
        self.message = message
        self.fix = fix
        self.obj = obj
        self.errors: tuple[SpecError, ...] = (self,)
        super().__init__(field, message, fix, obj)

    def sentence(self) -> str:
        """This problem alone, as one sentence."""
        where = f"{self.obj}: " if self.obj else ""
        return f"{where}{self.field} {self.message}; {self.fix.rstrip('.')}."

    def __str__(self) -> str:
        others = [e.field for e in self.errors if e is not self]
        if not others:
            return self.sentence()
        return f"{self.sentence()} ({len(others)} more: {', '.join(others)})"


class UnsupportedSpecError(SpecError):
    """A valid ack-secret-manager setting that this release does not implement."""


# ---------------------------------------------------------------- durations

_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6,
    "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_MAX_DURATION_SECONDS = (2**63 - 1) / 1e9
# The intervals a spec may give (what the CRD accepts): a Go duration parse_duration reads
# that is not negative, in ASCII digits; "0" (never poll) included, and "" (the default).
INTERVAL_PATTERN = (r"^(\+?(0|(([0-9]+\.?[0-9]*|\.[0-9]+)("
                    + "|".join(sorted(_DURATION_UNITS, key=len, reverse=True)) + r"))+))?$")


def parse_duration(text: str) -> float:
    """Seconds in a Go ``time.ParseDuration`` string ("1h30m", "500ms", "-2s", "0").

    Raises ValueError for anything Go would reject (including "", "10" and "1d").
    """
    rest = text
    sign = 1.0
    if rest and rest[0] in "+-":
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total, pos = 0.0, 0
    while pos < len(rest):
        part = _DURATION_PART.match(rest, pos)
        if part is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(part.group(1)) * _DURATION_UNITS[part.group(2)]
        pos = part.end()
    if total > _MAX_DURATION_SECONDS:
        raise ValueError(f"duration {text!r} is out of range")
    return sign * total


# ---------------------------------------------------------------- key names

KEY_NAME_PATTERN = r"^[-._a-zA-Z0-9]+$"  # a Secret data key (with the rules below)
_KEY_NAME = re.compile(KEY_NAME_PATTERN)
MAX_NAME_LENGTH = 253  # a Secret data key, and an object name (DNS subdomain)


def key_name_problem(key: str) -> str | None:
    """Why ``key`` cannot be a Kubernetes Secret data key, or None if it can.

    Same rules as the apiserver's IsConfigMapKey.
    """
    if not key:
        return "is empty"
    if len(key) > MAX_NAME_LENGTH:
        return f"is {len(key)} characters long (at most {MAX_NAME_LENGTH} allowed)"
    if not _KEY_NAME.fullmatch(key):
        return "may contain only letters, digits, '-', '_' and '.'"
    if key in (".", "..") or key.startswith(".."):
        return "must not be '.' or '..' or start with '..'"
    return None


DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_DNS_SUBDOMAIN = re.compile(DNS_SUBDOMAIN_PATTERN)


def dns_name_problem(name: str) -> str | None:
    if len(name) > MAX_NAME_LENGTH or not _DNS_SUBDOMAIN.fullmatch(name):
        return "is not a valid Secret name (lower-case letters, digits, '-' and '.')"
    return None


# ---------------------------------------------------------------- Go regexps

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a tenant's bad pattern is reported in its status instead

GoRegexp = Any  # a compiled google-re2 pattern (search, sub, finditer, groups, groupindex)


def compile_go_regexp(source: str) -> GoRegexp:
    """Compile a pattern written for Go's RE2 with RE2 itself (google-re2): the same syntax
    (POSIX classes, \\Q..\\E, \\z, (?<name>...), Unicode classes, (?U)) and matching in
    linear time, so no tenant's pattern can backtrack a worker into a stall.
    ValueError with a readable reason when it does not compile."""
    if len(source) > MAX_FIELD_LENGTH:
        raise ValueError(f"the pattern is {len(source)} characters long")
    try:
        return re2.compile(source, options=_RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
        raise ValueError(text[:200]) from None


def format_duration(seconds: float) -> str:
    """A short Go-style duration for messages: 10s, 1m30s, 720h, 500ms."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "",
             f"{secs}s" if secs or whole == 0 else ""]
    return "".join(parts) or "0s"



# ---------------------------------------------------------------- reading raw dicts


class Problems:
    """Collects SpecErrors for one object while parsing continues."""

    def __init__(self, obj: str) -> None:
        self.obj = obj
        self.found: list[SpecError] = []
        self.notices: list[str] = []

    def add(self, field: str, message: str, fix: str, kind: type[SpecError] = SpecError) -> None:
        self.found.append(kind(field, message, fix, self.obj))

    def raise_if_any(self) -> None:
        if self.found:
            first = self.found[0]
            first.errors = tuple(self.found)
            raise first


def as_mapping(raw: object, field: str, p: Problems) -> Mapping[str, object]:
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return raw
    p.add(field, "must be an object", "write it as a mapping of fields (name: value)")
    return {}


def as_items(raw: object, field: str, p: Problems, limit: int = 0,
             fix: str = "split the work over several ExternalSecrets") -> list[object]:
    """A list (or [] and a problem); past `limit` items, a problem with `fix` and the first
    `limit` items."""
    if raw is None:
        return []
    if isinstance(raw, list):
        if limit and len(raw) > limit:
            p.add(field, f"has {len(raw)} items (at most {limit} allowed)", fix)
            return raw[:limit]
        return raw
    p.add(field, "must be a list", "write it as a YAML list (lines starting with '- ')")
    return []


def read_text(m: Mapping[str, object], key: str, field: str, p: Problems,
          limit: int = MAX_FIELD_LENGTH) -> str:
    value = m.get(key)
    if value is None or isinstance(value, str):
        if value and len(value) > limit:
            p.add(f"{field}.{key}", f"is {len(value)} characters long (at most {limit} "
                  "allowed)", "shorten it")
            return ""
        return value or ""
    p.add(f"{field}.{key}", "must be a string", f'quote the value: {key}: "{str(value)[:40]}"')
    return ""


def read_flag(m: Mapping[str, object], key: str, field: str, p: Problems) -> bool:
    value = m.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    p.add(f"{field}.{key}", "must be true or false", "write true or false without quotes")
    return False


def as_strings(raw: object, field: str, p: Problems, limit: int = 0,
               fix: str = "split the work over several ExternalSecrets") -> tuple[str, ...]:
    """A list of strings; with `limit`, at most that many, each at most MAX_FIELD_LENGTH long."""
    values = as_items(raw, field, p, limit, fix)
    out = []
    for i, value in enumerate(values):
        if not isinstance(value, str):
            p.add(f"{field}[{i}]", "must be a string", "quote the value")
        elif limit and len(value) > MAX_FIELD_LENGTH:
            p.add(f"{field}[{i}]", f"is longer than {MAX_FIELD_LENGTH} characters", "shorten it")
        else:
            out.append(value)
    return tuple(out)


def as_string_map(raw: object, field: str, p: Problems, limit: int = 0) -> dict[str, str]:
    m = as_mapping(raw, field, p)
    if limit and len(m) > limit:
        p.add(field, f"has {len(m)} entries (at most {limit} allowed)", "remove some")
        return {}
    for key, value in m.items():
        if not isinstance(value, str):
            p.add(f"{field}.{key}", "must be a string", "quote the value")
        elif limit and (len(value) > MAX_FIELD_LENGTH or len(str(key)) > MAX_FIELD_LENGTH):
            p.add(f"{field}.{str(key)[:63]}", f"is longer than {MAX_FIELD_LENGTH} characters",
                  "shorten it")
            return {}
    return {str(k): v for k, v in m.items() if isinstance(v, str)}


_E = TypeVar("_E", bound=StrEnum)


def read_choice(enum: type[_E], text: str, default: _E, field: str, p: Problems) -> _E:
    if not text:
        return default
    try:
        return enum(text)
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        p.add(field, f"must be one of {allowed} (got {text!r})",
              f"use one of {allowed}, or leave it out for {default.value}")
        return default


def metadata_of(obj: Mapping[str, object]) -> Mapping[str, object]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def meta_text(meta: Mapping[str, object], key: str) -> str:
    value = meta.get(key)
    return value if isinstance(value, str) else ""


def meta_int(meta: Mapping[str, object], key: str) -> int:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
