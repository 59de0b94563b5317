"""Outcomes when labels arrive (issue 33, part 2): label files in labels/<model>/ matched to
the predictions already in output/ (and shadow/), stored, and summed into metrics per
period on the model's history; bad label files refused with a note, nothing lost.

Every metric is checked against a computation written here from its definition, on rows
read back from the output files with Python's csv module: AUC as the share of (positive,
negative) pairs ordered right, ties counting half; log loss, accuracy, RMSE, MAE and bias
as plain loops."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from conftest import Pipeline, scorer_cli
from test_drift import frame, to_csv, trained  # noqa: F401  (the fixture)
from test_shadow import pipeline_of

from scorer.batch.labels import RowNumbers
from scorer.monitoring import quality


# -- the independent computations ----------------------------------------------------------

def auc_pairs(scores: list[float], positive: list[bool]) -> float | None:
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    if not pos or not neg:
        return None
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg) / (len(pos) * len(neg))


def log_loss_loop(p_true: list[float]) -> float:
    return -sum(math.log(min(max(p, 1e-15), 1 - 1e-15)) for p in p_true) / len(p_true)


def number_loop(pred: list[float], out: list[float]) -> dict:
    d = [a - b for a, b in zip(pred, out)]
    return {"rmse": math.sqrt(sum(x * x for x in d) / len(d)), "mae": sum(abs(x) for x in d) / len(d),
            "bias": sum(d) / len(d)}


# -- the metrics alone ------------------------------------------------------------------------

@hsettings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]), st.booleans()),
                min_size=1, max_size=40))
def test_auc_is_the_share_of_pairs_ordered_right(rows):
    scores, positive = [r[0] for r in rows], [r[1] for r in rows]
    expected = auc_pairs(scores, positive)
    got = quality.auc(np.array(scores), np.array(positive))
    assert (got is None) == (expected is None)
    if expected is not None:
        assert got == pytest.approx(expected, abs=1e-12)


@hsettings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.integers(0, 2)), min_size=1, max_size=30))
def test_class_metrics_match_their_definitions(rows):
    classes = ["a", "b", "c"]
    probs = []
    for x, y, _ in rows:
        raw = [x + 0.01, y + 0.01, 1.0]
        probs.append([v / sum(raw) for v in raw])
    truth = [classes[k] for _, _, k in rows]
    got = quality.class_metrics(np.array(truth, dtype=object), classes, None, np.array(probs))
    index = [classes.index(t) for t in truth]
    guess = [max(range(3), key=lambda k: (p[k], -k)) for p in probs]  # the first class wins a tie
    assert got["n"] == len(rows)
    assert got["accuracy"] == pytest.approx(sum(g == t for g, t in zip(guess, index)) / len(rows))
    assert got["log_loss"] == pytest.approx(log_loss_loop([p[t] for p, t in zip(probs, index)]))
    each = [auc_pairs([p[k] for p in probs], [t == k for t in index]) for k in range(3)]
    if any(a is None for a in each):
        assert got["auc"] is None
    else:
        assert got["auc"] == pytest.approx(sum(each) / 3)


@hsettings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)), min_size=1, max_size=30))
def test_number_metrics_match_their_definitions(rows):
    got = quality.number_metrics(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]))
    want = number_loop([r[0] for r in rows], [r[1] for r in rows])
    for k in ("rmse", "mae", "bias"):
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-9)


@hsettings(max_examples=200, deadline=None)
@given(st.integers(0, 60).flatmap(lambda n: st.tuples(st.just(n), st.sets(st.integers(1, max(n, 1)), max_size=n))))
def test_row_numbers_skip_the_rejected_rows(case):
    n, rejected = case
    rejected = {r for r in rejected if r <= n}
    kept = [r for r in range(1, n + 1) if r not in rejected]
    numbers = RowNumbers(sorted(rejected))
    assert numbers[0:len(kept)].tolist() == kept
    if len(kept) > 3:  # any slice, as an output is read batch by batch
        assert numbers[2:len(kept)].tolist() == kept[2:]


def test_periods_are_the_run_day_and_its_iso_week():
    assert quality.day_of("20261207T224206851Z-c6e124") == "2026-12-07"
    assert quality.week_of("2026-12-07") == "2026-W50" and quality.week_of("2027-01-01") == "2026-W53"


# -- labels matched to predictions, end to end ----------------------------------------------

def with_ids(rows: list[dict], ids: list[str]) -> bytes:
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=["id", "x1", "x2", "f"])
    w.writeheader()
    for i, r in zip(ids, rows):
        w.writerow({"id": i, **r})
    return out.getvalue().encode()


def labels_csv(rows: list[tuple], header=("id", "outcome")) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(header)
    w.writerows(rows)
    return out.getvalue().encode()


def run_on(p: Pipeline, day: str):
    """A run whose id says it started on ``day`` (the period its predictions count in)."""
    from scorer.batch.job import Job
    return Job(p.settings, p.store, run_id=f"{day.replace('-', '')}T120000000Z-test00").run()


def predictions_by_id(data: bytes, column: str = "prediction") -> dict[str, float]:
    return {r["id"]: float(r[column]) for r in csv.DictReader(io.StringIO(data.decode()))}


def test_labels_are_matched_to_every_prediction_of_their_ids_and_the_metrics_are_right(settings, trained):  # noqa: F811
    """glm (binomial: the probability of 1) with an lm in the shadow; ids scored in two runs on
    two days, one id scored on both; labels in two files, with an id twice in a file, an id
    labelled again by the second file, an id never scored, and a row without an outcome.
    Each period's accuracy, log loss and AUC, current and shadow, against the loops above on
    rows read back from the outputs."""
    p = pipeline_of(settings, "o1")
    p.publish(trained / "glm.rds", "churn", id_column="id")
    p.publish(trained / "lm.rds", "churn", shadow=True)
    ids_a, ids_b = [f"c{k}" for k in range(100)], [f"c{k}" for k in range(100, 150)]
    rows_b = frame(50, 2)
    rows_b[7] = dict(rows_b[7], x1="oops")  # rejected: no prediction for c107
    p.drop("churn/a.csv", with_ids(frame(100, 1), ids_a))
    p.drop("churn/sub/b.csv", with_ids(rows_b, ids_b))
    p.drop("churn/no-ids.csv", to_csv(frame(10, 9)))  # an output without the id column: passed over
    assert run_on(p, "2026-11-01").exit_code == 0
    p.drop("churn/c.csv", with_ids(frame(50, 3, shift=1), ids_a[:50]))  # c0..c49 scored again, a day later
    assert run_on(p, "2026-11-02").exit_code == 0

    rng = np.random.default_rng(5)
    truth = {i: str(int(rng.uniform() < 0.4)) for i in ids_a + ids_b}
    first = [(i, truth[i]) for i in ids_a + ids_b[:20]] + [("c5", "1"), ("zz1", "0"), ("c60", "")]
    first = [r for r in first if r[0] != "c60"] + [("c60", "")]
    p.store.put_bytes(p.settings.labels_container, "churn/2026/l1.csv", labels_csv(first))
    r3 = run_on(p, "2026-11-03")
    (l1,) = r3.labels
    assert l1["status"] == "matched", l1
    assert l1["duplicates"] == 1 and l1["duplicate_ids"] == ["c5"]
    assert l1["unmatched"] == 2 and sorted(l1["unmatched_ids"]) == ["c107", "zz1"]  # c107's row was rejected
    assert l1["no_outcome"] == 1
    assert l1["matched"] == 100 + 20 - 1 - 1 - 1  # c5 refused, c60 no outcome, c107 no prediction
    assert l1["predictions_matched"] == l1["matched"] + 49  # c0..c49 but c5, scored twice
    assert r3.exit_code == 0

    second = [("c10", "1")] + [(i, truth[i]) for i in ids_b[20:]]
    p.store.put_bytes(p.settings.labels_container, "churn/l2.csv", labels_csv(second))
    no_id = labels_csv([("c1", "1")], header=("customer", "outcome"))
    not_a_class = labels_csv([("c2", "1"), ("c3", "maybe")])
    p.store.put_bytes(p.settings.labels_container, "churn/no-id.csv", no_id)
    p.store.put_bytes(p.settings.labels_container, "churn/not-a-class.csv", not_a_class)
    r4 = run_on(p, "2026-11-04")
    items = {i["blob"].rsplit("/", 1)[1]: i for i in r4.labels}
    l2 = items["l2.csv"]
    assert l2["status"] == "matched" and l2["duplicate_ids"] == ["c10"] and l2["matched"] == 30
    assert items["no-id.csv"]["status"] == "refused" and "no column 'id'" in items["no-id.csv"]["error"]["message"]
    assert "row 2, column 'outcome': 'maybe' is not one of the model's classes ('0', '1'" in \
        items["not-a-class.csv"]["error"]["message"]
    assert r4.exit_code == 3
    assert p.read("quarantine", "_labels/churn/no-id.csv") == no_id  # nothing lost
    assert p.read("quarantine", "_labels/churn/not-a-class.csv") == not_a_class

    assert p.names("labels") == []
    assert sorted(n for n in p.names("archive") if n.startswith("_labels/")) == ["_labels/churn/2026/l1.csv",
                                                                                  "_labels/churn/l2.csv"]
    hist = p.read_json("reports", "models/churn.json")
    out = hist["outcomes"]
    assert out["kind"] == "class" and out["classes"] == ["0", "1"] and out["files"] == 2

    # the independent computation, from the outputs and the labels as dropped
    labelled = {i: y for i, y in first + second if y}
    for i in ("c5", "c60"):
        labelled.pop(i, None)
    labelled["c10"] = truth["c10"]  # the first file's label stands
    files = {"2026-11-01": ["churn/a.csv", "churn/sub/b.csv"], "2026-11-02": ["churn/c.csv"]}
    for role, container in (("current", "output"), ("shadow", "shadow")):
        for day, names in files.items():
            pairs = []
            for name in names:
                for i, pr in predictions_by_id(p.read(container, name)).items():
                    if i in labelled:
                        pairs.append((pr, labelled[i] == "1"))
            got = next(m for m in out["by_day"] if m["period"] == day and m["role"] == role)
            assert got["n"] == len(pairs)
            scores = [pr for pr, _ in pairs]
            assert got["accuracy"] == pytest.approx(sum((pr > 0.5) == y for pr, y in pairs) / len(pairs))
            assert got["log_loss"] == pytest.approx(log_loss_loop([pr if y else 1 - pr for pr, y in pairs]))
            assert got["auc"] == pytest.approx(auc_pairs(scores, [y for _, y in pairs]))
            assert got["versions"] == ([1] if role == "current" else [2])
    week = [m for m in out["by_week"] if m["role"] == "current"]
    assert [m["period"] for m in week] == ["2026-W44", "2026-W45"]  # Sunday 1 November, then Monday 2
    page = p.read("reports", "models/churn.html").decode()
    assert 'data-quality="auc"' in page and 'data-quality="log_loss"' in page


def test_labels_by_input_and_row_number_skip_rejected_rows_and_bad_files_are_refused(settings, trained,  # noqa: F811
                                                                                     tmp_path):
    """A model published without --id-column: labels name the input and the row. A rejected
    row has no prediction (unmatched); the others line up with the input's rows. RMSE, MAE
    and bias against the loops above. Label files without a needed column, with an outcome
    that is not a number, or for no published model are refused with a note, and nothing is
    lost: each file is in archive/ or quarantine/, and labels/ is empty."""
    p = pipeline_of(settings, "o2")
    p.publish(trained / "lm.rds", "amount")
    rows = frame(20, 4)
    rows[2] = dict(rows[2], x1="bad")  # row 3 rejected
    p.drop("amount/d.csv", to_csv(rows))
    assert run_on(p, "2026-11-10").exit_code == 0
    y = {k: round(0.1 * k - 0.5, 3) for k in range(1, 21)}
    (tmp_path / "l.csv").write_bytes(labels_csv([("d.csv", k, y[k]) for k in range(1, 21)],
                                                header=("input", "row", "outcome")))
    dropped = scorer_cli(p.settings, "drop", str(tmp_path / "l.csv"), "--model", "amount", "--labels")
    labels = p.settings.labels_container
    assert dropped.returncode == 0 and f"{labels}/amount/l.csv" in dropped.stdout, dropped.stderr
    bad = {"amount/bad1.csv": labels_csv([("d.csv", 1)], header=("input", "outcome")),
           "amount/bad2.csv": labels_csv([("d.csv", 1, "2.5"), ("d.csv", 2, "lots")], header=("input", "row", "outcome")),
           "nomodel/x.csv": labels_csv([("a", "1")])}
    for name, data in bad.items():
        p.store.put_bytes(p.settings.labels_container, name, data)
    report = run_on(p, "2026-11-11")
    assert report.exit_code == 3
    items = {i["blob"].split("/", 1)[1]: i for i in report.labels}
    good = items["amount/l.csv"]
    assert good["status"] == "matched" and good["matched"] == 19 and good["unmatched"] == 1, good
    assert good["unmatched_ids"] == ["d.csv row 3"]
    bad1, bad2, none = items["amount/bad1.csv"], items["amount/bad2.csv"], items["nomodel/x.csv"]
    assert bad1["status"] == "refused" and "'row'" in bad1["error"]["message"], bad1
    assert bad2["status"] == "refused" and "row 2, column 'outcome'" in bad2["error"]["message"], bad2
    assert none["status"] == "refused" and "nomodel" in none["error"]["message"], none
    assert p.names("labels") == []
    q = p.names("quarantine")
    for name, data in bad.items():
        assert p.read("quarantine", f"_labels/{name}") == data and f"_labels/{name}.error.json" in q
    note = p.read_json("quarantine", "_labels/amount/bad2.csv.error.json")
    assert note["kind"] == "SchemaError" and note["what_to_do"]

    out = p.read_json("reports", "models/amount.json")["outcomes"]
    assert out["kind"] == "number"
    preds = [float(r["prediction"]) for r in csv.DictReader(io.StringIO(p.read("output", "amount/d.csv").decode()))]
    kept = [k for k in range(1, 21) if k != 3]
    want = number_loop(preds, [y[k] for k in kept])
    (got,) = [m for m in out["by_day"] if m["role"] == "current"]
    assert got["period"] == "2026-11-10" and got["n"] == 19
    for k in ("rmse", "mae", "bias"):
        assert got[k] == pytest.approx(want[k])
    told = scorer_cli(p.settings, "models", "history", "amount").stdout
    assert "quality from labels" in told and "2026-11-10 current" in told and "RMSE" in told, told
    told = scorer_cli(p.settings, "report", "latest").stdout
    assert f"labels {labels}/amount/l.csv: 19 ids matched to 19 predictions, 1 unmatched" in told, told
    assert f"labels {labels}/amount/bad2.csv: refused" in told and "what to do:" in told


def test_the_card_says_how_labels_are_scored_for_each_family(pipeline, fitted):
    """What publish records for outcomes (scorer.models.cards.outcome_spec): a glm binomial's
    one number is the probability of its second class; a factor result gives the predicted
    class; probability columns (type prob/probs) are the classes; a Gamma glm predicts numbers."""
    iris = ["setosa", "versicolor", "virginica"]
    cases = {
        "glm_binomial": (None, {"kind": "class", "classes": ["0", "1"], "probabilities": {"1": ""}, "label": None}),
        "glm_gamma": ("response", {"kind": "number", "score": "", "classes": None}),
        "rpart_class": ("prob", {"kind": "class", "classes": iris, "probabilities": {c: c for c in iris}}),
        "randomforest": (None, {"kind": "class", "classes": iris, "label": "", "probabilities": None}),
        "multinom": ("probs", {"kind": "class", "classes": iris, "label": None}),
    }
    for name, (ptype, want) in cases.items():
        card = pipeline.publish(fitted / f"{name}.rds", name.replace("_", "-"), ptype, id_column="id")
        got = card["outcome"]
        assert got["id_column"] == "id" and got["column"] == "outcome", (name, got)
        assert {k: got[k] for k in want} == want, (name, got)


def test_a_number_outcome_is_read_with_the_files_decimal_mark_never_guessed():
    """Before the fix a value with one comma was read as a decimal comma in any file:
    "1,000" (a thousand, in a file with decimal points) became 1.0, silently."""
    from scorer.batch.labels import parse_outcomes
    from scorer.errors import SchemaError

    rows = np.array([1, 2])
    with pytest.raises(SchemaError, match=r"row 2, column 'outcome': '1,000' is not a number"):
        parse_outcomes(np.array(["2.5", "1,000"], dtype=object), rows, "number", None, "labels/m/l.csv", "outcome")
    got = parse_outcomes(np.array(["2,5", "1000"], dtype=object), rows, "number", None, "labels/m/l.csv", "outcome",
                         decimal=",")
    assert got.tolist() == [2.5, 1000.0]
