"""The local twin runs logicapp/workflow.json with the workflow engine against the ARM
stand-in and Azurite: the failure stories of issues 14 and 15, end to end. Each is the
shipped workflow's own control flow; the twin only injects the fault."""

from __future__ import annotations

import json
import time

import pytest

from scorer.azure import workflow as wf
from scorer.twin.backends import ProcessBackend
from scorer.twin.engine import HttpRequest
from scorer.twin.standin import Faults
from scorer.errors import ConfigError
from scorer.twin.local import Twin
from scorer.twin.runtime import TwinTransport

from conftest import ROOT

WORKFLOW = ROOT / "logicapp" / "workflow.json"
ROW = b"wt,hp\n2.6,110\n3.2,150\n"


@pytest.fixture
def gamma(pipeline, fitted):
    pipeline.publish(fitted / "glm_gamma.rds", "g")
    return pipeline


@pytest.fixture
def make_twin(gamma):
    made = []

    def make(*faults: str, workflow=WORKFLOW, **overrides) -> Twin:
        twin = Twin(gamma.settings, workflow, ProcessBackend(), "scorer:dev", overrides, None,
                    Faults.parse(list(faults)), watch_poll=0.3)
        made.append(twin)
        return twin
    yield make
    for twin in made:
        twin.shutdown()
        twin.drain()
        twin.close()


def job_states(outcome) -> list[dict]:
    return outcome.run.variables["jobStates"]


def saved_log(p, outcome, group: str) -> str:
    return p.store.read_bytes("logs", f"runs/{outcome.run.name}/{group}.log").decode()


def test_a_run_scores_saves_logs_with_the_groups_state_records_success_and_deletes_the_group(gamma, make_twin):
    gamma.drop("g/a.csv", ROW)
    twin = make_twin()
    outcome = twin.run_once()
    assert outcome.run.status == "Succeeded", outcome.run.error
    (state,) = job_states(outcome)
    assert (state["state"], state["exitCode"]) == ("Succeeded", 0)
    log = saved_log(gamma, outcome, state["name"])
    assert '"event": "run_finished"' in log and "the container group as last polled" in log
    marker = json.loads(gamma.store.read_bytes("logs", "_state/last-success.json"))
    assert marker["containerGroups"] == [state["name"]]
    assert twin.standin.groups[state["name"]].deleted
    assert gamma.names("output") == ["g/a.csv"]


def test_an_unpullable_image_ends_the_run_failed_within_one_poll_with_the_reason_kept(gamma, make_twin):
    gamma.drop("g/a.csv", ROW)
    twin = make_twin("unpullable")
    t = time.monotonic()
    outcome = twin.run_once()
    assert time.monotonic() - t < 10  # one poll (1 s here), not jobTimeout
    assert outcome.run.status == "Failed" and outcome.run.error["code"] == "ScoringJobFailed"
    (state,) = job_states(outcome)
    assert state["state"] == "ProvisioningFailed" and state["provisioningState"] == "Failed"
    assert "Failed to pull image" in saved_log(gamma, outcome, state["name"])
    assert twin.standin.groups[state["name"]].deleted
    assert gamma.names("input") == ["g/a.csv"]  # nothing was lost: the next run scores it


def test_a_refused_create_among_three_lets_the_other_two_run_to_completion(gamma, make_twin):
    for i in range(3):
        gamma.drop(f"g/{i}.csv", ROW)
    twin = make_twin("quota:2", parallelJobs=3)
    outcome = twin.run_once()
    states = {s["name"]: s for s in job_states(outcome)}
    assert len(states) == 3 and outcome.run.status == "Failed"
    assert sorted(s["state"] for s in states.values()) == ["NotFound", "Succeeded", "Succeeded"]
    ran = [g for g in twin.standin.groups.values()]
    assert len(ran) == 2 and all(g.exit_code == 0 and g.deleted for g in ran)  # finished, then deleted
    assert sorted(gamma.names("archive")) == ["g/0.csv", "g/1.csv", "g/2.csv"]
    refused = [r for r in twin.standin.requests if r[0] == "PUT" and r[2] == 409]
    assert len(refused) == 1


def test_a_group_that_answers_404_is_finished_at_once_and_cleaned_up(gamma, make_twin):
    gamma.drop("g/a.csv", ROW)
    twin = make_twin("gone:1")
    outcome = twin.run_once()
    (state,) = job_states(outcome)
    assert state["state"] == "NotFound" and outcome.run.status == "Failed"
    assert twin.standin.groups[state["name"]].deleted


def test_a_group_that_never_leaves_pending_is_deleted_at_the_job_timeout(gamma, make_twin):
    gamma.drop("g/a.csv", ROW)
    twin = make_twin("pending", jobTimeout="PT3S")
    t = time.monotonic()
    outcome = twin.run_once()
    assert 3 <= time.monotonic() - t < 15
    (state,) = job_states(outcome)
    wait = outcome.run.actions["Wait_for_jobs"]  # FailWhenLimitsReached: a loop at its timeout fails
    assert state["state"] == "Pending" and wait.status == "Failed" and wait.code == "UntilLimitsReached"
    assert twin.standin.groups[state["name"]].deleted and outcome.run.status == "Failed"


