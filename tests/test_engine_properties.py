"""Property-based: no definition the engine accepts, and no answer or fault a transport gives,
makes a run raise. Hypothesis builds small definitions from the action types the engine
implements (nested scopes and loops, runAfter on any status, expressions that fail, variables
of every type used rightly and wrongly) and transports that answer any status, 202 with a
Location, or raise any exception; each run must end with a status, every action with a
Logic Apps status, and an EngineError only where the transport raised something that is not
an OSError. A case Hypothesis finds is kept in tests/hypothesis-db and becomes a test below."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorer.twin.engine import DefinitionRefused, Engine, HttpResponse

STATUSES = ["Succeeded", "Failed", "Skipped", "TimedOut"]
VALUES = st.sampled_from([1, "text", True, None, [1, 2], {"a": 1}, "@div(1, 0)", "@variables('n')",
                          "@variables('s')", "@createArray(1, 2)", "@triggerBody()?.x", "@{variables('s')}x",
                          "@body('A0')", "@outputs('nowhere')", "@utcnow()", "@addToTime(utcNow(), 1, 'day')"])


def _leaf(draw, name: str) -> dict:
    kind = draw(st.sampled_from(["Compose", "SetVariable", "AppendToArrayVariable", "AppendToStringVariable",
                                 "IncrementVariable", "Wait", "Http", "Terminate"]))
    if kind == "Compose":
        return {"type": draw(st.sampled_from(["Compose", "compose"])), "inputs": draw(VALUES)}
    if kind in ("SetVariable", "AppendToArrayVariable", "AppendToStringVariable"):
        var = {"SetVariable": draw(st.sampled_from(["n", "s", "a"])), "AppendToArrayVariable": "a",
               "AppendToStringVariable": "s"}[kind]
        return {"type": kind, "inputs": {"name": var, "value": draw(VALUES)}}
    if kind == "IncrementVariable":
        return {"type": kind, "inputs": {"name": "n", "value": draw(st.sampled_from([1, 2.5, "x", None]))}}
    if kind == "Wait":
        return {"type": "Wait", "inputs": draw(st.sampled_from([
            {"interval": {"count": 0, "unit": "second"}}, {"interval": {"count": 0, "unit": "Month"}},
            {"interval": {"count": "@variables('s')", "unit": "Second"}}, {"until": {"timestamp": None}},
            {"until": {"timestamp": "@utcNow()"}}, {"until": {"timestamp": "not a time"}}]))}
    if kind == "Terminate":
        return {"type": "Terminate", "inputs": {"runStatus": draw(st.sampled_from(["Failed", "Succeeded",
                                                                                   "Cancelled"]))}}
    extra = draw(st.sampled_from([{}, {"operationOptions": "DisableAsyncPattern"}, {"limit": {"timeout": "PT1S"}}]))
    return {"type": "Http", "inputs": {"method": "POST", "uri": f"https://example.test/{name}",
                                       "retryPolicy": {"type": "none"}}, **extra}


@st.composite
def actions(draw, depth: int = 0, prefix: str = "A", in_loop: bool = False) -> dict:
    out: dict = {}
    for i in range(draw(st.integers(1, 4))):
        name = f"{prefix}{i}"
        composite = depth < 2 and draw(st.booleans())
        if composite:
            kind = draw(st.sampled_from(["If", "Scope", "Foreach", "Until"]))
            loop = in_loop or kind in ("Foreach", "Until")
            body = draw(actions(depth + 1, f"{name}_", loop))
            action = {"type": kind, "actions": body}
            if kind == "If":
                action["expression"] = draw(st.sampled_from(["@equals(1, 1)", "@variables('s')",
                                                             {"equals": [1, 1], "not": {"equals": [1, 2]}},
                                                             {"or": [{"equals": ["@variables('n')", 0]}]}]))
                action["else"] = {"actions": draw(actions(depth + 1, f"{name}_else_", in_loop))}
            elif kind == "Foreach":
                action["foreach"] = draw(st.sampled_from(["@createArray(1, 2, 3)", "@variables('s')", "@range(0, 2)"]))
                if draw(st.booleans()):
                    action["operationOptions"] = "Sequential"
            elif kind == "Until":
                action.update(expression=draw(st.sampled_from(["@equals(1, 1)", "@equals(1, 2)", "@variables('n')"])),
                              limit={"count": draw(st.integers(1, 3)), "timeout": "PT5S"})
                if draw(st.booleans()):
                    action["operationOptions"] = "FailWhenLimitsReached"
        else:
            action = _leaf(draw, name)
            if in_loop and action["type"] == "Terminate":
                action = {"type": "Compose", "inputs": 1}
        if out and draw(st.booleans()):
            before = draw(st.sampled_from(sorted(out)))
            action["runAfter"] = {before: draw(st.lists(st.sampled_from(STATUSES), min_size=1, max_size=3,
                                                        unique=True))}
        else:
            action["runAfter"] = {}
        out[name] = action
    return out


class Chaos:
    """Answers each request as drawn: any status, a 202 with a Location, or an exception."""

    def __init__(self, answers: list):
        self.answers = answers
        self.i = 0

    def send(self, request, timeout):
        # after 50 requests, 200: waits return at once here, so an operation answering 202
        # for ever would poll for ever (on Azure, until the action's limit.timeout)
        answer = self.answers[self.i % len(self.answers)] if self.i < 50 else (200, False)
        self.i += 1
        if isinstance(answer, BaseException):
            raise answer
        status, location = answer
        headers = {"Location": "https://example.test/status", "Retry-After": "0"} if location else {}
        return HttpResponse(status, headers, b'{"ok": true}' if status < 300 else b"no")


ANSWERS = st.lists(st.one_of(
    st.tuples(st.sampled_from([200, 201, 202, 204, 400, 404, 409, 429, 500, 503]), st.booleans()),
    st.sampled_from([ConnectionResetError("reset"), TimeoutError("slow"), ValueError("bad URL"),
                     RuntimeError("a bug in a transport"), KeyError("header")])), min_size=1, max_size=5)


def _records(records: dict):
    for rec in records.values():
        yield rec
        for iteration in rec.inner:
            yield from _records(iteration)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=actions(), answers=ANSWERS, trigger_body=st.sampled_from([None, {}, {"x": 1}, [1], "text"]))
def test_no_definition_or_transport_makes_a_run_raise(body, answers, trigger_body):
    definition = {"triggers": {"t": {"type": "Request", "kind": "Http"}},
                  "actions": {"Init": {"type": "InitializeVariable", "runAfter": {}, "inputs": {"variables": [
                      {"name": "n", "type": "integer", "value": 0}, {"name": "s", "type": "string", "value": ""},
                      {"name": "a", "type": "array", "value": []}]}},
                      **{n: ({**a, "runAfter": a["runAfter"] or {"Init": ["Succeeded"]}}) for n, a in body.items()}}}
    try:
        engine = Engine(definition, transport=Chaos(answers), sleep=lambda seconds: False)
    except DefinitionRefused:
        return  # refused up front, with its reasons: nothing ran
    answered = []
    run = engine.run("t", {"headers": {}, "body": trigger_body}, respond=lambda answer: answered.append(answer) or True)
    assert run.status in ("Succeeded", "Failed", "Cancelled")
    assert len(answered) <= 1
    raised = any(isinstance(a, BaseException) and not isinstance(a, OSError) for a in answers)
    for rec in _records(run.actions):
        assert rec.status in ("Succeeded", "Failed", "Skipped", "TimedOut", "Cancelled"), rec
        assert rec.code != "EngineError" or raised and engine.action_type(rec.name) == "Http", rec
