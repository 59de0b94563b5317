"""Reading inputs and writing outputs: CSV (also .csv.gz) and Parquet, with pyarrow.

Inputs are read as a stream of record batches, so memory stays bounded however
large the file. CSV columns are all read as text and typed later, against the
model's schema (scorer.data.frames): that way one bad value rejects one row instead of
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

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from scorer.data.frames import check_columns, empty_batch
from scorer.errors import InputFormatError

FORMATS = {".csv": "csv", ".csv.gz": "csv.gz", ".tsv": "csv", ".tsv.gz": "csv.gz", ".parquet": "parquet",
           ".pq": "parquet"}
_SNIFF_BYTES = 64 * 1024
#: the longest header line read: Arrow's blocks must hold it (twice its size, below)
HEADER_MAX = 4 * 1024 * 1024
# Arrow's streaming reader reads up to 32 blocks ahead of the parser (its background
# reader's queue), so the block size bounds the input held in memory: 32 MiB here.
_CSV_BLOCK = 1024 * 1024
_BATCH_BYTES = 8 * 1024 * 1024  # of Arrow data (text and offsets): caps batches of wide rows


@dataclass(frozen=True)
class CsvOptions:
    """How CSV text is read (docs/contract.md, "Input formats"): the decimal mark (".",
    "," or "auto"); the tokens read as missing besides the empty cell (SCORER_NA_VALUES)
    and the columns that keep them as text (frames.na_kept); the delimiter when the name
    says it (.tsv: tab), else found from the header; the text's encoding
    (SCORER_CSV_ENCODING), in which the output is written too."""

    decimal: str = "auto"
    na_values: tuple[str, ...] = ("NA",)
    keep_na: frozenset[str] = frozenset()
    delimiter: str | None = None
    encoding: str = "utf-8"

    @classmethod
    def of(cls, settings: Any, name: str = "", keep_na: frozenset[str] = frozenset()) -> "CsvOptions":
        """The options the settings give for a file called ``name``."""
        return cls(decimal=settings.csv_decimal, na_values=settings.na_values, keep_na=keep_na,
                   delimiter="\t" if name.lower().endswith((".tsv", ".tsv.gz")) else None,
                   encoding=settings.csv_encoding)


def format_of(name: str) -> str:
    """The format of a blob from its name; raises InputFormatError for anything else."""
    lower = name.lower()
    for ext in sorted(FORMATS, key=len, reverse=True):
        if lower.endswith(ext):
            return FORMATS[ext]
    raise InputFormatError(
        f"{name}: unsupported file type.",
        hint="Drop .csv, .csv.gz, .tsv or .parquet files; other files are quarantined untouched.",
    )


@dataclass
class InputTable:
    """An input opened for reading: its column names and a stream of batches.
    ``close`` it when done, whether or not every batch was read."""

    names: list[str]
    batches: Iterator[pa.RecordBatch]
    _close: Callable[[], None] = lambda: None
    #: CSV only: the delimiter, decimal mark and encoding found (or set), kept for the output
    delimiter: str = ","
    decimal: str = "."
    encoding: str = "utf-8"
    #: the columns' types as read (CSV: text), for an output of no rows
    schema: pa.Schema | None = None

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

    def no_rows(self) -> pa.RecordBatch:
        """A batch of none of the input's rows, with its columns (typed as read; when no
        batch was read, as text): what a file of a header alone holds."""
        return empty_batch(self.schema or pa.schema([(n, pa.string()) for n in self.names]))


def open_input(source: Path | BinaryIO, fmt: str, where: str, batch_rows: int, max_bytes: int,
               csv: CsvOptions = CsvOptions()) -> InputTable:
    """Open an input: Parquet from a local file (its footer needs random access),
    CSV from a binary stream, read front to back as it arrives, as ``csv`` says (an
    empty cell is missing, and so is text in its ``na_values``, except in the columns
    its ``keep_na`` names). Raises InputFormatError naming ``where`` (the blob)."""
    if fmt == "parquet":
        if Path(source).stat().st_size == 0:
            raise _empty(where)
        return _open_parquet(Path(source), where, batch_rows, max_bytes)
    return _open_csv(source, fmt == "csv.gz", where, batch_rows, max_bytes, csv)


def open_parquet_part(source: BinaryIO, row_groups: list[int] | None, where: str, batch_rows: int,
                      max_bytes: int) -> InputTable:
    """Some row groups of a Parquet input, read from a seekable file (scorer.batch.split)."""
    return _open_parquet(source, where, batch_rows, max_bytes, row_groups=row_groups)


def _empty(where: str) -> InputFormatError:
    return InputFormatError(f"{where}: the file is empty.", hint="Drop a file with a header and data rows.")


def _peek(stream: BinaryIO, gz: bool, where: str) -> tuple[bytes, bytes, int]:
    """Read the start of ``stream``: (the bytes read, the text they begin with, where
    the header line ends in that text). Reads on until the header line has ended
    (outside quotes), so that every column's name is known however long the header
    (it used to be the first 64 KiB: later columns were typed by guess, issue 26), and
    at least _SNIFF_BYTES for the decimal mark's guess. Raises InputFormatError for an
    empty file, or a header longer than HEADER_MAX."""
    raw = bytearray()
    text = bytearray()
    unzip = zlib.decompressobj(wbits=31) if gz else None  # 31: gzip framing
    end = None
    while end is None or len(text) < _SNIFF_BYTES:
        piece = stream.read(_SNIFF_BYTES)
        if not piece:
            break
        raw += piece
        if unzip is None:
            text += piece
        else:
            try:  # at most what is needed: a gzip bomb's first piece is not inflated whole
                text += unzip.decompress(piece, HEADER_MAX + _SNIFF_BYTES - len(text))
            except zlib.error as exc:
                raise InputFormatError(f"{where}: not a readable gzip file ({exc}).",
                                       hint="Compress with gzip, or drop the plain .csv.") from None
        if end is None:
            end = header_end(bytes(text))
            if end is None and len(text) >= HEADER_MAX:
                raise InputFormatError(
                    f"{where}: the header line is longer than {HEADER_MAX // 1024**2} MiB (or a quote in it is "
                    "never closed).", hint="Check the first line's quotes; a file with that many columns is best "
                    "dropped as Parquet.")
        if unzip is not None and (unzip.eof or len(text) >= HEADER_MAX + _SNIFF_BYTES):
            break
    if not raw:
        raise _empty(where)
    return bytes(raw), bytes(text), len(text) if end is None else end


def header_end(text: bytes) -> int | None:
    """Where the first line of CSV ``text`` ends (past its line end), counting only line
    ends outside quotes; None when it does not end within ``text``."""
    pos = quotes = 0
    while True:
        lf, cr = text.find(b"\n", pos), text.find(b"\r", pos)
        nl = min(lf, cr) if lf >= 0 and cr >= 0 else max(lf, cr)
        if nl < 0:
            return None
        quotes += text.count(b'"', pos, nl)
        if quotes % 2 == 0:
            return nl + 2 if text[nl:nl + 2] == b"\r\n" else nl + 1
        pos = nl + 1


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


class QuotingError(InputFormatError):
    """A quote that would make the CSV reader take the rest of the file, or the rows up
    to a later quote, as one value: the input is refused rather than read so."""


_LF, _CR, _QUOTE, _EOF = 10, 13, 34, -1


class _QuoteScan(io.RawIOBase):
    """The CSV text on its way to Arrow's reader, with its quoting followed as the reader
    follows it, to refuse what the reader would silently take in (issue 26):

    - a quoted value never closed: Arrow reads the rest of the file into it (1,001 rows
      in, 1 scored, none rejected, no warning);
    - text after a closing quote (``"ab"cd``, read as ``abcd``): the mark of a stray
      quote, which closes at a later quote and makes the rows between one value.

    A quote opens a quoted value only at the start of a field; inside one, ``""`` is a
    quote and a lone quote closes it; a quote elsewhere is text (``5"11``), as in Arrow,
    Python's csv and data.table. Most reads hold no quote (one ``bytes.count``); quoting
    that keeps to RFC 4180 is checked with NumPy, every quote at once; only a read with
    a quote inside an unquoted field is walked quote by quote. The last byte of a read is
    scanned with the next read, whose first byte says what a quote there means.
    Raises QuotingError, naming the line and column, from ``readinto``: Arrow hands the
    exception to whoever reads the batches.
    """

    def __init__(self, raw: Any, delimiter: str, where: str, names: list[str]):
        super().__init__()
        self._raw = raw
        self._delim = ord(delimiter)
        self._where = where
        self._names = names
        self._in = False           # inside a quoted value, after what has been scanned
        self._escape_next = False  # the next byte is the second quote of a "" begun at the last one
        self._prev = _LF           # the byte before what is left to scan: the file starts a line
        self._tail = b""           # passed on, scanned with the next read
        self._lines = 0            # line ends before _tail
        self._opened: tuple[int, str] | None = None  # the open quoted value's line, and its line's text before it
        self._first = True

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = self._raw.readinto(b)
        if not n:
            self._scan(self._tail, _EOF)
            self._tail = b""
            if self._in:
                line, before = self._opened or (0, b"")
                raise QuotingError(
                    f"{self._where}: line {line}{self._column(before)}: a quoted value opens there and is never "
                    "closed, so every line after it would be read as part of that one value.",
                    hint="Close the quote (a quote inside a quoted value is written twice, \"\"), or remove it, "
                    "and drop the file again.", line=line)
            return n
        data = bytes(memoryview(b)[:n])
        if self._first:
            self._first = False
            if data.startswith(codecs.BOM_UTF8):  # the header starts after the mark
                data = data[3:]
                if not data:
                    return n
        window = self._tail + data
        self._scan(window[:-1], window[-1])
        self._tail = window[-1:]
        return n

    def _column(self, before: bytes) -> str:
        """", column 'name'" for the field that ``before`` (its line's text up to it) ends in."""
        try:
            fields = next(csv.reader([before.decode("utf-8", errors="replace")], delimiter=chr(self._delim)), [""])
        except csv.Error:
            return ""
        k = max(len(fields), 1) - 1
        return f", column {self._names[k]!r}" if k < len(self._names) else f", field {k + 1}"

    @staticmethod
    def _shown(before: bytes, after: bytes) -> str:
        """The text around a quote, within its line."""
        return (before[-30:] + after.split(b"\n")[0].split(b"\r")[0]).decode("utf-8", errors="replace")

    def _line_text(self, w: bytes, p: int) -> tuple[int, bytes]:
        """The line number of offset ``p`` of ``w``, and its line's text before it."""
        start = max(w.rfind(b"\n", 0, p), w.rfind(b"\r", 0, p)) + 1
        return self._lines + w.count(b"\n", 0, p) + 1, w[start:p]

    def _scan(self, w: bytes, nxt: int) -> None:
        """Follow the quoting through ``w``; ``nxt`` is the byte after it (_EOF at the end)."""
        n = len(w)
        if not n:
            return
        skip = 0
        if self._escape_next:  # w[0] is the second quote of a "" that began at the last byte scanned
            self._escape_next, skip = False, 1
        if w.count(b'"', skip) == 0:
            self._lines += w.count(b"\n")
            self._prev = w[-1]
            return
        a = np.frombuffer(w, dtype=np.uint8)
        q = np.flatnonzero(a[skip:] == _QUOTE) + skip
        before = a[np.maximum(q - 1, 0)].astype(np.int16)
        before[q == 0] = self._prev
        after = a[np.minimum(q + 1, n - 1)].astype(np.int16)
        after[q + 1 >= n] = nxt  # _EOF (-1) at the end: int16, not the bytes' uint8
        d = self._delim
        starts = (before == d) | (before == _LF) | (before == _CR)
        ends = (after == d) | (after == _LF) | (after == _CR) | (after == _EOF)
        quoted_next = after == _QUOTE
        quoted_before = np.zeros(len(q), dtype=bool)
        quoted_before[1:] = q[1:] == q[:-1] + 1
        # RFC 4180 quoting: quotes alternate open and close; an opening quote starts a field
        # or follows the closing half of a "", a closing quote ends a field or is followed by
        # the opening half of one
        opening = (np.arange(len(q)) + self._in) % 2 == 0
        if np.where(opening, starts | quoted_before, ends | quoted_next).all():
            last_closes = not opening[-1]
            if last_closes and q[-1] == n - 1 and nxt == _QUOTE:  # a "" across the reads
                self._in, self._escape_next = True, True
            else:
                self._in = bool(self._in ^ (len(q) % 2))
            if self._in:
                openers = np.flatnonzero(opening & ~quoted_before)
                if len(openers):
                    self._opened = self._line_text(w, int(q[openers[-1]]))
        else:
            self._walk(w, q, starts, after, ends, nxt)
        self._lines += w.count(b"\n")
        self._prev = w[-1]

    def _walk(self, w: bytes, q: np.ndarray, starts: np.ndarray, after: np.ndarray, ends: np.ndarray,
              nxt: int) -> None:
        """Quote by quote, as the reader does, for a read with quotes inside unquoted fields."""
        state, i, count = self._in, 0, len(q)
        while i < count:
            p = int(q[i])
            if not state:
                if starts[i]:  # a quote at a field's start opens a quoted value; elsewhere it is text
                    state = True
                    self._opened = self._line_text(w, p)
                i += 1
            elif after[i] == _QUOTE:  # "" inside a quoted value
                if p == len(w) - 1:
                    self._escape_next = True
                i += 2
            elif ends[i]:
                state = False
                i += 1
            else:
                line, before = self._line_text(w, p)
                raise QuotingError(
                    f"{self._where}: line {line}{self._column(before)}: text follows the closing quote of a quoted "
                    f"value ({self._shown(before, w[p:p + 16])!r}), so a quote there is "
                    "stray, and the reader would join the lines up to the next quote into one value.",
                    hint="A quote inside a quoted value is written twice (\"\"), and a value holding a quote is "
                    "quoted as a whole (\"5\"\"11\"); fix that line and drop the file again.", line=line)
        self._in = state

    def close(self) -> None:
        self._raw.close()
        super().close()


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


def _excel_separator(text: bytes) -> tuple[int, str | None]:
    """Excel's first line ``sep=;`` (what it writes for a delimiter it was told): where
    the header starts after it, and the delimiter; (0, None) when there is none."""
    import re as _re

    found = _re.match(rb"(?:\xef\xbb\xbf)?sep=(.)\r?\n", text)
    return (found.end(), found.group(1).decode("latin-1")) if found else (0, None)


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8")


def _python_codec(encoding: str) -> str:
    return "utf-8-sig" if _is_utf8(encoding) else encoding


def _arrow_codec(encoding: str) -> str:
    """Arrow reads UTF-8 itself, in C; any other encoding through Python's codecs."""
    return "utf8" if _is_utf8(encoding) else encoding


def _sniff(head: bytes, where: str, end: int | None = None, delimiter: str | None = None,
           encoding: str = "utf-8") -> tuple[list[str], str]:
    """The header's names and the delimiter (``delimiter`` when given), from the text the
    file starts with; ``end``: where its header line ends (found here when not given)."""
    if head.startswith(codecs.BOM_UTF16_LE) or head.startswith(codecs.BOM_UTF16_BE):
        raise InputFormatError(f"{where}: the file is UTF-16 text.", hint="Save the CSV as UTF-8.")
    if b"\x00" in head:
        raise InputFormatError(
            f"{where}: this is not a text file (it contains NUL bytes).",
            hint="Drop CSV text (UTF-8) under a .csv name, or Parquet under .parquet.",
        )
    if end is None:
        end = header_end(head)
    text = head[:len(head) if end is None else end].decode(_python_codec(encoding), errors="replace")
    first = text.splitlines()[0] if text.splitlines() else ""
    if not first.strip():
        raise InputFormatError(f"{where}: the first line is blank; expected a header of column names.",
                               hint="Put the column names on the first line.")
    if delimiter is None:
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
              csv_options: CsvOptions = CsvOptions()) -> InputTable:
    o = csv_options
    raw, text, end = _peek(stream, gz, where)
    skip = _excel_separator(text)  # Excel's "sep=;" first line: the delimiter, then the header
    if skip[0]:
        end = header_end(text[skip[0]:]) or len(text) - skip[0]
    names, delimiter = _sniff(text[skip[0]:], where, end, skip[1] or o.delimiter, o.encoding)
    decimal = o.decimal
    if decimal == "auto":
        decimal = _decimal_mark(text[skip[0]:].decode(_python_codec(o.encoding), errors="replace"), delimiter)
    na_values, keep_na = o.na_values, o.keep_na
    check_columns(names, None, where)  # raises on repeated column names
    if not gz and header_end(text) is None and len(raw) < _SNIFF_BYTES:  # a header, no line end, nothing else
        raw += b"\n"  # Arrow needs the line end to read a header of no rows
    # Buffered, so that each read Arrow asks for is filled: Arrow makes a block of
    # whatever one read returns, and a short first read (the 64 KiB peeked above)
    # would cost an extra call into R, which for some models (ranger) is slow.
    source: Any = io.BufferedReader(_Replay(raw, stream), _SNIFF_BYTES)
    if gz:
        source = pa.CompressedInputStream(pa.PythonFile(source, mode="r"), "gzip")
    # the quote scan reads what Arrow parses: the text, after decompression
    scan = _QuoteScan(source, delimiter, where, names)
    block = max(_CSV_BLOCK, 1 << (2 * end).bit_length())  # a block holds the header line
    try:
        reader = pacsv.open_csv(
            pa.PythonFile(io.BufferedReader(scan, block), mode="r"),
            read_options=pacsv.ReadOptions(block_size=block, use_threads=True, skip_rows=1 if skip[0] else 0,
                                           encoding=_arrow_codec(o.encoding)),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                # the tokens as Arrow's own null values, read in C; or, when a column keeps
                # one as text, turned into nulls column by column below
                null_values=[""] + ([] if keep_na else list(na_values)), strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise _csv_error(exc, where, block) from None
    blocks = _blocks(reader, where, block)
    if keep_na and na_values:
        blocks = _missing(blocks, pa.array(list(na_values), pa.string()), keep_na)
    batches = _rebatch(_capped(blocks, where, max_bytes), batch_rows)

    def close() -> None:
        stream.close()
        try:
            while True:
                reader.read_next_batch()
        except Exception:  # StopIteration at the end, or the read that failed because the stream is closed
            pass

    return InputTable(names=reader.schema.names, batches=batches, _close=close, delimiter=delimiter,
                      decimal=decimal, encoding=o.encoding, schema=reader.schema)


def _csv_error(exc: Exception, where: str, block: int = _CSV_BLOCK) -> InputFormatError:
    msg = str(exc)
    if "straddling object" in msg:  # a record longer than a block: Arrow cannot hold it
        return InputFormatError(f"{where}: a row (with any line breaks inside its quoted values) is longer than "
                                f"{block // 1024**2} MiB, the most scorer's CSV reader holds at once.",
                                hint="Shorten that row's values, check for a quote that is never closed, or drop "
                                "the data as Parquet.")
    if "Empty CSV file" in msg:  # a header line with no newline and nothing after it
        return InputFormatError(f"{where}: the file has a header but no data rows.",
                                hint="Drop a file with at least one data row.")
    if "UTF8" in msg or "utf8" in msg.lower():
        return InputFormatError(f"{where}: the file is not valid UTF-8 text.",
                                hint="Save the CSV as UTF-8 (Excel: 'CSV UTF-8'), or set SCORER_CSV_ENCODING to "
                                "its encoding (cp1252 for Excel's plain 'CSV' on Western European Windows).")
    if "gzip" in msg.lower() or "zlib" in msg.lower() or "compress" in msg.lower():
        return InputFormatError(f"{where}: the gzip data is corrupt or truncated ({msg}).",
                                hint="Compress the file again, or drop the plain .csv.")
    return InputFormatError(f"{where}: malformed CSV: {msg.strip()}",
                            hint="Check that every row has as many fields as the header and that quotes are closed.")


def _blocks(reader, where: str, block: int = _CSV_BLOCK) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError, zlib.error) as exc:
            raise _csv_error(exc, where, block) from None
        yield batch


def _missing(blocks: Iterator[pa.RecordBatch], tokens: pa.Array, keep: frozenset[str]) -> Iterator[pa.RecordBatch]:
    """``blocks`` with the NA tokens made missing in every column but those in ``keep``."""
    import pyarrow.compute as pc

    for block in blocks:
        columns = [c if n in keep else pc.if_else(pc.is_in(c, value_set=tokens), pa.scalar(None, pa.string()), c)
                   for n, c in zip(block.schema.names, block.columns)]
        yield pa.RecordBatch.from_arrays(columns, names=block.schema.names)


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
    """``path``: a local file, or a seekable file object (scorer.batch.split); ``row_groups``:
    only these (a part of a split input).

    A Parquet file can hold far more than its size: a 1 KB file whose one text value of
    100 KB is repeated 60,000 times (dictionary-encoded, zstd) reads to 6 GB, and used to
    be read a whole batch before its size was checked (out of memory three times, then a
    poison note, issue 26). So its declared size is checked first (the row groups'
    uncompressed bytes); text columns stored as dictionaries are read as dictionaries, and
    each batch's size once decoded is counted from the dictionary before any of it is
    decoded: batches are cut to at most _BATCH_BYTES of decoded data, and the input is
    refused as soon as SCORER_MAX_INPUT_BYTES would be passed."""
    import pyarrow.parquet as pq  # here, not above: 8 ms of every start, for CSV too

    source = str(path) if isinstance(path, Path) else path
    try:
        plain = pq.ParquetFile(source)
        meta, natural = plain.metadata, plain.schema_arrow  # the types a plain read gives
        groups = list(range(meta.num_row_groups)) if row_groups is None else row_groups
        pf = pq.ParquetFile(source, read_dictionary=_dictionary_columns(meta, groups))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputFormatError(f"{where}: not a readable Parquet file ({exc}).",
                               hint="Write the file with a Parquet writer (pyarrow, arrow::write_parquet).") from None
    names = pf.schema_arrow.names
    check_columns(names, None, where)  # raises on repeated column names
    declared = sum(meta.row_group(g).total_byte_size for g in groups)
    if declared > max_bytes:
        raise _too_large(where, max_bytes, f" (its row groups declare {declared:,} bytes uncompressed)")

    def batches() -> Iterator[pa.RecordBatch]:
        seen = 0
        try:
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=row_groups):
                for piece, size in _bounded(batch):
                    seen += size
                    if seen > max_bytes:
                        raise _too_large(where, max_bytes, " once its values are decoded")
                    yield _as_read(piece, natural)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputFormatError(f"{where}: the Parquet data is corrupt ({exc}).",
                                   hint="Write the file again.") from None

    return InputTable(names=names, batches=batches(), _close=pf.close, schema=natural)


