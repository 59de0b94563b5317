"""The CSV reader against an independent one, on files Hypothesis makes (issue 26).

The oracle is Python's ``csv`` module in strict mode, which follows the same quoting
rules scorer documents (a quote opens a quoted value only at a field's start, ``""``
inside one is a quote, a quote elsewhere is text) and refuses what scorer refuses: a
quoted value never closed, text after a closing quote. For every generated file, either
both read the same rows and values (empty and ``NA`` are missing; blank lines are
skipped, as ``read.csv`` does) or scorer refuses the file with an InputFormatError; it
never reads a file differently. Files are made well-formed by ``csv.writer`` with every
quoting style, then damaged (a quote put in or taken out, the file cut short) so that the
malformed cases are as common as the good ones.

Parquet files (text, numbers, booleans, dates, nulls; dictionary-encoded or not; any row
group size and codec) are read by scorer and by DuckDB, an independent implementation of
the format, with batches of any size: the same rows and values, in order.

Hypothesis keeps the cases it finds in tests/hypothesis-db (in the repository), so a case
found once is tried first in every later run.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scorer.errors import InputFormatError
from scorer.data.formats import open_input

# characters that matter to a CSV reader, and a few that do not
FIELD_CHARS = st.sampled_from(list('ab1.5 -"\n\r,;\tNAé€') + ["", "NA", "x y"])
FIELDS = st.lists(FIELD_CHARS, min_size=0, max_size=6).map("".join)
NAMES = st.text(alphabet=st.sampled_from(list('abcxyz_ "é')), min_size=1, max_size=8)
QUOTING = [csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]


def oracle(text: str, delimiter: str) -> list[list[str | None]] | str:
    """What Python's csv (strict) reads: the data rows, or why it refuses the file.
    Like scorer, it refuses a blank first line (read.csv would skip it, and take the
    next line for the header)."""
    if not text.splitlines() or not text.splitlines()[0].strip():
        return "refused: blank first line"
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        return f"refused: {exc}"
    rows = [r for r in rows if r]  # blank lines
    if not rows:
        return "refused: no header"
    header, data = rows[0], rows[1:]
    if len(set(header)) != len(header):
        return "refused: repeated names"
    if any(len(r) != len(header) for r in data):
        return "refused: ragged"
    return [[None if v in ("", "NA") else v for v in r] for r in data]


def scorer_reads(data: bytes, fmt: str = "csv", batch_rows: int = 3) -> list[list[str | None]]:
    table = open_input(io.BytesIO(data), fmt, "f.csv", batch_rows, 1 << 30)
    try:
        return [list(row.values()) for batch in table.batches for row in batch.to_pylist()]
    finally:
        table.close()


@st.composite
def csv_files(draw) -> tuple[bytes, str]:
    delimiter = draw(st.sampled_from([",", ",", ";"]))
    width = draw(st.integers(1, 4))
    names = draw(st.lists(NAMES, min_size=width, max_size=width, unique=True))
    if delimiter == ";":  # the delimiter is ';' only when the header holds no ','
        names = [n.replace(",", "_") for n in names]
    rows = draw(st.lists(st.lists(FIELDS, min_size=width, max_size=width), max_size=8))
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, quoting=draw(st.sampled_from(QUOTING)),
                        lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(names)
    writer.writerows(rows)
    text = out.getvalue()
    damage = draw(st.sampled_from(["none", "none", "add quote", "drop quote", "cut"]))
    if damage != "none" and len(text) > 1:
        at = draw(st.integers(len(text.partition("\n")[0]) + 1, len(text)))
        if damage == "add quote":
            text = text[:at] + '"' + text[at:]
        elif damage == "drop quote" and '"' in text[at:]:
            i = text.index('"', at)
            text = text[:i] + text[i + 1:]
        elif damage == "cut":
            text = text[:at]
    return text, delimiter


def check(text: str, data: bytes, fmt: str = "csv") -> None:
    first = text.splitlines()[0] if text.splitlines() else ""
    # the documented rule: ',' unless the header line holds none and holds ';'
    expected = oracle(text, ";" if "," not in first and ";" in first else ",")
    try:
        got = scorer_reads(data, fmt)
    except InputFormatError as exc:
        assert isinstance(expected, str), f"scorer refused a file Python's csv reads as {expected!r}: {exc}"
        return
    assert got == expected, f"read differently from Python's csv: {got!r} != {expected!r}"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(csv_files())
@example(('a,b\n1,"x\n2,y\n3,z\n', ","))  # issue 26: an unclosed quote took every line after it
@example(('a,b\n1,"ab"cd\n2,y\n', ","))  # text after a closing quote
@example(('a,b\n1,5"11\n2,"y"\n', ","))  # a quote inside an unquoted field is text
@example(('a,b\n"1","x""\n2,y\n', ","))  # an escaped quote at a value's end, never closed
def test_the_csv_reader_reads_what_pythons_csv_reads_or_refuses(case):
    text, _ = case
    check(text, text.encode())


@settings(max_examples=150, deadline=None)
@given(csv_files(), st.booleans())
def test_gzip_and_a_byte_order_mark_change_nothing(case, bom):
    text, _ = case
    data = (codecs.BOM_UTF8 if bom else b"") + text.encode()
    check(text, gzip.compress(data), fmt="csv.gz")


@pytest.mark.parametrize("at", [0, 1, 2, 3, 100, 65_535, 65_536, 1 << 20, (1 << 20) + 1])
def test_quotes_are_followed_across_the_reads_of_a_long_file(at):
    """Long files are read in pieces of 64 KiB and 1 MiB; a quoted value, a "" or an
    unclosed quote at every boundary is read as a short file's would be."""
    filler = "1,filler\n" * (at // 9 + 1)
    pad = filler[:at] if at < len(filler) else filler
    pad = pad[: pad.rfind("\n") + 1]
    body = 'a,b\n' + pad + '2,"q""uote\nd"\n3,z\n'
    assert scorer_reads(body.encode(), batch_rows=1 << 20)[-2:] == [["2", 'q"uote\nd'], ["3", "z"]]
    with pytest.raises(InputFormatError, match="never closed"):
        scorer_reads(('a,b\n' + pad + '2,"q""uote\n3,z\n').encode(), batch_rows=1 << 20)


def test_an_unclosed_quote_names_its_line_and_column():
    rows = "".join(f"{i},x\n" for i in range(1, 500))
    with pytest.raises(InputFormatError) as caught:
        scorer_reads(("id,note\n" + rows + '500,"oops\n' + rows).encode())
    assert "line 501, column 'note'" in str(caught.value) and "never closed" in str(caught.value)


def test_a_header_longer_than_64_kib_names_every_column():
    """Names used to be read from the first 64 KiB only: later columns were typed by
    guess (zip=007 read as 7) and, over HTTP, a cut name was a duplicate."""
    names = [f"column_with_a_long_name_{i:05d}" for i in range(3000)]
    header = ",".join(names)
    assert len(header) > 64 * 1024
    table = open_input(io.BytesIO((header + "\n" + ",".join(["007"] * 3000) + "\n").encode()), "csv", "w.csv",
                       10, 1 << 30)
    try:
        assert table.names == names
        batch = next(table.batches)
        assert batch.column(2999).to_pylist() == ["007"] and batch.schema.field(2999).type == "string"
    finally:
        table.close()


# -- Parquet, against DuckDB's reader -----------------------------------------------------

TEXT = st.one_of(st.none(), st.sampled_from(["", "NA"]), st.text(alphabet=st.sampled_from(list('ab é"\n,;')),
                                                                     max_size=6))


@st.composite
def parquet_files(draw) -> tuple[bytes, int]:
    """A Parquet file (text, numbers, booleans, dates, with nulls; dictionary-encoded or
    not; row groups of any size; any codec), and a batch size to read it with."""
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    n = draw(st.integers(0, 40))
    floats = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=64))
    columns = {
        "text": pa.array(draw(st.lists(TEXT, min_size=n, max_size=n)), pa.string()),
        "number": pa.array(draw(st.lists(floats, min_size=n, max_size=n)), pa.float64()),
        "count": pa.array(draw(st.lists(st.one_of(st.none(), st.integers(-2**62, 2**62)), min_size=n, max_size=n)),
                          pa.int64()),
        "flag": pa.array(draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=n, max_size=n)), pa.bool_()),
        "day": pa.array(draw(st.lists(st.one_of(st.none(), st.dates(datetime.date(1900, 1, 1),
                                                                    datetime.date(2100, 1, 1))),
                                      min_size=n, max_size=n)), pa.date32()),
    }
    if draw(st.booleans()):
        columns["text"] = columns["text"].dictionary_encode()
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf, row_group_size=draw(st.integers(1, 50)),
                   compression=draw(st.sampled_from(["none", "snappy", "zstd", "gzip"])),
                   use_dictionary=draw(st.booleans()))
    return buf.getvalue(), draw(st.integers(1, 64))


