"""Offline checks of logicapp/workflow.json: schema, references, the container group it sends,
the environment it gives the job, and the run logic (poll, keep logs, delete, fail visibly).

Nothing here reaches Azure or runs the workflow engine: the container-group body is
rendered with scorer.azure.expressions' small evaluator and checked against the SDK's model.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scorer.azure import expressions as ex  # noqa: E402
from scorer.azure import workflow as wf  # noqa: E402
from scorer.azure import workflow_check as wc  # noqa: E402
from scorer.settings import ENV_NAMES, SETTINGS, Settings  # noqa: E402

SCHEMAS = ROOT.parent / "shared" / "schemas"


@pytest.fixture
def definition() -> dict:
    return wf.load()["definition"]


def without_docs(value):
    """``value`` without description/metadata fields: what Logic Apps executes."""
    if isinstance(value, dict):
        return {k: without_docs(v) for k, v in value.items() if k not in ("description", "metadata")}
    if isinstance(value, list):
        return [without_docs(v) for v in value]
    return value


def actions_by_name(definition: dict) -> dict[str, dict]:
    return {name: action for name, action, _, _ in wc.iter_actions(definition["actions"])}


# --- schema ---------------------------------------------------------------------------------

def test_workflow_validates_against_the_workflow_definition_subset():
    if not (SCHEMAS / "validate_example.py").exists():
        pytest.skip(f"schema check skipped: the offline schema bundle is not at {SCHEMAS}")
    spec = importlib.util.spec_from_file_location("validate_example", SCHEMAS / "validate_example.py")
    arm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(arm)
    messages = arm.validate_workflow_file(wf.load())
    assert not messages, "\n".join(messages)


# --- the reference checker itself, on small broken definitions ------------------------------

def _minimal() -> dict:
    return {"parameters": {"p": {"type": "String"}},
            "triggers": {"t": {"type": "Recurrence", "recurrence": {"frequency": "Day", "interval": 1}}},
            "actions": {
                "Init": {"type": "InitializeVariable", "inputs": {"variables": [{"name": "v", "type": "string"}]}, "runAfter": {}},
                "Loop": {"type": "Foreach", "foreach": "@createArray(1)", "runAfter": {"Init": ["Succeeded"]},
                         "actions": {"Inner": {"type": "Compose", "inputs": "@{items('Loop')}-@{parameters('p')}", "runAfter": {}}}},
                "Use": {"type": "Compose", "inputs": "@concat(variables('v'), body('Inner'))", "runAfter": {"Loop": ["Succeeded"]}}}}


def test_checker_accepts_a_clean_definition():
    assert wc.problems(_minimal()) == []


@pytest.mark.parametrize("path, value, expected", [
    (("actions", "Use", "inputs"), "@parameters('nope')", "parameters('nope') is not declared"),
    (("actions", "Use", "inputs"), "@variables('nope')", "variables('nope') is never initialised"),
    (("actions", "Use", "inputs"), "x @{body('Gone')?['a']} y", "body('Gone') names no action"),
    (("actions", "Use", "inputs"), "@items('Loop')", "items('Loop') is not inside that Foreach"),
    (("actions", "Use", "inputs"), "@concatt('a')", "unknown function concatt()"),
    (("actions", "Use", "inputs"), "@concat('a',", "expected"),
    (("actions", "Use", "runAfter"), {"Inner": ["Succeeded"]}, "'Inner' is not an action in the same scope"),
    (("actions", "Use", "runAfter"), {"Typo": ["Succeeded"]}, "'Typo' is not an action in the same scope"),
])
def test_checker_reports_each_kind_of_dangling_reference(path, value, expected):
    d = _minimal()
    node = d
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    found = wc.problems(d)
    assert any(expected in p for p in found), found


def test_checker_sees_references_nested_inside_function_arguments():
    d = _minimal()
    d["actions"]["Use"]["inputs"] = "@coalesce(string(length(outputs('Missing'))), 'x')"
    assert any("outputs('Missing') names no action" in p for p in wc.problems(d))


def test_interpolations_with_braces_and_quotes_inside_strings_are_split_correctly():
    assert ex.expressions_in("a @{concat('}', 'it''s')} b @{x()}") == ["concat('}', 'it''s')", "x()"]
    assert ex.expressions_in("@@{not an expression}") == []


# --- the workflow itself --------------------------------------------------------------------

def test_every_expression_and_run_after_in_the_workflow_refers_to_something_that_exists(definition):
    assert wc.problems(definition) == []


def test_contract_parameters_exist_with_the_agreed_defaults(definition):
    # The local runner reads these defaults; names and defaults are agreed with it.
    d = wf.defaults(definition)
    assert d["scheduleFrequency"] == "Day" and d["scheduleInterval"] == 1
    assert d["scheduleHours"] == [2] and d["scheduleMinutes"] == [0]
    assert d["pollSeconds"] == 15 and d["jobTimeout"] == "PT1H"
    assert d["cpuCores"] == 1 and d["memoryInGB"] == 2 and d["parallelJobs"] == 1
    assert d["logsContainer"] == "logs"
    assert isinstance(d["image"], str)
    assert all(set(e) == {"name", "value"} for e in d["scorerEnvironment"])
    types = {k: v["type"] for k, v in definition["parameters"].items()}
    assert types["scheduleHours"] == types["scheduleMinutes"] == types["scorerEnvironment"] == "Array"
    assert types["pollSeconds"] == types["parallelJobs"] == types["scheduleInterval"] == "Int"


def test_deploy_time_literals_equal_the_parameter_defaults(definition):
    # The recurrence and the Until timeout are literals (the schema allows no expression in
    # schedule.hours); deploy copies the parameter values in, so in the file they must agree.
    d = wf.defaults(definition)
    for path, name in wf.DEPLOY_TIME_FIELDS:
        node = definition
        for key in path:
            node = node[key]
        assert node == d[name], f"{'.'.join(path)} = {node!r} but {name} defaults to {d[name]!r}"


@pytest.mark.parametrize("frequency, schedule", [
    ("Minute", None), ("Second", None), ("Hour", {"minutes": [30]}), ("Day", {"hours": [2], "minutes": [30]}),
    ("Week", {"hours": [2], "minutes": [30]}), ("Month", None)])
def test_the_schedule_carries_only_the_fields_its_frequency_uses(definition, frequency, schedule):
    """Before the fix hours and minutes were written for every frequency (Azure/logicapps#73)."""
    values = wf.settings(definition, {"scheduleFrequency": frequency, "scheduleHours": [2], "scheduleMinutes": [30]})
    rec = wf.prepare_definition(definition, values)["triggers"][wf.SCHEDULE_TRIGGER]["recurrence"]
    assert rec.get("schedule") == schedule


def test_poll_seconds_stay_under_the_job_locks_lease(definition):
    with pytest.raises(wf.WorkflowSettingsError, match="pollSeconds=60 .* 60-second lease"):
        wf.settings(definition, {"pollSeconds": 60})


def test_prepared_definition_carries_overridden_schedule_and_timeout(definition):
    values = wf.settings(definition, {"scheduleFrequency": "Week", "scheduleHours": [1, 13],
                                      "scheduleMinutes": [30], "jobTimeout": "PT3H"})
    prepared = wf.prepare_definition(definition, values)
    rec = prepared["triggers"][wf.SCHEDULE_TRIGGER]["recurrence"]
    assert rec["frequency"] == "Week" and rec["schedule"] == {"hours": [1, 13], "minutes": [30]}
    assert prepared["actions"][wf.POLL_LOOP]["limit"]["timeout"] == "PT3H"
    assert prepared["parameters"]["scheduleHours"]["defaultValue"] == [1, 13]
    assert definition["triggers"][wf.SCHEDULE_TRIGGER]["recurrence"]["frequency"] == "Day", "input was modified"


@pytest.mark.parametrize("override, word", [
    ({"scheduleFrequency": "Fortnight"}, "scheduleFrequency"),
    ({"scheduleHours": [24]}, "scheduleHours"),
    ({"jobTimeout": "1 hour"}, "jobTimeout"),
    ({"cpuCores": 8}, "cpuCores"),
    ({"parallelJobs": 0}, "parallelJobs"),
    ({"subscriptionId": "x"}, "subscriptionId"),
])
def test_unusable_settings_are_rejected_naming_the_parameter(definition, override, word):
    with pytest.raises(wf.WorkflowSettingsError, match=word):
        wf.settings(definition, override)


def test_both_triggers_exist_schedule_and_blob_created(definition):
    triggers = definition["triggers"]
    assert triggers[wf.SCHEDULE_TRIGGER]["type"] == "Recurrence"
    assert triggers[wf.BLOB_TRIGGER]["type"] == "Request"


def test_workflow_holds_no_deployment_specific_ids(definition):
    text = json.dumps(without_docs(definition))
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text)
    assert "/subscriptions/" not in text.replace("subscriptions/@{parameters('subscriptionId')}", "")
    assert ".azurecr.io" not in text and ".blob.core.windows.net" not in text
    for name in wf.ARM_FILLED:
        if name != "resourceManagerUrl":
            assert definition["parameters"][name]["defaultValue"] == "", name


