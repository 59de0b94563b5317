"""Never silently wrong, never a file lost: the blob-level cases an adversarial trial found
(issue 26), each with the test that failed before its fix.

Real Azurite and real R, as everywhere; where a case needs Blob Storage to misbehave
(a stalled request, a job paused past its lease), the loopback storage proxy of
tests/storage_proxy.py stands between the job and Azurite.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from scorer.storage import Store, connect

from conftest import ACCOUNT_KEY, CLEAN_ENV, Pipeline, env_for, scorer_cli
from storage_proxy import StorageProxy

ROW = b"wt,hp\n2.6,110\n3.2,150\n2.9,95\n" + b"3.0,120\n" * 40
WITH_A_REJECT = ROW + b"lots,99\n"


@pytest.fixture
def gamma(pipeline, fitted):
    pipeline.publish(fitted / "glm_gamma.rds", "g")
    return pipeline


# -- names scorer derives from an input's ----------------------------------------------


def test_an_input_named_as_rejected_rows_is_refused_and_never_takes_their_place(gamma):
    gamma.drop("g/x.csv", WITH_A_REJECT)
    gamma.run()
    rejected = gamma.read("output", "g/x.csv.rejected.csv")
    gamma.drop("g/x.csv.rejected.csv", ROW)  # what a user drops after fixing the rejected rows
    report = gamma.run()
    item = report.inputs[0]
    assert item.status == "quarantined" and "kept for the rejected rows" in item.error["message"]
    assert "x-fixed.csv" in item.error["what_to_do"]
    assert gamma.read("output", "g/x.csv.rejected.csv") == rejected  # x.csv's own, untouched
    assert gamma.read("quarantine", "g/x.csv.rejected.csv") == ROW  # nothing lost


def test_a_later_clean_input_never_deletes_what_a_derived_name_wrote(gamma):
    gamma.drop("g/y.csv.rejected.csv", ROW)
    gamma.run()
    gamma.drop("g/y.csv", ROW)  # clean: its run deletes y.csv's stale rejected rows, if any
    assert gamma.run().inputs[0].status == "scored"
    assert gamma.read("quarantine", "g/y.csv.rejected.csv") == ROW
    assert "g/y.csv.rejected.csv" not in gamma.names("output")


def test_a_quarantine_note_never_overwrites_an_input_quarantined_under_its_name(gamma):
    gamma.drop("g/b.csv.error.json", b'{"not": "an input"}')
    assert gamma.run().inputs[0].status == "quarantined"  # a .json file is not scored
    gamma.drop("g/b.csv", b"wt,hp\nheavy,fast\n")  # quarantined too: no number anywhere
    report = gamma.run()
    assert report.inputs[0].status == "quarantined"
    assert gamma.read("quarantine", "g/b.csv.error.json") == b'{"not": "an input"}'  # the only copy, kept
    moved = report.inputs[0].quarantined_to.split("/", 1)[1]
    assert moved != "g/b.csv" and moved.startswith("g/b.") and moved.endswith(".csv")
    note = json.loads(gamma.read("quarantine", moved + ".error.json"))
    assert note["input"].endswith("g/b.csv") and "should hold numbers" in note["message"]


# -- a job paused past its lease --------------------------------------------------------


def _containers_like(settings, tag: str):
    """Settings for a set of containers of its own, with ``tag`` in their names."""
    return dataclasses.replace(settings, **{f"{w}_container": f"{w[:3]}-{tag}" for w in
                                            ("models", "input", "output", "archive", "quarantine", "reports", "shadow", "labels")})


@pytest.mark.slow
def test_a_job_paused_past_its_lease_at_any_request_never_writes_over_the_run_that_took_over(gamma, azurite):
    """The lease-fencing invariant (issue 26). A job is stopped (SIGSTOP) as it sends its
    k-th request to storage, for every k of an input's life; once its lease has lapsed
    another run scores the input; then the first is resumed, its held request goes on.
    Every write the resumed job makes after that is refused by storage (the fences), no
    quarantine note appears, and what stays is one archived copy and the output and
    rejected rows a run without a pause writes. It used to commit a second time and then
    write a false quarantine note."""
    model_blobs = gamma.names("models")
    rehearsal = _containers_like(gamma.settings, "rehearsal")

    def containers(s) -> Pipeline:
        store = Store(connect(s), s)
        store.ensure_containers()
        for b in model_blobs:  # the published model, without publishing it again
            store.copy(gamma.settings.models_container, b, s.models_container, b)
        p = Pipeline(s, store)
        p.drop("g/day.csv", WITH_A_REJECT)
        return p

    # the rehearsal: the requests of one input's life, and what it leaves
    done = containers(rehearsal)
    proxy = StorageProxy(azurite.port)
    try:
        run = scorer_cli(dataclasses.replace(rehearsal, connection_string=proxy.connection_string(
            azurite.connection_string)), "run")
        assert run.returncode == 0, run.stdout + run.stderr
        steps = len(proxy.seen)
    finally:
        proxy.close()
    expected = {n: done.read("output", n) for n in done.names("output")}
    assert set(expected) == {"g/day.csv", "g/day.csv.rejected.csv"}

    scenarios = []
    for k in range(steps):
        s = _containers_like(gamma.settings, f"pause{k:02d}")
        p = containers(s)
        proxy = StorageProxy(azurite.port)
        paused, resume = threading.Event(), threading.Event()
        proc = subprocess.Popen([sys.executable, "-m", "scorer", "run"], env=env_for(dataclasses.replace(
            s, connection_string=proxy.connection_string(azurite.connection_string))),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def hold(index, method, blob, query, k=k, proc=proc, paused=paused, resume=resume):
            if index == k:
                os.kill(proc.pid, signal.SIGSTOP)
                paused.set()
                resume.wait()

        proxy.before = hold
        scenarios.append((k, p, proxy, proc, paused, resume))
    try:
        for k, p, proxy, proc, paused, resume in scenarios:
            assert paused.wait(120) or proc.poll() is not None, f"step {k} was never reached"
        time.sleep(gamma.settings.lease_seconds + 1)  # every paused job's lease lapses
        lapsed = time.monotonic()
        took_over = {k: p.run() for k, p, *_ in scenarios}  # another run, in between
        for k, p, proxy, proc, paused, resume in scenarios:
            held = len(proxy.seen)
            os.kill(proc.pid, signal.SIGCONT)
            resume.set()
            out, _ = proc.communicate(timeout=120)
            step = proxy.seen[k]
            assert proc.returncode == 0 and "Traceback" not in out, (step, [ln for ln in out.splitlines() if "error" in ln.lower()])
            assert '"status": "quarantined"' not in out, (step, out[-3000:])
            assert p.names("quarantine") == [], (step, p.names("quarantine"))  # no note, false or true
            assert p.names("input") == [] and p.names("archive") == ["g/day.csv"], step
            assert p.read("archive", "g/day.csv") == WITH_A_REJECT
            assert {n: p.read("output", n) for n in p.names("output")} == expected, step
            etag = p.store.properties(p.settings.archive_container, "g/day.csv").metadata["scorer_source_etag"]
            for n in expected:
                assert p.store.properties(p.settings.output_container, n).metadata["scorer_source_etag"] == etag
            # the fences: once resumed, none of the paused job's writes changed a blob. A
            # request another thread of the job sent as it was stopped may reach storage
            # before the lease lapsed (found in a full run): only those after are fenced
            for i in range(k, held):
                method, blob, query = proxy.seen[i]
                if proxy.forwarded.get(i, lapsed) < lapsed:
                    continue
                if (method in ("PUT", "DELETE") and not blob.startswith(p.settings.reports_container)
                        and "comp=block&" not in query + "&" and "restype=container" not in query):
                    assert proxy.answers.get(i, 0) >= 400, (step, proxy.seen[i], proxy.answers.get(i),
                                                            took_over[k].inputs[0].status)
    finally:
        for k, p, proxy, proc, paused, resume in scenarios:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                resume.set()
                proc.kill()
            proxy.close()
            p.store.close()


def _through(proxy: StorageProxy, settings, azurite):
    return dataclasses.replace(settings, connection_string=proxy.connection_string(azurite.connection_string))


@pytest.mark.slow
def test_a_storage_stall_past_the_lease_leaves_a_good_input_pending_not_quarantined(gamma, azurite):
    """Every request stalls for longer than the lease while the attempt is recorded: the
    expired lease on that write is the claim's loss, not the file's fault. It used to
    quarantine the input ("drop the file again")."""
    gamma.drop("g/good.csv", ROW)
    proxy = StorageProxy(azurite.port)
    stall_ends = []

    def stall(index, method, blob, query):
        if method == "PUT" and "comp=tags" in query and not stall_ends:
            stall_ends.append(time.monotonic() + gamma.settings.lease_seconds + 2)
            time.sleep(gamma.settings.lease_seconds + 2)
        elif stall_ends and "comp=lease" in query:  # the renewals stall too, and come after
            time.sleep(max(0.0, stall_ends[0] + 1.0 - time.monotonic()))

    proxy.before = stall
    try:
        run = scorer_cli(_through(proxy, gamma.settings, azurite), "run", timeout=120)
    finally:
        proxy.close()
    assert stall_ends, "the attempt's tags were never written"
    assert run.returncode == 0 and "Traceback" not in run.stdout + run.stderr, run.stdout[-2000:]
    item = json.loads(run.stdout.splitlines()[-1])["report_json" if "report_json" in run.stdout.splitlines()[-1]
                                                   else "counts"]
    assert gamma.names("quarantine") == [] and gamma.names("input") == ["g/good.csv"], item
    report = gamma.reports()[-1]
    assert report["inputs"][0]["status"] == "left_pending" and report["inputs"][0]["error"]["kind"] == "LeaseLost"
    assert gamma.run().inputs[0].status == "scored"  # the next run scores it


@pytest.mark.slow
def test_rejected_rows_are_never_visible_without_their_output(gamma, azurite):
    """The output is committed first; a job killed between the two commits leaves the
    output, whose metadata counts the rejected rows, and the next run scores the input
    again to write them. They used to be committed first, and seen alone until then."""
    gamma.drop("g/x.csv", WITH_A_REJECT)
    proxy = StorageProxy(azurite.port)
    commits = []
    job: list[subprocess.Popen] = []

    out = gamma.settings.output_container

    def die_before_the_rejected_rows(index, method, blob, query):
        # a commit: a block list, or a small output's one Put Blob (no comp= at all)
        if method == "PUT" and ("comp=blocklist" in query or "comp=" not in query) and blob.startswith(out + "/"):
            commits.append(blob)
            if blob.endswith(".rejected.csv"):
                job[0].kill()
                return "drop"  # the request dies with the job

    proxy.before = die_before_the_rejected_rows
    try:
        job.append(subprocess.Popen([sys.executable, "-m", "scorer", "run"],
                                    env=env_for(_through(proxy, gamma.settings, azurite)),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        job[0].wait(120)
    finally:
        proxy.close()
    out = gamma.settings.output_container
    assert commits == [f"{out}/g/x.csv", f"{out}/g/x.csv.rejected.csv"]
    assert gamma.names("output") == ["g/x.csv"]  # the output alone; never the rejected rows alone
    assert gamma.store.properties(out, "g/x.csv").metadata["scorer_rows_rejected"] == "1"
    time.sleep(gamma.settings.lease_seconds + 1)  # the killed job's claim lapses
    report = gamma.run()
    assert report.inputs[0].status == "scored" and "died before its rejected rows" in " ".join(report.inputs[0].warnings)
    assert gamma.names("output") == ["g/x.csv", "g/x.csv.rejected.csv"]
    assert b"lots" in gamma.read("output", "g/x.csv.rejected.csv")


@pytest.mark.slow
def test_a_split_input_replaced_while_its_parts_are_scored_is_never_mixed_with_the_new_one(pipeline, fitted, azurite):
    """Parts read their byte ranges by the plan's ETag: a part of an input replaced
    meanwhile fails (412), the plan is dropped, and the new file is scored from the start.
    One output used to hold 50,937 rows of the first upload and 149,063 of the second."""
    from test_split import SPLIT, big_csv, single_run

    pipeline.publish(fitted / "glm_binomial.rds", "infert", "response")
    first, second = big_csv(seed=3), big_csv(seed=4)
    expected, _ = single_run(pipeline, "second.csv", second)
    pipeline.drop("infert/big.csv", first)
    proxy = StorageProxy(azurite.port)
    replaced = []

    def replace_at_the_second_part(index, method, blob, query):
        if method == "PUT" and "comp=lease" in query and blob.endswith("part-00001") and not replaced:
            pipeline.drop("infert/big.csv", second)  # straight to storage, between two parts
            replaced.append(index)

    proxy.before = replace_at_the_second_part
    try:
        run = scorer_cli(_through(proxy, pipeline.settings, azurite), "run", SCORER_PARALLEL_JOBS="2", timeout=90, **SPLIT)
    finally:
        proxy.close()
    assert replaced and run.returncode == 0 and "Traceback" not in run.stdout + run.stderr, run.stdout[-3000:]
    assert "infert/big.csv" not in pipeline.names("output") and "infert/big.csv" in pipeline.names("input")
    assert [n for n in pipeline.names("output") if n.startswith("_parts/")] == []  # the plan is dropped
    assert "replaced while its parts were scored" in run.stdout
    rerun = scorer_cli(pipeline.settings, "run", SCORER_PARALLEL_JOBS="2", **SPLIT)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert pipeline.read("output", "infert/big.csv") == expected  # the second file's, whole
    assert pipeline.read("archive", "infert/big.csv") == second
    etag = pipeline.store.properties(pipeline.settings.archive_container, "infert/big.csv").metadata
    assert etag["scorer_source_etag"] == pipeline.store.properties(
        pipeline.settings.output_container, "infert/big.csv").metadata["scorer_source_etag"]


def test_an_input_that_was_killed_in_the_act_is_scored_after_the_others(gamma):
    """An input whose earlier attempts ended with no record (the job was killed on it: R
    crashed, the out-of-memory killer) goes last, so it cannot hold up the inputs sorted
    after it for SCORER_MAX_ATTEMPTS runs; one whose attempts ended for a known reason
    (stopped, out of disk) keeps its place."""
    from scorer.batch.claims import ATTEMPTS_TAG

    for name in ("a.csv", "b.csv", "c.csv", "d.csv"):
        gamma.drop(f"g/{name}", ROW)
    tag = gamma.store.blob(gamma.settings.input_container, "g/a.csv").set_blob_tags
    tag({ATTEMPTS_TAG: "2"})  # started twice, killed twice
    gamma.store.blob(gamma.settings.input_container, "g/c.csv").set_blob_tags({ATTEMPTS_TAG: "1 1=stopped"})
    report = gamma.run()
    assert [i.blob for i in report.inputs] == ["g/b.csv", "g/c.csv", "g/d.csv", "g/a.csv"]
    assert all(i.status == "scored" for i in report.inputs)


def test_a_small_parquet_file_that_reads_to_gigabytes_is_refused_before_it_is_decoded(gamma):
    """1 KB on disk, 6 GB once read: one text value of 100 KB, stored once in a dictionary
    and repeated 60,000 times. Its decoded size is counted from the dictionary, batch by
    batch, before anything is decoded. It used to be read a whole batch at a time: out of
    memory three times, then a poison note that advised more memory."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 60_000
    note = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array(["x" * 100_000]))
    buf = io.BytesIO()
    pq.write_table(pa.table({"wt": np.full(n, 2.6), "hp": np.full(n, 110.0), "note": note}), buf, compression="zstd")
    assert len(buf.getvalue()) < 4096
    gamma.drop("g/bomb.parquet", buf.getvalue())
    report = gamma.run(max_input_bytes=256 * 1024**2)
    item = report.inputs[0]
    assert item.status == "quarantined" and item.error["kind"] == "InputFormatError", item.error
    assert "larger than SCORER_MAX_INPUT_BYTES" in item.error["message"] and "decoded" in item.error["message"]
    assert gamma.read("quarantine", "g/bomb.parquet") == buf.getvalue()


