"""Drift against the training data (issue 11), through the blob path with real Azurite
and R: a reference profile taken at publish, PSI per variable and prediction column in
every scored input's report entry, checked against an independent computation here."""

from __future__ import annotations

import csv
import io
import math
import subprocess

import numpy as np
import pytest

from scorer.errors import ConfigError

from conftest import CLEAN_ENV


def frame(n: int, seed: int, shift: float = 0.0, levels: str = "abc") -> list[dict]:
    """Rows of x1 ~ N(10 + shift*2, 2), x2 ~ U(0, 1), f uniform over ``levels``."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(10 + 2 * shift, 2, n)
    x2 = rng.uniform(0, 1, n)
    f = rng.choice(list(levels), n)
    return [{"x1": f"{a:.6f}", "x2": f"{b:.6f}", "f": c} for a, b, c in zip(x1, x2, f)]


def to_csv(rows: list[dict], with_y: bool = False, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed + 1000)
    out = io.StringIO()
    cols = ["x1", "x2", "f"] + (["y"] if with_y else [])
    w = csv.DictWriter(out, fieldnames=cols)
    w.writeheader()
    for r in rows:
        if with_y:
            eta = -4 + 0.35 * float(r["x1"]) + float(r["x2"]) + {"a": 0, "b": 0.5, "c": -0.5}[r["f"]]
            r = dict(r, y=int(rng.uniform() < 1 / (1 + math.exp(-eta))))
        w.writerow(r)
    return out.getvalue().encode()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A glm fitted on 5,000 rows, its training CSV, and the same fit as lm and rpart."""
    d = tmp_path_factory.mktemp("drift")
    (d / "train.csv").write_bytes(to_csv(frame(5000, 1), with_y=True))
    code = (
        "args <- commandArgs(TRUE); d <- read.csv(file.path(args[1], 'train.csv')); d$f <- factor(d$f); "
        "saveRDS(glm(y ~ x1 + x2 + f, binomial, d), file.path(args[1], 'glm.rds')); "
        "saveRDS(lm(y ~ log(x1) + f, d), file.path(args[1], 'lm_log.rds')); "
        "saveRDS(lm(y ~ x1 + f, d), file.path(args[1], 'lm.rds')); "
        "saveRDS(rpart::rpart(factor(y) ~ x1 + x2 + f, d), file.path(args[1], 'rpart.rds'))")
    subprocess.run(["Rscript", "-e", code, str(d)], check=True, env=CLEAN_ENV, capture_output=True)
    return d


# -- the independent computation ----------------------------------------------------------

def numeric_shares(ref: np.ndarray, now: np.ndarray) -> tuple[list[float], list[float]]:
    edges = sorted(set(np.quantile(ref[~np.isnan(ref)], [i / 10 for i in range(1, 10)]).tolist()))

    def shares(v):
        counts = [0] * (len(edges) + 2)
        for x in v:
            if math.isnan(x):
                counts[-1] += 1
                continue
            i = 0
            while i < len(edges) and x > edges[i]:  # bins (e_{i-1}, e_i]
                i += 1
            counts[i] += 1
        return [c / len(v) for c in counts]
    return shares(ref), shares(now)


def level_shares(ref: list[str], now: list[str]) -> tuple[list[float], list[float]]:
    levels = sorted(set(ref), key=lambda lv: (-ref.count(lv), lv))[:50]

    def shares(v):
        counts = [v.count(lv) for lv in levels] + [sum(1 for x in v if x not in levels and x != ""),
                                                    sum(1 for x in v if x == "")]
        return [c / len(v) for c in counts]
    return shares(ref), shares(now)


def psi(e: list[float], a: list[float]) -> float:
    return sum((max(y, 1e-4) - max(x, 1e-4)) * math.log(max(y, 1e-4) / max(x, 1e-4)) for x, y in zip(e, a))


def column(data: bytes, name: str) -> list[str]:
    return [r[name] for r in csv.DictReader(io.StringIO(data.decode()))]


