"""A parser for Logic Apps Workflow Definition Language expressions, and a small evaluator.

The parser covers the whole expression grammar the workflow uses: string, number and
boolean literals, function calls, ``['key']`` / ``?['key']`` / ``.key`` member access and
``[0]`` indexing. It exists so the tests can find every reference an expression makes
(``parameters('x')``, ``body('Action')``, ...) instead of matching text with regexes,
which would miss nested calls.

The evaluator implements only the functions the container-group body needs, with
``utcNow`` and ``guid`` fixed; it lets the tests render that body from parameter defaults.

Errors: ExpressionError (a subclass of ValueError) for text that does not parse, an unknown
function during evaluation, or a name missing from the evaluation context.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any


class ExpressionError(ValueError):
    """An expression does not parse or cannot be evaluated."""


@dataclasses.dataclass(frozen=True)
class Literal:
    value: Any


@dataclasses.dataclass(frozen=True)
class Call:
    name: str
    args: tuple


@dataclasses.dataclass(frozen=True)
class Member:
    target: Any
    key: Any  # a node
    optional: bool


_TOKEN = re.compile(r"""
    \s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>\?\[|[()\[\],.])
    )""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ExpressionError(f"cannot read expression {text!r} at position {pos}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise ExpressionError(f"expected {value or 'more'} in expression {self.text!r}")
        self.i += 1
        return tok

    def parse(self):
        node = self.expr()
        if self.peek() is not None:
            raise ExpressionError(f"unexpected {self.peek()[1]!r} in expression {self.text!r}")
        return node

    def expr(self):
        kind, value = self.take()
        if kind == "string":
            node = Literal(value[1:-1].replace("''", "'"))
        elif kind == "number":
            node = Literal(float(value) if "." in value else int(value))
        elif kind == "name" and value in ("true", "false", "null") and self._not_call():
            node = Literal({"true": True, "false": False, "null": None}[value])
        elif kind == "name":
            self.take("(")
            args = []
            if self.peek() and self.peek()[1] != ")":
                args.append(self.expr())
                while self.peek() and self.peek()[1] == ",":
                    self.take(",")
                    args.append(self.expr())
            self.take(")")
            node = Call(value, tuple(args))
        else:
            raise ExpressionError(f"unexpected {value!r} in expression {self.text!r}")
        while self.peek() and self.peek()[1] in ("[", "?[", "."):
            _, op = self.take()
            if op == ".":
                node = Member(node, Literal(self.take()[1]), False)
            else:
                key = self.expr()
                self.take("]")
                node = Member(node, key, op == "?[")
        return node

    def _not_call(self) -> bool:
        nxt = self.toks[self.i] if self.i < len(self.toks) else None
        return nxt is None or nxt[1] != "("


def parse(text: str):
    """Parse one expression (without its leading ``@``). Raises ExpressionError."""
    return _Parser(text).parse()


def expressions_in(value: str) -> list[str]:
    """The expressions inside one JSON string value, without ``@`` / ``@{ }``.

    ``"@f()"`` is one whole-value expression; ``"a @{f()} b"`` holds interpolations;
    ``"@@..."`` is an escaped literal ``@``. Raises ExpressionError on an unclosed ``@{``.
    """
    if value.startswith("@@"):
        return []
    if value.startswith("@") and not value.startswith("@{"):
        return [value[1:]]
    found, i = [], 0
    while True:
        start = value.find("@{", i)
        if start < 0:
            return found
        if start > 0 and value[start - 1] == "@":
            i = start + 2
            continue
        depth, j, in_str = 0, start + 2, False
        while j < len(value):
            ch = value[j]
            if in_str:
                if ch == "'":
                    if j + 1 < len(value) and value[j + 1] == "'":
                        j += 1
                    else:
                        in_str = False
            elif ch == "'":
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                if depth == 0:
                    break
                depth -= 1
            j += 1
        else:
            raise ExpressionError(f"unclosed @{{ in {value!r}")
        found.append(value[start + 2:j])
        i = j + 1


def walk(node) -> Iterator[Any]:
    """Every node of a parsed expression, depth first."""
    yield node
    if isinstance(node, Call):
        for a in node.args:
            yield from walk(a)
    elif isinstance(node, Member):
        yield from walk(node.target)
        yield from walk(node.key)


# --- evaluation (tests only need a subset) -----------------------------------------------

FIXED_NOW = "2026-01-02T03:04:05.0000000Z"
FIXED_GUID = "0123abcd-4567-89ef-0123-456789abcdef"


def _format_datetime(ts: str, fmt: str = "o") -> str:
    import datetime as dt
    t = dt.datetime.fromisoformat(ts.replace("Z", "+00:00").split(".")[0])
    mapping = {"yyyy": "%Y", "MM": "%m", "dd": "%d", "HH": "%H", "mm": "%M", "ss": "%S"}
    out = fmt
    for k, v in mapping.items():
        out = out.replace(k, v)
    return t.strftime(out)


def _ticks(ts: str) -> int:
    import datetime as dt
    t = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return int((t - dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc)).total_seconds() * 10_000_000)