# --- the container group the workflow creates -----------------------------------------------

def render_create_body(definition: dict, values: dict | None = None) -> dict:
    """The PUT body of Create_container_group, expressions evaluated with parameter defaults."""
    params = wf.defaults(definition) | {
        "subscriptionId": "00000000-0000-0000-0000-000000000000", "resourceGroup": "rg", "location": "westeurope",
        "jobIdentityId": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/scorer-job",
        "registryServer": "scoreracr.azurecr.io", "image": "scoreracr.azurecr.io/scorer:1"} | (values or {})
    action = actions_by_name(definition)["Create_container_group"]
    context = {"parameters": params, "outputs": {"Compose_group_name": "scorer-20260102030405-0123abcd"}}
    return ex.render(action["inputs"]["body"], context)


def test_container_group_body_deserializes_into_the_sdks_container_group(definition):
    from azure.mgmt.containerinstance.models import ContainerGroup

    body = render_create_body(definition)
    group = ContainerGroup.deserialize(body)
    assert group.restart_policy == "Never"
    assert group.os_type == "Linux"
    assert group.identity.type == "UserAssigned"
    job_id = "/subscriptions/0/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/scorer-job"
    assert list(group.identity.user_assigned_identities) == [job_id]
    (cred,) = group.image_registry_credentials
    assert cred.server == "scoreracr.azurecr.io" and cred.identity == job_id
    (container,) = group.containers
    assert container.name == "scorer"
    assert container.image == "scoreracr.azurecr.io/scorer:1"
    assert container.resources.requests.cpu == 1 and container.resources.requests.memory_in_gb == 2
    assert container.command is None, "keep the image's ENTRYPOINT (tini) so SIGTERM reaches the job"
    # The model's serializer round-trips to the same REST shape: no field was dropped as unknown.
    assert group.serialize()["properties"]["containers"][0]["properties"]["environmentVariables"] == \
        wf.defaults(definition)["scorerEnvironment"] + [{"name": "SCORER_CPU_CORES", "value": "1"},
                                                       {"name": "SCORER_MEMORY_GB", "value": "2"},
                                                       {"name": "SCORER_PARALLEL_JOBS", "value": "1"}]