def as_float(values: list[str]) -> np.ndarray:
    return np.array([float(v) if v not in ("", "NA") else math.nan for v in values])


# -- tests ----------------------------------------------------------------------------------

def test_an_input_like_the_training_data_flags_nothing_and_a_shifted_one_flags_exactly_what_moved(pipeline, trained):
    card = pipeline.publish(trained / "glm.rds", "churn", reference=trained / "train.csv")
    assert card["profile"]["source"] == "reference file train.csv" and card["profile"]["rows"] == 5000
    profile = pipeline.read_json("models", "churn/v1/profile.json")
    assert set(profile["features"]) == {"x1", "x2", "f"} and set(profile["predictions"]) == {"prediction"}

    same = to_csv(frame(5000, 2))
    shifted_rows = frame(5000, 3, shift=1.0, levels="ab")  # x1 two standard deviations up; no f == "c"
    shifted = to_csv(shifted_rows)
    pipeline.drop("churn/same.csv", same)
    pipeline.drop("churn/shifted.csv", shifted)
    report = pipeline.run()
    by = {i.blob: i for i in report.inputs}
    assert {i.status for i in report.inputs} == {"scored"}

    quiet = by["churn/same.csv"].drift
    assert quiet["computed"] and quiet["flagged"] == [] and quiet["threshold"] == 0.2
    assert all(d["psi"] < 0.05 for d in quiet["features"].values()), quiet["features"]

    moved = by["churn/shifted.csv"].drift
    assert set(moved["flagged"]) - {"prediction"} == {"x1", "f"}, moved["flagged"]
    assert moved["features"]["f"]["absent_levels"] == ["c"] and moved["features"]["f"]["new_levels"] == []
    assert any("drift: " in w and "x1" in w for w in by["churn/shifted.csv"].warnings)

    # the PSI values, computed here from the CSV files alone
    train = (trained / "train.csv").read_bytes()
    for name in ("x1", "x2"):
        e, a = numeric_shares(as_float(column(train, name)), as_float(column(shifted, name)))
        assert math.isclose(moved["features"][name]["psi"], psi(e, a), rel_tol=1e-9, abs_tol=1e-12), name
        assert moved["features"][name]["reference"] == pytest.approx(e) and moved["features"][name]["current"] == pytest.approx(a)
    e, a = level_shares(column(train, "f"), column(shifted, "f"))
    assert math.isclose(moved["features"]["f"]["psi"], psi(e, a), rel_tol=1e-9)
    # the prediction column: R's own predictions on the training rows and on the input
    pred_ref = np.array(rpredict(trained / "glm.rds", trained / "train.csv"))
    out = as_float(column(pipeline.read("output", "churn/shifted.csv"), "prediction"))
    e, a = numeric_shares(pred_ref, out)
    assert math.isclose(moved["predictions"]["prediction"]["psi"], psi(e, a), rel_tol=1e-9)
    assert ("prediction" in moved["flagged"]) == (psi(e, a) >= 0.2)


def rpredict(model, data) -> list[float]:
    code = ("args <- commandArgs(TRUE); m <- readRDS(args[1]); d <- read.csv(args[2]); "
            "d$f <- factor(d$f, levels = m$xlevels$f); cat(format(predict(m, d, type = 'response'), digits = 17), sep = '\\n')")
    out = subprocess.run(["Rscript", "-e", code, str(model), str(data)], check=True, env=CLEAN_ENV,
                         capture_output=True, text=True).stdout
    return [float(x) for x in out.split()]


