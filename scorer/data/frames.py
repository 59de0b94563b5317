"""Input tables to R-ready columns: validation against the model's input schema.

Pure code: Arrow batches in, typed NumPy columns plus rejected rows out. Nothing
here touches storage or R, so it is fast to test and reason about.

The schema comes from the model card (``input_schema``: name, R class, factor
levels), which ``scorer models publish`` took from the model itself. Classes map
to the columns R receives:

    numeric, integer -> double            logical -> logical
    factor, ordered  -> factor, model's own levels (unseen level: row rejected)
    character with known values (lm's xlevels) -> factor with those levels
    Date             -> Date              character -> character
    POSIXct          -> POSIXct: ISO 8601 text or a timestamp; text without a zone
                        is wall-clock time in the model's time zone (UTC when unknown)
    any              -> double when every value parses as a number; Date or POSIXct
                        for a date or timestamp column, or text that is all ISO
                        dates or times; else character (R converts it itself)
    unknown          -> double when every value parses as a number; text fails the
                        input: the model (ranger) kept the name only, and coding
                        text as a factor without the training levels scores wrong

With a decimal comma (a ``;``-separated European CSV), numbers are read with ','
as the decimal mark.

A value that does not parse rejects its row, not the file. A required column
that is missing, or that holds no parseable value at all, fails the input.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scorer.errors import SchemaError

NA_INTEGER = -(2**31)
#: R's NA for doubles: a NaN with this payload (R_NaReal); a plain NaN is R's NaN
NA_REAL_BITS = 0x7FF00000000007A2

# What a number may look like in a CSV (Arrow's parser accepts the same and more).
_NUMBER_RE = r"^\s*[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[Ii]nf|[Ii]nfinity|NaN|nan)\s*$"
_TRUE = {"TRUE", "True", "true", "T", "1"}
_FALSE = {"FALSE", "False", "false", "F", "0"}


@dataclass
class RColumn:
    """One column as R will receive it.

    kind: numeric (float64, NaN = NA), logical (int32 0/1, NA_INTEGER = NA),
    factor (int32 1-based codes, NA_INTEGER = NA, with levels), date (float64
    days since 1970-01-01), posixct (float64 seconds since 1970-01-01 UTC, with
    the time zone R shows them in), character (list of str or None).
    """

    kind: str
    values: object
    levels: list[str] | None = None
    ordered: bool = False
    tz: str | None = None

    def take_rows(self, index: np.ndarray) -> "RColumn":
        """This column's rows at ``index`` (positions, in order)."""
        if self.kind == "character":
            vals = [self.values[i] for i in index]
        else:
            vals = self.values[index]
        return RColumn(self.kind, vals, self.levels, self.ordered, self.tz)

    def take(self, keep: np.ndarray) -> "RColumn":
        """This column's rows where ``keep`` is True."""
        if self.kind == "character":
            vals = [v for v, k in zip(self.values, keep) if k]
        else:
            vals = self.values[keep]
        return RColumn(self.kind, vals, self.levels, self.ordered, self.tz)


