"""A Logic Apps workflow engine for the definition scorer ships (logicapp/workflow.json).

It runs a definition the way Azure Logic Apps (Consumption) documents it, so the local
twin executes the orchestration Azure runs instead of a Python copy of it:

- actions run when every ``runAfter`` predecessor has finished with one of the listed
  statuses, and are ``Skipped`` otherwise; an action with no ``runAfter`` starts its scope;
- statuses: Succeeded, Failed, Skipped, TimedOut, Cancelled;
- a scope (If, Foreach, Scope) is Failed when any action in it failed, timed out or was
  cancelled, and Succeeded otherwise ("Run actions based on group status by using
  scopes"); an Until has its last iteration's status, also when it reaches its limits,
  unless ``operationOptions`` has FailWhenLimitsReached (the loops article); a run's
  status is found by following each branch to its end, a Skipped end counting as its
  predecessor's status, and is Failed when any branch ends Failed ("Handle errors and
  exceptions in Azure Logic Apps");
- Terminate ends the run at once with its status; Response answers the Request
  trigger's caller (Failed, and the run with it, when the caller has gone); Http honours
  ``retryPolicy`` (408, 429 and 5xx, Retry-After), the asynchronous pattern (202 and a
  Location, polled) and ``limit.timeout``, and fails on a 4xx or 5xx answer; a Foreach
  runs ``runtimeConfiguration.concurrency.repetitions`` iterations at a time (default
  20), one at a time with ``operationOptions: Sequential`` or inside another Foreach;
- type names, function names and time units are read in any case, as Logic Apps does;
- expressions use scorer.azure.functions, and the workflow functions read the run:
  parameters(), variables(), body(), outputs(), actions(), result(), items(), item(),
  iterationIndexes(), trigger(), triggerBody(), triggerOutputs(), workflow(); an action
  inside a Scope or an If can be referred to from outside it.

Nothing an action does raises out of a run: an expression that cannot be evaluated fails
the action InvalidTemplate, a variable of the wrong type InvalidTemplate, and anything else
the engine cannot do EngineError (the twin's code: a defect to report); the actions after
it run by their runAfter.

Where Microsoft's documentation is silent the engine decides, and says so here: parallel
branches of a scope run one after another, in the order they are written; the
asynchronous pattern polls every 5 s when the answer has no Retry-After; an Until that
reaches a limit with FailWhenLimitsReached fails with code UntilLimitsReached;
referring to an action that was skipped or has not run fails the referring action
(InvalidTemplate), as Logic Apps does.

A definition Logic Apps would refuse at save (scorer.azure.workflow_check), or that uses a
trigger type, action type, property, option or function the engine does not implement,
makes ``Engine`` refuse it up front (DefinitionRefused, listing every problem), so that no
part of a definition runs with a piece of it unimplemented.

Nothing here does I/O itself: Http and Wait go through the ``transport`` and ``sleep``
the caller gives, so a test or the local twin decides where requests go.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from scorer.azure.expressions import (WORKFLOW_FUNCTIONS, Call, ExpressionError, expressions_in, iso_duration_seconds,
                                      parse, render, walk)
from scorer.azure.functions import FUNCTIONS, FunctionError, Stamp, now_stamp, time_unit, to_text
from scorer.azure.recurrence import problems as recurrence_problems
from scorer.azure.workflow_check import VARIABLE_TYPES, iter_actions, kind, options, problems, strings_in

SUPPORTED_ACTIONS = frozenset({"InitializeVariable", "SetVariable", "AppendToArrayVariable", "AppendToStringVariable",
                               "IncrementVariable", "DecrementVariable", "Compose", "Query", "If", "Foreach",
                               "Until", "Scope", "Wait", "Http", "Response", "Terminate"})
SUPPORTED_TRIGGERS = frozenset({"Recurrence", "Request"})
#: type names in any case, as Logic Apps reads them ("recurrence", "http"), spelt as the reference does
TYPE_NAMES = {t.lower(): t for t in SUPPORTED_ACTIONS | SUPPORTED_TRIGGERS}
_FAILURES = {"Failed", "TimedOut", "Cancelled"}
#: Logic Apps' limit on one outbound HTTP request
HTTP_TIMEOUT_S = 120.0
#: default Foreach concurrency (Logic Apps Consumption)
FOREACH_CONCURRENCY = 20
#: how long the asynchronous pattern waits between polls when the answer gives no
#: Retry-After (Microsoft does not say; the twin decides)
ASYNC_POLL_S = 5.0
#: How a scope (If, Foreach, Until's iteration, Scope) gets its status, where Microsoft's
#: articles disagree. "any failure": Failed when any action in it failed, timed out or was
#: cancelled ("Run actions based on group status by using scopes"); "branch ends": as a run,
#: from the ends of its branches, so a failure handled inside the scope leaves it Succeeded
#: (the exception-handling article's final-action rule). The twin takes "any failure", the
#: stricter: a workflow tested here never counts on a handled failure being hidden.
SCOPE_STATUS = "any failure"
_UNIT_SECONDS = {"Second": 1, "Minute": 60, "Hour": 3600, "Day": 86400, "Week": 604800}


class DefinitionRefused(ValueError):
    """The definition is not one Logic Apps would save, or uses something the engine does
    not implement; ``problems`` lists every one, and the message gives them all."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(self.problems[0] if len(self.problems) == 1 else
                         f"{len(self.problems)} problems: " + "; ".join(self.problems))


