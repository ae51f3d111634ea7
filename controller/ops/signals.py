"""Signals without a Python signal handler that does anything: SIGTERM and SIGINT set a stop
event, and SIGQUIT (when asked) writes every thread's stack, from a thread of their own, for
the controller and the kms-plugin alike."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def watch_signals(stop: threading.Event, log: logging.Logger, *,
                  on_quit: Callable[[], None] | None = None) -> Callable[[], None]:
    """SIGTERM and SIGINT set `stop`, and SIGQUIT calls `on_quit` (when given; else SIGQUIT
    keeps its default), from a thread of their own (call from the main thread); returns what
    undoes it.

    Nothing may depend on the main thread running a Python handler:
    - A Python signal handler runs in the main thread between two of its bytecodes, wherever
      it was: it must take no lock that the main thread may hold. Logging takes several (the
      redactor's, the log folding's), and "received signal" logged from the handler hung a
      controller that was itself logging when SIGTERM came (a fresh-clone CI run).
    - The kernel may deliver a process's signal to any of its threads. Delivered to another
      thread while the main thread waits in C (the controller's `stop.wait()`), the Python
      handler waits until the main thread wakes: a SIGQUIT's dump came only when SIGTERM ended
      that wait, 30 s later (a fresh-clone CI run, test_shutdown).
    So the handler does nothing; the interpreter writes the signal's number to a pipe at C
    level, in whichever thread took it (`signal.set_wakeup_fd`), and this thread reads it: it
    sets `stop` and then says "received signal N; shutting down" to `log`, or calls
    `on_quit`."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end)
    watched = (*STOP_SIGNALS, *((signal.SIGQUIT,) if on_quit is not None else ()))
    for signum in watched:
        signal.signal(signum, _ignore)

    def watch() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while data := pipe.read(64):  # b"": the write end was closed (`unwatch`)
                for signum in data:
                    if signum in STOP_SIGNALS:
                        stop.set()
                        log.info("received signal %d; shutting down", signum)
                    elif signum == signal.SIGQUIT and on_quit is not None:
                        on_quit()

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
