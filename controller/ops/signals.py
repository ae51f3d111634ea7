"""Stop signals without a Python signal handler that does anything: SIGTERM and SIGINT set
a stop event from a thread of their own, for the controller and the kms-plugin alike."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType


def watch_stop_signals(stop: threading.Event, log: logging.Logger) -> Callable[[], None]:
    """SIGTERM and SIGINT set `stop`, from a thread of their own (call from the main thread);
    returns what undoes it.

    A Python signal handler runs in the main thread between two of its bytecodes, wherever it
    was: it must take no lock that the main thread may hold. Logging takes several (the
    redactor's, the log folding's), and "received signal" logged from the handler hung a
    controller that was itself logging when SIGTERM came: it never stopped, and was killed
    (a fresh-clone CI run). So the handler does nothing; the interpreter writes the signal's
    number to a pipe at C level (`signal.set_wakeup_fd`), and this thread reads it, sets
    `stop`, and then says "received signal N; shutting down" to `log`."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _ignore)

    def watch() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while data := pipe.read(64):  # b"": the write end was closed (`unwatch`)
                for signum in data:
                    if signum in (signal.SIGTERM, signal.SIGINT):
                        stop.set()
                        log.info("received signal %d; shutting down", signum)

    def unwatch() -> None:
        """Back to no wakeup pipe; the thread ends (tests)."""
        signal.set_wakeup_fd(-1)
        os.close(write_end)
        thread.join(5)

    thread = threading.Thread(target=watch, name="signals", daemon=True)
    thread.start()
    return unwatch


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """The Python-level handler: nothing (the wakeup pipe carries the signal)."""