def _as_read(batch: pa.RecordBatch, natural: pa.Schema) -> pa.RecordBatch:
    """A piece read with dictionaries, decoded to the types a plain read gives (an output
    repeats the input's columns as they were, not as dictionaries)."""
    if not any(pa.types.is_dictionary(c.type) and not pa.types.is_dictionary(natural.field(n).type)
               for n, c in zip(batch.schema.names, batch.columns)):
        return batch
    columns = [c.cast(natural.field(n).type) if pa.types.is_dictionary(c.type) else c
               for n, c in zip(batch.schema.names, batch.columns)]
    return pa.RecordBatch.from_arrays(columns, schema=natural)


def _too_large(where: str, max_bytes: int, how: str = " once read") -> InputFormatError:
    return InputFormatError(
        f"{where}: the data is larger than SCORER_MAX_INPUT_BYTES ({max_bytes} bytes){how}.",
        hint="Split the file, or raise SCORER_MAX_INPUT_BYTES if this size is expected.")


def _dictionary_columns(meta: Any, groups: list[int]) -> list[str]:
    """The text (byte-array) columns stored as dictionaries in every row group read: read
    as dictionaries they cost their indices, not their decoded values."""
    out = []
    for j in range(meta.num_columns):
        column = meta.schema.column(j)
        if column.physical_type != "BYTE_ARRAY" or "." in column.path:
            continue
        if groups and all(any("DICTIONARY" in e for e in meta.row_group(g).column(j).encodings) for g in groups):
            out.append(column.path)
    return out


