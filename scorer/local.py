"""The local twin of the Logic App: ``scorer local``.

It does on one machine what logicapp/workflow.json does in Azure, reading the
same workflow parameters, so a change there changes both:

    Azure (workflow.json)                      here
    Recurrence trigger (scheduleFrequency,     the same schedule (UTC), or --interval N s
      scheduleInterval, scheduleHours/Minutes)
    blob created in the input container        a watcher that lists input/ every --poll s
    create container group (image, env,        `podman|docker run` of the image, or a plain
      cpuCores, memoryInGB, parallelJobs)        `python -m scorer run` process
    Until state is Succeeded/Failed, with      poll the container/process until it ends;
      jobTimeout                                 past jobTimeout, stop it (SIGTERM, then kill)
    save the logs to <logsContainer>/<group>.log   the same blob
    delete the group after every outcome       remove the container after every outcome
    the run fails when the job failed          the job is reported Failed; --once exits non-zero

Blob events that arrive while a job is running are coalesced into one more run:
the job scores everything pending, so nothing is missed, and its claims make
overlapping runs harmless (the same holds in Azure when events and the schedule
overlap).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from scorer.errors import EXIT_INTERRUPTED, EXIT_OK, ConfigError
from scorer.settings import SETTINGS, Settings

ROOT = Path(__file__).resolve().parent.parent
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(port: int = 10000) -> str:
    """Azurite's published development account (not a secret)."""
    return ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")


# -- the workflow's parameters: one source of truth ------------------------------------

#: the workflow parameters the local runner follows
_USED = ("scheduleFrequency", "scheduleInterval", "scheduleHours", "scheduleMinutes", "pollSeconds",
         "jobTimeout", "cpuCores", "memoryInGB", "parallelJobs", "scorerEnvironment", "logsContainer")


@dataclass
class WorkflowParams:
    frequency: str
    interval: int
    hours: list[int]
    minutes: list[int]
    poll_seconds: float
    job_timeout_s: float
    cpu_cores: float
    memory_gb: float
    parallel_jobs: int
    environment: dict[str, str]
    logs_container: str

    @classmethod
    def load(cls, path: Path) -> "WorkflowParams":
        """The defaults of logicapp/workflow.json's parameters, read as a deployment
        reads them (scorer.azure.workflow). Raises ConfigError."""
        from scorer.azure import workflow as wf

        try:
            doc = wf.load(path)
            definition = doc.get("definition", doc)
            params = definition["parameters"]
        except (OSError, ValueError, AttributeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: cannot read the workflow ({exc}).",
                              hint="Pass --workflow with the path of logicapp/workflow.json.") from None
        missing = [n for n in _USED if "defaultValue" not in params.get(n, {})]
        if missing:
            raise ConfigError(f"{path}: the workflow has no default for parameter(s) {', '.join(map(repr, missing))}.",
                              hint="Give them a defaultValue in logicapp/workflow.json.")
        v = wf.defaults(definition)
        return cls(
            frequency=v["scheduleFrequency"], interval=int(v["scheduleInterval"]),
            hours=list(v["scheduleHours"] or []), minutes=list(v["scheduleMinutes"] or []),
            poll_seconds=float(v["pollSeconds"]), job_timeout_s=iso_duration_seconds(v["jobTimeout"]),
            cpu_cores=float(v["cpuCores"]), memory_gb=float(v["memoryInGB"]),
            parallel_jobs=int(v["parallelJobs"]),
            environment={k: str(x) for k, x in wf.environment(v).items()},
            logs_container=v["logsContainer"],
        )


_ISO = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


def iso_duration_seconds(text: str) -> float:
    """Seconds in an ISO 8601 duration such as PT1H or P1DT30M. Raises ConfigError."""
    m = _ISO.match(text or "")
    if not m or text in ("P", "PT"):
        raise ConfigError(f"jobTimeout {text!r} is not an ISO 8601 duration.", hint="Use e.g. PT1H or PT30M.")
    d, h, mi, s = (float(m.group(k) or 0) for k in "dhms")
    return d * 86400 + h * 3600 + mi * 60 + s


def next_fire(p: WorkflowParams, after: datetime) -> datetime:
    """When the Recurrence trigger fires next after ``after`` (UTC)."""
    unit = {"Second": 1, "Minute": 60, "Hour": 3600}.get(p.frequency)
    if unit:
        return after + timedelta(seconds=unit * p.interval)
    days = {"Day": 1, "Week": 7, "Month": 30}.get(p.frequency)
    if days is None:
        raise ConfigError(f"scheduleFrequency {p.frequency!r} is not one the local runner knows.",
                          hint="Use Second, Minute, Hour, Day, Week or Month.")
    hours, minutes = p.hours or [after.hour], p.minutes or [0]
    day = after.replace(hour=0, minute=0, second=0, microsecond=0)
    for _ in range(days * p.interval * 2 + 2):
        for h in sorted(hours):
            for mi in sorted(minutes):
                t = day.replace(hour=h, minute=mi)
                if t > after:
                    return t
        day += timedelta(days=1)
    return after + timedelta(days=days * p.interval)


