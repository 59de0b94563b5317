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
from scorer.monitoring.page import CSP, FLAGGED_COLOUR, NOW_COLOUR, STYLE, _e, _num, _pct, usd_text

#: runs the page's table lists (the charts draw every run kept)
TABLE_RUNS = 30
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
