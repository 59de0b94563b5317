"""The local twin: ``scorer local`` runs logicapp/workflow.json itself, on this machine.

    Azure                                       the twin
    the Logic App runs the definition           scorer.twin.engine runs the same definition
    deployment fills the ARM parameters         the same parameters, pointing at the stand-ins
    Recurrence trigger                          the definition's schedule (UTC), or --interval N s
    Event Grid -> Request trigger               a watcher of the input container posts Event
                                                Grid's BlobCreated events (and, first, the
                                                subscription-validation event) to the trigger
    Azure Resource Manager, Container Instances scorer.twin.standin on a loopback port; each
                                                group's container runs as a podman/docker
                                                container of the scoring image, or a process
    Blob Storage (managed identity)             Azurite (the twin signs the requests for it)
    the Logic App's managed identity            tokens minted by the twin, checked by the stand-in

Every decision about a run (poll, keep the logs, delete the group, fail the run) is the
workflow's own; the twin only delivers triggers and answers HTTP. So a change to the
workflow is tried here by running it: ``--workflow FILE`` runs another definition.

What the twin cannot reproduce: Azure's time scales (image pull, ACI start-up, the
Logic App's own latency), RBAC (every token the twin mints is accepted by the stand-in
when its audience is right), and Azure's regional quotas and capacity (inject them with
``--fault``). It polls every second unless told otherwise (``--set pollSeconds=15`` is
Azure's default).
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from scorer.azure import workflow as wf
from scorer.azure.expressions import iso_duration_seconds
from scorer.errors import EXIT_INTERRUPTED, EXIT_OK, ConfigError
from scorer.settings import SETTINGS, Settings
from scorer.twin.backends import Backend, choose
from scorer.twin.engine import DefinitionRefused, Engine, Run
from scorer.twin.runtime import CALLER_WAIT_S, Call, TriggerQueue, TwinTransport, next_fire
from scorer.twin.standin import ArmStandIn, Faults, LocalIdentity

ROOT = Path(__file__).resolve().parents[2]
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "rg-scorer-local"
#: where the twin copies each run's report page, to open in a browser
PAGES_DIR = ROOT / ".scorer-local" / "reports"
#: parameter values the twin deploys with unless --set says otherwise (Azure's: PT15S polls)
TWIN_DEFAULTS = {"pollSeconds": 1}

def azurite_connection_string(port: int = 10000) -> str:
    """Azurite's published development account (not a secret)."""
    return ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")

def _say(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)

# -- what the workflow's HTTP actions reach -------------------------------------------------

# -- triggers ------------------------------------------------------------------------------

