"""logicapp/workflow.json: load it and prepare it for deployment.

The workflow file is the one source of the job's schedule, limits, container size and
environment: ``definition.parameters.<name>.defaultValue``. The local runner reads the same
defaults. Two kinds of value cannot be workflow expressions and are therefore copied into
the definition at deploy time (``DEPLOY_TIME_FIELDS``): the Recurrence trigger's schedule
(the workflow-definition schema types it as literals) and the Until loop's timeout. In the
repository those literals equal the parameter defaults; a test keeps them equal.

Errors: WorkflowSettingsError (a ValueError) when a value given for a parameter is unusable.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from scorer.azure import workflow_check
from scorer.azure.expressions import iso_duration_seconds

WORKFLOW_PATH = Path(__file__).resolve().parents[2] / "logicapp" / "workflow.json"

SCHEDULE_TRIGGER = "Scheduled_run"
BLOB_TRIGGER = "When_an_input_blob_is_created"
POLL_LOOP = "Wait_for_jobs"

# (path inside the definition, parameter whose value it takes)
DEPLOY_TIME_FIELDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("triggers", SCHEDULE_TRIGGER, "recurrence", "frequency"), "scheduleFrequency"),
    (("triggers", SCHEDULE_TRIGGER, "recurrence", "interval"), "scheduleInterval"),
    (("triggers", SCHEDULE_TRIGGER, "recurrence", "schedule", "hours"), "scheduleHours"),
    (("triggers", SCHEDULE_TRIGGER, "recurrence", "schedule", "minutes"), "scheduleMinutes"),
    (("actions", POLL_LOOP, "limit", "timeout"), "jobTimeout"),
)

# Parameters the ARM template computes from the resources it creates; a user cannot set them.
ARM_FILLED = ("subscriptionId", "resourceGroup", "location", "resourceManagerUrl", "jobIdentityId",
              "logicAppIdentityId", "registryServer", "blobEndpoint", "image")

_FREQUENCIES = ("Second", "Minute", "Hour", "Day", "Week", "Month")


class WorkflowSettingsError(ValueError):
    """A value given for a workflow parameter cannot work; the message names the parameter."""


def load(path: Path = WORKFLOW_PATH) -> dict:
    """The workflow file as a dict ({"definition": ...}). Raises OSError, json.JSONDecodeError."""
    return json.loads(Path(path).read_text())


def defaults(definition: dict) -> dict[str, Any]:
    """Each workflow parameter's defaultValue, by name."""
    return {k: v.get("defaultValue") for k, v in definition["parameters"].items()}


