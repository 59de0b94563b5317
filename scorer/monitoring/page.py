"""The run report as a page people can read: ``reports/<run id>.html``.

``render(report)`` turns a run report (the JSON document, as stored) into one
self-contained HTML file: inline CSS, plots as inline SVG, no script, and a
Content-Security-Policy that forbids every request, so the page opens the same from
blob storage, a mail attachment or a laptop offline. Pure: a dict in, text out.

What it shows, top to bottom: the run's outcome, duration and estimated cost; then
each input (inputs with flagged drift or an error first): rows, where the output
went, the error and what to do, warnings, and the drift table (flagged variables
first) with a plot of each flagged variable and of each prediction column,
reference against this input.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from typing import Any

from scorer.errors import EXIT_OUTCOME

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

# reference (training data) and this input; flagged plots use a warmer colour
REF_COLOUR = "#a5adb8"
NOW_COLOUR = "#1c6dd0"
FLAGGED_COLOUR = "#c8400c"

STYLE = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #1d232b;
       background: #f4f5f7; }
main { max-width: 980px; margin: 0 auto; padding: 16px; }
h1 { font-size: 1.3em; margin: 0 0 4px; word-break: break-all; }
h2 { font-size: 1.1em; margin: 0 0 6px; word-break: break-all; }
h3 { font-size: 1em; margin: 14px 0 6px; }
section { background: #fff; border-radius: 8px; padding: 14px 16px; margin: 0 0 14px;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-size: .85em; font-weight: 600;
         color: #fff; background: #5c6773; vertical-align: middle; }
.ok { background: #2b8a3e; } .bad { background: #c92a2a; } .warn { background: #c8400c; }
.muted { color: #5c6773; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0 0; }
dl.facts dt { color: #5c6773; } dl.facts dd { margin: 0; word-break: break-all; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .92em; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e3e6ea; white-space: nowrap; }
th { color: #5c6773; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flagged td:first-child { font-weight: 600; color: #c8400c; }
.error { border-left: 4px solid #c92a2a; padding: 6px 10px; background: #fff5f5; margin: 8px 0; }
.plots { display: flex; flex-wrap: wrap; gap: 12px 20px; margin-top: 10px; }
figure { margin: 0; }
figcaption { font-size: .9em; margin-bottom: 2px; }
svg.chart { max-width: 100%; height: auto; display: block; font-family: inherit; }
ul { margin: 4px 0; padding-left: 20px; }
footer { font-size: .85em; color: #5c6773; padding: 0 4px 24px; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{digits}g}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def usd_text(x: float | None) -> str:
    if x is None:
        return "unknown"
    return f"${x:.4f}" if x >= 0.01 else f"${x:.6f}"


def seconds_text(x: float | None) -> str:
    if x is None:
        return "–"
    if x < 120:
        return f"{x:.1f} s"
    return f"{int(x // 60)} min {int(x % 60)} s"


def _edge(x: float, r_class: str | None) -> str:
    if r_class == "Date":
        return (dt.date(1970, 1, 1) + dt.timedelta(days=x)).isoformat()
    if r_class == "POSIXct":
        return dt.datetime.fromtimestamp(x, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    return _num(x)


def bin_labels(d: dict) -> list[str]:
    """The names of a drift entry's bins, in its order: value bins, (other), missing."""
    if d["kind"] == "numeric":
        e = [_edge(x, d.get("r_class")) for x in d["edges"]]
        if not e:
            return ["all values", "missing"]
        return [f"≤ {e[0]}"] + [f"{a} – {b}" for a, b in zip(e, e[1:])] + [f"> {e[-1]}", "missing"]
    return [str(lv) for lv in d["levels"]] + ["(other)", "missing"]


