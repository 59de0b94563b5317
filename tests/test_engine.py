"""The workflow engine's semantics on small definitions: runAfter, statuses, scopes,
run status, loops, variables, Query, Terminate, Response, and the refusals. The whole
shipped workflow is run in tests/test_twin.py."""

from __future__ import annotations

import time

import pytest

from scorer.twin.engine import DefinitionRefused, Engine, retry_waits


def definition(actions: dict, trigger: str = "Recurrence") -> dict:
    trig = {"type": "Recurrence", "recurrence": {"frequency": "Day", "interval": 1}} if trigger == "Recurrence" \
        else {"type": "Request", "kind": "Http"}
    return {"parameters": {"p": {"type": "Int", "defaultValue": 3}}, "triggers": {"t": trig}, "actions": actions}


def fail(after: dict | None = None) -> dict:
    """An action that fails: an expression that cannot be evaluated (InvalidTemplate)."""
    return {"type": "Compose", "inputs": "@div(1, 0)", "runAfter": after or {}}


def compose(value, after: dict | None = None) -> dict:
    return {"type": "Compose", "inputs": value, "runAfter": after or {}}


def run(actions: dict, **kw):
    return Engine(definition(actions, **kw)).run("t", {"body": None, "headers": {}})


def test_an_action_runs_only_after_its_predecessors_end_with_a_listed_status():
    r = run({"A": fail(), "B": compose(1, {"A": ["Succeeded"]}), "C": compose(2, {"B": ["Succeeded"]}),
             "D": compose(3, {"A": ["Failed"]})})
    status = {n: a.status for n, a in r.actions.items()}
    assert status == {"A": "Failed", "B": "Skipped", "C": "Skipped", "D": "Succeeded"}
    assert r.actions["A"].code == "InvalidTemplate"


def test_a_handled_failure_leaves_the_run_succeeded_an_unhandled_one_fails_it():
    handled = run({"A": fail(), "Handle": compose(1, {"A": ["Failed"]})})
    assert handled.status == "Succeeded"
    unhandled = run({"A": fail(), "Next": compose(1, {"A": ["Succeeded"]})})
    assert unhandled.status == "Failed"  # the branch ends Skipped, so it counts as its predecessor: Failed


def test_a_scope_fails_when_any_action_in_it_failed():
    r = run({"S": {"type": "Scope", "runAfter": {}, "actions": {
        "A": fail(), "Handle": compose(1, {"A": ["Failed"]})}},
        "AfterFailed": compose(1, {"S": ["Failed"]}), "AfterOk": compose(2, {"S": ["Succeeded"]})})
    assert r.actions["S"].status == "Failed"
    assert (r.actions["AfterFailed"].status, r.actions["AfterOk"].status) == ("Succeeded", "Skipped")


def test_terminate_ends_the_run_at_once_with_its_status_and_error():
    r = run({"Stop": {"type": "Terminate", "runAfter": {}, "inputs": {
        "runStatus": "Failed", "runError": {"code": "X", "message": "@{concat('because ', 'reasons')}"}}},
        "Never": compose(1, {"Stop": ["Succeeded", "Failed", "Skipped", "TimedOut"]})})
    assert r.status == "Failed" and r.error == {"code": "X", "message": "because reasons"}
    assert "Never" not in r.actions


def test_foreach_items_variables_and_concurrency():
    actions = {
        "Init": {"type": "InitializeVariable", "runAfter": {}, "inputs": {"variables": [
            {"name": "seen", "type": "array", "value": []}]}},
        "Loop": {"type": "Foreach", "foreach": "@range(0, parameters('p'))", "runAfter": {"Init": ["Succeeded"]},
                 "runtimeConfiguration": {"concurrency": {"repetitions": 3}},
                 "actions": {"Wait": {"type": "Wait", "runAfter": {}, "inputs": {"interval": {"count": 0.3, "unit": "Second"}}},
                             "Add": {"type": "AppendToArrayVariable", "runAfter": {"Wait": ["Succeeded"]},
                                     "inputs": {"name": "seen", "value": "@mul(items('Loop'), 10)"}}}},
        "Out": compose("@variables('seen')", {"Loop": ["Succeeded"]}),
    }
    t = time.monotonic()
    r = run(actions)
    assert r.status == "Succeeded" and sorted(r.actions["Out"].outputs) == [0, 10, 20]
    assert time.monotonic() - t < 0.8  # the three iterations waited side by side
    assert len(r.actions["Loop"].inner) == 3


