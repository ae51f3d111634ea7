"""SIGQUIT writes every thread's stack to stderr (the Pod's log) and the process carries on,
as a JVM does: for a controller that runs but does nothing.

Why not `faulthandler.register(SIGQUIT, all_threads=True)`: its C handler walks every
thread's state without the GIL, and a thread being created or ending at that moment (the
ops server starts one per connection, the credentials library runs a pool) can crash the
process (a test saw SIGSEGV right after SIGQUIT). `dump_stacks` runs in an ordinary thread
with the GIL, the one that hears signals (ops/signals.py, `on_quit`): safe, and it answers
whatever the main thread is doing (a Python handler would wait for the main thread, which
spends its life in a wait in C). Frames only (file, line, function), never variables, so no
values; the format is faulthandler's.
"""

from __future__ import annotations

import sys
import threading
import traceback
from typing import TextIO


def format_threads(current: int | None = None) -> str:
    """Every live thread's stack, most recent call first, named as threading names it."""
    names = {t.ident: t.name for t in threading.enumerate()}
    lines: list[str] = []
    for ident, top in sys._current_frames().items():
        label = "Current thread" if ident == current else "Thread"
        lines.append(f"{label} 0x{ident:016x} ({names.get(ident, '?')}; most recent call "
                     "first):")
        for frame in reversed(traceback.extract_stack(top)):
            lines.append(f'  File "{frame.filename}", line {frame.lineno} in {frame.name}')
        lines.append("")
    return "\n".join(lines) + "\n"


def dump_stacks(stream: TextIO | None = None) -> None:
    """Every thread's stack to `stream` (stderr), the calling thread marked as current."""
    out = stream or sys.stderr
    out.write(format_threads(threading.get_ident()))
    out.flush()
