"""The builders of the CRDs' schema (OpenAPI v3, as the apiserver takes it), shared by the CRD
generator (hack/gen_crds.py) and the sources that own store blocks (their `StoreBlock.schema`:
e.g. controller/providers/alibaba/shape.py). Every spec string is at most MAX_TEXT characters
unless its field says less; a description says the bounds `kubectl explain` would not show.
Pure data.
"""

from __future__ import annotations

from typing import Any

from controller.api.fields import MAX_FIELD_LENGTH

MAX_TEXT = MAX_FIELD_LENGTH  # any string of a spec the parser reads


def bounded(desc: str, extra: dict[str, Any]) -> str:
    """The description with the bounds a user cannot see in `kubectl explain` otherwise (the
    common string bound, MAX_TEXT, is said once in each spec's description)."""
    notes = []
    if "maxItems" in extra:
        notes.append(f"at most {extra['maxItems']:,} items")
    if "maxProperties" in extra:
        notes.append(f"at most {extra['maxProperties']:,} entries")
    if extra.get("maxLength", MAX_TEXT) != MAX_TEXT:
        notes.append(f"at most {extra['maxLength']:,} characters")
    if not notes:
        return desc
    return f"{desc.rstrip('.')} ({'; '.join(notes)})."


def obj(desc: str, props: dict[str, Any], required: list[str] | None = None, /,
        **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "description": bounded(desc, extra),
                           "properties": props}
    if required:
        out["required"] = required
    out.update(extra)
    return out


def arr(desc: str, items: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "array", "description": bounded(desc, extra), "items": items, **extra}


def text(desc: str, **extra: Any) -> dict[str, Any]:
    """A spec string the parser reads: at most MAX_TEXT characters unless `extra` says less."""
    extra.setdefault("maxLength", MAX_TEXT)
    return {"type": "string", "description": bounded(desc, extra), **extra}


def s(desc: str, **extra: Any) -> dict[str, Any]:
    """A string without a bound: status written by the controller, or a spec list item the
    parser does not bound."""
    return {"type": "string", "description": bounded(desc, extra), **extra}


def secret_ref(desc: str) -> dict[str, Any]:
    return obj(
        desc,
        {
            "name": text("Name of the Secret.", minLength=1),
            "namespace": text("Namespace of the Secret. Default: the referring object's "
                              "namespace (a ClusterSecretStore must set it). Another "
                              "namespace than the SecretStore's needs the controller's "
                              "--enable-cross-namespace-auth-ref (or "
                              "--enable-cross-namespace-secret-store)."),
            "key": text("Key in the Secret's data holding the value.", minLength=1),
        },
        ["name", "key"],
    )

