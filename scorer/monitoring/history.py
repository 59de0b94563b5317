"""A model's life over runs: what each run did with it, kept in one small document per model.

    RunModels.add(input)        each input as it ends (Job.settle): summed per model
    RunModels.entries(report)   at the run's end: one entry per model the run scored
    merged(history, entries)    the model's history with the run's entry (last KEPT_RUNS runs)
    from_reports(...)           the same, rebuilt from the run reports already in blob

An entry says, for one run and one model: the version that scored, inputs by outcome,
rows scored and rejected, the model's share of the run's estimated cost, and the drift of
the run's rows taken together: each variable's and prediction column's PSI over every input
the model scored in the run (the inputs' bin shares weighted by their rows, against the
profile's). A run of a thousand ten-row files has no input with rows enough to flag (a PSI
over ten rows is noise), but their union does.

``reports/models/<name>.json`` holds the entries, oldest first; ``reports/models/index.json``
each model's last entry and its worst drift of the last RECENT_RUNS runs. Both are derived:
``scorer models history NAME --rebuild`` makes them again from the run reports. Pure: dicts
in, dicts out (scorer.batch.job reads and writes them).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from scorer.monitoring.drift import MIN_ROWS_TO_FLAG, psi

FORMAT = 1
#: runs a model's history keeps (its page draws them; every run's report stays in reports/)
KEPT_RUNS = 1000
#: runs the index looks back over for a model's worst drift
RECENT_RUNS = 10


class RunModels:
    """One run's inputs summed per model, as they end."""

    def __init__(self) -> None:
        self.models: dict[str, dict] = {}

    def add(self, item: dict) -> None:
        """An ended input's record (InputReport as a dict)."""
        name = item.get("model")
        if not name:
            return
        m = self.models.setdefault(name, {"inputs": Counter(), "rows_scored": 0, "rows_rejected": 0,
                                          "rows_read": 0, "versions": Counter(), "seconds": 0.0,
                                          "flagged_inputs": 0, "threshold": None, "drift": {}, "shadow": None})
        m["inputs"][item.get("status") or "left_pending"] += 1
        m["rows_scored"] += item.get("rows_scored") or item.get("rows_written") or 0
        m["rows_rejected"] += item.get("rows_rejected") or 0
        m["rows_read"] += item.get("rows_read") or 0
        if item.get("model_version") is not None:
            m["versions"][int(item["model_version"])] += 1
        m["seconds"] += (item.get("durations_s") or {}).get("total") or 0.0
        if item.get("shadow"):
            _add_shadow(m, item["shadow"])
        drift = item.get("drift") or {}
        if drift.get("computed") and item.get("status") == "scored":
            m["flagged_inputs"] += bool(drift.get("flagged"))
            m["threshold"] = drift.get("threshold")
            for kind in ("features", "predictions"):
                for var, d in (drift.get(kind) or {}).items():
                    if d.get("absent") or not d.get("rows"):
                        continue
                    key = (kind, var)
                    have = m["drift"].get(key)
                    current = np.asarray(d["current"], dtype=float) * d["rows"]
                    if have is None:
                        m["drift"][key] = {"reference": list(d["reference"]), "counts": current, "rows": d["rows"]}
                    elif len(have["reference"]) == len(current):  # else another profile's bins: the first kept
                        have["counts"] = have["counts"] + current
                        have["rows"] += d["rows"]

    def entries(self, report: dict) -> dict[str, dict]:
        """Each model's entry for this run (``report``: the run report, as stored)."""
        cost = (report.get("cost") or {}).get("usd")
        seconds = sum(m["seconds"] for m in self.models.values()) or 0.0
        out = {}
        for name, m in self.models.items():
            out[name] = entry(report, m, None if cost is None else
                              cost * (m["seconds"] / seconds if seconds else 1 / len(self.models)))
        return out