def chart(name: str, d: dict, flagged: bool) -> str:
    """Grouped bars, reference against this input, per bin; empty bins left out."""
    labels = bin_labels(d)
    bins = [(lb, r, c) for lb, r, c in zip(labels, d["reference"], d["current"]) if r > 0 or c > 0]
    if not bins:
        return ""
    top = max(max(r, c) for _, r, c in bins) or 1.0
    bw = 30 if len(bins) <= 12 else 20
    left, plot_h, label_h = 40, 120, 74
    width = max(left + bw * len(bins) + 10, 200)  # room for the legend
    height = 24 + plot_h + label_h
    now = FLAGGED_COLOUR if flagged else NOW_COLOUR
    title = f"{name}: share of rows per bin, training data (grey) against this input"
    # drawn at its own size (text stays legible), shrunk to fit a narrow screen by the CSS
    out = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
           f'data-variable="{_e(name)}">'
           f'<title>{_e(title)}</title>',
           f'<rect x="{left}" y="4" width="10" height="10" fill="{REF_COLOUR}"/>'
           f'<text x="{left + 14}" y="13" font-size="11">training</text>'
           f'<rect x="{left + 70}" y="4" width="10" height="10" fill="{now}"/>'
           f'<text x="{left + 84}" y="13" font-size="11">this input</text>']
    base = 24 + plot_h
    for frac in (0.5, 1.0):
        y = base - plot_h * frac
        out.append(f'<line x1="{left}" x2="{width - 6}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e6ea"/>'
                   f'<text x="{left - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">'
                   f'{_e(_pct(top * frac))}</text>')
    for i, (label, r, c) in enumerate(bins):
        x = left + i * bw
        for j, (share, colour) in enumerate(((r, REF_COLOUR), (c, now))):
            h = plot_h * share / top
            out.append(f'<rect x="{x + 3 + j * (bw - 6) / 2:.1f}" y="{base - h:.1f}" width="{(bw - 6) / 2:.1f}" '
                       f'height="{h:.1f}" fill="{colour}"><title>{_e(label)}: {_e(_pct(share))} '
                       f'{"training" if j == 0 else "this input"}</title></rect>')
        short = label if len(label) <= 16 else label[:15] + "…"
        out.append(f'<text font-size="10" text-anchor="end" transform="translate({x + bw / 2 + 3:.1f},{base + 8}) '
                   f'rotate(-45)">{_e(short)}</text>')
    out.append(f'<line x1="{left}" x2="{width - 6}" y1="{base}" y2="{base}" stroke="#5c6773"/></svg>')
    return "".join(out)


def _drift_rows(entries: dict, flagged: set[str], kind: str) -> list[str]:
    rows = []
    order = sorted(entries.items(), key=lambda kv: (kv[0] not in flagged, -(kv[1].get("psi") or 0), kv[0]))
    for name, d in order:
        if d.get("absent"):
            rows.append(f'<tr><td>{_e(name)}</td><td class="muted">{kind}</td>'
                        '<td colspan="4" class="muted">not in this input</td></tr>')
            continue
        levels = []
        if d.get("new_levels"):
            levels.append("new: " + ", ".join(d["new_levels"][:5]) + (" …" if len(d["new_levels"]) > 5 else ""))
        if d.get("absent_levels"):
            levels.append("gone: " + ", ".join(d["absent_levels"][:5]) + (" …" if len(d["absent_levels"]) > 5 else ""))
        rows.append(f'<tr class="{"flagged" if name in flagged else ""}"><td>{_e(name)}'
                    f'{" ⚑" if name in flagged else ""}</td><td class="muted">{kind}</td>'
                    f'<td class="num">{_e(_num(d["psi"]))}</td><td class="num">{_e(_pct(d["missing"]))}</td>'
                    f'<td class="num">{_e(_pct(d["reference_missing"]))}</td><td>{_e("; ".join(levels))}</td></tr>')
    return rows