def test_until_repeats_until_its_expression_holds_with_iteration_indexes():
    r = run({"Init": {"type": "InitializeVariable", "runAfter": {}, "inputs": {"variables": [
        {"name": "n", "type": "integer", "value": 0}]}},
        "Loop": {"type": "Until", "runAfter": {"Init": ["Succeeded"]}, "expression": "@equals(variables('n'), 5)",
                 "limit": {"count": 60, "timeout": "PT1M"},
                 "actions": {"Inc": {"type": "IncrementVariable", "runAfter": {}, "inputs": {"name": "n", "value": 1}},
                             "Index": compose("@iterationIndexes('Loop')", {"Inc": ["Succeeded"]})}}})
    loop = r.actions["Loop"]
    assert loop.status == "Succeeded" and len(loop.inner) == 5 and loop.inner[-1]["Index"].outputs == 4


def _until_to_its_limit(limit: dict, options: str | None = None, fail_last: bool = False) -> dict:
    loop = {"type": "Until", "runAfter": {}, "expression": "@equals(1, 2)", "limit": limit,
            "actions": {"W": {"type": "Wait", "runAfter": {}, "inputs": {"interval": {"count": 0.1, "unit": "Second"}}},
                        "Last": compose("@div(1, if(equals(iterationIndexes('Loop'), 2), 0, 1))" if fail_last else 1,
                                        {"W": ["Succeeded"]})}}
    if options:
        loop["operationOptions"] = options
    return {"Loop": loop, "Cleanup": compose(1, {"Loop": ["Succeeded", "Failed", "TimedOut"]})}


def test_an_until_at_its_timeout_has_its_last_iterations_status_and_the_next_action_runs():
    # the loops article: a loop that reaches its limits is Succeeded when its last iteration
    # succeeded, Failed when an action of the last iteration failed
    r = run(_until_to_its_limit({"count": 1000, "timeout": "PT0.5S"}))
    assert r.actions["Loop"].status == "Succeeded" and r.actions["Loop"].code == "UntilLimitsReached"
    assert r.actions["Cleanup"].status == "Succeeded" and r.status == "Succeeded"
    r = run(_until_to_its_limit({"count": 3, "timeout": "PT1M"}, fail_last=True))
    assert len(r.actions["Loop"].inner) == 3 and r.actions["Loop"].status == "Failed"
    r = run(_until_to_its_limit({"count": 4, "timeout": "PT1M"}, fail_last=True))  # the third failed, not the last
    assert len(r.actions["Loop"].inner) == 4 and r.actions["Loop"].status == "Succeeded"


def test_an_until_with_fail_when_limits_reached_fails_at_either_limit():
    for limit in ({"count": 1000, "timeout": "PT0.3S"}, {"count": 2, "timeout": "PT1M"}):
        r = run(_until_to_its_limit(limit, options="FailWhenLimitsReached"))
        loop = r.actions["Loop"]
        assert loop.status == "Failed" and loop.error["code"] == "UntilLimitsReached", limit
        assert r.actions["Cleanup"].status == "Succeeded"


