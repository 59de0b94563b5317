"""Check a workflow definition as Logic Apps does when it is saved, and list every problem.

Microsoft's workflow-definition schema (and the local subset in ../shared/schemas) cannot
see references between parts of a definition, placement rules or limits; Logic Apps checks
them when a definition is saved, and the engine (scorer.twin.engine) refuses a definition
with the same list before any of it runs. One validation serves both, and it reports every
problem at once, not only the first:

* references: ``parameters('x')`` is declared; ``variables('x')`` and the variable actions
  name a variable initialised by an InitializeVariable action; ``body/outputs/actions/
  result('A')`` name an action of the definition; ``items('L')`` is inside that Foreach and
  ``iterationIndexes('U')`` inside that Until; every function is a Workflow Definition
  Language function (in any case); every expression parses;
* ``runAfter``: each key names an action in the same scope, statuses exist, and the actions
  of a scope form no cycle; action names are unique across the definition;
* placement ("Create variables", "Response" restrictions in the actions reference):
  InitializeVariable only at the top level; Response and Terminate never inside a Foreach or
  an Until. (The reference also says a Response cannot be in a parallel branch, but Logic Apps
  saves Microsoft's own templates that have one, cancel-runs-by-tracking-id among them, so
  that is not checked at save and is not refused here.)
* variable types: an InitializeVariable's type is one of the six, its value fits it, and
  Increment/Decrement name an Integer or Float variable, AppendToArray an Array,
  AppendToString a String;
* the definition limits of "Limits and configuration" (Consumption): actions 500, nesting
  depth 8, triggers 10, variables 250, parameters 50, outputs 10, names 80 characters,
  descriptions 256, expressions 8,192 characters; Foreach concurrency 1-50; Until count
  1-5,000; retry policies: at most 90 retries, intervals from 5 seconds to 1 day.

``problems(definition)`` returns the list (empty when clean) and raises nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from scorer.azure.expressions import (WDL_FUNCTIONS, Call, ExpressionError, Literal, expressions_in,
                                      iso_duration_seconds, parse, walk)

STATUSES = ("Succeeded", "Failed", "Skipped", "TimedOut", "Cancelled")
VARIABLE_TYPES = {"array": list, "boolean": bool, "float": (int, float), "integer": int, "object": dict,
                  "string": str}
# "Limits and configuration for Azure Logic Apps", definition and looping limits (Consumption)
LIMITS = {"actions": 500, "depth": 8, "triggers": 10, "variables": 250, "parameters": 50, "outputs": 10,
          "name": 80, "description": 256, "expression": 8192, "repetitions": (1, 50), "until": (1, 5000),
          "retries": 90, "retry_interval": (5.0, 86400.0)}

_ACTION_REFS = {"body", "outputs", "actions", "action", "actionBody", "actionOutputs", "result"}
_VARIABLE_ACTIONS = {"setvariable": None, "appendtoarrayvariable": "array", "appendtostringvariable": "string",
                     "incrementvariable": "number", "decrementvariable": "number"}
_LOOPS = {"foreach", "until"}


def iter_actions(actions: dict, enclosing: tuple = ()) -> Iterator[tuple[str, dict, dict, tuple]]:
    """Yield (name, action, sibling actions, enclosing) for every action, nested too;
    ``enclosing`` holds (name, action, its siblings) for each scope around the action."""
    if not isinstance(actions, dict):
        return
    for name, action in actions.items():
        if not isinstance(action, dict):
            continue
        yield name, action, actions, enclosing
        inner = enclosing + ((name, action, actions),)
        for child in child_scopes(action):
            yield from iter_actions(child, inner)


def child_scopes(action: dict) -> list[dict]:
    """The action maps nested in an action: its ``actions``, ``else``, Switch cases and default."""
    out = [action.get("actions")]
    if isinstance(action.get("else"), dict):
        out.append(action["else"].get("actions"))
    out += [c.get("actions") for c in (action.get("cases") or {}).values() if isinstance(c, dict)]
    if isinstance(action.get("default"), dict):
        out.append(action["default"].get("actions"))
    return [c for c in out if isinstance(c, dict)]


def strings_in(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, text) for every string of a JSON value, keys too."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings_in(k, f"{path}.<key {k}>")
            yield from strings_in(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from strings_in(v, f"{path}[{i}]")


def own_fields(action: dict) -> dict:
    """An action without its nested actions (they are visited on their own)."""
    return {k: v for k, v in action.items() if k not in ("actions", "else", "cases", "default")}


def kind(action: dict) -> str:
    """An action's or trigger's type in lower case: Logic Apps reads type names in any case."""
    return str(action.get("type", "")).lower()


def options(action: dict) -> set[str]:
    """An action's ``operationOptions`` (a comma-separated list), in lower case."""
    return {o.strip().lower() for o in str(action.get("operationOptions") or "").split(",") if o.strip()}


