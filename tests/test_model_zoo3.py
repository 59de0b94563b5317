"""Models R users save, round three (issue 27): mixed models and S4 classes, and the
cases a new user's trial found scored wrong or refused unclearly. Each is scored through
the blob path and compared with R's own predict() on the same rows held as the model was
trained (tests/r/fit_zoo3.R), or refused at publish with a message that names the way to
make it work."""

from __future__ import annotations

import io
import subprocess

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from scorer.errors import ConfigError, ModelError

from conftest import CLEAN_ENV, ROOT
from test_model_families import read_csv_text
from test_model_zoo import largest_difference, score

#: case -> publish options (scorer.models.cards.Options fields)
CASES = {
    "lmer": {},
    "lmer_new_levels": {"predict_args": ["allow.new.levels=TRUE"]},
    "lmer_population": {"predict_args": ["re.form=NA"]},
    "glmer": {"predict_type": "response"},
    "lme_level1": {"predict_args": ["level=1"]},
    "ksvm_prob": {"predict_type": "probabilities"},
    "ksvm_class": {},
    "ctree_prob": {"predict_type": "prob"},
    "ctree": {},
    "naivebayes_raw": {"predict_type": "raw"},
    "naivebayes_class": {},
    "svm_decision": {"predict_args": ["decision.values=TRUE"], "levels": ["grade=2,10,1"]},
    "posixct_local_hour": {},
    "posixct_lm_hour": {"tz": ["ts=America/New_York"]},
    "formula_over_rows": {},
    "level_na": {},
    "formula_pi": {},
    "caret_xy_factor": {},
    "survreg_quantiles": {"predict_type": "quantile", "predict_args": ["p=c(0.1, 0.5, 0.9)"]},
    "coxph_expected": {"predict_type": "expected"},
    "plsr": {},
    "plsr_ncomp": {"predict_args": ["ncomp=2"]},
}


@pytest.fixture(scope="session")
def zoo3(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo3")
    done = subprocess.run(["Rscript", str(ROOT / "tests" / "r" / "fit_zoo3.R"), str(out)], capture_output=True,
                          text=True, env=dict(CLEAN_ENV, TZ="UTC"))
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_case_equals_r_predict_on_the_training_types(pipeline, zoo3, case, capsys):
    card, item, name = score(pipeline, zoo3, case, **CASES[case])
    assert item.status == "scored", item.error
    got = pacsv.read_csv(io.BytesIO(pipeline.read("output", name)),
                         convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    got = got.cast(pa.schema([(f.name, pa.string()) for f in got.schema]))
    worst = largest_difference(got, read_csv_text((zoo3 / f"{case}.expected.csv").read_bytes()), case, rel=1e-9)
    with capsys.disabled():
        print(f"\nzoo3 {case}: largest relative difference from R {worst:.2e}")


def test_random_standard_errors_are_predicted_whole_with_a_seed_from_the_inputs_name(pipeline, zoo3, tmp_path):
    """ranger's standard errors (type = "se") are random, and calibrated over the rows
    predicted together: publishing finds both by test predictions; the file is then
    predicted in one call with R's seed set from the input's name, as R predicts it
    after set.seed() with that seed, and a second run writes the same output."""
    from scorer.r.predict import seed_for

    card, item, name = score(pipeline, zoo3, "ranger_se", predict_type="se", levels=["grade=2,10,1", "cls=no,yes"])
    assert card["random"] is True and card["rowwise"] is False
    assert item.status == "scored", item.error
    script = tmp_path / "se.R"
    script.write_text(f"""
suppressMessages(library(ranger))
m <- readRDS("{zoo3 / 'ranger_se.rds'}")
d <- read.csv("{zoo3 / 'ranger_se.csv'}", colClasses = "character")
d$grade <- factor(d$grade, levels = c("2", "10", "1")); d$cls <- factor(d$cls, levels = c("no", "yes"))
set.seed({seed_for(name)})
p <- predict(m, d, type = "se")
write.csv(data.frame(prediction_fit = formatC(p$predictions, digits = 17, format = "g"),
                     prediction_se = formatC(p$se, digits = 17, format = "g")), "{tmp_path / 'se.csv'}", row.names = FALSE)
""")
    subprocess.run(["Rscript", str(script)], check=True, capture_output=True, env=CLEAN_ENV)
    first = pipeline.read("output", name)
    got = pacsv.read_csv(io.BytesIO(first))
    got = got.cast(pa.schema([(f.name, pa.string()) for f in got.schema]))
    largest_difference(got, read_csv_text((tmp_path / "se.csv").read_bytes()), "ranger_se", rel=1e-9)
    pipeline.drop(name, (zoo3 / "ranger_se.csv").read_bytes())
    pipeline.run()
    assert pipeline.read("output", name) == first


def test_predictions_that_depend_on_the_rows_together_are_made_on_the_whole_file(pipeline, zoo3):
    """lm(y ~ I(x - mean(x))): R's answer depends on every row predict() gets, and scorer's
    used to depend on each batch (abs 7.7 at batches of 10). Publishing finds it by test
    predictions, and the file is predicted in one call, as R predicts it."""
    card = pipeline.publish(zoo3 / "formula_over_rows.rds", "centred")
    assert card["rowwise"] is False and card["random"] is False
    pipeline.drop("centred/new.csv", (zoo3 / "formula_over_rows.csv").read_bytes())
    report = pipeline.run(batch_rows=7)
    assert report.inputs[0].status == "scored"
    got = pacsv.read_csv(io.BytesIO(pipeline.read("output", "centred/new.csv")))
    got = got.cast(pa.schema([(f.name, pa.string()) for f in got.schema]))
    largest_difference(got, read_csv_text((zoo3 / "formula_over_rows.expected.csv").read_bytes()), "centred", 1e-9)


def test_each_http_request_of_such_a_model_is_predicted_alone(pipeline, zoo3, tmp_path):
    """Requests are gathered into one predict() call only when a row's prediction is its
    own: two requests of this model sent together each get R's answer on their rows."""
    from concurrent.futures import ThreadPoolExecutor

    from test_serve import Served

    pipeline.publish(zoo3 / "formula_over_rows.rds", "centred")
    rows = read_csv_text((zoo3 / "formula_over_rows.csv").read_bytes())["x"].to_pylist()
    halves = [rows[:20], rows[20:]]
    script = tmp_path / "halves.R"
    script.write_text(f"""m <- readRDS("{zoo3 / 'formula_over_rows.rds'}")
for (h in list(c({", ".join(halves[0])}), c({", ".join(halves[1])})))
  cat(formatC(predict(m, data.frame(x = h)), digits = 17, format = "g"), "\\n")
""")
    expected = [[float(v) for v in line.split()] for line in subprocess.run(
        ["Rscript", str(script)], check=True, capture_output=True, text=True, env=CLEAN_ENV).stdout.splitlines()]
    served = Served(pipeline.settings, SCORER_SERVE_GATHER_MS="300")
    try:
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda h: served.post("centred", [{"x": float(v)} for v in h]), halves))
    finally:
        served.stop()
    for answer, want in zip(answers, expected):
        assert answer.status_code == 200, answer.text
        got = [p["prediction"] for p in answer.json()["predictions"]]
        assert all(abs(g - w) <= 1e-9 * max(abs(w), 1) for g, w in zip(got, want)), (got, want)