def entry(report: dict, m: dict, cost: float | None) -> dict:
    """One run's entry for one model, from its sums (RunModels)."""
    psis: dict[str, dict[str, float]] = {"features": {}, "predictions": {}}
    rows_drift = 0
    for (kind, var), d in sorted(m["drift"].items()):
        rows = d["rows"]
        psis[kind][var] = round(psi(d["reference"], (d["counts"] / max(rows, 1)).tolist()), 6)
        rows_drift = max(rows_drift, rows)
    threshold = m["threshold"]
    flagged = sorted((v for kind in psis for v, p in psis[kind].items() if threshold is not None and p >= threshold),
                     key=lambda v: -(psis["features"].get(v, psis["predictions"].get(v, 0))))
    read = m["rows_read"]
    return {"run_id": report["run_id"], "started": report.get("started"), "exit_code": report.get("exit_code"),
            "version": m["versions"].most_common(1)[0][0] if m["versions"] else None,
            "inputs": dict(m["inputs"]), "rows_scored": m["rows_scored"], "rows_rejected": m["rows_rejected"],
            "rejected_share": round(m["rows_rejected"] / read, 6) if read else None,
            "cost_usd": None if cost is None else round(cost, 8), "threshold": threshold,
            "psi": psis["features"], "psi_predictions": psis["predictions"], "drift_rows": rows_drift,
            # the run's rows together: a flag needs MIN_ROWS_TO_FLAG of them, as an input's does
            "flagged": flagged if rows_drift >= MIN_ROWS_TO_FLAG else [],
            "flagged_inputs": m["flagged_inputs"], "shadow": _shadow_entry(m["shadow"])}


def _add_shadow(m: dict, sh: dict) -> None:
    """An input's shadow comparison (scorer.batch.shadow) into its model's sums for the run."""
    acc = m["shadow"] = m["shadow"] or {"version": sh.get("version"), "inputs": 0, "failed": 0, "rows_compared": 0,
                                        "columns": {}}
    acc["inputs"] += 1
    if sh.get("error"):
        acc["failed"] += 1
        return
    acc["rows_compared"] += sh.get("rows_compared") or 0
    for name, c in (sh.get("columns") or {}).items():
        col = acc["columns"].setdefault(name, {"rows": 0, "abs_sum": 0.0, "max_abs_diff": None, "changed": 0.0})
        rows = c.get("rows") or 0
        col["rows"] += rows
        col["changed"] += (c.get("changed_share") or 0) * rows
        if c.get("mean_abs_diff") is not None:
            col["abs_sum"] += c["mean_abs_diff"] * rows
            col["max_abs_diff"] = max(col["max_abs_diff"] or 0.0, c.get("max_abs_diff") or 0.0)


def _shadow_entry(acc: dict | None) -> dict | None:
    if acc is None:
        return None
    cols = {}
    for name, c in acc["columns"].items():
        rows = max(c["rows"], 1)
        cols[name] = {"rows": c["rows"], "changed_share": round(c["changed"] / rows, 6),
                      **({"mean_abs_diff": c["abs_sum"] / rows, "max_abs_diff": c["max_abs_diff"]}
                         if c["max_abs_diff"] is not None else {})}
    return {"version": acc["version"], "inputs": acc["inputs"], "failed": acc["failed"],
            "rows_compared": acc["rows_compared"], "columns": cols}


def merged(history: dict | None, name: str, entries: list[dict], outcomes: dict | None = None) -> dict:
    """``history`` (None: a first run) with ``entries`` in it, each run once, oldest first,
    the last KEPT_RUNS kept; ``outcomes`` (the model's quality, scorer.monitoring.runs.
    outcome_summary) in place of the history's, when given."""
    runs = {e["run_id"]: e for e in (history or {}).get("runs") or []}
    for e in entries:
        runs[e["run_id"]] = e
    kept = [runs[k] for k in sorted(runs)][-KEPT_RUNS:]
    return {"format": FORMAT, "model": name, "runs": kept,
            "outcomes": outcomes if outcomes is not None else (history or {}).get("outcomes")}