def problems(definition: dict) -> list[str]:
    """Every problem Logic Apps would refuse the definition for, as readable messages."""
    out: list[str] = []
    actions = definition.get("actions") or {}
    all_actions = list(iter_actions(actions))
    variables = _declared_variables(all_actions, out)
    out += _reference_problems(definition, all_actions, variables)
    for name, action, siblings, enclosing in all_actions:
        out += _run_after_problems(name, action, siblings)
        out += _placement_problems(name, action, enclosing)
        out += _variable_problems(name, action, variables)
        out += _limit_problems(name, action, enclosing)
    for scope in [actions] + [c for _, a, _, _ in all_actions for c in child_scopes(a)]:
        cycle = _cycle(scope)
        if cycle:
            out.append(f"actions {', '.join(cycle)}: their runAfter form a cycle, so none of them can run")
    out += _count_problems(definition, all_actions, variables)
    return out


def _declared_variables(all_actions: list, out: list[str]) -> dict[str, str]:
    declared: dict[str, str] = {}
    for name, action, _, _ in all_actions:
        if kind(action) != "initializevariable":
            continue
        for v in (action.get("inputs") or {}).get("variables") or []:
            vtype = str(v.get("type", "")).lower()
            if vtype not in VARIABLE_TYPES:
                out.append(f"actions.{name}: variable {v.get('name')!r} has type {v.get('type')!r}; the types "
                           "are Array, Boolean, Float, Integer, Object and String")
            elif "value" in v and not _fits(v["value"], vtype):
                out.append(f"actions.{name}: variable {v.get('name')!r} of type {v.get('type')} cannot be "
                           f"initialized with value {v['value']!r}")
            if v.get("name") in declared:
                out.append(f"actions.{name}: variable {v.get('name')!r} is initialised more than once")
            declared[v.get("name")] = vtype
    return declared


def _fits(value: Any, vtype: str) -> bool:
    if isinstance(value, str) and value.startswith("@") and not value.startswith("@@"):
        return True  # known only when the run evaluates it
    if vtype in ("integer", "float") and isinstance(value, bool):
        return False
    return isinstance(value, VARIABLE_TYPES[vtype])


def _reference_problems(definition: dict, all_actions: list, variables: dict) -> list[str]:
    out: list[str] = []
    params = set(definition.get("parameters") or {})
    names = [n for n, *_ in all_actions]
    action_names = set(names)
    seen: set[str] = set()
    for n in names:
        if n in seen:
            out.append(f"action name {n!r} is used more than once")
        seen.add(n)

    def check_strings(owner: str, value: Any, enclosing: tuple) -> None:
        loops = {n: kind(a) for n, a, _ in enclosing}
        for path, text in strings_in(value, owner):
            try:
                trees = [parse(e) for e in expressions_in(text)]
            except ExpressionError as exc:
                out.append(f"{path}: {exc}")
                continue
            if len(text) > LIMITS["expression"] and trees:
                out.append(f"{path}: an expression of {len(text)} characters is over Logic Apps' limit of "
                           f"{LIMITS['expression']}")
            for tree in trees:
                out.extend(f"{path}: {p}" for p in _call_problems(tree, params, variables, action_names, loops))

    for tname, trigger in (definition.get("triggers") or {}).items():
        check_strings(f"triggers.{tname}", trigger, ())
    for name, action, _, enclosing in all_actions:
        check_strings(f"actions.{name}", own_fields(action), enclosing)
    for oname, output in (definition.get("outputs") or {}).items():
        check_strings(f"outputs.{oname}", output, ())
    return out


def _call_problems(tree: Any, params: set, variables: dict, action_names: set, loops: dict) -> Iterator[str]:
    for node in walk(tree):
        if not isinstance(node, Call):
            continue
        arg = node.args[0].value if node.args and isinstance(node.args[0], Literal) else None
        if node.name not in WDL_FUNCTIONS:
            yield f"unknown function {node.name}()"
        elif node.name == "parameters" and arg not in params:
            yield f"parameters({arg!r}) is not declared"
        elif node.name == "variables" and arg not in variables:
            yield f"variables({arg!r}) is never initialised"
        elif node.name in _ACTION_REFS and arg not in action_names:
            yield f"{node.name}({arg!r}) names no action"
        elif node.name == "items" and loops.get(arg) != "foreach":
            yield f"items({arg!r}) is not inside that Foreach"
        elif node.name == "iterationIndexes" and loops.get(arg) != "until":
            yield f"iterationIndexes({arg!r}) is not inside that Until"