def test_a_level_spelled_na_is_that_level_and_the_token_list_is_a_setting(pipeline, zoo3):
    """A region called NA: in that column "NA" is the model's level (R's read.csv would
    read NA, and the rows got NA predictions); elsewhere a missing value, as the tokens of
    SCORER_NA_VALUES say."""
    card = pipeline.publish(zoo3 / "level_na.rds", "regions")
    assert {f["name"]: f["levels"] for f in card["input_schema"]}["region"][0] == "NA"
    pipeline.drop("regions/a.csv", b"region,x\nNA,1.5\nEU,n/a\nAPAC,NA\n")
    item = pipeline.run(na_values=("NA", "n/a")).inputs[0]
    assert item.status == "scored" and item.rows_scored == 3, item.error
    out = pipeline.read("output", "regions/a.csv").decode().splitlines()
    assert out[1].startswith('"NA","1.5",') and out[2].split(",")[-1] == "" and out[3].split(",")[-1] == ""


def test_mixed_models_and_s4_classes_record_the_package_that_defines_them(pipeline, zoo3):
    lmer = pipeline.publish(zoo3 / "lmer.rds", "sleep")
    assert "lme4" in lmer["top_packages"]
    assert {f["name"]: (f["class"], bool(f.get("grouping"))) for f in lmer["input_schema"]} == {
        "Days": ("numeric", False), "Subject": ("factor", True)}
    loose = pipeline.publish(zoo3 / "lmer.rds", "sleep-new", predict_args=["allow.new.levels=TRUE"])
    assert {f["name"]: f["class"] for f in loose["input_schema"]}["Subject"] == "character"
    ksvm = pipeline.publish(zoo3 / "ksvm_prob.rds", "iris", "probabilities")
    assert "kernlab" in ksvm["top_packages"] and ksvm["prediction_columns"] == ["setosa", "versicolor", "virginica"]


def test_naivebayes_levels_that_look_like_numbers_are_levels(pipeline, zoo3):
    card = pipeline.publish(zoo3 / "naivebayes_raw.rds", "nb", "raw")
    assert {f["name"]: (f["class"], f["levels"]) for f in card["input_schema"]} == {
        "x": ("numeric", None), "grade": ("factor", ["2", "10", "1"])}


