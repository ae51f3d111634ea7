"""Repeated library and connection-loop lines are folded (ops/lognoise.py), on the fake
clock; the controller's own sync lines never are."""

from __future__ import annotations

import io
import logging

from controller.ops.lognoise import FoldRepeats
from controller.ops.logs import TextFormatter
from controller.runtime.clock import FakeClock


def _emit(fold: FoldRepeats, name: str, msg: str, *args: object,
          exc: BaseException | None = None, level: int = logging.WARNING) -> str | None:
    record = logging.LogRecord(name, level, __file__, 1, msg, args,
                               (type(exc), exc, exc.__traceback__) if exc else None)
    if not fold.filter(record):
        return None
    return TextFormatter().format(record)


def test_repeats_within_the_window_are_counted_and_said_once() -> None:
    clock = FakeClock()
    fold = FoldRepeats(window=60.0, clock=clock.now)
    retry = "Retrying (%s) after connection broken by '%s': /api"
    first = _emit(fold, "urllib3.connectionpool", retry, "Retry(total=2)", "NewConnectionError")
    assert first is not None and "more like this" not in first
    for _ in range(40):
        clock.advance(1.0)
        assert _emit(fold, "urllib3.connectionpool", retry, "Retry(total=1)",
                     "NewConnectionError") is None
    clock.advance(20.0)
    later = _emit(fold, "urllib3.connectionpool", retry, "Retry(total=0)", "NewConnectionError")
    assert later is not None and "(40 more like this in the last 60s)" in later


def test_each_informer_keeps_its_first_line_and_controller_lines_pass() -> None:
    fold = FoldRepeats(window=60.0, clock=FakeClock().now)
    watch = "watch of %s failed: %s"
    assert _emit(fold, "controller.kube.informer", watch, "secrets", ConnectionError("x"))
    assert _emit(fold, "controller.kube.informer", watch, "externalsecrets",
                 ConnectionError("x"))
    assert _emit(fold, "controller.kube.informer", watch, "secrets", ConnectionError("y")) \
        is None
    for _ in range(3):
        assert _emit(fold, "controller.externalsecret.controller",
                     "sync ExternalSecret %s/%s failed: %s", "a", "b", "FetchFailed")


def test_a_library_traceback_becomes_one_line_naming_the_exception() -> None:
    fold = FoldRepeats(window=60.0, clock=FakeClock().now)
    try:
        raise TimeoutError("https://sts.aliyuncs.com/?Action=AssumeRole&Signature=abc")
    except TimeoutError as caught:
        exc = caught
    line = _emit(fold, "credentials", "refresh failed", exc=exc, level=logging.ERROR)
    assert line is not None and "refresh failed [TimeoutError]" in line
    assert "Traceback" not in line and "Signature" not in line and "\n" not in line
    ours = logging.LogRecord("controller.app", logging.ERROR, __file__, 1, "boom", (),
                             (type(exc), exc, exc.__traceback__))
    assert fold.filter(ours) and ours.exc_info is not None  # our tracebacks are kept


def test_the_handler_folds_before_it_writes() -> None:
    from controller.ops.logs import setup_logging

    stream = io.StringIO()
    setup_logging("text", "info", stream=stream)
    try:
        for _ in range(5):
            logging.getLogger("urllib3.connectionpool").warning("Retrying after %s", "reset")
        assert stream.getvalue().count("Retrying after reset") == 1
    finally:
        setup_logging("text", "info")