def _run_after_problems(name: str, action: dict, siblings: dict) -> list[str]:
    out = []
    run_after = action.get("runAfter") or {}
    if not isinstance(run_after, dict):
        return [f"actions.{name}.runAfter: must be an object of action names and status lists"]
    for target, statuses in run_after.items():
        if target == name:
            out.append(f"actions.{name}.runAfter: an action cannot run after itself")
        elif target not in siblings:
            out.append(f"actions.{name}.runAfter: {target!r} is not an action in the same scope")
        bad = [s for s in statuses or [] if str(s).lower() not in {x.lower() for x in STATUSES}]
        if bad:
            out.append(f"actions.{name}.runAfter: status(es) {', '.join(map(str, bad))} do not exist "
                       f"(they are {', '.join(STATUSES)})")
    return out


def _placement_problems(name: str, action: dict, enclosing: tuple) -> list[str]:
    k = kind(action)
    in_loop = [n for n, a, _ in enclosing if kind(a) in _LOOPS]
    if k == "initializevariable" and enclosing:
        return [f"actions.{name}: a variable can be initialised only at the top level of the workflow, not "
                f"inside {enclosing[-1][0]!r}"]
    if k in ("response", "terminate") and in_loop:
        return [f"actions.{name}: a {action.get('type')} action cannot be inside the loop {in_loop[-1]!r}"]
    return []


def _variable_problems(name: str, action: dict, variables: dict) -> list[str]:
    k = kind(action)
    if k not in _VARIABLE_ACTIONS:
        return []
    var = (action.get("inputs") or {}).get("name")
    if var not in variables:
        return [f"actions.{name}: variable {var!r} is never initialised"]
    need, have = _VARIABLE_ACTIONS[k], variables[var]
    if need == "number" and have not in ("integer", "float") or need in ("array", "string") and have != need:
        return [f"actions.{name}: a {action.get('type')} action cannot change variable {var!r} of type {have}"]
    return []


def _limit_problems(name: str, action: dict, enclosing: tuple) -> list[str]:
    out = []
    if len(name) > LIMITS["name"]:
        out.append(f"actions.{name}: the name has {len(name)} characters; Logic Apps allows {LIMITS['name']}")
    if len(str(action.get("description", ""))) > LIMITS["description"]:
        out.append(f"actions.{name}: the description has {len(action['description'])} characters; Logic Apps "
                   f"allows {LIMITS['description']}")
    if len(enclosing) >= LIMITS["depth"]:
        out.append(f"actions.{name}: nested {len(enclosing) + 1} deep; Logic Apps allows {LIMITS['depth']}")
    k = kind(action)
    reps = ((action.get("runtimeConfiguration") or {}).get("concurrency") or {}).get("repetitions")
    lo, hi = LIMITS["repetitions"]
    if k == "foreach" and reps is not None and not (isinstance(reps, int) and lo <= reps <= hi):
        out.append(f"actions.{name}: concurrency.repetitions is {reps!r}; it must be from {lo} to {hi}")
    count = (action.get("limit") or {}).get("count")
    lo, hi = LIMITS["until"]
    if k == "until" and isinstance(count, int) and not lo <= count <= hi:
        out.append(f"actions.{name}: limit.count is {count}; an Until runs from {lo} to {hi} iterations")
    policy = (action.get("inputs") or {}).get("retryPolicy") if isinstance(action.get("inputs"), dict) else None
    if isinstance(policy, dict):
        out += [f"actions.{name}.inputs.retryPolicy: {p}" for p in retry_policy_problems(policy)]
    return out


def retry_policy_problems(policy: dict) -> list[str]:
    """What is outside the documented retry limits: 90 retries, intervals of 5 s to 1 day."""
    out = []
    count = policy.get("count")
    if isinstance(count, int) and not 1 <= count <= LIMITS["retries"]:
        out.append(f"count is {count}; it must be from 1 to {LIMITS['retries']}")
    lo, hi = LIMITS["retry_interval"]
    for key in ("interval", "minimumInterval", "maximumInterval"):
        text = policy.get(key)
        if not isinstance(text, str) or text.startswith("@"):
            continue
        try:
            seconds = iso_duration_seconds(text)
        except ExpressionError as exc:
            out.append(f"{key}: {exc}")
            continue
        if not lo <= seconds <= hi:
            out.append(f"{key} is {text}; it must be from PT5S to P1D")
    return out


def _cycle(scope: dict) -> list[str]:
    """The actions of one scope that can never start because their runAfter loop back."""
    done: set[str] = set()
    pending = [n for n, a in scope.items() if isinstance(a, dict)]
    progress = True
    while progress:
        progress = False
        for n in list(pending):
            if all(p in done or p not in scope for p in (scope[n].get("runAfter") or {})):
                done.add(n)
                pending.remove(n)
                progress = True
    return pending


def _count_problems(definition: dict, all_actions: list, variables: dict) -> list[str]:
    counts = {"actions": len(all_actions), "triggers": len(definition.get("triggers") or {}),
              "variables": len(variables), "parameters": len(definition.get("parameters") or {}),
              "outputs": len(definition.get("outputs") or {})}
    return [f"the definition has {n} {what}; Logic Apps allows {LIMITS[what]}"
            for what, n in counts.items() if n > LIMITS[what]]
