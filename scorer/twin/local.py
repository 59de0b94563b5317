"""The local twin: ``scorer local`` runs logicapp/workflow.json itself, on this machine.

    Azure                                       the twin
    deploy.py up deploys arm_templates/main.json the same template, deployed into a local Azure
                                                of this process (scorer.twin.arm), with this
                                                machine's container names and the image pushed
    the Logic App runs the definition           the local Azure's Logic App: the workflow engine
                                                with the parameters the deployment gave it
    Recurrence trigger                          fired by the twin, on the definition's schedule
                                                (UTC) or every --interval N s, on the console
    Event Grid -> Request trigger               a watcher of the input container posts Event
                                                Grid's BlobCreated events (and, first, the
                                                subscription-validation event) to the callback URL
    Container Instances                         scorer.twin.standin; each group's container runs
                                                as a podman/docker container of the image, or a process
    Blob Storage (managed identity)             Azurite (signed with the account's key for it)

Every decision about a run (poll, keep the logs, delete the group, fail the run) is the
workflow's own; the twin only delivers triggers. So a change to the workflow is tried here
by running it: ``--workflow FILE`` deploys and runs another definition.

What the twin cannot reproduce: Azure's time scales (image pull, ACI start-up, the
Logic App's own latency), RBAC on the data plane, and Azure's regional quotas and capacity
(inject them with ``--fault``). It polls every second unless told otherwise
(``--set pollSeconds=15`` is Azure's default).
"""
from __future__ import annotations

import http.client
import http.server
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scorer.azure import workflow as wf
from scorer.azure.expressions import iso_duration_seconds
from scorer.azure.recurrence import first_fire, next_fire
from scorer.errors import EXIT_INTERRUPTED, EXIT_OK, ConfigError
from scorer.settings import SETTINGS, Settings
from scorer.twin.arm_common import now_iso
from scorer.twin.azurite import azurite_connection_string, ensure_azurite
from scorer.twin.backends import Backend, choose
from scorer.twin.engine import Run
from scorer.twin.events import blob_created, deliver
from scorer.twin.standin import Faults

ROOT = Path(__file__).resolve().parents[2]
RESOURCE_GROUP = "rg-scorer-local"
#: where the twin copies each run's report page, to open in a browser
PAGES_DIR = ROOT / ".scorer-local" / "reports"
#: parameter values the twin deploys with unless --set says otherwise (Azure's: PT15S polls)
TWIN_DEFAULTS = {"pollSeconds": 1}


def _say(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


# -- what the workflow's HTTP actions reach -------------------------------------------------

# -- triggers ------------------------------------------------------------------------------

class EventGridWatcher:
    """Event Grid for the input container: validates the subscription first (the
    SubscriptionValidationEvent, expecting {"validationResponse": code}), then lists
    the container every ``poll`` seconds and delivers each new blob as a
    Microsoft.Storage.BlobCreated event, retrying a failed delivery with back-off as
    Event Grid does."""

    def __init__(self, twin: "Twin", url: str, poll: float):
        self.twin = twin
        self.url = url
        self.poll = poll
        self.seen: set[tuple[str, str]] = set()
        self.validated = False

    def _post(self, events: list[dict], kind: str, timeout: float = 30.0) -> tuple[int, Any]:
        parts = urlsplit(self.url)
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                           context=ssl.create_default_context(cafile=str(self.twin.azure.cert)))
        try:
            conn.request("POST", parts.path + "?" + parts.query, body=json.dumps(events).encode(),
                         headers={"Content-Type": "application/json", "aeg-event-type": kind})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, json.loads(data) if data else None
        finally:
            conn.close()

    def validate(self) -> bool:
        code = secrets.token_hex(8)
        event = {"id": str(uuid.uuid4()), "topic": self.twin.topic, "subject": "",
                 "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                 "eventTime": now_iso(), "metadataVersion": "1", "dataVersion": "1",
                 "data": {"validationCode": code, "validationUrl": self.url + "&validate=1"}}
        try:
            status, body = self._post([event], "SubscriptionValidation")
        except OSError as exc:
            _say(f"event subscription validation failed: {exc}")
            return False
        self.validated = status == 200 and isinstance(body, dict) and body.get("validationResponse") == code
        _say("event subscription validated: the workflow answered the handshake" if self.validated else
             f"event subscription NOT validated: the workflow answered {status} {body}")
        return self.validated

    def snapshot(self) -> set[tuple[str, str]]:
        return {(b.name, (b.etag or "").strip('"')) for b in self.twin.store.list_names(self.twin.settings.input_container)}

    def deliver_new(self) -> int:
        """Deliver a BlobCreated event per blob not seen before; the number delivered."""
        current = self.snapshot()
        new = sorted(current - self.seen)
        for name, etag in new:
            container = self.twin.settings.input_container
            _say(f"trigger: blob created: {container}/{name}")
            event = blob_created(self.twin.topic, self.twin.blob_endpoint, container, name, etag)
            threading.Thread(target=self._deliver, args=(event,), daemon=True, name="eventgrid").start()
        self.seen = current
        return len(new)

    def _deliver(self, event: dict) -> None:
        deliver(self.url, [event], str(self.twin.azure.cert), self.twin.stopping)


