"""One large input across container groups: a plan of parts that jobs claim like inputs.

When a run has several container groups (SCORER_PARALLEL_JOBS, from the workflow's
parallelJobs) and an input is larger than SCORER_SPLIT_BYTES, the job that claims it
writes a plan and releases it; every job of the run (and of later runs, until it is done)
then claims parts, one lease each, and scores them. Layout, in the output container under
``_parts/`` (no model name starts with ``_``, so nothing there is ever an output):

    _parts/<model>/<path>/plan.json       the input's ETag, format, delimiter, decimal mark, the parts;
                                          leased by whoever finishes
    _parts/<model>/<path>/part-00003      one blob per part, leased while it is scored; once done,
                                          its record (rows, block IDs, who scored it, drift counts)
    _parts/<model>/<path>/rejected-00003  the part's rejected rows (CSV), numbered within the part
    _parts/<model>/<path>/out-00003       a Parquet part's output (a Parquet file of its own)

Parts: CSV by byte ranges cut after a line end (each part is read as the file's header
line and its bytes); Parquet by row groups. A CSV part checks that every line of its
bytes holds an even number of quote characters: a quoted field that spans lines has an
odd one where it starts, and a cut there would misread it, so the plan is then given up
and the input scored whole, with the reason in the report. Gzipped CSV cannot be read
from the middle and is never split.

Outputs: a CSV part stages its output as blocks of the one output blob, without a header;
a Parquet part writes a Parquet file of its own. Whoever sees the last part done takes the
plan's lease and finishes: commits the output's block list (a header block, then each
part's blocks in order), or copies the Parquet parts into one file, writes the rejected
rows renumbered as rows of the input, and archives the input. Until then nothing is
visible under output/, and a commit is of whole parts only: every row exactly once.

A job killed mid-part leaves that part's lease to lapse; another job takes the part over
(its blocks have names of their own, so the dead job's are never committed). A part that
is started SCORER_MAX_ATTEMPTS times without finishing fails the plan, and the input is
quarantined as poison, as an unsplit input would be.
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from scorer.data.formats import HEADER_MAX, _decimal_mark, _sniff, header_end

log = logging.getLogger("scorer.split")

PREFIX = "_parts"
#: bytes read at a cut to find the next line end (more are read if a line is longer)
_PROBE = 64 * 1024


def where(name: str) -> str:
    """The folder of an input's plan and parts, in the output container."""
    return f"{PREFIX}/{name}"


@dataclass
class Plan:
    input: str
    etag: str
    fmt: str
    size: int
    parts: list[dict]
    delimiter: str = ","
    decimal: str = "."
    header: str = ""         # CSV: the header line, with its line end (latin-1, byte for byte)
    state: str = "open"      # open; whole (scored unsplit: see reason); failed (see reason)
    reason: str | None = None
    id: str = ""
    model_version: int | None = None  # every part is scored with the version the plan was made with

    def to_json(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d: dict) -> "Plan":
        return cls(**d)

    def blob(self, what: str, k: int | None = None) -> str:
        return f"{where(self.input)}/{what}" + (f"-{k:05d}" if k is not None else "")


def not_splittable(fmt: str) -> str | None:
    if fmt == "csv.gz":
        return "a gzipped CSV cannot be read from the middle"
    return None


# -- planning -------------------------------------------------------------------------------

def plan_csv(store: Any, container: str, name: str, etag: str, size: int, part_bytes: int,
             decimal: str) -> Plan:
    """Cut points after line ends near every ``part_bytes``, found by small range reads
    (never the whole file). Raises InputFormatError for a file without a header line."""
    head = store.read_range(container, name, 0, min(size, _PROBE), etag=etag)
    while (end := header_end(head)) is None and len(head) < min(size, HEADER_MAX):  # a long header: read on
        head += store.read_range(container, name, len(head), min(size - len(head), _PROBE), etag=etag)
    if end is None:
        from scorer.errors import InputFormatError
        raise InputFormatError(f"{name}: no line end in the first {len(head)} bytes: is this a CSV file?",
                               hint="Drop a CSV file with a header line.")
    header = head[:end]
    _, delimiter = _sniff(head, name, end)
    if decimal == "auto":
        decimal = _decimal_mark(head.decode("utf-8-sig", errors="replace"), delimiter)
    cuts = [end]
    target = end + part_bytes
    while target < size:
        offset = target
        while offset < size:
            chunk = store.read_range(container, name, offset, min(_PROBE, size - offset), etag=etag)
            nl = chunk.find(b"\n")
            if nl >= 0:
                cut = offset + nl + 1
                if cut < size and cut > cuts[-1]:
                    cuts.append(cut)
                break
            offset += len(chunk)
        target = max(target + part_bytes, cuts[-1] + 1)
    cuts.append(size)
    parts = [{"start": a, "end": b} for a, b in zip(cuts, cuts[1:]) if b > a]
    return Plan(input=name, etag=etag, fmt="csv", size=size, parts=parts, delimiter=delimiter, decimal=decimal,
                header=header.decode("latin-1"), id=uuid.uuid4().hex[:10])


