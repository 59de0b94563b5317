"""The run report: one JSON document per run, written to the reports container.

It holds the run id, start and end, the exit status, the run's estimated cost, and
for each input: rows read, scored and rejected; the model's name, version and
checksum; where the output, rejected rows, archived or quarantined input went; the
error; drift against the model's reference profile; durations.
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

from scorer import __version__
from scorer.log import now, redact_obj

STATUSES = ("scored", "quarantined", "left_pending", "skipped")

#: the most inputs a run report lists in full. A run of more lists those that need eyes
#: first (an error, left pending or skipped, drift flagged, a warning), then the first ones
#: scored cleanly, counts every input, and writes every input's record, one JSON line each,
#: beside it (``<run id>.inputs.jsonl``): a run of 100,000 small inputs used to hold them
#: all in memory and write a report and a page of some 650 MB each (issue 26).
LISTED = 1000


@dataclass
class InputReport:
    blob: str
    status: str = "left_pending"
    model: str | None = None
    model_version: int | None = None
    model_sha256: str | None = None
    format: str | None = None
    csv: dict | None = None  # the delimiter and decimal mark a CSV input was read with
    rows_read: int = 0
    rows_scored: int | None = 0   # None for an R function: see rows_written
    rows_rejected: int = 0
    rows_written: int | None = None  # an R function's output rows
    output: str | None = None
    rejected_rows: str | None = None
    archived_to: str | None = None
    quarantined_to: str | None = None
    error: dict | None = None
    warnings: list[str] = field(default_factory=list)
    #: the input against its model's reference profile (scorer.monitoring.drift), or why not computed
    drift: dict | None = None
    #: batches each R session predicted, when R workers helped: {"job": 40, "1": 38}
    r_sessions: dict | None = None
    #: the model's shadow version on this input (scorer.batch.shadow): its output, the comparison, or its error
    shadow: dict | None = None
    #: a split input (scorer.batch.split): the parts this job scored, or, for the job that
    #: finished it, every part with who scored it
    parts: list[dict] = field(default_factory=list)
    attempt: int | None = None
    started: str = field(default_factory=now)
    ended: str | None = None
    durations_s: dict[str, float] = field(default_factory=dict)


@dataclass
class RunReport:
    run_id: str
    started: str = field(default_factory=now)
    ended: str | None = None
    exit_code: int | None = None
    scorer_version: str = __version__
    r_version: str | None = None
    host: str = field(default_factory=platform.node)
    scope: dict[str, str | None] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    #: the inputs listed in full (at most LISTED; see there), in the order they were taken
    inputs: list[InputReport] = field(default_factory=list)
    error: dict | None = None
    cost: dict | None = None
    #: every input of the run, listed or not
    inputs_total: int = 0
    #: where every input's record is, one JSON line each, when the run had more than LISTED
    inputs_file: str | None = None
    #: label files taken (scorer.batch.labels): matched, refused, left pending or skipped
    labels: list[dict] = field(default_factory=list)
    #: the settled inputs' counts (statuses, rows, inputs with drift flagged)
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        (*STATUSES, "rows_scored", "rows_written", "rows_rejected", "drift_flagged"), 0))

    #: how many inputs are listed in full (a class attribute: tests lower it)
    listed = LISTED

    def settle(self, item: InputReport, spill: Callable[[list[dict]], None] | None = None) -> None:
        """Count a finished input (listed since it was taken) and keep the listing within
        LISTED: past it, ``spill`` gets the records to write beside the report (every
        one so far, the first time), and a cleanly scored input leaves the listing."""
        if item.ended is None:
            item.ended = now()
        t = self.totals
        t[item.status] = t.get(item.status, 0) + 1
        t["rows_scored"] += item.rows_scored or 0
        t["rows_written"] += item.rows_written or 0
        t["rows_rejected"] += item.rows_rejected
        t["drift_flagged"] += bool((item.drift or {}).get("flagged"))
        self.inputs_total += 1
        if self.inputs_total <= self.listed:
            return
        if spill is not None:  # the first time, every ended one so far; one still under way goes when it ends
            spill([redact_obj(dataclasses.asdict(i)) for i in self.inputs if i.ended is not None]
                  if self.inputs_total == self.listed + 1 else [redact_obj(dataclasses.asdict(item))])
        # an ended one leaves: with inputs in flight (scorer.batch.flight), one under way may look clean
        ended = [k for k in range(len(self.inputs) - 1, -1, -1) if self.inputs[k].ended is not None]
        del self.inputs[next((k for k in ended if not needs_eyes(self.inputs[k])), ended[0])]

    def counts(self) -> dict[str, int]:
        """Counts over every input: those settled, and those listed but not yet ended."""
        c = dict(self.totals)
        for i in self.inputs:
            if i.ended is None:
                c[i.status] = c.get(i.status, 0) + 1
                c["rows_scored"] += i.rows_scored or 0
                c["rows_written"] += i.rows_written or 0
                c["rows_rejected"] += i.rows_rejected
                c["drift_flagged"] += bool((i.drift or {}).get("flagged"))
        return c

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        del d["totals"]
        d["counts"] = self.counts()
        d["inputs_listed"] = len(self.inputs)
        return redact_obj(d)


def needs_eyes(item: InputReport) -> bool:
    """Whether an input is listed before cleanly scored ones: an error, not scored, drift
    flagged, or a warning."""
    return bool(item.error or item.status != "scored" or (item.drift or {}).get("flagged") or item.warnings)


def estimate_cost(settings: Any, seconds: float) -> dict:
    """The run's price in USD, estimated as ``seconds x (vCPUs x rate + GB x rate)``:
    the container's size from SCORER_CPU_CORES and SCORER_MEMORY_GB (the workflow sets
    them), the rates from SCORER_PRICE_VCPU_SECOND and SCORER_PRICE_GB_SECOND."""
    seconds = round(seconds, 3)  # the figure shown is the figure priced
    out = {"seconds": seconds, "cpu_cores": settings.cpu_cores, "memory_gb": settings.memory_gb,
           "usd_per_vcpu_second": settings.price_vcpu_second, "usd_per_gb_second": settings.price_gb_second}
    if settings.cpu_cores is None or settings.memory_gb is None:
        return dict(out, usd=None, note="SCORER_CPU_CORES and SCORER_MEMORY_GB are not set (the workflow sets "
                    "them from cpuCores and memoryInGB), so the container's size, and the cost, are unknown")
    usd = seconds * (settings.cpu_cores * settings.price_vcpu_second + settings.memory_gb * settings.price_gb_second)
    return dict(out, usd=round(usd, 12), note="an estimate: the job's own run time at these rates; it leaves out "
                "pulling the image and starting the container (also billed) and the Logic App's actions")