def worst(runs: list[dict]) -> dict | None:
    """The highest PSI of the last RECENT_RUNS runs: variable, value, run."""
    best = None
    for e in runs[-RECENT_RUNS:]:
        for kind in ("psi", "psi_predictions"):
            for var, value in (e.get(kind) or {}).items():
                if best is None or value > best["psi"]:
                    best = {"variable": var, "psi": value, "run_id": e["run_id"],
                            "flagged": var in (e.get("flagged") or [])}
    return best


def index_entry(history: dict) -> dict:
    """What the index says of one model: its last run, and its worst recent drift."""
    runs = history["runs"]
    last = runs[-1]
    return {"model": history["model"], "runs": len(runs), "last": last, "worst_recent": worst(runs),
            "state": state(last)}


def state(e: dict) -> str:
    """One word for a model's last run: "ok", "drift", "inputs failed" or "run failed"."""
    inputs = e.get("inputs") or {}
    if inputs.get("quarantined"):
        return "inputs failed"
    if inputs.get("left_pending") or e.get("exit_code") not in (0, 3, None):
        return "run failed"
    if e.get("flagged"):
        return "drift"
    return "ok"


def from_reports(reports: list[tuple[dict, list[dict]]]) -> dict[str, list[dict]]:
    """Every model's entries, from run reports: (report, every input's record: the listed
    ones, or those of the run's .inputs.jsonl when it had more)."""
    out: dict[str, list[dict]] = {}
    for report, inputs in reports:
        run = RunModels()
        for item in inputs:
            run.add(item)
        for name, e in run.entries(report).items():
            out.setdefault(name, []).append(e)
    return out


def table(history: dict) -> list[str]:
    """`scorer models history NAME`: one line per run, newest first."""
    lines = [f"{'RUN':24} {'VERSION':>7} {'INPUTS':>6} {'FAILED':>6} {'ROWS':>10} {'REJECTED':>8} {'COST USD':>10} "
             "WORST PSI"]
    for e in reversed(history["runs"]):
        inputs = e.get("inputs") or {}
        everything = {**(e.get("psi") or {}), **(e.get("psi_predictions") or {})}
        top = max(everything.items(), key=lambda kv: kv[1], default=None)
        share, cost = e.get("rejected_share"), e.get("cost_usd")
        share_text = "–" if share is None else f"{100 * share:.1f}%"
        cost_text = "–" if cost is None else f"{cost:.6f}"
        lines.append(f"{e['run_id']:24} {_text(e.get('version')):>7} {sum(inputs.values()):>6} "
                     f"{inputs.get('quarantined', 0) + inputs.get('left_pending', 0):>6} {e.get('rows_scored', 0):>10} "
                     f"{share_text:>8} {cost_text:>10} "
                     + (f"{top[0]} {top[1]:.3f}" + (" flagged" if top[0] in (e.get("flagged") or []) else "")
                        if top else "–"))
    return lines


def quality_table(history: dict) -> list[str]:
    """`scorer models history NAME`: the quality from labels, one line per day and role,
    newest first (none without labels)."""
    out = history.get("outcomes")
    if not out:
        return []
    names = ("accuracy", "log_loss", "auc") if out["kind"] == "class" else ("rmse", "mae", "bias")
    lines = [f"{'DAY':10} {'ROLE':8} {'VERSION':>7} {'ROWS':>8} " + " ".join(f"{n.upper():>9}" for n in names)]
    for m in reversed(out["by_day"]):
        lines.append(f"{m['period']:10} {m['role']:8} {','.join(map(str, m['versions'])):>7} {m['n']:>8} "
                     + " ".join(f"{'–' if m.get(n) is None else format(m[n], '.4f'):>9}" for n in names))
    return lines


def _text(x: Any) -> str:
    return "–" if x is None else str(x)
