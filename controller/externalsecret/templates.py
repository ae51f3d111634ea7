"""`spec.target.template` applied to rendered Secret data: Go templates (controller/gotemplate)
over the fetched values, for data keys, templateFrom sources and the Secret's labels and
annotations. Pure: the caller reads templateFrom's ConfigMaps and Secrets and passes their text.

Rules (ack-secret-manager v0.6's, made safe):
- The templates' dot is the fetched data (key -> value). A missing key is an error (External
  Secrets Operator's choice; Go's `<no value>` would be written into the Secret silently).
- `mergePolicy: Replace` (default): when a data template or a Data templateFrom exists, the
  Secret holds only the templates' output; `Merge`: the fetched keys too (outputs win).
- templateFrom: `configMap` / `secret` items render each key's text (`templateAs: Values`, the
  output under the item's key; `KeysAndValues`, each `key=value` line of the output is a key);
  `literal` renders under the key `literal`; `target` Labels / Annotations put the output in
  the Secret's metadata instead.
- Any failed entry: templates need every value, so the Secret keeps what the last sync wrote.
- A template error, a missing source, an invalid output key or label value, or a reserved
  label/annotation is a problem that names the field: the Secret is not written. Errors name
  the template, line and column, never a value; an output key or label name (which a template
  computes, so it may hold a value) is named by the template that produced it, its position
  and a short keyed hash, never by its text.
- Budget: every template of one sync (data, templateFrom items, metadata), the copy of the
  fetched data they read and what is built from their outputs charge one
  gotemplate.SyncBudget (docs/security.md, "Budgets"); exceeding it is a problem with
  ``budget`` set, naming the template and the flag that raises the budget.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
from collections.abc import Mapping

from controller import api, gotemplate

SourceKey = tuple[str, str, str]  # (configMap | secret, name, key)
TEMPLATE_ENTRY = "template"  # the ownership record's name for templated keys
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_QUALIFIED = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
# Keys the short hashes of output names in messages: stable for the life of the process (two
# messages about the same key match), useless for guessing a low-entropy value offline.
_NAME_HASH_KEY = secrets.token_bytes(16)


@dataclasses.dataclass(frozen=True)
class Output:
    data: dict[str, bytes]
    labels: dict[str, str]
    annotations: dict[str, str]


class TemplateProblem(Exception):
    def __init__(self, field: str, message: str, fix: str,
                 budget: gotemplate.BudgetExceeded | None = None) -> None:
        self.field, self.message, self.fix = field, message, fix
        self.budget = budget  # set when the sync's budget stopped the templates
        super().__init__(field, message, fix)


def name_hash(name: str) -> str:
    """A short keyed hash naming a computed key in messages instead of its text."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=4,
                             key=_NAME_HASH_KEY).hexdigest()
    return f"#{digest}"


def source_keys(template: api.Template) -> list[SourceKey]:
    """The ConfigMap and Secret keys the templates read."""
    return [(t.kind, t.name, key) for t in template.template_from
            if t.kind in ("configMap", "secret") for key, _scope in t.items]


class _Run:
    """One sync's templates: the shared budget, the fetched data prepared once, and where
    each output key came from (for messages that must not quote it)."""

    def __init__(self, fetched: Mapping[str, bytes], budget: gotemplate.SyncBudget) -> None:
        self.budget = budget
        self.fetched = fetched
        self._data: gotemplate.Data | None = None
        self.origin: dict[str, str] = {}  # output key -> "field, output N"

    def data(self, name: str) -> gotemplate.Data:
        if self._data is None:
            try:
                self._data = gotemplate.Data(self.fetched, budget=self.budget)
            except gotemplate.BudgetExceeded as exceeded:
                raise _over_budget(name, exceeded) from None
        return self._data

    def render(self, text: str, name: str) -> str:
        if "{{" not in text:
            return text
        try:
            return gotemplate.render(text, self.data(name), name=name, budget=self.budget)
        except gotemplate.TemplateError as exc:
            if exc.budget is not None:
                raise _over_budget(exc.name, exc.budget) from None
            raise TemplateProblem(exc.name, f"could not be rendered ({exc.message}, line "
                                  f"{exc.line} column {exc.column})",
                                  "fix the template or the keys it reads (docs/templates.md)"
                                  ) from None

    def encode(self, text: str, name: str) -> bytes:
        """The output's bytes (a copy), reserved first."""
        try:
            self.budget.reserve(4 * len(text) + gotemplate.STR_OVERHEAD)
        except gotemplate.BudgetExceeded as exceeded:
            raise _over_budget(name, exceeded) from None
        return gotemplate.encode_output(text)

    def reserve(self, size: int, name: str) -> None:
        try:
            self.budget.reserve(size)
        except gotemplate.BudgetExceeded as exceeded:
            raise _over_budget(name, exceeded) from None


def _over_budget(name: str, exceeded: gotemplate.BudgetExceeded) -> TemplateProblem:
    what = "memory" if exceeded.resource == "bytes" else "evaluation steps"
    return TemplateProblem(
        name, f"stopped: the templates of this ExternalSecret would exceed the sync's "
        f"{what} budget ({exceeded.limit} {exceeded.resource}, all templates, templateFrom "
        "items and fetched-value parsing of one sync together); the Secret keeps its data",
        f"make the templates build less, or ask the operator to raise {exceeded.flag}",
        exceeded)