def _drift(drift: dict | None) -> str:
    if not drift:
        return ""
    if not drift.get("computed"):
        return f'<p class="muted">Drift not computed: {_e(drift.get("reason"))}.</p>'
    flagged = set(drift["flagged"])
    head = (f'<h3>Drift against the training data <span class="muted">(PSI flagged at ≥ '
            f'{_e(_num(drift["threshold"]))})</span></h3>')
    if flagged:
        head += f'<p><span class="badge warn">{len(flagged)} flagged</span> {_e(", ".join(drift["flagged"]))}</p>'
    else:
        head += '<p><span class="badge ok">no drift flagged</span></p>'
    if drift.get("note"):
        head += f'<p class="muted">{_e(drift["note"])}.</p>'
    rows = _drift_rows(drift["features"], flagged, "input") + _drift_rows(drift["predictions"], flagged, "prediction")
    table = ('<div class="scroll"><table><thead><tr><th>variable</th><th></th><th>PSI</th><th>missing now</th>'
             '<th>missing in training</th><th>levels</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table></div>")
    plots = []
    for name, d in drift["features"].items():
        if name in flagged and not d.get("absent"):
            plots.append(f"<figure><figcaption>{_e(name)} (PSI {_e(_num(d['psi']))})</figcaption>"
                         f"{chart(name, d, True)}</figure>")
    for name, d in drift["predictions"].items():
        plots.append(f"<figure><figcaption>{_e(name)} (PSI {_e(_num(d['psi']))})</figcaption>"
                     f"{chart(name, d, name in flagged)}</figure>")
    return head + table + (f'<div class="plots">{"".join(plots)}</div>' if plots else "")


def _input(item: dict) -> str:
    status = item["status"]
    cls = {"scored": "ok", "quarantined": "bad"}.get(status, "")
    model = f"{item['model']} v{item['model_version']}" if item.get("model") else "–"
    facts = [("model", model), ("rows read", item.get("rows_read"))]
    if item.get("rows_written") is not None:
        facts.append(("rows written", item["rows_written"]))
    else:
        facts += [("rows scored", item.get("rows_scored")), ("rows rejected", item.get("rows_rejected"))]
    for key, label in (("output", "output"), ("rejected_rows", "rejected rows"), ("archived_to", "input archived to"),
                       ("quarantined_to", "quarantined to")):
        if item.get(key):
            facts.append((label, item[key]))
    total = (item.get("durations_s") or {}).get("total")
    if total is not None:
        facts.append(("time", seconds_text(total)))
    parts = [f'<section><h2>{_e(item["blob"])} <span class="badge {cls}">{_e(status.replace("_", " "))}</span></h2>',
             '<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts) + "</dl>"]
    err = item.get("error")
    if err:
        parts.append(f'<div class="error"><strong>{_e(err.get("kind"))}</strong>: {_e(err.get("message"))}'
                     + (f'<br><em>What to do:</em> {_e(err["what_to_do"])}' if err.get("what_to_do") else "")
                     + "</div>")
    if item.get("warnings"):
        parts.append("<h3>Warnings</h3><ul>" + "".join(f"<li>{_e(w)}</li>" for w in item["warnings"]) + "</ul>")
    parts.append(_drift(item.get("drift")))
    parts.append(_shadow(item.get("shadow")))
    parts.append("</section>")
    return "".join(parts)


def _shadow(sh: dict | None) -> str:
    """The shadow version against the current one on this input (scorer.batch.shadow)."""
    if not sh:
        return ""
    head = f"<h3>Shadow: version {_e(sh.get('version'))}</h3>"
    if sh.get("error"):
        return head + (f'<div class="error"><strong>{_e(sh["error"].get("kind"))}</strong>: '
                       f'{_e(sh["error"].get("message"))}<br>The current version\'s output stands.</div>')
    rows = []
    for name, c in (sh.get("columns") or {}).items():
        rows.append(f"<tr><td>{_e(name)}</td><td class=\"num\">{_num(c.get('mean_abs_diff'))}</td>"
                    f"<td class=\"num\">{_num(c.get('max_abs_diff'))}</td><td class=\"num\">{_pct(c.get('changed_share'))}"
                    f"</td><td class=\"num\">{_num(c.get('psi'))}</td></tr>")
    return (head + f'<p class="muted">{_e(sh.get("rows_compared"))} rows compared; output {_e(sh.get("output"))}'
            + (f"; {sh['rows_only_current']} rows scored by the current version only" if sh.get("rows_only_current")
               else "") + (f"; {sh['rows_only_shadow']} by the shadow only" if sh.get("rows_only_shadow") else "")
            + '.</p><div class="scroll"><table class="shadow"><tr><th>prediction</th><th>mean |difference|</th>'
            "<th>largest |difference|</th><th>rows changed</th><th>PSI between the two</th></tr>"
            + "".join(rows) + "</table></div>")


def _labels(items: list[dict]) -> str:
    """The label files the run took (scorer.batch.labels): what each matched, or why refused."""
    if not items:
        return ""
    rows = []
    for i in items:
        err = i.get("error") or {}
        what = (f'{i.get("matched", 0):,} ids matched to {i.get("predictions_matched", 0):,} predictions'
                + (f', {i["shadow_predictions_matched"]:,} of the shadow' if i.get("shadow_predictions_matched") else "")
                + (f'; {i["unmatched"]:,} ids with no prediction ({", ".join(i.get("unmatched_ids") or [])})'
                   if i.get("unmatched") else "")
                + (f'; {i["duplicates"]:,} ids refused as labelled twice ({", ".join(i.get("duplicate_ids") or [])})'
                   if i.get("duplicates") else "")
                + (f'; {i["no_outcome"]:,} rows without an outcome' if i.get("no_outcome") else "")
                if i["status"] == "matched" else
                f'{err.get("message", i.get("note", ""))}' + (f' What to do: {err["what_to_do"]}'
                                                               if err.get("what_to_do") else ""))
        where = i.get("archived_to") or i.get("quarantined_to") or ""
        rows.append(f'<tr><td>{_e(i["blob"])}</td><td><span class="badge {"ok" if i["status"] == "matched" else "bad"}">'
                    f'{_e(i["status"].replace("_", " "))}</span></td><td>{_e(what)}</td><td>{_e(where)}</td></tr>')
    return ('<section><h2>Labels</h2><div class="scroll"><table class="labels"><tr><th>label file</th><th>status'
            '</th><th>what happened</th><th>kept at</th></tr>' + "".join(rows) + "</table></div></section>")


def _needs_eyes(item: dict) -> tuple[int, str]:
    drift = item.get("drift") or {}
    return (0 if item.get("error") else 1 if drift.get("flagged") else 2, item["blob"])


#: the most inputs a page shows (errors, pending and drift first): a page stays readable,
#: and small, however many inputs the run had
PAGE_INPUTS = 200


def render(report: dict) -> str:
    """The page for one run report (the stored JSON document)."""
    code = report.get("exit_code")
    outcome = EXIT_OUTCOME.get(code, f"exit status {code}")
    cls = "ok" if code == 0 else "bad"
    counts = report.get("counts") or {}
    cost = report.get("cost") or {}
    inputs = sorted(report.get("inputs") or [], key=_needs_eyes)
    flagged = counts.get("drift_flagged", sum(1 for i in inputs if (i.get("drift") or {}).get("flagged")))
    total = report.get("inputs_total") or len(inputs)
    started, ended = report.get("started"), report.get("ended")
    seconds = cost.get("seconds")
    facts = [("started", started), ("ended", ended), ("duration", seconds_text(seconds)),
             ("inputs", ", ".join(f"{counts.get(k, 0)} {k.replace('_', ' ')}"
                                  for k in ("scored", "quarantined", "left_pending", "skipped") if counts.get(k))
              or "none pending"),
             ("rows scored", counts.get("rows_scored", 0)), ("rows rejected", counts.get("rows_rejected", 0))]
    if counts.get("rows_written"):
        facts.append(("rows written by R functions", counts["rows_written"]))
    facts.append(("drift", f"{flagged} input(s) flagged" if flagged else "nothing flagged"))
    if cost.get("usd") is not None:
        facts.append(("estimated cost", f"{usd_text(cost['usd'])} ({_num(cost['cpu_cores'])} vCPU, "
                                        f"{_num(cost['memory_gb'])} GB, {seconds_text(seconds)})"))
    else:
        facts.append(("estimated cost", "unknown: " + str(cost.get("note", "no cost in this report"))))
    facts.append(("scorer, R", f"{report.get('scorer_version')}, R {report.get('r_version') or '–'}"))
    error = report.get("error")
    body = [f'<section><h1>Run {_e(report.get("run_id"))} <span class="badge {cls}">{_e(outcome)}</span></h1>',
            '<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts) + "</dl>"]
    if error:
        body.append(f'<div class="error"><strong>{_e(error.get("kind"))}</strong>: {_e(error.get("message"))}'
                    + (f'<br><em>What to do:</em> {_e(error["what_to_do"])}' if error.get("what_to_do") else "")
                    + "</div>")
    body.append("</section>")
    body += [_input(i) for i in inputs[:PAGE_INPUTS]]
    if total > min(len(inputs), PAGE_INPUTS):
        where = report.get("inputs_file")
        body.append(f'<section><p class="muted">{_e(total - min(len(inputs), PAGE_INPUTS))} more input(s), not '
                    f"shown here (those above need eyes first: errors, pending, drift)"
                    + (f"; every input's record is in {_e(where)}, one JSON line each" if where else "")
                    + ".</p></section>")
    if not inputs:
        body.append('<section><p class="muted">No input was pending.</p></section>')
    body.append(_labels(report.get("labels") or []))
    note = cost.get("note")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>scorer run {_e(report.get('run_id'))}: {_e(outcome)}</title><style>{STYLE}</style></head>"
        f"<body><main>{''.join(body)}<footer>PSI (population stability index) compares the share of rows in "
        "each bin with the training data's: 0 is the same distribution, 0.1 a moderate shift, 0.2 and above a "
        "significant one. A flag is a warning; flagged inputs are still scored."
        + (f" Cost: {_e(note)}." if note else "") + "</footer></main></body></html>\n")
