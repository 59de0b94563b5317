"""One bad blob never stops the queue (issue 18): an error about one blob is told
from an outage of the service; names are checked against Blob Storage's limits
before anything is written; an attempt that runs out of disk records why, and a
poison note quotes it.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time

import pytest

from scorer.batch.claims import ATTEMPTS_TAG, Attempts
from scorer.storage import Store, connect, is_outage, name_length

from conftest import ROOT, Azurite, Pipeline, env_for, scorer_cli
from storage_proxy import StorageProxy

ROW = b"wt,hp\n2.6,110\n3.2,150\n"


@pytest.fixture
def gamma(pipeline, fitted):
    pipeline.publish(fitted / "glm_gamma.rds", "g")
    return pipeline


def _run_through_proxy(pipeline, azurite, **proxy_state):
    """One run of the job reaching Azurite through a StorageProxy (``proxy_state``: its
    pending_copy or slow_copy); returns the run's report and the proxy, which holds what
    it saw and refused."""
    proxy = StorageProxy(azurite.port)
    for name, value in proxy_state.items():
        setattr(proxy, name, value)
    s = dataclasses.replace(pipeline.settings, connection_string=proxy.connection_string(azurite.connection_string))
    store = Store(connect(s), s)
    try:
        return Pipeline(s, store).run(), proxy
    finally:
        store.close()
        proxy.close()


def test_an_input_with_ten_tags_is_quarantined_naming_the_limit_and_the_queue_goes_on(gamma):
    gamma.drop("g/a_tagged.csv", ROW)
    gamma.store.blob(gamma.settings.input_container, "g/a_tagged.csv").set_blob_tags(
        {f"lineage{i}": "x" for i in range(10)})
    gamma.drop("g/b_plain.csv", ROW)
    report = gamma.run()
    by_blob = {i.blob: i for i in report.inputs}
    assert by_blob["g/b_plain.csv"].status == "scored"
    assert by_blob["g/a_tagged.csv"].status == "quarantined"
    assert report.exit_code == 3  # quarantined, not a storage outage (4)
    note = gamma.read_json("quarantine", "g/a_tagged.csv.error.json")
    assert note["kind"] == "BlobError" and "ten blob index tags" in note["message"]
    assert "Remove at least one" in note["what_to_do"] and note["error_code"] == "TagsTooLarge"
    assert gamma.names("input") == []


def test_names_that_would_pass_the_1024_character_limit_are_quarantined_before_any_write(pipeline, fitted, azurite):
    """The job talks to Azurite through a proxy that refuses names over 1,024
    characters, as Azure does; a name short enough to exist but too long for the
    names derived from it is quarantined with a note, and the queue goes on."""
    pipeline.publish(fitted / "glm_gamma.rds", "g")
    fits_note = "g/" + "a" * 1014 + ".csv"  # 1020: a note beside it would have 1031
    near = "g/" + "b" * 1004 + ".csv"       # 1010: rejected rows would have 1023, a time stamp 1027
    for name in (fits_note, near, "g/c_plain.csv"):
        pipeline.drop(name, ROW)
    assert name_length(fits_note) == 1020 and name_length(near) == 1010
    report, proxy = _run_through_proxy(pipeline, azurite)
    assert proxy.refused == [], "a name over the limit was sent to storage"
    by_blob = {i.blob: i for i in report.inputs}
    assert by_blob["g/c_plain.csv"].status == "scored"
    assert report.exit_code == 3
    quarantine = pipeline.names("quarantine")
    assert near in quarantine and near + ".error.json" in quarantine
    note = pipeline.read_json("quarantine", near + ".error.json")
    assert note["kind"] == "BlobError" and "limit of 1024" in note["message"]
    assert "Shorten the path" in note["what_to_do"]
    # The longest name's note cannot sit beside it: both go under _long-names/, the note naming the input.
    long_names = [n for n in quarantine if n.startswith("g/_long-names/")]
    assert len(long_names) == 2 and fits_note not in quarantine
    (note_name,) = [n for n in long_names if n.endswith(".error.json")]
    assert pipeline.read_json("quarantine", note_name)["input"].endswith(fits_note)
    assert pipeline.names("input") == []


def test_start_up_lists_the_containers_and_creates_only_the_missing_ones(store, settings, monkeypatch):
    """Every run starts by making sure its containers exist: with all of them there, one
    listing and no creation; a missing one is created, and the others are left alone."""
    created = []
    real = store.service.create_container

    def counted(name, **kwargs):  # the real call, counted
        created.append(name)
        return real(name, **kwargs)

    monkeypatch.setattr(store.service, "create_container", counted)
    store.put_bytes(settings.output_container, "kept.csv", b"x\n1\n")
    store.ensure_containers()
    assert created == []
    store.service.delete_container(settings.archive_container)
    store.ensure_containers("extra-" + settings.archive_container)
    assert sorted(created) == sorted([settings.archive_container, "extra-" + settings.archive_container])
    assert store.service.get_container_client(settings.archive_container).exists()
    assert store.read_bytes(settings.output_container, "kept.csv") == b"x\n1\n"
    store.service.delete_container("extra-" + settings.archive_container)


def test_outage_errors_are_told_from_errors_about_one_blob():
    from azure.core.exceptions import HttpResponseError, ServiceRequestError

    def http(status):
        e = HttpResponseError(message="x")
        e.status_code = status
        return e
    assert is_outage(ServiceRequestError("refused"))
    for status in (500, 503, 403, 408, 429, None):
        assert is_outage(http(status)), status
    for status in (400, 404, 409, 412, 413):
        assert not is_outage(http(status)), status


def test_the_attempt_record_keeps_each_outcome_in_one_tag():
    r = Attempts.parse("3 1=no-space 3=stopped")
    assert r.number == 3 and r.outcomes == {1: "no-space", 3: "stopped"}
    assert Attempts.parse(r.format()) == r
    assert Attempts.parse("2").number == 2 and Attempts.parse("junk").number == 0
    words = r.history(3)
    assert "disk space" in words[0] and "no record" in words[1] and "SIGTERM" in words[2]
    # tag values may hold letters, digits, space and +-./:=_ only
    assert set(r.format()) <= set("0123456789 abcdefghijklmnopqrstuvwxyz-=")


@pytest.fixture
def small_tmp(tmp_path):
    """A 2 MB tmpfs, to fill the job's temporary space for real."""
    where = tmp_path / "tmpfs"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); needs root")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_temporary_disk_is_recorded_per_attempt_and_quoted_by_the_poison_note(gamma, small_tmp):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    # Parquet is downloaded to the temporary directory before it is read: 3 MB on 2 MB
    import numpy as np

    rng = np.random.default_rng(18)
    n = 250_000
    table = pa.table({"wt": rng.uniform(1.5, 5.5, n), "hp": rng.uniform(50, 330, n)})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="none", use_dictionary=False)
    assert len(buf.getvalue()) > 3 * 1024 * 1024
    gamma.drop("g/big.parquet", buf.getvalue())
    gamma.drop("g/small.csv", ROW)
    for attempt in (1, 2):
        proc = scorer_cli(gamma.settings, "run", TMPDIR=str(small_tmp), SCORER_MAX_ATTEMPTS="2")
        assert proc.returncode == 5, proc.stdout + proc.stderr  # out of resources, input left pending
        assert "Traceback" not in proc.stdout + proc.stderr
        tags = gamma.store.blob(gamma.settings.input_container, "g/big.parquet").get_blob_tags()
        assert Attempts.parse(tags[ATTEMPTS_TAG]).outcomes.get(attempt) == "no-space"
        report = gamma.reports()[-1]
        item = next(i for i in report["inputs"] if i["blob"] == "g/big.parquet")
        assert item["status"] == "left_pending" and item["error"]["kind"] == "OutOfDisk"
        assert "TMPDIR" in item["error"]["what_to_do"]
    assert "g/small.csv" in gamma.names("archive")  # scored by the first run, beside the full disk
    proc = scorer_cli(gamma.settings, "run", TMPDIR=str(small_tmp), SCORER_MAX_ATTEMPTS="2")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    note = gamma.read_json("quarantine", "g/big.parquet.error.json")
    assert note["kind"] == "PoisonInput"
    assert "attempt 1 ran out of disk space" in note["message"] and "attempt 2 ran out of disk space" in note["message"]
    assert "disk space" in note["what_to_do"]


