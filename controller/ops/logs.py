"""Log lines for people (text) and machines (JSON) that never carry a secret.

Why this module exists: one place sets up logging for every command (the controller,
`kms-plugin`, `reencrypt`): one root handler that redacts every record with ops/redact.py's
`Redactor` (the record before formatting, the formatted line again), folds repeated library
and connection-loop lines (ops/lognoise.py), and formats text or JSON.

Redaction happens twice: `RedactingFilter` scrubs the record (message with its arguments,
exception and stack text, extra fields) before formatting, and the handler scrubs the
final formatted string again, so nothing a formatter adds can slip through.

Fields: pass them as `extra`, e.g.
    log.info("sync %s", key, extra={"object": "ns/name", "result": "synced", "duration_ms": 12})
Every non-standard record attribute is a field. Text puts them after the message as
key=value; JSON puts them at the top level next to time, level, logger and message (those
four names win if a field repeats one; `exception` and `stack` are reserved too).

The Alibaba SDKs configure their own loggers at import time ("credentials",
"alibabacloud-tea", "darabonba-core": a StreamHandler, level INFO or DEBUG) and log whole
request URLs and headers, tokens included. `setup_logging` strips those handlers, holds
the loggers at WARNING and lets them propagate to ours, and a guard filter redoes this if
the library is first imported later (the controller imports it lazily).
"""
from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TextIO

from controller.ops.lognoise import FoldRepeats
from controller.ops.redact import Redactor, default_redactor

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "TextFormatter",
    "parse_level",
    "setup_logging",
]


# -- records and fields ------------------------------------------------------------------

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime", "taskName"}
_CORE_KEYS = ("time", "level", "logger", "message")


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The caller's `extra` fields of `record`, in the order given."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}


def _scrub_value(value: Any, scrub_text: Callable[[str], str], depth: int = 0) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth < 4 and isinstance(value, Mapping):
        return {str(k): _scrub_value(v, scrub_text, depth + 1) for k, v in value.items()}
    if depth < 4 and isinstance(value, list | tuple | set | frozenset):
        return [_scrub_value(v, scrub_text, depth + 1) for v in value]
    return scrub_text(value if isinstance(value, str) else str(value))


class RedactingFilter(logging.Filter):
    """Scrubs a record in place before any formatter sees it; never drops a record.

    The message is formatted with its arguments first (an argument may be the secret),
    the exception is formatted into `exc_text`, then both are scrubbed; `args` and
    `exc_info` are cleared so no later formatter can render the originals.
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or default_redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        scrub_text = self.redactor.scrub_log
        record.msg, record.args = scrub_text(_message(record)), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _PLAIN.formatException(record.exc_info)
        record.exc_info = None
        if record.exc_text:
            record.exc_text = scrub_text(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub_text(record.stack_info)
        for key, value in record_fields(record).items():
            setattr(record, key, _scrub_value(value, scrub_text))
        return True


_PLAIN = logging.Formatter()


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format call must not raise into the caller
        # The arguments may hold the very secret; keep only the format string.
        return f"{record.msg} [log arguments did not match the format]"


# -- formats -----------------------------------------------------------------------------


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z"


_TEXT_LEVELS = {"WARNING": "WARN", "CRITICAL": "FATAL"}
_BARE = re.compile(r"[^\s\"=\\]+")


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


class _ExceptionText(logging.Formatter):
    def exception_text(self, record: logging.LogRecord) -> str:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        parts = [record.exc_text or "", self.formatStack(record.stack_info or "")]
        return "\n".join(part for part in parts if part)


class TextFormatter(_ExceptionText):
    """`2026-11-23T13:00:00.000Z INFO  sync ns/name result=synced duration_ms=12`."""

    def format(self, record: logging.LogRecord) -> str:
        level = _TEXT_LEVELS.get(record.levelname, record.levelname)
        line = f"{_timestamp(record)} {level:<5} {_message(record)}"
        fields = record_fields(record)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        exception = self.exception_text(record)
        return f"{line}\n{exception}" if exception else line


class JsonFormatter(_ExceptionText):
    """One JSON object per line: time, level, logger, message, fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _message(record),
        }
        for key, value in record_fields(record).items():
            doc.setdefault(key, value)
        if record.exc_info or record.exc_text:
            doc["exception"] = self.exception_text(record)
        elif record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str, separators=(",", ":"))


