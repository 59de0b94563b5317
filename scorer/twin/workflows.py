"""Microsoft.Logic/workflows in the local Azure: each deployed workflow is run by the
workflow engine with the parameters its deployment gave it, and its container groups by
the Container Instances stand-in.

- PUT: the definition is loaded by the engine (a definition it refuses fails the
  deployment with InvalidWorkflowDefinition, naming what); ``state`` is kept.
- listCallbackUrl on a Request trigger: ``{local Azure}/local/workflows/{name}/triggers/
  {trigger}/paths/invoke?api-version=2016-10-01&sp=...&sv=1.0&sig=...``. A call there
  starts a run as Logic Apps does: at most the trigger's ``concurrency.runs`` at a time,
  the others waiting (at most 10 + runs, then 429); the caller waits for the run's
  Response, at most 120 s (then 504). A Disabled workflow answers 400
  WorkflowTriggerIsNotEnabled and starts nothing.
- POST triggers/{t}/run fires a trigger now (`deploy.py trigger`); GET runs lists runs
  (`deploy.py runs`), newest first, with WorkflowRuns_List's shape.
- Recurrence triggers fire on their schedule while the workflow is Enabled.

Container groups the runs create (Microsoft.ContainerInstance) are the twin's stand-in
(scorer.twin.standin) on this same server; a group whose identity is a user-assigned
identity gets the Azurite connection string in its environment, as a managed identity
would give it access to the account.
"""

from __future__ import annotations

import json
import re
import secrets
import ssl
import threading
import time
from datetime import datetime, timezone
from typing import Any

from scorer.twin.arm_common import ArmError
from scorer.twin.azurite import connection_parts
from scorer.twin.engine import DefinitionRefused, Engine, Run, refusal
from scorer.azure.recurrence import first_fire, next_fire
from scorer.twin.runtime import CALLER_WAIT_S, Call, TriggerQueue, TwinTransport


class Hosted:
    """One deployed workflow: its engine, trigger queues and runs."""

    def __init__(self, owner: "Workflows", view: dict):
        self.owner = owner
        self.name = view["name"]
        azure = owner.azure
        parts = connection_parts(azure.azurite)
        self.transport = TwinTransport(azure.identity, azure.url, parts["BlobEndpoint"].rstrip("/") + "/",
                                       parts["AccountName"], parts["AccountKey"],
                                       tls=ssl.create_default_context(cafile=str(azure.cert)))
        self.stopping = threading.Event()
        self.observer = None   # called with (run, seconds, label) as each run ends
        self.active = 0        # runs under way
        self._active_lock = threading.Lock()
        self.update(view)
        self.sig = secrets.token_urlsafe(16)
        self.runs: list[Run] = []
        self.queues: dict[str, TriggerQueue] = {}
        for trigger, spec in (self.definition.get("triggers") or {}).items():
            limit = ((spec.get("runtimeConfiguration") or {}).get("concurrency") or {}).get("runs")
            self.queues[trigger] = TriggerQueue(self, trigger, int(limit) if limit else None)
        self._schedules = [threading.Thread(target=self._recur, args=(t,), daemon=True, name=f"recurrence:{t}")
                           for t, spec in (self.definition.get("triggers") or {}).items()
                           if str(spec.get("type", "")).lower() == "recurrence" and owner.types.options.recurrences]
        for t in self._schedules:
            t.start()

    def update(self, view: dict) -> None:
        """The definition and parameters new runs start with (runs under way keep theirs)."""
        props = view["properties"]
        self.view, self.definition = view, props.get("definition") or {}
        params = {k: (v.get("value") if isinstance(v, dict) else v) for k, v in (props.get("parameters") or {}).items()}
        self.engine = Engine(self.definition, params, transport=self.transport, name=self.name,
                             sleep=self.stopping.wait)

    @property
    def enabled(self) -> bool:
        return self.view["properties"].get("state", "Enabled") == "Enabled"

    def execute(self, trigger: str, outputs: dict, respond=None, label: str = "") -> Run:
        started = time.monotonic()
        with self._active_lock:
            self.active += 1
        try:
            run = self.engine.run(trigger, outputs, respond)
        except Exception as exc:  # a defect in one run must not end the trigger's worker
            if respond is not None:
                respond({"statusCode": 500, "body": {"error": {"code": "InternalError", "message": str(exc)}}})
            raise
        finally:
            with self._active_lock:
                self.active -= 1
        if run.status == "Skipped":  # the trigger's conditions did not hold: no run is recorded
            return run
        self.runs.append(run)
        if self.observer is not None:
            self.observer(run, time.monotonic() - started, label)
        return run

    def hurry(self) -> None:
        """Runs under way hurry to their end (waits return at once); new ones still start."""
        self.engine.stop()

    def _recur(self, trigger: str) -> None:
        recurrence = self.definition["triggers"][trigger].get("recurrence") or {}
        saved = datetime.now(timezone.utc)
        due = first_fire(recurrence, saved)  # without a startTime, at once: "when you save or deploy"
        while not self.stopping.wait(min(1.0, max(0.0, (due - datetime.now(timezone.utc)).total_seconds()))):
            if datetime.now(timezone.utc) >= due:
                if self.enabled:
                    done = self.queues[trigger].fire({"headers": {}, "body": None})
                    if done is not None:
                        done.wait()
                due = next_fire(recurrence, max(due, datetime.now(timezone.utc)), saved)

    def close(self) -> None:
        self.stopping.set()
        self.engine.stop()