def test_every_quarantine_note_says_what_to_do(gamma, fitted):
    """PredictError had no what_to_do; every kind of quarantine now has one."""
    gamma.publish(fitted / "ranger.rds", "rg")
    gamma.drop("rg/na.csv", b"Sepal.Length,Sepal.Width,Petal.Length,Petal.Width\n,,,\n,,,\n")
    gamma.drop("g/empty.csv", b"")
    gamma.run()
    notes = [n for n in gamma.names("quarantine") if n.endswith(".error.json")]
    assert len(notes) == 2
    for n in notes:
        assert gamma.read_json("quarantine", n).get("what_to_do"), n


@pytest.mark.slow
def test_an_outage_longer_than_the_retry_budget_still_prints_the_run_report(fitted, tmp_path):
    az = Azurite(tmp_path / "azurite")  # on disk, so a restart keeps the blobs
    az.start()
    try:
        from scorer.settings import Settings
        settings = Settings(connection_string=az.connection_string, lease_seconds=15)
        store = Store(connect(settings), settings)
        store.ensure_containers()
        p = Pipeline(settings, store)
        p.publish(fitted / "glm_gamma.rds", "g")
        big = b"wt,hp\n" + b"".join(f"{2 + (j % 300) / 100},{50 + j % 250}\n".encode() for j in range(60_000))
        for i in range(3):
            p.drop(f"g/{i}.csv", big)
        proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "python"), "-m", "scorer", "run"], env=env_for(settings),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            if '"input_scored"' in line:
                az.stop()
                t = time.monotonic()
                break
        rest = proc.stdout.read()
        assert proc.wait(timeout=300) == 4, rest
        budget = time.monotonic() - t
        last = json.loads(rest.strip().splitlines()[-1])
        assert last["event"] == "run_finished" and last["exit_code"] == 4
        report = last["report_json"]  # the report could not be written to storage: it is here
        assert report["exit_code"] == 4
        # inputs are in flight together (scorer.batch.flight), and storage goes away at some point after the
        # first input_scored line: that input may or may not have been archived in time, the others may or may
        # not have been started. What must hold: none is quarantined for storage's fault, and an input left
        # pending with an error was left for a StorageError (the rerun below completes them all)
        statuses = [i["status"] for i in report["inputs"]]
        assert set(statuses) <= {"scored", "left_pending"}, report
        assert any(i["output"] for i in report["inputs"]), report
        assert all(i["error"]["kind"] == "StorageError" for i in report["inputs"]
                   if i["status"] == "left_pending" and i["error"]), report  # (no error: stopped, never started)
        print(f"\noutage figures: the job gave up {budget:.1f} s after storage went away")
        az.start()
        time.sleep(16)  # a claim held when storage vanished lapses
        assert p.run().exit_code == 0
        assert sorted(p.names("archive")) == [f"g/{i}.csv" for i in range(3)]
        store.close()
    finally:
        az.stop()


