"""Past runs, from the reports container: `scorer runs`, `scorer report`, and each model's
history over its runs (`scorer models history`; written after each run by ``record``).

Run ids start with the run's UTC start time (scorer.batch.job.new_run_id), so the names
of ``reports/<run id>.json`` sort in the order the runs started.

    reports/<run id>.json, .html         a run (scorer.monitoring.report, page)
    reports/models/<model>.json, .html   a model's runs (scorer.monitoring.history, model_page)
    reports/models/index.json            each model's last run and worst recent drift
    reports/index.html                   the models, worst first: the one page to bookmark
    reports/models/<model>/outcomes/     predictions matched to labels (scorer.batch.labels),
                                         summed into the history's quality (``outcomes``)
"""

from __future__ import annotations

import difflib
import io
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from scorer.errors import EXIT_OUTCOME, ConfigError, StorageError
from scorer.monitoring import history, quality
from scorer.monitoring.model_page import render_index, render_model
from scorer.monitoring.page import seconds_text, usd_text
from scorer.storage import FENCE_ERRORS, as_seen

SUFFIX = ".json"
MODELS = "models/"
INDEX = f"{MODELS}index.json"
#: a model's matched labels, one Parquet file per label file (scorer.batch.labels)
OUTCOMES = MODELS + "{model}/outcomes/"
#: the outcome's kind and classes, in each of those files' schema metadata
OUTCOME_META = b"scorer_outcome"
HTML = "text/html; charset=utf-8"
#: tries of a history's read and fenced write when other runs write it at the same time
TRIES = 5


def run_ids(store: Any, container: str) -> list[str]:
    """Every run id with a report, oldest first."""
    return sorted(b.name[: -len(SUFFIX)] for b in store.list_names(container)
                  if b.name.endswith(SUFFIX) and "/" not in b.name and not b.name.endswith(".inputs.jsonl"))


def recent(store: Any, container: str, top: int) -> list[dict]:
    """The ``top`` newest reports, newest first."""
    return [store.get_json(container, f"{rid}{SUFFIX}") for rid in reversed(run_ids(store, container)[-top:])]


def find(store: Any, container: str, which: str) -> dict:
    """The report of run ``which`` ("latest", a run id, or its file name). Raises
    ConfigError naming the runs that do exist."""
    ids = run_ids(store, container)
    if not ids:
        raise ConfigError(f"No run report in {container}/ yet.",
                          hint="Run `scorer run` or `scorer local --once` first.")
    rid = ids[-1] if which == "latest" else which.rsplit("/", 1)[-1].removesuffix(SUFFIX).removesuffix(".html")
    if rid not in ids:
        near = difflib.get_close_matches(rid, ids, 3, 0.5) or ids[-3:]
        raise ConfigError(f"No run {rid!r} in {container}/.", hint="Recent or similar runs: " + ", ".join(near)
                          + " (`scorer runs` lists them).")
    return store.get_json(container, f"{rid}{SUFFIX}")


def _flagged(report: dict) -> list[str]:
    out = []
    for i in report.get("inputs") or []:
        for name in (i.get("drift") or {}).get("flagged") or []:
            out.append(f"{i['blob']}:{name}")
    return out


def table(reports: list[dict]) -> list[str]:
    """`scorer runs`: one line per run, newest first."""
    lines = [f"{'RUN':24} {'STARTED':20} {'OUTCOME':22} {'SCORED':>6} {'QUAR.':>5} {'PEND.':>5} {'ROWS':>10} "
             f"{'DRIFT':>5} {'COST':>10}"]
    for r in reports:
        c = r.get("counts") or {}
        cost = (r.get("cost") or {}).get("usd")
        lines.append(f"{r['run_id']:24} {str(r.get('started', ''))[:19]:20} "
                     f"{EXIT_OUTCOME.get(r.get('exit_code'), str(r.get('exit_code'))):22} {c.get('scored', 0):>6} "
                     f"{c.get('quarantined', 0):>5} {c.get('left_pending', 0):>5} "
                     f"{c.get('rows_scored', 0) + c.get('rows_written', 0):>10} "
                     f"{c.get('drift_flagged', len(_flagged(r))):>5} "
                     f"{usd_text(cost) if cost is not None else '–':>10}")
    return lines


