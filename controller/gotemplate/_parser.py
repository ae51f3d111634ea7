"""Build the syntax tree of a Go text/template from its tokens.

Why this module exists: the grammar (actions, pipelines, declarations, if/range/with
with their else branches, define/template/block) is checked once when a template is
parsed, so errors that Go reports at parse time (unknown functions, undefined
variables, unbalanced ``end``) are reported before any data is seen, and a parsed
template can be cached and executed many times.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from ._base import Source, SyncBudget, TemplateError
from ._lexer import Kind, Token, tokenize

MAX_PARSE_DEPTH = 64
_KEYWORDS = {
    "if", "else", "end", "range", "with", "define", "template", "block", "break", "continue",
}


# ---- nodes -------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    offset: int
    text: str


@dataclass(frozen=True)
class Field:  # .a.b (on dot)
    offset: int
    names: tuple[str, ...]


@dataclass(frozen=True)
class Variable:  # $x.a.b
    offset: int
    name: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Chain:  # (pipeline).a.b
    offset: int
    node: Node
    names: tuple[str, ...]


@dataclass(frozen=True)
class Ident:  # a function name
    offset: int
    name: str


@dataclass(frozen=True)
class Dot:
    offset: int


@dataclass(frozen=True)
class Literal:  # string, number, bool, nil (value None)
    offset: int
    value: object
    is_nil: bool = False


@dataclass(frozen=True)
class Command:
    offset: int
    args: tuple[Node, ...]


@dataclass(frozen=True)
class Pipe:
    offset: int
    decl: tuple[str, ...]
    is_assign: bool
    cmds: tuple[Command, ...]


@dataclass(frozen=True)
class Action:
    offset: int
    pipe: Pipe


@dataclass(frozen=True)
class Control:  # if / with / range
    offset: int
    keyword: str
    pipe: Pipe
    body: tuple[Node, ...]
    else_body: tuple[Node, ...] | None


@dataclass(frozen=True)
class Call:  # {{template "name" pipeline}}
    offset: int
    name: str
    pipe: Pipe | None


@dataclass(frozen=True)
class Loop:  # break / continue
    offset: int
    keyword: str


Node = (
    Text | Field | Variable | Chain | Ident | Dot | Literal | Command | Pipe | Action | Control
    | Call | Loop
)


@dataclass
class Tree:
    """A parsed template: the main body and the templates it defines."""

    source: Source
    body: tuple[Node, ...]
    defines: dict[str, tuple[Node, ...]] = field(default_factory=dict)


def parse_tree(
    source: Source, functions: Collection[str], unsupported: Mapping[str, str],
    budget: SyncBudget | None = None,
) -> Tree:
    """Parse a template's text; raises TemplateError at the first problem, BudgetExceeded
    when its tokens would not fit ``budget`` (each is reserved before it is made)."""
    parser = _Parser(source, tokenize(source, budget), functions, unsupported)
    return parser.parse()


# ---- parser ------------------------------------------------------------------------


class _Parser:
    def __init__(
        self,
        source: Source,
        tokens: list[Token],
        functions: Collection[str],
        unsupported: Mapping[str, str],
    ) -> None:
        self.src = source
        self.tokens = tokens
        self.index = 0
        self.functions = functions
        self.unsupported = unsupported
        self.vars: list[str] = ["$"]
        self.depth = 0
        self.range_depth = 0
        self.defines: dict[str, tuple[Node, ...]] = {}

    # -- token helpers
    def _peek(self) -> Token:
        return self.tokens[self.index]

    def _next(self) -> Token:
        token = self.tokens[self.index]
        if token.kind is not Kind.EOF:
            self.index += 1
        return token

    def _skip_space(self) -> None:
        while self._peek().kind is Kind.SPACE:
            self.index += 1

    def _next_nonspace(self) -> Token:
        self._skip_space()
        return self._next()

    def _peek_nonspace(self) -> Token:
        self._skip_space()
        return self._peek()

    def _error(self, token: Token, message: str) -> TemplateError:
        return self.src.error(token.offset, message)

    def _expect_right(self, context: str) -> None:
        token = self._next_nonspace()
        if token.kind is not Kind.RIGHT:
            raise self._error(token, f"unexpected {_describe(token)} in {context}")

    # -- structure
    def parse(self) -> Tree:
        body, end = self._list(top=True)
        if end is not None:
            raise self._error(end, f"unexpected {{{{{end.value}}}}}")
        return Tree(self.src, body, self.defines)

    def _list(self, top: bool = False) -> tuple[tuple[Node, ...], Token | None]:
        """Nodes up to {{else}}, {{end}} (returned, the delimiter consumed) or EOF."""
        nodes: list[Node] = []
        while True:
            token = self._next()
            if token.kind is Kind.EOF:
                if not top:
                    raise self._error(token, "unexpected end of template: missing {{end}}")
                return tuple(nodes), None
            if token.kind is Kind.TEXT:
                nodes.append(Text(token.offset, str(token.value)))
                continue
            word = self._peek_nonspace()
            if word.kind is Kind.IDENT and word.value in ("else", "end"):
                self._next()
                return tuple(nodes), word
            node = self._action(token, top)
            if node is not None:
                nodes.append(node)

    def _action(self, left: Token, top: bool) -> Node | None:
        word = self._peek_nonspace()
        if word.kind is Kind.IDENT and word.value in _KEYWORDS:
            self._next()
            keyword = str(word.value)
            if keyword in ("if", "with", "range"):
                return self._control(word, keyword)
            if keyword in ("break", "continue"):
                if self.range_depth == 0:
                    raise self._error(word, f"{{{{{keyword}}}}} outside {{{{range}}}}")
                self._expect_right(keyword)
                return Loop(word.offset, keyword)
            if keyword == "template":
                return self._template_call(word)
            if keyword in ("define", "block"):
                if keyword == "define" and not top:
                    raise self._error(word, "{{define}} is only allowed at the top level")
                return self._define(word, keyword)
        pipe = self._pipeline("command", Kind.RIGHT)
        return Action(left.offset, pipe)

    def _enter(self, token: Token) -> None:
        self.depth += 1
        if self.depth > MAX_PARSE_DEPTH:
            raise self._error(token, f"nesting deeper than {MAX_PARSE_DEPTH} levels")

    def _control(self, word: Token, keyword: str) -> Control:
        self._enter(word)
        mark = len(self.vars)
        pipe = self._pipeline(keyword, Kind.RIGHT)
        if keyword == "range":
            self.range_depth += 1
        body, end = self._list()
        if keyword == "range":
            self.range_depth -= 1
        else_body: tuple[Node, ...] | None = None
        assert end is not None
        if end.value == "else":
            chained = self._peek_nonspace()
            if keyword != "range" and chained.kind is Kind.IDENT and chained.value == keyword:
                # {{else if ...}} / {{else with ...}}: a nested control sharing our {{end}}
                self._next()
                else_body = (self._control(chained, keyword),)
            else:
                self._expect_right("else")
                else_body, end2 = self._list()
                assert end2 is not None
                if end2.value != "end":
                    raise self._error(end2, f"expected {{{{end}}}} after {{{{else}}}} of {keyword}")
                self._expect_right("end")
        else:
            self._expect_right("end")
        del self.vars[mark:]
        self.depth -= 1
        return Control(word.offset, keyword, pipe, body, else_body)

    def _template_name(self, word: Token, keyword: str) -> str:
        token = self._next_nonspace()
        if token.kind is not Kind.STRING:
            raise self._error(token, f"{{{{{keyword}}}}} needs a quoted template name")
        return str(token.value)

    def _template_call(self, word: Token) -> Call:
        name = self._template_name(word, "template")
        if self._peek_nonspace().kind is Kind.RIGHT:
            self._next()
            return Call(word.offset, name, None)
        return Call(word.offset, name, self._pipeline("template", Kind.RIGHT))

    def _define(self, word: Token, keyword: str) -> Node | None:
        name = self._template_name(word, keyword)
        pipe: Pipe | None = None
        if keyword == "block":
            pipe = self._pipeline("block", Kind.RIGHT)
        else:
            self._expect_right("define")
        if name in self.defines:
            raise self._error(word, f"template {name!r} is defined twice")
        saved_vars, saved_range = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        self._enter(word)
        body, end = self._list()
        self.depth -= 1
        self.vars, self.range_depth = saved_vars, saved_range
        if end is None or end.value != "end":
            raise self._error(word, f"{{{{{keyword}}}}} without its {{{{end}}}}")
        self._expect_right("end")
        self.defines[name] = body
        return Call(word.offset, name, pipe) if keyword == "block" else None

    # -- pipelines
    def _pipeline(self, context: str, end: Kind) -> Pipe:
        start = self._peek_nonspace()
        decl, is_assign = self._declaration(context)
        cmds: list[Command] = []
        while True:
            token = self._peek_nonspace()
            if token.kind is end:
                self._next()
                break
            if token.kind in (Kind.RIGHT, Kind.RPAREN, Kind.EOF):
                raise self._error(token, f"unexpected {_describe(token)} in {context}")
            cmds.append(self._command(end))
        if not cmds:
            raise self._error(start, f"missing value for {context}")
        for stage, cmd in enumerate(cmds[1:], start=2):
            if not isinstance(cmd.args[0], Ident):
                raise self._error(
                    _token_at(cmd.offset), f"pipeline stage {stage} must call a function"
                )
        for name in decl:
            if not is_assign:
                self.vars.append(name)
        return Pipe(start.offset, tuple(decl), is_assign, tuple(cmds))

    def _declaration(self, context: str) -> tuple[list[str], bool]:
        save = self.index
        first = self._peek_nonspace()
        if first.kind is not Kind.VAR:
            return [], False
        self._next()
        names = [str(first.value)]
        after = self._peek_nonspace()
        if after.kind is Kind.COMMA and context == "range":
            self._next()
            second = self._next_nonspace()
            if second.kind is not Kind.VAR:
                raise self._error(second, "range can only declare variables")
            names.append(str(second.value))
            after = self._peek_nonspace()
            if after.kind is not Kind.DECLARE and after.kind is not Kind.ASSIGN:
                raise self._error(after, "expected := or = after range variables")
        if after.kind in (Kind.DECLARE, Kind.ASSIGN):
            self._next()
            is_assign = after.kind is Kind.ASSIGN
            if is_assign:
                for name in names:
                    if name not in self.vars:
                        raise self._error(first, f"undefined variable {name}")
            return names, is_assign
        self.index = save
        return [], False

    def _command(self, end: Kind) -> Command:
        start = self._peek_nonspace()
        args: list[Node] = []
        while True:
            self._skip_space()
            token = self._peek()
            if token.kind in (end, Kind.PIPE, Kind.RIGHT, Kind.RPAREN, Kind.EOF):
                break
            args.append(self._operand())
            after = self._peek()
            if after.kind not in (Kind.SPACE, end, Kind.PIPE, Kind.RIGHT, Kind.RPAREN):
                raise self._error(after, f"unexpected {_describe(after)} in operand")
        if not args:
            raise self._error(start, "empty command")
        if self._peek().kind is Kind.PIPE:
            self._next()
            if self._peek_nonspace().kind in (end, Kind.RIGHT, Kind.RPAREN):
                raise self._error(self._peek(), "missing command after |")
        first = args[0]
        if len(args) > 1 and isinstance(first, Literal | Dot):
            raise self._error(start, "can't give argument to non-function")
        return Command(start.offset, tuple(args))

    def _operand(self) -> Node:
        node = self._term()
        names: list[str] = []
        while self._peek().kind is Kind.FIELD:
            names.append(str(self._next().value))
        if not names:
            return node
        if isinstance(node, Field):
            return Field(node.offset, node.names + tuple(names))
        if isinstance(node, Variable):
            return Variable(node.offset, node.name, node.names + tuple(names))
        if isinstance(node, Pipe | Dot):
            return Chain(node.offset, node, tuple(names))
        raise self._error(_token_at(node.offset), "unexpected . after term")

    def _term(self) -> Node:
        token = self._next()
        kind, value = token.kind, token.value
        if kind is Kind.IDENT:
            return self._identifier(token)
        if kind is Kind.DOT:
            return Dot(token.offset)
        if kind is Kind.FIELD:
            return Field(token.offset, (str(value),))
        if kind is Kind.VAR:
            if value not in self.vars:
                raise self._error(token, f"undefined variable {value}")
            return Variable(token.offset, str(value))
        if kind in (Kind.STRING, Kind.NUMBER, Kind.CHAR):
            return Literal(token.offset, value)
        if kind is Kind.LPAREN:
            self._enter(token)
            pipe = self._pipeline("parenthesized pipeline", Kind.RPAREN)
            self.depth -= 1
            return pipe
        raise self._error(token, f"unexpected {_describe(token)} in operand")

    def _identifier(self, token: Token) -> Node:
        name = str(token.value)
        if name == "true" or name == "false":
            return Literal(token.offset, name == "true")
        if name == "nil":
            return Literal(token.offset, None, is_nil=True)
        if name in _KEYWORDS:
            raise self._error(token, f"unexpected keyword {name!r} in operand")
        if name in self.unsupported:
            raise self._error(
                token, f"function {name!r} is not supported: {self.unsupported[name]}"
            )
        if name not in self.functions:
            raise self._error(token, f"function {name!r} not defined")
        return Ident(token.offset, name)


def _token_at(offset: int) -> Token:
    return Token(Kind.EOF, offset)


def _describe(token: Token) -> str:
    if token.kind is Kind.IDENT:
        return f"{token.value!r}"
    text = str(token.kind.value)
    if token.kind in (Kind.STRING, Kind.NUMBER, Kind.CHAR, Kind.EOF):
        return text  # never echo literal text
    return repr(text)
