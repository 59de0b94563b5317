"""Scoring one input: batches in, scored batches and rejected rows out.

The pure core of the job. It takes an opened input table, the model's schema, a
loaded model with the R bridge that can call it, and two writers; it knows
nothing of blobs, leases or files. Rows keep their input order. Rejected rows are
left out of the output and written to the rejected-rows writer with their row
number (counting data rows from 1) and the reason.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from scorer.cards import select_outputs
from scorer.drift import ReferenceBuilder, Tally, observe_batch, observe_predictions
from scorer.errors import InputFormatError, PredictError, ScorerError
from scorer.formats import InputTable
from scorer.frames import NA_INTEGER, Field, Prepared, RColumn, check_columns, prediction_names, prepare
from scorer.pool import Answer, Turn, Waiting


@dataclass
class Counts:
    """What happened to an input's rows so far; read also after an error."""

    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    #: an R function's output rows (None for a model: its rows are the input's)
    rows_written: int | None = None
    #: R's warnings, each message with the number of predict() calls that gave it
    warnings: Counter = field(default_factory=Counter)
    #: batches predicted by each R session: "job" (the job's own), "1", "2", ... (workers)
    batches_by_r: Counter = field(default_factory=Counter)


@dataclass
class PredictSpec:
    """How a model is called, from its card: the input schema, predict()'s type
    and other arguments, and the result columns to keep."""

    schema: list[Field] | None = None
    predict_type: str | None = None
    args: list[dict] = field(default_factory=list)
    output_columns: list[str] | None = None
    #: whether a row's prediction depends on that row alone (the card's, decided at publish
    #: by a test prediction): else a file is predicted in one call, a request alone
    rowwise: bool = True
    #: whether predict() draws random numbers (the card's): then R's seed is set first
    random: bool = False
    #: R's seed for a random predict() (set per input by its caller: seed_for)
    seed: int | None = None

    @classmethod
    def from_card(cls, card: dict) -> "PredictSpec":
        schema = card.get("input_schema")
        return cls(schema=[Field.from_card(f) for f in schema] if schema else None,
                   predict_type=card.get("predict_type"), args=card.get("predict_args") or [],
                   output_columns=card.get("output_columns"), rowwise=card.get("rowwise", True),
                   random=card.get("random", False))


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


@dataclass
class Workers:
    """When to add R worker processes (scorer.pool) for an input, and how."""

    #: R sessions in all, the job's own included (SCORER_R_WORKERS)
    size: int
    #: start the others when predict() on the input's first batch would take this long, as
    #: timed on its first PROBE_ROWS rows (SCORER_R_WORKERS_AFTER): a worker costs about a
    #: second to start, which a fast model or a small input never wins back
    after_seconds: float
    #: rows of a whole batch (SCORER_BATCH_ROWS)
    batch_rows: int
    #: n workers (the job's R not counted), started or kept from an earlier input of the
    #: model, taking pieces from a Waiting queue with a PredictSpec until it closes; they
    #: are the caller's, who ends them (the job: at the end of the run)
    start: Callable[[int, Waiting, PredictSpec], Any]


#: rows predict() is timed on, at the start of an input, to decide on R workers
PROBE_ROWS = 10_000


def _cut(batch: pa.RecordBatch, prep: Prepared, offset: int, size: int | None
         ) -> list[tuple[pa.RecordBatch, Prepared, int]]:
    """A batch in pieces of ``size`` rows (whole when None or when it is no larger)."""
    n = batch.num_rows
    if size is None or n <= size:
        return [(batch, prep, offset)]
    cuts = list(range(0, n, size)) + [n]
    return [(batch.slice(a, b - a), prep.rows(a, b), offset + a) for a, b in zip(cuts, cuts[1:])]


