"""Check that a workflow definition's expressions and runAfter refer only to things that exist.

Microsoft's workflow-definition schema (and the local subset in ../shared/schemas) cannot
see references between parts of a definition; a renamed action or a misspelt parameter is
only found by Logic Apps when a run reaches it. This module finds them offline:

* ``parameters('x')``: ``x`` is declared in ``definition.parameters``;
* ``variables('x')`` and SetVariable/AppendTo*Variable names: ``x`` is initialised by an
  InitializeVariable action;
* ``body/outputs/actions/result('A')``: ``A`` is an action of the definition;
* ``items('L')``: ``L`` is a Foreach that encloses the expression;
  ``iterationIndexes('U')``: ``U`` is an enclosing Until;
* every function called is a Workflow Definition Language function;
* every ``runAfter`` key names an action in the same scope (Logic Apps requires this),
  and action names are unique across the definition.

``problems(definition)`` returns a list of human-readable problems (empty when clean). It
raises nothing: an expression that does not parse is reported as a problem too.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from scorer.azure.expressions import Call, ExpressionError, Literal, expressions_in, parse, walk

# Workflow Definition Language functions (learn.microsoft.com, "Reference guide to workflow
# expression functions"); a name outside this set is a typo or an unsupported function.
WDL_FUNCTIONS = frozenset("""
action actions actionBody actionOutputs add addDays addHours addMinutes addProperty addSeconds
addToTime and array base64 base64ToBinary base64ToString binary body bool chunk coalesce concat
contains convertFromUtc convertTimeZone convertToUtc createArray dataUri dataUriToBinary
dataUriToString dateDifference dayOfMonth dayOfWeek dayOfYear decimal decodeBase64 decodeDataUri
decodeUriComponent div encodeBase64 encodeUriComponent encodeURIComponent empty endsWith equals
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

_ACTION_REFS = {"body", "outputs", "actions", "action", "actionBody", "actionOutputs", "result"}
_VARIABLE_ACTIONS = {"SetVariable", "AppendToArrayVariable", "AppendToStringVariable",
                     "IncrementVariable", "DecrementVariable"}


def iter_actions(actions: dict, enclosing: tuple = ()) -> Iterator[tuple[str, dict, dict, tuple]]:
    """Yield (name, action, sibling actions, enclosing loop/scope actions) for every action, nested too."""
    for name, action in actions.items():
        yield name, action, actions, enclosing
        inner = enclosing + ((name, action),)
        if isinstance(action.get("actions"), dict):
            yield from iter_actions(action["actions"], inner)
        if isinstance(action.get("else"), dict) and isinstance(action["else"].get("actions"), dict):
            yield from iter_actions(action["else"]["actions"], inner)
        for case in (action.get("cases") or {}).values():
            yield from iter_actions(case.get("actions", {}), inner)
        if isinstance(action.get("default"), dict):
            yield from iter_actions(action["default"].get("actions", {}), inner)


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k, f"{path}.<key {k}>")
            yield from _strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def _own_fields(action: dict) -> dict:
    # Nested actions are visited on their own, with their own enclosing loops.
    return {k: v for k, v in action.items() if k not in ("actions", "else", "cases", "default")}


def problems(definition: dict) -> list[str]:
    """Every dangling reference in a workflow definition, as readable messages (empty if none)."""
    out: list[str] = []
    params = set(definition.get("parameters", {}))
    all_actions = list(iter_actions(definition.get("actions", {})))
    names = [n for n, *_ in all_actions]
    action_names = set(names)
    for dup in sorted({n for n in names if names.count(n) > 1}):
        out.append(f"action name {dup!r} is used more than once")
    variables = {v.get("name") for _, a, _, _ in all_actions if a.get("type") == "InitializeVariable"
                 for v in a.get("inputs", {}).get("variables", [])}

    def check_strings(owner: str, value: Any, enclosing: tuple) -> None:
        loops = {n: a.get("type") for n, a in enclosing}
        for path, text in _strings(value, owner):
            try:
                exprs = expressions_in(text)
                trees = [parse(e) for e in exprs]
            except ExpressionError as exc:
                out.append(f"{path}: {exc}")
                continue
            for tree in trees:
                for node in walk(tree):
                    if not isinstance(node, Call):
                        continue
                    arg = node.args[0].value if node.args and isinstance(node.args[0], Literal) else None
                    if node.name not in WDL_FUNCTIONS:
                        out.append(f"{path}: unknown function {node.name}()")
                    elif node.name == "parameters" and arg not in params:
                        out.append(f"{path}: parameters({arg!r}) is not declared")
                    elif node.name == "variables" and arg not in variables:
                        out.append(f"{path}: variables({arg!r}) is never initialised")
                    elif node.name in _ACTION_REFS and arg not in action_names:
                        out.append(f"{path}: {node.name}({arg!r}) names no action")
                    elif node.name == "items" and loops.get(arg) != "Foreach":
                        out.append(f"{path}: items({arg!r}) is not inside that Foreach")
                    elif node.name == "iterationIndexes" and loops.get(arg) != "Until":
                        out.append(f"{path}: iterationIndexes({arg!r}) is not inside that Until")

    for tname, trigger in definition.get("triggers", {}).items():
        check_strings(f"triggers.{tname}", trigger, ())
    for name, action, siblings, enclosing in all_actions:
        check_strings(f"actions.{name}", _own_fields(action), enclosing)
        for target in action.get("runAfter", {}):
            if target not in siblings:
                out.append(f"actions.{name}.runAfter: {target!r} is not an action in the same scope")
            elif target == name:
                out.append(f"actions.{name}.runAfter: an action cannot run after itself")
        if action.get("type") in _VARIABLE_ACTIONS and action.get("inputs", {}).get("name") not in variables:
            out.append(f"actions.{name}: variable {action.get('inputs', {}).get('name')!r} is never initialised")
    for oname, output in definition.get("outputs", {}).items():
        check_strings(f"outputs.{oname}", output, ())
    return out