class ActionError(Exception):
    """An action cannot do what it was asked: it fails with this code and message
    (Azure's error shape), and the run goes on by its runAfter."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class _Terminated(Exception):
    def __init__(self, status: str, error: dict | None):
        super().__init__(status)
        self.status = status
        self.error = error


@dataclass
class HttpRequest:
    method: str
    uri: str
    headers: dict[str, str]
    body: bytes | None
    #: the action's ``authentication`` object, rendered (type, identity, audience)
    authentication: dict | None = None


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class Transport(Protocol):
    """Sends an Http action's request (and adds its authentication). Raises
    ConnectionError (or OSError) when no answer comes."""

    def send(self, request: HttpRequest, timeout: float) -> HttpResponse: ...


@dataclass
class ActionRecord:
    """What ``actions('<name>')`` returns: a finished action."""

    name: str
    status: str
    inputs: Any = None
    outputs: Any = None
    startTime: str = ""
    endTime: str = ""
    code: str | None = None
    error: dict | None = None
    #: a scope's inner records, for result(): per iteration for loops
    inner: list[dict[str, "ActionRecord"]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "inputs": self.inputs, "outputs": self.outputs,
                "startTime": self.startTime, "endTime": self.endTime, "code": self.code, "error": self.error}


@dataclass
class Run:
    """One run of a workflow: its status, error, records and the Response, if any."""

    name: str
    trigger: str
    status: str = "Running"
    error: dict | None = None
    started: str = ""
    ended: str = ""
    actions: dict[str, ActionRecord] = field(default_factory=dict)
    response: dict | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    #: each variable's declared type, in lower case (integer, string, ...)
    variable_types: dict[str, str] = field(default_factory=dict)
    #: the latest record of every action that has started, nested ones too: an action
    #: inside a Scope or an If can be referred to from outside it
    index: dict[str, ActionRecord] = field(default_factory=dict)
    trigger_record: dict = field(default_factory=dict)
    lock: Any = field(default_factory=threading.RLock, repr=False)

    def record(self, name: str) -> ActionRecord | None:
        """The top-level or nested record of ``name`` (the last one, for loops)."""
        found = None

        def look(records: dict[str, ActionRecord]) -> None:
            nonlocal found
            for n, r in records.items():
                if n == name:
                    found = r
                for it in r.inner:
                    look(it)
        look(self.actions)
        return found


class _Scope:
    """A scope's records and bindings; lookups walk out to the enclosing scopes."""

    def __init__(self, engine: "Engine", run: Run, parent: "_Scope | None" = None, *,
                 loop: tuple[str, Any] | None = None, until: tuple[str, int] | None = None):
        self.engine = engine
        self.run = run
        self.parent = parent
        self.records: dict[str, ActionRecord] = {}
        self.loop = loop            # (Foreach name, current item)
        self.until = until          # (Until name, iteration index)
        self.item: Any = None       # a Query's current element
        self.has_item = False

    # -- the workflow functions ----------------------------------------------------------

    def in_foreach(self) -> bool:
        s: _Scope | None = self
        while s is not None:
            if s.loop:
                return True
            s = s.parent
        return False

    def workflow_function(self, name: str, args: list) -> Any:
        e = self.engine
        if name == "parameters":
            if args[0] not in e.parameters:
                raise ExpressionError(f"parameters({args[0]!r}): no such parameter")
            return e.parameters[args[0]]
        if name == "variables":
            with self.run.lock:
                if args[0] not in self.run.variables:
                    raise ExpressionError(f"variables({args[0]!r}): the variable is not initialised")
                return copy.deepcopy(self.run.variables[args[0]])
        if name in ("actions", "outputs", "body", "actionOutputs", "actionBody"):
            rec = self._find(args[0])
            if name == "actions":
                return rec.as_dict()
            if name in ("outputs", "actionOutputs"):
                return rec.outputs
            return rec.outputs.get("body") if isinstance(rec.outputs, dict) else None
        if name == "result":
            rec = self._find(args[0])
            if not rec.inner:
                return []
            names = list(rec.inner[-1])
            if e.action_type(args[0]) == "Foreach":
                return [{"name": n, "outputs": [it[n].as_dict() for it in rec.inner if n in it]} for n in names]
            return [r.as_dict() for r in rec.inner[-1].values()]
        if name == "items":
            s: _Scope | None = self
            while s is not None:
                if s.loop and s.loop[0] == args[0]:
                    return s.loop[1]
                s = s.parent
            raise ExpressionError(f"items({args[0]!r}) is used outside that Foreach")
        if name == "item":
            s = self
            while s is not None:
                if s.has_item:
                    return s.item
                if s.loop:
                    return s.loop[1]
                s = s.parent
            raise ExpressionError("item() is used outside a loop or a Query")
        if name == "iterationIndexes":
            s = self
            while s is not None:
                if s.until and s.until[0] == args[0]:
                    return s.until[1]
                s = s.parent
            raise ExpressionError(f"iterationIndexes({args[0]!r}) is used outside that Until")
        if name == "trigger":
            return self.run_trigger()
        if name == "triggerOutputs":
            return self.run_trigger()["outputs"]
        if name == "triggerBody":
            return (self.run_trigger()["outputs"] or {}).get("body")
        if name == "workflow":
            return {"name": e.name, "type": "Microsoft.Logic/workflows", "id": e.name, "location": "local",
                    "run": {"name": self.run.name, "type": "Microsoft.Logic/workflows/runs", "id": self.run.name},
                    "tags": {}}
        raise ExpressionError(f"function {name}() is not implemented")  # pragma: no cover - WORKFLOW_FUNCTIONS

    def run_trigger(self) -> dict:
        return self.run.trigger_record

    def _find(self, name: str) -> ActionRecord:
        # the enclosing scopes first (a loop's own iteration), then the whole run
        s: _Scope | None = self
        rec = None
        while s is not None and rec is None:
            rec = s.records.get(name)
            s = s.parent
        rec = rec or self.run.index.get(name)
        if rec is None:
            raise ExpressionError(f"the action {name!r} has not run (yet), so its outputs cannot be referenced")
        if rec.status == "Skipped":
            raise ExpressionError(f"the action {name!r} was skipped, so its outputs cannot be referenced")
        return rec


