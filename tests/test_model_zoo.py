"""Models R users actually save (issue 19), scored through the blob path and
compared with R's own predict() on the same rows held as the model was trained.

The inputs are CSV text (or Parquet): every factor arrives as its labels, so each
case also proves that no family codes text differently from the factor it was
trained on. The models are fitted by tests/r/fit_zoo.R.
"""

from __future__ import annotations

import io
import math
import subprocess

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from scorer.errors import ConfigError, ModelError

from conftest import CLEAN_ENV, ROOT, scorer_cli
from test_model_families import read_csv_text

SIZE_LEVELS = "size=small,medium,large"

#: case -> publish options (scorer.models.cards.Options fields)
CASES = {
    "gbm_factor": {"predict_args": ["n.trees=60"]},
    "ranger_order": {},
    "ranger_ignore": {"levels": [SIZE_LEVELS]},
    "svm_reg": {"levels": [SIZE_LEVELS]},
    "svm_prob": {"levels": [SIZE_LEVELS], "predict_args": ["probability=TRUE"]},
    "rf_formula_factor": {},
    "rf_xy_factor": {},
    "nnet_factor": {},
    "caret_factor": {},
    "rpart_factor": {},
    "lda": {},
    "qda": {},
    "lm_ns": {},
    "lm_bs": {},
    "glm_offset": {},
    "lm_posixct": {},
    "lm_character_one_value": {},
    "lm_rank_deficient": {},
    "coxph": {"predict_type": "risk"},
    "lm_european": {},
}


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    done = subprocess.run(["Rscript", str(ROOT / "tests" / "r" / "fit_zoo.R"), str(out)], capture_output=True,
                          text=True, env=dict(CLEAN_ENV, TZ="UTC"))
    assert done.returncode == 0, done.stderr
    return out


def largest_difference(got: pa.Table, expected: pa.Table, case: str, rel: float = 1e-10) -> float:
    """Check every expected column against the output; return the largest
    relative difference seen."""
    assert got.num_rows == expected.num_rows, case
    worst = 0.0
    for name in expected.column_names:
        assert name in got.column_names, f"{case}: no column {name} in {got.column_names}"
        for i, (g, e) in enumerate(zip(got[name].to_pylist(), expected[name].to_pylist())):
            if e is None:
                assert g is None, f"{case} row {i + 1} {name}"
                continue
            try:
                ef = float(e)
            except ValueError:
                assert g == e, f"{case} row {i + 1} {name}: {g!r} != {e!r}"
                continue
            gf = float(str(g).replace(",", "."))
            diff = abs(gf - ef) / max(abs(ef), 1e-300)
            worst = max(worst, diff if ef != 0 else abs(gf))
            assert math.isclose(gf, ef, rel_tol=rel, abs_tol=1e-13), f"{case} row {i + 1} {name}: {gf} != {ef}"
    return worst


def score(pipeline, zoo, case: str, data: bytes | None = None, ext: str = "csv", **options):
    card = pipeline.publish(zoo / f"{case}.rds", case.replace("_", "-"), **options)
    name = f"{card['name']}/new.{ext}"
    pipeline.drop(name, data if data is not None else (zoo / f"{case}.csv").read_bytes())
    report = pipeline.run()
    return card, report.inputs[0], name


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_case_equals_r_predict_on_the_training_types(pipeline, zoo, case, capsys):
    card, item, name = score(pipeline, zoo, case, **CASES[case])
    assert item.status == "scored", item.error
    raw = pipeline.read("output", name)
    delimiter = ";" if case == "lm_european" else ","
    got = pacsv.read_csv(io.BytesIO(raw), parse_options=pacsv.ParseOptions(delimiter=delimiter),
                         convert_options=pacsv.ConvertOptions(strings_can_be_null=True,
                                                              column_types={}))
    got = got.cast(pa.schema([(f.name, pa.string()) for f in got.schema]))
    worst = largest_difference(got, read_csv_text((zoo / f"{case}.expected.csv").read_bytes()), case)
    with capsys.disabled():
        print(f"\nzoo {case}: largest relative difference from R {worst:.2e}")


def test_gbm_gets_its_predict_argument_and_its_levels(pipeline, zoo):
    card, item, _ = score(pipeline, zoo, "gbm_factor", predict_args=["n.trees=60"])
    assert card["predict_args"] == [{"name": "n.trees", "type": "double", "value": 60.0}]
    assert {f["name"]: f["levels"] for f in card["input_schema"]}["size"] == ["small", "medium", "large"]


def test_ranger_without_recorded_levels_refuses_text_loudly(pipeline, zoo):
    card, item, _ = score(pipeline, zoo, "ranger_ignore")
    assert {f["name"]: f["class"] for f in card["input_schema"]} == {"x": "unknown", "size": "unknown"}
    assert item.status == "quarantined"
    assert item.error["kind"] == "SchemaError" and "--levels size=" in item.error["what_to_do"]


def test_svm_with_a_factor_and_no_levels_is_refused_at_publish(pipeline, zoo):
    with pytest.raises(ModelError, match="'size'") as err:
        pipeline.publish(zoo / "svm_reg.rds", "svm")
    assert "--levels" in err.value.hint
    assert pipeline.names("models") == []


