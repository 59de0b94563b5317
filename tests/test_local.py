"""The local twin (`scorer local`), run as a real subprocess against this session's
Azurite: it runs logicapp/workflow.json with the workflow engine, so these are the
workflow's own behaviours: triggers, jobs, kept logs, clean-up, schedule, timeout."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest

from scorer.azure import workflow as wf
from scorer.azure.recurrence import next_fire

from conftest import ROOT, env_for
from test_image import engine, image  # noqa: F401 - shared session fixtures: the engine and the built image

ROW = b"wt,hp\n2.6,110\n3.2,150\n"
WORKFLOW = ROOT / "logicapp" / "workflow.json"


class Runner:
    """`scorer local` in the background, its output read line by line."""

    def __init__(self, settings, *args: str):
        self.lines: list[str] = []
        self.times: list[float] = []  # when each line arrived (monotonic)
        self._q: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen([sys.executable, "-m", "scorer", "local", *args], env=env_for(settings),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.times.append(time.monotonic())
            self.lines.append(line.rstrip())
            self._q.put(line.rstrip())

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._q.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None and self._q.empty():
                    break
                continue
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; got:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


@pytest.fixture
def gamma(pipeline, fitted):
    pipeline.publish(fitted / "glm_gamma.rds", "g")
    return pipeline


def logs_of(p, job_line: str, run_line: str) -> list[dict]:
    """The job's log lines, as the workflow saved them (logs/<run>/<group>.log)."""
    group = re.search(r"job (scorer-\S+) finished", job_line).group(1)
    run = re.search(r"run (\d+) ", run_line).group(1)
    text = p.store.read_bytes("logs", f"runs/{run}/{group}.log").decode()
    return [json.loads(x) for x in text.splitlines() if x.startswith('{"ts"')]


def test_dropped_file_is_scored_and_the_jobs_logs_and_report_are_kept(gamma):
    r = Runner(gamma.settings, "--engine", "process", "--poll", "0.3", "--interval", "3600")
    try:
        r.wait_for("watching")
        gamma.drop("g/a.csv", ROW)
        r.wait_for(r"trigger: blob created: .*/g/a\.csv")
        done = r.wait_for(r"job scorer-\S+ finished: Succeeded \(exit 0\) in [\d.]+ s")
        ran = r.wait_for(r"run \d+ \(blob created\) finished: Succeeded in [\d.]+ s; logs: logs/runs/\d+/")
    finally:
        assert r.stop() == 130
    assert gamma.names("output") == ["g/a.csv"] and gamma.names("input") == []
    events = {e["event"] for e in logs_of(gamma, done, ran)}
    assert {"input_scored", "report_written", "run_finished"} <= events
    assert len(gamma.reports()) == 1


def test_two_files_dropped_at_once_are_each_scored_once(gamma):
    r = Runner(gamma.settings, "--engine", "process", "--poll", "0.3", "--interval", "3600")
    try:
        r.wait_for("watching")
        gamma.drop("g/a.csv", ROW)
        gamma.drop("g/b.csv", ROW)
        r.wait_for("finished: Succeeded")
        deadline = time.monotonic() + 60
        while gamma.names("input") and time.monotonic() < deadline:
            time.sleep(0.3)
    finally:
        r.stop()
    reports = gamma.reports()
    scored = [i["blob"] for rep in reports for i in rep["inputs"] if i["status"] == "scored"]
    assert sorted(scored) == ["g/a.csv", "g/b.csv"]
    assert gamma.names("archive") == ["g/a.csv", "g/b.csv"]


def test_failed_job_quarantines_its_input_keeps_its_logs_and_the_runner_carries_on(gamma):
    r = Runner(gamma.settings, "--engine", "process", "--poll", "0.3", "--interval", "3600")
    try:
        r.wait_for("watching")
        gamma.drop("g/bad.csv", b"wt\n2.6\n")
        failed = r.wait_for(r"finished: Failed \(exit 3\)")
        ran = r.wait_for(r"run \d+ \(blob created\) finished: Failed in [\d.]+ s; logs: .*ScoringJobFailed")
        gamma.drop("g/good.csv", ROW)
        r.wait_for("finished: Succeeded")
    finally:
        r.stop()
    assert "g/bad.csv" in gamma.names("quarantine")
    assert any(e["event"] == "input_quarantined" for e in logs_of(gamma, failed, ran))
    assert gamma.names("output") == ["g/good.csv"]


