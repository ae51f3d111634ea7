"""A stop signal is heard whatever the main thread holds: the Python signal handler does
nothing (ops/signals.py), so a main thread interrupted inside logging (which takes the
redactor's and the log folding's locks) does not hang in its own handler."""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytest

from controller.ops.signals import watch_stop_signals
from tests.waiting import wait_for


class _Locked(logging.Handler):
    """A handler whose emit needs a lock, as the redacting filter's does."""

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__()
        self.needed = lock
        self.said: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with self.needed:
            self.said.append(record.getMessage())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_sets_stop_while_the_main_thread_holds_a_logging_lock(
        signum: int) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    lock = threading.Lock()
    log = logging.Logger("signals-test")  # its own: no configuration of the tree applies
    handler = _Locked(lock)
    log.addHandler(handler)
    stop = threading.Event()
    unwatch = watch_stop_signals(stop, log)
    try:
        with lock:  # the main thread is inside logging when the signal comes
            os.kill(os.getpid(), signum)
            # A handler that logged would now wait for this very lock, in this thread.
            assert stop.wait(10), "the signal did not set stop"
        wait_for(lambda: handler.said, timeout=10, what="the line said once stop was set")
        assert handler.said == [f"received signal {signum}; shutting down"]
    finally:
        unwatch()
        log.removeHandler(handler)
        for s, h in before.items():
            signal.signal(s, h)