class Workflows:
    """Every deployed workflow of the local Azure, and the container groups their runs create."""

    def __init__(self, types: Any):
        self.types = types
        self.azure = types.azure
        self.hosted: dict[str, Hosted] = {}
        self.standins: dict[str, Any] = {}

    # -- the resource ---------------------------------------------------------------------

    def workflow(self, view: dict, existing: dict | None) -> None:
        props = view["properties"]
        state = props.get("state", "Enabled")
        if state not in ("Enabled", "Disabled"):
            raise ArmError(400, "InvalidWorkflowState", f"The workflow state '{state}' is not Enabled or Disabled.")
        found = refusal(props.get("definition") or {}, {k: (v.get("value") if isinstance(v, dict) else v)
                                                        for k, v in (props.get("parameters") or {}).items()})
        if found:  # checked before anything is created; the engine itself is made once, by Hosted
            raise ArmError(400, "InvalidWorkflowDefinition",
                           f"The workflow definition is not valid: {DefinitionRefused(found)}.")
        props.update({"createdTime": props.get("createdTime") or _now(), "changedTime": _now(), "version": _now(),
                      "accessEndpoint": f"{self.azure.url}local/workflows/{view['name']}"})

    def deployed(self, view: dict, existing: dict | None) -> None:
        """A workflow created or updated. An update changes what new runs do; runs under way
        go on with the definition they started with, and the trigger's queue (its waiting
        runs and concurrency) is the same, as in Logic Apps."""
        hosted = self.hosted.get(view["id"].lower())
        if hosted is None:
            self.hosted[view["id"].lower()] = Hosted(self, view)
        else:
            hosted.update(view)

    def removed(self, view: dict) -> None:
        old = self.hosted.pop(view["id"].lower(), None)
        if old is not None:
            old.close()

    def _hosted(self, workflow_id: str) -> Hosted:
        found = self.hosted.get(workflow_id.lower())
        if found is None:
            raise ArmError(404, "ResourceNotFound", f"The Resource 'Microsoft.Logic/workflows/"
                           f"{workflow_id.rpartition('/')[2]}' was not found.")
        return found

    def callback(self, trigger_id: str) -> dict:
        """listCallbackUrl on ``.../workflows/{w}/triggers/{t}``."""
        workflow_id, _, trigger = trigger_id.rpartition("/triggers/")
        hosted = self._hosted(workflow_id)
        spec = (hosted.definition.get("triggers") or {}).get(trigger)
        if spec is None or str(spec.get("type", "")).lower() != "request":
            raise ArmError(400, "WorkflowTriggerNotFound", f"The workflow has no Request trigger '{trigger}'.")
        base = f"{self.azure.url}local/workflows/{hosted.name}/triggers/{trigger}/paths/invoke"
        query = f"api-version=2016-10-01&sp=%2Ftriggers%2F{trigger}%2Frun&sv=1.0&sig={hosted.sig}"
        return {"value": f"{base}?{query}", "method": "POST", "basePath": base,
                "queries": {"api-version": "2016-10-01", "sp": f"/triggers/{trigger}/run", "sv": "1.0",
                            "sig": hosted.sig}}

    # -- requests -------------------------------------------------------------------------

    def request(self, method: str, path: str, query: dict, headers: dict, body: Any):
        m = re.fullmatch(r"(.*/providers/Microsoft\.Logic/workflows/[^/]+)/(triggers/([^/]+)/(run|listCallbackUrl)"
                         r"|runs)", path, re.I)
        if not m:
            return None
        hosted = self._hosted(m[1])
        if m[2].lower() == "runs" and method == "GET":
            return 200, {}, {"value": [self._run_view(hosted, r) for r in reversed(hosted.runs)]}
        if m[4] and m[4].lower() == "listcallbackurl" and method == "POST":
            return 200, {}, self.callback(f"{m[1]}/triggers/{m[3]}")
        if m[4] and m[4].lower() == "run" and method == "POST":
            if not hosted.enabled:
                raise ArmError(409, "WorkflowNotEnabled", f"The workflow '{hosted.name}' is disabled.")
            if m[3] not in hosted.queues:
                raise ArmError(404, "WorkflowTriggerNotFound", f"The workflow has no trigger '{m[3]}'.")
            hosted.queues[m[3]].fire({"headers": {}, "body": None})
            return 202, {}, None
        raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on {path}.")

    def _run_view(self, hosted: Hosted, run: Run) -> dict:
        return {"id": f"{hosted.view['id']}/runs/{run.name}", "name": run.name,
                "type": "Microsoft.Logic/workflows/runs",
                "properties": {"startTime": run.started, "endTime": run.ended or None, "status": run.status,
                               "error": run.error, "trigger": {"name": run.trigger}}}

    def invoke(self, method: str, path: str, query: dict, headers: dict, body: Any, raw: bytes):
        """A call to a Request trigger's callback URL."""
        m = re.fullmatch(r"/local/workflows/([^/]+)/triggers/([^/]+)/paths/invoke", path)
        if not m:
            return None
        hosted = next((h for h in self.hosted.values() if h.name == m[1]), None)
        if hosted is None or query.get("sig") != hosted.sig:
            raise ArmError(401, "DirectApiAuthorizationRequired", "The request must be authenticated only by "
                           "Shared Access scheme.")
        if not hosted.enabled:
            raise ArmError(400, "WorkflowTriggerIsNotEnabled", f"Could not trigger workflow '{hosted.name}': its "
                           "state is Disabled, so its triggers are not enabled.")
        call = Call()
        outputs = {"headers": dict(headers), "body": body, "queries": dict(query)}
        kind = next((v for k, v in headers.items() if k.lower() == "aeg-event-type"), "")
        label = {"Notification": "blob created", "SubscriptionValidation": "validation"}.get(kind, "request")
        if hosted.queues[m[2]].fire(outputs, call.respond, label) is None:
            return 429, {"Retry-After": "10"}, {"error": {"code": "WorkflowRunsWaitingLimitExceeded",
                                                          "message": "too many waiting runs"}}
        answer = call.wait(CALLER_WAIT_S)
        if answer is None:
            return 504, {}, {"error": {"code": "GatewayTimeout", "message": "no response in 120 s"}}
        return answer.get("statusCode", 202), answer.get("headers") or {}, answer.get("body")

    def container_groups(self, method: str, path: str, query: dict, headers: dict, body: Any):
        """Microsoft.ContainerInstance requests, answered by one stand-in per resource group."""
        m = re.match(r"/subscriptions/[^/]+/resourcegroups/([^/]+)/providers/microsoft\.containerinstance/", path, re.I)
        if not m:
            return None
        standin = self.standin(m[1])
        target = path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")
        status, out_headers, payload = standin.handle(method, target, headers,
                                                      json.dumps(body).encode() if body is not None else b"")
        return status, out_headers, payload

    def standin(self, group: str) -> Any:
        from scorer.twin.backends import ProcessBackend
        from scorer.twin.standin import ArmStandIn

        key = group.lower()
        if key not in self.standins:
            backend = self.types.options.backend or ProcessBackend()
            options = self.types.options
            standin = ArmStandIn(backend, self.azure.identity, self.azure.subscription, group, options.faults,
                                 on_event=options.on_job_event, audience=self.azure.url,
                                 identity_environment={"AZURE_STORAGE_CONNECTION_STRING": self.azure.azurite})
            self.standins[key] = standin
        return self.standins[key]

    def close(self) -> None:
        for hosted in self.hosted.values():
            hosted.close()
        for standin in self.standins.values():
            standin.close()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
