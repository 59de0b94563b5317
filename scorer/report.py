"""The run report: one JSON document per run, written to the reports container.

It holds the run id, start and end, the exit status, and for each input: rows
read, scored and rejected; the model's name, version and checksum; where the
output, rejected rows, archived or quarantined input went; the error; durations.
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
