"""R scoring functions and forecasting models (issue 16), through the blob path with
real Azurite and R: a script that fits a forecast on each file, a saved prophet model,
an ets forecast with its horizon from the card, and every way a function can fail."""

from __future__ import annotations

import io
import json
import math
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from scorer.errors import ConfigError, ModelError

from conftest import CLEAN_ENV, ROOT, env_for, scorer_cli

EXAMPLES = ROOT / "examples"


def series(days: int = 120) -> bytes:
    """A daily series with a weekly cycle: date,y."""
    import datetime as dt
    start = dt.date(2024, 1, 1)
    rows = [f"{start + dt.timedelta(days=i)},{50 + 8 * math.sin(i * 2 * math.pi / 7) + 0.05 * i:.6f}"
            for i in range(days)]
    return ("date,y\n" + "\n".join(rows) + "\n").encode()


def rscript(code: str, *args: str) -> str:
    done = subprocess.run(["Rscript", "-e", code, *args], capture_output=True, text=True,
                          env=dict(CLEAN_ENV, TZ="UTC"), timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def script(tmp_path, body: str, name: str = "fn.R"):
    path = tmp_path / name
    path.write_text(body)
    return path


@pytest.mark.slow
def test_a_forecast_fitted_on_each_file_equals_the_same_code_in_plain_rscript(pipeline, tmp_path):
    card = pipeline.publish(EXAMPLES / "forecast_prophet.R", "daily", params=["horizon=28"])
    assert card["kind"] == "function" and card["params"] == [{"name": "horizon", "type": "double", "value": 28.0}]
    assert card["top_packages"] == ["prophet"] and card["packages"]["prophet"]
    data = series()
    pipeline.drop("daily/shop1.csv", data)
    report = pipeline.run()
    item = report.inputs[0]
    assert item.status == "scored", item.error
    assert (item.rows_read, item.rows_written, item.rows_scored) == (120, 28, None)
    got = pacsv.read_csv(io.BytesIO(pipeline.read("output", "daily/shop1.csv")))
    assert got.column_names == ["date", "prediction", "lower", "upper"] and got.num_rows == 28
    (tmp_path / "shop1.csv").write_bytes(data)
    expected = json.loads(rscript(
        "args <- commandArgs(TRUE); source(args[1]); d <- read.csv(args[2]); d$date <- as.Date(d$date); "
        "r <- score(d, horizon = 28); cat(jsonlite::toJSON(list(date = format(r$date), p = r$prediction), digits = NA))",
        str(EXAMPLES / "forecast_prophet.R"), str(tmp_path / "shop1.csv")))
    assert [str(d) for d in got["date"].to_pylist()] == expected["date"]
    for g, e in zip(got["prediction"].to_pylist(), expected["p"]):
        assert math.isclose(g, e, rel_tol=1e-9), (g, e)


def test_an_ets_forecast_takes_its_horizon_from_the_card(pipeline, tmp_path):
    pipeline.publish(EXAMPLES / "ets_forecast.R", "ets", params=["h=6"])
    ys = [100 + 10 * math.sin(i * 2 * math.pi / 12) + i for i in range(48)]
    pipeline.drop("ets/m.csv", ("y\n" + "\n".join(f"{y:.6f}" for y in ys) + "\n").encode())
    assert pipeline.run().inputs[0].status == "scored"
    got = pacsv.read_csv(io.BytesIO(pipeline.read("output", "ets/m.csv")))
    assert got["step"].to_pylist() == [1, 2, 3, 4, 5, 6]
    (tmp_path / "m.csv").write_text("y\n" + "\n".join(f"{y:.6f}" for y in ys) + "\n")
    expected = json.loads(rscript("args <- commandArgs(TRUE); source(args[1]); r <- score(read.csv(args[2]), h = 6); "
                                  "cat(jsonlite::toJSON(r$prediction, digits = NA))",
                                  str(EXAMPLES / "ets_forecast.R"), str(tmp_path / "m.csv")))
    for g, e in zip(got["prediction"].to_pylist(), expected):
        assert math.isclose(g, e, rel_tol=1e-9)


@pytest.fixture(scope="module")
def prophet_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("prophet")
    subprocess.run(["Rscript", str(EXAMPLES / "prophet_model.R"), str(out)], check=True, capture_output=True,
                   env=dict(CLEAN_ENV, TZ="UTC"), timeout=300)
    return out


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_saved_prophet_model_scores_future_dates_with_no_package_named(pipeline, prophet_model, fmt):
    card = pipeline.publish(prophet_model / "prophet.rds", "visits", output_columns=["yhat", "yhat_lower", "yhat_upper"])
    assert "prophet" in card["packages"] and card["top_packages"] == ["prophet"]
    # No schema (prophet keeps none R can read), so no test prediction at publish.
    assert card["input_schema"] is None and card["prediction_columns"] is None
    future = pacsv.read_csv(prophet_model / "future.csv", convert_options=pacsv.ConvertOptions(
        column_types={"ds": pa.date32()}))
    if fmt == "parquet":
        buf = io.BytesIO()
        pq.write_table(future, buf)
        data = buf.getvalue()
    else:
        data = (prophet_model / "future.csv").read_bytes()
    pipeline.drop(f"visits/next.{fmt}", data)
    assert pipeline.run().inputs[0].status == "scored"
    raw = pipeline.read("output", f"visits/next.{fmt}")
    got = pq.read_table(io.BytesIO(raw)) if fmt == "parquet" else pacsv.read_csv(io.BytesIO(raw))
    assert got.column_names == ["ds", "prediction_yhat", "prediction_yhat_lower", "prediction_yhat_upper"]
    expected = json.loads(rscript(
        "args <- commandArgs(TRUE); suppressMessages(library(prophet)); m <- readRDS(args[1]); "
        "f <- read.csv(args[2]); f$ds <- as.Date(f$ds); p <- predict(m, f); "
        "cat(jsonlite::toJSON(list(yhat = p$yhat, ds = format(p$ds, '%Y-%m-%d')), digits = NA))",
        str(prophet_model / "prophet.rds"), str(prophet_model / "future.csv")))
    for g, e in zip(got["prediction_yhat"].to_pylist(), expected["yhat"]):
        assert math.isclose(g, e, rel_tol=1e-9)


def test_prophets_date_time_result_stays_a_date_time(pipeline, prophet_model):
    """prediction_ds, a POSIXct in R's result, is a timestamp in CSV and Parquet, not
    seconds since 1970."""
    pipeline.publish(prophet_model / "prophet.rds", "visits", output_columns=["ds", "yhat"])
    pipeline.drop("visits/next.csv", (prophet_model / "future.csv").read_bytes())
    buf = io.BytesIO()
    pq.write_table(pacsv.read_csv(prophet_model / "future.csv"), buf)
    pipeline.drop("visits/next.parquet", buf.getvalue())
    assert {i.status for i in pipeline.run().inputs} == {"scored"}
    table = pq.read_table(io.BytesIO(pipeline.read("output", "visits/next.parquet")))
    assert pa.types.is_timestamp(table.schema.field("prediction_ds").type)
    assert str(table["prediction_ds"][0].as_py())[:10] == "2024-06-29"
    first = pipeline.read("output", "visits/next.csv").decode().splitlines()[1]
    assert "2024-06-29 00:00:00" in first and "1719" not in first


def test_publish_names_only_the_top_level_debian_package(settings, prophet_model, tmp_path):
    listing = tmp_path / "r-packages.txt"
    listing.write_text("r-base-core\n")
    out = scorer_cli(settings, "models", "publish", str(prophet_model / "prophet.rds"), "--name", "v",
                     "--package-list", str(listing))
    assert out.returncode == 0, out.stderr
    (line,) = [w for w in out.stderr.splitlines() if "does not list" in w]
    assert line.count("r-cran-") == 1 and "r-cran-prophet" in line


def test_a_function_that_returns_no_data_frame_or_stops_is_quarantined_with_rs_message(pipeline, tmp_path):
    pipeline.publish(script(tmp_path, "score <- function(data) function(x) x\n", "closure.R"), "closure")
    pipeline.publish(script(tmp_path, "check <- function(d) {\n  stop('no column price')\n}\n"
                                      "score <- function(data) {\n  check(data)\n}\n", "stops.R"), "stops")
    pipeline.publish(script(tmp_path, "score <- function(data) {\n  old <- options(warn = 2)\n  on.exit(options(old))\n"
                                      "  data.frame(y = as.numeric(data$x))\n}\n", "strict.R"), "strict")
    pipeline.publish(script(tmp_path, "score <- function(data) data.frame(y = as.numeric(data$x))\n", "lax.R"), "lax")
    pipeline.drop("closure/a.csv", b"x\n1\n")
    pipeline.drop("stops/a.csv", b"x\n1\n")
    pipeline.drop("strict/a.csv", b"x\n1\nabc\n")
    pipeline.drop("lax/a.csv", b"x\n1\nabc\n")
    report = pipeline.run()
    # a warning the script turns into an error (options(warn = 2)) quarantines; otherwise it is reported
    note = pipeline.read_json("quarantine", "strict/a.csv.error.json")
    assert "NAs introduced by coercion" in note["message"] and "strict.R" in note["message"]
    lax = next(i for i in report.inputs if i.blob == "lax/a.csv")
    assert lax.status == "scored" and any("NAs introduced by coercion" in w for w in lax.warnings), lax
    note = pipeline.read_json("quarantine", "closure/a.csv.error.json")
    assert note["kind"] == "PredictError" and "not a data frame" in note["message"] and note["what_to_do"]
    note = pipeline.read_json("quarantine", "stops/a.csv.error.json")
    assert "no column price" in note["message"] and "stops.R#2" in note["message"]
    assert note["rows_read"] == 1


def test_a_script_with_a_syntax_error_or_without_score_is_refused_at_publish(pipeline, tmp_path):
    with pytest.raises(ModelError, match=r"does not parse: .*bad.R:2:"):
        pipeline.publish(script(tmp_path, "x <- 1\nscore <- function(data {\n  data\n}\n", "bad.R"), "bad")
    with pytest.raises(ModelError, match=r"defines no function score"):
        pipeline.publish(script(tmp_path, "fit <- function(data) data\n", "noscore.R"), "noscore")
    with pytest.raises(ModelError, match=r"running the script failed: .*not here.*boom.R#1"):
        pipeline.publish(script(tmp_path, "stop('not here')\n", "boom.R"), "boom")
    with pytest.raises(ConfigError, match="score\\(\\) takes no argument"):
        pipeline.publish(script(tmp_path, "score <- function(data, h) data\n", "h.R"), "h", params=["horizon=3"])
    assert pipeline.names("models") == []


def test_an_input_above_the_functions_size_cap_is_quarantined(pipeline, tmp_path):
    pipeline.publish(script(tmp_path, "score <- function(data) data\n"), "echo")
    pipeline.drop("echo/big.csv", b"x\n" + b"1234567\n" * 20_000)
    report = pipeline.run(max_function_bytes=50_000)
    note = pipeline.read_json("quarantine", "echo/big.csv.error.json")
    assert note["kind"] == "InputFormatError" and "SCORER_MAX_FUNCTION_BYTES" in note["message"]
    assert report.exit_code == 3


def test_files_published_with_a_function_are_in_its_working_directory(pipeline, tmp_path):
    lookup = tmp_path / "rates.csv"
    lookup.write_text("code,rate\nA,0.1\nB,0.2\n")
    fn = script(tmp_path, "rates <- read.csv('rates.csv')\n"
                          "score <- function(data) merge(data, rates, by = 'code')\n", "join.R")
    card = pipeline.publish(fn, "join", files=[lookup])
    assert [f["name"] for f in card["files"]] == ["rates.csv"]
    pipeline.drop("join/a.csv", b"code,amount\nB,5\nA,7\n")
    assert pipeline.run().inputs[0].status == "scored"
    got = pacsv.read_csv(io.BytesIO(pipeline.read("output", "join/a.csv")))
    assert got.to_pydict() == {"code": ["A", "B"], "amount": [7, 5], "rate": [0.1, 0.2]}


@pytest.mark.slow
def test_sigkill_during_score_leaves_the_input_pending_and_a_rerun_scores_it_once(pipeline, tmp_path):
    pipeline.publish(script(tmp_path, "score <- function(data) {\n  Sys.sleep(4)\n  data\n}\n", "slow.R"), "slow")
    pipeline.drop("slow/a.csv", b"x\n1\n2\n")
    proc = subprocess.Popen([sys.executable, "-m", "scorer", "run"], env=env_for(pipeline.settings),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if '"input_claimed"' in line:
            break
    time.sleep(1.5)  # inside score()'s Sys.sleep
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert pipeline.names("input") == ["slow/a.csv"] and pipeline.names("output") == []
    time.sleep(pipeline.settings.lease_seconds + 1)  # the killed run's claim lapses
    report = pipeline.run()
    assert report.inputs[0].status == "scored"
    assert pipeline.names("output") == ["slow/a.csv"] and pipeline.names("input") == []


def test_a_function_that_draws_random_numbers_writes_the_same_output_on_every_rerun(pipeline, tmp_path):
    """R's seed is set from the input's name before score(): a rerun of the same file
    (or the same file in another container) writes the same draws; another file gets others."""
    pipeline.publish(script(tmp_path, "score <- function(data) data.frame(draw = rnorm(nrow(data)))\n"), "noise")
    pipeline.drop("noise/a.csv", b"x\n1\n2\n3\n")
    pipeline.drop("noise/b.csv", b"x\n1\n2\n3\n")
    assert pipeline.run().exit_code == 0
    first = {n: pipeline.read("output", f"noise/{n}.csv") for n in "ab"}
    assert first["a"] != first["b"]
    pipeline.drop("noise/a.csv", b"x\n1\n2\n3\n")
    assert pipeline.run().exit_code == 0
    assert pipeline.read("output", "noise/a.csv") == first["a"]


def test_the_glmnet_example_scores_with_the_model_published_beside_it(pipeline, tmp_path):
    fit = tmp_path / "cv_fit.rds"
    rscript("args <- commandArgs(TRUE); suppressMessages(library(glmnet)); set.seed(1); "
            "x <- matrix(rnorm(300), 100, dimnames = list(NULL, c('a', 'b', 'c'))); y <- x %*% c(1, -2, 0.5) + rnorm(100); "
            "saveRDS(cv.glmnet(x, y, nfolds = 5), args[1])", str(fit))
    card = pipeline.publish(EXAMPLES / "glmnet_score.R", "net", files=[fit])
    assert card["top_packages"] == ["glmnet"]
    pipeline.drop("net/a.csv", b"id,c,a,b\nr1,0.5,1,2\nr2,-1,0,0.25\n")
    assert pipeline.run().inputs[0].status == "scored"
    got = pacsv.read_csv(io.BytesIO(pipeline.read("output", "net/a.csv")))
    assert got.column_names == ["id", "c", "a", "b", "prediction"]
    expected = json.loads(rscript(
        "args <- commandArgs(TRUE); suppressMessages(library(glmnet)); fit <- readRDS(args[1]); "
        "x <- cbind(a = c(1, 0), b = c(2, 0.25), c = c(0.5, -1)); "
        "cat(jsonlite::toJSON(as.vector(predict(fit, newx = x, s = 'lambda.min')), digits = NA))", str(fit)))
    for g, e in zip(got["prediction"].to_pylist(), expected):
        assert math.isclose(g, e, rel_tol=1e-12)


@pytest.mark.slow
def test_sigterm_during_score_finishes_the_call_then_stops_with_130_leaving_the_input_pending(pipeline, tmp_path):
    """R cannot be interrupted inside score(): the stop is seen when the call returns, the
    output is not committed, and the input stays for the next run."""
    pipeline.publish(script(tmp_path, "score <- function(data) {\n  Sys.sleep(3)\n  data\n}\n", "slow.R"), "slow")
    pipeline.drop("slow/a.csv", b"x\n1\n2\n")
    proc = subprocess.Popen([sys.executable, "-m", "scorer", "run"], env=env_for(pipeline.settings),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if '"input_claimed"' in line:
            break
    time.sleep(1)  # inside score()'s Sys.sleep
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    assert pipeline.names("input") == ["slow/a.csv"] and pipeline.names("output") == []
    report = pipeline.run()  # the stopped run released its claim: no wait for a lease
    assert report.inputs[0].status == "scored" and pipeline.names("input") == []


def test_an_r_function_answers_over_http_as_it_scores_a_file(pipeline, tmp_path):
    """A request's rows are the file score(data, ...) gets (plumber's and vetiver's users
    call their R functions over HTTP): the same data frame as the batch output for the
    same rows, with the card's parameters and --text columns; R's error is a 422 naming
    the script's line; a draw is the same on every request."""
    from test_serve import Served, conforms

    fn = script(tmp_path, "score <- function(data, k) {\n"
                          "  if (any(data$x < 0)) stop('x must not be negative')\n"
                          "  data.frame(zip = data$zip, x_k = data$x * k, n = nrow(data))\n}\n", "times.R")
    pipeline.publish(fn, "times", params=["k=2.5"], text=["zip"])
    pipeline.publish(script(tmp_path, "score <- function(data) data.frame(draw = rnorm(nrow(data)))\n"), "noise")
    body = b"zip,x\n00501,1.5\n02134,4\n"
    pipeline.drop("times/a.csv", body)
    assert pipeline.run().exit_code == 0
    batch = pipeline.read("output", "times/a.csv")
    served = Served(pipeline.settings)
    try:
        resp = served.post("times", body, headers={"content-type": "text/csv", "accept": "text/csv"})
        assert resp.status_code == 200, resp.text
        assert resp.content.replace(b'"', b"") == batch.replace(b'"', b""), (resp.content, batch)
        resp = served.post("times", {"rows": [{"zip": "00501", "x": 1.5}, {"zip": "02134", "x": 4}]})
        got = conforms(resp, "/v1/models/{name}/predict", "post")
        assert got["predictions"] == [{"row": 1, "zip": "00501", "x_k": 3.75, "n": 2},
                                      {"row": 2, "zip": "02134", "x_k": 10.0, "n": 2}]
        assert got["rejected"] == []
        resp = served.post("times", {"rows": [{"zip": "1", "x": -1}]})
        err = conforms(resp, "/v1/models/{name}/predict", "post")
        assert resp.status_code == 422 and "x must not be negative" in err["error"]["message"], err
        draws = [served.post("noise", {"rows": [{"x": 1}, {"x": 2}]}).json()["predictions"] for _ in range(2)]
        assert draws[0] == draws[1] and draws[0][0]["draw"] != draws[0][1]["draw"]
    finally:
        log = served.stop()
    assert served.proc.returncode == 0 and "Traceback" not in log, log[-3000:]


def test_prophet_which_sorts_its_rows_by_ds_is_never_gathered(pipeline, prophet_model):
    """prophet's predict() sorts its rows by ds. Its card has no input schema (prophet keeps
    no formula), so publish cannot test whether predict() answers in the order given, and
    only models whose order was tested are gathered: a prophet model's calls never are.
    Found when inputs in flight were first gathered (issue 32): two files' rows came back
    interleaved by date (test_prophets_date_time_result_stays_a_date_time)."""
    from scorer.r.predict import PredictSpec

    card = pipeline.publish(prophet_model / "prophet.rds", "visits", output_columns=["ds", "yhat"])
    assert card["rowwise_checked"] is False and not PredictSpec.from_card(card).gather
