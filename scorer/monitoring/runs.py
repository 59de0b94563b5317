"""Past runs, from the reports container: `scorer runs` and `scorer report`.

Run ids start with the run's UTC start time (scorer.batch.job.new_run_id), so the names
of ``reports/<run id>.json`` sort in the order the runs started.
"""

from __future__ import annotations

import difflib
from typing import Any

from scorer.errors import EXIT_OUTCOME, ConfigError
from scorer.monitoring.page import seconds_text, usd_text

SUFFIX = ".json"


def run_ids(store: Any, container: str) -> list[str]:
    """Every run id with a report, oldest first."""
    return sorted(b.name[: -len(SUFFIX)] for b in store.list_names(container) if b.name.endswith(SUFFIX))


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
    return lines
