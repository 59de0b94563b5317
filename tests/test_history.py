"""A model's life over its runs (issue 33, part 1): its history, written after each run
(reports/models/<name>.json and .html), the index of models (reports/index.html), `scorer
models history`, and the history made again from the run reports."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import scorer_cli
from test_drift import as_float, column, frame, numeric_shares, psi, to_csv, trained  # noqa: F401
from test_outcomes import labels_csv, run_on, with_ids
from test_report_page import browser  # noqa: F401  (the fixture)


def test_a_runs_many_small_inputs_are_taken_together_and_their_psi_is_computed_independently(pipeline, trained):  # noqa: F811
    """Thirty ten-row files, each too small to flag (a PSI over ten rows is noise): taken
    together in the model's entry for the run, x1's shift is flagged, and the PSI is the one
    computed independently over the union of their rows (tests/test_drift.py's oracle)."""
    pipeline.publish(trained / "glm.rds", "churn", reference=trained / "train.csv")
    files = [to_csv(frame(10, 100 + k, shift=1.0)) for k in range(30)]
    for k, data in enumerate(files):
        pipeline.drop(f"churn/store-{k:02d}.csv", data)
    report = pipeline.run()
    assert report.exit_code == 0 and not any((i.drift or {}).get("flagged") for i in report.inputs)
    hist = pipeline.read_json("reports", "models/churn.json")
    (entry,) = hist["runs"]
    assert entry["run_id"] == report.run_id and entry["version"] == 1 and entry["inputs"] == {"scored": 30}
    assert entry["rows_scored"] == 300 and entry["rejected_share"] == 0 and entry["drift_rows"] == 300
    train = as_float(column((trained / "train.csv").read_bytes(), "x1"))
    now = np.concatenate([as_float(column(d, "x1")) for d in files])
    expected = psi(*numeric_shares(train, now))
    assert math.isclose(entry["psi"]["x1"], expected, rel_tol=1e-6)
    assert "x1" in entry["flagged"] and expected >= 0.2
    index = pipeline.read_json("reports", "models/index.json")["models"]["churn"]
    assert index["state"] == "drift" and index["last"]["run_id"] == report.run_id
    assert index["worst_recent"]["variable"] == "x1" and index["worst_recent"]["flagged"]


def test_history_from_the_reports_is_the_history_written_run_by_run(pipeline, trained, settings):  # noqa: F811
    """`scorer models history NAME --rebuild` makes the history again from the run reports
    alone (a run of more inputs than its report lists included: their records beside it),
    equal to the one written after each run; `scorer models history NAME` prints it."""
    from scorer.monitoring.report import RunReport

    pipeline.publish(trained / "glm.rds", "churn", reference=trained / "train.csv")
    listed = RunReport.listed
    RunReport.listed = 3  # a run of more inputs than its report lists
    try:
        for run in range(3):
            for k in range(5):
                pipeline.drop(f"churn/r{run}-{k}.csv", to_csv(frame(40, run * 10 + k, shift=run / 2)))
            pipeline.drop(f"churn/r{run}-bad.csv", b"x1\n1\n")
            pipeline.run()
    finally:
        RunReport.listed = listed
    written = pipeline.read_json("reports", "models/churn.json")
    assert [sum(e["inputs"].values()) for e in written["runs"]] == [6, 6, 6]
    assert [e["inputs"].get("quarantined") for e in written["runs"]] == [1, 1, 1]
    pipeline.store.delete(settings.reports_container, "models/churn.json")
    out = scorer_cli(settings, "models", "history", "churn", "--rebuild")
    assert out.returncode == 0, out.stderr
    rebuilt = pipeline.read_json("reports", "models/churn.json")
    for a, b in zip(written["runs"], rebuilt["runs"]):  # the cost share is the one thing a rebuild may round alike
        assert a == b
    lines = out.stdout.splitlines()
    assert lines[0].startswith("RUN") and len([ln for ln in lines if ln.startswith("20")]) == 3
    assert "rebuilt from 3 run report(s)" in out.stderr


def test_no_history_yet_says_what_makes_one(settings, store):
    out = scorer_cli(settings, "models", "history", "nothing")
    assert out.returncode == 2 and "no history" in out.stderr and "scorer run" in out.stderr


@pytest.mark.slow
def test_the_model_page_and_index_over_40_runs_open_offline_and_link_flagged_runs(
        pipeline, trained, browser, tmp_path):  # noqa: F811
    """40 runs of one model, a day apart, drift rising with time and a new version at run 25,
    and labels for the first 20 runs' rows arriving at the end: the model's page draws every
    run in each small multiple, the threshold, the version change, and its flagged points
    link to run pages that exist; its quality charts draw a point per labelled day; the index
    lists the model as drifting. Opened from files, offline, as a user opens them from blob
    storage."""
    pipeline.publish(trained / "glm.rds", "churn", reference=trained / "train.csv", id_column="id")
    rng = np.random.default_rng(11)
    labels = []
    for run in range(40):
        if run == 25:
            pipeline.publish(trained / "glm.rds", "churn", reference=trained / "train.csv", id_column="id")
        ids = [f"r{run}-{k}" for k in range(400)]
        pipeline.drop(f"churn/day-{run:02d}.csv", with_ids(frame(400, 500 + run, shift=run / 40), ids))
        assert run_on(pipeline, f"2026-10-{run + 1:02d}" if run < 31 else f"2026-11-{run - 30:02d}").exit_code == 0
        if run < 20:
            labels += [(i, int(rng.uniform() < 0.3)) for i in ids]
    for k in range(4):  # four label files, five runs' rows each
        pipeline.store.put_bytes(pipeline.settings.labels_container, f"churn/labels-{k}.csv",
                                 labels_csv(labels[k * 2000:(k + 1) * 2000]))
    assert [i["status"] for i in run_on(pipeline, "2026-11-10").labels] == ["matched"] * 4
    folder = tmp_path / "reports"
    for name in pipeline.names("reports"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(pipeline.read("reports", name))
    hist = pipeline.read_json("reports", "models/churn.json")
    assert len(hist["runs"]) == 40 and [e["version"] for e in hist["runs"]] == [1] * 25 + [2] * 15
    psis = [e["psi"]["x1"] for e in hist["runs"]]
    assert psis[-1] > 0.2 > psis[0] and np.mean(psis[-10:]) > np.mean(psis[:10]) + 0.1  # rising
    flagged_runs = [e["run_id"] for e in hist["runs"] if "x1" in e["flagged"]]
    assert flagged_runs

    seen, tab = browser.visit((folder / "models" / "churn.html").as_uri())
    assert seen.requests == [(folder / "models" / "churn.html").as_uri()] and not seen.exceptions
    points = browser.evaluate("document.querySelectorAll('svg[data-variable=\"x1\"] circle').length", tab)
    assert points == 40
    assert browser.evaluate("document.querySelectorAll('svg[data-variable=\"x1\"] line.threshold').length", tab) == 1
    assert browser.evaluate("document.querySelectorAll('svg[data-variable=\"x1\"] line.version').length", tab) == 1
    links = browser.evaluate("[...document.querySelectorAll('svg[data-variable=\"x1\"] a.flagged')]"
                             ".map(a => a.getAttribute('href'))", tab)
    assert len(links) == len(flagged_runs)
    for href in links:  # relative to the model's page: the run pages beside reports/models/
        target = (folder / "models" / href).resolve()
        assert target.exists() and target.parent == folder.resolve(), href
        assert target.name.removesuffix(".html") in flagged_runs
    for metric in ("accuracy", "log_loss", "auc"):  # a point per labelled day, the version in its title
        circles = browser.evaluate(f"[...document.querySelectorAll('svg[data-quality=\"{metric}\"] circle.current')]"
                                   ".map(c => c.textContent)", tab)
        assert len(circles) == 20 and all("(v1)" in c and "over 400 rows" in c for c in circles), circles[:2]
    assert hist["outcomes"]["rows"] == 8000 and hist["outcomes"]["files"] == 4
    shot = browser.screenshot(tab)
    assert len(shot) > 10_000

    seen, tab = browser.visit((folder / "index.html").as_uri())
    assert not seen.exceptions and len(seen.requests) == 1
    row = browser.evaluate("document.querySelector('tr[data-model=\"churn\"]').innerText", tab)
    assert "drift" in row and "x1" in row
    href = browser.evaluate("document.querySelector('tr[data-model=\"churn\"] a').href", tab)
    assert href.endswith("/models/churn.html")
