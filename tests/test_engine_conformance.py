"""The engine against Microsoft's Workflow Definition Language documentation where a review
found it diverging (issue 30): what crashed now fails one action with Azure's error shape,
what Logic Apps refuses at save is refused with every problem listed, and what Logic Apps
accepts (any case, ``?.``, operationOptions, the asynchronous pattern, ...) runs as there.
Each test failed on the engine before the change."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from scorer.azure.recurrence import first_fire, next_fire
from scorer.twin.engine import DefinitionRefused, Engine, HttpResponse
from scorer.twin.runtime import TriggerQueue
from test_engine import compose, definition, run


class Recorder:
    """An Http transport that answers from a script and records what it was sent."""

    def __init__(self, answer=None):
        self.sent: list = []
        self.in_flight = self.most = 0
        self.lock = threading.Lock()
        self.answer = answer or (lambda request: HttpResponse(200, {}, b"{}"))

    def send(self, request, timeout):
        with self.lock:
            self.sent.append(request)
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(0.02)
        with self.lock:
            self.in_flight -= 1
        return self.answer(request)


def http(uri: str = "https://example.test/x", after: dict | None = None, **extra) -> dict:
    return {"type": "Http", "inputs": {"method": "GET", "uri": uri, "retryPolicy": {"type": "none"}},
            "runAfter": after or {}, **extra}


def run_with(actions: dict, transport, trigger: str = "Recurrence"):
    return Engine(definition(actions, trigger), transport=transport).run("t", {"body": {"a": None}, "headers": {}})


def variable(name: str, vtype: str, value) -> dict:
    return {"type": "InitializeVariable", "runAfter": {}, "inputs": {"variables": [
        {"name": name, "type": vtype, "value": value}]}}


# --- what crashed now fails one action, and the run goes on --------------------------------------

@pytest.mark.parametrize("interval", [{"count": 0, "unit": "Month"}, {"count": 0, "unit": "second"},
                                      {"count": 0, "unit": "YEAR"}])
def test_a_wait_in_any_unit_and_case_runs(interval):
    r = run({"W": {"type": "Wait", "runAfter": {}, "inputs": {"interval": interval}}})
    assert r.actions["W"].status == "Succeeded"


@pytest.mark.parametrize("inputs", [{"until": {"timestamp": None}}, {"interval": {"count": 1, "unit": "Fortnight"}},
                                    {"interval": {"count": "soon", "unit": "Second"}}])
def test_a_wait_it_cannot_read_fails_that_action_only(inputs):
    r = run({"W": {"type": "Wait", "runAfter": {}, "inputs": inputs},
             "After": compose(1, {"W": ["Failed"]})})
    assert r.actions["W"].status == "Failed" and r.actions["W"].error["code"] == "InvalidTemplate"
    assert r.actions["After"].status == "Succeeded"


def test_an_if_object_with_two_operators_fails_that_action():
    r = run({"If": {"type": "If", "runAfter": {}, "expression": {"equals": [1, 1], "not": {"equals": [1, 2]}},
                    "actions": {}},
             "After": compose(1, {"If": ["Failed"]})})
    assert r.actions["If"].status == "Failed" and "exactly one operator" in r.actions["If"].error["message"]
    assert r.actions["After"].status == "Succeeded"


def test_a_transport_error_of_any_kind_fails_that_action_not_the_run():
    def broken(request):
        raise ValueError("no scheme in this URL")
    r = run_with({"Call": http(), "After": compose(1, {"Call": ["Failed"]})}, Recorder(broken))
    assert r.actions["Call"].status == "Failed" and r.actions["Call"].error["code"] == "EngineError"
    assert "ValueError" in r.actions["Call"].error["message"] and r.actions["After"].status == "Succeeded"


def test_a_variable_set_to_a_value_of_another_type_fails_that_action():
    r = run({"Init": variable("n", "integer", 0),
             "Set": {"type": "SetVariable", "runAfter": {"Init": ["Succeeded"]}, "inputs": {"name": "n", "value": "x"}},
             "After": compose("@variables('n')", {"Set": ["Failed"]})})
    assert r.actions["Set"].error == {"code": "InvalidTemplate", "message": "The variable 'n' of type 'Integer' "
                                      "cannot be initialized or updated with value of type 'String'."}
    assert r.actions["After"].outputs == 0


def test_a_trigger_worker_keeps_firing_after_a_run_crashes():
    class Owner:
        calls = 0

        def execute(self, trigger, outputs, respond, label):
            Owner.calls += 1
            if Owner.calls == 1:
                raise RuntimeError("a defect")
    q = TriggerQueue(Owner(), "t", 1)
    assert q.fire({}).wait(5) and q.fire({}).wait(5) and Owner.calls == 2


# --- what Logic Apps refuses at save: every problem at once -----------------------------------------

REFUSED = {
    "a runAfter cycle": ({"A": compose(1, {"B": ["Succeeded"]}), "B": compose(1, {"A": ["Succeeded"]})},
                         "their runAfter form a cycle"),
    "a dangling runAfter": ({"A": compose(1, {"Nope": ["Succeeded"]})}, "'Nope' is not an action in the same scope"),
    "a variable in a scope": ({"S": {"type": "Scope", "runAfter": {}, "actions": {"V": variable("v", "string", "")}}},
                              "only at the top level"),
    "a Response in a loop": ({"L": {"type": "Foreach", "foreach": "@createArray(1)", "runAfter": {}, "actions": {
        "R": {"type": "Response", "kind": "Http", "inputs": {"statusCode": 200}, "runAfter": {}}}}},
        "cannot be inside the loop 'L'"),
    "a Terminate in an Until": ({"U": {"type": "Until", "expression": "@true", "limit": {"count": 1}, "runAfter": {},
                                       "actions": {"T": {"type": "Terminate", "runAfter": {},
                                                         "inputs": {"runStatus": "Failed"}}}}},
                                "cannot be inside the loop 'U'"),
    "a variable of the wrong type": ({"V": variable("n", "integer", "seven")}, "cannot be initialized with value"),
    "incrementing a string": ({"V": variable("s", "string", ""),
                               "I": {"type": "IncrementVariable", "runAfter": {"V": ["Succeeded"]},
                                     "inputs": {"name": "s", "value": 1}}}, "cannot change variable 's'"),
    "appending to an undeclared variable": ({"A": {"type": "AppendToArrayVariable", "runAfter": {},
                                                   "inputs": {"name": "ghost", "value": 1}}},
                                            "variable 'ghost' is never initialised"),
    "a long description": ({"A": {**compose(1), "description": "x" * 257}}, "Logic Apps allows 256"),
    "Foreach concurrency 51": ({"L": {"type": "Foreach", "foreach": "@createArray(1)", "runAfter": {}, "actions": {},
                                      "runtimeConfiguration": {"concurrency": {"repetitions": 51}}}},
                               "it must be from 1 to 50"),
    "an Until count of 5001": ({"U": {"type": "Until", "expression": "@true", "limit": {"count": 5001},
                                      "runAfter": {}, "actions": {}}}, "from 1 to 5000 iterations"),
    "91 retries": ({"H": {**http(), "inputs": {"method": "GET", "uri": "https://x.test", "retryPolicy": {
        "type": "fixed", "count": 91, "interval": "PT10S"}}}}, "count is 91"),
    "a retry interval of 1 s": ({"H": {**http(), "inputs": {"method": "GET", "uri": "https://x.test", "retryPolicy": {
        "type": "fixed", "count": 2, "interval": "PT1S"}}}}, "interval is PT1S"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_what_logic_apps_refuses_at_save_is_refused_before_anything_runs(case):
    actions, words = REFUSED[case]
    sent = Recorder()
    with pytest.raises(DefinitionRefused, match=words):
        Engine(definition({"First": http(), **{n: a for n, a in actions.items()}}), transport=sent)
    assert sent.sent == []


def test_a_refusal_lists_every_problem_not_only_the_first():
    d = definition({"A": compose("@nosuch()", {"Gone": ["Succeeded"]}),
                    "B": {"type": "ParseJson", "runAfter": {}, "inputs": {}},
                    "C": {"type": "Compose", "runAfter": {}, "inputs": "@xpath(xml('<a/>'), '/a')"}})
    d["triggers"]["u"] = {"type": "ApiConnection", "inputs": {}}
    with pytest.raises(DefinitionRefused) as refused:
        Engine(d)
    text = " | ".join(refused.value.problems)
    for words in ("unknown function nosuch()", "'Gone' is not an action", "type 'ParseJson' is not implemented",
                  "function xpath() is not implemented", "trigger 'u': type 'ApiConnection'"):
        assert words in text
    assert len(refused.value.problems) >= 5


def test_eleven_triggers_are_over_the_limit():
    d = definition({"A": compose(1)})
    d["triggers"].update({f"r{i}": {"type": "Request", "kind": "Http"} for i in range(10)})
    with pytest.raises(DefinitionRefused, match="11 triggers; Logic Apps allows 10"):
        Engine(d)


# --- what Logic Apps accepts, run as there -----------------------------------------------------------

def test_type_names_function_names_and_time_units_are_read_in_any_case():
    d = definition({"Now": {"type": "compose", "runAfter": {}, "inputs": "@addToTime(utcnow(), 5, 'minute')"},
                    "Body": {"type": "COMPOSE", "runAfter": {"Now": ["succeeded"]}, "inputs": "@triggerbody()?['a']"}})
    d["triggers"]["t"]["type"] = "recurrence"
    r = Engine(d).run("t", {"body": {"a": 7}})
    assert r.status == "Succeeded" and r.actions["Body"].outputs == 7 and r.actions["Now"].outputs.endswith("Z")


def test_the_question_dot_operator_reads_a_missing_member_as_null():
    r = run({"A": compose("@triggerBody()?.a?.b"), "B": compose("@coalesce(triggerBody()?.missing, 'none')")})
    assert r.actions["A"].outputs is None and r.actions["B"].outputs == "none"


def test_an_interpolated_value_that_holds_an_interpolation_is_written_as_it_is():
    r = run({"V": variable("v", "string", "@concat('@', '{variables(''w'')}')"),
             "W": {**variable("w", "integer", 2), "runAfter": {"V": ["Succeeded"]}},
             "Text": compose("a @{variables('v')} b @{variables('w')}", {"W": ["Succeeded"]})})
    assert r.actions["Text"].outputs == "a @{variables('w')} b 2"


def test_a_condition_must_be_a_boolean():
    r = run({"V": variable("s", "string", "true"),
             "If": {"type": "If", "expression": "@variables('s')", "runAfter": {"V": ["Succeeded"]}, "actions": {}}})
    assert r.actions["If"].status == "Failed" and "must give a Boolean" in r.actions["If"].error["message"]


def test_a_sequential_foreach_and_a_foreach_inside_another_run_one_at_a_time():
    loop = {"type": "Foreach", "foreach": "@createArray(1, 2, 3, 4)", "runAfter": {}, "actions": {"Call": http()}}
    free, sequential = Recorder(), Recorder()
    run_with({"L": loop}, free)
    run_with({"L": {**loop, "operationOptions": "Sequential"}}, sequential)
    assert free.most > 1 and sequential.most == 1
    nested = Recorder()
    run_with({"Outer": {"type": "Foreach", "foreach": "@createArray(1, 2)", "runAfter": {},
                        "operationOptions": "Sequential", "actions": {"Inner": loop}}}, nested)
    assert len(nested.sent) == 8 and nested.most == 1


def test_an_action_inside_a_scope_can_be_referred_to_from_outside_it():
    r = run({"S": {"type": "Scope", "runAfter": {}, "actions": {"Inside": compose(41)}},
             "Outside": compose("@add(outputs('Inside'), 1)", {"S": ["Succeeded"]})})
    assert r.actions["Outside"].outputs == 42


def _async_service(polls_before_done: int, retry_after: str = "0"):
    state = {"polls": 0}

    def answer(request):
        if request.method == "POST":
            return HttpResponse(202, {"Location": "https://example.test/status", "Retry-After": retry_after}, b"")
        state["polls"] += 1
        if state["polls"] <= polls_before_done:
            return HttpResponse(202, {"Location": "https://example.test/status", "Retry-After": retry_after}, b"")
        return HttpResponse(200, {"Content-Type": "application/json"}, b'{"done": true}')
    return answer


def test_the_http_action_follows_the_asynchronous_pattern_unless_disabled():
    post = {"type": "Http", "runAfter": {}, "inputs": {"method": "POST", "uri": "https://example.test/start"}}
    followed = Recorder(_async_service(2))
    r = run_with({"Start": post}, followed)
    assert r.actions["Start"].outputs["statusCode"] == 200 and r.actions["Start"].outputs["body"] == {"done": True}
    assert [q.method for q in followed.sent] == ["POST", "GET", "GET", "GET"]
    r = run_with({"Start": {**post, "operationOptions": "DisableAsyncPattern"}}, Recorder(_async_service(2)))
    assert r.actions["Start"].outputs["statusCode"] == 202 and r.actions["Start"].status == "Succeeded"


def test_the_http_actions_limit_timeout_ends_a_long_operation_timed_out():
    post = {"type": "Http", "runAfter": {}, "limit": {"timeout": "PT2S"},
            "inputs": {"method": "POST", "uri": "https://example.test/start"}}
    r = run_with({"Start": post, "After": compose(1, {"Start": ["TimedOut"]})}, Recorder(_async_service(99, "1")))
    assert r.actions["Start"].status == "TimedOut" and r.actions["After"].status == "Succeeded"


@pytest.mark.parametrize("expr, expected", [
    ("@formatDateTime('2026-03-04T05:06:07Z', 'M')", "March 4"),
    ("@formatDateTime('2026-03-04T05:06:07Z', 'Y')", "March 2026"),
    ("@formatDateTime('2026-03-04T05:06:07Z', 'd', 'en-US')", "3/4/2026"),
    ("@formatDateTime('Wed, 04 Mar 2026 05:06:07 GMT')", "2026-03-04T05:06:07.0000000Z"),
    ("@addToTime('2026-01-31T00:00:00Z', 1, 'month')", "2026-02-28T00:00:00.0000000Z"),
])
def test_date_formats_and_rfc_1123_timestamps(expr, expected):
    assert run({"A": compose(expr)}).actions["A"].outputs == expected


def test_a_locale_the_engine_does_not_format_fails_the_action_naming_it():
    r = run({"A": compose("@formatDateTime('2026-03-04T05:06:07Z', 'D', 'fr-FR')")})
    assert r.actions["A"].status == "Failed" and "'fr-FR'" in r.actions["A"].error["message"]


# --- the Recurrence trigger and trigger conditions ----------------------------------------------------

def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


SAVED = utc(2026, 12, 7, 10, 17)  # a Monday


@pytest.mark.parametrize("recurrence, first, then", [
    # without a startTime the first recurrence runs when the workflow is saved, then by interval
    ({"frequency": "Hour", "interval": 2}, SAVED, utc(2026, 12, 7, 12, 17)),
    # every 2 days at 02:30, counted from the start day
    ({"frequency": "Day", "interval": 2, "startTime": "2026-12-01T00:00:00Z",
      "schedule": {"hours": [2], "minutes": [30]}}, utc(2026, 12, 9, 2, 30), utc(2026, 12, 11, 2, 30)),
    # every other week, on Monday and Friday at 08:00 in Paris (UTC+1 in winter)
    ({"frequency": "Week", "interval": 2, "startTime": "2026-11-30T00:00:00", "timeZone": "Romance Standard Time",
      "schedule": {"weekDays": ["Monday", "Friday"], "hours": [8], "minutes": [0]}},
     utc(2026, 12, 14, 7, 0), utc(2026, 12, 18, 7, 0)),
    # a start time in the future, without a schedule: the first run is at it
    ({"frequency": "Minute", "interval": 15, "startTime": "2026-12-08T00:00:00Z"},
     utc(2026, 12, 8), utc(2026, 12, 8, 0, 15)),
    # a start time in the past: counted from it, so that no recurrence drifts
    ({"frequency": "Minute", "interval": 15, "startTime": "2026-12-07T00:05:00Z"},
     utc(2026, 12, 7, 10, 20), utc(2026, 12, 7, 10, 35)),
    # monthly on the 31st: months without one are passed over
    ({"frequency": "Month", "interval": 1, "startTime": "2026-01-01T00:00:00Z", "schedule": {"monthDays": [31],
                                                                                           "hours": [6]}},
     utc(2026, 12, 31, 6, 0), utc(2027, 1, 31, 6, 0)),
])
def test_a_recurrence_fires_as_the_scheduling_article_says(recurrence, first, then):
    assert first_fire(recurrence, SAVED) == first
    assert next_fire(recurrence, first, SAVED) == then


def test_the_shipped_schedule_does_not_fire_when_it_is_deployed():
    recurrence = definition_of_the_workflow()["triggers"]["Scheduled_run"]["recurrence"]
    assert first_fire(recurrence, SAVED) == utc(2026, 12, 8, 2, 0)


def definition_of_the_workflow() -> dict:
    return json.loads((Path(__file__).parents[1] / "logicapp" / "workflow.json").read_text())["definition"]


def test_a_time_zone_the_engine_does_not_know_is_refused_naming_it():
    d = definition({"A": compose(1)})
    d["triggers"]["t"]["recurrence"]["timeZone"] = "Mars Standard Time"
    with pytest.raises(DefinitionRefused, match="timeZone 'Mars Standard Time'"):
        Engine(d)


def test_a_trigger_whose_conditions_do_not_hold_starts_no_run():
    d = definition({"A": compose(1)}, "Request")
    d["triggers"]["t"]["conditions"] = [{"expression": "@equals(triggerBody()?['kind'], 'go')"}]
    engine = Engine(d)
    answers = []
    skipped = engine.run("t", {"body": {"kind": "stop"}}, answers.append)
    ran = engine.run("t", {"body": {"kind": "go"}})
    assert skipped.status == "Skipped" and skipped.actions == {} and answers[0]["statusCode"] == 202
    assert ran.status == "Succeeded" and ran.actions["A"].outputs == 1


def test_where_the_articles_disagree_a_scopes_status_is_one_switch():
    # a failure handled inside the scope: the scopes article fails the scope, the
    # exception-handling article's final-action rule does not
    actions = {"S": {"type": "Scope", "runAfter": {}, "actions": {
        "Fails": {"type": "Compose", "inputs": "@div(1, 0)", "runAfter": {}},
        "Handles": compose(1, {"Fails": ["Failed"]})}}}
    strict = Engine(definition(actions)).run("t", {})
    lenient = Engine(definition(actions), scope_status="branch ends").run("t", {})
    assert strict.actions["S"].status == "Failed" and lenient.actions["S"].status == "Succeeded"


def test_a_variable_set_to_null_fails_that_action_found_by_hypothesis():
    # tests/test_engine_properties.py found it: null set into an Integer, then incremented,
    # raised a TypeError inside the engine; Logic Apps refuses the null itself
    r = run({"Init": variable("n", "integer", 0),
             "Set": {"type": "SetVariable", "runAfter": {"Init": ["Succeeded"]},
                     "inputs": {"name": "n", "value": "@triggerBody()?.x"}},
             "Inc": {"type": "IncrementVariable", "runAfter": {"Set": ["Failed"]}, "inputs": {"name": "n", "value": 1}},
             "Out": compose("@variables('n')", {"Inc": ["Succeeded"]})})
    assert r.actions["Set"].error["message"].endswith("with value of type 'Null'.")
    assert r.actions["Out"].outputs == 1
