"""The run report people read (issue 11): the estimated cost, reports/<run id>.html
opened in headless Chromium, and `scorer runs` / `scorer report` on empty, one-run
and many-run reports containers."""

from __future__ import annotations

import json
import math
import re
import struct
import zlib

import pytest

from conftest import scorer_cli
from test_drift import frame, to_csv, trained  # noqa: F401  (the fixture)


def drifted_run(pipeline, trained, **settings):  # noqa: F811
    pipeline.publish(trained / "glm.rds", "churn", reference=trained / "train.csv")
    pipeline.drop("churn/shifted.csv", to_csv(frame(3000, 3, shift=1.0, levels="ab")))
    pipeline.drop("churn/same.csv", to_csv(frame(3000, 2)))
    pipeline.drop("churn/bad <b>.csv", b"x1\n1\n")  # quarantined; its name needs escaping in HTML
    return pipeline.run(**settings)


# -- cost ---------------------------------------------------------------------------------

def test_the_report_estimates_the_runs_cost_from_the_containers_size_and_the_rates(pipeline, trained):  # noqa: F811
    pipeline.publish(trained / "glm.rds", "churn")
    pipeline.drop("churn/a.csv", to_csv(frame(100, 1)))
    report = pipeline.run(cpu_cores=2.0, memory_gb=4.0, price_vcpu_second=0.00001125, price_gb_second=0.0000012361)
    cost = report.cost
    assert cost["cpu_cores"] == 2.0 and cost["memory_gb"] == 4.0 and cost["seconds"] > 0
    assert math.isclose(cost["usd"], cost["seconds"] * (2 * 0.00001125 + 4 * 0.0000012361), rel_tol=1e-3)
    assert "image" in cost["note"] and "Logic App" in cost["note"]
    assert pipeline.reports()[0]["cost"] == cost
    unknown = pipeline.run().cost
    assert unknown["usd"] is None and "SCORER_CPU_CORES" in unknown["note"]


# -- the page -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    from chromium import Chromium
    try:
        b = Chromium()
    except FileNotFoundError:
        pytest.skip("no chromium here: scripts/setup installs Debian's (tests/r-packages.txt)")
    yield b
    b.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def png_colours(data: bytes) -> int:
    """How many distinct pixel values a PNG's (filtered) scanlines hold, roughly: a
    blank image has one or two."""
    idat = b"".join(data[i + 8:i + 8 + struct.unpack(">I", data[i:i + 4])[0]]
                    for i in [m.start() - 4 for m in re.finditer(b"IDAT", data)])
    raw = zlib.decompress(idat)
    return len(set(raw[j:j + 3] for j in range(0, min(len(raw), 600_000), 3)))


def test_the_page_opens_offline_with_no_request_or_console_error_and_shows_the_flagged_plot(
        pipeline, trained, browser, tmp_path):  # noqa: F811
    report = drifted_run(pipeline, trained, cpu_cores=1.0, memory_gb=2.0)
    html = pipeline.read("reports", f"{report.run_id}.html")
    page = tmp_path / "page.html"
    page.write_bytes(html)
    seen, tab = browser.visit(page.as_uri())

    assert seen.requests == [page.as_uri()], seen.requests       # the page itself, nothing else
    assert seen.failed == [] and seen.exceptions == []
    assert [c for c in seen.console if c["type"] in ("error", "warning")] == []
    assert [e for e in seen.log if e["level"] in ("error", "warning")] == []

    assert browser.evaluate("document.title", tab).startswith(f"scorer run {report.run_id}")
    flagged = browser.evaluate("[...document.querySelectorAll('tr.flagged td:first-child')]"
                               ".map(td => td.textContent)", tab)
    assert {t.rstrip(" ⚑") for t in flagged} >= {"x1", "f"}
    # the flagged variable's plot: drawn, with a bar per bin and reference against now
    box = browser.evaluate("(() => { const s = document.querySelector('svg[data-variable=\"x1\"]');"
                           " const r = s.getBoundingClientRect();"
                           " return {x: r.x + scrollX, y: r.y + scrollY, width: r.width, height: r.height,"
                           " bars: s.querySelectorAll('rect').length}; })()", tab)
    assert box["width"] > 150 and box["height"] > 150 and box["bars"] >= 2 * 10 + 2
    shot = browser.screenshot(tab, {k: box[k] for k in ("x", "y", "width", "height")})
    (tmp_path / "x1.png").write_bytes(shot)
    assert png_colours(shot) > 3, "the plot's screenshot is blank"
    assert "churn/bad &lt;b&gt;.csv" in html.decode() and "<b>.csv" not in html.decode()
    whole = browser.screenshot(tab)
    (tmp_path / "page.png").write_bytes(whole)
    assert png_size(whole)[1] > 900

    # on a phone-sized screen nothing but the tables' own scroll boxes is wider than the screen
    phone, tab = browser.visit(page.as_uri(), width=390, height=800)
    assert browser.evaluate("document.documentElement.scrollWidth", tab) <= 390


