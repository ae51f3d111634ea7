"""Repeated log lines folded into one, and libraries' tracebacks into one line.

Why this module exists: when the API server or a cloud endpoint is down, the same failure
is reported over and over: every informer's watch, urllib3's "Retrying (Retry(total=...))"
for each attempt, the credentials library's traceback on each refresh. 40 s of an
unreachable API server once gave 135 lines and no clear one. An operator needs the first
line of each kind, and to know how many more there were.

`FoldRepeats` (a filter on the root handler) lets the first record of a kind through and
drops the same kind for `window` seconds, then lets the next one through with
"(N more like this in the last Ns)". A kind is the logger, the level and the message
template; for the controller's loops also its short text arguments (an informer's name), so
one informer's failures are folded without hiding another's. It applies to the libraries'
loggers and to the controller's own connection loops (`FOLDED`); other controller lines are
never dropped. Records of the libraries that carry a traceback lose it: the exception's
type is named in the message instead (their tracebacks repeat the library's internals and
can quote request URLs; the type is what tells the operator what happened).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable

# Loggers whose repeats are folded: the libraries that log each attempt or refresh, and the
# controller's loops that retry a connection to the API server: the watches, the Lease's
# retries, the store checks' and the syncs' wait (the last three on loggers of their own).
LIBRARIES = ("credentials", "alibabacloud-tea", "darabonba-core", "urllib3", "kubernetes")
FOLDED = (*LIBRARIES, "controller.kube.informer", "controller.kube.leader.retries",
          "controller.secretstore.storestatus.unreachable",
          "controller.externalsecret.reconciler.unreachable")
WINDOW = 60.0
MAX_KINDS = 1024  # kinds remembered; the oldest are forgotten first
_SHORT = 64


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


class FoldRepeats(logging.Filter):
    def __init__(self, window: float = WINDOW,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[Hashable, tuple[float, int]] = {}  # kind -> (let through at, dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        if not _under(record.name, FOLDED):
            return True
        if _under(record.name, LIBRARIES) and record.exc_info:
            _one_line(record)
        kind = _kind(record)
        now = self.clock()
        with self._lock:
            since, dropped = self._seen.pop(kind, (None, 0))
            if since is not None and now - since < self.window:
                self._seen[kind] = (since, dropped + 1)
                return False
            self._seen[kind] = (now, 0)
            while len(self._seen) > MAX_KINDS:
                del self._seen[next(iter(self._seen))]
        if dropped:
            record.msg = f"{record.msg} ({dropped} more like this in the last " \
                         f"{self.window:.0f}s)"
        return True


def _kind(record: logging.LogRecord) -> Hashable:
    """A library's line by its template alone (its arguments are attempt counters and
    exceptions); the controller's loops also by their short text arguments (which informer,
    which Lease)."""
    if _under(record.name, LIBRARIES):
        return record.name, record.levelno, str(record.msg)
    args = record.args if isinstance(record.args, tuple) else ()
    short = tuple(a for a in args if isinstance(a, str) and len(a) <= _SHORT)
    return record.name, record.levelno, str(record.msg), short


def _one_line(record: logging.LogRecord) -> None:
    """The traceback dropped; the message says which exception it was."""
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None:
        record.msg = f"{record.msg} [{type(exc).__name__}]"
    record.exc_info = None
    record.exc_text = None
