"""One large input across container groups (issue 12): several `scorer run` processes,
as the groups of one run, score the parts of one input, and the output is the one a
single process writes; a killed process's part is taken over; a CSV whose quoted field
spans lines is scored whole, saying why. Real Azurite, real R, real processes."""

from __future__ import annotations

import io
import json
import random
import signal
import subprocess
import sys
import time

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from conftest import env_for

SPLIT = {"SCORER_SPLIT_BYTES": "60000"}  # parts of about 60 kB: a dozen for the test's file


def big_csv(rows: int = 30_000, seed: int = 3, quoted_newline: bool = False) -> bytes:
    rng = random.Random(seed)
    lines = ["age,parity,education,spontaneous,induced"]
    for i in range(rows):
        edu = rng.choice(["0-5yrs", "6-11yrs", "12+ yrs"])
        if i in (17, 12_345, 29_998):
            edu = "phd"  # rejected: a level the model never saw
        lines.append(f"{rng.randint(21, 44)},{rng.randint(1, 6)},{edu},{rng.randint(0, 2)},{rng.randint(0, 2)}")
    if quoted_newline:
        lines[20_000] = '30,2,"6-11\nyrs",1,0'
    return ("\n".join(lines) + "\n").encode()


def run_jobs(settings, n: int, **env) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-m", "scorer", "run"], env=env_for(settings, **env),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(n)]


def finish(procs: list[subprocess.Popen]) -> list[str]:
    return [p.communicate(timeout=300)[0] for p in procs]


def events(log: str) -> list[dict]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


@pytest.fixture
def infert(pipeline, fitted):
    pipeline.publish(fitted / "glm_binomial.rds", "infert", "response")
    return pipeline


def single_run(p, name: str, data: bytes) -> tuple[bytes, bytes]:
    """The output and rejected rows one process writes for this input, unsplit."""
    p.drop(f"infert/{name}", data)
    (log,) = finish(run_jobs(p.settings, 1))
    assert events(log)[-1]["exit_code"] == 0, log[-2000:]
    return p.read("output", f"infert/{name}"), p.read("output", f"infert/{name}.rejected.csv")


@pytest.mark.slow
def test_three_groups_score_one_csv_in_parts_and_write_the_bytes_one_process_writes(infert):
    data = big_csv()
    expected, expected_rejected = single_run(infert, "whole.csv", data)
    infert.drop("infert/big.csv", data)
    logs = finish(run_jobs(infert.settings, 3, SCORER_PARALLEL_JOBS="3", **SPLIT))
    assert infert.read("output", "infert/big.csv") == expected
    assert infert.read("output", "infert/big.csv.rejected.csv") == expected_rejected
    assert "infert/big.csv" not in infert.names("input") and "infert/big.csv" in infert.names("archive")
    assert [n for n in infert.names("output") if n.startswith("_parts/")] == []
    reports = infert.reports()[-3:]
    finished = [i for r in reports for i in r["inputs"] if i["blob"] == "infert/big.csv" and i["status"] == "scored"]
    assert len(finished) == 1, [i["status"] for r in reports for i in r["inputs"]]
    parts = finished[0]["parts"]
    assert len(parts) >= 8 and sum(p["rows_read"] for p in parts) == 30_000
    assert finished[0]["rows_rejected"] == 3 and finished[0]["rows_scored"] == 29_997
    scorers = {p["by"]["run_id"] for p in parts}
    assert len(scorers) >= 2, "the parts were all scored by one process"
    assert all(e["exit_code"] == 0 for log in logs for e in events(log) if e["event"] == "run_finished")