@pytest.mark.slow
def test_an_outage_shorter_than_the_retry_budget_is_ridden_out(fitted, tmp_path):
    """Each storage request retries with back-off for about 30 s: storage that comes
    back within that time costs the run nothing but the wait."""
    az = Azurite(tmp_path / "azurite")
    az.start()
    try:
        from scorer.settings import Settings
        settings = Settings(connection_string=az.connection_string, lease_seconds=15)
        store = Store(connect(settings), settings)
        store.ensure_containers()
        p = Pipeline(settings, store)
        p.publish(fitted / "glm_gamma.rds", "g")
        for i in range(3):
            p.drop(f"g/{i}.csv", ROW)
        proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "python"), "-m", "scorer", "run"], env=env_for(settings),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            if '"input_scored"' in line:
                az.stop()
                time.sleep(5)
                az.start()
                break
        rest = proc.stdout.read()
        assert proc.wait(timeout=300) == 0, rest
        # with inputs in flight, one may have been in the act of being leased when storage went: a lease
        # Blob Storage granted whose answer was lost is retried and refused (409), and that input is
        # skipped, left in input/ untouched. Nothing is lost; the next run, once the lease lapses, scores it
        names = [f"g/{i}.csv" for i in range(3)]
        assert sorted(p.names("archive") + p.names("input")) == names, rest
        if p.names("input"):
            time.sleep(16)
            assert p.run().exit_code == 0
        assert sorted(p.names("archive")) == names
        store.close()
    finally:
        az.stop()


