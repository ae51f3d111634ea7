"""The ExternalSecret status, built as a pure function of the last status and this sync.

Conditions go through one helper that keeps lastTransitionTime when the status does not
change, and times in `dataSyncResults` and `refreshTime` move only when something changed, so a
quiet poll produces a status equal to the last one and costs no write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

READY = "Ready"


def stamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class EntryStatus:
    entry: str
    kms_secret: str
    version_id: str
    state: str  # Synced | Failed
    reason: str = ""


def _condition(
    old: Sequence[Mapping[str, Any]], status: str, reason: str, message: str,
    generation: int, now: datetime,
) -> dict[str, Any]:
    previous = next((c for c in old if c.get("type") == READY), None)
    transition = stamp(now)
    if previous is not None and previous.get("status") == status:
        transition = str(previous.get("lastTransitionTime") or transition)
    return {
        "type": READY,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }


def _entries(
    old: Sequence[Mapping[str, Any]], entries: Sequence[EntryStatus], now: datetime
) -> list[dict[str, Any]]:
    before = {str(e.get("entry")): e for e in old}
    out = []
    for e in entries:
        item = {"entry": e.entry, "KMSSecretKey": e.kms_secret, "versionId": e.version_id,
                "status": e.state, "reason": e.reason}
        prev = before.get(e.entry)
        same = prev is not None and all(prev.get(k) == v for k, v in item.items())
        item["synchronizationTime"] = (
            str(prev.get("synchronizationTime")) if same and prev is not None else stamp(now))
        out.append(item)
    return out


def build(
    old_status: Mapping[str, Any] | None,
    *,
    ready: bool,
    reason: str,
    message: str,
    generation: int,
    secret_name: str,
    entries: Sequence[EntryStatus],
    wrote: bool,
    now: datetime,
    keep_entries: bool = False,
) -> dict[str, Any]:
    """The new status. `wrote`: the Secret was written by this sync; `keep_entries`: the
    per-entry results of the last sync stay as they were (this sync did not get that far)."""
    old = old_status or {}
    status = "True" if ready else "False"
    results = list(old.get("dataSyncResults") or []) if keep_entries else \
        _entries(old.get("dataSyncResults") or [], entries, now)
    new: dict[str, Any] = {
        "conditions": [_condition(old.get("conditions") or [], status, reason, message,
                                  generation, now)],
        "observedGeneration": generation,
        "secretName": secret_name,
        "dataSyncResults": results,
    }
    refresh = old.get("refreshTime")
    if wrote or not refresh or _differs(old, new):
        refresh = stamp(now)
    new["refreshTime"] = refresh
    return new


def _differs(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return any(old.get(k) != v for k, v in new.items())


def changed(old_status: Mapping[str, Any] | None, new_status: Mapping[str, Any]) -> bool:
    return _differs(old_status or {}, new_status)
