"""Turn an ExternalSecret's spec and the values fetched from KMS into Secret data.

Why this module exists: deciding *what* a Secret should contain is the part of the
controller users reason about (jmesPath, extract, replaceRule, binary values, what
happens on failure), so it lives apart from all I/O and clocks, as one pure function
with exhaustive unit tests. ``render`` never raises for bad data: every problem is an
entry failure or a Secret problem, and no message ever quotes a secret value (parser
exception texts can quote documents, so they are never passed on).

Rules, following ack-secret-manager where users depend on it:

* A data entry without jmesPath writes the whole value under ``name``. With jmesPath
  it writes only the aliased keys; if any path fails the whole entry fails (the old
  controller silently wrote the raw value under ``name`` instead; we do not).
* Documents are parsed as JSON, else as YAML with YAML 1.2 style scalars: no
  timestamps, ``yes``/``on`` stay strings, and only plain decimal numbers are numbers
  (``0123`` and ``0x1F`` stay text as written).
* Result values: strings as they are; true/false; integers in decimal; floats in the
  shortest round-trip form ("3.0" gives "3"); null gives "null" (jmesPath: a failure);
  objects and arrays are encoded in the input's format, as ack-secret-manager does:
  compact JSON with sorted keys and Go's ``<``/``>``/``&`` escapes for JSON input,
  block YAML for YAML input.
* An extract writes each top-level key of the document (with jmesPath: the aliases),
  then applies its replaceRules in order to each key name with Go's
  ``ReplaceAllString`` semantics, including ``$1``, ``${1}``, ``$name`` and ``$$`` in
  the target (expanded here, not handed to Python's template syntax, so backslashes are
  literal and unknown groups expand to "" as in Go).
* Entries apply in spec order, data[] then dataProcess[]; a later entry wins a key.
* A failed entry keeps the keys it owned last time at their previous values. The
  ownership record (``{entry_id: [key, ...]}``, key names only) comes back in every
  result for the engine to store; with no record at all (first sync by this
  controller), a failed entry keeps the keys it would statically produce, and a failed
  extract keeps every previous key no successful entry produced.
* Secret-type requirements (tls, dockerconfigjson, basic-auth, ...) and the 1 MiB size
  limit are reported as ``problems`` so the engine can refuse the write with a clear
  status instead of an apiserver rejection.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jmespath
import yaml
from jmespath.exceptions import JMESPathError

from controller import gotemplate
from controller.api import (
    DataEntry,
    ExternalSecret,
    FetchKey,
    ReplaceRule,
    SpecError,
    key_name_problem,
)
from controller.externalsecret import templates

__all__ = [
    "DataType",
    "EntryResult",
    "EntryState",
    "FetchFailure",
    "FetchResult",
    "FetchedValue",
    "Ownership",
    "RenderResult",
    "content_hash",
    "ownership_from_json",
    "ownership_to_json",
    "render",
]

MAX_SECRET_SIZE = 1024 * 1024  # the apiserver's limit on the sum of value sizes
BUDGET_EXCEEDED = "BudgetExceeded"  # an entry's reason when the sync's budget stopped it
INVALID_KEY = "InvalidKey"  # an entry produced a name that cannot be a Secret key
JMES_PATH_NO_MATCH = "JMESPathNoMatch"  # a jmesPath selected nothing from the value
JMES_PATH_FAILED = "JMESPathFailed"  # a jmesPath could not be evaluated on the value


# ---------------------------------------------------------------- inputs and outputs


class DataType(StrEnum):
    TEXT = "text"
    BINARY = "binary"


@dataclass(frozen=True, slots=True)
class FetchedValue:
    """A KMS secret value as GetSecretValue returned it.

    ``value`` is the SecretData text (bytes are taken as its UTF-8 encoding); for
    ``DataType.BINARY`` that text is base64 and render decodes it.
    """

    value: str | bytes
    data_type: DataType = DataType.TEXT
    version_id: str = ""

    def __repr__(self) -> str:  # never show the value
        return f"FetchedValue(<{self.data_type.value}>, version_id={self.version_id!r})"


@dataclass(frozen=True, slots=True)
class FetchFailure:
    """Why a fetch failed: a short class ("NotFound", "AccessDenied", "Throttled") and a
    message without secret values or request ids."""

    reason: str
    message: str = ""


FetchResult = FetchedValue | FetchFailure
Ownership = dict[str, list[str]]  # entry_id -> Secret keys it produced (JSON-serialisable)


class EntryState(StrEnum):
    SYNCED = "Synced"
    FAILED = "Failed"


@dataclass(frozen=True, slots=True)
class EntryResult:
    entry_id: str
    secret_name: str  # the KMS secret
    version_id: str  # the version synced; "" when the entry failed
    state: EntryState
    reason: str = ""  # CamelCase class of the failure, "" when synced
    message: str = ""  # what went wrong and the fix; never a secret value
    keys: tuple[str, ...] = ()  # keys written (when failed: the keys kept)


@dataclass(frozen=True, slots=True)
class RenderResult:
    data: dict[str, bytes] = dataclasses.field(repr=False)  # desired data, sorted by key
    entries: tuple[EntryResult, ...] = ()
    ownership: Ownership = dataclasses.field(default_factory=dict)  # persist; pass back
    problems: tuple[SpecError, ...] = ()  # the Secret as rendered would be rejected
    # The Secret's labels and annotations from templates; None: the template's as written.
    labels: Mapping[str, str] | None = None
    annotations: Mapping[str, str] | None = None
    # The templates stopped at the sync's budget (the Secret must keep its data): which
    # template, which budget and the flag that raises it. Entries over budget fail instead.
    over_budget: SpecError | None = None

    @property
    def failed_entries(self) -> tuple[EntryResult, ...]:
        return tuple(e for e in self.entries if e.state is EntryState.FAILED)

    @property
    def ok(self) -> bool:
        """Nothing failed and the Secret may be written as is."""
        return not self.problems and not self.failed_entries


class _EntryFailed(Exception):
    """Internal: one entry cannot be rendered. The message must hold no secret value."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message


