"""The rejected-rows file: each row left out of an output, with its row number in the
input (from 1), the column and value at fault and the reason, then the row as it was read.
Written beside the output (<input>.rejected.csv) by the job, returned as a table by
scorer.predict."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

#: an input's rejected rows are <input>.rejected.csv beside its output
REJECTED_SUFFIX = ".rejected.csv"


class RejectedRows:
    """Collects rejected rows into a CSV writer created on the first reject."""

    COLUMNS = ["rejected_row", "rejected_column", "rejected_value", "rejected_reason"]

    FIRST = 20  # how many rejected rows a quarantine note quotes

    def __init__(self, open_writer: Callable[[], Any]):
        self._open = open_writer
        self.writer = None
        #: the first rejected rows, for the report when too many were rejected
        self.first: list[dict] = []

    #: added to every row number: a part of a split input whose first row is known
    #: (Parquet's row groups) numbers its rows as rows of the input
    base = 0

    def add(self, batch: pa.RecordBatch, rows: list[int], offset: int,
            details: list[tuple[int, str, str, str]]) -> None:
        if not details:
            return
        offset += self.base
        if self.writer is None:
            self.writer = self._open()
        by_row = {d[0]: d for d in details}
        for r in rows[: max(0, self.FIRST - len(self.first))]:
            self.first.append({"row": offset + r + 1, "column": by_row[r][1], "value": by_row[r][2],
                               "reason": by_row[r][3]})
        idx = pa.array(rows, pa.int64())
        original = batch.take(idx)
        cols = [
            pa.array([offset + r + 1 for r in rows], pa.int64()),
            pa.array([by_row[r][1] for r in rows], pa.string()),
            pa.array([by_row[r][2] for r in rows], pa.string()),
            pa.array([by_row[r][3] for r in rows], pa.string()),
        ]
        names = list(self.COLUMNS)
        for name, col in zip(original.schema.names, original.columns):
            names.append(name if name not in names else name + "_")
            cols.append(col)
        self.writer.write(pa.RecordBatch.from_arrays(cols, names=names))