# -- jobs: containers or processes -------------------------------------------------------

@dataclass
class JobResult:
    group: str
    state: str          # Succeeded, Failed or TimedOut (as the workflow sees it)
    exit_code: int | None
    seconds: float
    logs_blob: str


class Engine:
    """Starts one job, polls it, fetches its logs and removes it."""

    name = "process"

    def start(self, group: str, env: dict[str, str], params: WorkflowParams) -> Any: ...
    def poll(self, handle: Any) -> int | None: ...
    def stop(self, handle: Any) -> None: ...
    def logs(self, handle: Any) -> bytes: ...
    def remove(self, handle: Any) -> None: ...


class ProcessEngine(Engine):
    name = "process"

    def start(self, group, env, params):
        log = tempfile.TemporaryFile()
        proc = subprocess.Popen([sys.executable, "-m", "scorer", "run"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        return proc, log

    def poll(self, handle):
        return handle[0].poll()

    def stop(self, handle):
        proc = handle[0]
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logs(self, handle):
        handle[1].seek(0)
        return handle[1].read()

    def remove(self, handle):
        handle[1].close()


class ContainerEngine(Engine):
    """podman or docker, with the flags docker/engine.sh settles on for this machine."""

    def __init__(self, command: list[str], env: dict[str, str], image: str):
        self.command = command
        self.env = env  # CONTAINERS_CONF for podman
        self.image = image
        self.name = command[0]

    @classmethod
    def detect(cls, image: str, prefer: str = "auto") -> "ContainerEngine | None":
        env = dict(os.environ)
        if prefer in ("podman", "docker"):
            env["SCORER_ENGINE"] = prefer
        try:
            out = subprocess.run(["bash", str(ROOT / "docker" / "engine.sh")], env=env, capture_output=True,
                                 text=True, timeout=30, check=True).stdout.split("\n")
        except (OSError, subprocess.SubprocessError):
            return None
        command = [w for w in out if w and not w.startswith("CONTAINERS_CONF=")]
        for w in out:
            if w.startswith("CONTAINERS_CONF="):
                env["CONTAINERS_CONF"] = w.split("=", 1)[1]
        if not command or not shutil.which(command[0]):
            return None
        probe = subprocess.run(command + ["image", "inspect", image], env=env, capture_output=True, timeout=60)
        if probe.returncode != 0:
            return None
        return cls(command, env, image)

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.command + list(args), env=self.env, capture_output=True, timeout=timeout,
                              check=check)

    def start(self, group, env, params):
        # Values go through the engine's environment (`-e NAME`), never its command line.
        names = sorted(env)
        run_env = dict(self.env, **env)
        args = self.command + ["run", "-d", "--name", group, "--network", "host",
                               "--cpus", str(params.cpu_cores), "--memory", f"{int(params.memory_gb * 1024)}m"]
        for n in names:
            args += ["-e", n]
        args.append(self.image)
        subprocess.run(args, env=run_env, capture_output=True, timeout=120, check=True)
        return group

    def poll(self, handle):
        out = self._run("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", handle).stdout.decode().split()
        if out and out[0] in ("exited", "stopped", "dead"):
            return int(out[1])
        return None

    def stop(self, handle):
        self._run("stop", "-t", "15", handle, check=False, timeout=60)

    def logs(self, handle):
        r = self._run("logs", handle, check=False)
        return r.stdout + r.stderr

    def remove(self, handle):
        self._run("rm", "-f", handle, check=False)


# -- the runner -----------------------------------------------------------------------------

def _say(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class LocalRunner:
    settings: Settings
    params: WorkflowParams
    engine: Engine
    schedule_interval_s: float | None = None
    watch_poll_s: float = 2.0
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        from scorer.storage import Store, connect
        self.store = Store(connect(self.settings), self.settings)
        self.store.ensure_containers(self.params.logs_container)
        self._active: list[tuple[str, Any]] = []

    def job_environment(self) -> dict[str, str]:
        """The container's environment: the workflow's scorerEnvironment, with this
        machine's storage in place of the managed identity's account URL."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCORER_")} \
            if isinstance(self.engine, ProcessEngine) else {}
        env.update(self.params.environment)
        env["AZURE_STORAGE_CONNECTION_STRING"] = self.settings.connection_string or ""
        env.pop("SCORER_ACCOUNT_URL", None)
        for s in SETTINGS:  # this machine's container names, from the one settings table
            if s.field.endswith("_container"):
                env[s.env] = getattr(self.settings, s.field)
        return env

    def run_jobs(self, trigger: str) -> list[JobResult]:
        """What one workflow run does: start parallelJobs jobs, wait for them (up
        to jobTimeout), keep their logs, remove them."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
        env = self.job_environment()
        started = []
        for _ in range(max(1, self.params.parallel_jobs)):
            group = f"scorer-{stamp}-{uuid.uuid4().hex[:8]}"
            handle = self.engine.start(group, env, self.params)
            self._active.append((group, handle))
            started.append((group, handle, time.monotonic()))
            _say(f"job {group} started ({self.engine.name}, trigger: {trigger})")
        return [self._wait(group, handle, t0) for group, handle, t0 in started]

    def _wait(self, group: str, handle: Any, t0: float) -> JobResult:
        deadline = t0 + self.params.job_timeout_s
        # The workflow waits pollSeconds between looks; a local look is cheap, so
        # look at least every second for a snappier local loop.
        interval = min(self.params.poll_seconds, 1.0)
        while True:
            code = self.engine.poll(handle)
            if code is not None:
                state = "Succeeded" if code == 0 else "Failed"
                break
            if time.monotonic() > deadline or self.stopping.is_set():
                # SIGTERM first: the job leaves its input pending and lets its lease go
                self.engine.stop(handle)
                code = self.engine.poll(handle)
                state = "TimedOut" if not self.stopping.is_set() else "Stopped"
                break
            time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        seconds = time.monotonic() - t0
        logs_blob = f"{self.params.logs_container}/{group}.log"
        try:
            self.store.put_bytes(self.params.logs_container, f"{group}.log", self.engine.logs(handle),
                                 content_type="text/plain")
        finally:
            self.engine.remove(handle)
            self._active = [(g, h) for g, h in self._active if g != group]
        _say(f"job {group} finished: {state} (exit {code}) in {seconds:.1f} s; logs: {logs_blob}")
        return JobResult(group, state, code, seconds, logs_blob)

    def pending(self) -> set[str]:
        return {b.name for b in self.store.list_names(self.settings.input_container)}

    def serve(self, max_seconds: float | None = None) -> int:
        """Fire on the schedule and on new inputs until stopped."""
        start = datetime.now(timezone.utc)
        end = time.monotonic() + max_seconds if max_seconds else None

        def next_schedule(after: datetime) -> datetime:
            if self.schedule_interval_s:
                return after + timedelta(seconds=self.schedule_interval_s)
            return next_fire(self.params, after)

        due = next_schedule(start)
        seen = self.pending()  # before saying "watching": anything dropped after that is a new blob
        _say(f"schedule: next run at {due.isoformat(timespec='seconds')}; watching "
             f"{self.settings.input_container}/ every {self.watch_poll_s:g} s")
        if seen:
            _say(f"{len(seen)} input(s) already pending: running now")
            self.run_jobs("pending at start")
            seen = self.pending()
        while not self.stopping.is_set() and (end is None or time.monotonic() < end):
            now = datetime.now(timezone.utc)
            if now >= due:
                _say("trigger: schedule")
                self.run_jobs("schedule")
                due = next_schedule(datetime.now(timezone.utc))
                seen = self.pending()
                continue
            current = self.pending()
            new = sorted(current - seen)
            if new:
                for n in new:
                    _say(f"trigger: blob created: {self.settings.input_container}/{n}")
                self.run_jobs("blob created")
                current = self.pending()
            seen = current
            self.stopping.wait(self.watch_poll_s)
        return EXIT_OK

    def shutdown(self) -> None:
        """Stop cleanly: no orphan job, no input left claimed (the job's SIGTERM
        handler releases its leases before it exits)."""
        self.stopping.set()
        for group, handle in list(self._active):
            self.engine.stop(handle)


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


def main(args: Any) -> int:
    """`scorer local`: returns 0 when every job succeeded (with --once), else the
    first failed job's exit status."""
    if not os.environ.get("AZURE_STORAGE_CONNECTION_STRING") and not os.environ.get("SCORER_ACCOUNT_URL"):
        port = int(os.environ.get("AZURITE_PORT", "10000"))
        ensure_azurite(port)
        os.environ["AZURE_STORAGE_CONNECTION_STRING"] = azurite_connection_string(port)
    settings = Settings.from_env()
    params = WorkflowParams.load(args.workflow)
    engine: Engine | None = None
    if args.engine != "process":
        engine = ContainerEngine.detect(args.image, args.engine)
        if engine is None and args.engine != "auto":
            raise ConfigError(f"{args.engine} cannot run image {args.image!r} here.",
                              hint="Build it with scripts/build-image, or use --engine process.")
    if engine is None:
        engine = ProcessEngine()
        _say("jobs run as plain processes (no container engine with the image "
             f"{args.image} here; scripts/build-image builds it)")
    else:
        _say(f"jobs run as containers: {engine.name}, image {args.image}")
    runner = LocalRunner(settings, params, engine, schedule_interval_s=args.interval, watch_poll_s=args.poll)

    def stop(signum, frame):  # noqa: ARG001 - signal handler signature
        _say("stopping: ending running jobs cleanly")
        runner.shutdown()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.once:
        results = runner.run_jobs("once")
        failed = [r for r in results if r.state != "Succeeded"]
        if runner.stopping.is_set():
            return EXIT_INTERRUPTED
        return (failed[0].exit_code or 1) if failed else EXIT_OK
    runner.serve()
    return EXIT_INTERRUPTED if runner.stopping.is_set() else EXIT_OK