@pytest.fixture
def no_inodes(tmp_path):
    """A tmpfs with every inode taken: not one more file or directory fits."""
    where = tmp_path / "full"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,nr_inodes=8", "tmpfs", str(where)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); needs root")
    i = 0
    while True:
        try:
            (where / f"f{i}").touch()
        except OSError:
            break
        i += 1
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_temporary_directory_without_inodes_leaves_inputs_pending_with_a_report(gamma, no_inodes):
    """R cannot make its session's directory: it used to end the job at once with its own
    fatal error, exit 2 (documented as a bad setting) and no report."""
    gamma.drop("g/a.csv", ROW)
    proc = scorer_cli(gamma.settings, "run", TMPDIR=str(no_inodes))
    assert proc.returncode == 5, proc.stdout + proc.stderr  # out of disk: the inputs stay pending
    assert "Fatal error" not in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr
    item = gamma.reports()[-1]["inputs"][0]
    assert item["status"] == "left_pending" and item["error"]["kind"] == "OutOfDisk"
    assert str(no_inodes) in item["error"]["message"] and "TMPDIR" in item["error"]["what_to_do"]
    assert gamma.names("input") == ["g/a.csv"]
    assert gamma.run().inputs[0].status == "scored"


# -- models that misbehave: a published model is code ------------------------------------