class Engine:
    """Runs one workflow definition. ``parameters`` are the values given at deployment
    (the definition's defaults fill the rest). ``transport`` sends Http actions;
    ``sleep`` waits for Wait actions, retries and polls (it returns early, True, when
    the engine is stopped). Raises DefinitionRefused from the constructor."""

    def __init__(self, definition: dict, parameters: dict[str, Any] | None = None, *,
                 transport: Transport | None = None, name: str = "workflow",
                 sleep: Callable[[float], bool] | None = None, log: Callable[[str], None] | None = None,
                 scope_status: str = SCOPE_STATUS):
        if scope_status not in ("any failure", "branch ends"):
            raise ValueError(f"scope_status {scope_status!r} is 'any failure' or 'branch ends'")
        self.scope_status = scope_status
        self.definition = definition
        self.name = name
        self.transport = transport
        self.stopping = threading.Event()
        self.sleep = sleep or self.stopping.wait
        self.log = log or (lambda msg: None)
        found = refusal(definition, parameters)
        if found:
            raise DefinitionRefused(found)
        declared = definition.get("parameters", {})
        self.parameters = {k: v.get("defaultValue") for k, v in declared.items()}
        self.parameters.update(parameters or {})
        self._types = {n: TYPE_NAMES.get(kind(a)) for n, a, _, _ in iter_actions(definition.get("actions", {}))}

    def action_type(self, name: str) -> str | None:
        return self._types.get(name)

    def stop(self) -> None:
        """Ask running runs to hurry to their end: Wait actions and retries return at
        once, and an Until stops after its current iteration as if it had reached its
        timeout, so that the actions after it (the clean-up) still run."""
        self.stopping.set()

    # -- a run --------------------------------------------------------------------------

    def run(self, trigger: str, outputs: dict | None = None,
            respond: Callable[[dict], None] | None = None) -> Run:
        """Run the definition once, as fired by ``trigger`` with these trigger
        ``outputs`` (headers, body, ...). ``respond`` receives a Response action's
        answer (statusCode, headers, body) for the Request trigger's caller, and returns
        False when the caller is no longer waiting (the Response then fails)."""
        if trigger not in self.definition.get("triggers", {}):
            raise DefinitionRefused(f"the definition has no trigger {trigger!r}")
        run = Run(name=_run_name(), trigger=trigger, started=_now())
        run.trigger_record = {"name": trigger, "outputs": outputs or {}, "inputs": {},
                              "startTime": run.started, "endTime": run.started, "status": "Succeeded"}
        run_state = _RunState(self, run, respond)
        scope = _Scope(self, run)
        try:
            if not self._conditions_hold(trigger, scope):
                run.status = "Skipped"  # the trigger's conditions were not met: Logic Apps starts no run
                run.ended = _now()
                if respond is not None:
                    respond({"statusCode": 202, "headers": {}, "body": None, "implicit": True})
                return run
            run_state.run_scope(self.definition.get("actions", {}), scope)
            run.status = run_status(self.definition.get("actions", {}), scope.records)
            if run.status == "Failed":
                failed = [n for n, r in scope.records.items() if r.status in _FAILURES]
                run.error = {"code": "ActionFailed", "message": "An action failed. No dependent actions succeeded."
                             f" ({', '.join(failed)})" if failed else "An action failed."}
        except _Terminated as t:
            run.status, run.error = t.status, t.error
        except Exception as exc:  # a defect of the engine: the run fails, the caller's thread goes on
            self.log(f"run {run.name}: the engine failed: {exc!r}")
            run.status, run.error = "Failed", {"code": "EngineError", "message": f"{type(exc).__name__}: {exc}"}
        run.actions = scope.records
        run.ended = _now()
        if respond is not None and run.response is None:
            respond({"statusCode": 202, "headers": {}, "body": None, "implicit": True})
        return run

    def _conditions_hold(self, trigger: str, scope: "_Scope") -> bool:
        """A trigger's ``conditions``: every expression must be true for the run to start
        ("Trigger conditions" in the triggers reference)."""
        for c in self.definition["triggers"][trigger].get("conditions") or []:
            value = render(c.get("expression") if isinstance(c, dict) else c, scope)
            if value is not True:
                if not isinstance(value, bool):
                    self.log(f"trigger {trigger}: a condition gave {value!r}, not a Boolean; the run is not started")
                return False
        return True


