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
  the template, line and column, never a value.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from controller import gotemplate, model

SourceKey = tuple[str, str, str]  # (configMap | secret, name, key)
TEMPLATE_ENTRY = "template"  # the ownership record's name for templated keys
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_QUALIFIED = re.compile(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


@dataclasses.dataclass(frozen=True)
class Output:
    data: dict[str, bytes]
    labels: dict[str, str]
    annotations: dict[str, str]


class TemplateProblem(Exception):
    def __init__(self, field: str, message: str, fix: str) -> None:
        self.field, self.message, self.fix = field, message, fix
        super().__init__(field, message, fix)


def source_keys(template: model.Template) -> list[SourceKey]:
    """The ConfigMap and Secret keys the templates read."""
    return [(t.kind, t.name, key) for t in template.template_from
            if t.kind in ("configMap", "secret") for key, _scope in t.items]


def apply(template: model.Template, fetched: Mapping[str, bytes],
          sources: Mapping[SourceKey, str | None]) -> Output:
    """The Secret's data, labels and annotations after the templates; TemplateProblem."""
    field = "spec.target.template"
    out_data: dict[str, bytes] = {}
    out_labels: dict[str, str] = {}
    out_annotations: dict[str, str] = {}
    for key, text in template.data.items():
        out_data[key] = gotemplate.encode_output(_run(text, f"{field}.data.{key}", fetched))
    for i, source in enumerate(template.template_from):
        produced = _from_source(source, f"{field}.templateFrom[{i}]", fetched, sources)
        if source.target == "Labels":
            out_labels.update((k, v.decode("utf-8", "replace")) for k, v in produced.items())
        elif source.target == "Annotations":
            out_annotations.update((k, v.decode("utf-8", "replace"))
                                   for k, v in produced.items())
        else:
            out_data.update(produced)
    labels = {k: _run(v, f"{field}.metadata.labels.{k}", fetched)
              for k, v in template.labels.items()}
    annotations = {k: _run(v, f"{field}.metadata.annotations.{k}", fetched)
                   for k, v in template.annotations.items()}
    labels.update(out_labels)
    annotations.update(out_annotations)
    replace = template.merge_policy == "Replace" and template.renders_data
    data = dict(out_data) if replace else {**fetched, **out_data}
    _check(data, labels, annotations)
    return Output(dict(sorted(data.items())), labels, annotations)


def _run(text: str, name: str, data: Mapping[str, bytes]) -> str:
    if "{{" not in text:
        return text
    try:
        return gotemplate.render(text, dict(data), name=name)
    except gotemplate.TemplateError as exc:
        raise TemplateProblem(exc.name, f"could not be rendered ({exc.message}, line "
                              f"{exc.line} column {exc.column})",
                              "fix the template or the keys it reads (docs/templates.md)") from None


def _from_source(source: model.TemplateFrom, field: str, data: Mapping[str, bytes],
                 sources: Mapping[SourceKey, str | None]) -> dict[str, bytes]:
    if source.kind == "literal":
        return {"literal": gotemplate.encode_output(_run(source.literal, f"{field}.literal",
                                                         data))}
    what = "ConfigMap" if source.kind == "configMap" else "Secret"
    out: dict[str, bytes] = {}
    for i, (key, scope) in enumerate(source.items):
        text = sources.get((source.kind, source.name, key))
        item = f"{field}.{source.kind}.items[{i}]"
        if text is None:
            raise TemplateProblem(item, f"names key {key} of {what} {source.name}, which does "
                                  "not exist in the ExternalSecret's namespace",
                                  f"create the {what} (or the key) or fix the reference")
        rendered = _run(text, f"{what} {source.name} key {key}", data)
        if scope == "KeysAndValues":
            for line in rendered.strip().splitlines():
                name, sep, value = line.strip().partition("=")
                if sep and name.strip():
                    out[name.strip()] = gotemplate.encode_output(value.strip())
        else:
            out[key] = gotemplate.encode_output(rendered)
    return out


def _check(data: Mapping[str, bytes], labels: Mapping[str, str],
           annotations: Mapping[str, str]) -> None:
    field = "spec.target.template"
    for key in data:
        problem = model.key_name_problem(key)
        if problem:
            raise TemplateProblem(f"{field} output key {key[:60]!r}", problem,
                                  "produce valid Secret keys")
    for kind, items in (("labels", labels), ("annotations", annotations)):
        for key, value in items.items():
            if not _QUALIFIED.fullmatch(key) or len(key) > 253:
                raise TemplateProblem(f"{field}.metadata.{kind} key {key[:60]!r}",
                                      f"is not a valid {kind[:-1]} name",
                                      "use a qualified name (prefix/name)")
            if model.reserved_metadata_key(key, kind == "labels"):
                raise TemplateProblem(f"{field}.metadata.{kind}.{key[:60]}",
                                      "is reserved for the controller", "remove it")
            if kind == "labels" and key == model.MANAGED_BY_LABEL and \
                    value != model.MANAGED_BY_VALUE:
                raise TemplateProblem(f"{field}.metadata.labels.{key}",
                                      "renders a value other than "
                                      f"{model.MANAGED_BY_VALUE} (the value the controller "
                                      "writes there)", f"render {model.MANAGED_BY_VALUE} or "
                                      "remove the label")
            if kind == "labels" and (len(value) > 63 or not _LABEL_VALUE.fullmatch(value)):
                raise TemplateProblem(f"{field}.metadata.labels.{key[:60]}",
                                      f"renders a value of {len(value)} characters that is not "
                                      "a valid label value", "render at most 63 characters: "
                                      "letters, digits, '-', '_', '.'")