_FUNCS = {
    "concat": lambda *a: "".join(str(x) for x in a) if all(isinstance(x, str) for x in a)
    else [y for x in a for y in x],
    "json": lambda s: json.loads(s) if isinstance(s, str) else s,
    "addProperty": lambda o, k, v: {**o, k: v},
    "createArray": lambda *a: list(a),
    "string": lambda v: v if isinstance(v, str) else json.dumps(v),
    "coalesce": lambda *a: next((x for x in a if x is not None), None),
    "equals": lambda a, b: a == b,
    "not": lambda a: not a,
    "and": lambda *a: all(a),
    "or": lambda *a: any(a),
    "length": len,
    "contains": lambda c, v: v in c,
    "range": lambda start, count: list(range(start, start + count)),
    "substring": lambda s, start, length=None: s[start:] if length is None else s[start:start + length],
    "utcNow": lambda fmt=None: FIXED_NOW if fmt is None else _format_datetime(FIXED_NOW, fmt),
    "formatDateTime": _format_datetime,
    "guid": lambda fmt=None: FIXED_GUID,
    "greater": lambda a, b: a > b,
    "ticks": _ticks,
}


def evaluate(node, context: Mapping[str, Any]) -> Any:
    """Evaluate a parsed expression.

    ``context`` maps ``parameters``, ``variables``, ``items`` (Foreach name -> current item)
    and ``outputs`` (action name -> output) to dicts, and ``item`` to the current element
    of a Query (``item()``). Raises ExpressionError for an unknown
    function or a missing name.
    """
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Member):
        target = evaluate(node.target, context)
        key = evaluate(node.key, context)
        if target is None and node.optional:
            return None
        try:
            return target[key]
        except (KeyError, IndexError, TypeError):
            if node.optional:
                return None
            raise ExpressionError(f"no member {key!r}") from None
    name = node.name
    args = [evaluate(a, context) for a in node.args]
    lookups = {"parameters": "parameters", "variables": "variables", "items": "items",
               "outputs": "outputs", "body": "outputs"}
    if name in lookups:
        table = context.get(lookups[name], {})
        if args[0] not in table:
            raise ExpressionError(f"{name}({args[0]!r}) is not in the evaluation context")
        return table[args[0]]
    if name == "item":
        if "item" not in context:
            raise ExpressionError("item() used outside a Query/Select element")
        return context["item"]
    if name not in _FUNCS:
        raise ExpressionError(f"function {name}() is not implemented by this evaluator")
    return _FUNCS[name](*args)


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Return ``value`` (any JSON) with every expression replaced by its evaluated result.

    Raises ExpressionError as ``evaluate`` does.
    """
    if isinstance(value, dict):
        return {k: render(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if not isinstance(value, str):
        return value
    if value.startswith("@@"):
        return value[1:]
    if value.startswith("@") and not value.startswith("@{"):
        return evaluate(parse(value[1:]), context)
    out = value
    for expr in expressions_in(value):
        result = evaluate(parse(expr), context)
        out = out.replace("@{" + expr + "}", result if isinstance(result, str) else json.dumps(result), 1)
    return out