HOSTILE = r'''
args <- commandArgs(TRUE)
out <- args[[1]]
m <- glm(mpg ~ wt + hp, data = mtcars, family = Gamma(link = "log"))
m$data <- NULL  # no drift profile: publishing then never predicts
m$model <- NULL
leaky <- m  # a function kept in the model object runs at predict(), with the job's environment
leaky$family$linkinv <- local({  # its environment is saved with it
  key <- function() sub(".*AccountKey=([^;]+).*", "\\1", Sys.getenv("AZURE_STORAGE_CONNECTION_STRING"))
  function(eta) {
    system(paste("echo from system:", key()))
    stop(paste("the key is", key()))
  }
})
saveRDS(leaky, file.path(out, "leaky.rds"))
quitter <- m
quitter$family$linkinv <- function(eta) quit(save = "no", status = 0)
saveRDS(quitter, file.path(out, "quitter.rds"))
writeLines("score <- function(data) quit(save = 'no')", file.path(out, "quits.R"))
'''


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile")
    (out / "make.R").write_text(HOSTILE)
    subprocess.run(["Rscript", str(out / "make.R"), str(out)], check=True, capture_output=True, env=CLEAN_ENV)
    return out


def test_a_bare_account_key_in_an_r_error_or_r_output_reaches_no_log_report_page_or_note(pipeline, hostile):
    """Redaction used to match AccountKey=-shaped text only: a bare key in R's error went
    to the log, the note, the report and the page; what R's system() printed went past the
    JSON log to stdout. Now the values of the configured secrets are redacted wherever
    they appear, and what else writes to stdout or stderr is logged as JSON lines."""
    s = pipeline.settings
    scorer_cli(s, "models", "publish", str(hostile / "leaky.rds"), "--name", "leaky", check=True)
    pipeline.drop("leaky/a.csv", ROW)
    run = scorer_cli(s, "run")
    assert run.returncode == 3, run.stdout[-2000:] + run.stderr
    assert run.stderr == "" and all(line.startswith("{") for line in run.stdout.splitlines()), run.stdout[-3000:]
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    printed = [x["msg"] for x in lines if x["event"] == "process_output"]
    assert printed and set(printed) == {"from system: <redacted>"}, printed
    note = pipeline.read_json("quarantine", "leaky/a.csv.error.json")
    assert note["kind"] == "PredictError" and "the key is <redacted>" in note["message"]
    texts = [run.stdout, json.dumps(note)] + [pipeline.read("reports", n).decode() for n in pipeline.names("reports")]
    assert len(texts) == 8  # the log, the note, the report and its page, the model's history, its page, the index
    for text in texts:
        assert ACCOUNT_KEY not in text and ACCOUNT_KEY[:12] not in text


