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
from typing import Any

from scorer import __version__
from scorer.log import now, redact_obj

STATUSES = ("scored", "quarantined", "left_pending", "skipped")


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
    #: the input against its model's reference profile (scorer.drift), or why not computed
    drift: dict | None = None
    #: batches each R session predicted, when R workers helped: {"job": 40, "1": 38}
    r_sessions: dict | None = None
    #: a split input (scorer.split): the parts this job scored, or, for the job that
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
    inputs: list[InputReport] = field(default_factory=list)
    error: dict | None = None
    cost: dict | None = None

    def counts(self) -> dict[str, int]:
        c = {s: 0 for s in STATUSES}
        for i in self.inputs:
            c[i.status] = c.get(i.status, 0) + 1
        c["rows_scored"] = sum(i.rows_scored or 0 for i in self.inputs)
        c["rows_written"] = sum(i.rows_written or 0 for i in self.inputs)
        c["rows_rejected"] = sum(i.rows_rejected for i in self.inputs)
        return c

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["counts"] = self.counts()
        return redact_obj(d)


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