def test_svm_probability_type_is_refused_with_the_way_that_works(pipeline, zoo):
    # predict.svm() names no type, and its ... takes it unused: a test prediction shows it (issue 27)
    with pytest.raises(ConfigError, match="has no type argument, and the one it was given went unused") as err:
        pipeline.publish(zoo / "svm_prob.rds", "svm", "prob", levels=[SIZE_LEVELS])
    assert "probability=TRUE" in err.value.hint


def test_an_argument_predict_does_not_take_is_refused_at_publish(pipeline, zoo):
    with pytest.raises(ConfigError, match="has no probability argument, and the one it was given went unused"):
        pipeline.publish(zoo / "lm_ns.rds", "m", predict_args=["probability=TRUE"])
    with pytest.raises(ConfigError, match="accepts type"):
        pipeline.publish(zoo / "glm_offset.rds", "m", "prob")


def test_formula_packages_are_recorded_and_attached(pipeline, zoo):
    card, item, _ = score(pipeline, zoo, "lm_ns")
    assert card["attach"] == ["splines"] and "splines" not in card["top_packages"]


def test_offset_variables_are_inputs(pipeline, zoo):
    card = pipeline.publish(zoo / "glm_offset.rds", "off")
    assert [f["name"] for f in card["input_schema"]] == ["x", "exposure"]


def test_list_results_become_columns(pipeline, zoo):
    card, item, name = score(pipeline, zoo, "lda")
    cols = pacsv.read_csv(io.BytesIO(pipeline.read("output", name))).column_names
    assert cols[-4:] == ["prediction_class", "prediction_posterior_lo", "prediction_posterior_hi", "prediction_x_LD1"]
    assert card["prediction_columns"] == ["class", "posterior_lo", "posterior_hi", "x_LD1"]


def test_posixct_from_parquet_timestamps_equals_r(pipeline, zoo):
    text = pacsv.read_csv(zoo / "lm_posixct.csv", convert_options=pacsv.ConvertOptions(
        column_types={"ts": pa.timestamp("s", tz="UTC")}))
    buf = io.BytesIO()
    pq.write_table(text, buf)
    card, item, name = score(pipeline, zoo, "lm_posixct", data=buf.getvalue(), ext="parquet")
    assert {f["name"]: (f["class"], f.get("tz")) for f in card["input_schema"]} == {"ts": ("POSIXct", "UTC")}
    got = pq.read_table(io.BytesIO(pipeline.read("output", name)))
    got = got.cast(pa.schema([(f.name, pa.string()) for f in got.schema]))
    largest_difference(got, read_csv_text((zoo / "lm_posixct.expected.csv").read_bytes()), "lm_posixct parquet")


def test_r_warnings_reach_the_report(pipeline, zoo):
    card, item, _ = score(pipeline, zoo, "lm_rank_deficient")
    assert item.status == "scored"
    assert any("rank-deficient" in w for w in item.warnings), item.warnings


def test_european_csv_is_read_and_written_with_its_decimal_comma(pipeline, zoo):
    card, item, name = score(pipeline, zoo, "lm_european")
    assert item.csv == {"delimiter": ";", "decimal": ","}
    first = pipeline.read("output", name).decode().splitlines()[1].split(";")
    assert first[:2] == ['"2,62"', '"110"'] and "," in first[-1] and "." not in first[-1], first


def test_predict_package_is_found_without_being_named(pipeline, zoo):
    card = pipeline.publish(zoo / "coxph.rds", "cox", "risk")
    assert "survival" in card["packages"] and card["top_packages"] == ["survival"]


def test_glmnet_is_refused_at_publish_pointing_to_an_r_function(pipeline, tmp_path):
    rds = tmp_path / "glmnet.rds"
    subprocess.run(["Rscript", "-e", "suppressMessages(library(glmnet)); set.seed(1); x <- matrix(rnorm(200), 50); "
                    f"y <- rnorm(50); saveRDS(cv.glmnet(x, y, nfolds = 3), '{rds}')"], check=True, env=CLEAN_ENV)
    with pytest.raises(ModelError, match="newx") as err:
        pipeline.publish(rds, "net")
    assert "score <- function(data)" in err.value.hint


def test_publish_warns_only_about_top_level_packages(settings, tmp_path):
    rds = tmp_path / "caret.rds"
    subprocess.run(["Rscript", "-e", "suppressMessages(library(caret)); "
                    "m <- train(mpg ~ wt + hp, mtcars, method = 'lm', trControl = trainControl(method = 'none')); "
                    f"saveRDS(m, '{rds}')"], check=True, capture_output=True, env=dict(CLEAN_ENV, TZ="UTC"))
    listing = tmp_path / "r-packages.txt"
    listing.write_text("r-base-core\n")
    out = scorer_cli(settings, "models", "publish", str(rds), "--name", "ct", "--package-list", str(listing))
    assert out.returncode == 0, out.stderr
    (line,) = [w for w in out.stderr.splitlines() if "does not list" in w]
    assert "r-cran-caret" in line and line.count("r-cran-") == 1, line
    assert "systemd" not in out.stderr
