"""Execute a parsed template over data, with Go's semantics and this project's bounds.

Why this module exists: running a template is where untrusted input (the template from
a user's ExternalSecret or ConfigMap) meets secret values, so this is the one place
that enforces the sandbox: only mapping keys and list items are reachable, every step,
byte of output, level of nesting and range iteration is counted, and every error is
raised with the template's name and the position of the node that failed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from ._base import (
    DICT_SLOT,
    LIST_SLOT,
    STR_OVERHEAD,
    BudgetExceeded,
    FuncError,
    Limits,
    Source,
    SyncBudget,
)
from ._funcs import FUNCTIONS, SPECIAL
from ._parser import (
    Action,
    Call,
    Chain,
    Command,
    Control,
    Dot,
    Field,
    Ident,
    Literal,
    Loop,
    Node,
    Pipe,
    Text,
    Tree,
    Variable,
)
from ._values import Budget, StringMap, byte_len, clean_text, format_value, kind, truth

_MISSING = object()  # no value piped in from a previous command


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class Executor:
    """One execution of one template; not reused."""

    def __init__(self, tree: Tree, limits: Limits, missing_key_error: bool = True,
                 budget: SyncBudget | None = None) -> None:
        self.tree = tree
        self.sync = budget if budget is not None else SyncBudget()
        self.missing_key_error = missing_key_error
        self.src: Source = tree.source
        self.limits = limits
        self.max_bytes = limits.max_output_bytes
        self.max_depth = limits.max_depth
        self.steps = 0
        self.iterations = 0
        self.depth = 0
        self.out: list[str] = []
        self.size = 0
        self.vars: list[tuple[str, Any]] = []
        self.offset = 0  # the node being evaluated, for errors raised by bounds

    # -- the functions' Context
    def charge(self, steps: int) -> None:
        self.sync.charge(steps)
        self.steps += steps
        if self.limits.max_steps is not None and self.steps > self.limits.max_steps:
            raise FuncError(f"evaluation exceeded {self.limits.max_steps} steps")

    def reserve(self, size: int) -> None:
        """Bytes about to be built, reserved from the sync's budget before building them."""
        self.sync.reserve(size)

    def budget(self) -> Budget:
        return Budget(self.charge, self.max_bytes, self.reserve)

    # -- entry
    def run(self, data: Any) -> str:
        self.vars = [("$", data)]
        try:
            self._walk(data, self.tree.body)
        except (_Break, _Continue):  # the parser only allows them inside range
            self._fail(self.offset, "break or continue outside range")
        except RecursionError:
            self._fail(self.offset, "template nested too deeply")
        except BudgetExceeded as exceeded:
            raise self.src.error(self.offset, str(exceeded), exceeded) from None
        return "".join(self.out)

    # -- errors
    def _fail(self, offset: int, message: str) -> NoReturn:
        raise self.src.error(offset, message)

    def _step(self, offset: int) -> None:
        self.offset = offset
        self.sync.charge(1)
        self.steps += 1
        if self.limits.max_steps is not None and self.steps > self.limits.max_steps:
            self._fail(offset, f"evaluation exceeded {self.limits.max_steps} steps")

    def _enter(self, offset: int) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            self._fail(offset, f"nesting deeper than {self.max_depth} levels")

    def _write(self, text: str) -> None:
        # The output is joined at the end: each piece is counted as if copied once more.
        self.sync.reserve(len(text) * (1 if text.isascii() else 4) + LIST_SLOT)
        self.size += byte_len(text)
        if self.size > self.max_bytes:
            self._fail(self.offset, f"output larger than {self.max_bytes} bytes")
        self.out.append(text)

    # -- variables
    def _lookup(self, name: str, offset: int) -> Any:
        for var_name, value in reversed(self.vars):
            if var_name == name:
                return value
        self._fail(offset, f"undefined variable {name}")

    def _assign(self, name: str, value: Any, offset: int) -> None:
        for index in range(len(self.vars) - 1, -1, -1):
            if self.vars[index][0] == name:
                self.vars[index] = (name, value)
                return
        self._fail(offset, f"undefined variable {name}")

    # -- statements
    def _walk(self, dot: Any, nodes: tuple[Node, ...]) -> None:
        for node in nodes:
            self._step(node.offset)
            if isinstance(node, Text):
                self._write(node.text)
            elif isinstance(node, Action):
                value = self._pipeline(dot, node.pipe)
                if not node.pipe.decl:
                    self._write(self._printable(value, node.offset))
            elif isinstance(node, Control):
                self._control(dot, node)
            elif isinstance(node, Call):
                self._call(dot, node)
            elif isinstance(node, Loop):
                raise _Break() if node.keyword == "break" else _Continue()
            else:  # pragma: no cover - the parser builds no other statement
                self._fail(node.offset, "unexpected node")

    def _printable(self, value: Any, offset: int) -> str:
        try:
            return format_value(value, self.max_depth, "<no value>", self.max_bytes, self.sync)
        except BudgetExceeded:
            raise
        except FuncError as error:
            self._fail(offset, str(error))

    def _control(self, dot: Any, node: Control) -> None:
        self._enter(node.offset)
        mark = len(self.vars)
        try:
            if node.keyword == "range":
                self._range(dot, node)
                return
            value = self._pipeline(dot, node.pipe)
            if truth(value):
                self._walk(value if node.keyword == "with" else dot, node.body)
            elif node.else_body is not None:
                self._walk(dot, node.else_body)
        finally:
            del self.vars[mark:]
            self.depth -= 1

    def _range(self, dot: Any, node: Control) -> None:
        pipe = node.pipe
        value = self._pipeline(dot, Pipe(pipe.offset, (), False, pipe.cmds))
        items = self._range_items(value, node.offset)
        mark = len(self.vars)
        ran = False
        for key, element in items:
            ran = True
            self.iterations += 1
            if self.iterations > self.limits.max_range_iterations:
                self._fail(node.offset, f"range exceeded {self.limits.max_range_iterations} "
                           "iterations")
            self._step(node.offset)
            self._bind_range(pipe, key, element)
            try:
                self._walk(element, node.body)
            except _Break:
                break
            except _Continue:
                continue
            finally:
                del self.vars[mark:]
        if not ran and node.else_body is not None:
            self._walk(dot, node.else_body)

    def _range_items(self, value: Any, offset: int) -> Iterable[tuple[Any, Any]]:
        """The (key, element) pairs, produced one at a time (a list or an int is never
        copied); a map's keys are sorted first, their room reserved before."""
        if value is None:
            return ()
        if isinstance(value, list):
            return enumerate(value)
        if isinstance(value, dict):
            # the sorted list and a bytes copy of each key for the order
            self.sync.reserve(sum(2 * LIST_SLOT + 4 * len(k) + STR_OVERHEAD for k in value))
            self.charge(len(value) // 16)
            # a key the body removes (unset) before it is reached is skipped, as in Go
            return ((k, value[k]) for k in sorted(value, key=_key_bytes) if k in value)
        if isinstance(value, int) and not isinstance(value, bool):
            if value > self.limits.max_range_iterations:
                self._fail(offset, f"range exceeded {self.limits.max_range_iterations} "
                           "iterations")
            return ((i, i) for i in range(max(value, 0)))
        self._fail(offset, f"range can't iterate over a {kind(value)}")

    def _bind_range(self, pipe: Pipe, key: Any, element: Any) -> None:
        if not pipe.decl:
            return
        values = [element] if len(pipe.decl) == 1 else [key, element]
        for name, value in zip(pipe.decl, values, strict=True):
            if pipe.is_assign:
                self._assign(name, value, pipe.offset)
            else:
                self.vars.append((name, value))

    def _call(self, dot: Any, node: Call) -> None:
        body = self.tree.defines.get(node.name)
        if body is None:
            self._fail(node.offset, f"no such template {node.name!r}")
        value = None if node.pipe is None else self._pipeline(dot, node.pipe)
        self._enter(node.offset)
        saved = self.vars
        self.vars = [("$", value)]
        try:
            self._walk(value, body)
        finally:
            self.vars = saved
            self.depth -= 1

    # -- expressions
    def _pipeline(self, dot: Any, pipe: Pipe) -> Any:
        value: Any = _MISSING
        for cmd in pipe.cmds:
            value = self._command(dot, cmd, value)
        for name in pipe.decl:
            if pipe.is_assign:
                self._assign(name, value, pipe.offset)
            else:
                self.vars.append((name, value))
        return value

    def _command(self, dot: Any, cmd: Command, final: Any) -> Any:
        self._step(cmd.offset)
        first = cmd.args[0]
        if isinstance(first, Ident):
            return self._function(dot, first, cmd.args[1:], final)
        if len(cmd.args) > 1 or final is not _MISSING:
            self._fail(first.offset, "can't give argument to non-function")
        if isinstance(first, Literal) and first.is_nil:
            self._fail(first.offset, "nil is not a command")
        return self._arg(dot, first)

    def _arg(self, dot: Any, node: Node) -> Any:
        self._step(node.offset)
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Dot):
            return dot
        if isinstance(node, Field):
            return self._fields(dot, node.names, node.offset)
        if isinstance(node, Variable):
            return self._fields(self._lookup(node.name, node.offset), node.names, node.offset)
        if isinstance(node, Pipe):
            self._enter(node.offset)
            try:
                return self._pipeline(dot, node)
            finally:
                self.depth -= 1
        if isinstance(node, Chain):
            return self._fields(self._arg(dot, node.node), node.names, node.offset)
        if isinstance(node, Ident):
            return self._function(dot, node, (), _MISSING)
        self._fail(node.offset, "unexpected operand")  # pragma: no cover

    def _fields(self, value: Any, names: tuple[str, ...], offset: int) -> Any:
        for name in names:
            if isinstance(value, Mapping):
                if name in value:
                    value = value[name]
                elif self.missing_key_error:
                    self._fail(offset, f"map has no entry for key {name!r}")
                else:
                    value = None
            elif value is None:
                if self.missing_key_error:
                    self._fail(offset, f"nil data; no entry for key {name!r}")
            else:
                self._fail(offset, f"can't evaluate field {name!r} in type {kind(value)}")
        return value

    def _function(self, dot: Any, ident: Ident, arg_nodes: tuple[Node, ...], final: Any) -> Any:
        name = ident.name
        count = len(arg_nodes) + (final is not _MISSING)
        low, high = SPECIAL[name] if name in SPECIAL else FUNCTIONS[name][1:]
        if count < low or (high is not None and count > high):
            expected = f"{low}" if low == high else f"at least {low}" if high is None else (
                f"{low} to {high}")
            self._fail(ident.offset, f"wrong number of args for {name}: want {expected}, "
                       f"got {count}")
        if name in SPECIAL:
            return self._special(dot, ident, arg_nodes, final)
        args = [self._arg(dot, n) for n in arg_nodes]
        if final is not _MISSING:
            args.append(final)
        return self._invoke(ident, args)

    def _invoke(self, ident: Ident, args: list[Any]) -> Any:
        self.offset = ident.offset
        try:
            self.charge(1 + sum(_cost(a) for a in args))
            result = FUNCTIONS[ident.name][0](self, args)
            if isinstance(result, str) and byte_len(result) > self.max_bytes:
                raise FuncError(f"result larger than {self.max_bytes} bytes")
            self.charge(_cost(result))
        except BudgetExceeded:
            raise
        except FuncError as error:
            self._fail(ident.offset, f"error calling {ident.name}: {error}")
        except RecursionError:
            self._fail(ident.offset, f"error calling {ident.name}: value nested too deeply")
        return result

    def _special(self, dot: Any, ident: Ident, arg_nodes: tuple[Node, ...], final: Any) -> Any:
        name = ident.name
        if name in ("and", "or"):
            value: Any = None
            thunks = [*arg_nodes, None] if final is not _MISSING else list(arg_nodes)
            for node in thunks:
                value = final if node is None else self._arg(dot, node)
                if truth(value) != (name == "and"):
                    return value
            return value
        message = _literal_message(arg_nodes[0]) if arg_nodes else None
        if name == "fail":
            self._fail(ident.offset, f"fail: {message or 'the template called fail'}")
        value = self._arg(dot, arg_nodes[1]) if len(arg_nodes) > 1 else final
        if value is None or value == "":
            self._fail(ident.offset, f"required: {message or 'a required value is empty'}")
        return value


