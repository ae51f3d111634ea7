"""Signals are heard whatever the main thread holds or waits for: the Python signal handler
does nothing (ops/signals.py). A main thread interrupted inside logging (which takes the
redactor's and the log folding's locks) does not hang in its own handler, and a SIGQUIT taken
by another thread while the main one waits in C still writes the stacks at once."""

from __future__ import annotations

import io
import logging
import os
import signal
import threading

import pytest

from controller.ops.signals import watch_signals
from controller.ops.stacks import dump_stacks
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
    unwatch = watch_signals(stop, log)
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


def test_sigquit_dumps_the_stacks_while_the_main_thread_waits_in_c() -> None:
    """The controller's main thread spends its life in `stop.wait()`. Here SIGQUIT is blocked
    in the main thread, so the kernel hands it to another thread, as it may in the controller;
    a Python handler would run only once the main thread's wait ended (30 s later in a CI run:
    when SIGTERM ended it)."""
    before = signal.getsignal(signal.SIGQUIT)
    out = io.StringIO()
    dumped = threading.Event()
    stop = threading.Event()
    unwatch = watch_signals(stop, logging.Logger("signals-test"),
                            on_quit=lambda: (dump_stacks(out), dumped.set()))
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGQUIT})
    try:
        os.kill(os.getpid(), signal.SIGQUIT)
        # The main thread waits in C (a lock's acquire) for up to 10 s; the dump must come
        # during that wait, not after it.
        assert dumped.wait(10), "SIGQUIT wrote no stacks while the main thread waited"
        assert "(MainThread; most recent call first)" in out.getvalue()
        assert "in test_sigquit_dumps_the_stacks_while_the_main_thread_waits_in_c" in (
            out.getvalue())
        assert not stop.is_set()  # the process carries on
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGQUIT})
        unwatch()
        signal.signal(signal.SIGQUIT, before)
