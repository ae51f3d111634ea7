"""The key's state and primary version, from DescribeKey, refreshed in the background.

Why a cache: the kube-apiserver calls Status every minute (every 10 s after a failure) and
under load; answering it from KMS would cost calls and add KMS latency to its health. One
thread asks DescribeKey every `interval` seconds (sooner after a failure) and Status reads
the last answer. A KMS blip does not flip health: the last good answer stays valid for
`stale_after` seconds. A Disabled or PendingDeletion key is unhealthy at once, with a
message that names the key and the state, and the plugin keeps running (no crash loop).

An alias (`--key-id alias/<name>`) is resolved by the same DescribeKey (its answer carries
the real KeyId), at start and at every refresh: everything else uses the resolved KeyId, and
an alias re-pointed to another key changes the key_id exactly like a rotation does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from controller.kmsplugin.keyids import is_alias, key_id_for
from controller.providers.alibaba.kms_crypto import CryptoError, KeyInfo

log = logging.getLogger(__name__)

Describe = Callable[[str], KeyInfo]
RETRY_AFTER_FAILURE = 5.0
_FIX_BY_STATE = {
    "Disabled": "enable it in KMS (EnableKey)",
    "PendingDeletion": "cancel its deletion in KMS (CancelKeyDeletion)",
}


@dataclass(frozen=True)
class Health:
    """What Status says: the current key_id ("" before the first answer) and "ok" or why not."""

    key_id: str
    healthz: str
    version_id: str = ""

    @property
    def ok(self) -> bool:
        return self.healthz == "ok"


class KeyStateCache:
    def __init__(self, key_id: str, describe: Describe, *, interval: float,
                 stale_after: float | None = None,
                 on_change: Callable[[str], None] | None = None,
                 on_refresh: Callable[[bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kms_key_id = key_id
        self.describe = describe
        self.interval = interval
        self.stale_after = stale_after if stale_after is not None else 3 * interval + 10
        self.on_change = on_change or (lambda _key_id: None)
        self.on_refresh = on_refresh or (lambda _ok: None)
        self.clock = clock
        self._lock = threading.Lock()
        self._info: KeyInfo | None = None
        self._good_at = 0.0
        self._error = ""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._issued: dict[str, tuple[str, str]] = {}
        self.refreshes = 0

    # ----------------------------------------------------------------------------- public
    def refresh(self) -> bool:
        """Ask DescribeKey once now; returns whether it answered."""
        self.refreshes += 1
        try:
            info = self.describe(self.kms_key_id)
        except CryptoError as err:
            with self._lock:
                changed = err.reason != self._error
                self._error = err.reason
            if changed:
                log.warning("DescribeKey failed: %s", err.reason)
            self.on_refresh(False)
            return False
        self._accept(info)
        self.on_refresh(True)  # after the new key_id is in place
        return True

    def observe(self, key_id: str, version_id: str) -> None:
        """Encrypt saw another key or primary version than the cache (a rotation, or a
        re-pointed alias, between two refreshes): use it now, verify soon."""
        with self._lock:
            info = self._info
        if info is not None and (info.key_id, info.primary_version) != (key_id, version_id):
            self._accept(KeyInfo(key_id, info.state, version_id))
            self._wake.set()

    @property
    def configured_alias(self) -> bool:
        """--key-id names an alias: the KeyId behind it may change."""
        return is_alias(self.kms_key_id)

    def resolved_key_id(self) -> str:
        """The KeyId the configured key resolved to at the last answer ("" before one)."""
        with self._lock:
            return self._info.key_id if self._info is not None else ""

    def issued_key_ids(self) -> dict[str, tuple[str, str]]:
        """key_id -> (KMS KeyId, version) for every key version this process has used."""
        with self._lock:
            return dict(self._issued)

    def health(self) -> Health:
        with self._lock:
            info, good_at, error = self._info, self._good_at, self._error
        if info is None:
            return Health("", f"no answer from KMS yet for key {self.kms_key_id}: {error}"
                          if error else f"no answer from KMS yet for key {self.kms_key_id}")
        key_id = key_id_for(info.key_id, info.primary_version)
        if not info.usable:
            fix = _FIX_BY_STATE.get(info.state, "make it Enabled")
            return Health(key_id, f"KMS key {info.key_id} is {info.state}: {fix}",
                          info.primary_version)
        age = self.clock() - good_at
        if error and age > self.stale_after:
            return Health(key_id, f"KMS key {info.key_id}: no DescribeKey answer for "
                          f"{int(age)}s: {error}", info.primary_version)
        return Health(key_id, "ok", info.primary_version)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="key-state", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ---------------------------------------------------------------------------- private
    def _accept(self, info: KeyInfo) -> None:
        with self._lock:
            before = self._info
            self._info, self._good_at, self._error = info, self.clock(), ""
            new_id = key_id_for(info.key_id, info.primary_version)
            self._issued[new_id] = (info.key_id, info.primary_version)
        if before is None or (before.key_id, before.primary_version, before.state) != (
                info.key_id, info.primary_version, info.state):
            via = f" (via {self.kms_key_id})" if info.key_id != self.kms_key_id else ""
            log.info("KMS key %s%s: state %s, primary version %s, key_id %s",
                     info.key_id, via, info.state, info.primary_version, new_id)
            self.on_change(new_id)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                failing = bool(self._error) or self._info is None
            wait = min(self.interval, RETRY_AFTER_FAILURE) if failing else self.interval
            self._wake.wait(wait)
            self._wake.clear()
            if not self._stop.is_set():
                self.refresh()