@pytest.mark.slow
def test_three_groups_score_one_parquet_in_parts_and_write_what_one_process_writes(infert):
    table = pacsv.read_csv(io.BytesIO(big_csv(seed=5)))
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=2_000)
    data = buf.getvalue()
    expected, expected_rejected = single_run(infert, "whole.parquet", data)
    infert.drop("infert/big.parquet", data)
    finish(run_jobs(infert.settings, 3, SCORER_PARALLEL_JOBS="3", SCORER_SPLIT_BYTES="20000"))
    got = pq.read_table(io.BytesIO(infert.read("output", "infert/big.parquet")))
    assert got.equals(pq.read_table(io.BytesIO(expected)))  # the same rows and values (row groups may differ)
    assert infert.read("output", "infert/big.parquet.rejected.csv") == expected_rejected
    report = next(i for r in infert.reports() for i in r["inputs"]
                  if i["blob"] == "infert/big.parquet" and i["status"] == "scored")
    assert len(report["parts"]) >= 3


@pytest.mark.slow
def test_a_csv_whose_quoted_field_spans_lines_is_scored_whole_saying_why(infert):
    data = big_csv(quoted_newline=True)
    expected, _ = single_run(infert, "whole.csv", data)
    infert.drop("infert/q.csv", data)
    finish(run_jobs(infert.settings, 3, SCORER_PARALLEL_JOBS="3", **SPLIT))
    if "infert/q.csv" in infert.names("input"):  # given up after every job had gone: the next run scores it whole
        finish(run_jobs(infert.settings, 1, SCORER_PARALLEL_JOBS="3", **SPLIT))
    assert infert.read("output", "infert/q.csv") == expected
    notes = [w for r in infert.reports() for i in r["inputs"] if i["blob"] == "infert/q.csv" for w in i["warnings"]]
    assert any("quoted field spans lines" in w for w in notes), notes
    assert [n for n in infert.names("output") if n.startswith("_parts/")] == []


@pytest.mark.parametrize("data,spans", [
    (b'x,"abcdef\nmore"\n', True),          # a quoted field across a line end
    (b'a,"b\n\nc"\n', True),
    (b'a,"b,c"\n1,"x"\n', False),          # quoted fields, each on its line
    (b'"a""b",c\n"d"\n', False),           # an escaped quote
    (b'a,b\n1,2\n', False),
])
def test_the_quote_check_is_the_same_wherever_the_reads_fall(data, spans):
    """A CSV part's quote check must not depend on where its reads end: a count carried
    over a read's end once hid a quoted field across lines (a wrong cut) and flagged
    files that had none."""
    from scorer.batch.split import QuoteCheck

    for size in range(1, len(data) + 1):
        check = QuoteCheck(io.BytesIO(data))
        buf = bytearray(size)
        while check.readinto(buf):
            pass
        assert check.odd_line is spans, f"reads of {size} bytes"


@pytest.mark.slow
def test_a_group_killed_mid_part_leaves_nothing_visible_and_the_rerun_scores_each_row_once(infert):
    data = big_csv(rows=60_000, seed=9)
    expected, expected_rejected = single_run(infert, "whole.csv", data)
    infert.drop("infert/k.csv", data)
    env = dict(SCORER_PARALLEL_JOBS="3", SCORER_LEASE_SECONDS="15", SCORER_BATCH_ROWS="2000", **SPLIT)
    procs = run_jobs(infert.settings, 3, **env)
    victim = procs[1]
    killed = False
    seen_partial = False
    deadline = time.monotonic() + 120
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        names = infert.names("output")
        if not killed and any(n.startswith("_parts/") and n.rsplit("/", 1)[1].startswith("part-") for n in names):
            time.sleep(0.3)  # the groups are in their parts
            victim.send_signal(signal.SIGKILL)
            killed = True
        if "infert/k.csv" in names:  # once visible, whole
            seen_partial |= infert.read("output", "infert/k.csv") != expected
        time.sleep(0.05)
    finish(procs)
    assert killed
    assert not seen_partial, "a partial output was visible"
    # the killed group's part is taken over once its lease lapses: by a rerun
    time.sleep(16)
    finish(run_jobs(infert.settings, 1, **env))
    assert infert.read("output", "infert/k.csv") == expected
    assert infert.read("output", "infert/k.csv.rejected.csv") == expected_rejected
    assert "infert/k.csv" in infert.names("archive") and "infert/k.csv" not in infert.names("input")
    assert [n for n in infert.names("output") if n.startswith("_parts/")] == []