class _RunState:
    def __init__(self, engine: Engine, run: Run, respond: Callable[[dict], None] | None):
        self.e = engine
        self.run = run
        self.respond = respond

    # -- scheduling within a scope --------------------------------------------------------

    def run_scope(self, actions: dict, scope: _Scope) -> None:
        pending = list(actions)
        while pending:
            ready = [n for n in pending if all(p in scope.records for p in actions[n].get("runAfter") or {})]
            if not ready:  # workflow_check refused a cycle before the run
                raise RuntimeError(f"actions {', '.join(pending)} wait for each other")
            for name in ready:
                pending.remove(name)
                action = actions[name]
                after = action.get("runAfter") or {}
                runs = all(scope.records[p].status.lower() in {s.lower() for s in allowed}
                           for p, allowed in after.items())
                if runs:
                    self.execute(name, action, scope)
                else:
                    scope.records[name] = ActionRecord(name, "Skipped", startTime=_now(), endTime=_now(),
                                                       code="ActionSkipped", error={
                                                           "code": "ActionConditionFailed",
                                                           "message": "The execution of template action '" + name
                                                           + "' is skipped: the 'runAfter' condition was not met."})

    def execute(self, name: str, action: dict, scope: _Scope) -> None:
        rec = ActionRecord(name, "Running", startTime=_now())
        scope.records[name] = rec
        with self.run.lock:
            self.run.index[name] = rec
        type_name = TYPE_NAMES[kind(action)]
        self.e.log(f"action {name} ({type_name}) started")
        try:
            getattr(self, "_" + type_name)(name, action, scope, rec)
        except _Terminated:
            rec.status = "Succeeded"
            rec.endTime = _now()
            raise
        except (ExpressionError, FunctionError) as exc:
            rec.status, rec.code = "Failed", "InvalidTemplate"
            rec.error = {"code": "InvalidTemplate", "message": f"Unable to process template language expressions in "
                         f"action '{name}' inputs: {exc}"}
        except ActionError as exc:
            rec.status, rec.code, rec.error = "Failed", exc.code, {"code": exc.code, "message": str(exc)}
        except Exception as exc:  # anything else the engine cannot do fails this action only
            self.e.log(f"action {name}: the engine failed: {exc!r}")
            rec.status, rec.code = "Failed", "EngineError"
            rec.error = {"code": "EngineError", "message": f"The engine could not run action '{name}': "
                         f"{type(exc).__name__}: {exc}"}
        if rec.status == "Running":
            rec.status = "Succeeded"
        rec.endTime = _now()
        self.e.log(f"action {name} ({type_name}): {rec.status}")

    def scope_status(self, actions: dict, records: dict[str, ActionRecord]) -> str:
        if self.e.scope_status == "branch ends":  # as a run's status: a handled failure leaves it Succeeded
            return run_status(actions, records)
        return "Failed" if any(r.status in _FAILURES for r in records.values()) else "Succeeded"

    # -- action types -----------------------------------------------------------------------

    def _InitializeVariable(self, name, action, scope, rec):
        vars_ = render(action["inputs"]["variables"], scope)
        rec.inputs = {"variables": vars_}
        default = {"array": [], "object": {}, "string": "", "integer": 0, "float": 0.0, "boolean": False}
        with self.run.lock:
            for v in vars_:
                if v["name"] in self.run.variables:
                    raise ExpressionError(f"the variable {v['name']!r} is already initialised")
                vtype = str(v.get("type", "")).lower()
                value = v.get("value", default.get(vtype))
                self._check_type(v["name"], vtype, value)
                self.run.variables[v["name"]], self.run.variable_types[v["name"]] = value, vtype

    def _check_type(self, variable: str, vtype: str, value: Any) -> None:
        # null too: "... cannot be initialized or updated with value of type 'Null'"
        kinds = VARIABLE_TYPES.get(vtype, object)
        if not isinstance(value, kinds) or vtype in ("integer", "float") and isinstance(value, bool):
            raise ActionError("InvalidTemplate", f"The variable '{variable}' of type '{vtype.capitalize()}' cannot "
                              f"be initialized or updated with value of type '{_json_type(value)}'.")

    def _variable(self, inputs: dict) -> tuple[str, str]:
        if inputs.get("name") not in self.run.variables:
            raise ActionError("InvalidTemplate", f"The variable '{inputs.get('name')}' is not initialised.")
        return inputs["name"], self.run.variable_types.get(inputs["name"], "")

    def _SetVariable(self, name, action, scope, rec):
        inputs = render(action["inputs"], scope)
        rec.inputs = inputs
        with self.run.lock:
            var, vtype = self._variable(inputs)
            self._check_type(var, vtype, inputs.get("value"))
            self.run.variables[var] = inputs.get("value")
        rec.outputs = {"body": {"name": var, "value": inputs.get("value")}}

    def _AppendToArrayVariable(self, name, action, scope, rec):
        inputs = render(action["inputs"], scope)
        rec.inputs = inputs
        with self.run.lock:
            var, vtype = self._variable(inputs)
            if vtype != "array":
                raise ActionError("InvalidTemplate", f"The variable '{var}' of type '{vtype}' is not an array.")
            self.run.variables[var].append(inputs.get("value"))

    def _AppendToStringVariable(self, name, action, scope, rec):
        inputs = render(action["inputs"], scope)
        rec.inputs = inputs
        with self.run.lock:
            var, vtype = self._variable(inputs)
            if vtype != "string":
                raise ActionError("InvalidTemplate", f"The variable '{var}' of type '{vtype}' is not a string.")
            self.run.variables[var] = self.run.variables[var] + to_text(inputs.get("value"))

    def _IncrementVariable(self, name, action, scope, rec, sign: int = 1):
        inputs = render(action["inputs"], scope)
        rec.inputs = inputs
        step = inputs.get("value", 1)
        with self.run.lock:
            var, vtype = self._variable(inputs)
            if vtype not in ("integer", "float") or isinstance(step, bool) or not isinstance(step, (int, float)):
                raise ActionError("InvalidTemplate", f"The variable '{var}' of type '{vtype}' cannot be changed by "
                                  f"{step!r}: only Integer and Float variables, by a number.")
            self.run.variables[var] += sign * step

    def _DecrementVariable(self, name, action, scope, rec):
        self._IncrementVariable(name, action, scope, rec, sign=-1)

    def _Compose(self, name, action, scope, rec):
        rec.inputs = rec.outputs = render(action.get("inputs"), scope)

    def _Query(self, name, action, scope, rec):
        source = render(action["inputs"]["from"], scope)
        where = action["inputs"]["where"]
        if not isinstance(source, list):
            raise ExpressionError(f"Query 'from' must be an array, got {type(source).__name__}")
        kept = []
        for element in source:
            inner = _Scope(self.e, self.run, scope)
            inner.item, inner.has_item = element, True
            if render(where, inner):
                kept.append(element)
        rec.inputs = {"from": source}
        rec.outputs = {"body": kept}

    def _If(self, name, action, scope, rec):
        cond = condition(action["expression"], scope)
        branch = action.get("actions", {}) if cond else (action.get("else") or {}).get("actions", {})
        rec.inputs = {"expressionResult": cond}
        inner = _Scope(self.e, self.run, scope)
        try:
            self.run_scope(branch, inner)
        finally:
            rec.inner = [inner.records]
        rec.status = self.scope_status(branch, inner.records)

    def _Scope(self, name, action, scope, rec):
        inner = _Scope(self.e, self.run, scope)
        try:
            self.run_scope(action.get("actions", {}), inner)
        finally:
            rec.inner = [inner.records]
        rec.status = self.scope_status(action.get("actions", {}), inner.records)

    def _Foreach(self, name, action, scope, rec):
        items = render(action["foreach"], scope)
        if not isinstance(items, list):
            raise ExpressionError(f"the Foreach input must be an array, got {type(items).__name__}")
        rec.inputs = items
        limit = ((action.get("runtimeConfiguration") or {}).get("concurrency") or {}).get("repetitions",
                                                                                        FOREACH_CONCURRENCY)
        if "sequential" in options(action) or scope.in_foreach():
            limit = 1  # operationOptions Sequential; and a Foreach inside another always runs sequentially
        iterations: list[dict[str, ActionRecord]] = [{} for _ in items]

        def one(i: int) -> None:
            inner = _Scope(self.e, self.run, scope, loop=(name, items[i]))
            inner.records = iterations[i]
            self.run_scope(action.get("actions", {}), inner)

        if limit <= 1 or len(items) <= 1:
            for i in range(len(items)):
                one(i)
        else:
            with ThreadPoolExecutor(max_workers=min(limit, len(items))) as pool:
                for f in [pool.submit(one, i) for i in range(len(items))]:
                    f.result()  # a Terminate inside an iteration ends the run
        rec.inner = iterations
        body = action.get("actions", {})
        rec.status = "Failed" if any(self.scope_status(body, it) == "Failed" for it in iterations) else "Succeeded"

    def _Until(self, name, action, scope, rec):
        """Runs its actions, then tests its expression, until the expression is true or
        ``limit.count`` / ``limit.timeout`` is reached. Its status is its last iteration's
        (Failed when an action of that iteration failed), also at a limit, unless
        ``operationOptions`` has FailWhenLimitsReached: then reaching a limit fails it
        ("Until" in the loops article). The timeout is checked between iterations."""
        limit = action.get("limit") or {}
        count = int(render(limit.get("count", 60), scope))
        timeout = iso_duration_seconds(render(limit.get("timeout", "PT1H"), scope))
        deadline = time.monotonic() + timeout
        index = 0
        while True:
            inner = _Scope(self.e, self.run, scope, until=(name, index))
            rec.inner.append(inner.records)
            self.run_scope(action.get("actions", {}), inner)
            index += 1
            rec.status = self.scope_status(action.get("actions", {}), inner.records)
            if condition(action["expression"], inner):
                return
            reached = ("count", count) if index >= count else ("timeout", limit.get("timeout", "PT1H")) \
                if time.monotonic() >= deadline or self.e.stopping.is_set() else None
            if reached is None:
                continue
            rec.code = "UntilLimitsReached"
            if "failwhenlimitsreached" in options(action):
                rec.status = "Failed"
                rec.error = {"code": rec.code, "message": f"The 'Until' action '{name}' reached its {reached[0]} "
                             f"limit ({reached[1]}) before its expression was true."}
            return

    def _Wait(self, name, action, scope, rec):
        inputs = render(action["inputs"], scope)
        rec.inputs = inputs
        now = now_stamp()
        if "interval" in inputs:
            interval = inputs["interval"] or {}
            count, unit = interval.get("count"), time_unit(interval.get("unit"))  # any case
            if isinstance(count, str):
                try:
                    count = float(count)
                except ValueError:
                    pass
            if isinstance(count, bool) or not isinstance(count, (int, float)) or count < 0 \
                    or unit in ("Month", "Year") and count != int(count):
                raise ActionError("InvalidTemplate", f"The Wait interval's count must be a number of units (whole "
                                  f"for Month and Year), not {count!r}.")
            # Month and Year by the calendar, as addToTime counts them
            target = FUNCTIONS["addToTime"](now.format(), int(count), unit) if unit in ("Month", "Year") else \
                now.shifted(dt.timedelta(seconds=count * _UNIT_SECONDS[unit])).format()
        else:
            target = (inputs.get("until") or {}).get("timestamp")
            if not isinstance(target, str) or not target:
                raise ActionError("InvalidTemplate", f"The Wait action's until.timestamp must be a timestamp, not "
                                  f"{target!r}.")
        seconds = (Stamp.parse(target).utc - now.utc).total_seconds()
        self.e.sleep(max(0.0, seconds))

    def _Terminate(self, name, action, scope, rec):
        inputs = render(action["inputs"], scope)
        rec.inputs = inputs
        raise _Terminated(inputs.get("runStatus", "Failed"), inputs.get("runError"))

    def _Response(self, name, action, scope, rec):
        inputs = render(action["inputs"], scope)
        rec.inputs = inputs
        if kind(self.e.definition["triggers"][self.run.trigger]) != "request":
            rec.status, rec.code = "Failed", "ResponseNotAllowed"
            rec.error = {"code": "ResponseNotAllowed",
                         "message": "a Response action can answer only a run started by a Request trigger"}
            return
        if self.run.response is not None:
            rec.status, rec.code = "Failed", "ActionResponseAlreadySent"
            rec.error = {"code": "ActionResponseAlreadySent", "message": "the run has already sent its response"}
            return
        answer = {"statusCode": int(inputs.get("statusCode", 200)), "headers": inputs.get("headers") or {},
                  "body": inputs.get("body")}
        self.run.response = answer
        rec.outputs = answer
        if self.respond is not None and self.respond(answer) is False:
            # the caller stopped waiting (120 s): Logic Apps marks the Response Failed, and the run
            # with it (Response restrictions in the actions reference; Azure/logicapps#1340)
            rec.status, rec.code = "Failed", "ActionResponseTimedOut"
            rec.error = {"code": "ActionResponseTimedOut", "message": "The execution of template action "
                         f"'{name}' failed: the client application timed out waiting for a response from the "
                         "service; the workflow took longer to respond than the allotted time."}

    def _Http(self, name, action, scope, rec):
        """Sends the request with its retry policy. A 202 with a Location header is
        followed as Logic Apps' asynchronous pattern does (GET the Location, after its
        Retry-After, until the answer is not 202) unless operationOptions has
        DisableAsyncPattern; the action's ``limit.timeout`` bounds all of it (TimedOut)."""
        inputs = render(action["inputs"], scope)
        auth = inputs.get("authentication")
        rec.inputs = {k: v for k, v in inputs.items() if k != "authentication"}
        body = inputs.get("body")
        data = None if body is None else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        headers = {str(k): str(v) for k, v in (inputs.get("headers") or {}).items()}
        if body is not None and not isinstance(body, str):
            headers.setdefault("Content-Type", "application/json")
        uri = inputs["uri"]
        if inputs.get("queries"):
            from urllib.parse import urlencode
            uri += ("&" if "?" in uri else "?") + urlencode(inputs["queries"])
        policy = inputs.get("retryPolicy") or {"type": "default"}
        timeout = (action.get("limit") or {}).get("timeout")
        deadline = time.monotonic() + (iso_duration_seconds(render(timeout, scope)) if timeout else 90 * 86400)
        request = HttpRequest(inputs["method"].upper(), uri, headers, data, auth)
        response = self._send(name, request, policy, deadline, rec)
        while (response is not None and response.status == 202 and _header(response, "Location")
               and "disableasyncpattern" not in options(action)):
            wait = float(_header(response, "Retry-After")) if _header(response, "Retry-After").isdigit() \
                else ASYNC_POLL_S
            if time.monotonic() + wait > deadline or self.e.sleep(wait):
                response = None
                rec.status, rec.code = "TimedOut", "ActionTimedOut"
                rec.error = {"code": rec.code, "message": f"The asynchronous operation at {request.uri} did not "
                             f"finish within the action's timeout ({timeout or 'the run duration'})."}
                break
            request = HttpRequest("GET", _header(response, "Location"), {}, None, auth)
            response = self._send(name, request, policy, deadline, rec)
        if response is None:
            return
        rec.outputs = {"statusCode": response.status, "headers": response.headers, "body": _decode(response)}
        rec.code = _REASONS.get(response.status, str(response.status))
        if response.status >= 400:
            rec.status = "Failed"
            rec.error = {"code": rec.code, "message": f"{request.method} {request.uri} answered {response.status}"}

    def _send(self, name: str, request: HttpRequest, policy: dict, deadline: float,
              rec: ActionRecord) -> HttpResponse | None:
        """One request with its retries; None (and the record failed) when no answer came."""
        waits = retry_waits(policy)
        attempt = 0
        while True:
            try:
                timeout = min(HTTP_TIMEOUT_S, max(0.001, deadline - time.monotonic()))
                response, failure = self.e.transport.send(request, timeout), None
            except TimeoutError as exc:
                response, failure = None, ("TimedOut", {"code": "ActionTimedOut", "message": str(exc)})
            except OSError as exc:
                response, failure = None, ("Failed", {"code": "ServiceUnavailable", "message": f"the request failed: {exc}"})
            retryable = response is None or response.status in (408, 429) or response.status >= 500
            if not retryable or attempt >= len(waits) or self.e.stopping.is_set():
                break
            wait = waits[attempt]
            if response is not None and _header(response, "Retry-After").isdigit():
                wait = max(wait, float(_header(response, "Retry-After")))
            if time.monotonic() + wait > deadline:
                break
            self.e.log(f"action {name}: retry {attempt + 1} in {wait:g} s "
                       f"({response.status if response else failure[1]['message']})")
            attempt += 1
            self.e.sleep(wait)
        if response is None:
            rec.status, rec.error = failure
            rec.code = rec.error["code"]
        return response