def test_cpu_and_memory_parameters_reach_the_container(definition):
    body = render_create_body(definition, {"cpuCores": 2.5, "memoryInGB": 7})
    requests = body["properties"]["containers"][0]["properties"]["resources"]["requests"]
    assert requests == {"cpu": 2.5, "memoryInGB": 7}
    # and the job knows its size, for the run's cost estimate
    env = {e["name"]: e["value"] for e in body["properties"]["containers"][0]["properties"]["environmentVariables"]}
    assert (env["SCORER_CPU_CORES"], env["SCORER_MEMORY_GB"]) == ("2.5", "7")
    assert Settings.from_env(dict(env, AZURE_STORAGE_CONNECTION_STRING="x")).cpu_cores == 2.5


def test_group_names_follow_the_agreed_pattern(definition):
    compose = actions_by_name(definition)["Compose_group_name"]["inputs"]
    name = ex.render(compose, {"parameters": {}})
    assert re.fullmatch(r"scorer-\d{14}-[0-9a-f]{8}", name) and len(name) <= 63
    assert name == "scorer-20260102030405-0123abcd"


# --- the environment: one source of truth ---------------------------------------------------

def test_container_environment_uses_only_scorer_setting_names_and_azure_client_id(definition):
    names = [e["name"] for e in wf.defaults(definition)["scorerEnvironment"]]
    arm = (ROOT / "arm_templates" / "main.json").read_text()
    appended = re.findall(r"createObject\('name', '(\w+)'", arm)
    assert set(appended) == {"SCORER_ACCOUNT_URL", "AZURE_CLIENT_ID"}
    added = re.findall(r"'name', '(\w+)'", json.dumps(definition))  # appended by the create action itself
    assert set(added) == {"SCORER_CPU_CORES", "SCORER_MEMORY_GB", "SCORER_PARALLEL_JOBS"}
    all_names = names + appended + added
    assert len(all_names) == len(set(all_names)), "a variable is given twice"
    assert set(all_names) <= ENV_NAMES | {"AZURE_CLIENT_ID"}, set(all_names) - ENV_NAMES