# ---------------------------------------------------------------- the function


def render(
    es: ExternalSecret,
    fetched: Mapping[FetchKey, FetchResult],
    previous: Mapping[str, bytes] | None = None,
    previous_ownership: Mapping[str, Sequence[str]] | None = None,
    sources: Mapping[templates.SourceKey, str | None] | None = None,
    previous_metadata: tuple[Mapping[str, str], Mapping[str, str]] | None = None,
    budget: gotemplate.SyncBudget | None = None,
) -> RenderResult:
    """Desired Secret data for ``es`` from the ``fetched`` values, then its templates.

    ``previous`` is the data this controller last wrote (the Secret's current data
    when it owns the Secret); ``previous_ownership`` the ownership record from the
    last result, or None when there is none; ``sources`` the texts of templateFrom's
    ConfigMap and Secret keys (None: missing); ``previous_metadata`` the Secret's current
    (labels, annotations), kept for templated ones when an entry fails; ``budget`` the
    sync's (parsing fetched values, jmesPath results and every template charge it; a default
    one when None).
    """
    budget = budget if budget is not None else gotemplate.SyncBudget()
    result = _render_fetched(es, fetched, previous, previous_ownership, budget)
    if not es.spec.target.template.templated:
        return result
    return _templated(es, result, previous or {}, previous_ownership, sources or {},
                      previous_metadata or ({}, {}), budget)