def score_stream(table: InputTable, spec: PredictSpec, model: Any, r: Any, out: Any, rejected: RejectedRows,
                 where: str, counts: Counts | None = None, on_first_scored: Callable[[], None] | None = None,
                 check_stop: Callable[[], None] | None = None, drift: Tally | None = None,
                 workers: Workers | None = None) -> Counts:
    """Score every batch of ``table`` and write the results.

    Three stages overlap, one batch apart: a reader thread parses and validates
    batch k+1 while R predicts batch k on this thread, and a writer thread
    formats and uploads batch k-1. R is called from this thread only; the
    other two spend their time in Arrow's C++ code, which releases the GIL. At
    most three batches are in flight, so memory does not grow with the file.
    With a ``drift`` tally, the reader counts each batch's input variables and the
    writer its predictions into the profile's bins: off R's thread, in bounded memory.

    With ``workers``, predict() is timed on the input's first PROBE_ROWS rows; when the
    first batch would take ``after_seconds``, R worker processes start beside this one
    (scorer.pool) and batches are cut in pieces of a fraction of a batch, which wait in
    one queue: each worker takes the next as soon as it is free, this process's R takes
    them between reading batches, and results are written in input order. Then the
    pieces of at most two batches are in flight, plus one batch read ahead.

    ``counts`` (updated as batches go) tells how far it got when it raises.
    Raises SchemaError (missing or mistyped columns) and PredictError (R's
    predict() failed on rows without missing values).
    """
    schema = spec.schema
    check_columns(table.names, schema, where)
    counts = counts if counts is not None else Counts()
    names: list[str] | None = None
    batches = iter(table.batches)

    def read_next() -> tuple[pa.RecordBatch, Prepared | None] | None:
        batch = next(batches, None)
        if batch is None:
            return None
        prep = prepare(batch, schema, where, table.decimal) if batch.num_rows else None
        if drift is not None and prep is not None:
            drift.add_features(observe_batch(batch, prep))
        return batch, prep

    def write(batch: pa.RecordBatch, keep: np.ndarray, details: list, offset: int,
              arrays: list[pa.Array], out_names: list[str], result_names: list[str]) -> None:
        rejected.add(batch, np.flatnonzero(~keep).tolist(), offset, details)
        if not keep.any():
            return
        if drift is not None:
            drift.add_predictions(observe_predictions(list(zip(result_names, arrays))))
        scored = batch.filter(pa.array(keep)) if not keep.all() else batch
        out.write(pa.RecordBatch.from_arrays(list(scored.columns) + arrays,
                                             names=scored.schema.names + out_names))

    written: Future | None = None

    def emit(turn: Turn) -> None:
        nonlocal names, written
        batch, prep = turn.batch, turn.prep
        answer = turn.result()  # a worker's error, raised here in input order
        if turn.by is not None:
            counts.batches_by_r[turn.by] += 1
        details = list(prep.rejects)
        keep = prep.keep.copy()
        results: list[tuple[str, pa.Array]] = []
        if answer is not None:
            counts.warnings.update(answer.warnings)
            results = answer.results
            if answer.dropped is not None:  # rows R could not score because of missing values
                kept_rows = np.flatnonzero(keep)
                for i in kept_rows[answer.dropped]:
                    details.append((int(i), answer.reason[0], "", answer.reason[1]))
                keep[kept_rows[answer.dropped]] = False
        n_keep = int(keep.sum())
        counts.rows_rejected += batch.num_rows - n_keep
        if n_keep and names is None:
            names = prediction_names(results, batch.schema.names)
        if written is not None:
            written.result()  # one batch written behind; re-raises the writer's errors
        written = writer.submit(write, batch, keep, details, turn.offset, [a for _, a in results],
                                names if n_keep else [], [n for n, _ in results])
        if n_keep:
            if counts.rows_scored == 0 and on_first_scored:
                on_first_scored()
            counts.rows_scored += n_keep

    def here(turn: Turn) -> float:
        """Predict a piece with this process's R; returns the seconds it took."""
        t = time.monotonic()
        try:
            warned: Counter = Counter()
            turn.finish("job", Answer(*predict_rows(r, model, turn.prep, spec, warned), warned))
        except BaseException as exc:
            turn.finish("job", error=exc)
        return time.monotonic() - t

    def emit_done() -> None:
        while inflight and inflight[0].done():
            emit(inflight.popleft())

    # shutdown(cancel_futures) on the way out: an error or a stop waits for at most
    # the one batch each stage is working on, never for the rest of the file.
    reader = ThreadPoolExecutor(1, thread_name_prefix="score-read")
    writer = ThreadPoolExecutor(1, thread_name_prefix="score-write")
    piece_rows: int | None = None   # None: whole batches, the job's R alone
    probed = workers is None or workers.size <= 1  # nothing to decide
    waiting = Waiting()
    inflight: deque[Turn] = deque()
    try:
        ahead = reader.submit(read_next)
        while True:
            item = ahead.result()  # re-raises the reader's errors, in input order
            if item is None:
                break
            ahead = reader.submit(read_next)
            if check_stop:
                check_stop()  # raises Interrupted when the job was asked to stop
            batch, prep = item
            offset = counts.rows_read
            counts.rows_read += batch.num_rows
            if prep is None:
                continue
            if not probed and prep.n_kept:
                # time predict() on the first rows; a first batch as slow as SCORER_R_WORKERS_AFTER
                # starts the workers, and then batches go in pieces, so that every R session
                # stays busy to the end of the file
                probed = True
                (head, head_prep, _), *rest = _cut(batch, prep, offset, PROBE_ROWS)
                # one row first, untimed: R's first predict() in a session loads the functions it
                # calls (model.frame, ...), which would make any model look slow
                if head_prep.n_kept:
                    first = int(np.flatnonzero(head_prep.keep)[0])
                    try:
                        predict_rows(r, model, head_prep.rows(first, first + 1), spec, Counter())
                    except ScorerError:
                        pass  # a warm-up only: the batch's own call says what is wrong
                turn = Turn(head, head_prep, offset)
                inflight.append(turn)
                seconds = here(turn)
                # the batch as it is, not a full one: a 10-row input never waits for workers
                if head_prep.n_kept and seconds / head_prep.n_kept * prep.n_kept >= workers.after_seconds:
                    workers.start(workers.size - 1, waiting, spec)
                    piece_rows = max(1_000, -(-workers.batch_rows // (2 * workers.size)))
                pieces = [cut for part in rest for cut in _cut(*part, piece_rows)]
            else:
                pieces = _cut(batch, prep, offset, piece_rows)
            for piece_batch, piece, piece_offset in pieces:
                turn = Turn(piece_batch, piece, piece_offset)
                inflight.append(turn)
                if piece.n_kept:
                    waiting.put(turn)
                else:
                    turn.finish("job")  # nothing to predict: every row was rejected
            # this process's share of the pieces, while the workers take theirs
            while (turn := waiting.take(block=False, leave_for_idle=True)) is not None:
                here(turn)
                emit_done()
            emit_done()
        while (turn := waiting.take(block=False)) is not None:  # what no worker took
            here(turn)
        while inflight:  # the workers' last pieces
            emit(inflight.popleft())
        if written is not None:
            written.result()
    finally:
        waiting.close()  # the workers stop taking pieces; they stay up for the next input
        reader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True, cancel_futures=True)
    return counts


def _missing(col: RColumn) -> np.ndarray:
    """Rows whose value a predict() method may refuse: missing, or (numbers) not finite."""
    if col.kind in ("numeric", "date", "posixct"):
        return ~np.isfinite(col.values)
    if col.kind in ("factor", "logical"):
        return col.values == NA_INTEGER
    return np.array([v is None for v in col.values], dtype=bool)


#: the most predict() calls spent finding the rows R refuses in a batch it failed on
BISECT_CALLS = 128


def predict_rows(r: Any, model: Any, prep: Prepared, spec: PredictSpec, warned: Counter):
    """predict() on the prepared rows. When R refuses the batch, the rows it refuses are
    found and rejected, and the others scored, as R scores them one by one (a missing or
    infinite value randomForest will not take, a value a formula's factor() never saw):
    the batch is halved until each part is predicted or is one row R refuses, within
    BISECT_CALLS calls. A model whose predictions depend on the rows predicted together
    (not ``spec.rowwise``) cannot be cut: its rows with missing or infinite values are
    set aside instead. When neither works, R's error is raised for the whole batch.

    Returns (results, mask of refused rows among the kept ones or None, (column, reason)).
    """
    n = prep.n_kept

    def call(columns: dict[str, RColumn], rows: int) -> list[tuple[str, pa.Array]]:
        results, warnings = r.predict(model, columns, rows, spec.predict_type, spec.args, spec.seed)
        warned.update(set(warnings))
        return select_outputs(results, spec.output_columns)

    try:
        return call(prep.columns, n), None, None
    except PredictError as exc:
        masks = {name: _missing(c) for name, c in prep.columns.items()}
        incomplete = np.zeros(n, dtype=bool)
        for m in masks.values():
            incomplete |= m
        if spec.rowwise and n > 1:
            found = _bisect(call, prep.columns, n)
            if found is not None:
                results, refused, message = found
                which = ", ".join(k for k, m in masks.items() if (m & refused).any())
                return results, refused, (which, f"R's predict() refused this row: {message}")
        if not incomplete.any():
            raise
        if incomplete.all():
            # R's message may be about something else (a level a formula's factor() never saw)
            raise PredictError(
                f"{exc} Every row also has a missing value, in column(s) "
                f"{', '.join(repr(k) for k, m in masks.items() if m.any())}, which this model's predict() may "
                "not accept.",
                hint="Read R's message first; if it is about missing values, fill them before scoring.",
            ) from None
        complete = ~incomplete
        cols = {k: c.take(complete) for k, c in prep.columns.items()}
        results = call(cols, int(complete.sum()))
        which = [k for k, m in masks.items() if m.any()]
        return results, incomplete, (
            ", ".join(which), f"missing or infinite value in column(s) {', '.join(map(repr, which))}, and this "
                              f"model's predict() does not accept them ({exc})")


def _bisect(call: Callable, columns: dict[str, RColumn], n: int):
    """The rows of a batch R refuses, by halving it: (results for the others, in order,
    mask of the refused, R's message for the first); None when it takes more than
    BISECT_CALLS calls, or when R refuses every row."""
    calls = 0
    done: list[tuple[int, list]] = []  # (first row, results) of each part R predicted
    refused = np.zeros(n, dtype=bool)
    message = ""

    def part(a: int, b: int) -> bool:
        nonlocal calls, message
        calls += 1
        if calls > BISECT_CALLS:
            return False
        rows = np.arange(a, b)
        try:
            done.append((a, call({k: c.take_rows(rows) for k, c in columns.items()}, b - a)))
            return True
        except PredictError as exc:
            if b - a == 1:
                refused[a] = True
                message = message or str(exc).removeprefix("R's predict() failed: ")
                return True
        mid = (a + b) // 2
        return part(a, mid) and part(mid, b)

    mid = n // 2
    if not (part(0, mid) and part(mid, n)) or refused.all():
        return None
    done.sort(key=lambda d: d[0])
    names = [name for name, _ in done[0][1]]
    results = [(name, pa.concat_arrays([d[1][j][1] for d in done])) for j, name in enumerate(names)]
    return results, refused, message


def seed_for(name: str) -> int:
    """R's random seed for scoring the input ``name``: the same on every rerun and in
    every container (so a function that simulates, such as prophet's intervals, writes
    the same output twice), different between files."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") & 0x7FFFFFFF


def function_schema(names: list[str], text: list[str] | None) -> list[Field] | None:
    """How an R function's input columns are typed: by inference (numbers, dates, text),
    but for the ``text`` columns, which stay text (--text at publish)."""
    return [Field(n, "character" if n in text else "any") for n in names] if text else None


def whole_file(batches: Any, max_bytes: int, where: str, why: str,
               check_stop: Callable[[], None] | None = None) -> pa.RecordBatch | None:
    """Every batch of an input as one (None for no rows): for what R must get whole (an R
    function; a model whose predictions depend on the rows predicted together).
    Raises InputFormatError when it is larger than ``max_bytes`` once read."""
    got: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        size += batch.nbytes
        if size > max_bytes:
            raise InputFormatError(
                f"{where}: {why}, and this one is larger than SCORER_MAX_FUNCTION_BYTES ({max_bytes} bytes) once "
                "read.", hint="Split the file, or raise SCORER_MAX_FUNCTION_BYTES (the container needs several "
                "times that much memory).")
        got.append(batch)
        if check_stop:
            check_stop()
    if not got or not sum(b.num_rows for b in got):
        return None
    return pa.Table.from_batches(got).combine_chunks().to_batches()[0]


def run_function(table: InputTable, script: Any, r: Any, params: list[dict], out: Any, where: str,
                 counts: Counts, max_bytes: int, check_stop: Callable[[], None] | None = None,
                 text: list[str] | None = None) -> Counts:
    """An R scoring function's turn: the whole input, read into one data frame (numbers,
    ISO dates and date-times, text; the ``text`` columns as text whatever they hold, for
    codes with leading zeros), passed once to score(data, <params>) with R's
    random seed set from the input's name (seed_for); its result is the output, rows
    and columns of its own.

    Raises InputFormatError when the input is larger than ``max_bytes`` once read
    (SCORER_MAX_FUNCTION_BYTES: a function cannot stream), PredictError with R's message.
    """
    whole = whole_file(table.batches, max_bytes, where, "an R function gets the whole file at once", check_stop)
    if whole is None:  # a header and no rows: score() gets a data frame of none, as read.csv would give it
        schema = table.schema or pa.schema([(n, pa.string()) for n in table.names])
        whole = pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
    counts.rows_read += whole.num_rows
    prep = prepare(whole, function_schema(whole.schema.names, text), where, table.decimal)
    if check_stop:
        check_stop()
    results, warnings = r.call_score(script, prep.columns, whole.num_rows, params, seed_for(where))
    counts.warnings.update(set(warnings))
    result = pa.RecordBatch.from_arrays([a for _, a in results], names=[n for n, _ in results])
    out.write(result)
    counts.rows_written = result.num_rows
    return counts


#: the most reference rows predict() is run on at publish (a seeded sample beyond it)
PREDICTION_SAMPLE = 100_000


def profile_reference(table: pa.Table, spec: PredictSpec, model: Any, r: Any, source: str,
                      decimal: str = ".", batch_rows: int = 250_000) -> tuple[dict, list[str]]:
    """The drift profile of ``table`` (the reference rows, at publish): the model's
    input variables on every row, its predictions on at most PREDICTION_SAMPLE rows
    (a uniform sample, seeded, so that publishing again gives the same profile).
    Returns the profile and notes for the publisher."""
    builder = ReferenceBuilder()
    rejected = 0
    for batch in table.to_batches(max_chunksize=batch_rows):
        prep = prepare(batch, spec.schema, source, decimal)
        rejected += batch.num_rows - prep.n_kept
        builder.add_features(observe_batch(batch, prep))
    notes = []
    if rejected:
        notes.append(f"{rejected} of the reference's {table.num_rows} rows do not fit the model's input schema: "
                     "their unreadable values count as missing in the profile, and they have no predictions.")
    sample = None
    if table.num_rows > PREDICTION_SAMPLE:
        rows = np.sort(np.random.default_rng(0).choice(table.num_rows, PREDICTION_SAMPLE, replace=False))
        table, sample = table.take(pa.array(rows)), PREDICTION_SAMPLE
    warned: Counter = Counter()
    for batch in table.to_batches(max_chunksize=batch_rows):
        prep = prepare(batch, spec.schema, source, decimal)
        if prep.n_kept:
            results, _, _ = predict_rows(r, model, prep, spec, warned)
            builder.add_predictions(observe_predictions(results))
    return builder.profile(source, sample), notes