def _header(response: HttpResponse, name: str) -> str:
    return next((v for k, v in response.headers.items() if k.lower() == name.lower()), "")


_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "NoContent", 400: "BadRequest", 401: "Unauthorized",
            403: "Forbidden", 404: "NotFound", 409: "Conflict", 412: "PreconditionFailed", 429: "TooManyRequests",
            500: "InternalServerError", 502: "BadGateway", 503: "ServiceUnavailable"}


def _decode(response: HttpResponse) -> Any:
    text = response.body.decode("utf-8", "replace") if response.body else ""
    if not text:
        return None
    ctype = _header(response, "Content-Type")
    if "json" in ctype or text[:1] in "{[":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def retry_waits(policy: dict) -> list[float]:
    """The waits before each retry of an Http action's ``retryPolicy``: ``none``; ``fixed``
    (count, interval); ``exponential`` (count; interval grown 2^k times, between
    minimumInterval and maximumInterval, without the random part); ``default``: 4 retries
    growing by 7.5 s between 5 and 45 s ("Handle errors and exceptions in Azure Logic Apps")."""
    kind = str(policy.get("type", "default")).lower()
    if kind == "none":
        return []
    if kind == "fixed":
        return [iso_duration_seconds(policy.get("interval", "PT20S"))] * int(policy.get("count", 4))
    if kind == "exponential":
        base = iso_duration_seconds(policy.get("interval", "PT7S"))
        lo = iso_duration_seconds(policy.get("minimumInterval", "PT5S"))
        hi = iso_duration_seconds(policy.get("maximumInterval", "PT1H"))
        return [min(hi, max(lo, base * 2 ** k)) for k in range(int(policy.get("count", 4)))]
    return [min(45.0, max(5.0, 7.5 * 2 ** k)) for k in range(4)]


