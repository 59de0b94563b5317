"""Rows in memory, scored the way the batch job scores a file: the pure parts that
`scorer serve` and ``scorer.predict`` share.

    table_from_json / table_from_csv   a request body as an Arrow table
    prototype(card)                    what a client sends: each column's type, one example row
    merge(preps) / split(...)          several requests' rows through one predict() call
    records(...)                       predictions as one JSON object per scored row

Validation is scorer.data.frames.prepare, as for blobs: the same messages, the same rejected
rows (numbered from 1 in the request's order).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from scorer.data.formats import CsvOptions, open_input
from scorer.data.frames import Prepared, layout
from scorer.errors import InputFormatError
from scorer.r.pool import Answer


@dataclass(frozen=True)
class Limits:
    """What one request may hold (the SCORER_SERVE_MAX_* settings, where their defaults
    live): rows, columns, the characters of a column's name, and cells (rows x columns of
    the table it makes)."""

    rows: int
    columns: int
    name_chars: int
    cells: int

    @classmethod
    def of(cls, settings: Any) -> "Limits":
        return cls(settings.serve_max_request_rows, settings.serve_max_columns, settings.serve_max_name_chars,
                   settings.serve_max_cells)

    def check(self, where: str, rows: int, names: list[str] | dict) -> None:
        """Raise InputFormatError naming the limit and its setting (``too_large`` for 413)."""
        hint = "Send fewer rows per request, or drop a file into input/ for batch scoring."
        if rows > self.rows:
            raise InputFormatError(f"{where}: {rows} rows; a request may hold {self.rows} "
                                   "(SCORER_SERVE_MAX_REQUEST_ROWS).", hint=hint, too_large=True)
        if len(names) > self.columns:
            raise InputFormatError(f"{where}: more than {self.columns} columns (SCORER_SERVE_MAX_COLUMNS).",
                                   hint="Send only the columns the model needs (GET /v1/models/{name} lists them).")
        long = next((n for n in names if len(n) > self.name_chars), None)
        if long is not None:
            raise InputFormatError(f"{where}: a column name of {len(long)} characters ({long[:40]!r}...); names "
                                   f"may have {self.name_chars} (SCORER_SERVE_MAX_NAME_CHARS).",
                                   hint="Name each column as the model's card does.")
        if rows * len(names) > self.cells:
            raise InputFormatError(f"{where}: {rows} rows x {len(names)} columns make more than {self.cells} cells "
                                   "(SCORER_SERVE_MAX_CELLS).", hint=hint, too_large=True)


def table_from_json(body: bytes, where: str, limits: Limits) -> pa.Table:
    """``{"rows": [{...}, ...]}`` or a bare array of records. Columns: numbers when
    every value is a number, TRUE/FALSE when every value is a boolean, else text (the
    model's schema then parses them, as it parses CSV text); a row without a key has
    null there. Linear in the body's cells: each value is visited once. Raises
    InputFormatError, also for a request over ``limits``."""
    try:
        doc = orjson.loads(body)
    except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"{where}: the body is not valid JSON ({exc}).",
                               hint='Send {"rows": [{"column": value, ...}, ...]} or an array of such objects.') from None
    rows = doc.get("rows") if isinstance(doc, dict) else doc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputFormatError(f"{where}: expected an array of row objects, or an object whose \"rows\" is one.",
                               hint='For example {"rows": [{"age": 31, "education": "6-11yrs"}]}.')
    if not rows:
        raise InputFormatError(f"{where}: there are no rows to score.", hint="Send at least one row.")
    limits.check(where, len(rows), [])
    every = set().union(*rows)  # one pass, in C
    uniform = all(len(r) == len(every) for r in rows)  # every row has every key
    names = dict.fromkeys(rows[0]) if uniform else {}
    for r in ([] if uniform else rows):  # the order keys first appear in
        names.update(dict.fromkeys(r))
        if len(names) > limits.columns:
            break
    limits.check(where, len(rows), names or every)
    if len(rows) >= 32 and uniform:
        # Arrow's own conversion pays from here, when every row has every key and each
        # column holds one kind of value
        try:
            table = pa.Table.from_pylist(rows)
            if all(pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)
                   or pa.types.is_string(t) or pa.types.is_null(t) for t in table.schema.types):
                return table
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
    present: dict[str, tuple[list[int], list]] = {n: ([], []) for n in names}
    for i, r in enumerate(rows):
        for k, v in r.items():
            at, values = present[k]
            at.append(i)
            values.append(v)
    return pa.table({name: _column(name, at, values, len(rows), where) for name, (at, values) in present.items()})


def _column(name: str, at: list[int], values: list, n: int, where: str) -> pa.Array:
    """One column from the rows that have it (``at``), null in the others."""
    kept = [v for v in values if v is not None]
    if any(isinstance(v, (dict, list)) for v in kept):
        raise InputFormatError(f"{where}: column {name!r} holds an object or array; each value must be a "
                               "number, text, true/false or null.", hint=f"Flatten {name!r} into plain values.")
    if kept and all(isinstance(v, bool) for v in kept):
        array = pa.array(values, pa.bool_())
    elif kept and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in kept):
        array = pa.array([None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
                          for v in values], pa.float64())
    else:  # true and false as JSON writes them, not as Python does
        array = pa.array([None if v is None else ("true" if v else "false") if isinstance(v, bool)
                          else str(v) for v in values], pa.string())
    if len(at) == n:
        return array
    positions = np.full(n, -1, np.int64)
    positions[np.asarray(at, np.int64)] = np.arange(len(at), dtype=np.int64)
    return array.take(pa.array(positions, mask=positions < 0))


def table_from_csv(body: bytes, where: str, max_bytes: int, options: CsvOptions = CsvOptions()
                   ) -> tuple[pa.Table, str, str]:
    """A CSV body, read by the batch job's own CSV reader (the same options); with its
    delimiter and decimal mark. Raises InputFormatError."""
    table = open_input(io.BytesIO(body), "csv", where, 1 << 30, max_bytes, options)
    try:
        batches = list(table.batches)
    finally:
        table.close()
    schema = pa.schema([(n, pa.string()) for n in table.names])
    out = pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()
    if out.num_rows == 0:
        raise InputFormatError(f"{where}: the CSV has a header but no data rows.", hint="Send at least one row.")
    return out, table.delimiter, table.decimal


# -- what a client sends ------------------------------------------------------------------

_TYPES = {"numeric": "number", "integer": "number", "logical": "boolean", "Date": "date",
          "POSIXct": "date-time", "character": "string"}


def prototype(card: dict) -> dict | None:
    """Each input column's type (number, string, boolean, date, date-time, or one of a
    factor's levels) and one example request a client can copy; None without a schema."""
    schema = card.get("input_schema")
    if not schema:
        return None
    columns, example = {}, {}
    for f in schema:
        if f.get("levels"):
            columns[f["name"]] = {"type": "string", "levels": f["levels"]}
            example[f["name"]] = f["levels"][0]
        else:
            t = _TYPES.get(f["class"], "number or string")
            columns[f["name"]] = {"type": t} | ({"tz": f["tz"]} if f.get("tz") else {})
            example[f["name"]] = {"number": 0, "boolean": True, "date": "2024-01-31",
                                  "date-time": "2024-01-31T12:00:00Z"}.get(t, "text")
    return {"columns": columns, "example": {"rows": [example]}}


# -- several requests, one predict() ---------------------------------------------------------

def signature(prep: Prepared) -> tuple:
    """Requests whose columns have the same names, kinds, levels and time zones can be
    predicted together (always so for a model with a schema)."""
    return layout(prep.columns)


@dataclass
class Scored:
    """One request's outcome: results for its kept rows (in order), their request row
    numbers (from 1), and the rejected rows."""

    names: list[str]
    columns: list[pa.Array]
    rows: list[int]
    rejected: list[dict]


def outcome(prep: Prepared, answer: Answer | None, names_for: Any) -> Scored:
    """Apply R's dropped rows (missing values its predict() refused) to a request."""
    rejected = [{"row": i + 1, "column": c, "value": v, "reason": why} for i, c, v, why in prep.rejects]
    kept = np.flatnonzero(prep.keep)
    if answer is None:
        return Scored([], [], [], sorted(rejected, key=lambda r: r["row"]))
    columns = [a for _, a in answer.results]  # already without the dropped rows
    if answer.dropped is not None and answer.dropped.any():
        for i in kept[answer.dropped]:
            rejected.append({"row": int(i) + 1, "column": answer.reason[0], "value": "", "reason": answer.reason[1]})
        kept = kept[~answer.dropped]
    return Scored(names_for(answer.results), columns, [int(i) + 1 for i in kept],
                  sorted(rejected, key=lambda r: r["row"]))


def records(scored: Scored) -> list[dict]:
    """One JSON object per scored row: its request row number and its predictions."""
    values = [c.to_pylist() for c in scored.columns]
    out = []
    for j, row in enumerate(scored.rows):
        rec = {"row": row}
        for name, vals in zip(scored.names, values):
            v = vals[j]
            if isinstance(v, float) and not math.isfinite(v):  # JSON has no Inf or NaN: R's spelling, as text
                v = "NaN" if math.isnan(v) else "Inf" if v > 0 else "-Inf"
            rec[name] = v.isoformat() if hasattr(v, "isoformat") else v
        out.append(rec)
    return out