def _templated(es: ExternalSecret, result: RenderResult, old: Mapping[str, bytes],
               previous_ownership: Mapping[str, Sequence[str]] | None,
               sources: Mapping[templates.SourceKey, str | None],
               previous_metadata: tuple[Mapping[str, str], Mapping[str, str]],
               budget: gotemplate.SyncBudget) -> RenderResult:
    template = es.spec.target.template
    if result.failed_entries:
        # Templates need every value: the Secret keeps what the last sync wrote.
        kept = dict(sorted(old.items()))
        labels, annotations = (
            {k: (previous_metadata[i].get(k, "") if "{{" in v else v)
             for k, v in items.items() if "{{" not in v or k in previous_metadata[i]}
            for i, items in enumerate((template.labels, template.annotations)))
        return dataclasses.replace(result, data=kept,
                                   ownership={templates.TEMPLATE_ENTRY: sorted(kept)},
                                   labels=labels, annotations=annotations, problems=())
    try:
        out = templates.apply(template, result.data, sources, budget)
    except templates.TemplateProblem as problem:
        error = SpecError(problem.field, problem.message, problem.fix,
                          f"ExternalSecret {es.qualified_name}")
        if problem.budget is not None:
            return dataclasses.replace(result, over_budget=error)
        return dataclasses.replace(result, problems=(*result.problems, error))
    return dataclasses.replace(
        result, data=out.data, ownership={templates.TEMPLATE_ENTRY: sorted(out.data)},
        labels=out.labels, annotations=out.annotations,
        problems=_secret_problems(es, out.data, []))


def _render_fetched(
    es: ExternalSecret,
    fetched: Mapping[FetchKey, FetchResult],
    previous: Mapping[str, bytes] | None,
    previous_ownership: Mapping[str, Sequence[str]] | None,
    budget: gotemplate.SyncBudget,
) -> RenderResult:
    old = previous or {}
    data: dict[str, bytes] = {}
    results: list[EntryResult] = []
    ownership: Ownership = {}
    superset_ids: list[str] = []
    for entry, rules in _entries_with_rules(es):
        try:
            produced, version = _render_entry(entry, rules, fetched.get(entry.fetch_key),
                                              budget)
        except _EntryFailed as failure:
            kept = _kept_keys(entry, rules, old, previous_ownership)
            if kept is None:
                superset_ids.append(entry.entry_id)
                kept = []
            data.update((k, old[k]) for k in kept)
            ownership[entry.entry_id] = kept
            results.append(EntryResult(entry.entry_id, entry.key, "", EntryState.FAILED,
                                       failure.reason, failure.message, tuple(kept)))
            continue
        data.update(produced)
        ownership[entry.entry_id] = sorted(produced)
        results.append(EntryResult(entry.entry_id, entry.key, version, EntryState.SYNCED,
                                   keys=tuple(sorted(produced))))
    if superset_ids:
        results = _keep_unclaimed(old, data, ownership, results, superset_ids)
    final = dict(sorted(data.items()))
    failed = [r.entry_id for r in results if r.state is EntryState.FAILED]
    return RenderResult(final, tuple(results), ownership, _secret_problems(es, final, failed))


def _entries_with_rules(es: ExternalSecret) -> list[tuple[DataEntry, tuple[ReplaceRule, ...]]]:
    pairs: list[tuple[DataEntry, tuple[ReplaceRule, ...]]] = [(e, ()) for e in es.spec.data]
    pairs += [(p.extract, p.replace_rules) for p in es.spec.data_process if p.extract]
    return pairs


def _kept_keys(
    entry: DataEntry,
    rules: tuple[ReplaceRule, ...],
    old: Mapping[str, bytes],
    ownership: Mapping[str, Sequence[str]] | None,
) -> list[str] | None:
    """Keys a failed entry keeps; None: every previous key nobody else produced."""
    if ownership is not None:
        owned = ownership.get(entry.entry_id, ())
    elif entry.jmes_path:
        owned = [item.object_alias for item in entry.jmes_path]
    elif not entry.is_extract:
        owned = [entry.name]
    else:
        return None  # an extract's keys depend on the document: keep all unclaimed
    if rules and ownership is None:
        owned = [_rename(k, rules) for k in owned]
    return sorted(k for k in set(owned) if k in old)


def _keep_unclaimed(
    old: Mapping[str, bytes],
    data: dict[str, bytes],
    ownership: Ownership,
    results: list[EntryResult],
    superset_ids: list[str],
) -> list[EntryResult]:
    unclaimed = sorted(k for k in old if k not in data)
    data.update((k, old[k]) for k in unclaimed)
    for entry_id in superset_ids:
        ownership[entry_id] = list(unclaimed)
    keys = tuple(unclaimed)
    return [dataclasses.replace(r, keys=keys) if r.entry_id in superset_ids else r
            for r in results]