class _RedactingHandler(logging.StreamHandler[TextIO]):
    """Our only root handler: scrubs the record, formats it, scrubs the result again."""

    def __init__(self, stream: TextIO, formatter: logging.Formatter, redactor: Redactor) -> None:
        super().__init__(stream)
        self.redactor = redactor
        self.setFormatter(formatter)
        self.addFilter(RedactingFilter(redactor))

    def format(self, record: logging.LogRecord) -> str:
        # The filter scrubbed what the record carries (whole words too); this pass is for
        # what a formatter adds, which never holds a value: substrings and shapes only, so
        # a short secret such as "12" cannot eat the timestamp's digits.
        return self.redactor.scrub(super().format(record))


# -- setup -------------------------------------------------------------------------------

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# Loggers that add their own handler at import and log tokens, URLs or headers.
SELF_CONFIGURED_LOGGERS = ("credentials", "alibabacloud-tea", "darabonba-core")
# Loggers that print whole API bodies (Secret data) at DEBUG: never below INFO.
_FLOORS = {"kubernetes.client.rest": logging.INFO}


def parse_level(text: str) -> int:
    """"debug", "INFO", "warn", ... or a number, to a logging level."""
    name = text.strip().lower()
    if name in _LEVELS:
        return _LEVELS[name]
    if name.isdigit():
        return int(name)
    raise ValueError(f"log level {text!r}: use one of debug, info, warning, error, critical")


class _HoldSelfConfiguredLogger(logging.Filter):
    """On a library logger: drops its own handlers, keeps it propagating, floors its level.

    A logger's own filters run for every record logged on it, so this also undoes the
    setup the library repeats when it is first imported after `setup_logging`.
    """

    def __init__(self, logger: logging.Logger, floor: int) -> None:
        super().__init__()
        self.logger, self.floor = logger, floor

    def filter(self, record: logging.LogRecord) -> bool:
        _detach_handlers(self.logger)
        self.logger.propagate = True
        return record.levelno >= self.floor


def _detach_handlers(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


def _hold(name: str, floor: int = logging.WARNING) -> None:
    logger = logging.getLogger(name)
    _detach_handlers(logger)
    logger.setLevel(floor)
    logger.propagate = True
    if not any(isinstance(f, _HoldSelfConfiguredLogger) for f in logger.filters):
        logger.addFilter(_HoldSelfConfiguredLogger(logger, floor))


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    logging.getLogger("controller").critical("uncaught exception", exc_info=(exc_type, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("controller").error(
        "uncaught exception in thread %s", name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def setup_logging(
    fmt: str = "text", level: str = "info", stream: TextIO | None = None
) -> logging.Handler:
    """Route all logging to one redacting handler on `stream` (default: sys.stderr).

    Idempotent: each call replaces the root logger's handlers with one new handler, so
    calling it again (tests, a reload) never duplicates lines. Also holds the Alibaba
    SDK loggers at WARNING through our handler, keeps the Kubernetes client's body dumps
    off, folds repeated library and connection-loop lines (ops/lognoise.py), and sends
    uncaught exceptions (main thread and others) through the log so their tracebacks are
    redacted too. Returns the handler.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format {fmt!r}: use text or json")
    root_level = parse_level(level)
    formatter = JsonFormatter() if fmt == "json" else TextFormatter()
    handler = _RedactingHandler(sys.stderr if stream is None else stream, formatter,
                                default_redactor())
    handler.filters.insert(0, FoldRepeats())  # before redaction: a dropped line costs nothing
    root = logging.getLogger()
    _detach_handlers(root)
    root.addHandler(handler)
    root.setLevel(root_level)
    for name in SELF_CONFIGURED_LOGGERS:
        _hold(name)
    for name, floor in _FLOORS.items():
        logging.getLogger(name).setLevel(max(root_level, floor))
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    return handler
