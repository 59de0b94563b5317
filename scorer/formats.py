"""Reading inputs and writing outputs: CSV (also .csv.gz) and Parquet, with pyarrow.

Inputs are read as a stream of record batches, so memory stays bounded however
large the file. CSV columns are all read as text and typed later, against the
model's schema (scorer.frames): that way one bad value rejects one row instead of
failing the whole file, and the output repeats the input's values exactly as written.

Decisions (documented in docs/contract.md):
- CSV must be UTF-8 (a byte-order mark is fine). The delimiter is ',' unless the
  header line has none and has ';', tab or '|' instead.
- With ';' (what Excel writes where the decimal mark is a comma), numbers with a
  decimal comma are read as numbers when the first rows hold such numbers and no
  decimal points (SCORER_CSV_DECIMAL overrides the guess); the output keeps the
  input's delimiter and decimal mark.
- Empty cells and ``NA`` are missing values; quoted values may span lines.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv

from scorer.errors import InputFormatError
from scorer.frames import check_columns

FORMATS = {".csv": "csv", ".csv.gz": "csv.gz", ".parquet": "parquet", ".pq": "parquet"}
NULL_VALUES = ["", "NA"]
_SNIFF_BYTES = 64 * 1024
# Arrow's streaming reader reads up to 32 blocks ahead of the parser (its background
# reader's queue), so the block size bounds the input held in memory: 32 MiB here.
_CSV_BLOCK = 1024 * 1024
_BATCH_BYTES = 8 * 1024 * 1024  # of Arrow data (text and offsets): caps batches of wide rows


def format_of(name: str) -> str:
    """The format of a blob from its name; raises InputFormatError for anything else."""
    lower = name.lower()
    for ext in sorted(FORMATS, key=len, reverse=True):
        if lower.endswith(ext):
            return FORMATS[ext]
    raise InputFormatError(
        f"{name}: unsupported file type.",
        hint="Drop .csv, .csv.gz or .parquet files; other files are quarantined untouched.",
    )


@dataclass
class InputTable:
    """An input opened for reading: its column names and a stream of batches.
    ``close`` it when done, whether or not every batch was read."""

    names: list[str]
    batches: Iterator[pa.RecordBatch]
    _close: Callable[[], None] = lambda: None
    #: CSV only: the delimiter and decimal mark found (or set), kept for the output
    delimiter: str = ","
    decimal: str = "."

    def close(self) -> None:
        """Stop reading, and close the source the input was opened from.

        A CSV reader stopped early (a stop request, a bad row, a model that failed)
        may have Arrow's read-ahead thread inside the source's Python ``read``.
        Freeing the reader then waits for that thread while holding the GIL, which
        the thread needs to return: a deadlock. So the source is closed first, which
        makes every read fail at once, and the reader is drained to its end (without
        the GIL) before anything frees it.
        """
        self._close()


def open_input(source: Path | BinaryIO, fmt: str, where: str, batch_rows: int, max_bytes: int,
               decimal: str = "auto") -> InputTable:
    """Open an input: Parquet from a local file (its footer needs random access),
    CSV from a binary stream, read front to back as it arrives. ``decimal`` is
    the CSV decimal mark: ".", "," or "auto" (guessed, see above). Raises
    InputFormatError naming ``where`` (the blob)."""
    if fmt == "parquet":
        if Path(source).stat().st_size == 0:
            raise _empty(where)
        return _open_parquet(Path(source), where, batch_rows, max_bytes)
    return _open_csv(source, fmt == "csv.gz", where, batch_rows, max_bytes, decimal)


def open_parquet_part(source: BinaryIO, row_groups: list[int] | None, where: str, batch_rows: int,
                      max_bytes: int) -> InputTable:
    """Some row groups of a Parquet input, read from a seekable file (scorer.split)."""
    return _open_parquet(source, where, batch_rows, max_bytes, row_groups=row_groups)


def _empty(where: str) -> InputFormatError:
    return InputFormatError(f"{where}: the file is empty.", hint="Drop a file with a header and data rows.")


def _peek(stream: BinaryIO, gz: bool, where: str) -> tuple[bytes, bytes]:
    """Read the start of ``stream``: (the bytes read, the text they begin with)."""
    raw = bytearray()
    text = b""
    unzip = zlib.decompressobj(wbits=31) if gz else None  # 31: gzip framing
    while len(text) < _SNIFF_BYTES:
        piece = stream.read(_SNIFF_BYTES)
        if not piece:
            break
        raw += piece
        if unzip is None:
            text = bytes(raw)
            continue
        try:
            text += unzip.decompress(piece)
        except zlib.error as exc:
            raise InputFormatError(f"{where}: not a readable gzip file ({exc}).",
                                   hint="Compress with gzip, or drop the plain .csv.") from None
        if unzip.eof:
            break
    if not raw:
        raise _empty(where)
    return bytes(raw), text[:_SNIFF_BYTES]


class _Replay(io.RawIOBase):
    """``stream`` with the bytes already read from it put back in front."""

    def __init__(self, first: bytes, stream: BinaryIO):
        super().__init__()
        self._first = memoryview(first)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._first:
            n = min(len(b), len(self._first))
            b[:n] = self._first[:n]
            self._first = self._first[n:]
            return n
        return self._stream.readinto(b)


_COMMA_NUMBER = re.compile(r"^\s*[+-]?\d+,\d+\s*$")
_POINT_NUMBER = re.compile(r"^\s*[+-]?\d*\.\d+\s*$")


def _decimal_mark(text: str, delimiter: str) -> str:
    """"," when the sample's fields hold numbers with a decimal comma and none
    with a decimal point; a comma can only be a decimal mark when ';' (or tab,
    or '|') separates the fields."""
    if delimiter == ",":
        return "."
    fields = [f.strip('"') for line in text.splitlines()[1:200] for f in line.split(delimiter)]
    commas = sum(1 for f in fields if _COMMA_NUMBER.match(f))
    points = sum(1 for f in fields if _POINT_NUMBER.match(f))
    return "," if commas and not points else "."


def _sniff(head: bytes, where: str) -> tuple[list[str], str]:
    if head.startswith(codecs.BOM_UTF16_LE) or head.startswith(codecs.BOM_UTF16_BE):
        raise InputFormatError(f"{where}: the file is UTF-16 text.", hint="Save the CSV as UTF-8.")
    if b"\x00" in head:
        raise InputFormatError(
            f"{where}: this is not a text file (it contains NUL bytes).",
            hint="Drop CSV text (UTF-8) under a .csv name, or Parquet under .parquet.",
        )
    text = head.decode("utf-8-sig", errors="replace")
    first = text.splitlines()[0] if text.splitlines() else ""
    if not first.strip():
        raise InputFormatError(f"{where}: the first line is blank; expected a header of column names.",
                               hint="Put the column names on the first line.")
    delimiter = ","
    if "," not in first:
        for d in (";", "\t", "|"):
            if d in first:
                delimiter = d
                break
    try:
        names = next(csv.reader(io.StringIO(text), delimiter=delimiter))
    except (csv.Error, StopIteration) as exc:
        raise InputFormatError(f"{where}: the header line cannot be read as CSV ({exc}).",
                               hint="Check the quoting of the first line.") from None
    return names, delimiter


def _open_csv(stream: BinaryIO, gz: bool, where: str, batch_rows: int, max_bytes: int,
              decimal: str = "auto") -> InputTable:
    raw, text = _peek(stream, gz, where)
    names, delimiter = _sniff(text, where)
    if decimal == "auto":
        decimal = _decimal_mark(text.decode("utf-8-sig", errors="replace"), delimiter)
    check_columns(names, None, where)  # raises on repeated column names
    # Buffered, so that each read Arrow asks for is filled: Arrow makes a block of
    # whatever one read returns, and a short first read (the 64 KiB peeked above)
    # would cost an extra call into R, which for some models (ranger) is slow.
    source = pa.PythonFile(io.BufferedReader(_Replay(raw, stream), _SNIFF_BYTES), mode="r")
    if gz:
        source = pa.CompressedInputStream(source, "gzip")
    try:
        reader = pacsv.open_csv(
            source,
            read_options=pacsv.ReadOptions(block_size=_CSV_BLOCK, use_threads=True),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                null_values=NULL_VALUES, strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise _csv_error(exc, where) from None
    batches = _rebatch(_capped(_blocks(reader, where), where, max_bytes), batch_rows)

    def close() -> None:
        stream.close()
        try:
            while True:
                reader.read_next_batch()
        except Exception:  # StopIteration at the end, or the read that failed because the stream is closed
            pass

    return InputTable(names=reader.schema.names, batches=batches, _close=close, delimiter=delimiter,
                      decimal=decimal)


def _csv_error(exc: Exception, where: str) -> InputFormatError:
    msg = str(exc)
    if "Empty CSV file" in msg:  # a header line with no newline and nothing after it
        return InputFormatError(f"{where}: the file has a header but no data rows.",
                                hint="Drop a file with at least one data row.")
    if "UTF8" in msg or "utf8" in msg.lower():
        return InputFormatError(f"{where}: the file is not valid UTF-8 text.",
                                hint="Save the CSV as UTF-8 (Excel: 'CSV UTF-8').")
    if "gzip" in msg.lower() or "zlib" in msg.lower() or "compress" in msg.lower():
        return InputFormatError(f"{where}: the gzip data is corrupt or truncated ({msg}).",
                                hint="Compress the file again, or drop the plain .csv.")
    return InputFormatError(f"{where}: malformed CSV: {msg.strip()}",
                            hint="Check that every row has as many fields as the header and that quotes are closed.")


def _blocks(reader, where: str) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError, zlib.error) as exc:
            raise _csv_error(exc, where) from None
        yield batch


def _capped(batches: Iterator[pa.RecordBatch], where: str, max_bytes: int) -> Iterator[pa.RecordBatch]:
    """``batches``, failing the input once more than ``max_bytes`` have been read."""
    seen = 0
    for batch in batches:
        seen += batch.nbytes
        if seen > max_bytes:
            raise InputFormatError(
                f"{where}: the data is larger than SCORER_MAX_INPUT_BYTES ({max_bytes} bytes) once read.",
                hint="Split the file, or raise SCORER_MAX_INPUT_BYTES if this size is expected.",
            )
        yield batch


def _rebatch(blocks: Iterator[pa.RecordBatch], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of ``batch_rows`` rows, or of _BATCH_BYTES when rows are wide, from
    blocks of any size.

    Blocks are small because Arrow's reader reads up to 32 of them ahead; batches
    are larger because some models' predict() costs much per call (ranger's
    about 0.1 s), but not so large that wide rows fill memory.
    """
    pending: list[pa.RecordBatch] = []
    rows = size = 0
    for block in blocks:
        while block.num_rows:
            take = min(batch_rows - rows, block.num_rows)
            part = block.slice(0, take)
            pending.append(part)
            rows += take
            size += part.nbytes
            block = block.slice(take)
            if rows == batch_rows or size >= _BATCH_BYTES:
                yield _concat(pending)
                pending, rows, size = [], 0, 0
    if pending:
        yield _concat(pending)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def _open_parquet(path: Path | BinaryIO, where: str, batch_rows: int, max_bytes: int,
                  row_groups: list[int] | None = None) -> InputTable:
    """``path``: a local file, or a seekable file object (scorer.split); ``row_groups``:
    only these (a part of a split input)."""
    import pyarrow.parquet as pq  # here, not above: 8 ms of every start, for CSV too

    try:
        pf = pq.ParquetFile(str(path) if isinstance(path, Path) else path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputFormatError(f"{where}: not a readable Parquet file ({exc}).",
                               hint="Write the file with a Parquet writer (pyarrow, arrow::write_parquet).") from None
    names = pf.schema_arrow.names
    check_columns(names, None, where)  # raises on repeated column names

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from pf.iter_batches(batch_size=batch_rows, row_groups=row_groups)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputFormatError(f"{where}: the Parquet data is corrupt ({exc}).",
                                   hint="Write the file again.") from None

    return InputTable(names=names, batches=_capped(batches(), where, max_bytes), _close=pf.close)


class OutputWriter:
    """Writes batches of one output in the input's format (and, for CSV, its
    delimiter and decimal mark) to a binary sink."""

    def __init__(self, sink: BinaryIO, fmt: str, delimiter: str = ",", decimal: str = ".", header: bool = True):
        self._sink = sink
        self._fmt = fmt
        self._delimiter = delimiter
        self._decimal = decimal
        self._header = header  # False: a CSV part whose header another writer writes (scorer.split)
        self._writer = None
        self._stream = None
        self.schema: pa.Schema | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self._decimal != "." and self._fmt != "parquet":
            batch = _with_decimal_comma(batch, self._decimal)
        if self._writer is None:
            self.schema = batch.schema
            stream = pa.PythonFile(self._sink, mode="w")
            if self._fmt == "parquet":
                import pyarrow.parquet as pq

                self._writer = pq.ParquetWriter(stream, batch.schema, compression="snappy")
            else:
                if self._fmt == "csv.gz":
                    stream = pa.CompressedOutputStream(stream, "gzip")
                # quote only where needed, so numbers read back as numbers everywhere
                self._writer = pacsv.CSVWriter(stream, batch.schema, write_options=pacsv.WriteOptions(
                    quoting_style="needed", delimiter=self._delimiter, include_header=self._header))
            self._stream = stream
        elif batch.schema != self.schema:
            batch = batch.cast(self.schema)
        self._writer.write_batch(batch)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            if self._fmt == "csv.gz":
                self._stream.close()  # flushes the gzip trailer


def _with_decimal_comma(batch: pa.RecordBatch, decimal: str) -> pa.RecordBatch:
    """Number columns as text with ``decimal`` as the decimal mark (the input's
    own columns are text already, kept as they were written)."""
    import pyarrow.compute as pc

    cols = [pc.replace_substring(c.cast(pa.string()), ".", decimal) if pa.types.is_floating(c.type) else c
            for c in batch.columns]
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)