@pytest.mark.slow
def test_throttling_is_retried_by_the_actions_retry_policy(gamma, make_twin):
    gamma.drop("g/a.csv", ROW)
    twin = make_twin("throttle:1")
    outcome = twin.run_once()
    assert outcome.run.status == "Succeeded"
    assert twin.standin.requests[0][2] == 429 and twin.standin.requests[1][0] == "PUT"


def test_event_grid_validation_gets_the_answer_event_grid_expects(make_twin):
    twin = make_twin()
    assert twin.watcher.validate()


def test_blob_events_start_a_run_that_answers_202_and_scores_what_is_pending(gamma, make_twin):
    twin = make_twin()
    twin.watcher.seen = twin.watcher.snapshot()
    gamma.drop("g/a.csv", ROW)
    assert twin.watcher.deliver_new() == 1
    deadline = time.monotonic() + 60
    while gamma.names("input") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert gamma.names("archive") == ["g/a.csv"]
    while not twin.runs and time.monotonic() < deadline:
        time.sleep(0.1)
    run = twin.runs[0].run
    assert run.trigger == wf.BLOB_TRIGGER and run.response["statusCode"] == 202 and run.status == "Succeeded"


def test_storage_requests_without_x_ms_date_are_refused_as_azure_storage_refuses_them(make_twin):
    """The workflow's storage calls carry x-ms-version and x-ms-date (issue 14,
    defect 9); the twin refuses one without, as Storage does with a token."""
    twin = make_twin()
    auth = {"type": "ManagedServiceIdentity", "identity": "x", "audience": "https://storage.azure.com/"}
    request = HttpRequest("GET", twin.blob_endpoint + "logs/_state/last-success.json",
                          {"x-ms-version": "2023-11-03"}, None, auth)
    answer = twin.transport.send(request, 10)
    assert answer.status == 403 and b"x-ms-date" in answer.body
    request.headers["x-ms-date"] = "Sat, 28 Nov 2026 20:00:00 GMT"
    assert twin.transport.send(request, 10).status in (200, 404)


def test_the_twin_refuses_a_definition_the_engine_cannot_run_naming_what(make_twin, tmp_path):
    doc = json.loads(WORKFLOW.read_text())
    doc["definition"]["actions"]["Notify"] = {"type": "ApiConnection", "runAfter": {}, "inputs": {}}
    other = tmp_path / "workflow.json"
    other.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="type 'ApiConnection' is not implemented"):
        make_twin(workflow=other)


def test_transport_reaches_nothing_but_the_standin_and_azurite(make_twin):
    twin = make_twin()
    assert isinstance(twin.transport, TwinTransport)
    with pytest.raises(OSError, match="reaches only"):
        twin.transport.send(HttpRequest("GET", "https://management.azure.com/x", {}, None, None), 5)


def test_an_older_run_finishing_late_never_moves_the_success_marker_back(gamma, make_twin):
    """Before the fix every successful run wrote its start time over the marker, so a run
    that started before the one recorded (an older run finishing late) moved it back, and
    later event runs took already scored events for new ones."""
    twin = make_twin()  # it makes the logs container
    marker = json.dumps({"startedAt": "2099-01-01T00:00:00.0000000Z", "containerGroups": ["later"]}).encode()
    gamma.store.put_bytes("logs", "_state/last-success.json", marker)
    gamma.drop("g/a.csv", ROW)
    outcome = twin.run_once()
    assert outcome.run.status == "Succeeded", outcome.run.error
    assert json.loads(gamma.store.read_bytes("logs", "_state/last-success.json"))["containerGroups"] == ["later"]


def test_the_first_success_writes_the_marker_and_a_later_one_replaces_it(gamma, make_twin):
    twin = make_twin()
    try:
        gamma.store.delete("logs", "_state/last-success.json")  # the session's Azurite is shared
    except Exception:  # no marker yet
        pass
    gamma.drop("g/a.csv", ROW)
    first = twin.run_once()
    marker = json.loads(gamma.store.read_bytes("logs", "_state/last-success.json"))
    assert first.run.status == "Succeeded" and marker["containerGroups"] == first.run.variables["groupNames"]
    gamma.drop("g/b.csv", ROW)
    second = twin.run_once()
    marker = json.loads(gamma.store.read_bytes("logs", "_state/last-success.json"))
    assert second.run.status == "Succeeded" and marker["containerGroups"] == second.run.variables["groupNames"]


def test_a_trigger_with_a_concurrency_limit_queues_ten_runs_beyond_it_and_refuses_the_next():
    """Logic Apps' limits: waiting runs are at most 10 plus the concurrent runs (so 11 with
    runs 1); before the fix the twin queued 10."""
    import threading

    from scorer.twin.runtime import TriggerQueue

    release = threading.Event()

    class Owner:
        def execute(self, *args):
            release.wait(10)
    q = TriggerQueue(Owner(), "t", 1)
    first = q.fire({})
    time.sleep(0.2)  # the first run is running: the rest wait
    waiting = [q.fire({}) for _ in range(11)]
    assert first is not None and all(w is not None for w in waiting)
    assert q.fire({}) is None
    release.set()