@dataclass
class Field:
    name: str
    r_class: str
    levels: list[str] | None = None
    tz: str | None = None

    @classmethod
    def from_card(cls, d: dict) -> "Field":
        return cls(name=d["name"], r_class=d["class"], levels=d.get("levels"), tz=d.get("tz"))

    @functools.cached_property
    def number_levels(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Levels that are all whole numbers written plainly ("1", "-2", not "01" or
        "1.0"), as (their values sorted, each one's level code): a column of numbers
        is coded against them without making text. None for any other levels."""
        try:
            values = np.array([int(lv) for lv in self.levels or []], dtype=np.float64)
        except (ValueError, OverflowError):
            return None
        if not len(values) or any(str(int(v)) != lv for v, lv in zip(values, self.levels)) or (
                np.abs(values) >= 2.0 ** 53).any():
            return None
        order = np.argsort(values, kind="stable")
        return values[order], (order + 1).astype(np.int64)


@dataclass
class Prepared:
    """A batch made ready for R: the columns of the kept rows, and the rejects."""

    columns: dict[str, RColumn]
    keep: np.ndarray                  # bool mask over the batch's rows
    rejects: list[tuple[int, str, str, str]] = field(default_factory=list)
    #: rows (0-based in batch), column, value, reason
    #: the columns over all the batch's rows (a value that did not parse is NA): scorer.monitoring.drift
    all_rows: dict[str, RColumn] = field(default_factory=dict)

    @functools.cached_property
    def n_kept(self) -> int:  # keep is never changed once made
        return int(self.keep.sum())

    def rows(self, start: int, stop: int) -> "Prepared":
        """The batch's rows start..stop-1, as if they were a batch of their own."""
        first = int(self.keep[:start].sum())
        kept = int(self.keep[start:stop].sum())
        span = np.arange(first, first + kept)
        columns = {k: c.take_rows(span) for k, c in self.columns.items()}
        rejects = [(i - start, c, v, why) for i, c, v, why in self.rejects if start <= i < stop]
        return Prepared(columns=columns, keep=self.keep[start:stop], rejects=rejects)


def layout(columns: dict[str, RColumn]) -> tuple:
    """What R's data frame is made of besides the values: each column's name, kind,
    levels, ordering and time zone. Batches or requests of one layout can be scored as
    one, and the R objects describing it made once."""
    return tuple((n, c.kind, tuple(c.levels or ()), c.ordered, c.tz) for n, c in columns.items())


def na_kept(schema: list[Field] | None, na_values: tuple[str, ...]) -> frozenset[str]:
    """The factor columns in which a missing-value token (SCORER_NA_VALUES) is one of the
    model's levels (a region called "NA"): there the token is read as that level."""
    tokens = set(na_values)
    return frozenset(f.name for f in schema or [] if f.levels and tokens & set(f.levels))


def check_columns(names: list[str], schema: list[Field] | None, where: str) -> None:
    """Raise SchemaError when required columns are missing or a name repeats."""
    dupes = sorted(n for n, count in Counter(names).items() if count > 1)  # linear: 40k names in ms
    if dupes:
        raise SchemaError(
            f"{where}: column name(s) {', '.join(map(repr, dupes))} appear more than once.",
            hint="Give every column a distinct name.",
            columns=dupes,
        )
    if not schema:
        return
    given = set(names)
    missing = [f.name for f in schema if f.name not in given]
    if missing:
        near = {}
        for m in missing:
            close = [n for n in names if n.lower() == m.lower()] or difflib.get_close_matches(m, names, 1)
            if close:
                near[m] = close[0]
        hint = "Add the missing column(s); the model needs: " + ", ".join(f.name for f in schema) + "."
        if near:
            hint += " Did you mean " + ", ".join(f"{v!r} for {k!r}" for k, v in near.items()) + "?"
        raise SchemaError(
            f"{where}: missing required column(s) {', '.join(map(repr, missing))}.",
            hint=hint, columns=missing,
        )


def prepare(batch: pa.RecordBatch, schema: list[Field] | None, where: str, decimal: str = ".") -> Prepared:
    """Convert the schema's columns of ``batch`` for R, rejecting rows that do not fit.

    With no schema (the model exposes none), every column is sent, typed by
    inference. ``decimal`` is the decimal mark of numbers written as text.
    Raises SchemaError for a column of the wrong type.
    """
    n = batch.num_rows
    bad = np.zeros(n, dtype=bool)
    rejects: list[tuple[int, str, str, str]] = []
    columns: dict[str, RColumn] = {}
    fields = schema if schema else [Field(name, "any") for name in batch.schema.names]
    for f in fields:
        arr = batch.column(batch.schema.get_field_index(f.name))
        col, col_bad, reason = _convert(arr, f, where, decimal)
        columns[f.name] = col
        if col_bad is not None and col_bad.any():
            new = col_bad & ~bad  # report each row once, with its first bad column
            for i in np.flatnonzero(new):
                value = arr[int(i)].as_py()
                rejects.append((int(i), f.name, "" if value is None else str(value), reason(value)))
            bad |= col_bad
    keep = ~bad
    every = columns
    if bad.any():
        columns = {k: c.take(keep) for k, c in columns.items()}
    rejects.sort()
    return Prepared(columns=columns, keep=keep, rejects=rejects, all_rows=every)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or (
        pa.types.is_dictionary(t) and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)))


def _plain(arr: pa.Array) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    return arr


def _wrong_type(f: Field, arr: pa.Array, where: str, expected: str) -> SchemaError:
    return SchemaError(
        f"{where}: column {f.name!r} should hold {expected}, but it holds {arr.type}.",
        hint=f"Send {f.name!r} as {expected}.", columns=[f.name],
    )