def test_container_environment_values_parse_with_the_settings_parsers(definition):
    by_env = {s.env: s for s in SETTINGS}
    for e in wf.defaults(definition)["scorerEnvironment"]:
        by_env[e["name"]].parse(e["value"])  # raises ValueError on a bad value


def test_the_job_never_gets_a_connection_string(definition):
    names = {e["name"] for e in wf.defaults(definition)["scorerEnvironment"]}
    assert "AZURE_STORAGE_CONNECTION_STRING" not in names  # it would win over the managed identity


# --- the run logic --------------------------------------------------------------------------

def _polled_state(definition: dict, get_outputs: dict) -> str:
    """The state the workflow's Remember_state records for one GET of a group."""
    state = actions_by_name(definition)["Remember_state"]["inputs"]["value"]["state"]
    return ex.render(state, {"outputs": {"Get_container_group": get_outputs}, "items": {"Poll_each_group": "g"}})


def test_polling_finishes_on_the_job_state_a_failed_provisioning_or_a_vanished_group(definition):
    """provisioningState Failed (an image pull, quota, capacity) and a 404 are terminal
    (issue 14, defect 4); the job's own end is instanceView.state."""
    group = lambda prov, state: {"statusCode": 200, "body": {"properties": {  # noqa: E731
        "provisioningState": prov, "instanceView": {"state": state} if state else None}}}
    assert _polled_state(definition, group("Succeeded", "Running")) == "Running"
    assert _polled_state(definition, group("Succeeded", "Succeeded")) == "Succeeded"
    assert _polled_state(definition, group("Failed", "Pending")) == "ProvisioningFailed"
    assert _polled_state(definition, group("Pending", None)) == "Pending"
    assert _polled_state(definition, {"statusCode": 404, "body": {"error": {"code": "ResourceNotFound"}}}) == "NotFound"
    acts = actions_by_name(definition)
    loop = acts[wf.POLL_LOOP]
    assert loop["type"] == "Until" and loop["limit"]["count"] >= 1 and loop["limit"]["timeout"]
    assert acts["Wait_between_polls"]["inputs"]["interval"]["count"] == "@parameters('pollSeconds')"
    where = acts["Unfinished_groups"]["inputs"]["where"]
    assert all(f"'{s}'" in where for s in ("Succeeded", "Failed", "Stopped", "ProvisioningFailed", "NotFound"))


def test_the_groups_that_exist_are_waited_for_whatever_the_create_loops_status(definition):
    """One failed create must not skip the wait (issue 14, defect 6)."""
    acts = actions_by_name(definition)
    assert set(acts["Wait_for_jobs"]["runAfter"]["Create_container_groups"]) >= {"Succeeded", "Failed"}


def test_every_storage_call_carries_x_ms_version_and_x_ms_date(definition):
    """Logic Apps' managed-identity calls to Storage need them (issue 14, defect 9)."""
    for name, action in actions_by_name(definition).items():
        if action["type"] == "Http" and action["inputs"]["authentication"]["audience"] == "https://storage.azure.com/":
            headers = action["inputs"]["headers"]
            assert headers["x-ms-version"] and headers["x-ms-date"] == "@{utcNow('R')}", name


def test_subscription_validation_is_answered_by_the_workflow(definition):
    """Answered with a Response either way Azure behaves (issue 14, defect 8)."""
    branch = actions_by_name(definition)["If_subscription_validation"]
    answer = branch["actions"]["Answer_validation"]
    assert answer["type"] == "Response" and answer["inputs"]["body"] == {
        "validationResponse": "@triggerBody()?[0]?['data']?['validationCode']"}


def test_cleanup_runs_after_every_outcome_of_the_job(definition):
    acts = actions_by_name(definition)
    assert set(acts["Clean_up_each_group"]["runAfter"]["Wait_for_jobs"]) == {"Succeeded", "Failed", "Skipped", "TimedOut"}
    assert set(acts["Delete_container_group"]["runAfter"]["Save_logs"]) == {"Succeeded", "Failed", "Skipped", "TimedOut"}
    assert acts["Delete_container_group"]["inputs"]["method"] == "DELETE"
    assert set(acts["Failed_groups"]["runAfter"]["Clean_up_each_group"]) == {"Succeeded", "Failed", "Skipped", "TimedOut"}


