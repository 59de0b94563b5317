"""R as the oracle, for every family (issue 27): Hypothesis makes input files from each
model's own new data, with rows repeated and in any order and values that do not fit
(a level the model never saw, a level in another case or with a space, text in a number
column, missing values, impossible dates, date-times with and without a zone); scorer
scores each file through the blob path and over HTTP, and R reads the same file itself
and predicts with its own predict() (tests/r/oracle.R, the documented reading rules
written again in R). Every row is either predicted by both, equal to 1e-9 relative, or
rejected by scorer where R finds the value unfit or its predict() refuses the row; no row
is scored by one and not the other.

Hypothesis keeps the cases it finds in tests/hypothesis-db, so a found case stays found.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import uuid

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import CLEAN_ENV, ROOT, Pipeline
from test_model_families import predict_types, read_csv_text

pytestmark = pytest.mark.slow  # R as the oracle for 14 families, over the blob path and HTTP: minutes


def read_as_text(data: bytes) -> pa.Table:
    """A CSV with every column as text, only an empty cell missing (NaN is a value)."""
    cols = pacsv.read_csv(io.BytesIO(data)).column_names
    return pacsv.read_csv(io.BytesIO(data), convert_options=pacsv.ConvertOptions(
        column_types={c: pa.string() for c in cols}, null_values=[""], strings_can_be_null=True))

#: family -> (fixture, file stem, publish options)
FAMILIES = {
    "glm_binomial": ("fitted", "glm_binomial", {}),
    "glm_poisson": ("fitted", "glm_poisson", {}),
    "lm_factor_log": ("fitted", "lm", {}),
    "loess": ("fitted", "loess", {}),
    "rpart_class": ("fitted", "rpart_class", {}),
    "polr": ("fitted", "polr", {}),
    "randomforest_prob": ("fitted", "randomforest_prob", {}),
    "multinom": ("fitted", "multinom", {}),
    "lm_date_logical": ("fitted", "lm_date_logical", {}),
    "naivebayes_number_levels": ("zoo3", "naivebayes_raw", {"predict_type": "raw"}),
    "level_spelled_na": ("zoo3", "level_na", {}),
    "posixct_new_york": ("zoo3", "posixct_local_hour", {}),
    "lmer": ("zoo3", "lmer", {}),
    "ksvm_prob": ("zoo3", "ksvm_prob", {"predict_type": "probabilities"}),
}

NUMBER_TROUBLE = ["", "NA", " 2.5 ", "x2", "1e1", "-0", "Inf", "NaN", "07", ".5"]
DATE_TROUBLE = ["", "NA", "2024-02-30", "2024-01-01 00:00:00", "2024-01-01T00:00:00Z", "2024-01-01T12:00:00", "01/02/2024"]
TIME_TROUBLE = ["", "2024-03-10T02:30:00", "2024-03-01 12:00", "2024-03-01T12:00:00+05:00", "2024-03-01", "noon"]
LOGICAL_TROUBLE = ["", "NA", "TRUE", "false", "T", "yes", "1", "0"]


class Oracle:
    """R, reading and predicting as a user's R session would (tests/r/oracle.R)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["Rscript", str(ROOT / "tests" / "r" / "oracle.R")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=CLEAN_ENV)

    def ask(self, model, data: bytes, card: dict, tmp) -> pa.Table:
        csv_path, out = tmp / f"{uuid.uuid4().hex}.csv", tmp / f"{uuid.uuid4().hex}.out.csv"
        csv_path.write_bytes(data)
        schema = [{"name": f["name"], "class": f["class"], "levels": f.get("levels") or [], "tz": f.get("tz")}
                  for f in card["input_schema"]]
        args = {a["name"]: a["value"] for a in card.get("predict_args") or []}
        self.proc.stdin.write(json.dumps({"model": str(model), "csv": str(csv_path), "out": str(out),
                                          "schema": schema, "type": card.get("predict_type"), "args": args,
                                          "packages": card.get("top_packages") or []}) + "\n")
        self.proc.stdin.flush()
        said = self.proc.stdout.readline().strip()
        assert said == "done", said
        return read_as_text(out.read_bytes())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(30)


@pytest.fixture(scope="module")
def world(azurite, fitted, tmp_path_factory):
    """One set of containers with every family published, an oracle, and a server."""
    from scorer.settings import Settings
    from scorer.storage import Store, connect

    from test_serve import Served

    tag = uuid.uuid4().hex[:8]
    s = Settings(connection_string=azurite.connection_string, lease_seconds=15, max_rejected_fraction=1.0,
                 **{f"{w}_container": f"{w[:3]}-d{tag}" for w in
                    ("models", "input", "output", "archive", "quarantine", "reports", "shadow", "labels")})
    store = Store(connect(s), s)
    store.ensure_containers()
    zoo3 = tmp_path_factory.mktemp("zoo3-diff")
    subprocess.run(["Rscript", str(ROOT / "tests" / "r" / "fit_zoo3.R"), str(zoo3)], check=True, capture_output=True,
                   env=dict(CLEAN_ENV, TZ="UTC"))
    p = Pipeline(s, store)
    dirs = {"fitted": fitted, "zoo3": zoo3}
    types = predict_types(fitted)
    cards = {}
    for family, (where, stem, options) in FAMILIES.items():
        options = dict(options)
        if where == "fitted":
            options.setdefault("predict_type", types[stem])
        cards[family] = (p.publish(dirs[where] / f"{stem}.rds", family.replace("_", "-"), **options),
                         dirs[where] / stem)
    served = Served(s)
    oracle = Oracle()
    yield p, cards, oracle, served, tmp_path_factory.mktemp("differential")
    oracle.close()
    served.stop()
    store.close()