# ---------------------------------------------------------------- one entry


def _render_entry(
    entry: DataEntry, rules: tuple[ReplaceRule, ...], result: FetchResult | None,
    budget: gotemplate.SyncBudget,
) -> tuple[dict[str, bytes], str]:
    """The keys one entry produces and the version they came from, or _EntryFailed."""
    if result is None:
        raise _EntryFailed("NotFetched", f"the value of KMS secret {entry.key!r} was not "
                           "fetched; it is retried on the next sync")
    if isinstance(result, FetchFailure):
        raise _EntryFailed(result.reason or "FetchFailed", result.message or
                           f"reading KMS secret {entry.key!r} failed")
    raw = _raw_bytes(entry, result)
    if entry.jmes_path:
        produced = _apply_jmes_path(entry, raw, budget)
    elif entry.is_extract:
        produced = _extract(entry, raw, budget)
    else:
        produced = {entry.name: raw}
    if rules:
        produced = {_rename(k, rules): v for k, v in produced.items()}
    _check_keys(entry, produced)
    return produced, result.version_id


def _raw_bytes(entry: DataEntry, result: FetchedValue) -> bytes:
    value = result.value
    if result.data_type is not DataType.BINARY:
        return value.encode() if isinstance(value, str) else value
    text = value if isinstance(value, str) else value.decode("ascii", "replace")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _EntryFailed("InvalidBinary", f"KMS secret {entry.key!r} is of type binary "
                           "but its value is not valid base64") from None


MAX_BAD_KEYS_NAMED = 20  # a message names this many bad keys, then counts the rest


def _key_label(entry: DataEntry, position: int, key: str) -> str:
    """How a message names a bad key: the spec's own text (name, objectAlias) quoted; a key
    read from the fetched document (extract) by its position and a short hash only, since
    the document is the tenant's secret."""
    if not entry.is_extract:
        return repr(key[:80])
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"key #{position + 1} of the document (sha256 {digest}, {len(key)} characters)"


def _check_keys(entry: DataEntry, produced: Mapping[str, bytes]) -> None:
    """Every key the entry produces must be a valid Secret key; the failure names each bad
    key (up to MAX_BAD_KEYS_NAMED, then how many more) with what is wrong with it."""
    bad = [(position, key, problem) for position, key in enumerate(produced)
           if (problem := key_name_problem(key)) is not None]
    if not bad:
        return
    fix = ("add a replaceRule to rename them, e.g. source '[^-._a-zA-Z0-9]' target '_'"
           if entry.is_extract else "set name or objectAlias to a valid key")
    named = "; ".join(f"{_key_label(entry, position, key)} ({problem})"
                      for position, key, problem in bad[:MAX_BAD_KEYS_NAMED])
    more = f"; and {len(bad) - MAX_BAD_KEYS_NAMED} more" if len(bad) > MAX_BAD_KEYS_NAMED \
        else ""
    what = "a Secret key that is" if len(bad) == 1 else f"{len(bad)} Secret keys that are"
    raise _EntryFailed(INVALID_KEY, f"{entry.spec_field} produces {what} not valid: "
                       f"{named}{more}. Fix: {fix}")


# ---------------------------------------------------------------- jmesPath and extract


def _apply_jmes_path(entry: DataEntry, raw: bytes,
                     budget: gotemplate.SyncBudget) -> dict[str, bytes]:
    document, is_json = _parse_document(entry, raw, budget)
    if not isinstance(document, dict | list):
        raise _EntryFailed("NotAnObject", f"the value of KMS secret {entry.key!r} is not a "
                           "JSON or YAML object or array, so jmesPath cannot select from it")
    produced: dict[str, bytes] = {}
    for item in entry.jmes_path:
        try:
            found = _BudgetedInterpreter(budget).visit(_compiled(item.path).parsed, document)
        except gotemplate.BudgetExceeded as exceeded:
            raise _over_budget(entry, exceeded) from None
        except (JMESPathError, ValueError, TypeError, RecursionError) as exc:
            raise _EntryFailed(JMES_PATH_FAILED, f"jmesPath {item.path!r} could not be "
                               f"evaluated ({type(exc).__name__})") from None
        if found is None:
            raise _EntryFailed(JMES_PATH_NO_MATCH, f"jmesPath {item.path!r} (objectAlias "
                               f"{item.object_alias!r}) matches nothing in KMS secret "
                               f"{entry.key!r}; check the path against the secret's structure")
        produced[item.object_alias] = _value_bytes(entry, found, is_json, budget)
    return produced


