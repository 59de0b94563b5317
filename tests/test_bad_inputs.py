"""Bad inputs end in a clear message and a quarantined or partly rejected input:
never a traceback, never a lost file."""

from __future__ import annotations

import csv
import gzip
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scorer.models.registry import sha256_of

GOOD = b"age,parity,education,spontaneous,induced\n26,6,0-5yrs,2,1\n42,1,6-11yrs,1,0\n39,6,12+ yrs,0,0\n"


@pytest.fixture
def infert(pipeline, fitted):
    pipeline.publish(fitted / "glm_binomial.rds", "infert")
    return pipeline


def assert_quarantined(p, name: str, kind: str, *words: str) -> dict:
    """The input is in quarantine/ with its note, gone from input/, and the report says why."""
    report = p.run()
    assert report.exit_code == 3
    item = next(i for i in report.inputs if i.blob == name)
    assert item.status == "quarantined", item
    assert item.error["kind"] == kind, item.error
    text = item.error["message"] + " " + item.error.get("what_to_do", "")
    for w in words:
        assert w in text, f"{w!r} not in {text!r}"
    assert "Traceback" not in json.dumps(report.to_dict())
    assert name not in p.names("input")
    assert name in p.names("quarantine")
    note = p.read_json("quarantine", name + ".error.json")
    assert note["kind"] == kind and note["message"] == item.error["message"] and note["what_to_do"]
    assert name not in p.names("output")
    stored = p.read_json("reports", f"{report.run_id}.json")
    assert stored["inputs"][0]["error"]["kind"] == kind
    return item.error


def test_missing_column_is_named_and_input_quarantined(infert):
    infert.drop("infert/a.csv", b"age,parity,Education,spontaneous\n26,6,0-5yrs,2\n")
    err = assert_quarantined(infert, "infert/a.csv", "SchemaError", "'education'", "'induced'",
                             "Did you mean 'Education' for 'education'")
    assert err["columns"] == ["education", "induced"]


def test_csv_column_with_no_numbers_is_a_wrong_type(infert):
    infert.drop("infert/a.csv", b"age,parity,education,spontaneous,induced\nold,6,0-5yrs,2,1\nyoung,1,6-11yrs,1,0\n")
    assert_quarantined(infert, "infert/a.csv", "SchemaError", "'age'", "should hold numbers", "'old'")


def test_parquet_column_of_wrong_type_is_named(infert):
    t = pa.table({"age": pa.array([b"\x01", b"\x02"], pa.binary()), "parity": [1, 2],
                  "education": ["0-5yrs", "6-11yrs"], "spontaneous": [0, 1], "induced": [1, 0]})
    buf = io.BytesIO()
    pq.write_table(t, buf)
    infert.drop("infert/a.parquet", buf.getvalue())
    assert_quarantined(infert, "infert/a.parquet", "SchemaError", "'age'", "binary")


def test_unseen_level_and_bad_number_reject_rows_and_score_the_rest(infert):
    rows = GOOD + b"30,2,postgrad,1,1\n31,x2,6-11yrs,0,0\n" + b"35,2,6-11yrs,0,1\n" * 30
    infert.drop("infert/a.csv", rows)
    report = infert.run()
    assert report.exit_code == 0
    item = report.inputs[0]
    assert (item.rows_read, item.rows_scored, item.rows_rejected) == (35, 33, 2)
    assert item.rejected_rows.endswith("infert/a.csv.rejected.csv")
    rejected = list(csv.reader(io.StringIO(infert.read("output", "infert/a.csv.rejected.csv").decode())))
    assert rejected[0] == ["rejected_row", "rejected_column", "rejected_value", "rejected_reason",
                           "age", "parity", "education", "spontaneous", "induced"]
    assert rejected[1][:3] == ["4", "education", "postgrad"]
    assert rejected[1][3] == ("column 'education': level 'postgrad' was not seen when the model was fitted "
                              "(levels: 0-5yrs, 6-11yrs, 12+ yrs)")
    assert rejected[1][4:] == ["30", "2", "postgrad", "1", "1"]
    assert rejected[2][:4] == ["5", "parity", "x2", "column 'parity': 'x2' is not a number"]
    assert len(infert.read("output", "infert/a.csv").decode().splitlines()) == 34


def test_too_many_rejected_rows_quarantine_the_input_with_the_first_reasons(infert):
    infert.drop("infert/a.csv", GOOD + b"30,2,postgrad,1,1\n")
    err = assert_quarantined(infert, "infert/a.csv", "TooManyRejected", "1 of 4 rows", "SCORER_MAX_REJECTED_FRACTION")
    assert err["rejected_rows"][0]["row"] == 4 and "postgrad" in err["rejected_rows"][0]["reason"]


@pytest.mark.parametrize("name,data,words", [
    ("infert/empty.csv", b"", ["empty"]),
    ("infert/ragged.csv", GOOD + b"1,2,3,4,5,6,7\n", ["malformed CSV", "Expected 5 columns"]),
    ("infert/binary.csv", b"\x00\x01\x02PK\x03\x04" * 100, ["not a text file"]),
    ("infert/latin1.csv", "age,parity,education,spontaneous,induced\n26,6,0-5jähr,2,1\n".encode("latin-1"),
     ["not valid UTF-8"]),
    ("infert/broken.csv.gz", gzip.compress(GOOD, mtime=0)[:-12], ["gzip"]),
    ("infert/a.parquet", b"PAR1 not really", ["not a readable Parquet file"]),
    ("infert/notes.txt", b"hello", ["unsupported file type", ".parquet"]),
    ("stray.csv", GOOD, ["inputs must be under a model's folder"]),
])
def test_unreadable_files_are_quarantined_with_the_reason(infert, name, data, words):
    infert.drop(name, data)
    kind = "InputFormatError"
    assert_quarantined(infert, name, kind, *words)


