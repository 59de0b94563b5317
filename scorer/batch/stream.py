"""Scoring one input: batches in, scored batches and rejected rows out.

The pure core of the job. It takes an opened input table, the model's schema, a
loaded model with the R bridge that can call it, and two writers; it knows
nothing of blobs, leases or files. Rows keep their input order. Rejected rows are
left out of the output and written to the rejected-rows writer with their row
number (counting data rows from 1) and the reason.
"""

from __future__ import annotations

import functools
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from scorer.data.formats import InputTable
from scorer.data.frames import Prepared, check_columns, function_frame, prediction_names, prepare
from scorer.data.rejected import RejectedRows
from scorer.errors import InputFormatError, ScorerError
from scorer.monitoring.drift import Tally, observe_batch, observe_predictions
from scorer.r.pool import Answer, Turn, Waiting
from scorer.r.predict import PredictSpec, predict_rows, seed_for


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
    #: seconds each stage was busy: "read" (the next batch parsed, which waits on the
    #: download), "check" (typed and checked against the model), "drift", "predict" (R, this
    #: process's), "write" (formatted and handed to the upload, which waits when it is behind).
    #: The stages overlap, so they add up to more than the input's time (docs/performance.md)
    busy_s: Counter = field(default_factory=Counter)


@dataclass
class Workers:
    """When to add R worker processes (scorer.r.pool) for an input, and how."""

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
                 workers: Workers | None = None, predict: Callable | None = None) -> Counts:
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
    (scorer.r.pool) and batches are cut in pieces of a fraction of a batch, which wait in
    one queue: each worker takes the next as soon as it is free, this process's R takes
    them between reading batches, and results are written in input order. Then the
    pieces of at most two batches are in flight, plus one batch read ahead.

    ``predict`` stands for scorer.r.predict.predict_rows with ``r`` (an input on a thread
    of its own passes its door's: scorer.r.door).

    ``counts`` (updated as batches go) tells how far it got when it raises.
    Raises SchemaError (missing or mistyped columns) and PredictError (R's
    predict() failed on rows without missing values).
    """
    check_columns(table.names, spec.schema, where)
    stream = _Stream(table, spec, model, r, out, rejected, where, counts if counts is not None else Counts(),
                     on_first_scored, check_stop, drift, workers, predict)
    stream.run()
    return stream.counts


class _Stream:
    """score_stream's three stages and the R workers' queue (see its docstring)."""

    def __init__(self, table: InputTable, spec: PredictSpec, model: Any, r: Any, out: Any, rejected: RejectedRows,
                 where: str, counts: Counts, on_first_scored: Callable[[], None] | None,
                 check_stop: Callable[[], None] | None, drift: Tally | None, workers: Workers | None,
                 predict: Callable | None = None) -> None:
        self.table, self.spec, self.model, self.r, self.out, self.rejected = table, spec, model, r, out, rejected
        self.predict = predict or functools.partial(predict_rows, r)
        self.where, self.counts, self.on_first_scored, self.check_stop = where, counts, on_first_scored, check_stop
        self.drift, self.workers = drift, workers
        self.names: list[str] | None = None
        self.batches = iter(table.batches)
        self.written: Future | None = None
        self.piece_rows: int | None = None  # None: whole batches, the job's R alone
        self.probed = workers is None or workers.size <= 1  # nothing to decide
        self.waiting = Waiting()
        self.inflight: deque[Turn] = deque()
        # shutdown(cancel_futures) on the way out: an error or a stop waits for at most
        # the one batch each stage is working on, never for the rest of the file.
        self.reader = ThreadPoolExecutor(1, thread_name_prefix="score-read")
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="score-write")

    def run(self) -> None:
        counts = self.counts
        try:
            ahead = self.reader.submit(self.read_next)
            while True:
                item = ahead.result()  # re-raises the reader's errors, in input order
                if item is None:
                    break
                ahead = self.reader.submit(self.read_next)
                if self.check_stop:
                    self.check_stop()  # raises Interrupted when the job was asked to stop
                batch, prep = item
                offset = counts.rows_read
                counts.rows_read += batch.num_rows
                if prep is None:
                    continue
                if not self.probed and prep.n_kept:
                    pieces = self.probe(batch, prep, offset)
                else:
                    pieces = _cut(batch, prep, offset, self.piece_rows)
                for piece_batch, piece, piece_offset in pieces:
                    turn = Turn(piece_batch, piece, piece_offset)
                    self.inflight.append(turn)
                    if piece.n_kept:
                        self.waiting.put(turn)
                    else:
                        turn.finish("job")  # nothing to predict: every row was rejected
                # this process's share of the pieces, while the workers take theirs
                while (turn := self.waiting.take(block=False, leave_for_idle=True)) is not None:
                    self.here(turn)
                    self.emit_done()
                self.emit_done()
            while (turn := self.waiting.take(block=False)) is not None:  # what no worker took
                self.here(turn)
            while self.inflight:  # the workers' last pieces
                self.emit(self.inflight.popleft())
            if self.written is not None:
                self.written.result()
        finally:
            self.waiting.close()  # the workers stop taking pieces; they stay up for the next input
            self.reader.shutdown(wait=True, cancel_futures=True)
            self.writer.shutdown(wait=True, cancel_futures=True)

    def probe(self, batch: pa.RecordBatch, prep: Prepared, offset: int) -> list:
        """Time predict() on the first rows; a first batch as slow as SCORER_R_WORKERS_AFTER
        starts the workers, and then batches go in pieces, so that every R session stays
        busy to the end of the file. Returns the rest of the batch's pieces."""
        self.probed = True
        (head, head_prep, _), *rest = _cut(batch, prep, offset, PROBE_ROWS)
        # one row first, untimed: R's first predict() in a session loads the functions it
        # calls (model.frame, ...), which would make any model look slow
        if head_prep.n_kept:
            first = int(np.flatnonzero(head_prep.keep)[0])
            try:
                self.predict(self.model, head_prep.rows(first, first + 1), self.spec, Counter())
            except ScorerError:
                pass  # a warm-up only: the batch's own call says what is wrong
        turn = Turn(head, head_prep, offset)
        self.inflight.append(turn)
        seconds = self.here(turn)
        workers = self.workers
        # Nothing left for workers when the probe held the whole input (no piece after it, and
        # a batch short of full is the last): a 5-row input of a slow model, timed on a loaded
        # machine, used to start them for nothing (the suite found it with three processes)
        more = bool(rest) or batch.num_rows >= workers.batch_rows
        # the batch as it is, not a full one: a 10-row input never waits for workers
        if more and head_prep.n_kept and seconds / head_prep.n_kept * prep.n_kept >= workers.after_seconds:
            workers.start(workers.size - 1, self.waiting, self.spec)
            self.piece_rows = max(1_000, -(-workers.batch_rows // (2 * workers.size)))
        return [cut for part in rest for cut in _cut(*part, self.piece_rows)]

    def read_next(self) -> tuple[pa.RecordBatch, Prepared | None] | None:
        busy, t0 = self.counts.busy_s, time.monotonic()
        batch = next(self.batches, None)
        t1 = time.monotonic()
        busy["read"] += t1 - t0
        if batch is None:
            return None
        prep = prepare(batch, self.spec.schema, self.where, self.table.decimal) if batch.num_rows else None
        t2 = time.monotonic()
        busy["check"] += t2 - t1
        if self.drift is not None and prep is not None:
            self.drift.add_features(observe_batch(batch, prep))
            busy["drift"] += time.monotonic() - t2
        return batch, prep

    def write(self, batch: pa.RecordBatch, keep: np.ndarray, details: list, offset: int,
              arrays: list[pa.Array], out_names: list[str], result_names: list[str]) -> None:
        t = time.monotonic()
        try:
            self._write(batch, keep, details, offset, arrays, out_names, result_names)
        finally:
            self.counts.busy_s["write"] += time.monotonic() - t

    def _write(self, batch: pa.RecordBatch, keep: np.ndarray, details: list, offset: int,
               arrays: list[pa.Array], out_names: list[str], result_names: list[str]) -> None:
        self.rejected.add(batch, np.flatnonzero(~keep).tolist(), offset, details)
        if not keep.any():
            return
        if self.drift is not None:
            self.drift.add_predictions(observe_predictions(list(zip(result_names, arrays))))
        scored = batch.filter(pa.array(keep)) if not keep.all() else batch
        self.out.write(pa.RecordBatch.from_arrays(list(scored.columns) + arrays,
                                                  names=scored.schema.names + out_names))

    def emit(self, turn: Turn) -> None:
        counts = self.counts
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
        if n_keep and self.names is None:
            self.names = prediction_names(results, batch.schema.names)
        if self.written is not None:
            self.written.result()  # one batch written behind; re-raises the writer's errors
        self.written = self.writer.submit(self.write, batch, keep, details, turn.offset, [a for _, a in results],
                                          self.names if n_keep else [], [n for n, _ in results])
        if n_keep:
            if counts.rows_scored == 0 and self.on_first_scored:
                self.on_first_scored()
            counts.rows_scored += n_keep

    def here(self, turn: Turn) -> float:
        """Predict a piece with this process's R; returns the seconds it took."""
        t = time.monotonic()
        try:
            warned: Counter = Counter()
            turn.finish("job", Answer(*self.predict(self.model, turn.prep, self.spec, warned), warned))
        except BaseException as exc:
            turn.finish("job", error=exc)
        seconds = time.monotonic() - t
        self.counts.busy_s["predict"] += seconds
        return seconds

    def emit_done(self) -> None:
        while self.inflight and self.inflight[0].done():
            self.emit(self.inflight.popleft())


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
        whole = table.no_rows()
    counts.rows_read += whole.num_rows
    prep = function_frame(whole, text, where, table.decimal)
    if check_stop:
        check_stop()
    results, warnings = r.call_score(script, prep.columns, whole.num_rows, params, seed_for(where))
    counts.warnings.update(set(warnings))
    result = pa.RecordBatch.from_arrays([a for _, a in results], names=[n for n, _ in results])
    out.write(result)
    counts.rows_written = result.num_rows
    return counts
