"""Claims: concurrent runs never score an input twice, a dead job's claim lapses,
a crash after commit does not rescore, and poison inputs are set aside."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from azure.storage.blob import BlobLeaseClient

from scorer.batch.claims import ATTEMPTS_TAG
from scorer.batch.outcomes import SOURCE_ETAG

from conftest import env_for

ROW = b"wt,hp\n2.6,110\n3.2,150\n"


@pytest.fixture
def gamma(pipeline, fitted):
    pipeline.publish(fitted / "glm_gamma.rds", "g")
    return pipeline


def test_input_leased_by_another_job_is_skipped_and_left_pending(gamma):
    gamma.drop("g/a.csv", ROW)
    lease = gamma.store.blob(gamma.settings.input_container, "g/a.csv").acquire_lease(lease_duration=15)
    report = gamma.run()
    assert report.exit_code == 0
    assert report.inputs[0].status == "skipped"
    assert gamma.names("input") == ["g/a.csv"] and gamma.names("output") == []
    lease.release()
    assert gamma.run().inputs[0].status == "scored"


@pytest.mark.slow
def test_a_dead_jobs_claim_lapses_within_the_lease_time(gamma):
    gamma.drop("g/a.csv", ROW)
    BlobLeaseClient(gamma.store.blob(gamma.settings.input_container, "g/a.csv")).acquire(lease_duration=15)
    assert gamma.run().inputs[0].status == "skipped"  # the "dead" job still holds it
    time.sleep(16)
    assert gamma.run().inputs[0].status == "scored"


def test_committed_output_is_not_rescored_after_a_crash_before_archiving(gamma):
    gamma.drop("g/a.csv", ROW)
    etag = gamma.store.properties(gamma.settings.input_container, "g/a.csv").etag
    # what a run that died right after committing leaves behind
    gamma.store.put_bytes(gamma.settings.output_container, "g/a.csv", b"committed,by,the,dead,run\n",
                          metadata={SOURCE_ETAG: etag.strip('"')})
    report = gamma.run()
    item = report.inputs[0]
    assert (item.status, item.rows_read) == ("scored", 0)
    assert "without rescoring" in item.warnings[0]
    assert gamma.read("output", "g/a.csv") == b"committed,by,the,dead,run\n"
    assert gamma.names("input") == [] and gamma.names("archive") == ["g/a.csv"]


def test_committed_output_is_archived_even_after_max_attempts(gamma):
    """A run killed between commit and archive, three times over, has still
    scored the input: it is archived, not quarantined as poison (found by the
    SIGKILL fault test in CI)."""
    gamma.drop("g/a.csv", ROW)
    blob = gamma.store.blob(gamma.settings.input_container, "g/a.csv")
    blob.set_blob_tags({ATTEMPTS_TAG: "3"})
    etag = gamma.store.properties(gamma.settings.input_container, "g/a.csv").etag
    gamma.store.put_bytes(gamma.settings.output_container, "g/a.csv", b"committed\n",
                          metadata={SOURCE_ETAG: etag.strip('"'), "scorer_model": "g",
                                    "scorer_model_version": "1"})
    report = gamma.run()
    item = report.inputs[0]
    assert report.exit_code == 0
    assert item.status == "scored" and (item.model, item.model_version) == ("g", 1)
    assert gamma.names("archive") == ["g/a.csv"] and gamma.names("quarantine") == []


def test_new_file_under_an_archived_name_is_scored_and_archived_beside_the_old(gamma):
    gamma.drop("g/a.csv", ROW)
    gamma.run()
    gamma.drop("g/a.csv", b"wt,hp\n3.0,120\n")
    report = gamma.run()
    assert report.inputs[0].status == "scored"
    archived = gamma.names("archive")
    assert len(archived) == 2 and "g/a.csv" in archived
    assert gamma.read("archive", "g/a.csv") == ROW
    other = next(n for n in archived if n != "g/a.csv")
    assert other.startswith("g/a.") and other.endswith(".csv")
    assert gamma.read("archive", other) == b"wt,hp\n3.0,120\n"


def test_input_started_max_attempts_times_is_quarantined_as_poison(gamma):
    gamma.drop("g/a.csv", ROW)
    gamma.drop("g/b.csv", ROW)
    gamma.store.blob(gamma.settings.input_container, "g/a.csv").set_blob_tags({ATTEMPTS_TAG: "3"})
    report = gamma.run()
    assert report.exit_code == 3
    by = {i.blob: i for i in report.inputs}
    assert by["g/a.csv"].status == "quarantined" and by["g/a.csv"].error["kind"] == "PoisonInput"
    assert "started 3 times" in by["g/a.csv"].error["message"]
    assert by["g/b.csv"].status == "scored"  # the poison does not block the others


def test_attempts_are_counted_on_the_input_while_it_is_worked_on(gamma):
    gamma.drop("g/a.csv", ROW)
    gamma.store.blob(gamma.settings.input_container, "g/a.csv").set_blob_tags({ATTEMPTS_TAG: "1"})
    report = gamma.run()
    assert report.inputs[0].attempt == 2 and report.inputs[0].status == "scored"


@pytest.mark.slow
def test_four_concurrent_jobs_score_each_of_120_inputs_exactly_once(gamma):
    for i in range(120):
        gamma.drop(f"g/batch/{i:03d}.csv", ROW)
    env = env_for(gamma.settings)
    procs = [subprocess.Popen([sys.executable, "-m", "scorer", "run"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
    scored: dict[str, int] = {}
    for stdout, _ in outs:
        for line in stdout.splitlines():
            ev = json.loads(line)
            if ev["event"] == "input_scored":
                scored[ev["blob"]] = scored.get(ev["blob"], 0) + 1
    assert len(scored) == 120 and set(scored.values()) == {1}
    assert gamma.names("input") == []
    assert len([n for n in gamma.names("output")]) == 120
    assert len(gamma.names("archive")) == 120
    runs_that_scored = sum(1 for stdout, _ in outs if '"input_scored"' in stdout)
    assert runs_that_scored >= 2  # the work really was shared


@pytest.mark.parametrize("signum, when", [(signal.SIGTERM, "input_claimed"), (signal.SIGINT, "first_row_scored")],
                         ids=["SIGTERM-at-claim", "SIGINT-while-scoring"])
def test_a_stop_signal_mid_input_leaves_it_pending_unclaimed_and_without_output(gamma, signum, when):
    """SIGTERM is how ACI stops a container; SIGINT is Ctrl-C in a local run, sent
    once R is up (R's start-up must not take the stop handler over)."""
    gamma.drop("g/big.csv", b"wt,hp\n" + b"2.6,110\n" * 1_500_000)
    proc = subprocess.Popen([sys.executable, "-m", "scorer", "--debug", "run"], env=env_for(gamma.settings),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if f'"{when}"' in line:
            proc.send_signal(signum)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 130
    assert '"run_interrupted"' in rest and "Traceback" not in rest
    assert gamma.names("input") == ["g/big.csv"] and gamma.names("output") == []
    assert gamma.store.properties(gamma.settings.input_container, "g/big.csv").lease.state == "available"
    report = gamma.reports()[0]
    assert report["exit_code"] == 130 and report["inputs"][0]["status"] == "left_pending"


@pytest.mark.slow
def test_claim_is_renewed_while_an_input_takes_longer_than_the_lease(gamma):
    from scorer.batch.claims import Claim

    gamma.drop("g/long.csv", ROW)
    blob = gamma.store.blob(gamma.settings.input_container, "g/long.csv")
    claim = Claim.take(blob, 15)
    try:
        time.sleep(20)  # longer than the 15 s lease: only renewal keeps it
        assert Claim.take(blob, 15) is None
        assert not claim.lost
    finally:
        claim.release()
    other = Claim.take(blob, 15)
    assert other is not None
    other.release()
