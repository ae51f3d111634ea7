"""SIGQUIT's dump (ops/stacks.py): every thread by name with its frames, never a value."""

from __future__ import annotations

import io
import os
import signal
import threading

from controller.ops.stacks import dump_on_sigquit, format_threads


def _parked_in_a_known_function(release: threading.Event, secret: str) -> None:
    release.wait(10)
    assert secret


def test_every_thread_is_named_with_its_frames_and_no_value() -> None:
    release = threading.Event()
    worker = threading.Thread(target=_parked_in_a_known_function,
                              args=(release, "VALUE-NEVER-SHOWN"), name="worker-7")
    worker.start()
    try:
        text = format_threads(threading.get_ident())
    finally:
        release.set()
        worker.join(10)
    assert "(worker-7; most recent call first):" in text
    assert "in _parked_in_a_known_function" in text and "Current thread 0x" in text
    assert "VALUE-NEVER-SHOWN" not in text


def test_sigquit_writes_the_dump_and_the_process_carries_on() -> None:
    out = io.StringIO()
    previous = signal.getsignal(signal.SIGQUIT)
    dump_on_sigquit(out)
    try:
        os.kill(os.getpid(), signal.SIGQUIT)  # the handler runs before kill returns here
        assert "in test_sigquit_writes_the_dump_and_the_process_carries_on" in out.getvalue()
    finally:
        signal.signal(signal.SIGQUIT, previous)