def test_new_levels_and_unparseable_numbers_show_as_drift_not_only_as_rejects(pipeline, trained):
    pipeline.publish(trained / "glm.rds", "churn", reference=trained / "train.csv")
    rows = frame(2000, 4)
    for r in rows[:60]:
        r["f"] = "d"          # a level the model never saw: the row is rejected, and the level is named
    for r in rows[60:100]:
        r["x2"] = "n/a"       # not a number: rejected, and counted as missing in x2's profile
    pipeline.drop("churn/new.csv", to_csv(rows))
    (item,) = pipeline.run().inputs
    assert item.status == "scored" and item.rows_rejected == 100
    f = item.drift["features"]["f"]
    assert f["new_levels"] == ["d"] and f["new_levels_rows"] == 60 and math.isclose(f["current"][-2], 60 / 2000)
    assert math.isclose(item.drift["features"]["x2"]["missing"], 40 / 2000)
    assert item.drift["features"]["x2"]["reference_missing"] == 0


def test_glm_and_lm_are_profiled_from_the_data_they_keep_and_say_so(pipeline, trained):
    glm = pipeline.publish(trained / "glm.rds", "g")
    assert glm["profile"]["source"].startswith("the model's data") and glm["profile"]["rows"] == 5000
    lm = pipeline.publish(trained / "lm.rds", "l")
    assert lm["profile"]["source"].startswith("the model frame") and lm["profile"]["rows"] == 5000
    pipeline.drop("l/a.csv", to_csv(frame(3000, 5)))
    (item,) = pipeline.run().inputs
    assert item.drift["computed"] and item.drift["flagged"] == []


def test_a_model_without_a_profile_scores_as_before_and_says_drift_was_not_computed(pipeline, trained, capsys):
    card = pipeline.publish(trained / "rpart.rds", "tree", predict_type="prob")
    assert card["profile"] is None
    lm_log = pipeline.publish(trained / "lm_log.rds", "loglm")  # its model frame holds log(x1), not x1
    assert lm_log["profile"] is None
    pipeline.drop("tree/a.csv", to_csv(frame(100, 6)))
    (item,) = pipeline.run().inputs
    assert item.status == "scored" and item.drift == {
        "computed": False, "reason": "model 'tree' version 1 was published without a drift profile (no "
        "--reference, and the model keeps no training data)"}


def test_categorical_predictions_are_profiled_by_class(pipeline, trained):
    pipeline.publish(trained / "rpart.rds", "tree", predict_type="class", reference=trained / "train.csv")
    profile = pipeline.read_json("models", "tree/v1/profile.json")
    assert profile["predictions"]["prediction"]["kind"] == "categorical"
    assert set(profile["predictions"]["prediction"]["levels"]) <= {"0", "1"}
    pipeline.drop("tree/a.csv", to_csv(frame(1000, 7, shift=2.0)))
    (item,) = pipeline.run().inputs
    assert "prediction" in item.drift["predictions"]


def test_a_reference_without_a_model_variable_is_refused_naming_it(pipeline, trained, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x1,f\n1,a\n")
    with pytest.raises(ConfigError, match=r"--reference .*bad.csv: missing required column\(s\) 'x2'"):
        pipeline.publish(trained / "glm.rds", "churn", reference=bad)
    with pytest.raises(ConfigError, match="no such file"):
        pipeline.publish(trained / "glm.rds", "churn", reference=tmp_path / "absent.csv")
    assert pipeline.names("models") == []


def test_the_threshold_is_a_setting(pipeline, trained):
    pipeline.publish(trained / "glm.rds", "churn", reference=trained / "train.csv")
    pipeline.drop("churn/a.csv", to_csv(frame(3000, 8)))
    (item,) = pipeline.run(drift_psi=1e-6).inputs
    assert item.drift["threshold"] == 1e-6 and set(item.drift["flagged"]) >= {"x1", "x2", "f"}


def test_a_small_input_gets_psi_values_but_no_flag(pipeline, trained):
    pipeline.publish(trained / "glm.rds", "churn", reference=trained / "train.csv")
    pipeline.drop("churn/few.csv", to_csv(frame(40, 9, shift=1.0, levels="ab")))
    (item,) = pipeline.run().inputs
    assert item.drift["flagged"] == [] and item.drift["features"]["x1"]["psi"] > 0.2
    assert "only 40 rows" in item.drift["note"]