def _cost(value: Any) -> int:
    """Steps for the size of an argument or result: 256 bytes of text or 16 items is one."""
    if isinstance(value, str):
        return byte_len(value) // 256
    if isinstance(value, list | dict):
        return len(value) // 16
    return 0


def _literal_message(node: Node) -> str | None:
    """A message written in the template itself; anything computed could hold a value."""
    if isinstance(node, Literal) and isinstance(node.value, str):
        return node.value
    return None


def _key_bytes(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")


def execute(tree: Tree, data: Any, limits: Limits, missing_key_error: bool,
            budget: SyncBudget | None = None) -> str:
    return Executor(tree, limits, missing_key_error, budget).run(data)


def data_root(data: Mapping[str, Any], as_string_map: bool,
              budget: SyncBudget | None = None) -> dict[str, Any]:
    """The caller's data as the template's dot (build it once per sync: it copies values).

    ESO passes a map[string]string (``index`` of a missing key gives ""); ack-secret-manager
    passes a map[string]interface{} of strings (it gives nil, printed "<no value>").
    """
    root: dict[str, Any] = StringMap() if as_string_map else {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise TypeError("template data keys must be strings")
        if not isinstance(value, str | bytes):
            raise TypeError("template data values must be str or bytes")
        if budget is not None:  # bytes decoded (a copy); text not ASCII checked as UTF-8 (one)
            copied = 5 * len(value) if isinstance(value, bytes) else (
                0 if value.isascii() else 4 * len(value))
            budget.reserve(copied + 2 * STR_OVERHEAD + DICT_SLOT)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "surrogateescape")
        root[clean_text(key)] = clean_text(value)
    return root