# -- the twin -----------------------------------------------------------------------------

@dataclass
class Outcome:
    run: Run
    seconds: float

    @property
    def exit_code(self) -> int:
        """0 for a Succeeded run, else the first failed job's exit code (1 when none ran)."""
        if self.run.status == "Succeeded":
            return EXIT_OK
        states = self.run.variables.get("jobStates") or []
        codes = [s.get("exitCode") for s in states if isinstance(s, dict)]
        return next((c for c in codes if isinstance(c, int) and c != 0), 1)


class Twin:
    """The workflow of a deployment of arm_templates/main.json into an in-process local Azure
    (scorer.twin.arm), with the definition ``definition_file`` and this machine's container
    names: everything the workflow runs with comes from that deployment, as on Azure. The twin
    adds what makes it a tool: the schedule fired on a console, a watcher of the input
    container standing for Event Grid, each run's outcome and report page."""

    def __init__(self, settings: Settings, definition_file: Path, backend: Backend, image: str,
                 overrides: dict[str, Any] | None = None, interval: float | None = None,
                 faults: Faults | None = None, watch_poll: float = 2.0):
        from scorer.storage import Store, connect

        self.settings = settings
        self.stopping = threading.Event()
        self.store = Store(connect(settings), settings)
        self.pages_dir = PAGES_DIR
        self._pages_seen = self._pages()
        self._pages_lock = threading.Lock()
        self.watch_poll = watch_poll
        self.interval = interval
        self.backend = backend
        definition, values = self._workflow(definition_file, overrides, interval)
        self.values = values
        self.runs: list[Outcome] = []
        self.azure, outputs = self._deploy(definition, values, image, faults, definition_file)
        self.saved = datetime.now(timezone.utc)  # when the Recurrence trigger was deployed
        self.blob_endpoint = outputs["blobEndpoint"]
        self.topic = outputs["storageId"]
        self.hosted = next(iter(self.azure.types.workflows.hosted.values()))
        self.hosted.observer = self._finished
        self.engine, self.definition = self.hosted.engine, self.hosted.definition
        self.queues = self.hosted.queues
        self.transport = self.hosted.transport
        self.identity = self.azure.identity
        self.standin = self.azure.types.workflows.standin(RESOURCE_GROUP)
        callback = self.azure.types.workflows.callback(f"{outputs['logicAppId']}/triggers/{wf.BLOB_TRIGGER}")
        self.watcher = EventGridWatcher(self, callback["value"], watch_poll)

    def _workflow(self, definition_file: Path, overrides: dict[str, Any] | None,
                  interval: float | None) -> tuple[dict, dict]:
        """The definition and its parameter values: the workflow's, ``overrides``, the schedule
        every ``interval`` seconds, and this machine's container names in scorerEnvironment."""
        try:
            doc = wf.load(definition_file)
            definition = doc.get("definition", doc)
            wanted = {**TWIN_DEFAULTS, **(overrides or {})}
            if interval:
                wanted.update(scheduleFrequency="Second", scheduleInterval=max(1, int(interval)))
            env = self._job_environment(wf.settings(definition, wanted))
            return definition, wf.settings(definition, {**wanted, "scorerEnvironment": env})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{definition_file}: cannot use the workflow ({exc}).",
                              hint="Pass --workflow with the path of a workflow definition like "
                              "logicapp/workflow.json, and --set only its parameters.") from None

    def _deploy(self, definition: dict, values: dict, image: str, faults: Faults | None,
                definition_file: Path) -> tuple[Any, dict]:
        """Deploy the template, as `deploy.py up --skip-build --image-pushed` would, into a
        local Azure of this process; the image is pushed to its registry first."""
        import tempfile

        from scorer.azure import deploy
        from scorer.twin.arm import LocalAzure
        from scorer.twin.arm_common import ArmError
        from scorer.twin.resources import Options

        options = Options(backend=self.backend, faults=faults, on_job_event=self._job_event, recurrences=False)
        azure = LocalAzure(Path(tempfile.mkdtemp(prefix="scorer-twin-")), self.settings.connection_string or "",
                           options)
        clients = deploy.local_clients(azure.directory, poll_seconds=0.05)
        try:
            deploy.ensure_resource_group(clients, RESOURCE_GROUP, "local")
            repository = image.rpartition("/")[2]
            params = deploy.template_parameters(values, definition, prefix="scorer", image_name=repository,
                                                location="local")
            params.update({"enableBlobTrigger": {"value": False}, "imageReady": {"value": True}})
            outputs = deploy.deploy_template(clients, RESOURCE_GROUP, "scorer", deploy.load_template(), params)
            azure.types.registries.push(outputs["registryLoginServer"], image, repository)
        except (deploy.DeployError, ArmError) as exc:
            azure.close()
            raise ConfigError(f"{definition_file}: the local twin cannot run this workflow: {exc}",
                              hint="Use only the action types, triggers and functions the engine implements "
                              "(scorer/twin/engine.py lists them).") from None
        group = azure.group_view(RESOURCE_GROUP)["id"]
        outputs["storageId"] = f"{group}/providers/Microsoft.Storage/storageAccounts/{outputs['storageAccountName']}"
        outputs["logicAppId"] = f"{group}/providers/Microsoft.Logic/workflows/{outputs['logicAppName']}"
        return azure, outputs

    def _job_environment(self, values: dict) -> list[dict]:
        """The workflow's scorerEnvironment with this machine's container names (the
        deployment adds the account URL and the job identity; the Container Instances
        stand-in gives a group with an identity the Azurite connection string)."""
        by_name = {s.env: getattr(self.settings, s.field) for s in SETTINGS if s.field.endswith("_container")}
        env = [dict(e, value=str(by_name[e["name"]])) if e["name"] in by_name else dict(e)
               for e in values["scorerEnvironment"]]
        named = {e["name"] for e in env}
        return env + [{"name": k, "value": str(v)} for k, v in by_name.items() if k not in named]

    def _job_event(self, group: str, what: str, detail: dict) -> None:
        if what == "started":
            _say(f"job {group} started ({detail['backend']})")
        elif what == "ended":
            _say(f"job {group} finished: {detail['state']} (exit {detail['exit_code']}) in {detail['seconds']:.1f} s")
        elif what == "failed to start":
            _say(f"job {group} could not start: {detail['reason']}")

    # -- runs ----------------------------------------------------------------------------

    def execute(self, trigger: str, outputs: dict, respond=None, label: str = "") -> Outcome:
        run = self.hosted.execute(trigger, outputs, respond, label)
        return next(o for o in reversed(self.runs) if o.run is run)

    def _finished(self, run: Run, seconds: float, label: str) -> None:
        """Every run of the deployed workflow, whatever fired it: its outcome, on the console."""
        outcome = Outcome(run, seconds)
        self.runs.append(outcome)
        error = f": {run.error.get('code')}: {run.error.get('message', '')[:300]}" if run.error else ""
        logs = f"; logs: {self.values['logsContainer']}/runs/{run.name}/" if run.variables.get("groupNames") else ""
        _say(f"run {run.name} ({label or run.trigger}) finished: {run.status} in {seconds:.1f} s{logs}{error}")
        self._show_pages()

    def _pages(self) -> set[str]:
        return {b.name for b in self.store.list_names(self.settings.reports_container) if b.name.endswith(".html")}

    def _show_pages(self) -> None:
        """Copy the report pages the jobs wrote since last time into .scorer-local/reports/
        and print where they are, to open in a browser."""
        with self._pages_lock:
            try:
                new = sorted(self._pages() - self._pages_seen)
                for name in new:
                    self.pages_dir.mkdir(parents=True, exist_ok=True)
                    local = self.pages_dir / name
                    local.write_bytes(self.store.read_bytes(self.settings.reports_container, name))
                    self._pages_seen.add(name)
                    _say(f"report page: {local} (or `scorer report {name.removesuffix('.html')}`)")
            except Exception as exc:  # the run is done either way; the page is a convenience
                _say(f"could not fetch the report page: {exc}")

    def run_once(self) -> Outcome:
        """Fire the schedule trigger now (as `deploy.py trigger` does) and wait for the run."""
        _say("trigger: run now")
        return self.execute(wf.SCHEDULE_TRIGGER, {"headers": {}, "body": None}, label="run now")

    def next_fire(self, after: datetime) -> datetime:
        return next_fire(self.definition["triggers"][wf.SCHEDULE_TRIGGER]["recurrence"], after, self.saved)

    def serve(self, max_seconds: float | None = None) -> None:
        """Fire on the schedule and on new inputs until stopped."""
        end = time.monotonic() + max_seconds if max_seconds else None
        due = first_fire(self.definition["triggers"][wf.SCHEDULE_TRIGGER]["recurrence"], self.saved)
        self.watcher.validate()
        self.watcher.seen = self.watcher.snapshot()  # before saying "watching": later drops are new blobs
        pending = len(self.watcher.seen)
        _say(f"schedule: next run at {due.isoformat(timespec='seconds')}; watching "
             f"{self.settings.input_container}/ every {self.watch_poll:g} s")
        if pending:
            _say(f"{pending} input(s) already pending: running now")
            self.queues[wf.SCHEDULE_TRIGGER].fire({"headers": {}, "body": None}, label="pending at start")
        while not self.stopping.is_set() and (end is None or time.monotonic() < end):
            if datetime.now(timezone.utc) >= due:
                _say("trigger: schedule")
                done = self.queues[wf.SCHEDULE_TRIGGER].fire({"headers": {}, "body": None}, label="schedule")
                if done is not None:  # Recurrence fires after the previous run of its trigger ended
                    while not done.wait(0.2) and not self.stopping.is_set():
                        self.watcher.deliver_new()
                due = self.next_fire(datetime.now(timezone.utc))
                continue
            self.watcher.deliver_new()
            self.stopping.wait(self.watch_poll)

    def shutdown(self) -> None:
        """Stop cleanly: runs hurry to their clean-up (their waits return at once),
        every job still running gets SIGTERM and leaves its input pending."""
        self.stopping.set()
        self.hosted.hurry()
        for q in self.queues.values():
            q.drop_waiting()

    def drain(self, timeout: float = 120.0) -> None:
        """Wait for the runs under way to reach their end (after ``shutdown`` they hurry)."""
        deadline = time.monotonic() + timeout
        while self.hosted.active and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        import shutil

        self.azure.close()
        shutil.rmtree(self.azure.directory, ignore_errors=True)  # its certificate, key and endpoint.json
        self.store.close()


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``--set NAME=VALUE`` options as workflow parameter overrides (values read as
    JSON when they parse, else as text). Raises ConfigError."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, eq, raw = pair.partition("=")
        if not eq or not name:
            raise ConfigError(f"--set {pair!r} is not NAME=VALUE.", hint="For example --set parallelJobs=3.")
        try:
            out[name] = json.loads(raw)
        except ValueError:
            out[name] = raw
    return out