@functools.lru_cache(maxsize=1024)
def _compiled(path: str) -> Any:
    return jmespath.compile(path)


def _shallow_cost(value: object) -> int:
    """The bytes a function may build from one argument: a new list or map of its size, or
    a new string of its length."""
    if isinstance(value, list | dict):
        return 64 + len(value) * _SLOT
    if isinstance(value, str):
        return 4 * len(value) + gotemplate.STR_OVERHEAD
    return 64


_SLOT = 104  # a dict slot (a list's is smaller): the larger bounds both


class _BudgetedFunctions(jmespath.functions.Functions):  # type: ignore[misc]
    """JMESPath's functions, each call's result reserved before it is built: a new list,
    map or string the size of its arguments, and for to_string and contains (which walk
    the whole value, shared parts at every use) the value's expanded size."""

    def __init__(self, budget: gotemplate.SyncBudget) -> None:
        super().__init__()
        self.budget = budget

    def call_function(self, function_name: str, resolved_args: list[Any]) -> Any:
        self.budget.charge(1 + sum(len(a) // 16 for a in resolved_args
                                   if isinstance(a, list | dict | str)))
        self.budget.reserve(sum(_shallow_cost(a) for a in resolved_args))
        if function_name in ("to_string", "contains", "sort", "sort_by", "max_by", "min_by",
                             "max", "min"):
            for arg in resolved_args:
                if isinstance(arg, list | dict):
                    self.budget.reserve(gotemplate.value_cost(arg, self.budget.room))
        return super().call_function(function_name, resolved_args)


