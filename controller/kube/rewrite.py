"""Paged list and no-op update of stored objects: what `reencrypt` does through the API.

Why a no-op update re-encrypts: the kube-apiserver skips a write whose bytes equal the stored
ones, unless the stored data is stale (written under another KMS key_id); then it writes it
again, under the current key. So a PUT of the unchanged object costs nothing for objects that
are current and rewrites the others. The answer tells which happened: a new resourceVersion
means the object was written. A 409 means another write changed it since we listed it (and
re-encrypted it): nothing to do. A 404: it was deleted meanwhile.

Lists are paged (limit/continue); an expired continue token (410) restarts the listing, which
is cheap because objects already rewritten are not written again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from controller.kube.rest import ApiError, Resource, Rest

log = logging.getLogger(__name__)

REWRITTEN, UNCHANGED, SKIPPED, FAILED = "rewritten", "unchanged", "skipped", "failed"
CHECKED = "checked"  # --dry-run: the server accepted the update and wrote nothing
RESULTS = (REWRITTEN, UNCHANGED, SKIPPED, FAILED, CHECKED)


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    remaining: int | None  # the apiserver's remainingItemCount estimate, when it gives one


def resource_for(spec: str) -> Resource:
    """"secrets" / "configmaps" (core v1) or "<plural>.<group>/<version>" (namespaced)."""
    name, _, version = spec.partition("/")
    plural, _, group = name.partition(".")
    if not plural or (group and not version) or (version and not group):
        raise ValueError(f"resource {spec!r}: write <plural> for core v1 (secrets) or "
                         "<plural>.<group>/<version> (e.g. leases.coordination.k8s.io/v1)")
    return Resource(plural, group, version or "v1", plural)


def list_pages(rest: Rest, resource: Resource, *, namespace: str = "",
               limit: int = 500) -> Iterator[Page]:
    """Every object of `resource` (in `namespace`, or all), one page at a time."""
    token = ""
    restarts = 0
    while True:
        try:
            answer = rest.get(resource.path(namespace), limit=limit,
                              **({"continue": token} if token else {}))
        except ApiError as err:
            if err.status == 410 and token and restarts < 3:
                log.info("list of %s: continue token expired; listing again", resource.plural)
                token, restarts = "", restarts + 1
                continue
            raise
        meta = answer.get("metadata") or {}
        remaining = meta.get("remainingItemCount")
        kind = str(answer.get("kind") or "").removesuffix("List") or resource.kind
        items = [{**item, "apiVersion": resource.api_version, "kind": kind}
                 for item in answer.get("items") or []]
        yield Page(items,
                   int(remaining) if isinstance(remaining, int) else None)
        token = str(meta.get("continue") or "")
        if not token:
            return


def rewrite(rest: Rest, resource: Resource, obj: dict[str, Any], *,
            dry_run: bool = False) -> str:
    """PUT `obj` (an item of `list_pages`, with apiVersion and kind) unchanged; its
    resourceVersion makes the write conditional."""
    meta = obj.get("metadata") or {}
    namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    query = {"dryRun": "All"} if dry_run else None
    try:
        answer = rest.request("PUT", resource.path(namespace, name), query=query, body=obj)
    except ApiError as err:
        if err.status in (404, 409):
            return SKIPPED
        raise
    if dry_run:
        return CHECKED
    after = str((answer.get("metadata") or {}).get("resourceVersion") or "")
    return REWRITTEN if after != str(meta.get("resourceVersion") or "") else UNCHANGED