def summary(report: dict) -> list[str]:
    """`scorer report`: the run, then one paragraph per input."""
    cost = report.get("cost") or {}
    c = report.get("counts") or {}
    lines = [f"run {report['run_id']}: {EXIT_OUTCOME.get(report.get('exit_code'), report.get('exit_code'))} "
             f"(exit status {report.get('exit_code')})",
             f"  started {report.get('started')}, took {seconds_text(cost.get('seconds'))}, estimated cost "
             + (f"{usd_text(cost['usd'])} ({cost['cpu_cores']:g} vCPU, {cost['memory_gb']:g} GB)"
                if cost.get("usd") is not None else "unknown"),
             f"  inputs: {c.get('scored', 0)} scored, {c.get('quarantined', 0)} quarantined, "
             f"{c.get('left_pending', 0)} left pending, {c.get('skipped', 0)} skipped"]
    listed = report.get("inputs") or []
    if (report.get("inputs_total") or 0) > len(listed):
        lines.append(f"  {len(listed)} of {report['inputs_total']} inputs listed below (those that need eyes first); "
                     f"every one in {report.get('inputs_file') or 'the job log'}")
    if report.get("error"):
        lines.append(f"  error: {report['error'].get('message')}")
    for i in report.get("inputs") or []:
        rows = (f"{i.get('rows_read', 0)} read, {i['rows_written']} written" if i.get("rows_written") is not None
                else f"{i.get('rows_read', 0)} read, {i.get('rows_scored') or 0} scored, "
                     f"{i.get('rows_rejected', 0)} rejected")
        model = f" with {i['model']} v{i['model_version']}" if i.get("model") else ""
        lines.append(f"- {i['blob']}: {i['status'].replace('_', ' ')}{model}; rows {rows}")
        where = i.get("output") or i.get("quarantined_to")
        if where:
            lines.append(f"    -> {where}")
        if i.get("error"):
            lines.append(f"    error: {i['error'].get('message')}")
            if i["error"].get("what_to_do"):
                lines.append(f"    what to do: {i['error']['what_to_do']}")
        drift = i.get("drift") or {}
        if drift.get("computed"):
            every = {**drift["features"], **drift["predictions"]}
            lines.append("    drift: " + (", ".join(f"{n} PSI {every[n]['psi']:.2f}" for n in drift["flagged"])
                                          + f" (flagged at {drift['threshold']:g})" if drift["flagged"]
                                          else "nothing flagged")
                         + (f"; {drift['note']}" if drift.get("note") else ""))
        elif drift:
            lines.append(f"    drift not computed: {drift.get('reason')}")
    for item in report.get("labels") or []:
        if item["status"] == "matched":
            lines.append(f"- labels {item['blob']}: {item['matched']} ids matched to {item['predictions_matched']} "
                         f"predictions, {item['unmatched']} unmatched, {item['duplicates']} refused as labelled twice"
                         + (f" ({', '.join(item['duplicate_ids'])})" if item["duplicates"] else "")
                         + f"\n    -> {item['archived_to']}")
        else:
            err = item.get("error") or {}
            lines.append(f"- labels {item['blob']}: {item['status'].replace('_', ' ')}"
                         + (f"\n    error: {err.get('message')}" if err else "")
                         + (f"\n    what to do: {err['what_to_do']}" if err.get("what_to_do") else ""))
    return lines


# -- a model's history over its runs ---------------------------------------------------

def record(store: Any, container: str, entries: dict[str, dict], outcomes: dict[str, dict] | None = None) -> None:
    """This run's entry of each model into the model's history and page (and ``outcomes``:
    the quality of those whose labels changed, ``outcome_summary``), then the index and
    its page. Each document is written only over the version read (``as_seen``): a run that
    ends beside another reads again and merges (entries are kept by run id, oldest first)."""
    updated = {}
    outcomes = outcomes or {}
    for name in sorted(set(entries) | set(outcomes)):
        change = (lambda doc, n=name: history.merged(doc, n, [entries[n]] if n in entries else [],
                                                     outcomes.get(n)))
        hist = _update(store, container, f"{MODELS}{name}.json", change)
        if not hist["runs"]:  # labels of a model whose history is gone: made again with --rebuild
            continue
        store.put_bytes(container, f"{MODELS}{name}.html", render_model(hist).encode(), content_type=HTML)
        updated[name] = history.index_entry(hist)
    if updated:
        _write_index(store, container, updated)