@pytest.mark.parametrize("case,words", [("smooth_spline", "predict(fit, x = data$x)"),
                                        ("arima", "n.ahead = horizon")])
def test_forecasts_saved_as_models_are_refused_with_an_r_function_that_works(pipeline, zoo3, case, words):
    with pytest.raises(ModelError) as err:
        pipeline.publish(zoo3 / f"{case}.rds", case.replace("_", "-"))
    assert "R function" in err.value.hint and words in err.value.hint


def test_a_matrix_predictor_is_refused_with_the_way_that_works(pipeline, zoo3):
    with pytest.raises(ModelError, match="'NIR' as a matrix") as err:
        pipeline.publish(zoo3 / "plsr_matrix.rds", "nir")
    assert "columns as variables" in err.value.hint


def test_an_argument_predict_ignores_is_refused_and_one_it_passes_on_is_kept(pipeline, zoo3):
    """partykit's predict.party() names no type argument but passes its ... on, and uses
    type = "prob"; a test prediction decides, not the signature."""
    card = pipeline.publish(zoo3 / "ctree_prob.rds", "tree", "prob")
    assert card["prediction_columns"] == ["setosa", "versicolor", "virginica"]
    with pytest.raises(ConfigError, match="went unused"):
        pipeline.publish(zoo3 / "formula_pi.rds", "waves", predict_args=["probability=TRUE"])


def test_an_r_function_gets_text_columns_as_text_and_writes_a_difftime_in_its_units(pipeline, tmp_path,
                                                                                   monkeypatch):
    """Codes with leading zeros arrived as numbers, with no way to ask for text; a difftime
    was written as microseconds (3600000000 for an hour). And scorer.predict() on an R
    function's name raised an AttributeError: it runs score() on the frame."""
    import scorer
    from scorer.online import api

    from conftest import env_for

    script = tmp_path / "codes.R"
    script.write_text('score <- function(data) data.frame(code = data$code, kind = class(data$code), '
                      'gap = as.difftime(data$hours, units = "hours"))\n')
    pipeline.publish(script, "codes", text=["code"])
    pipeline.drop("codes/a.csv", b"code,hours\n00017,1\n00200,2.5\n")
    item = pipeline.run().inputs[0]
    assert item.status == "scored", item.error
    lines = pipeline.read("output", "codes/a.csv").decode().splitlines()
    assert lines[1:] == ['"00017","character",1', '"00200","character",2.5'], lines
    for k, v in env_for(pipeline.settings).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(api, "_registry", [])
    got, rejected = scorer.predict("codes", pa.table({"code": ["00017"], "hours": [3.0]}))
    assert got.to_pylist() == [{"code": "00017", "kind": "character", "gap": 3.0}] and rejected.num_rows == 0


def test_quantile_regression_columns_are_named_by_their_tau(pipeline, tmp_path):
    """quantreg's predict() names its columns "tau= 0.1", "tau= 0.5": the trial found them
    written with R's raw names (prediction_tau= 0.1); they are prediction_tau_0.1, ..."""
    fit = tmp_path / "fit.R"
    fit.write_text("suppressMessages(library(quantreg)); a <- commandArgs(TRUE)\n"
                   "m <- rq(mpg ~ wt, tau = c(0.1, 0.5), data = mtcars); saveRDS(m, a[[1]])\n"
                   "d <- mtcars[1:5, 'wt', drop = FALSE]; write.csv(d, a[[2]], row.names = FALSE)\n"
                   "p <- predict(m, d); write.csv(data.frame(lo = formatC(p[, 1], digits = 17, format = 'g'),\n"
                   "  mid = formatC(p[, 2], digits = 17, format = 'g')), a[[3]], row.names = FALSE)\n")
    rds, data, want = tmp_path / "rq.rds", tmp_path / "new.csv", tmp_path / "want.csv"
    subprocess.run(["Rscript", str(fit), str(rds), str(data), str(want)], check=True, env=CLEAN_ENV)
    pipeline.publish(rds, "rq")
    pipeline.drop("rq/new.csv", data.read_bytes())
    assert pipeline.run().inputs[0].status == "scored"
    got = pacsv.read_csv(io.BytesIO(pipeline.read("output", "rq/new.csv")))
    assert got.column_names == ["wt", "prediction_tau_0.1", "prediction_tau_0.5"]
    r = pacsv.read_csv(want)
    expected = pa.table({"prediction_tau_0.1": r["lo"], "prediction_tau_0.5": r["mid"]})
    print(f"\nzoo3 rq_taus: largest relative difference from R {largest_difference(got, expected, 'rq', 1e-9):.2e}")