@st.composite
def files_like(draw, card: dict, base: pa.Table) -> bytes:
    """A CSV of rows taken from ``base`` (repeated, in any order), with some values made
    to not fit: the things users' files hold."""
    fields = card["input_schema"]
    n = draw(st.integers(1, 12))
    picks = draw(st.lists(st.integers(0, base.num_rows - 1), min_size=n, max_size=n))
    rows = []
    for k in picks:
        row = []
        for f in fields:
            value = base[f["name"]][k].as_py() if f["name"] in base.column_names else ""
            value = "" if value is None else value
            if draw(st.integers(0, 9)) == 0:  # one value in ten goes astray
                levels = f.get("levels") or []
                if levels:
                    value = draw(st.sampled_from(["unseen", "", "NA", " " + levels[0], levels[-1].upper(),
                                                  levels[0] + " ", *levels]))
                elif f["class"] == "Date":
                    value = draw(st.sampled_from(DATE_TROUBLE))
                elif f["class"] == "POSIXct":
                    value = draw(st.sampled_from(TIME_TROUBLE))
                elif f["class"] == "logical":
                    value = draw(st.sampled_from(LOGICAL_TROUBLE))
                elif f["class"] in ("numeric", "integer", "any"):
                    value = draw(st.sampled_from(NUMBER_TROUBLE))
            row.append(value)
        rows.append(row)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([f["name"] for f in fields])
    writer.writerows(rows)
    return out.getvalue().encode()


def _equal(got: str | None, want: str | None) -> bool:
    if want is None or want == "":
        return got is None or got == ""
    try:
        w = float(want)
    except ValueError:
        return got == want
    if got is None or got == "":
        return False
    g = float(got)
    return (math.isnan(g) and math.isnan(w)) or math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-12)


def compare(family: str, data: bytes, r: pa.Table, scored: dict[int, dict], rejected: set[int], where: str) -> None:
    """Every row as R has it: predicted alike, or rejected where R finds it unfit."""
    status = dict(zip(r["row"].to_pylist(), r["status"].to_pylist()))
    for row, st_ in status.items():
        row = int(row)
        if st_ == "ok":
            assert row in scored, f"{family} ({where}): row {row} predicted by R, rejected by scorer\n{data.decode()}"
            for name in r.column_names[2:]:
                assert _equal(scored[row].get(name), r[name][row - 1].as_py()), \
                    f"{family} ({where}): row {row} {name}: {scored[row].get(name)} != {r[name][row - 1]}\n" \
                    f"{data.decode()}"
        elif st_ == "refused_alone" and row in scored:  # NA, as R answers it beside a complete row
            assert all(v in (None, "") for k, v in scored[row].items() if k.startswith("prediction")), \
                f"{family} ({where}): row {row} {st_} for R, given a value by scorer\n{data.decode()}"
        else:
            assert row in rejected, f"{family} ({where}): row {row} {st_} for R, scored by scorer\n{data.decode()}"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_row_is_read_and_predicted_as_r_does_in_a_file_and_over_http(world, family):
    p, cards, oracle, served, tmp = world
    card, stem = cards[family]
    base = read_csv_text(stem.with_suffix(".csv").read_bytes())
    model = stem.with_suffix(".rds")

    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
    @given(files_like(card, base))
    def check(data: bytes) -> None:
        r = oracle.ask(model, data, card, tmp)
        name = f"{card['name']}/{uuid.uuid4().hex[:8]}.csv"
        p.drop(name, data)
        item = p.run(blob=name).inputs[0]
        if item.status == "quarantined":  # no row fits, or R's predict() refuses every row: so says R
            assert item.error["kind"] in ("SchemaError", "TooManyRejected", "PredictError"), item.error
            assert set(r["status"].to_pylist()) <= {"invalid", "refused", "refused_alone"}, (item.error, data.decode())
        else:
            assert item.status == "scored", item.error
            out = read_as_text(p.read("output", name))
            rejected = set()
            if item.rejected_rows:
                rej = pacsv.read_csv(io.BytesIO(p.read("output", f"{name}.rejected.csv")))
                rejected = set(rej["rejected_row"].to_pylist())
            kept = [i for i in range(1, len(r) + 1) if i not in rejected]
            scored = {i: {c: out[c][j].as_py() for c in out.column_names} for j, i in enumerate(kept)}
            compare(family, data, r, scored, rejected, "blob")
        answer = served.post(card["name"], data, headers={"content-type": "text/csv"})
        if answer.status_code == 200:
            body = answer.json()
            scored = {x["row"]: {k: None if v is None else str(v) for k, v in x.items()} for x in body["predictions"]}
            compare(family, data, r, scored, {x["row"] for x in body["rejected"]}, "HTTP")
        else:
            assert answer.status_code == 422, (answer.text, served.read_log()[-3000:])
            assert set(r["status"].to_pylist()) <= {"invalid", "refused", "refused_alone"}, (answer.text, data.decode())

    check()


def test_the_oracle_itself_sees_a_wrong_prediction(world):
    """The comparison can fail: a prediction off by one part in a million is caught."""
    p, cards, oracle, served, tmp = world
    r = pa.table({"row": ["1"], "status": ["ok"], "prediction": ["0.5"]})
    with pytest.raises(AssertionError, match="row 1 prediction"):
        compare("x", b"", r, {1: {"prediction": "0.5000005"}}, set(), "test")
    with pytest.raises(AssertionError, match="scored by scorer"):
        compare("x", b"", pa.table({"row": ["1"], "status": ["invalid"]}), {1: {}}, set(), "test")