_CONDITION_OPS = {
    "equals": lambda a, b: FUNCTIONS["equals"](a, b), "greater": lambda a, b: FUNCTIONS["greater"](a, b),
    "greaterOrEquals": lambda a, b: FUNCTIONS["greaterOrEquals"](a, b), "less": lambda a, b: FUNCTIONS["less"](a, b),
    "lessOrEquals": lambda a, b: FUNCTIONS["lessOrEquals"](a, b), "contains": lambda a, b: FUNCTIONS["contains"](a, b),
    "startsWith": lambda a, b: FUNCTIONS["startsWith"](a, b), "endsWith": lambda a, b: FUNCTIONS["endsWith"](a, b),
}


def condition(expr: Any, scope: Any) -> bool:
    """An If or Until expression: an expression string, or the designer's object form
    ({"and": [...]}, {"or": [...]}, {"not": {...}}, {"equals": [a, b]}, ...). Its value
    must be a Boolean: Logic Apps does not read "true", 1 or an object as true."""
    if isinstance(expr, str):
        value = render(expr, scope)
        if not isinstance(value, bool):
            raise ExpressionError(f"the expression {expr!r} must give a Boolean, and gave {_json_type(value)} "
                                  f"{to_text(value)[:80]!r}")
        return value
    if isinstance(expr, bool):
        return expr
    if not isinstance(expr, dict) or len(expr) != 1:
        raise ExpressionError(f"a condition object must have exactly one operator (and, or, not, equals, ...); "
                              f"this one has {sorted(expr) if isinstance(expr, dict) else expr!r}")
    (op, arg), = expr.items()
    if op == "and":
        return all([condition(x, scope) for x in arg])
    if op == "or":
        return any([condition(x, scope) for x in arg])
    if op == "not":
        return not condition(arg, scope)
    if op in _CONDITION_OPS:
        if not isinstance(arg, list) or len(arg) != 2:
            raise ExpressionError(f"the condition operator {op!r} takes two values, not {arg!r}")
        a, b = (render(x, scope) for x in arg)
        return bool(_CONDITION_OPS[op](a, b))
    raise ExpressionError(f"condition operator {op!r} is not implemented")