def duckdb_reads(data: bytes, tmp: Path) -> list[tuple]:
    import duckdb

    path = tmp / "f.parquet"
    path.write_bytes(data)
    with duckdb.connect() as con:
        return con.execute("SELECT text, number, count, flag, day FROM read_parquet(?)", [str(path)]).fetchall()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@pytest.mark.slow
@given(parquet_files())
def test_the_parquet_reader_reads_what_duckdb_reads(tmp_path, case):
    """scorer's Parquet reader (text stored as dictionaries read as dictionaries, batches
    cut by their decoded size) against DuckDB's, an independent implementation of the
    format: the same rows and values, in order."""
    import math

    data, batch_rows = case
    path = tmp_path / "input.parquet"
    path.write_bytes(data)
    table = open_input(path, "parquet", "f.parquet", batch_rows, 1 << 30)
    try:
        got = [tuple(row.values()) for batch in table.batches for row in _plain_rows(batch)]
    finally:
        table.close()
    expected = duckdb_reads(data, tmp_path)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        for a, b in zip(g, e):
            assert a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)), (g, e)


def _plain_rows(batch) -> list[dict]:
    """A batch's rows as Python values, dictionaries decoded (as frames.prepare does)."""
    import pyarrow as pa

    columns = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in batch.columns]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names).to_pylist()
