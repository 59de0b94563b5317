"""Every supported model family, scored through the blob path, equals R's own predict().

R fits each model on data that ships with R and writes its own predictions
(tests/r/fit_models.R); scorer publishes the .rds, scores the new data dropped
into input/, and the output must hold the input's columns followed by
predictions equal to R's to double precision, rows in the same order.
"""

from __future__ import annotations

import io
import math

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

CASES = ["glm_binomial", "glm_poisson", "glm_gamma", "lm", "loess", "rpart_class", "rpart_reg", "polr",
         "randomforest", "randomforest_prob", "ranger", "multinom", "lm_date_logical"]


def predict_types(fitted) -> dict[str, str | None]:
    out = {}
    for line in (fitted / "cases.txt").read_text().splitlines():
        parts = line.split()
        out[parts[0]] = parts[1] if len(parts) > 1 else None
    return out


def read_csv_text(data: bytes) -> pa.Table:
    """A CSV with every column as text; a blank line is a row of NA (one-column files)."""
    cols = pacsv.read_csv(io.BytesIO(data)).column_names
    return pacsv.read_csv(io.BytesIO(data), parse_options=pacsv.ParseOptions(ignore_empty_lines=False),
                          convert_options=pacsv.ConvertOptions(
                              column_types={c: pa.string() for c in cols}, strings_can_be_null=True))


def assert_same_predictions(got: pa.Table, expected: pa.Table, case: str) -> None:
    assert got.num_rows == expected.num_rows, case
    for name in expected.column_names:
        assert name in got.column_names, f"{case}: no column {name} in {got.column_names}"
        for i, (g, e) in enumerate(zip(got[name].to_pylist(), expected[name].to_pylist())):
            if e is None:
                assert g is None, f"{case} row {i + 1} {name}: expected NA, got {g}"
                continue
            try:
                ef = float(e)
            except ValueError:
                assert g == e, f"{case} row {i + 1} {name}"
                continue
            assert g is not None and math.isclose(float(g), ef, rel_tol=1e-12, abs_tol=1e-15), \
                f"{case} row {i + 1} {name}: {g} != {ef}"


@pytest.mark.parametrize("case", CASES)
def test_family_scored_through_blobs_equals_r_predict(pipeline, fitted, case):
    ptype = predict_types(fitted)[case]
    card = pipeline.publish(fitted / f"{case}.rds", case.replace("_", "-"), ptype)
    newdata = (fitted / f"{case}.csv").read_bytes()
    pipeline.drop(f"{card['name']}/batch/new.csv", newdata)

    report = pipeline.run()

    assert report.exit_code == 0, report.to_dict()
    item = report.inputs[0]
    assert (item.status, item.rows_scored, item.rows_rejected) == ("scored", item.rows_read, 0)
    got = read_csv_text(pipeline.read("output", f"{card['name']}/batch/new.csv"))
    inp = read_csv_text(newdata)
    # the input's columns come first, unchanged, then the predictions
    assert got.column_names[: inp.num_columns] == inp.column_names
    assert got.select(inp.column_names).to_pylist() == inp.to_pylist()
    assert_same_predictions(got, read_csv_text((fitted / f"{case}.expected.csv").read_bytes()), case)
    assert pipeline.names("input") == []
    assert pipeline.names("archive") == [f"{card['name']}/batch/new.csv"]


def test_loess_outside_fitted_range_is_na_and_empty_in_csv(pipeline, fitted):
    pipeline.publish(fitted / "loess.rds", "loess")
    pipeline.drop("loess/x.csv", b"speed\n2\n10\n30\n")
    assert pipeline.run().exit_code == 0
    out = read_csv_text(pipeline.read("output", "loess/x.csv"))
    assert out["prediction"].to_pylist()[0::2] == [None, None]
    assert pipeline.read("output", "loess/x.csv").decode().splitlines()[1].endswith(",")


def test_parquet_in_parquet_out_with_typed_columns(pipeline, fitted):
    pipeline.publish(fitted / "glm_binomial.rds", "infert")
    table = pacsv.read_csv(fitted / "glm_binomial.csv")
    buf = io.BytesIO()
    pq.write_table(table, buf)
    pipeline.drop("infert/p/part-0.parquet", buf.getvalue())
    assert pipeline.run().exit_code == 0
    got = pq.read_table(io.BytesIO(pipeline.read("output", "infert/p/part-0.parquet")))
    assert got.column_names == table.column_names + ["prediction"]
    assert got.select(table.column_names).equals(table)
    expected = read_csv_text((fitted / "glm_binomial.expected.csv").read_bytes())
    assert_same_predictions(got.set_column(got.num_columns - 1, "prediction",
                                           got["prediction"].cast(pa.string())), expected, "parquet")


def test_gzipped_csv_in_gzipped_csv_out(pipeline, fitted):
    import gzip
    pipeline.publish(fitted / "polr.rds", "polr", "probs")
    pipeline.drop("polr/day.csv.gz", gzip.compress((fitted / "polr.csv").read_bytes()))
    assert pipeline.run().exit_code == 0
    out = gzip.decompress(pipeline.read("output", "polr/day.csv.gz"))
    assert_same_predictions(read_csv_text(out), read_csv_text((fitted / "polr.expected.csv").read_bytes()), "gz")


def test_large_input_streams_in_batches_and_keeps_row_order(pipeline, fitted):
    pipeline.publish(fitted / "glm_gamma.rds", "gamma")
    rows = ["wt,hp"] + [f"{2 + (i % 300) / 100},{50 + i % 250}" for i in range(25_000)]
    pipeline.drop("gamma/big.csv", ("\n".join(rows) + "\n").encode())
    report = pipeline.run(batch_rows=4_000)
    assert report.exit_code == 0 and report.inputs[0].rows_scored == 25_000
    out = read_csv_text(pipeline.read("output", "gamma/big.csv"))
    assert [f"{w},{h}" for w, h in zip(out["wt"].to_pylist(), out["hp"].to_pylist())] == rows[1:]


@pytest.mark.parametrize("case", CASES)
def test_a_one_row_input_equals_r_predict_on_that_row(pipeline, fitted, case):
    # R drops a one-row result's matrix to a named vector (multinom's and polr's
    # probabilities): still one row with a column per class
    ptype = predict_types(fitted)[case]
    card = pipeline.publish(fitted / f"{case}.rds", case.replace("_", "-"), ptype)
    lines = (fitted / f"{case}.csv").read_bytes().splitlines(keepends=True)
    pipeline.drop(f"{card['name']}/one.csv", b"".join(lines[:2]))

    report = pipeline.run()

    assert report.inputs[0].status == "scored", report.inputs[0].error
    expected = read_csv_text((fitted / f"{case}.expected.csv").read_bytes()).slice(0, 1)
    assert_same_predictions(read_csv_text(pipeline.read("output", f"{card['name']}/one.csv")), expected, case)
