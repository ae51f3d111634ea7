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
DEGRADED = "Degraded"


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
    generation: int, now: datetime, kind: str = READY,
) -> dict[str, Any]:
    previous = next((c for c in old if c.get("type") == kind), None)
    transition = stamp(now)
    if previous is not None and previous.get("status") == status:
        transition = str(previous.get("lastTransitionTime") or transition)
    return {
        "type": kind,
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
        # The KMS secret's name under both of ack-secret-manager's keys: KMSSecretKey (v0.6)
        # and ExternalSecretKey (newer), so scripts written for either keep working.
        item = {"entry": e.entry, "KMSSecretKey": e.kms_secret,
                "ExternalSecretKey": e.kms_secret, "versionId": e.version_id,
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
    degraded: tuple[str, str] | None = None,
    interval: float = 0.0,
) -> dict[str, Any]:
    """The new status. `wrote`: the Secret was written by this sync; `keep_entries`: the
    per-entry results of the last sync stay as they were (this sync did not get that far);
    `degraded`: (reason, message) of a transient fault that left the data fresh enough for
    Ready to stay True (a Degraded=True condition; none otherwise).

    `lastSyncTime` is the last sync that ended Ready (written or confirmed unchanged); it moves
    when the status changes anyway or is older than `interval`, so repeated syncs do not write
    the status each time."""
    old = old_status or {}
    status = "True" if ready else "False"
    results = list(old.get("dataSyncResults") or []) if keep_entries else \
        _entries(old.get("dataSyncResults") or [], entries, now)
    conditions = old.get("conditions") or []
    new: dict[str, Any] = {
        "conditions": [_condition(conditions, status, reason, message, generation, now)],
        "observedGeneration": generation,
        "secretName": secret_name,
        "dataSyncResults": results,
    }
    if degraded is not None:
        new["conditions"].append(_condition(conditions, "True", degraded[0], degraded[1],
                                            generation, now, kind=DEGRADED))
    refresh = old.get("refreshTime")
    differs = _differs(old, new)
    if wrote or not refresh or differs:
        refresh = stamp(now)
    new["refreshTime"] = refresh
    last = old.get("lastSyncTime")
    if ready and degraded is None and (wrote or differs or not last
                                       or _older(str(last), now, max(interval, 60.0))):
        last = stamp(now)
    if last:
        new["lastSyncTime"] = last
    return new


def _older(text: str, now: datetime, seconds: float) -> bool:
    try:
        then = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=now.tzinfo)
    except ValueError:
        return True
    return (now - then).total_seconds() >= seconds


def _differs(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return any(old.get(k) != v for k, v in new.items())


def changed(old_status: Mapping[str, Any] | None, new_status: Mapping[str, Any]) -> bool:
    return _differs(old_status or {}, new_status)