def test_a_lapsed_lease_is_taken_again_to_archive_unless_another_job_took_it(gamma):
    """An outage longer than the lease: the claim is taken again to finish, but
    never from another job, and never for an input replaced meanwhile."""
    from azure.storage.blob import BlobLeaseClient

    from scorer.batch.claims import Claim, LeaseLost

    def lapsed_claim(name):
        gamma.drop(name, ROW)
        blob = gamma.store.blob(gamma.settings.input_container, name)
        claim = Claim.take(blob, 15)
        BlobLeaseClient(blob, lease_id=claim.lease.id).break_lease(lease_break_period=0)
        return blob, claim, blob.get_blob_properties().etag.strip('"')

    blob, claim, etag = lapsed_claim("g/a.csv")
    claim.delete_input(etag)
    claim.release()
    assert gamma.names("input") == []

    blob, claim, etag = lapsed_claim("g/b.csv")
    other = blob.acquire_lease(lease_duration=15)  # another job's claim
    with pytest.raises(LeaseLost, match="another job"):
        claim.delete_input(etag)
    claim.release()
    other.release()

    blob, claim, etag = lapsed_claim("g/c.csv")
    blob.upload_blob(b"wt,hp\n9,9\n", overwrite=True)  # replaced while the lease had lapsed
    with pytest.raises(LeaseLost, match="replaced"):
        claim.delete_input(etag)
    claim.release()
    assert sorted(gamma.names("input")) == ["g/b.csv", "g/c.csv"]


def test_a_blob_whose_copy_is_still_pending_is_left_for_the_next_run(gamma, azurite):
    """A cross-account copy into input/ shows CopyStatus pending until it completes: the
    job must not score it half-written (issue 14, defect 11)."""
    gamma.drop("g/copying.csv", ROW)
    gamma.drop("g/plain.csv", ROW)
    report, _ = _run_through_proxy(gamma, azurite, pending_copy={"g/copying.csv"})
    by_blob = {i.blob: i for i in report.inputs}
    assert by_blob["g/copying.csv"].status == "skipped" and "copy" in by_blob["g/copying.csv"].warnings[0]
    assert by_blob["g/plain.csv"].status == "scored" and report.exit_code == 0
    assert gamma.names("input") == ["g/copying.csv"]
    assert gamma.run().inputs[0].status == "scored"  # once the copy is done


def test_a_run_of_one_input_asks_storage_for_each_thing_once(gamma, azurite):
    """Each request is a round trip (milliseconds in Azure) and a billed transaction: a
    run of one clean input, by a model with a drift profile, makes 24 (docs/performance.md
    lists them): 9 for the input itself, 6 for the model's history and the index, 1 to
    list labels/ (scorer.batch.labels). The
    archive's copy is not read back when its answer says it is done, and a deleted input's
    lease is not given back: it went with the blob; a small output is one Put Blob, and a
    name not archived before is copied without a read first."""
    gamma.drop("g/one.csv", ROW)
    report, proxy = _run_through_proxy(gamma, azurite)
    assert report.exit_code == 0 and gamma.names("archive") == ["g/one.csv"]
    s = gamma.settings
    archived, pending = f"{s.archive_container}/g/one.csv", f"{s.input_container}/g/one.csv"
    asked = [(method, blob) for method, blob, _ in proxy.seen]
    copy = asked.index(("PUT", archived))
    assert ("HEAD", archived) not in asked[copy:], asked  # the copy said "success"
    assert [m for m, b in asked[asked.index(("DELETE", pending)):] if b == pending] == ["DELETE"], asked
    assert ("HEAD", archived) not in asked, asked  # copied onto no blob (If-None-Match: *), not read first
    assert len(asked) == 24, "\n".join(map(str, proxy.seen))


def test_a_copy_that_is_still_pending_when_answered_is_awaited_before_the_input_goes(gamma, azurite):
    """Blob Storage may answer a copy before it has finished (x-ms-copy-status:
    pending): the job reads the copy's state until it succeeds, and only then deletes
    the input."""
    gamma.drop("g/slow.csv", ROW)
    archived = f"{gamma.settings.archive_container}/g/slow.csv"
    report, proxy = _run_through_proxy(gamma, azurite, slow_copy={archived: 2})
    assert report.exit_code == 0 and gamma.names("archive") == ["g/slow.csv"] and gamma.names("input") == []
    asked = [(method, blob) for method, blob, _ in proxy.seen]
    copy = asked.index(("PUT", archived))
    deleted = asked.index(("DELETE", f"{gamma.settings.input_container}/g/slow.csv"))
    assert asked[copy + 1:deleted].count(("HEAD", archived)) == 3  # pending, pending, success
    assert proxy.slow_copy[archived] == 0
