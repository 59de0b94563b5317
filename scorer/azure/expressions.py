"""Logic Apps Workflow Definition Language expressions: a parser and an evaluator.

The parser covers the expression grammar: string, number and boolean literals, function
calls, ``['key']`` / ``?['key']`` / ``.key`` / ``?.key`` member access and ``[0]`` indexing.
Function names are case-insensitive, as in Logic Apps (``utcnow()`` is ``utcNow()``): the
parser writes each known name as the reference spells it. The
checker (workflow_check) walks its trees to find every reference an expression makes;
the engine (scorer.twin.engine) evaluates them, with the functions of scorer.azure.functions and
the run's state for the workflow functions (parameters(), body(), items(), ...).

Errors: ExpressionError (a subclass of ValueError) for text that does not parse, an unknown
function during evaluation, or a name missing from the evaluation context.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from typing import Any


class ExpressionError(ValueError):
    """An expression does not parse or cannot be evaluated."""


# Workflow Definition Language functions (learn.microsoft.com, "Reference guide to workflow
# expression functions"); a name outside this set is a typo or an unsupported function.
WDL_FUNCTIONS = frozenset("""
action actions actionBody actionOutputs add addDays addHours addMinutes addProperty addSeconds
addToTime and array base64 base64ToBinary base64ToString binary body bool chunk coalesce concat
contains convertFromUtc convertTimeZone convertToUtc createArray dataUri dataUriToBinary
dataUriToString dateDifference dayOfMonth dayOfWeek dayOfYear decimal decodeBase64 decodeDataUri
decodeUriComponent div encodeBase64 encodeUriComponent empty endsWith equals
first float formatDateTime formatNumber formDataMultiValues formDataValue getFutureTime
getPastTime greater greaterOrEquals guid if indexOf int intersection isFloat isInt item items
iterationIndexes join json last lastIndexOf length less lessOrEquals listCallbackUrl max min mod
mul multipartBody not nthIndexOf or outputs parameters parseDateTime rand range removeProperty
replace result reverse setProperty skip slice sort split startOfDay startOfHour startOfMonth
startsWith string sub substring subtractFromTime take ticks toLower toUpper trigger triggerBody
triggerFormDataMultiValues triggerFormDataValue triggerMultipartBody triggerOutputs trim union
uriComponent uriComponentToBinary uriComponentToString uriHost uriPath uriPathAndQuery uriPort
uriQuery uriScheme utcNow variables workflow xml xpath
""".split())
#: lower-case name -> the name as the reference spells it
_CANONICAL = {name.lower(): name for name in WDL_FUNCTIONS}


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
    | (?P<number>-?(?:\d+(?:\.\d+)?|\.\d+))
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>\?\[|\?\.|[()\[\],.])
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
            node = Call(_CANONICAL.get(value.lower(), value), tuple(args))
        else:
            raise ExpressionError(f"unexpected {value!r} in expression {self.text!r}")
        while self.peek() and self.peek()[1] in ("[", "?[", ".", "?."):
            _, op = self.take()
            if op in (".", "?."):
                node = Member(node, Literal(self.take()[1]), op == "?.")
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
    return [part for is_expr, part in segments(value) if is_expr]


def segments(value: str) -> list[tuple[bool, str]]:
    """A string with ``@{...}`` interpolations, cut into (is_expression, text) pieces in
    order, so that rendering replaces each interpolation where it stands (a value
    inserted earlier is never read again). Raises ExpressionError on an unclosed ``@{``."""
    out: list[tuple[bool, str]] = []
    i = 0
    while True:
        start = value.find("@{", i)
        while start > 0 and value[start - 1] == "@":  # "@@{" is not an interpolation
            start = value.find("@{", start + 2)
        if start < 0:
            if i < len(value):
                out.append((False, value[i:]))
            return out
        end = _closing_brace(value, start + 2)
        if start > i:
            out.append((False, value[i:start]))
        out.append((True, value[start + 2:end]))
        i = end + 1


def _closing_brace(value: str, j: int) -> int:
    depth, in_str = 0, False
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
                return j
            depth -= 1
        j += 1
    raise ExpressionError(f"unclosed @{{ in {value!r}")


def walk(node) -> Iterator[Any]:
    """Every node of a parsed expression, depth first."""
    yield node
    if isinstance(node, Call):
        for a in node.args:
            yield from walk(a)
    elif isinstance(node, Member):
        yield from walk(node.target)
        yield from walk(node.key)


# --- evaluation ------------------------------------------------------------------------------

#: functions that read a run's state rather than their arguments: answered by the context
WORKFLOW_FUNCTIONS = frozenset("""
parameters variables body outputs actions actionBody actionOutputs result items item iterationIndexes
trigger triggerBody triggerOutputs workflow
""".split())

#: what DictContext answers utcNow() and guid() with, so that rendered test values are stable
FIXED_NOW = "2026-01-02T03:04:05.0000000Z"
FIXED_GUID = "0123abcd-4567-89ef-0123-456789abcdef"


class DictContext:
    """A run's state given as plain dicts, for rendering parts of a definition in
    tests: ``parameters``, ``variables``, ``items`` (Foreach name -> item), ``item``
    (a Query's current element), ``outputs`` (action name -> outputs; body() is their
    "body"), ``trigger`` (the trigger's outputs). utcNow() and guid() are fixed."""

    def __init__(self, values: Mapping[str, Any]):
        self.values = values

    def workflow_function(self, name: str, args: list) -> Any:
        v = self.values
        if name in ("parameters", "variables", "items", "outputs", "body", "actionOutputs", "actionBody"):
            key = "outputs" if name in ("body", "actionOutputs", "actionBody") else name
            table = v.get(key, {})
            if args[0] not in table:
                raise ExpressionError(f"{name}({args[0]!r}) is not in the evaluation context")
            value = table[args[0]]
            if name in ("body", "actionBody"):  # an action's body is its outputs' body, as in a run
                return value.get("body") if isinstance(value, dict) else None
            return value
        if name == "item":
            if "item" not in v:
                raise ExpressionError("item() used outside a Query/Select element")
            return v["item"]
        if name in ("triggerOutputs", "trigger"):
            return v.get("trigger", {})
        if name == "triggerBody":
            return (v.get("trigger") or {}).get("body")
        if name == "workflow" and "workflow" in v:
            return v["workflow"]
        raise ExpressionError(f"function {name}() is not available in this evaluation context")

    def override(self, name: str) -> Any:
        return {"utcNow": FIXED_NOW, "guid": FIXED_GUID}.get(name)


def _format_now(fmt: str) -> str:
    from scorer.azure.functions import Stamp
    return Stamp.parse(FIXED_NOW).format(fmt)


def evaluate(node, context: Any) -> Any:
    """Evaluate a parsed expression.

    ``context`` answers the workflow functions (parameters(), body(), items(), ...):
    an object with ``workflow_function(name, args)`` (the engine's run scopes), or a
    mapping read as a DictContext. Raises ExpressionError for an unknown function, a
    bad argument, or a name the context does not hold.
    """
    from scorer.azure.functions import FUNCTIONS, FunctionError

    if isinstance(context, Mapping):
        context = DictContext(context)
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
            raise ExpressionError(f"the value has no member {key!r}") from None
    name = node.name
    args = [evaluate(a, context) for a in node.args]  # all of them, left to right, as Logic Apps does
    if name in WORKFLOW_FUNCTIONS:
        return context.workflow_function(name, args)
    fixed = context.override(name) if hasattr(context, "override") else None
    if fixed is not None:
        return fixed if name == "guid" or not args else _format_now(args[0])
    if name not in FUNCTIONS:
        raise ExpressionError(f"function {name}() is not implemented")
    try:
        return FUNCTIONS[name](*args)
    except FunctionError as exc:
        raise ExpressionError(str(exc)) from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        raise ExpressionError(f"{name}() cannot take these arguments ({exc})") from None


def render(value: Any, context: Any) -> Any:
    """Return ``value`` (any JSON) with every expression replaced by its evaluated result.

    A whole-value expression ("@f()") keeps its result's type; interpolations
    ("a @{f()} b") are written into the text as Logic Apps writes values (see
    scorer.azure.functions.to_text); "@@" is a literal "@". Raises ExpressionError.
    """
    from scorer.azure.functions import to_text

    if isinstance(value, dict):
        return {render(k, context) if isinstance(k, str) and "@" in k else k: render(v, context)
                for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context) for v in value]
    if not isinstance(value, str):
        return value
    if value.startswith("@@"):
        return value[1:]
    if value.startswith("@") and not value.startswith("@{"):
        return evaluate(parse(value[1:]), context)
    parts = segments(value)
    if not any(is_expr for is_expr, _ in parts):
        return value
    return "".join(to_text(evaluate(parse(text), context)) if is_expr else text for is_expr, text in parts)


_DURATION = re.compile(r"^P(?!$)(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def iso_duration_seconds(text: Any) -> float:
    """Seconds in an ISO 8601 duration such as PT1H, P1DT30M or PT0.3S. Raises ExpressionError."""
    m = _DURATION.match(str(text))
    if not m:
        raise ExpressionError(f"{text!r} is not an ISO 8601 duration (e.g. PT1H, PT15S)")
    d, h, mi, s = (float(x or 0) for x in m.groups())
    return d * 86400 + h * 3600 + mi * 60 + s