class _BudgetedInterpreter(jmespath.visitor.TreeInterpreter):  # type: ignore[misc]
    """jmespath's evaluator with every node charged a step and every list or map it builds
    reserved before it is built. Without it, a 200-character path of pipes (`[@,@]|[@,@]|...`)
    shares one document 2^n times and `[]` or to_string() expands it: 4 million items and
    19 s of CPU from 22 pipes."""

    def __init__(self, budget: gotemplate.SyncBudget) -> None:
        super().__init__(jmespath.Options(custom_functions=_BudgetedFunctions(budget)))
        self.budget = budget

    def visit(self, node: Any, *args: Any, **kwargs: Any) -> Any:
        self.budget.charge(1)
        return super().visit(node, *args, **kwargs)

    def _reserve_list(self, items: int) -> None:
        # a list object and its slots, grown by appends (up to an eighth more, and four spare)
        self.budget.charge(items // 16)
        self.budget.reserve(96 + 10 * items)

    def visit_comparator(self, node: Any, value: Any) -> Any:
        # == walks both sides whole (shared parts at every use): steps for their size first
        left = self.visit(node["children"][0], value)
        if isinstance(left, list | dict):
            limit = 64 * (self.budget.max_steps - self.budget.steps) + 64
            self.budget.charge(gotemplate.value_cost(left, limit) // 64)
        return super().visit_comparator(node, value)

    def visit_flatten(self, node: Any, value: Any) -> Any:
        base = self.visit(node["children"][0], value)
        if not isinstance(base, list):
            return None
        self._reserve_list(sum(len(e) if isinstance(e, list) else 1 for e in base))
        merged: list[Any] = []
        for element in base:
            if isinstance(element, list):
                merged.extend(element)
            else:
                merged.append(element)
        return merged

    def _project(self, base: Any, node: Any, keep: Any = None) -> list[Any]:
        self._reserve_list(len(base))
        collected = []
        for element in base:
            if keep is not None and not self._is_true(self.visit(keep, element)):
                continue
            current = self.visit(node["children"][1], element)
            if current is not None:
                collected.append(current)
        return collected

    def visit_projection(self, node: Any, value: Any) -> Any:
        base = self.visit(node["children"][0], value)
        return self._project(base, node) if isinstance(base, list) else None

    def visit_value_projection(self, node: Any, value: Any) -> Any:
        base = self.visit(node["children"][0], value)
        if not isinstance(base, dict):
            return None
        self._reserve_list(len(base))  # the values' list
        return self._project(list(base.values()), node)

    def visit_filter_projection(self, node: Any, value: Any) -> Any:
        base = self.visit(node["children"][0], value)
        if not isinstance(base, list):
            return None
        return self._project(base, node, keep=node["children"][2])

    def visit_multi_select_list(self, node: Any, value: Any) -> Any:
        self._reserve_list(len(node["children"]))
        return super().visit_multi_select_list(node, value)

    def visit_multi_select_dict(self, node: Any, value: Any) -> Any:
        self.budget.reserve(64 + _SLOT * len(node["children"]))
        return super().visit_multi_select_dict(node, value)

    def visit_slice(self, node: Any, value: Any) -> Any:
        if isinstance(value, list):
            self._reserve_list(len(value))
        return super().visit_slice(node, value)


def _extract(entry: DataEntry, raw: bytes, budget: gotemplate.SyncBudget) -> dict[str, bytes]:
    document, is_json = _parse_document(entry, raw, budget)
    if not isinstance(document, dict):
        raise _EntryFailed("NotAnObject", f"the value of KMS secret {entry.key!r} is not a "
                           "JSON or YAML object, so extract cannot split it into keys")
    return {_scalar_text(k): _value_bytes(entry, v, is_json, budget)
            for k, v in document.items()}


def _over_budget(entry: DataEntry, exceeded: gotemplate.BudgetExceeded) -> _EntryFailed:
    what = "memory" if exceeded.resource == "bytes" else "evaluation steps"
    return _EntryFailed(BUDGET_EXCEEDED, f"{entry.spec_field}: parsing or encoding the value "
                        f"of KMS secret {entry.key!r} would exceed the sync's {what} budget "
                        f"({exceeded.limit} {exceeded.resource}; YAML aliases count at their "
                        "expanded size); its keys keep their last synced value. Store a "
                        f"smaller document, or ask the operator to raise {exceeded.flag}")


def _parse_document(entry: DataEntry, raw: bytes,
                    budget: gotemplate.SyncBudget) -> tuple[object, bool]:
    """The parsed value and whether it was JSON. Never quotes the value in errors. The
    parse's bytes (and for YAML, what its aliases expand to) are reserved first."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _EntryFailed("NotText", f"the value of KMS secret {entry.key!r} is not UTF-8 "
                           "text, so it cannot be parsed as JSON or YAML") from None
    try:
        budget.reserve(gotemplate.JSON_PARSE_FACTOR * len(text) * (1 if text.isascii() else 4))
        budget.charge(len(text) // 64)
        try:
            return json.loads(text), True
        except (ValueError, RecursionError):
            pass
        try:
            return gotemplate.load_yaml_bounded(text, _YAML12Loader, budget), False
        except (yaml.YAMLError, ValueError, RecursionError):
            raise _EntryFailed("InvalidDocument", f"the value of KMS secret {entry.key!r} is "
                               "neither valid JSON nor valid YAML") from None
    except gotemplate.BudgetExceeded as exceeded:
        raise _over_budget(entry, exceeded) from None


def _value_bytes(entry: DataEntry, value: object, is_json: bool,
                 budget: gotemplate.SyncBudget) -> bytes:
    """A selected value's bytes; an object or array's encoding is reserved first, its shared
    parts (YAML aliases, jmesPath multiselects) counted at every use."""
    try:
        if isinstance(value, dict | list):
            cost = gotemplate.value_cost(value, budget.room)
            # JSON: the plain copy and the text; YAML: PyYAML's dumper (about 5.5x, measured)
            budget.reserve(cost * (2 if is_json else 8))
            return _encode(value, is_json).encode()
        text = _scalar_text(value)
        budget.reserve(2 * 4 * len(text) + gotemplate.STR_OVERHEAD)
        return text.encode()
    except gotemplate.BudgetExceeded as exceeded:
        raise _over_budget(entry, exceeded) from None


def _scalar_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return _float_text(value)
    return str(value)


def _float_text(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


_GO_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                    "\u2028": "\\u2028", "\u2029": "\\u2029"}
_GO_JSON_ESCAPE = re.compile("[<>&\u2028\u2029]")


def _encode(value: object, is_json: bool) -> str:
    plain = _plain(value)
    if not is_json:
        return yaml.safe_dump(plain, default_flow_style=False, allow_unicode=True,
                              sort_keys=True)
    text = json.dumps(plain, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return _GO_JSON_ESCAPE.sub(lambda m: _GO_JSON_ESCAPES[m.group(0)], text)


def _plain(value: object) -> object:
    """JSON-able copy: string keys, and odd YAML types (dates, bytes, sets) as text."""
    if isinstance(value, dict):
        return {_scalar_text(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)  # Go encodes float64(1) as 1
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)


# ---------------------------------------------------------------- YAML 1.2 core scalars


class _YAML12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema plain scalars, like Go's yaml.v3 mostly.

    PyYAML's YAML 1.1 rules would turn "on" into True, "12:30" into 750, "0123" into
    83 and "2024-01-01" into a date, changing secret values silently. Only plain
    decimal numbers become numbers; "0x1F", "0o17" and "0123" stay text as written.
    """

    yaml_implicit_resolvers: dict[Any, Any] = {}  # replaced wholesale, see below


def _install_yaml12_resolvers() -> None:
    tag = "tag:yaml.org,2002:"
    rules = [
        ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
        ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
        ("int", r"^[-+]?(?:0|[1-9][0-9]*)$", "-+0123456789"),
        ("float", r"^(?:[-+]?(?:\.[0-9]+|(?:0|[1-9][0-9]*)(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                  r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+.0123456789"),
        ("merge", r"^(?:<<)$", "<"),
    ]
    for name, pattern, first in rules:
        _YAML12Loader.add_implicit_resolver(tag + name, re.compile(pattern), list(first))


_install_yaml12_resolvers()


# ---------------------------------------------------------------- replaceRule


def _rename(key: str, rules: tuple[ReplaceRule, ...]) -> str:
    for rule in rules:
        key = _replace_all(rule, key)
    return key


def _replace_all(rule: ReplaceRule, key: str) -> str:
    """Go's Regexp.ReplaceAllString: no replacement for an empty match right after a match."""
    last_end = 0

    def substitute(match: Any) -> str:
        nonlocal last_end
        fresh = match.end() > last_end or match.start() == 0
        last_end = match.end()
        return _expand(rule.target, match) if fresh else str(match.group(0))

    return str(rule.pattern.sub(substitute, key))


def _expand(template: str, match: Any) -> str:
    """Go's Regexp.Expand: $1, ${1}, $name, ${name}, $$; anything malformed is literal."""
    out: list[str] = []
    rest = template
    while True:
        before, dollar, rest = rest.partition("$")
        out.append(before)
        if not dollar:
            return "".join(out)
        if rest.startswith("$"):
            out.append("$")
            rest = rest[1:]
            continue
        reference = _group_reference(rest)
        if reference is None:
            out.append("$")
            continue
        name, rest = reference
        out.append(_group_text(match, name))


def _group_reference(text: str) -> tuple[str, str] | None:
    braced = text.startswith("{")
    body = text[1:] if braced else text
    end = 0
    while end < len(body) and (body[end].isalnum() or body[end] == "_"):
        end += 1
    if end == 0 or (braced and body[end : end + 1] != "}"):
        return None
    return body[:end], body[end + 1 if braced else end :]


def _group_text(match: Any, name: str) -> str:
    numeric = name.isascii() and name.isdigit() and len(name) <= 8
    if numeric and not (name.startswith("0") and len(name) > 1):
        number = int(name)
        return (match.group(number) or "") if number <= match.re.groups else ""
    index = match.re.groupindex.get(name)
    return (match.group(index) or "") if index is not None else ""


# ---------------------------------------------------------------- Secret checks


_REQUIRED_KEYS: dict[str, tuple[tuple[str, ...], bool]] = {
    # type: (keys, whether all are needed rather than any one)
    "kubernetes.io/tls": (("tls.crt", "tls.key"), True),
    "kubernetes.io/dockerconfigjson": ((".dockerconfigjson",), True),
    "kubernetes.io/dockercfg": ((".dockercfg",), True),
    "kubernetes.io/basic-auth": (("username", "password"), False),
    "kubernetes.io/ssh-auth": (("ssh-privatekey",), True),
}
_JSON_KEYS = {"kubernetes.io/dockerconfigjson": ".dockerconfigjson",
              "kubernetes.io/dockercfg": ".dockercfg"}
_SA_ANNOTATION = "kubernetes.io/service-account.name"


def _secret_problems(
    es: ExternalSecret, data: Mapping[str, bytes], failed: list[str]
) -> tuple[SpecError, ...]:
    secret_type = es.spec.secret_type
    field = "spec.target.template.type" if es.spec.target.template.type else "spec.type"
    obj = f"ExternalSecret {es.qualified_name}"
    hint = (f"entries {', '.join(failed)} failed and may be why; otherwise " if failed else "")
    problems: list[SpecError] = []
    keys, need_all = _REQUIRED_KEYS.get(secret_type, ((), True))
    missing = [k for k in keys if k not in data]
    if missing and (need_all or len(missing) == len(keys)):
        wanted = " and ".join(keys) if need_all else " or ".join(keys)
        problems.append(SpecError(field, f"is {secret_type}, which needs {wanted}, but the "
                                  f"rendered data lacks {', '.join(missing)}",
                                  f"{hint}add entries that produce them or change the type",
                                  obj))
    json_key = _JSON_KEYS.get(secret_type)
    if json_key is not None and json_key in data and not _is_json(data[json_key]):
        problems.append(SpecError(field, f"is {secret_type}, but key {json_key} is not valid "
                                  "JSON", "store a docker config JSON document in KMS", obj))
    if secret_type == "kubernetes.io/service-account-token" and (
            _SA_ANNOTATION not in es.spec.target.template.annotations):
        problems.append(SpecError(field, f"is {secret_type}, which needs the annotation "
                                  f"{_SA_ANNOTATION}", "add it under target.template."
                                  "metadata.annotations or use another type", obj))
    size = sum(len(v) for v in data.values())
    if size > MAX_SECRET_SIZE:
        problems.append(SpecError("spec.data", f"renders {size} bytes, over the 1 MiB Secret "
                                  "limit", "split the values over several ExternalSecrets",
                                  obj))
    return tuple(problems)


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return True


# ---------------------------------------------------------------- helpers for the engine


def content_hash(
    data: Mapping[str, bytes],
    secret_type: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
) -> str:
    """sha256 (hex) of a canonical form of a Secret's content; key order does not matter."""
    canonical = {
        "type": secret_type,
        "labels": dict(sorted(labels.items())),
        "annotations": dict(sorted(annotations.items())),
        "data": {k: base64.b64encode(v).decode() for k, v in sorted(data.items())},
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


def ownership_to_json(ownership: Mapping[str, Sequence[str]]) -> str:
    """Compact, stable JSON for the ownership annotation (key names only)."""
    record = {entry: sorted(set(keys)) for entry, keys in sorted(ownership.items())}
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


def ownership_from_json(text: str | None) -> Ownership | None:
    """Read the ownership annotation; None when absent or unreadable (treated as no record)."""
    if not text:
        return None
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    return {
        str(entry): [k for k in keys if isinstance(k, str)]
        for entry, keys in record.items()
        if isinstance(keys, list)
    }