def test_logs_are_saved_as_logs_container_slash_run_slash_group_dot_log(definition):
    save = actions_by_name(definition)["Save_logs"]["inputs"]
    uri = ex.render(save["uri"], {"parameters": {"blobEndpoint": "https://a.blob.core.windows.net/", "logsContainer": "logs"},
                                  "items": {"Clean_up_each_group": "scorer-20260102030405-0123abcd"},
                                  "workflow": {"run": {"name": "08585"}}})
    assert uri == "https://a.blob.core.windows.net/logs/runs/08585/scorer-20260102030405-0123abcd.log"
    assert save["headers"]["x-ms-blob-type"] == "BlockBlob"
    assert save["authentication"]["audience"] == "https://storage.azure.com/"


def test_every_http_action_authenticates_with_the_logic_apps_identity(definition):
    for name, action in actions_by_name(definition).items():
        if action["type"] == "Http":
            auth = action["inputs"]["authentication"]
            assert auth["type"] == "ManagedServiceIdentity" and auth["identity"] == "@parameters('logicAppIdentityId')", name


def _failed(definition: dict, state: dict) -> bool:
    """The workflow's own Failed_groups where-clause, evaluated for one polled state."""
    where = ex.parse(actions_by_name(definition)["Failed_groups"]["inputs"]["where"][1:])
    return ex.evaluate(where, {"item": state})


def _job_succeeded(definition: dict, job_states: list[dict], parallel: int = 1) -> bool:
    """The workflow's own success condition (If_every_job_succeeded) for given final polls."""
    failed = [s for s in job_states if _failed(definition, s)]
    conditions = actions_by_name(definition)["If_every_job_succeeded"]["expression"]["and"]
    ctx = {"variables": {"jobStates": job_states}, "parameters": {"parallelJobs": parallel},
           "outputs": {"Failed_groups": {"body": failed}}}
    return all(ex.render(a, ctx) == ex.render(b, ctx) for a, b in (c["equals"] for c in conditions))


@pytest.mark.parametrize("states, parallel, ok", [
    ([{"state": "Succeeded", "exitCode": 0}], 1, True),
    ([{"state": "Failed", "exitCode": 3}], 1, False),        # some inputs quarantined
    ([{"state": "Succeeded", "exitCode": 2}], 1, False),     # a non-zero exit reported with Succeeded
    ([{"state": "Running", "exitCode": None}], 1, False),    # jobTimeout reached
    ([], 1, False),                                          # the group could not be created
    ([{"state": "Succeeded", "exitCode": 0}], 2, False),     # one of two groups missing
    ([{"state": "Succeeded", "exitCode": 0}] * 2, 2, True),
])
def test_run_succeeds_only_when_every_group_succeeded_with_exit_code_zero(definition, states, parallel, ok):
    assert _job_succeeded(definition, states, parallel) is ok


def test_failed_job_terminates_the_run_as_failed_after_cleanup_and_the_lock_release(definition):
    acts = actions_by_name(definition)
    branch = acts["If_a_job_failed"]
    (terminate,) = branch["actions"].values()
    assert terminate["type"] == "Terminate" and terminate["inputs"]["runStatus"] == "Failed"
    assert "Release_the_job_lock" in branch["runAfter"]
    assert "If_every_job_succeeded" in acts["Release_the_job_lock"]["runAfter"]  # after the success marker


@pytest.mark.parametrize("states, parallel", [
    ([{"state": "Succeeded", "exitCode": 0}], 1), ([{"state": "Failed", "exitCode": 3}], 1), ([], 1),
    ([{"state": "Succeeded", "exitCode": 0}], 2), ([{"state": "Succeeded", "exitCode": 0}] * 2, 2)])
def test_a_run_either_records_success_or_terminates_failed_never_both(definition, states, parallel):
    failed = [s for s in states if _failed(definition, s)]
    ctx = {"variables": {"jobStates": states}, "parameters": {"parallelJobs": parallel},
           "outputs": {"Failed_groups": {"body": failed}}}
    terminates = any(ex.render(c["not"]["equals"][0], ctx) != ex.render(c["not"]["equals"][1], ctx)
                     for c in actions_by_name(definition)["If_a_job_failed"]["expression"]["or"])
    assert terminates is not _job_succeeded(definition, states, parallel)