def _row_bytes(column: pa.Array) -> np.ndarray:
    """What each row of ``column`` takes once decoded (a dictionary's value, with its offset)."""
    if pa.types.is_dictionary(column.type) and (_is_binary(column.type.value_type)):
        import pyarrow.compute as pc

        lengths = pc.binary_length(column.dictionary).cast(pa.int64()).fill_null(0)
        return pc.take(lengths, column.indices).fill_null(0).to_numpy(zero_copy_only=False) + 4
    return np.full(len(column), column.nbytes / max(len(column), 1))


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)


def _bounded(batch: pa.RecordBatch) -> Iterator[tuple[pa.RecordBatch, int]]:
    """``batch`` in pieces of at most _BATCH_BYTES once decoded (a row larger than that is
    a piece of its own), each with its decoded size; counted without decoding."""
    if not any(pa.types.is_dictionary(c.type) for c in batch.columns):
        yield batch, batch.nbytes
        return
    per_row = sum((_row_bytes(c) for c in batch.columns), np.zeros(batch.num_rows))
    ends = np.cumsum(per_row)
    start = 0
    while start < batch.num_rows:
        base = ends[start - 1] if start else 0.0
        stop = max(start + 1, int(np.searchsorted(ends, base + _BATCH_BYTES, side="right")))
        stop = min(stop, batch.num_rows)
        yield batch.slice(start, stop - start), int(ends[stop - 1] - base)
        start = stop