def _write_index(store: Any, container: str, updated: dict[str, dict]) -> None:
    def change(doc: dict | None) -> dict:
        models = dict((doc or {}).get("models") or {})
        for name, item in updated.items():  # a run that ended late never hides a newer one
            if name not in models or models[name]["last"]["run_id"] <= item["last"]["run_id"]:
                models[name] = item
        return {"format": history.FORMAT, "models": models}
    idx = _update(store, container, INDEX, change)
    store.put_bytes(container, "index.html", render_index(list(idx["models"].values())).encode(), content_type=HTML)


def _update(store: Any, container: str, name: str, change: Callable[[Any], dict]) -> dict:
    for _ in range(TRIES):
        doc, seen = store.get_json_seen(container, name)
        new = change(doc)
        try:
            store.put_json(container, name, new, conditions=as_seen(seen))
            return new
        except FENCE_ERRORS:  # another run wrote it since: read it again
            continue
    raise StorageError(f"{container}/{name} kept changing under this run ({TRIES} tries): other runs write it")


def load_history(store: Any, container: str, name: str) -> dict | None:
    return store.get_json_seen(container, f"{MODELS}{name}.json")[0]


def rebuild(store: Any, container: str, only: str | None = None) -> dict[str, dict]:
    """Every model's history (or ``only`` one's) made again from the run reports: each
    report, and the records of its every input when it had more than it lists. Rewrites the
    histories, their pages and the index; returns the histories."""
    reports = []
    for rid in run_ids(store, container):
        report = store.get_json(container, f"{rid}{SUFFIX}")
        inputs = report.get("inputs") or []
        if report.get("inputs_file") and (report.get("inputs_total") or 0) > len(inputs):
            try:
                text = store.read_bytes(container, report["inputs_file"].split("/", 1)[1]).decode()
                inputs = [json.loads(line) for line in text.splitlines() if line.strip()]
            except Exception:  # noqa: S110 - the listed inputs still count
                pass
        reports.append((report, inputs))
    made = {}
    for name, entries in history.from_reports(reports).items():
        if only is not None and name != only:
            continue
        hist = history.merged(None, name, entries, outcome_summary(store, container, name))
        store.put_json(container, f"{MODELS}{name}.json", hist)
        store.put_bytes(container, f"{MODELS}{name}.html", render_model(hist).encode(), content_type=HTML)
        made[name] = hist
    if made:
        _write_index(store, container, {n: history.index_entry(h) for n, h in made.items()})
    return made


def outcome_summary(store: Any, container: str, model: str) -> dict | None:
    """The model's quality from every label file matched so far: metrics per day and per
    week, current and shadow (scorer.monitoring.quality.by_period); None when none was."""
    tables = []
    for b in sorted(store.list_names(container, OUTCOMES.format(model=model)), key=lambda b: b.last_modified):
        if b.name.endswith(".parquet"):
            tables.append(pq.read_table(io.BytesIO(store.read_bytes(container, b.name))))
    if not tables:
        return None
    spec = json.loads(tables[-1].schema.metadata[OUTCOME_META])  # the newest file's kind: older ones of another go
    tables = [t for t in tables if json.loads(t.schema.metadata[OUTCOME_META])["kind"] == spec["kind"]]
    rows: dict[str, Any] = {}
    for col in ("key", "role", "run_id", "day", "outcome", "label"):
        if col in tables[0].column_names:
            rows[col] = np.concatenate([np.asarray(t.column(col).to_pylist(), dtype=object) for t in tables])
    for col in ("version", "outcome_number", "score"):  # numbers, a missing prediction NaN
        if col in tables[0].column_names:
            rows[col] = np.concatenate([t.column(col).to_numpy().astype(float) for t in tables])
    if spec["kind"] != "number":
        probs = [p for t in tables for p in t.column("probabilities").to_pylist()]
        rows["probabilities"] = (np.array(probs, dtype=float) if probs and all(p is not None for p in probs)
                                 else None)
    rows["version"] = rows["version"].astype(int)
    return {"kind": spec["kind"], "classes": spec.get("classes"), "files": len(tables),
            "rows": int(len(rows["key"])), "keys": int(len(set(rows["key"].tolist()))),
            **quality.by_period(spec["kind"], spec.get("classes"), rows)}