class RequestTrigger:
    """The Request trigger's callback URL on a loopback port. A caller waits for the
    run's Response action (or 202 when the run ends without one), as Logic Apps'
    callers do, for at most 120 s (504 after that)."""

    def __init__(self, twin: "Twin", trigger: str):
        self.sig = secrets.token_urlsafe(16)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                query = parse_qs(urlsplit(self.path).query)
                if query.get("sig", [""])[0] != outer.sig:
                    return self._answer(401, {"error": {"code": "DirectApiAuthorizationRequired",
                                                        "message": "The request must be signed (sig)."}})
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return self._answer(400, {"error": {"code": "InvalidRequestContent", "message": "not JSON"}})
                call = Call()
                outputs = {"headers": {k: v for k, v in self.headers.items()}, "body": body, "queries": {}}
                if twin.queues[trigger].fire(outputs, call.respond, "blob created") is None:
                    return self._answer(429, {"error": {"code": "WorkflowRunsWaitingLimitExceeded",
                                                        "message": "too many waiting runs"}}, {"Retry-After": "10"})
                answer = call.wait(CALLER_WAIT_S)
                if answer is None:
                    return self._answer(504, {"error": {"code": "GatewayTimeout", "message": "no response in 120 s"}})
                self._answer(answer.get("statusCode", 202), answer.get("body"), answer.get("headers") or {})

            def _answer(self, status: int, body: Any, headers: dict | None = None):
                data = b"" if body is None else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(k, str(v))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        port = self.server.server_address[1]
        self.url = (f"http://127.0.0.1:{port}/workflows/scorer/triggers/{trigger}/paths/invoke"
                    f"?api-version=2016-10-01&sp=%2Ftriggers%2F{trigger}%2Frun&sv=1.0&sig={self.sig}")
        threading.Thread(target=self.server.serve_forever, name="request-trigger", daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

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
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
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
                 "eventTime": _iso_now(), "metadataVersion": "1", "dataVersion": "1",
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
            event = {"id": str(uuid.uuid4()), "topic": self.twin.topic,
                     "subject": f"/blobServices/default/containers/{container}/blobs/{name}",
                     "eventType": "Microsoft.Storage.BlobCreated", "eventTime": _iso_now(),
                     "dataVersion": "", "metadataVersion": "1",
                     "data": {"api": "PutBlob", "clientRequestId": str(uuid.uuid4()), "requestId": str(uuid.uuid4()),
                              "eTag": etag, "contentType": "application/octet-stream", "blobType": "BlockBlob",
                              "url": f"{self.twin.blob_endpoint}{container}/{name}", "sequencer": f"{time.time_ns():032x}",
                              "storageDiagnostics": {"batchId": str(uuid.uuid4())}}}
            threading.Thread(target=self._deliver, args=(event,), daemon=True, name="eventgrid").start()
        self.seen = current
        return len(new)

    def _deliver(self, event: dict) -> None:
        delay = 10.0
        for _ in range(8):
            try:
                status, _ = self._post([event], "Notification")
                if status < 300:
                    return
            except OSError:
                pass
            if self.twin.stopping.wait(delay):
                return
            delay = min(delay * 2, 300.0)

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
    """The definition, deployed with parameters for this machine, and what serves it."""

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
        try:
            doc = wf.load(definition_file)
            definition = doc.get("definition", doc)
            values = wf.settings(definition, {**TWIN_DEFAULTS, **(overrides or {})})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{definition_file}: cannot use the workflow ({exc}).",
                              hint="Pass --workflow with the path of a workflow definition like "
                              "logicapp/workflow.json, and --set only its parameters.") from None
        self.values = values
        self.store.ensure_containers(values["logsContainer"])
        cs = dict(p.split("=", 1) for p in (settings.connection_string or "").split(";") if "=" in p)
        self.blob_endpoint = cs.get("BlobEndpoint", "").rstrip("/") + "/"
        self.topic = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
                      f"Microsoft.Storage/storageAccounts/{cs.get('AccountName', 'devstoreaccount1')}")
        self.identity = LocalIdentity()
        self.backend = backend
        self.standin = ArmStandIn(backend, self.identity, SUBSCRIPTION, RESOURCE_GROUP, faults, on_event=self._job_event)
        self.transport = TwinTransport(self.identity, self.standin.url, self.blob_endpoint,
                                       cs.get("AccountName", ""), cs.get("AccountKey", ""))
        self.definition = wf.prepare_definition(definition, values)
        if interval:
            self.definition["triggers"][wf.SCHEDULE_TRIGGER]["recurrence"] = {"frequency": "Second",
                                                                             "interval": max(1, int(interval))}
        ids = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.ManagedIdentity/" \
              "userAssignedIdentities/"
        params = {k: v for k, v in values.items() if k not in wf.ARM_FILLED}
        params["scorerEnvironment"] = self._job_environment(values)
        params.update({"subscriptionId": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP, "location": "local",
                       "resourceManagerUrl": self.standin.url, "jobIdentityId": ids + "scorer-job",
                       "logicAppIdentityId": ids + "scorer-logicapp", "registryServer": "localhost",
                       "blobEndpoint": self.blob_endpoint, "image": image})
        try:
            self.engine = Engine(self.definition, params, transport=self.transport, name="scorer-local",
                                 sleep=self.stopping.wait)
        except DefinitionRefused as exc:
            raise ConfigError(f"{definition_file}: the local twin cannot run this workflow: {exc}.",
                              hint="Use only the action types, triggers and functions the engine implements "
                              "(scorer/twin/engine.py lists them).") from None
        self.runs: list[Outcome] = []
        self._active = 0
        self._active_lock = threading.Lock()
        self.queues = {name: TriggerQueue(self, name, ((t.get("runtimeConfiguration") or {}).get("concurrency")
                                                       or {}).get("runs"))
                       for name, t in self.definition["triggers"].items()}
        self.request_trigger = RequestTrigger(self, wf.BLOB_TRIGGER)
        self.watcher = EventGridWatcher(self, self.request_trigger.url, watch_poll)

    def _job_environment(self, values: dict) -> list[dict]:
        """The container's environment: the workflow's scorerEnvironment, with this
        machine's container names and, where Azure gives a managed identity, the
        Azurite connection string (a secureValue, as a secret would be)."""
        by_name = {s.env: getattr(self.settings, s.field) for s in SETTINGS if s.field.endswith("_container")}
        env = [dict(e, value=str(by_name[e["name"]])) if e["name"] in by_name else dict(e)
               for e in values["scorerEnvironment"]]
        named = {e["name"] for e in env}
        env += [{"name": k, "value": str(v)} for k, v in by_name.items() if k not in named]
        env.append({"name": "AZURE_STORAGE_CONNECTION_STRING", "secureValue": self.settings.connection_string or ""})
        return env

    def _job_event(self, group: str, what: str, detail: dict) -> None:
        if what == "started":
            _say(f"job {group} started ({detail['backend']})")
        elif what == "ended":
            _say(f"job {group} finished: {detail['state']} (exit {detail['exit_code']}) in {detail['seconds']:.1f} s")
        elif what == "failed to start":
            _say(f"job {group} could not start: {detail['reason']}")

    # -- runs ----------------------------------------------------------------------------

    def execute(self, trigger: str, outputs: dict, respond=None, label: str = "") -> Outcome:
        t = time.monotonic()
        with self._active_lock:
            self._active += 1
        try:
            run = self.engine.run(trigger, outputs, respond)
        finally:
            with self._active_lock:
                self._active -= 1
        outcome = Outcome(run, time.monotonic() - t)
        self.runs.append(outcome)
        error = f": {run.error.get('code')}: {run.error.get('message', '')[:300]}" if run.error else ""
        logs = f"; logs: {self.values['logsContainer']}/runs/{run.name}/" if run.variables.get("groupNames") else ""
        _say(f"run {run.name} ({label or trigger}) finished: {run.status} in {outcome.seconds:.1f} s{logs}{error}")
        self._show_pages()
        return outcome

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
        return next_fire(self.definition["triggers"][wf.SCHEDULE_TRIGGER]["recurrence"], after)

    def serve(self, max_seconds: float | None = None) -> None:
        """Fire on the schedule and on new inputs until stopped."""
        end = time.monotonic() + max_seconds if max_seconds else None
        due = self.next_fire(datetime.now(timezone.utc))
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
        self.engine.stop()
        for q in self.queues.values():
            q.drop_waiting()

    def drain(self, timeout: float = 120.0) -> None:
        """Wait for the runs under way to reach their end (after ``shutdown`` they hurry)."""
        deadline = time.monotonic() + timeout
        while self._active and time.monotonic() < deadline:
            time.sleep(0.1)

    def close(self) -> None:
        self.request_trigger.close()
        self.standin.close()
        self.store.close()

def _iso_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"

def port_answering(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return True
    except OSError:
        return False

def ensure_azurite(port: int = 10000) -> None:
    """Start the project's Azurite if nothing answers on the port."""
    if port_answering(port):
        return
    _say(f"starting Azurite on 127.0.0.1:{port}")
    subprocess.run([str(ROOT / "scripts" / "azurite")], env=dict(os.environ, AZURITE_PORT=str(port)), check=True,
                   stdout=subprocess.DEVNULL)

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