class OutputWriter:
    """Writes batches of one output in the input's format (and, for CSV, its
    delimiter and decimal mark) to a binary sink."""

    def __init__(self, sink: BinaryIO, fmt: str, delimiter: str = ",", decimal: str = ".", header: bool = True,
                 encoding: str = "utf-8"):
        # CSV in the input's encoding (SCORER_CSV_ENCODING): the output opens where the input did
        self._sink = sink if fmt == "parquet" or _is_utf8(encoding) else _Encoded(sink, encoding)
        self._fmt = fmt
        self._delimiter = delimiter
        self._decimal = decimal
        self._header = header  # False: a CSV part whose header another writer writes (scorer.batch.split)
        self._writer = None
        self._stream = None
        self.schema: pa.Schema | None = None

    def write(self, batch: pa.RecordBatch) -> None:
        if self._fmt != "parquet":
            batch = _r_numbers(batch, self._decimal)
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


class _Encoded(io.RawIOBase):
    """A binary sink taking UTF-8 (Arrow's CSV writer) and passing it on in ``encoding``;
    a character the encoding lacks becomes '?' (the input's own values all have one)."""

    def __init__(self, sink: Any, encoding: str):
        super().__init__()
        self._sink = sink
        self._decode = codecs.getincrementaldecoder("utf-8")()
        self._encoding = encoding

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self._sink.write(self._decode.decode(data).encode(self._encoding, errors="replace"))
        return len(data)

    def close(self) -> None:
        rest = self._decode.decode(b"", final=True)
        if rest:
            self._sink.write(rest.encode(self._encoding, errors="replace"))
        super().close()


def _r_numbers(batch: pa.RecordBatch, decimal: str) -> pa.RecordBatch:
    """Number columns as R's write.csv writes them: Inf, -Inf and NaN spelled so (Arrow
    writes inf and nan), and ``decimal`` as the decimal mark. Only columns that need it
    are changed (the input's own columns are text already, kept as they were written)."""
    import pyarrow.compute as pc

    cols, changed = [], False
    for c in batch.columns:
        if pa.types.is_floating(c.type) and (decimal != "." or pc.all(pc.is_finite(c)).as_py() is False):
            text = c.cast(pa.string())
            for arrow, r in (("^inf$", "Inf"), ("^-inf$", "-Inf"), ("^-?nan$", "NaN")):
                text = pc.replace_substring_regex(text, arrow, r)
            c = pc.replace_substring(text, ".", decimal) if decimal != "." else text
            changed = True
        cols.append(c)
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names) if changed else batch


def content_type(fmt: str) -> str:
    return {"csv": "text/csv", "csv.gz": "application/gzip", "parquet": "application/vnd.apache.parquet"}[fmt]