def run_status(actions: dict, records: dict[str, ActionRecord]) -> str:
    """A run's status from its top-level actions: each branch's end (an action no
    other runs after) counts with its status, a Skipped end with its predecessors'."""
    successors = {p for a in actions.values() for p in (a.get("runAfter") or {})}
    ends = [n for n in actions if n not in successors]

    def branch(n: str, seen: frozenset = frozenset()) -> str:
        rec = records.get(n)
        if rec is None:
            return "Skipped"
        if rec.status != "Skipped" or n in seen:
            return rec.status
        preds = list((actions[n].get("runAfter") or {}))
        statuses = [branch(p, seen | {n}) for p in preds]
        return "Failed" if any(s in _FAILURES for s in statuses) else "Succeeded"

    return "Failed" if any(branch(n) in _FAILURES for n in ends) else "Succeeded"


# --- what the engine implements ----------------------------------------------------------------

#: the properties of an action the engine honours; any other is named in the refusal
_ACTION_KEYS = {"type", "kind", "inputs", "runAfter", "description", "actions", "else", "expression", "foreach", "limit",
                "runtimeConfiguration", "operationOptions", "metadata", "trackedProperties"}
_OPERATION_OPTIONS = {"sequential", "failwhenlimitsreached", "disableasyncpattern"}