def main(args: Any) -> int:
    """`scorer local`: with --once, the run's exit status (0, or the first failed
    job's); otherwise 130 after Ctrl-C or SIGTERM."""
    if not os.environ.get("AZURE_STORAGE_CONNECTION_STRING") and not os.environ.get("SCORER_ACCOUNT_URL"):
        port = int(os.environ.get("AZURITE_PORT", "10000"))
        ensure_azurite(port)
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = azurite_connection_string(port)
    settings = Settings.from_env()
    if not settings.connection_string:
        raise ConfigError("scorer local needs Azurite (AZURE_STORAGE_CONNECTION_STRING), not an Azure account.",
                          hint="Unset SCORER_ACCOUNT_URL, or run `eval \"$(scripts/azurite env)\"`.")
    try:
        faults = Faults.parse(args.fault or [])
        backend = choose(args.engine, args.image)
    except ValueError as exc:
        raise ConfigError(f"scorer local: {exc}.", hint="See `scorer local --help`.") from None
    overrides = parse_sets(args.set or [])
    if "jobTimeout" in overrides:
        iso_duration_seconds(overrides["jobTimeout"])
    twin = Twin(settings, args.workflow, backend, args.image, overrides, args.interval, faults, args.poll)
    _say(f"jobs run as {'containers: ' + backend.name + ', image ' + args.image if backend.name != 'process' else 'plain processes (no container engine with the image ' + args.image + ' here; scripts/build-image builds it)'}")
    _say(f"running {args.workflow} with the workflow engine; ARM stand-in at {twin.standin.url}")

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        _say("stopping: ending running jobs cleanly")
        twin.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    api = _start_api(args.serve) if getattr(args, "serve", None) else None
    try:
        if args.once:
            outcome = twin.run_once()
            return EXIT_INTERRUPTED if twin.stopping.is_set() else outcome.exit_code
        twin.serve()
        twin.drain()
        return EXIT_INTERRUPTED
    finally:
        twin.close()
        if api is not None:
            api.terminate()
            api.wait(10)


def _start_api(port: int) -> subprocess.Popen:
    """`scorer serve` beside the twin, against the same Azurite: a process of its own,
    since the server's R must start on a main thread before any other thread."""
    proc = subprocess.Popen([sys.executable, "-m", "scorer", "serve", "--port", str(port)], env=dict(os.environ))
    _say(f"HTTP scoring (scorer serve) at http://127.0.0.1:{port}: POST /v1/models/<name>/predict; "
         "GET /v1/models, /openapi.json")
    return proc