def test_unknown_model_name_lists_the_published_ones(infert):
    infert.drop("nosuch/a.csv", GOOD)
    assert_quarantined(infert, "nosuch/a.csv", "ModelNotFound", "No model named 'nosuch'", "infert",
                       "scorer models publish")


def test_model_file_changed_after_publishing_fails_its_checksum(infert):
    infert.store.put_bytes(infert.settings.models_container, "infert/v1/model.rds", b"tampered")
    infert.drop("infert/a.csv", GOOD)
    assert_quarantined(infert, "infert/a.csv", "ModelLoadError", "sha256", "Publish the model again")


def test_corrupt_rds_with_a_matching_card_is_reported_by_r(pipeline, fitted):
    card = pipeline.publish(fitted / "glm_binomial.rds", "broken")
    truncated = (fitted / "glm_binomial.rds").read_bytes()[:200]
    s = pipeline.settings
    pipeline.store.put_bytes(s.models_container, "broken/v2/model.rds", truncated)
    pipeline.store.put_json(s.models_container, "broken/v2/card.json",
                            dict(card, version=2, sha256=sha256_of(truncated)))
    pipeline.drop("broken/a.csv", GOOD)
    assert_quarantined(pipeline, "broken/a.csv", "ModelLoadError", "version 2", "R could not read the .rds file")


def test_model_needing_an_uninstalled_package_names_the_package(pipeline, fitted):
    card = pipeline.publish(fitted / "glm_binomial.rds", "needy")
    s = pipeline.settings
    pipeline.store.put_json(s.models_container, "needy/v1/card.json",
                            dict(card, packages={"notARealPackage": "1.0"}), overwrite=True)
    pipeline.drop("needy/a.csv", GOOD)
    assert_quarantined(pipeline, "needy/a.csv", "ModelLoadError", "notARealPackage",
                       "r-cran-notarealpackage", "docker/r-packages.txt")


def test_missing_values_a_model_cannot_take_reject_only_those_rows(pipeline, fitted):
    # ranger's predict() stops on any missing value; randomForest's returns NA for
    # that row, which scorer keeps as NA (R's own answer). ranger's rows are predicted
    # alike alone or together, so the row R refuses is found by halving the batch, and
    # the reason is R's own
    pipeline.publish(fitted / "ranger.rds", "rf")
    rows = [b"Sepal.Length,Sepal.Width,Petal.Length,Petal.Width"] + [b"5.1,3.5,1.4,0.2"] * 30 + [b"6.3,,4.9,1.5"]
    pipeline.drop("rf/a.csv", b"\n".join(rows) + b"\n")
    report = pipeline.run()
    assert report.exit_code == 0, report.to_dict()
    assert (report.inputs[0].rows_scored, report.inputs[0].rows_rejected) == (30, 1)
    rejected = pipeline.read("output", "rf/a.csv.rejected.csv").decode()
    assert '31,"Sepal.Width","","R\'s predict() refused this row: Error: Missing data in columns: Sepal.Width."' \
        in rejected



def test_a_factor_column_of_doubles_matches_whole_numbers_and_rejects_the_rest():
    """A factor with levels "4", "6", "8" read from doubles (a Parquet column, JSON
    numbers): 4.0 is level "4"; 6.5, inf and 1e20 (which a cast to integer would wrap
    around) are unseen levels, each rejected with its value."""
    from scorer.data.frames import Field, prepare

    batch = pa.RecordBatch.from_pydict({"cyl": [4.0, 6.0, 6.5, float("inf"), 1e20, None, 8.0]})
    prep = prepare(batch, [Field("cyl", "factor", levels=["4", "6", "8"])], "a.parquet")
    assert [(row + 1, value) for row, _, value, _ in prep.rejects] == [(3, "6.5"), (4, "inf"), (5, "1e+20")]
    assert prep.columns["cyl"].values.tolist() == [1, 2, -2147483648, 3]  # NA stays a missing value


@pytest.mark.parametrize("kind", ["float64", "int64", "int32"])
def test_numbers_coded_against_whole_number_levels_as_the_text_route_codes_them(kind):
    """A column of numbers and levels that are whole numbers ("-3", "0", "2", ...) are
    coded without making text (Field.number_levels); the codes and the rejected rows are
    those of the route through text, which serves every other kind of level."""
    from scorer.data.frames import Field, prepare

    rng = np.random.default_rng(5)
    values = rng.integers(-5, 12, 400).astype(np.float64)
    if kind == "float64":
        values[::7] += 0.5
        values[::11] = np.nan
        values[3], values[5], values[9] = np.inf, 1e20, -0.0
    nulls = rng.random(400) < 0.1
    arr = pa.array(values if kind == "float64" else values.astype(kind), mask=nulls)
    levels = ["-3", "0", "2", "10", "7", "1"]
    fast, text = Field("x", "factor", levels=levels), Field("x", "factor", levels=levels)
    assert fast.number_levels is not None
    text.__dict__["number_levels"] = None  # the route every other kind of level takes
    got, want = (prepare(pa.RecordBatch.from_arrays([arr], ["x"]), [f], "a.parquet") for f in (fast, text))
    assert got.rejects == want.rejects and len(got.rejects) > 0
    assert got.columns["x"].values.tolist() == want.columns["x"].values.tolist()
    assert got.all_rows["x"].values.tolist() == want.all_rows["x"].values.tolist()
    assert [Field("x", "factor", levels=lv).number_levels for lv in (["01", "2"], ["1.0"], ["a"], [str(2**60)])] \
        == [None] * 4
