"""SIGQUIT's dump (ops/stacks.py): every thread by name with its frames, never a value. That
SIGQUIT writes it, whatever the main thread does: tests/unit/test_signals.py."""

from __future__ import annotations

import io
import threading

from controller.ops.stacks import dump_stacks, format_threads


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


def test_the_dump_goes_to_the_stream_with_the_calling_thread_as_current() -> None:
    out = io.StringIO()
    dump_stacks(out)
    text = out.getvalue()
    assert "Current thread 0x" in text
    assert "in test_the_dump_goes_to_the_stream_with_the_calling_thread_as_current" in text
