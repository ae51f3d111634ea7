"""Kubernetes Events about ExternalSecrets, posted in the background, deduplicated.

Events are best effort: a bounded queue and one poster thread, so a slow apiserver never
blocks a sync. The same (object, reason, message) is posted at most once per `dedup_window`
and the poster spends at most `rate` Events per second, so a broken object cannot flood the
apiserver. Messages never carry secret values (callers build them from reasons only).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import urllib3

from controller.kube.rest import EVENTS, ApiError, Rest
from controller.names import MANAGER as COMPONENT

log = logging.getLogger(__name__)

MAX_MESSAGE = 1024
MAX_RECENT = 10_000


class EventRecorder:
    def __init__(
        self,
        rest: Rest,
        instance: str,
        *,
        dedup_window: float = 300.0,
        rate: float = 10.0,
        burst: int = 50,
        capacity: int = 1000,
    ) -> None:
        self.rest = rest
        self.instance = instance
        self.dedup_window = dedup_window
        self.rate = rate
        self._tokens = float(burst)
        self._burst = float(burst)
        self._last_refill = time.monotonic()
        self._recent: OrderedDict[tuple[str, str, str], float] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(capacity)
        self._thread = threading.Thread(target=self._run, name="events", daemon=True)
        self.posted = 0
        self.dropped = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout)

    def record(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> bool:
        """Queue an Event about `obj`; False when deduplicated or dropped."""
        meta = obj.get("metadata", {})
        dedup = (str(meta.get("uid", "")), reason, message)
        now = time.monotonic()
        with self._lock:
            last = self._recent.get(dedup)
            if last is not None and now - last < self.dedup_window:
                return False
            self._recent[dedup] = now
            self._recent.move_to_end(dedup)
            # Oldest first: drop what is past the window, and never keep more than MAX_RECENT.
            while self._recent:
                oldest = next(iter(self._recent.values()))
                if now - oldest < self.dedup_window and len(self._recent) <= MAX_RECENT:
                    break
                self._recent.popitem(last=False)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "metadata": {"generateName": f"{meta.get('name', 'object')}.",
                         "namespace": meta.get("namespace") or "default"},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", ""),
                "kind": obj.get("kind", ""),
                "name": meta.get("name", ""),
                "namespace": meta.get("namespace", ""),
                "uid": meta.get("uid", ""),
            },
            "type": event_type,
            "reason": reason,
            "message": message[:MAX_MESSAGE],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def _take_token(self) -> float:
        """Seconds to wait before the next post (token bucket)."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last_refill) * self.rate)
        self._last_refill = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            if event is None:
                return
            wait = self._take_token()
            while wait > 0:
                time.sleep(wait)
                wait = self._take_token()
            ns = event["metadata"]["namespace"]
            try:
                self.rest.create(EVENTS.path(ns), event)
                self.posted += 1
            except (ApiError, OSError, urllib3.exceptions.HTTPError) as exc:
                # Refused, or the API server out of reach (the watches say so): not a
                # traceback per Event.
                log.debug("posting an Event failed: %s", type(exc).__name__)
            except Exception:
                log.warning("posting an Event failed", exc_info=True)