def _get(doc: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _set(doc: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def _check(values: dict[str, Any]) -> None:
    freq = values["scheduleFrequency"]
    if freq not in _FREQUENCIES:
        raise WorkflowSettingsError(f"scheduleFrequency={freq!r} must be one of {', '.join(_FREQUENCIES)}.")
    if not isinstance(values["scheduleInterval"], int) or values["scheduleInterval"] < 1:
        raise WorkflowSettingsError("scheduleInterval must be a whole number of at least 1.")
    for name, top in (("scheduleHours", 23), ("scheduleMinutes", 59)):
        v = values[name]
        if not isinstance(v, list) or not v or not all(isinstance(x, int) and 0 <= x <= top for x in v):
            raise WorkflowSettingsError(f"{name}={v!r} must be a non-empty list of whole numbers 0-{top}.")
    try:
        iso_duration_seconds(values["jobTimeout"])
    except ValueError:
        raise WorkflowSettingsError(f"jobTimeout={values['jobTimeout']!r} must be an ISO 8601 duration such as "
                                    "PT1H.") from None
    poll = values["pollSeconds"]
    if not isinstance(poll, int) or isinstance(poll, bool) or not 1 <= poll <= 45:
        raise WorkflowSettingsError(f"pollSeconds={poll!r} must be a whole number from 1 to 45: the job lock's "
                                    "60-second lease is renewed at every poll.")
    if not isinstance(values["parallelJobs"], int) or not 1 <= values["parallelJobs"] <= 50:
        raise WorkflowSettingsError("parallelJobs must be a whole number from 1 to 50.")
    if not 0 < float(values["cpuCores"]) <= 4:
        raise WorkflowSettingsError("cpuCores must be above 0 and at most 4 (ACI's Linux limit per group).")
    if not 0 < float(values["memoryInGB"]) <= 16:
        raise WorkflowSettingsError("memoryInGB must be above 0 and at most 16 (ACI's Linux limit per group).")


def settings(definition: dict, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The workflow's parameter values: defaults, then ``overrides`` (None values ignored).

    Raises WorkflowSettingsError for an unknown or ARM-filled name, or an unusable value.
    """
    values = defaults(definition)
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in values or name in ARM_FILLED:
            raise WorkflowSettingsError(f"{name} is not a workflow setting that can be overridden.")
        values[name] = value
    _check(values)
    return values


def prepare_definition(definition: dict, values: dict[str, Any]) -> dict:
    """A copy of ``definition`` with the deploy-time fields and defaults set from ``values``.

    The returned definition is what the Logic App receives; its defaults equal the values
    deployed, so the portal shows what runs. Raises KeyError if a deploy-time field moved, and
    WorkflowSettingsError listing every problem Logic Apps would refuse it for at save (the
    values make the schedule and limits; scorer.azure.workflow_check), before Azure is called.
    """
    out = copy.deepcopy(definition)
    for path, name in DEPLOY_TIME_FIELDS:
        _get(out, path)  # fails loudly if the workflow's shape changed
        _set(out, path, copy.deepcopy(values[name]))
    for name, value in values.items():
        if name not in ARM_FILLED:
            out["parameters"][name]["defaultValue"] = copy.deepcopy(value)
    _schedule_fits_frequency(out["triggers"][SCHEDULE_TRIGGER]["recurrence"])
    found = workflow_check.problems(out)
    if found:
        raise WorkflowSettingsError("Logic Apps would refuse the workflow with these settings: " + "; ".join(found))
    return out


def _schedule_fits_frequency(recurrence: dict) -> None:
    """Keep only the schedule fields the frequency uses: hours for Day and Week, minutes
    for Hour, Day and Week (Microsoft's Recurrence reference). Logic Apps refuses or
    misreads the others (Azure/logicapps#73: minutes on a Minute recurrence)."""
    schedule = recurrence.get("schedule") or {}
    if recurrence["frequency"] not in ("Day", "Week"):
        schedule.pop("hours", None)
    if recurrence["frequency"] not in ("Hour", "Day", "Week"):
        schedule.pop("minutes", None)
    if not schedule:
        recurrence.pop("schedule", None)


def environment(values: dict[str, Any]) -> dict[str, str]:
    """The scorer environment the workflow gives the container, as a dict."""
    return {e["name"]: e["value"] for e in values["scorerEnvironment"]}


def blob_containers(values: dict[str, Any]) -> list[str]:
    """Every blob container scorer uses: its SCORER_*_CONTAINER values, then the logs container."""
    env = environment(values)
    names = [v for k, v in env.items() if k.startswith("SCORER_") and k.endswith("_CONTAINER")]
    return names + [values["logsContainer"]]


def input_container(values: dict[str, Any]) -> str:
    """The container whose new blobs start a run. Raises WorkflowSettingsError if unset."""
    return _container(values, "SCORER_INPUT_CONTAINER")


def models_container(values: dict[str, Any]) -> str:
    """The container of the published models. Raises WorkflowSettingsError if unset."""
    return _container(values, "SCORER_MODELS_CONTAINER")


def _container(values: dict[str, Any], name: str) -> str:
    try:
        return environment(values)[name]
    except KeyError:
        raise WorkflowSettingsError(f"scorerEnvironment has no {name} entry.") from None


def arm_parameter_values(values: dict[str, Any]) -> dict[str, dict]:
    """The user-settable workflow values as ARM workflow parameters ({"name": {"value": v}})."""
    return {k: {"value": v} for k, v in values.items() if k not in ARM_FILLED}
