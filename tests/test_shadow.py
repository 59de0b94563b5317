"""A challenger in the shadow (issue 33, part 3): a version published with --shadow scores
each input beside the current one, into shadow/, compared row by row; it never touches the
current version's output, a failing shadow never fails an input, and promote and --off work."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pyarrow.csv as pacsv

from conftest import Pipeline, scorer_cli
from test_drift import frame, numeric_shares, psi, to_csv, trained  # noqa: F401  (the fixture)


def pipeline_of(settings, suffix: str) -> Pipeline:
    from scorer.storage import Store, connect

    s = dataclasses.replace(settings, **{f"{c}_container": f"{getattr(settings, f'{c}_container')}-{suffix}"
                                         for c in ("models", "input", "output", "archive", "quarantine", "reports",
                                                   "shadow", "labels")})
    store = Store(connect(s), s)
    store.ensure_containers()
    return Pipeline(s, store)


def drop_days(p: Pipeline) -> dict[str, bytes]:
    files = {f"churn/day-{k}.csv": to_csv(frame(300, 40 + k, shift=k / 4)) for k in range(3)}
    files["churn/tiny.csv"] = to_csv(frame(5, 99))
    for name, data in files.items():
        p.drop(name, data)
    return files


def predictions(data: bytes) -> np.ndarray:
    return pacsv.read_csv(io.BytesIO(data)).column("prediction").to_numpy()


def test_a_shadow_leaves_the_outputs_byte_for_byte_and_its_comparison_is_computed_independently(settings, trained):  # noqa: F811
    """The same inputs scored with and without a shadow: the same outputs and archive, byte
    for byte; the shadow's outputs in shadow/ and, per input, the mean and largest absolute
    difference and the PSI between the two versions' predictions, each as computed here from
    the two output files."""
    with_shadow, without = pipeline_of(settings, "s"), pipeline_of(settings, "n")
    for p in (with_shadow, without):
        p.publish(trained / "glm.rds", "churn")
    with_shadow.publish(trained / "lm.rds", "churn", shadow=True)
    runs = {}
    for p in (with_shadow, without):
        files = drop_days(p)
        report = p.run()
        assert report.exit_code == 0
        runs[id(p)] = report
    for name in files:
        assert with_shadow.read("output", name) == without.read("output", name)
        assert with_shadow.read("archive", name) == without.read("archive", name)
    assert without.names("shadow") == [] and sorted(with_shadow.names("shadow")) == sorted(files)
    for item in runs[id(with_shadow)].inputs:
        sh = item.shadow
        assert item.model_version == 1 and sh["version"] == 2 and "error" not in sh, sh
        mine, theirs = predictions(with_shadow.read("output", item.blob)), predictions(with_shadow.read("shadow", item.blob))
        col = sh["columns"]["prediction"]
        assert sh["rows_compared"] == len(mine) == col["rows"]
        assert math.isclose(col["mean_abs_diff"], float(np.mean(np.abs(mine - theirs))), rel_tol=1e-9)
        assert math.isclose(col["max_abs_diff"], float(np.max(np.abs(mine - theirs))), rel_tol=1e-9)
        assert math.isclose(col["psi"], psi(*numeric_shares(mine, theirs)), rel_tol=1e-9, abs_tol=1e-12)
        assert col["changed_share"] == 0
        assert with_shadow.store.properties(with_shadow.settings.shadow_container, item.blob).metadata[
            "scorer_model_version"] == "2"
    page = with_shadow.read("reports", f"{runs[id(with_shadow)].run_id}.html").decode()
    assert "Shadow: version 2" in page and 'table class="shadow"' in page
    (entry,) = with_shadow.read_json("reports", "models/churn.json")["runs"]  # the run, in the model's history
    sh = entry["shadow"]
    assert sh["version"] == 2 and sh["inputs"] == 4 and sh["failed"] == 0 and sh["rows_compared"] == 905
    every = [item.shadow["columns"]["prediction"] for item in runs[id(with_shadow)].inputs]
    assert math.isclose(sh["columns"]["prediction"]["max_abs_diff"], max(c["max_abs_diff"] for c in every))
    assert math.isclose(sh["columns"]["prediction"]["mean_abs_diff"],
                        sum(c["mean_abs_diff"] * c["rows"] for c in every) / 905, rel_tol=1e-9)
    assert 'data-shadow="prediction"' in with_shadow.read("reports", "models/churn.html").decode()


def test_a_failing_shadow_is_reported_and_the_input_still_archived_with_the_current_versions_output(
        settings, trained, fitted):  # noqa: F811
    """A shadow that needs columns the inputs lack fails on every input: each is scored by
    the current version, archived, its run exits 0, and the shadow's error is in the report
    and the page; nothing is left in shadow/."""
    p = pipeline_of(settings, "f")
    p.publish(trained / "glm.rds", "churn")
    p.publish(fitted / "glm_gamma.rds", "churn", shadow=True)  # wants wt and hp
    files = drop_days(p)
    report = p.run()
    assert report.exit_code == 0 and sorted(p.names("archive")) == sorted(files)
    assert sorted(p.names("output")) == sorted(files) and p.names("shadow") == []
    for item in report.inputs:
        assert item.status == "scored" and item.shadow["error"]["kind"] == "SchemaError", item.shadow
        assert any("shadow (version 2) failed" in w for w in item.warnings)


def test_promote_and_off(settings, trained):  # noqa: F811
    """--shadow publishes a version that is not current; promote makes it current and ends
    the shadow; --off stops a shadow without ever making it current."""
    p = pipeline_of(settings, "p")
    p.publish(trained / "glm.rds", "churn")
    out = scorer_cli(p.settings, "models", "publish", str(trained / "lm.rds"), "--name", "churn", "--shadow")
    assert out.returncode == 0 and "version 2 is the shadow" in out.stdout, out.stderr
    from scorer.models.registry import Registry
    reg = Registry(p.store)
    assert reg.card("churn")["version"] == 1 and reg.catalog() == {"churn": [1]}
    p.drop("churn/a.csv", to_csv(frame(50, 1)))
    item = p.run().inputs[0]
    assert item.model_version == 1 and item.shadow["version"] == 2

    out = scorer_cli(p.settings, "models", "promote", "churn")
    assert out.returncode == 0 and "version 2 is current" in out.stdout, out.stderr
    assert reg.card("churn")["version"] == 2 and reg.current_and_shadow("churn")[1] is None
    p.drop("churn/b.csv", to_csv(frame(50, 2)))
    item = p.run().inputs[0]
    assert item.model_version == 2 and item.shadow is None

    p.publish(trained / "glm.rds", "churn", shadow=True)  # version 3
    assert scorer_cli(p.settings, "models", "shadow", "churn", "--off").returncode == 0
    assert reg.card("churn")["version"] == 2 and reg.current_and_shadow("churn")[1] is None  # held, never current
    p.drop("churn/c.csv", to_csv(frame(50, 3)))
    item = p.run().inputs[0]
    assert item.model_version == 2 and item.shadow is None
    out = scorer_cli(p.settings, "models", "promote", "churn")
    assert out.returncode == 2 and "no shadow" in out.stderr
    out = scorer_cli(p.settings, "models", "shadow", "churn", "--version", "2")
    assert out.returncode == 2 and "current one" in out.stderr
    assert scorer_cli(p.settings, "models", "shadow", "churn", "--version", "3").returncode == 0
    assert reg.current_and_shadow("churn")[1]["version"] == 3 and reg.card("churn")["version"] == 2