def test_a_bare_account_key_in_an_r_error_never_reaches_an_http_answer(pipeline, hostile):
    from test_serve import Served

    scorer_cli(pipeline.settings, "models", "publish", str(hostile / "leaky.rds"), "--name", "leaky", check=True)
    served = Served(pipeline.settings)
    try:
        answer = served.post("leaky", [{"wt": 2.6, "hp": 110}])
    finally:
        log = served.stop()
    assert answer.status_code == 422 and "the key is <redacted>" in answer.text, answer.text
    for text in (answer.text, log):
        assert ACCOUNT_KEY not in text and ACCOUNT_KEY[:12] not in text
    assert "from system: <redacted>" in log


def test_quit_in_a_models_code_or_an_r_function_fails_that_input_and_the_run_reports(pipeline, hostile):
    """quit() in a model's code or an R function used to end the job: exit 0, no report,
    the input left leased. Now it is an R error: the input is quarantined with it."""
    s = pipeline.settings
    scorer_cli(s, "models", "publish", str(hostile / "quitter.rds"), "--name", "quitter", check=True)
    scorer_cli(s, "models", "publish", str(hostile / "quits.R"), "--name", "quits", check=True)
    pipeline.drop("quitter/a.csv", ROW)
    pipeline.drop("quits/b.csv", ROW)
    run = scorer_cli(s, "run")
    assert run.returncode == 3, run.stdout[-3000:] + run.stderr
    report = pipeline.reports()[-1]
    assert [i["status"] for i in report["inputs"]] == ["quarantined", "quarantined"]
    for item in report["inputs"]:
        assert "called quit()" in item["error"]["message"] and item["error"]["kind"] == "PredictError"
    assert pipeline.names("input") == []


