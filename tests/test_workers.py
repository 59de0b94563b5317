"""predict() on every core (issue 12): R worker processes beside the job's own R give
byte-identical outputs and the same rejected rows, in input order, with 1, 2 and 3 R
sessions; a worker that dies leaves the input pending."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from scorer.r.pool import decode_columns, decode_results, encode_columns, encode_results
from scorer.data.frames import RColumn

from conftest import CLEAN_ENV


@pytest.fixture(scope="module")
def forest(tmp_path_factory):
    """A randomForest classifier (slow enough per row that workers get batches before
    the input is done) and an input of 40,000 rows with rows to reject: an unseen
    level and a bad number."""
    d = tmp_path_factory.mktemp("workers")
    code = ("args <- commandArgs(TRUE); set.seed(2); n <- 2000; "
            "d <- data.frame(x1 = rnorm(n), x2 = runif(n), g = factor(sample(c('a', 'b', 'c'), n, TRUE))); "
            "d$y <- factor(ifelse(d$x1 + d$x2 + (d$g == 'b') + rnorm(n, 0, .5) > 1, 'yes', 'no')); "
            "saveRDS(randomForest::randomForest(y ~ x1 + x2 + g, d, ntree = 300), file.path(args[1], 'rf.rds'))")
    subprocess.run(["Rscript", "-e", code, str(d)], check=True, env=CLEAN_ENV, capture_output=True)
    rng = np.random.default_rng(5)
    n = 40_000
    rows = [f"{a:.5f},{b:.5f},{g}" for a, b, g in zip(rng.normal(size=n), rng.uniform(size=n),
                                                     rng.choice(["a", "b", "c"], n))]
    rows[17] = "0.1,0.2,zzz"
    rows[31234] = "oops,0.2,a"
    (d / "in.csv").write_text("x1,x2,g\n" + "\n".join(rows) + "\n")
    (d / "big.csv").write_text("x1,x2,g\n" + "\n".join(rows * 6) + "\n")
    return d


def score_with(pipeline, forest, sessions: int, name: str):
    pipeline.drop(f"rf/{name}.csv", (forest / "in.csv").read_bytes())
    report = pipeline.run(inputs_in_flight=1, r_workers=sessions, r_workers_after=0.0, batch_rows=500)
    (item,) = report.inputs
    assert item.status == "scored", item.error
    out = pipeline.read("output", f"rf/{name}.csv")
    rejected = pipeline.read("output", f"rf/{name}.csv.rejected.csv")
    return item, out, rejected


@pytest.mark.slow
def test_one_two_and_three_r_sessions_write_the_same_bytes(pipeline, forest, caplog):
    pipeline.publish(forest / "rf.rds", "rf", predict_type="prob")
    one, out1, rej1 = score_with(pipeline, forest, 1, "one")
    caplog.set_level("INFO", logger="scorer.pool")
    caplog.clear()
    two, out2, rej2 = score_with(pipeline, forest, 2, "two")
    assert any(getattr(r, "event", None) == "r_workers_starting" for r in caplog.records)
    three, out3, rej3 = score_with(pipeline, forest, 3, "three")
    assert out1 == out2 == out3
    assert rej1 == rej2 == rej3
    assert (one.rows_scored, one.rows_rejected) == (two.rows_scored, two.rows_rejected) == (39_998, 2)
    assert one.r_sessions is None  # the job's R alone
    assert two.r_sessions["1"] > 0 and three.r_sessions["1"] > 0 and three.r_sessions["2"] > 0, three.r_sessions
    lines = rej1.decode().splitlines()
    assert [ln.split(",")[0] for ln in lines[1:]] == ["18", "31235"]  # input row numbers, in order
    # row order kept: the output's x1 column is the input's, minus the rejected rows
    inp = [ln.split(",")[0] for ln in (forest / "in.csv").read_text().splitlines()[1:]]
    got = [ln.split(",")[0].strip('"') for ln in out3.decode().splitlines()[1:]]
    assert got == [v for i, v in enumerate(inp) if i not in (17, 31234)]


def test_workers_start_only_when_a_batch_is_slow_never_for_a_fast_model_or_a_small_input(pipeline, forest, caplog):
    pipeline.publish(forest / "rf.rds", "rf", predict_type="prob")
    pipeline.drop("rf/a.csv", (forest / "in.csv").read_bytes())
    caplog.set_level("INFO", logger="scorer.pool")
    caplog.clear()
    pipeline.run(inputs_in_flight=1, r_workers=2, r_workers_after=3600.0, batch_rows=500)
    assert not any(getattr(r, "event", None) == "r_workers_starting" for r in caplog.records)
    # a small input: its 5 rows take R a few ms, however slow a full batch would be
    pipeline.drop("rf/small.csv", "\n".join((forest / "in.csv").read_text().splitlines()[:6]).encode() + b"\n")
    report = pipeline.run(inputs_in_flight=1, r_workers=2, r_workers_after=0.05)
    assert report.inputs[0].rows_scored == 5
    assert not any(getattr(r, "event", None) == "r_workers_starting" for r in caplog.records)


@pytest.mark.slow
def test_the_workers_of_one_input_score_the_next_input_of_the_model_without_starting_again(pipeline, forest, caplog):
    """Workers take about a second to start: a run's inputs (and a split input's parts)
    of one model share them."""
    pipeline.publish(forest / "rf.rds", "rf", predict_type="prob")
    for name in ("a", "b", "c"):
        pipeline.drop(f"rf/{name}.csv", (forest / "in.csv").read_bytes())
    caplog.set_level("INFO", logger="scorer.pool")
    caplog.clear()
    report = pipeline.run(inputs_in_flight=1, r_workers=2, r_workers_after=0.0, batch_rows=500)
    assert [r.workers for r in caplog.records if getattr(r, "event", None) == "r_workers_starting"] == [1]
    assert [i.status for i in report.inputs] == ["scored"] * 3
    assert all(i.r_sessions["1"] > 0 for i in report.inputs), [i.r_sessions for i in report.inputs]
    assert pipeline.read("output", "rf/a.csv") == pipeline.read("output", "rf/b.csv") == pipeline.read("output", "rf/c.csv")


@pytest.mark.slow
def test_a_worker_that_dies_leaves_the_input_pending(pipeline, forest):
    """A worker killed while it predicts (it is busy all the time on this input: a
    batch takes it some 50 ms, and a new one comes as soon as it answers) fails the
    input as an internal error: left pending, no output, retried by the next run."""
    pipeline.publish(forest / "rf.rds", "rf", predict_type="prob")
    pipeline.drop("rf/a.csv", (forest / "big.csv").read_bytes())
    killed = []

    def kill_a_worker():  # the first R worker process this test's job starts, once it is working
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = subprocess.run(["pgrep", "-f", "-P", str(os.getpid()), "scorer.r.pool"], capture_output=True, text=True)
            pids = [int(p) for p in out.stdout.split()]
            if pids:
                time.sleep(2.5)  # started R, loaded the model, and taking batches
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.05)

    t = threading.Thread(target=kill_a_worker)
    t.start()
    report = pipeline.run(inputs_in_flight=1, r_workers=2, r_workers_after=0.0, batch_rows=500)
    t.join()
    assert killed
    (item,) = report.inputs
    assert item.status == "left_pending" and report.exit_code == 1, item
    assert "R worker 1 ended unexpectedly" in item.error["message"]
    assert pipeline.names("input") == ["rf/a.csv"] and pipeline.names("output") == []
    again = pipeline.run(inputs_in_flight=1, r_workers=1)
    assert again.inputs[0].status == "scored" and again.inputs[0].rows_scored == 6 * 39_998


def test_columns_and_results_cross_the_pipe_unchanged():
    cols = {"n": RColumn("numeric", np.array([1.5, np.nan])), "f": RColumn("factor", np.array([2, -(2**31)], np.int32),
                                                                           ["a", "b"], ordered=True),
            "t": RColumn("posixct", np.array([0.0, 1.5]), tz="Europe/Paris"), "c": RColumn("character", ["x", None])}
    back, n = decode_columns(encode_columns(cols, 2))
    assert n == 2 and list(back) == list(cols)
    for k in cols:
        a, b = cols[k], back[k]
        assert (a.kind, a.levels, a.ordered, a.tz) == (b.kind, b.levels, b.ordered, b.tz)
        if a.kind == "character":
            assert a.values == b.values
        else:
            np.testing.assert_array_equal(a.values, b.values)
    import pyarrow as pa
    res = [("", pa.array([1.0, None])), ("", pa.array(["p", "q"]))]
    assert [(n, a.to_pylist()) for n, a in decode_results(encode_results(res))] == [(n, a.to_pylist()) for n, a in res]
