"""A model's page over its runs, ``reports/models/<name>.html``, and the index of models,
``reports/index.html``: self-contained like a run's page (scorer.monitoring.page: inline
CSS and SVG, no script, a Content-Security-Policy that forbids every request). Pure: a
model's history (scorer.monitoring.history) in, text out.

The model's page, top to bottom: its state and last run; small multiples over its runs
(oldest left): rows scored, the share of rows rejected, its share of the run's estimated
cost; then each variable's and prediction column's PSI, run by run, the flag threshold
drawn dashed, a flagged run's point in orange; every point links to its run's page; a
dashed vertical line where the version changed, labelled with the new one. Then the last
runs in a table. The index: one row per model (worst state first), its last run, state,
and the worst PSI of its last runs, linking to the model's page and the run's.
"""

from __future__ import annotations

from typing import Any

from scorer.monitoring.history import RECENT_RUNS, state
from scorer.monitoring.page import CSP, FLAGGED_COLOUR, NOW_COLOUR, REF_COLOUR, STYLE, _e, _num, _pct, usd_text

#: runs the page's table lists (the charts draw every run kept)
TABLE_RUNS = 30
#: quality is drawn by day up to this many days with labels, else by ISO week
QUALITY_DAYS = 60
#: each kind's metrics, in the order drawn, with how to show them
QUALITY = {"class": (("accuracy", _pct), ("log_loss", _num), ("auc", _num)),
           "number": (("rmse", _num), ("mae", _num), ("bias", _num))}
STATE_CLASS = {"ok": "ok", "drift": "warn", "inputs failed": "bad", "run failed": "bad"}
_EXTRA_STYLE = """
.multiples { display: flex; flex-wrap: wrap; gap: 10px 18px; margin-top: 8px; }
svg.series a:hover circle { stroke: #1d232b; stroke-width: 2; }
"""


def series(title: str, values: list[float | None], run_ids: list[str], versions: list[Any], *,
           threshold: float | None = None, flagged: list[bool] | None = None, fmt: Any = _num,
           run_href: str = "../{}.html", data: str = "") -> str:
    """One small multiple: ``values`` over the runs (oldest left), each point a link to its
    run's page; ``threshold`` drawn dashed; ``flagged`` points in orange; a dashed line where
    the version changes."""
    width, height, left, top, bottom = 300, 130, 46, 22, 18
    plot_w, plot_h = width - left - 8, height - top - bottom
    have = [v for v in values if v is not None]
    high = max(have + ([threshold * 1.25] if threshold else []), default=1.0) or 1.0
    n = len(values)

    def x(i: int) -> float:
        return left + (plot_w * (i + 0.5) / n if n else 0)

    def y(v: float) -> float:
        return top + plot_h * (1 - min(v, high) / high)

    out = [f'<svg class="chart series" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'{data}><title>{_e(title)}</title>'
           f'<text x="{left}" y="13" font-size="12" font-weight="600">{_e(title)}</text>']
    for frac in (0.0, 0.5, 1.0):
        yy = top + plot_h * (1 - frac)
        out.append(f'<line x1="{left}" x2="{width - 6}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e3e6ea"/>'
                   f'<text x="{left - 4}" y="{yy + 3:.1f}" font-size="10" text-anchor="end">{_e(fmt(high * frac))}</text>')
    if threshold is not None:
        out.append(f'<line class="threshold" x1="{left}" x2="{width - 6}" y1="{y(threshold):.1f}" '
                   f'y2="{y(threshold):.1f}" stroke="{FLAGGED_COLOUR}" stroke-dasharray="4 3"/>')
    for i in range(1, n):
        if versions[i] is not None and versions[i - 1] is not None and versions[i] != versions[i - 1]:
            out.append(f'<line class="version" x1="{x(i) - plot_w / n / 2:.1f}" x2="{x(i) - plot_w / n / 2:.1f}" '
                       f'y1="{top}" y2="{top + plot_h}" stroke="#5c6773" stroke-dasharray="2 2"/>'
                       f'<text x="{x(i) - plot_w / n / 2 + 2:.1f}" y="{top + 9}" font-size="10">v{_e(versions[i])}</text>')
    points = [(x(i), y(v)) for i, v in enumerate(values) if v is not None]
    if len(points) > 1:
        out.append('<polyline fill="none" stroke="#1c6dd0" stroke-width="1.5" points="'
                   + " ".join(f"{px:.1f},{py:.1f}" for px, py in points) + '"/>')
    for i, v in enumerate(values):
        if v is None:
            continue
        hot = bool(flagged and flagged[i])
        cls = ' class="flagged"' if hot else ""
        out.append(f'<a href="{_e(run_href.format(run_ids[i]))}"{cls}>'
                   f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="{3.5 if hot else 2.5}" '
                   f'fill="{FLAGGED_COLOUR if hot else NOW_COLOUR}"><title>{_e(run_ids[i])}: {_e(fmt(v))}'
                   f'{" (flagged)" if hot else ""}</title></circle></a>')
    out.append(f'<line x1="{left}" x2="{width - 6}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#5c6773"/></svg>')
    return "".join(out)