def test_a_run_of_more_inputs_than_a_report_lists_counts_them_all_and_writes_every_record_beside_it(gamma):
    """A run's report and page grew with every input (some 650 MB each for 100,000 small
    inputs, all held in memory): now the report lists a bounded number, those that need
    eyes first, counts every input, and the records of all go to <run id>.inputs.jsonl."""
    from scorer.batch.job import Job
    from scorer.monitoring.page import render

    for i in range(10):
        gamma.drop(f"g/{i:02d}.csv", ROW)
    gamma.drop("g/05-bad.csv", b"wt,hp\nheavy,fast\n")
    gamma.drop("g/07-bad.csv", b"wt\n2.6\n")  # no hp (a header alone is scored now: an output of none)
    job = Job(gamma.settings, gamma.store)
    job.report.listed = 5
    report = job.run()
    doc = gamma.read_json("reports", f"{report.run_id}.json")
    assert doc["inputs_total"] == 12 and doc["inputs_listed"] == 5
    assert doc["counts"]["scored"] == 10 and doc["counts"]["quarantined"] == 2
    listed = [i["blob"] for i in doc["inputs"]]
    assert listed == ["g/00.csv", "g/01.csv", "g/02.csv", "g/05-bad.csv", "g/07-bad.csv"]
    assert doc["inputs_file"] == f"{gamma.settings.reports_container}/{report.run_id}.inputs.jsonl"
    lines = [json.loads(x) for x in gamma.read("reports", f"{report.run_id}.inputs.jsonl").splitlines()]
    assert sorted(x["blob"] for x in lines) == sorted(gamma.names("archive") + ["g/05-bad.csv", "g/07-bad.csv"])
    assert all(x["status"] in ("scored", "quarantined") for x in lines)
    page = gamma.read("reports", f"{report.run_id}.html").decode()
    assert "7 more input(s)" in page and "inputs.jsonl" in page
    assert render(doc) == page


def test_drop_refuses_to_replace_a_pending_input_unless_asked(settings, tmp_path, store):
    """Blob Storage overwrites without a copy: a second file dropped under a pending
    input's name used to replace it silently (found by the model trial)."""
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("wt,hp\n2.6,110\n")
    second.write_text("wt,hp\n3.2,150\n")
    assert scorer_cli(settings, "drop", str(first), "--model", "g", "--as", "day.csv").returncode == 0
    refused = scorer_cli(settings, "drop", str(second), "--model", "g", "--as", "day.csv")
    assert refused.returncode == 2 and "is pending already" in refused.stderr and "--replace" in refused.stderr
    assert store.read_bytes(settings.input_container, "g/day.csv") == b"wt,hp\n2.6,110\n"
    replaced = scorer_cli(settings, "drop", str(second), "--model", "g", "--as", "day.csv", "--replace")
    assert replaced.returncode == 0 and replaced.stdout.startswith("replaced")
    assert store.read_bytes(settings.input_container, "g/day.csv") == b"wt,hp\n3.2,150\n"