def _convert(arr: pa.Array, f: Field, where: str, decimal: str = "."):
    """(RColumn, bad-row mask or None, reason(value) -> str)."""
    arr = _plain(arr)
    if decimal != "." and _is_text(arr.type) and f.r_class in ("numeric", "integer", "any", "unknown"):
        arr = pc.replace_substring(arr.cast(pa.string()), decimal, ".")
    cls = f.r_class
    if cls in ("numeric", "integer"):
        return _numeric(arr, f, where)
    if cls in ("factor", "ordered") or (cls == "character" and f.levels):
        return _factor(arr, f, where)
    if cls == "logical":
        return _logical(arr, f, where)
    if cls == "Date":
        return _date(arr, f, where)
    if cls == "POSIXct":
        return _timestamp(arr, f, where)
    if cls == "character":
        if not (_is_text(arr.type) or pa.types.is_integer(arr.type)):
            raise _wrong_type(f, arr, where, "text")
        return RColumn("character", arr.cast(pa.string()).to_pylist()), None, None
    # "any" and "unknown": numbers if they all are numbers
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_decimal(arr.type):
        return _numeric(arr, f, where)
    if pa.types.is_boolean(arr.type):
        return _logical(arr, f, where)
    if pa.types.is_date(arr.type):
        return _date(arr, f, where)
    if pa.types.is_timestamp(arr.type):
        return _timestamp(arr, f, where)
    if _is_text(arr.type) or pa.types.is_null(arr.type):
        try:
            # numbers with spaces around them are numbers, as in a column typed numeric
            vals = pc.cast(pc.utf8_trim_whitespace(arr.cast(pa.string())), pa.float64())
            return RColumn("numeric", _float_values(vals)), None, None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        if cls == "unknown":
            sample = next((v for v in arr.to_pylist() if v is not None), "")
            raise SchemaError(
                f"{where}: column {f.name!r} holds text (first value: {sample!r}), but the model recorded only "
                f"the name of this variable, not whether it was a factor or its levels, so scorer cannot code "
                "the text the way the model was trained (R would code it alphabetically, and score wrong).",
                hint=f"Publish the model again with --levels {f.name}=<its levels in the training factor's order> "
                "(for ranger, or fit it with respect.unordered.factors = \"order\", which records them).",
                columns=[f.name])
        text = arr.cast(pa.string())
        for kind in (_date, _timestamp):  # all ISO dates, or all ISO times: those types
            if _all_parse(text, kind):
                return kind(text, f, where)
        return RColumn("character", text.to_pylist()), None, None
    raise _wrong_type(f, arr, where, "numbers or text")


def _all_parse(text: pa.Array, kind) -> bool:
    """Whether every non-missing value of ``text`` (at least one) is an ISO date
    (``kind`` is _date) or an ISO date-time (_timestamp)."""
    if text.null_count == len(text):
        return False
    pattern = _ISO_DATE if kind is _date else _ISO_TIME
    return bool(pc.all(pc.fill_null(pc.match_substring_regex(text, pattern), True)).as_py())


def _float_values(arr: pa.Array) -> np.ndarray:
    """The values as doubles, a missing one as R's NA (not a plain NaN: R tells them apart,
    and factor(NaN) is a level "NaN" where factor(NA) is missing)."""
    if arr.null_count == 0:
        return arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    values = pc.fill_null(arr, float("nan")).to_numpy(zero_copy_only=False).astype(np.float64, copy=True)
    values.view(np.uint64)[np.asarray(arr.is_null())] = NA_REAL_BITS
    return values


def _numeric(arr: pa.Array, f: Field, where: str):
    t = arr.type
    if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_decimal(t) or pa.types.is_null(t):
        return RColumn("numeric", _float_values(arr.cast(pa.float64()))), None, None
    if not _is_text(t):  # true/false too: R refuses a logical where the model was fitted on numbers
        raise _wrong_type(f, arr, where, "numbers")
    try:
        return RColumn("numeric", _float_values(pc.cast(arr, pa.float64()))), None, None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # Slow path, only for batches with bad values: find them, then parse the rest.
    ok = pc.fill_null(pc.match_substring_regex(arr, _NUMBER_RE), True)
    bad = ~ok.to_numpy(zero_copy_only=False)
    nonnull = arr.is_valid().to_numpy(zero_copy_only=False)
    if not (nonnull & ~bad).any():
        sample = next((s for s in arr.to_pylist() if s is not None), "")
        raise SchemaError(
            f"{where}: column {f.name!r} should hold numbers, but none of its values is a number "
            f"(first value: {sample!r}).",
            hint=f"Check that {f.name!r} is the right column and that numbers use '.' as the "
            "decimal mark and no thousands separator.",
            columns=[f.name],
        )
    cleaned = pc.if_else(ok, pc.utf8_trim_whitespace(arr), pa.scalar(None, pa.string()))
    try:
        vals = pc.cast(cleaned, pa.float64())
    except pa.ArrowInvalid:
        parsed = []
        for i, s in enumerate(cleaned.to_pylist()):
            try:
                parsed.append(None if s is None else float(s))
            except ValueError:
                bad[i] = True
                parsed.append(None)
        vals = pa.array(parsed, pa.float64())
    return (RColumn("numeric", _float_values(vals)), bad & nonnull,
            lambda v: f"column {f.name!r}: {v!r} is not a number")