def test_failed_groups_filter_counts_any_non_zero_exit_or_unfinished_group(definition):
    assert _failed(definition, {"state": "Succeeded", "exitCode": 0}) is False
    assert _failed(definition, {"state": "Succeeded", "exitCode": 4}) is True
    assert _failed(definition, {"state": "Failed", "exitCode": 1}) is True
    assert _failed(definition, {"state": "Pending", "exitCode": None}) is True


def test_parallel_jobs_creates_that_many_groups_one_at_a_time(definition):
    loop = actions_by_name(definition)["Create_container_groups"]
    assert loop["foreach"] == "@range(0, parameters('parallelJobs'))"
    assert ex.render(loop["foreach"], {"parameters": {"parallelJobs": 3}}) == [0, 1, 2]
    # Sequential because each iteration appends to a shared array variable.
    assert loop["runtimeConfiguration"]["concurrency"]["repetitions"] == 1


def test_event_runs_skip_only_when_a_later_job_already_succeeded(definition):
    acts = actions_by_name(definition)
    where = ex.parse(acts["Events_after_last_success"]["inputs"]["where"][1:])

    def newer(event_time, last_success_body):
        return ex.evaluate(where, {"item": {"eventTime": event_time},
                                   "outputs": {"Read_last_success": {"body": last_success_body}}})
    assert newer("2026-01-02T03:00:00Z", {"startedAt": "2026-01-02T04:00:00Z"}) is False
    assert newer("2026-01-02T05:00:00Z", {"startedAt": "2026-01-02T04:00:00Z"}) is True
    assert newer("2026-01-02T05:00:00Z", None) is True  # no marker yet (404): always run
    gate = acts["If_an_event_grid_notification"]["expression"]["and"][0]["equals"]
    assert gate == ["@triggerOutputs()?['headers']?['aeg-event-type']", "Notification"]
    assert acts["If_started_by_events"]["runAfter"] == {"Start_the_clock": ["Succeeded"]}  # checked holding the lock


def test_the_request_trigger_never_queues_and_every_job_holds_the_lock(definition):
    """Event Grid wants its handshake and each delivery answered within 30 s: the Request
    trigger has no concurrency limit, so no call waits behind a running job; the job lock
    (a blob lease, renewed at every poll) keeps one job at a time instead."""
    assert "runtimeConfiguration" not in definition["triggers"][wf.BLOB_TRIGGER]
    acts = actions_by_name(definition)
    assert acts["Create_container_groups"]["runAfter"] == {"If_started_by_events": ["Succeeded", "Failed"]}
    assert acts["Acquire_the_job_lock"]["inputs"]["headers"]["x-ms-lease-duration"] == "60"
    assert acts["Renew_the_job_lock"]["inputs"]["headers"]["x-ms-lease-action"] == "renew"
    assert set(acts["Release_the_job_lock"]["runAfter"]["If_every_job_succeeded"]) == {
        "Succeeded", "Failed", "Skipped", "TimedOut"}


def test_every_description_is_within_the_definition_limit(definition):
    """Microsoft's Logic Apps limits: a description is at most 256 characters. Before the
    fix two action descriptions had 288 and 277."""
    long = {n: len(a["description"]) for n, a in actions_by_name(definition).items()
            if len(a.get("description", "")) > 256}
    long |= {n: len(t["description"]) for n, t in definition["triggers"].items() if len(t.get("description", "")) > 256}
    assert not long


def test_the_shipped_workflow_does_not_depend_on_a_scopes_status_after_a_handled_failure():
    # Microsoft's articles disagree on it (docs/twin.md, "the twin decides"): wherever a
    # failure is handled inside a scope (by anything but a Terminate, which ends the run), the
    # scope's successors run after Succeeded and Failed alike
    definition = wf.load()["definition"]
    scopes = {"if", "scope", "foreach", "until"}
    for name, action, siblings, _ in wc.iter_actions(definition["actions"]):
        if wc.kind(action) not in scopes:
            continue
        inside = [a for _, a, _, _ in wc.iter_actions({name: action})][1:]
        handled = any(wc.kind(a) != "terminate" and any("Failed" in s for s in (a.get("runAfter") or {}).values())
                      for a in inside)
        successors = [n for n, a in siblings.items() if name in (a.get("runAfter") or {})]
        for n in successors if handled else []:
            assert {"Succeeded", "Failed"} <= set(siblings[n]["runAfter"][name]), (name, n)