def test_query_filters_with_item_and_conditions_in_object_form():
    r = run({"Q": {"type": "Query", "runAfter": {}, "inputs": {
        "from": [{"s": "Succeeded", "c": 0}, {"s": "Failed", "c": 3}, {"s": "Succeeded", "c": None}],
        "where": "@not(and(equals(item()?['s'], 'Succeeded'), equals(item()?['c'], 0)))"}},
        "If": {"type": "If", "runAfter": {"Q": ["Succeeded"]},
               "expression": {"and": [{"equals": ["@length(body('Q'))", 2]}, {"not": {"equals": [1, 2]}}]},
               "actions": {"Yes": compose("yes")}, "else": {"actions": {"No": compose("no")}}}})
    assert r.actions["Q"].outputs == {"body": [{"s": "Failed", "c": 3}, {"s": "Succeeded", "c": None}]}
    assert list(r.actions["If"].inner[0]) == ["Yes"]


def test_referring_to_a_skipped_action_fails_the_referring_action():
    r = run({"A": fail(), "B": compose(1, {"A": ["Succeeded"]}),
             "C": compose("@outputs('B')", {"B": ["Skipped"]})})
    assert r.actions["C"].status == "Failed" and "skipped" in r.actions["C"].error["message"]


def test_response_answers_a_request_run_and_fails_in_a_scheduled_run():
    answers = []
    actions = {"Answer": {"type": "Response", "runAfter": {}, "inputs": {
        "statusCode": 200, "body": {"validationResponse": "@triggerBody()?[0]?['data']?['validationCode']"}}}}
    eng = Engine(definition(actions, trigger="Request"))
    r = eng.run("t", {"headers": {}, "body": [{"data": {"validationCode": "abc"}}]}, respond=answers.append)
    assert r.status == "Succeeded" and answers == [{"statusCode": 200, "headers": {}, "body": {"validationResponse": "abc"}}]
    scheduled = run(actions)
    assert scheduled.actions["Answer"].status == "Failed"


def test_a_response_after_the_caller_stopped_waiting_fails_and_fails_the_run():
    """Microsoft's Response restrictions: when the request has already received a response
    (the caller's 120 s are over), the Response action is Failed and so is the run
    (Azure/logicapps#1340). Before the fix the engine marked it Succeeded."""
    actions = {"Answer": {"type": "Response", "runAfter": {}, "inputs": {"statusCode": 202}}}
    r = Engine(definition(actions, trigger="Request")).run("t", {}, respond=lambda answer: False)
    assert r.actions["Answer"].status == "Failed" and r.actions["Answer"].code == "ActionResponseTimedOut"
    assert r.status == "Failed"


def test_a_request_run_without_a_response_answers_202_at_its_end():
    answers = []
    Engine(definition({"A": compose(1)}, trigger="Request")).run("t", {}, respond=answers.append)
    assert answers[0]["statusCode"] == 202


@pytest.mark.parametrize("change, words", [
    ({"actions": {"X": {"type": "ApiConnection", "runAfter": {}, "inputs": {}}}}, "type 'ApiConnection'"),
    ({"actions": {"X": compose("@xpath(json('{}'), '/a')")}}, "xpath() is not implemented"),
    ({"triggers": {"t": {"type": "ApiConnectionWebhook"}}}, "type 'ApiConnectionWebhook'"),
    ({"actions": {"X": {"type": "Http", "runAfter": {}, "inputs": {"method": "GET", "uri": "x",
                                                                     "authentication": {"type": "Basic"}}}}},
     "authentication type 'Basic'"),
    ({"actions": {"X": compose(1, {"Y": ["Finished"]}), "Y": compose(2)}}, "Finished"),
])
def test_a_definition_with_something_unimplemented_is_refused_up_front_naming_it(change, words):
    d = definition({"A": compose(1)})
    d.update(change)
    with pytest.raises(DefinitionRefused, match=words.replace("(", r"\(").replace(")", r"\)")):
        Engine(d)


def test_retry_policies_give_the_documented_waits():
    assert retry_waits({"type": "none"}) == []
    assert retry_waits({"type": "fixed", "count": 2, "interval": "PT3S"}) == [3, 3]
    assert retry_waits({"type": "exponential", "count": 4, "interval": "PT10S"}) == [10, 20, 40, 80]
    assert retry_waits({"type": "default"}) == [7.5, 15, 30, 45]