def _factor(arr: pa.Array, f: Field, where: str):
    if f.levels is None:
        raise SchemaError(
            f"{where}: the model was trained with {f.name!r} as a factor but recorded none of its levels, so "
            "scorer cannot code this column the way the model expects.",
            hint=f"Publish the model again with --levels {f.name}=<the training factor's levels, in order>.",
            columns=[f.name])
    levels = f.levels
    t = arr.type

    def unseen(v) -> str:
        return f"column {f.name!r}: level {v!r} was not seen when the model was fitted (levels: {_show_levels(levels)})"

    if (pa.types.is_integer(t) or pa.types.is_floating(t)) and f.number_levels is not None:
        coded = _number_codes(arr, *f.number_levels)
        if coded is not None:
            codes, bad = coded
            return RColumn("factor", codes, levels, ordered=f.r_class == "ordered"), bad if bad.any() else None, unseen
    if pa.types.is_integer(t):
        arr = arr.cast(pa.string())
    elif pa.types.is_floating(t):
        # 1.0 -> "1", so integer-coded levels stored as doubles still match
        as_int = pc.cast(arr, pa.int64(), safe=False)
        v = arr.to_numpy(zero_copy_only=False)
        if np.all(np.isnan(v) | ((np.abs(v) < 2.0 ** 53) & (v == np.trunc(v)))):  # the usual case: whole numbers
            arr = as_int.cast(pa.string())
        else:
            arr = pc.if_else(pc.equal(pc.cast(as_int, pa.float64(), safe=False), arr), as_int.cast(pa.string()),
                             arr.cast(pa.string()))
    elif pa.types.is_boolean(t):
        arr = pc.if_else(arr, "TRUE", "FALSE")
    elif not (_is_text(t) or pa.types.is_null(t)):
        raise _wrong_type(f, arr, where, "text (factor levels)")
    arr = arr.cast(pa.string())
    enc = arr.dictionary_encode()
    dictionary = enc.dictionary.to_pylist()
    index = {lv: i + 1 for i, lv in enumerate(levels)}
    mapping = np.array([index.get(v, -1) for v in dictionary] + [NA_INTEGER], dtype=np.int64)
    idx = (enc.indices.fill_null(len(dictionary)) if enc.indices.null_count else enc.indices).to_numpy(
        zero_copy_only=False)
    codes = mapping[idx]
    bad = codes == -1
    if bad.all() and len(codes) > 0 and len(levels) > 0:
        sample = dictionary[int(idx[0])] if idx[0] < len(dictionary) else None
        raise SchemaError(
            f"{where}: column {f.name!r} holds none of the model's levels "
            f"(first value: {sample!r}; levels: {_show_levels(levels)}).",
            hint=f"Check that {f.name!r} is the right column and uses the training data's level names.",
            columns=[f.name],
        )
    codes = np.where(bad, NA_INTEGER, codes).astype(np.int32)
    return RColumn("factor", codes, levels, ordered=f.r_class == "ordered"), bad if bad.any() else None, unseen