def plan_parquet(source: Any, name: str, etag: str, size: int, part_bytes: int) -> Plan:
    """Consecutive row groups of about ``part_bytes`` (compressed) each; ``source`` is
    a seekable file over the blob."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(source).metadata
    parts, start, acc, first_row, rows = [], 0, 0, 0, 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        acc += rg.total_byte_size
        rows += rg.num_rows
        if acc >= part_bytes or g == meta.num_row_groups - 1:
            parts.append({"row_groups": [start, g + 1], "first_row": first_row, "rows": rows})
            start, acc, first_row, rows = g + 1, 0, first_row + rows, 0
    return Plan(input=name, etag=etag, fmt="parquet", size=size, parts=parts, id=uuid.uuid4().hex[:10])


# -- reading a part --------------------------------------------------------------------------

class RangeFile(io.RawIOBase):
    """A blob as a seekable file, read by ranges (Parquet's footer and row groups)."""

    def __init__(self, store: Any, container: str, name: str, size: int, etag: str | None = None):
        super().__init__()
        self._store, self._container, self._name, self._size = store, container, name, size
        self._etag = etag  # only this version: a blob replaced meanwhile fails the read (412)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = {0: offset, 1: self._pos + offset, 2: self._size + offset}[whence]
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b: Any) -> int:
        n = min(len(b), self._size - self._pos)
        if n <= 0:
            return 0
        data = self._store.read_range(self._container, self._name, self._pos, n, etag=self._etag)
        b[: len(data)] = data
        self._pos += len(data)
        return len(data)


class QuoteCheck(io.RawIOBase):
    """Passes a CSV part's bytes through, checking that every line holds an even number
    of quote characters (so no quoted field spans a line end, and a cut after a line end
    is a cut between records). ``odd_line`` is set once one does not."""

    def __init__(self, raw: Any):
        super().__init__()
        self._raw = raw
        self._quotes = 0       # quotes since the last line end
        self.odd_line = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._raw.readinto(b)
        if n and not self.odd_line:
            data = np.frombuffer(memoryview(b)[:n], dtype=np.uint8)
            quotes = data == 34  # '"'
            if not quotes.any():  # the usual chunk: a line ending here closes the carried count
                if (data == 10).any():
                    self.odd_line = self._quotes % 2 == 1
                    self._quotes = 0
                return n
            running = np.cumsum(quotes) + self._quotes
            ends = np.flatnonzero(data == 10)
            if len(ends):
                # at each line end, the quotes since the previous one must be even
                at_ends = running[ends]
                starts = np.concatenate(([0], at_ends[:-1]))  # running counts from the last line end
                if ((at_ends - starts) % 2).any():
                    self.odd_line = True
                self._quotes = int(running[-1] - at_ends[-1])
            else:
                self._quotes = int(running[-1])
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def csv_header_bytes(names: list[str], delimiter: str) -> bytes:
    """The header line an unsplit output would have (same writer, same options)."""
    sink = io.BytesIO()
    pacsv.write_csv(pa.table({n: pa.array([], pa.string()) for n in names}), sink,
                    write_options=pacsv.WriteOptions(quoting_style="needed", delimiter=delimiter))
    return sink.getvalue()


def renumbered_rejects(data: bytes, first_row: int) -> pa.Table:
    """A CSV part's rejected rows (numbered within the part) numbered as rows of the input.
    Every column but the row number is text (a CSV input's columns are read as text), read
    back exactly: an empty field is a missing value, a quoted empty one an empty string."""
    parse = pacsv.ParseOptions(newlines_in_values=True)
    names = pacsv.open_csv(io.BytesIO(data), parse_options=parse).schema.names
    table = pacsv.read_csv(io.BytesIO(data), parse_options=parse, convert_options=pacsv.ConvertOptions(
        column_types={n: (pa.int64() if n == "rejected_row" else pa.string()) for n in names},
        null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False))
    rows = pa.array(np.asarray(table["rejected_row"].to_numpy()) + first_row, pa.int64())
    return table.set_column(0, "rejected_row", rows)


def record(part_blob_data: bytes) -> dict | None:
    """A part's record, or None while it is not done."""
    if not part_blob_data:
        return None
    return json.loads(part_blob_data)