@pytest.mark.slow
def test_schedule_fires_at_the_configured_interval(gamma):
    r = Runner(gamma.settings, "--engine", "process", "--poll", "0.3", "--interval", "2")
    try:
        start = r.wait_for("schedule: next run")
        r.wait_for(r"\] trigger: schedule$", timeout=30)
        r.wait_for(r"\] trigger: schedule$", timeout=30)
        # the second run's job, which under load starts a moment after its trigger's line
        r.wait_for(r"job scorer-\S+ started \(process\)", timeout=30)
    finally:
        r.stop()
    fired = [t for t, line in zip(r.times, r.lines) if line.endswith("] trigger: schedule")]
    t0 = r.times[r.lines.index(start)]
    # the recurrences are counted from the workflow's startTime: the first within one
    # interval of the start, the next at a later one (checked every 0.3 s), never
    # overlapping the run before it
    assert 0 < fired[0] - t0 <= 2.4 and fired[1] - fired[0] >= 2.0 - 0.35
    assert sum(re.search(r"job scorer-\S+ started \(process\)", line) is not None for line in r.lines) >= 2


def test_job_outliving_the_timeout_is_stopped_and_its_input_stays_safe(gamma, tmp_path):
    doc = json.loads(WORKFLOW.read_text())  # --workflow FILE: a changed definition, tried locally
    # The job scores 100,000 rows 50 at a time (seconds), so it still runs when the
    # workflow first polls it, a second after it started, past the 0.3 s timeout.
    params = doc["definition"]["parameters"]
    params["jobTimeout"]["defaultValue"] = "PT0.3S"
    params["scorerEnvironment"]["defaultValue"].append({"name": "SCORER_BATCH_ROWS", "value": "50"})
    short = tmp_path / "workflow.json"
    short.write_text(json.dumps(doc))
    gamma.drop("g/a.csv", b"wt,hp\n" + b"2.6,110\n" * 100_000)
    r = Runner(gamma.settings, "--engine", "process", "--once", "--workflow", str(short))
    r.proc.wait(timeout=120)
    # the workflow's Until timed out, its clean-up deleted the group: the job got SIGTERM
    assert any(re.search(r"finished: Failed \(exit 130\)", line) for line in r.lines), r.lines
    assert r.proc.returncode == 1  # the run failed; its last poll saw the job running, with no exit code yet
    # the input is still pending, not lost, and its lease was released
    assert gamma.names("input") == ["g/a.csv"] and gamma.names("output") == [], r.lines
    assert gamma.store.properties(gamma.settings.input_container, "g/a.csv").lease.state == "available"


@pytest.mark.container
def test_with_a_container_engine_the_job_runs_as_a_container(gamma, image):  # noqa: F811
    gamma.drop("g/a.csv", ROW)
    r = Runner(gamma.settings, "--once", "--image", image)
    assert r.proc.wait(timeout=300) == 0, "\n".join(r.lines)
    assert any("jobs run as containers" in line for line in r.lines), r.lines
    assert any("started (podman" in line or "started (docker" in line for line in r.lines)
    assert gamma.names("output") == ["g/a.csv"]
    group = re.search(r"job (scorer-\S+) started", "\n".join(r.lines)).group(1)
    ps = subprocess.run(["bash", "-c", f". {ROOT}/docker/engine.sh; \"${{ENGINE[@]}}\" ps -a --format '{{{{.Names}}}}'"],
                        capture_output=True, text=True)
    assert group not in ps.stdout  # removed after the run


def test_the_schedule_is_the_deployed_definitions_recurrence():
    definition = wf.load(WORKFLOW)["definition"]
    deployed = wf.prepare_definition(definition, wf.settings(definition, {"scheduleHours": [2, 14],
                                                                           "scheduleMinutes": [30]}))
    recurrence = deployed["triggers"][wf.SCHEDULE_TRIGGER]["recurrence"]
    after = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)
    assert next_fire(recurrence, after, after) == datetime(2026, 11, 22, 14, 30, tzinfo=timezone.utc)
    assert next_fire(recurrence, datetime(2026, 11, 22, 15, 0, tzinfo=timezone.utc), after) == \
        datetime(2026, 11, 23, 2, 30, tzinfo=timezone.utc)