def render_model(history: dict) -> str:
    """The page of one model's history (the stored document)."""
    name, runs = history["model"], history["runs"]
    last = runs[-1]
    ids = [e["run_id"] for e in runs]
    versions = [e.get("version") for e in runs]
    st = state(last)
    facts = [("runs", f"{len(runs)} (oldest {runs[0].get('started')}, newest {last.get('started')})"),
             ("version in the last run", last.get("version")),
             ("last run", last["run_id"])]
    body = [f'<section><h1>Model {_e(name)} <span class="badge {STATE_CLASS[st]}">{_e(st)}</span></h1>',
            '<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts) + "</dl></section>"]
    body.append('<section><h2>Runs</h2><div class="multiples">'
                + series("rows scored", [e.get("rows_scored") for e in runs], ids, versions,
                         fmt=lambda v: f"{v:,.0f}", data='data-series="rows"')
                + series("rows rejected (share)", [e.get("rejected_share") for e in runs], ids, versions, fmt=_pct,
                         data='data-series="rejected"')
                + series("estimated cost (USD)", [e.get("cost_usd") for e in runs], ids, versions,
                         fmt=lambda v: f"${v:.2g}", data='data-series="cost"')
                + "</div></section>")
    body.append(_drift_section(runs, ids, versions))
    body.append(_shadow_section(runs, ids, versions))
    body.append(_quality_section(history.get("outcomes")))
    body.append(_table(runs))
    return _html(f"scorer model {name}", body, "PSI (population stability index) of a run: the model's rows of "
                 "that run taken together against its training data (0 the same distribution, 0.1 a moderate "
                 "shift, 0.2 and above a significant one). Each point links to its run's page.")


def _drift_section(runs: list[dict], ids: list[str], versions: list[Any]) -> str:
    variables: dict[str, str] = {}
    for e in runs:
        for kind in ("psi", "psi_predictions"):
            for var in e.get(kind) or {}:
                variables.setdefault(var, kind)
    if not variables:
        return ('<section><h2>Drift</h2><p class="muted">No run computed drift for this model (it was published '
                "without a drift profile).</p></section>")
    thresholds = [e.get("threshold") for e in runs if e.get("threshold") is not None]
    threshold = thresholds[-1] if thresholds else None
    charts = []
    for var, kind in sorted(variables.items(), key=lambda kv: (kv[1] != "psi", kv[0])):
        values = [(e.get(kind) or {}).get(var) for e in runs]
        flagged = [var in (e.get("flagged") or []) for e in runs]
        label = f"{var}: PSI" + (" (prediction)" if kind == "psi_predictions" else "")
        charts.append(series(label, values, ids, versions, threshold=threshold, flagged=flagged,
                             data=f'data-variable="{_e(var)}"'))
    return ('<section><h2>Drift, run by run</h2><p class="muted">Dashed: the flag threshold'
            + (f" ({_num(threshold)})" if threshold is not None else "") + "; orange: a flagged run; a dotted "
            "vertical line: a new version.</p><div class=\"multiples\">" + "".join(charts) + "</div></section>")


def _shadow_section(runs: list[dict], ids: list[str], versions: list[Any]) -> str:
    """The shadow against the current version, run by run, for each prediction column: the
    mean absolute difference (numbers) or the share of rows whose class changed."""
    columns: dict[str, bool] = {}
    for e in runs:
        for name, c in ((e.get("shadow") or {}).get("columns") or {}).items():
            columns[name] = columns.get(name, False) or "mean_abs_diff" in c
    if not columns:
        return ""
    charts = []
    for name, numeric in sorted(columns.items()):
        key = "mean_abs_diff" if numeric else "changed_share"
        values = [(((e.get("shadow") or {}).get("columns") or {}).get(name) or {}).get(key) for e in runs]
        label = f"{name}: shadow, mean |difference|" if numeric else f"{name}: shadow, rows changed"
        charts.append(series(label, values, ids, versions, fmt=_num if numeric else _pct,
                             data=f'data-shadow="{_e(name)}"'))
    shadows = sorted({(e.get("shadow") or {}).get("version") for e in runs if e.get("shadow")} - {None})
    return ('<section><h2>The shadow against the current version</h2><p class="muted">Shadow version(s) '
            + _e(", ".join(map(str, shadows))) + ": each run's inputs scored by both, compared on the rows both "
            'scored.</p><div class="multiples">' + "".join(charts) + "</div></section>")


def period_chart(title: str, periods: list[str], lines: dict[str, list], fmt: Any, data: str = "") -> str:
    """A metric over periods (oldest left): the current version's line solid, the shadow's
    dashed grey; each point's title gives its period, value and rows."""
    width, height, left, top, bottom = 300, 130, 46, 22, 18
    plot_w, plot_h = width - left - 8, height - top - bottom
    have = [v["value"] for vs in lines.values() for v in vs if v and v["value"] is not None]
    low, high = min(have + [0.0]), max(have + [0.0])
    high = high if high > low else low + 1.0
    n = len(periods)

    def x(i: int) -> float:
        return left + plot_w * (i + 0.5) / max(n, 1)

    def y(v: float) -> float:
        return top + plot_h * (1 - (v - low) / (high - low))

    out = [f'<svg class="chart quality" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'{data}><title>{_e(title)}</title><text x="{left}" y="13" font-size="12" font-weight="600">{_e(title)}'
           "</text>"]
    for frac in (0.0, 0.5, 1.0):
        yy = top + plot_h * (1 - frac)
        out.append(f'<line x1="{left}" x2="{width - 6}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#e3e6ea"/>'
                   f'<text x="{left - 4}" y="{yy + 3:.1f}" font-size="10" text-anchor="end">'
                   f'{_e(fmt(low + (high - low) * frac))}</text>')
    for role, values in lines.items():
        colour, dash = (NOW_COLOUR, "") if role == "current" else (REF_COLOUR, ' stroke-dasharray="4 3"')
        points = [(x(i), y(v["value"])) for i, v in enumerate(values) if v and v["value"] is not None]
        if len(points) > 1:
            out.append(f'<polyline class="{role}" fill="none" stroke="{colour}" stroke-width="1.5"{dash} points="'
                       + " ".join(f"{px:.1f},{py:.1f}" for px, py in points) + '"/>')
        for i, v in enumerate(values):
            if v and v["value"] is not None:
                out.append(f'<circle class="{role}" cx="{x(i):.1f}" cy="{y(v["value"]):.1f}" r="2.5" fill="{colour}">'
                           f'<title>{_e(periods[i])}, {role} (v{_e(",".join(map(str, v["versions"])))}): '
                           f'{_e(fmt(v["value"]))} over {v["n"]:,} rows</title></circle>')
    out.append(f'<line x1="{left}" x2="{width - 6}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#5c6773"/>'
               f'<text x="{left}" y="{height - 4}" font-size="10">{_e(periods[0] if periods else "")}</text>'
               f'<text x="{width - 6}" y="{height - 4}" font-size="10" text-anchor="end">'
               f'{_e(periods[-1] if periods else "")}</text></svg>')
    return "".join(out)


def _quality_section(outcomes: dict | None) -> str:
    """The model's quality once labels arrived (scorer.monitoring.quality), per day (per
    week past QUALITY_DAYS days), the shadow's beside the current version's."""
    if not outcomes:
        return ('<section><h2>Quality</h2><p class="muted">No labels yet: drop files with the id and the outcome '
                "into labels/&lt;model&gt;/ and the next run matches them to the predictions.</p></section>")
    days = sorted({m["period"] for m in outcomes["by_day"]})
    key, unit = ("by_day", "day") if len(days) <= QUALITY_DAYS else ("by_week", "ISO week")
    items = outcomes[key]
    periods = sorted({m["period"] for m in items})
    at = {p: i for i, p in enumerate(periods)}
    charts = []
    for metric, fmt in QUALITY[outcomes["kind"]]:
        lines: dict[str, list] = {}
        for m in items:
            lines.setdefault(m["role"], [None] * len(periods))[at[m["period"]]] = {
                "value": m.get(metric), "n": m["n"], "versions": m["versions"]}
        charts.append(period_chart(metric.replace("_", " "), periods, lines, fmt, data=f'data-quality="{metric}"'))
    rows = "".join(f'<tr><td>{_e(m["period"])}</td><td>{_e(m["role"])}</td><td class="num">'
                   f'{_e(",".join(map(str, m["versions"])))}</td><td class="num">{m["n"]:,}</td>'
                   + "".join(f'<td class="num">{_e(fmt(m.get(k)) if m.get(k) is not None else "–")}</td>'
                             for k, fmt in QUALITY[outcomes["kind"]]) + "</tr>"
                   for m in reversed(items[-2 * TABLE_RUNS:]))
    head = "".join(f"<th>{_e(k.replace('_', ' '))}</th>" for k, _ in QUALITY[outcomes["kind"]])
    return ('<section><h2>Quality, from labels</h2><p class="muted">'
            f'{outcomes["rows"]:,} predictions matched to labels from {outcomes["files"]} label file(s); each '
            f"{unit}'s predictions against their outcomes (the period is the run's, not the label's). Solid: the "
            "current version; dashed grey: the shadow on the same rows.</p><div class=\"multiples\">"
            + "".join(charts) + '</div><div class="scroll"><table class="quality"><tr><th>period</th><th>role</th>'
            f"<th>version</th><th>rows</th>{head}</tr>{rows}</table></div></section>")


def _table(runs: list[dict]) -> str:
    rows = []
    for e in reversed(runs[-TABLE_RUNS:]):
        inputs = e.get("inputs") or {}
        flagged = ", ".join(e.get("flagged") or []) or "–"
        rows.append(f'<tr><td><a href="../{_e(e["run_id"])}.html">{_e(e["run_id"])}</a></td>'
                    f'<td class="num">{_e(e.get("version"))}</td><td class="num">{sum(inputs.values())}</td>'
                    f'<td class="num">{inputs.get("quarantined", 0) + inputs.get("left_pending", 0)}</td>'
                    f'<td class="num">{e.get("rows_scored", 0):,}</td><td class="num">{_pct(e.get("rejected_share"))}</td>'
                    f'<td class="num">{_e(usd_text(e.get("cost_usd")))}</td><td>{_e(flagged)}</td></tr>')
    return ('<section><h2>The last runs</h2><div class="scroll"><table><tr><th>run</th><th>version</th><th>inputs'
            '</th><th>failed</th><th>rows scored</th><th>rejected</th><th>cost</th><th>drift flagged</th></tr>'
            + "".join(rows) + "</table></div></section>")


def render_index(entries: list[dict]) -> str:
    """``reports/index.html`` from each model's index entry (history.index_entry): every
    model, the worst state first."""
    order = {"run failed": 0, "inputs failed": 1, "drift": 2, "ok": 3}
    items = sorted(entries, key=lambda i: (order.get(i["state"], 0), i["model"]))
    rows = []
    for i in items:
        last, w = i["last"], i["worst_recent"]
        worst = (f'{_e(w["variable"])} {_num(w["psi"])}' + (" (flagged)" if w["flagged"] else "")) if w else "–"
        rows.append(f'<tr data-model="{_e(i["model"])}"><td><a href="models/{_e(i["model"])}.html">{_e(i["model"])}'
                    f'</a></td><td><span class="badge {STATE_CLASS[i["state"]]}">{_e(i["state"])}</span></td>'
                    f'<td><a href="{_e(last["run_id"])}.html">{_e(last["run_id"])}</a></td>'
                    f'<td class="num">{_e(last.get("version"))}</td><td class="num">{i["runs"]}</td><td>{worst}</td></tr>')
    body = ['<section><h1>scorer: models</h1><p class="muted">Each model\'s last run, its state, and the highest '
            f"PSI of its last {RECENT_RUNS} runs. Worst first.</p>"
            + ('<div class="scroll"><table><tr><th>model</th><th>state</th><th>last run</th><th>version</th>'
               "<th>runs</th><th>worst recent drift</th></tr>" + "".join(rows) + "</table></div>" if rows else
               '<p class="muted">No model has been scored yet.</p>') + "</section>"]
    return _html("scorer: models", body, "States: ok; drift (the last run's rows, taken together, flagged a "
                 "variable); inputs failed (an input was quarantined); run failed (inputs were left pending).")


def _html(title: str, body: list[str], footer: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{STYLE}{_EXTRA_STYLE}</style></head>"
            f"<body><main>{''.join(body)}<footer>{_e(footer)}</footer></main></body></html>\n")