def apply(template: api.Template, fetched: Mapping[str, bytes],
          sources: Mapping[SourceKey, str | None],
          budget: gotemplate.SyncBudget | None = None) -> Output:
    """The Secret's data, labels and annotations after the templates; TemplateProblem.
    Every template's work is charged to ``budget`` (the sync's; a default one when None)."""
    field = "spec.target.template"
    run = _Run(fetched, budget if budget is not None else gotemplate.SyncBudget())
    out_data: dict[str, bytes] = {}
    out_labels: dict[str, str] = {}
    out_annotations: dict[str, str] = {}
    for key, text in template.data.items():
        name = f"{field}.data.{key}"
        out_data[key] = run.encode(run.render(text, name), name)
        run.origin[key] = name
    for i, source in enumerate(template.template_from):
        produced = _from_source(source, f"{field}.templateFrom[{i}]", run, sources)
        if source.target == "Labels":
            out_labels.update((k, v.decode("utf-8", "replace")) for k, v in produced.items())
        elif source.target == "Annotations":
            out_annotations.update((k, v.decode("utf-8", "replace"))
                                   for k, v in produced.items())
        else:
            out_data.update(produced)
    labels = {k: run.render(v, f"{field}.metadata.labels.{k}")
              for k, v in template.labels.items()}
    annotations = {k: run.render(v, f"{field}.metadata.annotations.{k}")
                   for k, v in template.annotations.items()}
    labels.update(out_labels)
    annotations.update(out_annotations)
    replace = template.merge_policy == "Replace" and template.renders_data
    run.reserve(2 * 64 * (len(out_data) + len(fetched)), field)  # the merged, sorted maps
    data = dict(out_data) if replace else {**fetched, **out_data}
    _check(data, labels, annotations, run.origin)
    return Output(dict(sorted(data.items())), labels, annotations)


def _from_source(source: api.TemplateFrom, field: str, run: _Run,
                 sources: Mapping[SourceKey, str | None]) -> dict[str, bytes]:
    if source.kind == "literal":
        name = f"{field}.literal"
        run.origin["literal"] = name
        return {"literal": run.encode(run.render(source.literal, name), name)}
    what = "ConfigMap" if source.kind == "configMap" else "Secret"
    out: dict[str, bytes] = {}
    for i, (key, scope) in enumerate(source.items):
        text = sources.get((source.kind, source.name, key))
        item = f"{field}.{source.kind}.items[{i}]"
        if text is None:
            raise TemplateProblem(item, f"names key {key} of {what} {source.name}, which does "
                                  "not exist in the ExternalSecret's namespace",
                                  f"create the {what} (or the key) or fix the reference")
        rendered = run.render(text, f"{what} {source.name} key {key}")
        if scope == "KeysAndValues":
            lines = rendered.count("\n") + 1
            # the stripped text, its lines, and per line its parts, key, value and bytes
            run.reserve(3 * 4 * len(rendered) + lines * 8 * gotemplate.STR_OVERHEAD, item)
            for number, line in enumerate(rendered.strip().splitlines(), start=1):
                name, sep, value = line.strip().partition("=")
                if sep and name.strip():
                    out[name.strip()] = gotemplate.encode_output(value.strip())
                    run.origin[name.strip()] = f"{item} output line {number}"
        else:
            out[key] = run.encode(rendered, item)
            run.origin[key] = item
    return out


def _named(key: str, origin: Mapping[str, str], field: str) -> str:
    """How a message names a computed key: where it came from and a keyed hash."""
    return f"{origin.get(key, field)} (output key {name_hash(key)})"


def _check(data: Mapping[str, bytes], labels: Mapping[str, str],
           annotations: Mapping[str, str], origin: Mapping[str, str]) -> None:
    field = "spec.target.template"
    for key in data:
        problem = api.key_name_problem(key)
        if problem:
            raise TemplateProblem(_named(key, origin, field), problem,
                                  "produce valid Secret keys")
    for kind, items in (("labels", labels), ("annotations", annotations)):
        where = f"{field}.metadata.{kind}"
        for key, value in items.items():
            if not _QUALIFIED.fullmatch(key) or len(key) > 253:
                raise TemplateProblem(_named(key, origin, where),
                                      f"is not a valid {kind[:-1]} name",
                                      "use a qualified name (prefix/name)")
            if api.reserved_metadata_key(key, kind == "labels"):
                raise TemplateProblem(_named(key, origin, where),
                                      "is reserved for the controller", "remove it")
            if kind == "labels" and key == api.MANAGED_BY_LABEL and \
                    value != api.MANAGED_BY_VALUE:
                raise TemplateProblem(f"{field}.metadata.labels.{key}",
                                      "renders a value other than "
                                      f"{api.MANAGED_BY_VALUE} (the value the controller "
                                      "writes there)", f"render {api.MANAGED_BY_VALUE} or "
                                      "remove the label")
            if kind == "labels" and (len(value) > 63 or not _LABEL_VALUE.fullmatch(value)):
                raise TemplateProblem(_named(key, origin, where),
                                      f"renders a value of {len(value)} characters that is not "
                                      "a valid label value", "render at most 63 characters: "
                                      "letters, digits, '-', '_', '.'")