def test_the_harness_would_see_a_request_the_page_made(browser, tmp_path):
    """The check above is only worth something if a request would be caught: a page
    with an image from another host, under the same policy, shows it."""
    from scorer.monitoring.page import CSP
    page = tmp_path / "leaky.html"
    page.write_text(f'<!DOCTYPE html><meta http-equiv="Content-Security-Policy" content="{CSP}">'
                    '<img src="http://127.0.0.1:9/x.png">')
    seen, _ = browser.visit(page.as_uri())
    assert any(e["level"] == "error" and "Content Security Policy" in e["text"] for e in seen.log) \
        or "http://127.0.0.1:9/x.png" in seen.requests


# -- scorer runs, scorer report -------------------------------------------------------------

def test_runs_and_report_on_an_empty_reports_container(settings):
    runs = scorer_cli(settings, "runs")
    assert runs.returncode == 0 and "no run reports" in runs.stdout
    rep = scorer_cli(settings, "report")
    assert rep.returncode == 2 and "No run report" in rep.stderr and "scorer run" in rep.stderr


def test_runs_and_report_on_one_run(pipeline, trained, tmp_path):  # noqa: F811
    report = drifted_run(pipeline, trained, cpu_cores=1.0, memory_gb=2.0)
    runs = scorer_cli(pipeline.settings, "runs")
    assert runs.returncode == 0, runs.stderr
    header, line = runs.stdout.strip().splitlines()
    assert header.split()[:3] == ["RUN", "STARTED", "OUTCOME"]
    assert line.startswith(report.run_id) and "inputs quarantined" in line and "$" in line
    summary = scorer_cli(pipeline.settings, "report", "latest")
    assert summary.returncode == 0
    text = summary.stdout
    assert f"run {report.run_id}: inputs quarantined (exit status 3)" in text
    assert "- churn/shifted.csv: scored with churn v1" in text and "drift: " in text and "x1 PSI" in text
    assert "- churn/same.csv: scored" in text and "nothing flagged" in text
    assert "missing required column(s)" in text
    saved = tmp_path / "run.html"
    out = scorer_cli(pipeline.settings, "report", report.run_id, "--html", str(saved))
    assert out.returncode == 0 and saved.read_bytes() == pipeline.read("reports", f"{report.run_id}.html")
    as_json = scorer_cli(pipeline.settings, "report", f"{report.run_id}.json", "--json")
    assert json.loads(as_json.stdout)["run_id"] == report.run_id


def test_runs_and_report_on_many_runs(pipeline, trained):  # noqa: F811
    pipeline.publish(trained / "glm.rds", "churn")
    ids = []
    for k in range(4):
        pipeline.drop(f"churn/{k}.csv", to_csv(frame(50, k)))
        ids.append(pipeline.run().run_id)
    assert ids == sorted(ids)
    runs = scorer_cli(pipeline.settings, "runs", "--top", "3")
    lines = runs.stdout.strip().splitlines()[1:]
    assert [ln.split()[0] for ln in lines] == ids[::-1][:3]
    listed = json.loads(scorer_cli(pipeline.settings, "runs", "--json").stdout)
    assert [r["run_id"] for r in listed] == ids[::-1]
    second = scorer_cli(pipeline.settings, "report", ids[1])
    assert f"run {ids[1]}" in second.stdout and "churn/1.csv" in second.stdout
    missing = scorer_cli(pipeline.settings, "report", ids[1][:-1] + "z")
    assert missing.returncode == 2 and "No run" in missing.stderr and ids[1] in missing.stderr
    bad = scorer_cli(pipeline.settings, "runs", "--top", "0")
    assert bad.returncode == 2 and "--top" in bad.stderr
