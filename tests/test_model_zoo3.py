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
from test_model_zoo import largest_difference

#: case -> publish options (scorer.cards.Options fields)
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
    "svm_decision": {"predict_args": ["decision.values=TRUE"]},
    "ranger_se": {"predict_type": "se"},
    "posixct_local_hour": {},
    "formula_over_rows": {},
    "level_na": {},
    "formula_pi": {},
    "caret_xy_factor": {},
    "survreg_quantiles": {"predict_type": "quantile", "predict_args": ["p=c(0.1, 0.5, 0.9)"]},
    "coxph_expected": {"predict_type": "expected"},
}


@pytest.fixture(scope="session")
def zoo3(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo3")
    done = subprocess.run(["Rscript", str(ROOT / "tests" / "r" / "fit_zoo3.R"), str(out)], capture_output=True,
                          text=True, env=dict(CLEAN_ENV, TZ="UTC"))
    assert done.returncode == 0, done.stderr
    return out


def score(pipeline, zoo3, case: str, **options):
    card = pipeline.publish(zoo3 / f"{case}.rds", case.replace("_", "-"), **options)
    name = f"{card['name']}/new.csv"
    pipeline.drop(name, (zoo3 / f"{case}.csv").read_bytes())
    report = pipeline.run()
    return card, report.inputs[0], name


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