def _number_codes(arr: pa.Array, values: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Level codes for a column of numbers against whole-number levels (sorted
    ``values``, their ``codes``), as the text route would give them (2 and 2.0 are
    level "2"; 2.5, NaN and inf are unseen; null is NA): (codes, bad rows). None when
    no value is a level, which the text route reports with its sample value."""
    v = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    at = np.minimum(np.searchsorted(values, v), len(values) - 1)
    hit = values[at] == v
    null = np.asarray(arr.is_null()) if arr.null_count else np.zeros(len(v), dtype=bool)
    bad = ~hit & ~null
    if bad.all() and len(v):
        return None
    return np.where(hit, codes[at], NA_INTEGER).astype(np.int32), bad


def _show_levels(levels: list[str], most: int = 12) -> str:
    shown = ", ".join(levels[:most])
    return shown + (f", ... ({len(levels)} in all)" if len(levels) > most else "")


def _logical(arr: pa.Array, f: Field, where: str):
    t = arr.type
    if pa.types.is_boolean(t):
        vals = arr.cast(pa.int32())
        return RColumn("logical", pc.fill_null(vals, NA_INTEGER).to_numpy(zero_copy_only=False)), None, None
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        arr = arr.cast(pa.string())
    elif not (_is_text(t) or pa.types.is_null(t)):
        raise _wrong_type(f, arr, where, "TRUE/FALSE")
    py = arr.cast(pa.string()).to_pylist()
    out = np.empty(len(py), dtype=np.int32)
    bad = np.zeros(len(py), dtype=bool)
    for i, s in enumerate(py):
        if s is None:
            out[i] = NA_INTEGER
        elif s.strip() in _TRUE:
            out[i] = 1
        elif s.strip() in _FALSE:
            out[i] = 0
        else:
            out[i] = NA_INTEGER
            bad[i] = True
    return (RColumn("logical", out), bad if bad.any() else None,
            lambda v: f"column {f.name!r}: {v!r} is not TRUE or FALSE")


def _date(arr: pa.Array, f: Field, where: str):
    t = arr.type
    if pa.types.is_timestamp(t):
        arr = arr.cast(pa.date32())
    if pa.types.is_date(t) or pa.types.is_date(arr.type):
        days = arr.cast(pa.date32()).cast(pa.int32()).cast(pa.float64())
        return RColumn("date", _float_values(days)), None, None
    if not (_is_text(t) or pa.types.is_null(t)):
        raise _wrong_type(f, arr, where, "dates (YYYY-MM-DD)")
    # a date-time at midnight is that date, as R's as.Date() takes it (2024-05-01 00:00:00,
    # 2024-05-01T00:00:00Z); a later time of day is no date, and rejects its row
    arr = pc.replace_substring_regex(arr.cast(pa.string()), _MIDNIGHT, r"\1")
    try:
        days = pc.cast(arr.cast(pa.string()), pa.date32()).cast(pa.int32()).cast(pa.float64())
        return RColumn("date", _float_values(days)), None, None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass  # slow path below, only for batches with bad values
    py = arr.cast(pa.string()).to_pylist()
    parsed, bad = [], np.zeros(len(py), dtype=bool)
    for i, s in enumerate(py):
        try:
            parsed.append(None if s is None else s.strip())
            if s is not None:
                pa.scalar(s.strip()).cast(pa.date32())
        except (pa.ArrowInvalid, ValueError):
            parsed[-1] = None
            bad[i] = True
    days = pa.array(parsed, pa.string()).cast(pa.date32()).cast(pa.int32()).cast(pa.float64())
    return (RColumn("date", _float_values(days)), bad if bad.any() else None,
            lambda v: f"column {f.name!r}: {v!r} is not a date (YYYY-MM-DD)")


_ISO_DATE = r"^\s*\d{4}-\d{2}-\d{2}\s*$"
_MIDNIGHT = r"^\s*(\d{4}-\d{2}-\d{2})[T ]00:00(:00(\.0+)?)?\s*(Z|[+-]00:?00)?\s*$"
_ISO_TIME = r"^\s*\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})?\s*$"
_ZONED = r"(Z|[+-]\d{2}:?\d{2})\s*$"


def _timestamp(arr: pa.Array, f: Field, where: str):
    """POSIXct: seconds since 1970 UTC. Text with a zone (Z, +02:00) is that
    instant; text or a timestamp without one is wall-clock time in the model's
    time zone (UTC when the model recorded none)."""
    tz = f.tz or "UTC"
    t = arr.type
    if pa.types.is_date(t):
        arr = arr.cast(pa.timestamp("s"))
        t = arr.type
    if pa.types.is_timestamp(t):
        instants = arr if t.tz else pc.assume_timezone(arr, tz, ambiguous="earliest", nonexistent="earliest")
        return RColumn("posixct", _epoch_seconds(instants), tz=tz), None, None
    if not (_is_text(t) or pa.types.is_null(t)):
        raise _wrong_type(f, arr, where, "date-times (ISO 8601, e.g. 2024-05-01T13:45:00Z)")
    text = pc.utf8_trim_whitespace(arr.cast(pa.string()))
    ok = pc.fill_null(pc.match_substring_regex(text, _ISO_TIME), True)
    ok = pc.or_(ok, pc.fill_null(pc.match_substring_regex(text, _ISO_DATE), False))
    bad = ~ok.to_numpy(zero_copy_only=False)
    valid = pc.if_else(ok, text, pa.scalar(None, pa.string()))
    zoned = pc.fill_null(pc.match_substring_regex(valid, _ZONED), False)
    # Arrow's ISO 8601 parser wants "T" and "+hh:mm"; R writes a space and may write "+hhmm"
    normal = pc.replace_substring_regex(valid, r"^(\d{4}-\d{2}-\d{2}) ", r"\1T")
    normal = pc.replace_substring_regex(normal, r"([+-]\d{2})(\d{2})$", r"\1:\2")
    with_zone = pc.if_else(zoned, normal, pa.scalar(None, pa.string()))
    without = pc.if_else(zoned, pa.scalar(None, pa.string()), normal)
    try:
        a = _epoch_seconds(pc.cast(with_zone, pa.timestamp("us", tz="UTC")))
        b = _epoch_seconds(pc.assume_timezone(pc.cast(without, pa.timestamp("us")), tz, ambiguous="earliest",
                                              nonexistent="earliest"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaError(f"{where}: column {f.name!r} holds a date-time Arrow cannot read ({exc}).",
                          hint="Write date-times as ISO 8601, e.g. 2024-05-01T13:45:00Z or 2024-05-01 13:45:00.",
                          columns=[f.name]) from None
    values = np.where(np.isnan(a), b, a)
    values.view(np.uint64)[np.isnan(values)] = NA_REAL_BITS  # no time is missing (R's NA), not NaN
    if not (~bad & arr.is_valid().to_numpy(zero_copy_only=False)).any() and bad.any():
        sample = next((v for v in arr.to_pylist() if v is not None), "")
        raise SchemaError(
            f"{where}: column {f.name!r} should hold date-times, but none of its values is one (first value: "
            f"{sample!r}).", hint="Write date-times as ISO 8601, e.g. 2024-05-01T13:45:00Z or 2024-05-01 13:45:00.",
            columns=[f.name])
    return (RColumn("posixct", values, tz=tz), bad & arr.is_valid().to_numpy(zero_copy_only=False) if bad.any() else None,
            lambda v: f"column {f.name!r}: {v!r} is not a date-time (ISO 8601)")


def _epoch_seconds(ts: pa.Array) -> np.ndarray:
    micros = ts.cast(pa.timestamp("us", tz=ts.type.tz)).cast(pa.int64())
    # Divided before R's NA is put in: arithmetic on that NaN would raise the invalid flag
    return _float_values(pc.divide(micros.cast(pa.float64()), 1e6))


def result_name(raw: str) -> str:
    """A column name of R's predict() result as scorer writes it: spaces and = made _
    (quantreg's "tau= 0.10" is "tau_0.10", pls's "2 comps" "2_comps")."""
    return re.sub(r"[\s=]+", "_", raw).strip("_") if raw else raw


def prediction_names(results: list[tuple[str, pa.Array]], taken: list[str]) -> list[str]:
    """Output column names: ``prediction`` for a vector, ``prediction_<name>`` per
    column of a matrix or data frame; suffixed with ``_`` while an input column
    already has the name."""
    if len(results) == 1 and results[0][0] == "":
        names = ["prediction"]
    else:
        names = [f"prediction_{n}" for n, _ in results]
    out = []
    used = set(taken)
    for nm in names:
        while nm in used:
            nm += "_"
        used.add(nm)
        out.append(nm)
    return out


def one_batch(table: pa.Table) -> pa.RecordBatch:
    """Every row of ``table`` as one batch; with no rows, its columns empty (as read.csv
    gives a file of a header alone)."""
    batches = table.combine_chunks().to_batches()
    return batches[0] if batches else empty_batch(table.schema)


def empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    """A batch of no rows with ``schema``'s columns."""
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)


def function_frame(batch: pa.RecordBatch, text: list[str] | None, where: str, decimal: str = ".") -> Prepared:
    """An input as an R function's score(data, ...) gets it, whole in one batch: every
    column typed by inference (numbers, ISO dates and date-times, text), but the ``text``
    columns (--text at publish), which stay text. One rule for a blob, an HTTP request
    and scorer.predict."""
    schema = [Field(n, "character" if n in text else "any") for n in batch.schema.names] if text else None
    return prepare(batch, schema, where, decimal)
