"""Publishing models: the card, immutable versions, refusals and warnings."""

from __future__ import annotations

import subprocess

import pytest

from scorer.errors import ConfigError, ModelError, ModelLoadError, ModelNotFound
from scorer.models.registry import Registry, sha256_of

from conftest import CLEAN_ENV, scorer_cli


def test_card_records_checksum_class_versions_type_and_schema_from_the_model(pipeline, fitted):
    card = pipeline.publish(fitted / "polr.rds", "housing", "probs")
    assert card["version"] == 1
    assert card["sha256"] == sha256_of((fitted / "polr.rds").read_bytes())
    assert card["r_class"] == ["polr"]
    assert card["r_version"].startswith("4.")
    assert set(card["packages"]) == {"MASS"} and card["packages"]["MASS"]
    assert card["predict_type"] == "probs"
    assert card["input_schema"] == [
        {"name": "Infl", "class": "factor", "levels": ["Low", "Medium", "High"]},
        {"name": "Type", "class": "factor", "levels": ["Tower", "Apartment", "Atrium", "Terrace"]},
        {"name": "Cont", "class": "factor", "levels": ["Low", "High"]},
    ]
    assert pipeline.read_json("models", "housing/v1/card.json") == card


@pytest.mark.parametrize("case,classes,packages", [
    ("randomforest", {"Sepal.Length": "numeric"}, {"randomForest"}),
    ("ranger", {"Petal.Width": "unknown"}, {"ranger"}),  # ranger keeps the names only
    ("multinom", {"Sepal.Width": "numeric"}, {"nnet"}),
    ("rpart_class", {"Petal.Length": "numeric"}, {"rpart"}),
    ("lm", {"wt": "numeric", "cyl": "any", "hp": "any"}, set()),
    ("lm_date_logical", {"t": "Date", "flag": "logical"}, set()),
])
def test_schema_and_packages_are_taken_from_each_family(pipeline, fitted, case, classes, packages):
    card = pipeline.publish(fitted / f"{case}.rds", case.replace("_", "-"))
    got = {f["name"]: f["class"] for f in card["input_schema"]}
    assert classes.items() <= got.items()
    assert set(card["packages"]) == packages


def test_versions_are_immutable_and_the_newest_is_current(pipeline, fitted):
    reg = Registry(pipeline.store)
    first = pipeline.publish(fitted / "glm_binomial.rds", "m")
    second = pipeline.publish(fitted / "glm_poisson.rds", "m")
    assert (first["version"], second["version"]) == (1, 2)
    assert reg.versions("m") == [1, 2]
    assert reg.card("m")["sha256"] == second["sha256"]
    assert reg.card("m", 1)["sha256"] == first["sha256"]
    assert pipeline.read("models", "m/v1/model.rds") == (fitted / "glm_binomial.rds").read_bytes()


def test_publish_after_an_interrupted_publish_takes_the_next_free_version(pipeline, fitted):
    pipeline.store.put_bytes(pipeline.settings.models_container, "m/v1/model.rds", b"half-published")
    card = pipeline.publish(fitted / "lm.rds", "m")
    assert card["version"] == 2
    assert Registry(pipeline.store).versions("m") == [2]


def test_object_without_predict_method_is_refused(pipeline, tmp_path):
    rds = tmp_path / "frame.rds"
    subprocess.run(["Rscript", "-e", f"saveRDS(data.frame(a = 1:3), '{rds}')"], check=True, env=CLEAN_ENV)
    with pytest.raises(ModelError, match="data.frame has no predict\\(\\) method"):
        pipeline.publish(rds, "frame")
    assert pipeline.names("models") == []


def test_corrupt_rds_is_refused_at_publish_with_rs_message(pipeline, tmp_path):
    bad = tmp_path / "bad.rds"
    bad.write_bytes(b"\x1f\x8b\x08\x00 definitely not a model")
    with pytest.raises(ModelLoadError, match="R could not read the .rds file"):
        pipeline.publish(bad, "bad")


@pytest.mark.parametrize("name", ["../up", "a/b", "", "-x", "x" * 70, 'q"; system("id")'])
def test_unsafe_model_names_are_refused(pipeline, fitted, name):
    with pytest.raises(ConfigError, match="not valid"):
        pipeline.publish(fitted / "lm.rds", name)


def test_unknown_model_lists_what_is_published(pipeline, fitted):
    pipeline.publish(fitted / "lm.rds", "cars")
    with pytest.raises(ModelNotFound) as err:
        Registry(pipeline.store).card("trucks")
    assert "cars" in err.value.hint


def test_publish_warns_when_the_image_package_list_lacks_a_needed_package(settings, fitted, tmp_path):
    listing = tmp_path / "r-packages.txt"
    listing.write_text("r-base-core\nr-cran-mass\n")
    out = scorer_cli(settings, "models", "publish", str(fitted / "ranger.rds"), "--name", "rg",
                     "--package-list", str(listing))
    assert out.returncode == 0, out.stderr
    assert "ranger" in out.stderr and "r-cran-ranger" in out.stderr and str(listing) in out.stderr
    assert "published rg version 1" in out.stdout
    quiet = scorer_cli(settings, "models", "publish", str(fitted / "polr.rds"), "--name", "pl",
                       "--package-list", str(listing))
    assert "warning" not in quiet.stderr


def test_models_list_shows_names_and_versions(settings, fitted):
    scorer_cli(settings, "models", "publish", str(fitted / "lm.rds"), "--name", "cars", check=True)
    scorer_cli(settings, "models", "publish", str(fitted / "lm.rds"), "--name", "cars", check=True)
    out = scorer_cli(settings, "models", "list", check=True).stdout
    assert "cars" in out and "1,2" in out