def refusal(definition: dict, parameters: dict | None = None) -> list[str]:
    """Every reason Engine(definition, parameters) refuses: what Logic Apps would refuse at
    save, what the engine does not implement, parameters the definition does not declare."""
    found = problems(definition) + unsupported(definition)
    unknown = set(parameters or {}) - set(definition.get("parameters") or {})
    if unknown:
        found.append(f"parameter(s) {', '.join(sorted(unknown))} are not declared by the definition")
    return found


def unsupported(definition: dict) -> list[str]:
    """Every trigger type, action type, property, option or function the engine does not
    implement, each named with where it is (empty when the engine can run all of it)."""
    out = []
    for name, trig in (definition.get("triggers") or {}).items():
        if TYPE_NAMES.get(kind(trig)) not in SUPPORTED_TRIGGERS:
            out.append(f"trigger {name!r}: type {trig.get('type')!r} is not implemented by the engine "
                       f"(it runs {', '.join(sorted(SUPPORTED_TRIGGERS))})")
        if "splitOn" in trig:
            out.append(f"trigger {name!r}: splitOn is not implemented by the engine")
        if TYPE_NAMES.get(kind(trig)) == "Recurrence":
            out += [f"trigger {name!r}: {p}" for p in recurrence_problems(trig.get("recurrence"))]
    for name, action, _, _ in iter_actions(definition.get("actions") or {}):
        out += [f"action {name!r}: {p}" for p in _unsupported_action(action)]
    for path, text in strings_in({k: definition.get(k) for k in ("triggers", "actions", "outputs")}, "definition"):
        try:
            trees = [parse(e) for e in expressions_in(text)]
        except ExpressionError:
            continue  # workflow_check names it
        for node in (n for tree in trees for n in walk(tree)):
            if isinstance(node, Call) and node.name not in FUNCTIONS and node.name not in WORKFLOW_FUNCTIONS:
                out.append(f"{path}: function {node.name}() is not implemented by the engine")
    return list(dict.fromkeys(out))


def _unsupported_action(action: dict) -> list[str]:
    out = []
    type_name = TYPE_NAMES.get(kind(action))
    if type_name not in SUPPORTED_ACTIONS:
        out.append(f"type {action.get('type')!r} is not implemented by the engine "
                   f"(it runs {', '.join(sorted(SUPPORTED_ACTIONS))})")
    extra = sorted(set(action) - _ACTION_KEYS)
    if extra:
        out.append(f"{', '.join(extra)} {'is' if len(extra) == 1 else 'are'} not implemented by the engine")
    for option in sorted(options(action) - _OPERATION_OPTIONS):
        out.append(f"operationOptions {option!r} is not implemented by the engine")
    inputs = action.get("inputs") if isinstance(action.get("inputs"), dict) else {}
    auth = inputs.get("authentication") if type_name == "Http" else None
    if isinstance(auth, dict) and auth.get("type") != "ManagedServiceIdentity":
        out.append(f"authentication type {auth.get('type')!r} is not implemented by the engine")
    return out


def _json_type(value: Any) -> str:
    return {bool: "Boolean", int: "Integer", float: "Float", str: "String", list: "Array", dict: "Object",
            type(None): "Null"}.get(type(value), type(value).__name__)


def _now() -> str:
    return now_stamp().format()


def _run_name() -> str:
    # Logic Apps run names are 29-digit strings that sort by time, newest first
    return f"{(10**18 - time.time_ns() // 100):019d}{uuid.uuid4().int % 10**10:010d}"
