"""Scoring an input with this job's R: the model's predict() as its card says (with the
input's seed when it draws), R worker processes kept from one input to the next, the drift
tally against the model's profile, R's warnings and the row counts checked; and an input
scored whole: the model loaded while the input downloads, the rows through predict() into
staged writers, the output committed (scorer.batch.outcomes).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from scorer.batch.claims import Claim, LeaseLost
from scorer.batch.outcomes import Outcomes, first_line
from scorer.batch.stopping import check as check_stop
from scorer.batch.shadow import shadow_stream
from scorer.batch.stream import Counts, Workers, run_function, score_stream, whole_file
from scorer.data.formats import CsvOptions, InputTable, OutputWriter, content_type, open_input
from scorer.data.frames import na_kept, prediction_names
from scorer.data.rejected import REJECTED_SUFFIX, RejectedRows
from scorer.errors import Interrupted, ScorerError, TooManyRejected
from scorer.models.registry import Registry
from scorer.monitoring.drift import Tally, not_computed
from scorer.monitoring.report import InputReport
from scorer.r.door import RDoor
from scorer.r.pool import Pool, usable_cores
from scorer.r.predict import PredictSpec, predict_rows, seed_for
from scorer.settings import Settings
from scorer.storage import BlobReader, Store, etag_of

log = logging.getLogger("scorer.job")


class Scoring:
    """What scoring needs across one run's inputs (see the module's docstring)."""

    def __init__(self, settings: Settings, store: Store, registry: Registry, outcomes: Outcomes,
                 started: float) -> None:
        self.settings, self.store, self.registry, self.outcomes = settings, store, registry, outcomes
        self.started = started  # the run's start (time.monotonic), for the first row's log line
        self._first_row_logged = False
        self._workers_pool: tuple[tuple, Pool] | None = None  # R workers kept for the next input (_pool)
        #: R for inputs on threads of their own (scorer.batch.flight), while there are any
        self.door: RDoor | None = None

    def close(self) -> None:
        """End the R workers kept for the next input."""
        if self._workers_pool is not None:
            self._workers_pool[1].close()

    def score_whole(self, work: "Work", card: dict, fmt: str, ahead: "Ahead") -> Tally | None:
        """Download, score and commit the output (and rejected rows); the drift tally."""
        ir = work.ir
        self.registry.r  # R starts before the download's threads, if not already: see scorer/r/bridge.py
        with tempfile.TemporaryDirectory(prefix="scorer-") as tmp:
            model, table = self._load_and_fetch(work, card, fmt, Path(tmp))
            t = time.monotonic()
            out, rejected = self._writers(work, fmt, table)
            if card.get("kind") == "function":
                tally, ir.drift = None, not_computed("an R function has no reference profile")
            else:
                tally = self.drift_tally(card, ir, work.profile.result)
            self._score_into(work, card, model, table, out, rejected, tally)
            ir.durations_s["score"] = round(time.monotonic() - t, 3)
            self._commit_output(work, card, fmt, table, out, rejected, ahead)
        return tally

    def _load_and_fetch(self, work: "Work", card: dict, fmt: str, tmp: Path) -> tuple[Any, InputTable]:
        """The model loaded while the input downloads and its first batch is read."""
        t = time.monotonic()
        fetch = self.store.submit(self._fetch, work.props, tmp / "input", fmt, work.ir, work.streams,
                                  self.na_kept(card))
        work.profile = None if card.get("kind") == "function" else self.store.submit(self.registry.profile, card)
        try:
            model = self.registry.load(card)
        except BaseException:
            # The model's error is the one to report. The download cannot be
            # cancelled midway, and must finish before its directory goes.
            wait([fetch])
            raise
        work.ir.durations_s["load_model"] = round(time.monotonic() - t, 3)
        return model, fetch.result()

    def shadow(self, work: "Work", card: dict, shadow_card: dict, fmt: str) -> None:
        """The input scored again, by the model's shadow version beside the current one, into
        shadow/ and compared (scorer.batch.shadow), after the current version's output is
        committed. Never raises but to stop: a shadow that fails is reported in ``ir.shadow``
        and a warning, and the input goes on to its archive as it would without a shadow."""
        s, ir, name = self.settings, work.ir, work.props.name
        t = time.monotonic()
        ir.shadow = {"version": shadow_card["version"]}
        sink, streams = None, []
        try:
            current = (self.spec(card, name), self.registry.load(card))
            shadow = (self.spec(shadow_card, name), self.registry.load(shadow_card))
            with tempfile.TemporaryDirectory(prefix="scorer-shadow-") as tmp:
                table = self._fetch(work.props, Path(tmp) / "input", fmt, InputReport(blob=name), streams,
                                    self.na_kept(card))
                if not (current[0].rowwise and shadow[0].rowwise):  # predicted whole, as R would: see _score_into
                    whole = whole_file(table.batches, s.max_function_bytes, name, "a version's predictions depend "
                                       "on the rows predicted together, so it gets the whole file at once", check_stop)
                    table.batches = iter([whole] if whole is not None else [])
                sink = self.store.staged(s.shadow_container, name)
                out = OutputWriter(sink, fmt, table.delimiter, table.decimal, encoding=table.encoding)
                predict = self._door_here() or functools.partial(predict_rows, self.registry.r)
                comparison = shadow_stream(table, current, shadow, predict, out, name, check_stop)
                out.close()
                sink.commit(metadata={**self.outcomes.output_metadata(work.props, shadow_card, None),
                                      "scorer_shadow_of": str(card["version"])}, content_type=content_type(fmt))
            ir.shadow.update(comparison.result(), output=f"{s.shadow_container}/{name}")
        except Interrupted:
            raise
        except Exception as exc:
            ir.shadow["error"] = {"kind": type(exc).__name__, "message": first_line(exc)}
            ir.warnings.append(f"the shadow (version {shadow_card['version']}) failed on this input; the current "
                               f"version's output stands: {ir.shadow['error']['message']}")
            log.warning("shadow failed", extra={"event": "shadow_failed", "blob": name,
                                                "version": shadow_card["version"], "error": ir.shadow["error"]})
        finally:
            if sink is not None:
                sink.abandon()  # after a commit, nothing
            for stream in reversed(streams):
                stream.close()
            ir.shadow["seconds"] = round(time.monotonic() - t, 3)

    def _door_here(self) -> Any:
        """predict_rows through the R door, for an input in flight on a thread of its own
        (scorer.batch.flight); None on the main thread, which calls R itself."""
        if self.door is not None and threading.current_thread() is not threading.main_thread():
            return self.door.predict_rows
        return None

    def _writers(self, work: "Work", fmt: str, table: InputTable) -> tuple[OutputWriter, RejectedRows]:
        """The output, staged in the input's format and CSV dialect, and the rejected rows
        (staged lazily: blocks are only sent once a row is rejected)."""
        s, name = self.settings, work.props.name
        work.out_sink = self.store.staged(s.output_container, name)
        work.sinks.append(work.out_sink)
        out = OutputWriter(work.out_sink, fmt, table.delimiter, table.decimal, encoding=table.encoding)
        if fmt != "parquet":
            work.ir.csv = {"delimiter": table.delimiter, "decimal": table.decimal}
        work.rej_sink = rej_sink = self.store.staged(s.output_container, name + REJECTED_SUFFIX)
        work.sinks.append(rej_sink)
        return out, RejectedRows(lambda: OutputWriter(rej_sink, "csv"))

    def _score_into(self, work: "Work", card: dict, model: Any, table: InputTable, out: OutputWriter,
                    rejected: RejectedRows, tally: Tally | None) -> None:
        """The input's rows through predict() (or the whole file through an R function's
        score()) into the writers; how far it got goes in the report, also on failure."""
        s, name, ir, counts = self.settings, work.props.name, work.ir, work.counts
        is_function = card.get("kind") == "function"
        door = self._door_here()  # an input in flight asks R through the door, and is small: never R workers for it
        try:
            if is_function:  # the whole file, once, through score(data, ...)
                run_function(table, model, self.registry.r, card.get("params") or [], out, name, counts,
                             s.max_function_bytes, check_stop=check_stop, text=card.get("text_columns"))
            else:
                spec = self.spec(card, name)
                if not spec.rowwise:  # predicted whole, as R would: see cards.rows_together
                    whole = whole_file(table.batches, s.max_function_bytes, name, "this model's "
                                       "predictions depend on the rows predicted together, so it gets the "
                                       "whole file at once", check_stop)
                    table.batches = iter([whole] if whole is not None else [])
                score_stream(table, spec, model, self.registry.r, out, rejected,
                             name, counts, on_first_scored=self.first_row, check_stop=check_stop,
                             drift=tally, workers=self.workers(card) if spec.rowwise and door is None else None,
                             predict=door)
        finally:  # how far it got, also when it failed
            ir.rows_read, ir.rows_rejected = counts.rows_read, counts.rows_rejected
            if is_function:
                ir.rows_scored, ir.rows_written = None, counts.rows_written
            else:
                ir.rows_scored = counts.rows_scored
            if len(counts.batches_by_r) > 1:
                ir.r_sessions = dict(counts.batches_by_r)
            ir.durations_s.update({f"score_{k}": round(v, 3) for k, v in counts.busy_s.items()})
            self.r_warnings(ir, counts)

    def _commit_output(self, work: "Work", card: dict, fmt: str, table: InputTable, out: OutputWriter,
                       rejected: RejectedRows, ahead: "Ahead") -> None:
        """Close the writers and commit what they wrote, fenced on what was seen at the claim."""
        s, name, ir, counts = self.settings, work.props.name, work.ir, work.counts
        self.check_counts(name, counts, rejected)
        if counts.rows_read == 0 and card.get("kind") != "function":  # a header, no rows: so is the output, as in R
            out.write(no_rows(table, card))
            ir.warnings.append("the file has a header but no data rows: the output has the header only")
        t = time.monotonic()
        out.close()
        if rejected.writer is not None:
            rejected.writer.close()
        check_stop()
        if work.claim.lost:
            raise LeaseLost(f"{name}: the claim (lease) on this input was lost while scoring it")
        meta = self.outcomes.output_metadata(work.props, card, counts.rows_rejected)
        out_sink = work.out_sink
        self.outcomes.commit(name, lambda seen: out_sink.commit(metadata=meta, content_type=content_type(fmt),
                                                       conditions=seen), ahead.committed.result(),
                    work.rej_sink if rejected.writer is not None else None, meta, ahead.rejected_before.result())
        ir.output = f"{s.output_container}/{name}"
        if rejected.writer is not None:
            ir.rejected_rows = f"{s.output_container}/{name}{REJECTED_SUFFIX}"
        ir.durations_s["commit"] = round(time.monotonic() - t, 3)

    def _fetch(self, props: Any, local: Path, fmt: str, ir: InputReport, streams: list,
               keep_na: frozenset[str] = frozenset()) -> Any:
        """Open an input for reading and read its first batch (on an I/O thread,
        while R loads the model). CSV is read as it downloads; Parquet, which
        needs random access, is downloaded first. Only the version claimed is read
        (its ETag): one replaced after a lease lapsed fails the read, never mixes."""
        s = self.settings
        name = props.name
        if fmt == "parquet":
            t = time.monotonic()
            self.store.download_to(s.input_container, name, local, etag=etag_of(props))
            ir.durations_s["download"] = round(time.monotonic() - t, 3)
            source = local
        elif props.size <= s.small_input_bytes:  # in one request, with no download thread
            t = time.monotonic()
            source = io.BytesIO(self.store.read_bytes(s.input_container, name, etag=etag_of(props)))
            ir.durations_s["download"] = round(time.monotonic() - t, 3)
        else:
            source = self.store.open_read(s.input_container, name, etag=etag_of(props))
            streams.append(source)
        table = open_input(source, fmt, name, s.batch_rows, s.max_input_bytes, CsvOptions.of(s, name, keep_na))
        streams.append(table)
        first = next(table.batches, None)
        table.batches = itertools.chain([first] if first is not None else [], table.batches)
        return table

    def workers(self, card: dict) -> Workers | None:
        """R worker processes for this model, if more than one R may run (scorer.r.pool).
        None for ranger: its predict() already runs a thread per core."""
        s = self.settings
        size = usable_cores() if s.r_workers == "auto" else int(s.r_workers)
        if size <= 1 or "ranger" in (card.get("r_class") or []):
            return None
        return Workers(size=size, after_seconds=s.r_workers_after, batch_rows=s.batch_rows,
                       start=lambda n, waiting, spec: self._pool(card, n).feed(waiting, spec))

    def _pool(self, card: dict, size: int) -> Pool:
        """The R workers of ``card``'s model: those of an earlier input or part of it when
        they are still up, else new ones (one model's at a time: another's are ended)."""
        key = (card["name"], int(card["version"]), size)
        if self._workers_pool is not None:
            if self._workers_pool[0] == key and self._workers_pool[1].usable():
                return self._workers_pool[1]
            self._workers_pool[1].close()
        pool = Pool.start(self.registry.model_file(card), card, size)
        self._workers_pool = (key, pool)
        return pool

    def drift_tally(self, card: dict, ir: InputReport, read: Callable[[], dict | None] | None = None
                     ) -> Tally | None:
        """A tally against the model's reference profile (``read`` it, or the registry's);
        None, with the reason in the report, when it has none (drift is a warning: a bad
        profile never fails an input)."""
        what = f"model {card['name']!r} version {card['version']}"
        if not card.get("profile"):
            ir.drift = not_computed(f"{what} was published without a drift profile (no --reference, and the model "
                                    "keeps no training data)")
            return None
        read = read or (lambda: self.registry.profile(card))
        try:
            profile = read()
        except ScorerError as exc:
            ir.drift = not_computed(f"the drift profile could not be read: {exc}")
            log.warning(ir.drift["reason"], extra={"event": "drift_profile_failed", "blob": ir.blob})
            return None
        return Tally(profile, self.settings.drift_psi,
                     where=f"{self.settings.models_container}/{card['name']}/v{card['version']}/profile.json")

    def drift(self, ir: InputReport, tally: Tally) -> None:
        ir.drift = tally.result()
        flagged = ir.drift["flagged"]
        if flagged:
            every = {**ir.drift["features"], **ir.drift["predictions"]}
            listed = ", ".join(f"{n} (PSI {every[n]['psi']:.2f})" for n in flagged)
            ir.warnings.append(f"drift: {listed}, at or above SCORER_DRIFT_PSI {tally.threshold:g}")
            log.warning(f"drift: {listed}", extra={"event": "drift_flagged", "blob": ir.blob, "flagged": flagged})

    def spec(self, card: dict, name: str) -> PredictSpec:
        """How ``card``'s model predicts input ``name``: for a random predict(), with R's
        seed from the input's name (the same output when it is scored again)."""
        spec = PredictSpec.from_card(card)
        return dataclasses.replace(spec, seed=seed_for(name)) if spec.random else spec

    def na_kept(self, card: dict) -> frozenset[str]:
        """The card's factor columns that have a level spelled like a missing value."""
        return na_kept(PredictSpec.from_card(card).schema, self.settings.na_values)

    def r_warnings(self, ir: InputReport, counts: Counts) -> None:
        """R's warnings, each once, with how many predict() calls gave it."""
        for message, n in counts.warnings.most_common():
            ir.warnings.append(f"R warning ({n} of the predict() calls): {message}" if n > 1 else f"R warning: {message}")
            log.warning(f"R warning: {message}", extra={"event": "r_warning", "blob": ir.blob, "calls": n})

    def check_counts(self, name: str, counts: Any, rejected: RejectedRows) -> None:
        if counts.rows_read == 0 or counts.rows_written is not None:  # no rows; an R function's rows are its own
            return
        frac = counts.rows_rejected / counts.rows_read
        if counts.rows_scored == 0 or frac > self.settings.max_rejected_fraction:
            raise TooManyRejected(
                f"{name}: {counts.rows_rejected} of {counts.rows_read} rows ({frac:.1%}) were rejected, more than "
                f"SCORER_MAX_REJECTED_FRACTION allows ({self.settings.max_rejected_fraction:.1%}).",
                hint="See rejected_rows for the first rows and why; fix them and drop the file again.",
                rejected_rows=rejected.first,
            )

    def first_row(self) -> None:
        if not self._first_row_logged:
            self._first_row_logged = True
            log.info("first row scored", extra={"event": "first_row_scored",
                                                "since_start_s": round(time.monotonic() - self.started, 3)})


@dataclass
class Ahead:
    """An input's reads sent before its claim's record is written (Job._read_ahead)."""

    committed: Future  # the output's properties, or None
    rejected_before: Future  # the rejected rows' properties, or None
    card: Future | None  # the model's card and its shadow's (or None); None for a blob outside a model's folder


class Work:
    """One claimed input's work in progress: what must be abandoned or closed at its end,
    whatever happened (scorer.batch.job.Job._process)."""

    def __init__(self, props: Any, claim: Claim, ir: InputReport) -> None:
        self.props, self.claim, self.ir = props, claim, ir
        self.t0 = time.monotonic()
        self.sinks: list[Any] = []
        self.streams: list[Any] = []  # the input's blob stream, then the table read from it
        self.counts = Counts()
        self.out_sink: Any = None
        self.rej_sink: Any = None
        self.profile: Future | None = None
        self.shadow_card: dict | None = None  # the model's shadow version's, when it has one

    def close(self) -> None:
        for sink in self.sinks:  # drops what was staged and not committed; after a commit, nothing
            sink.abandon()
        for stream in reversed(self.streams):  # the table before the blob stream it reads: see InputTable.close
            stream.close()
            if isinstance(stream, BlobReader) and stream.seconds is not None:
                self.ir.durations_s["download"] = round(stream.seconds, 3)
        self.ir.durations_s["total"] = round(time.monotonic() - self.t0, 3)


def no_rows(table: InputTable, card: dict) -> pa.RecordBatch:
    """An output of no rows for an input of none: its columns, then the prediction
    columns the model gave at publish (their types unknown without a prediction)."""
    empty = table.no_rows()
    names = prediction_names([(n, None) for n in card.get("prediction_columns") or [""]], empty.schema.names)
    return pa.RecordBatch.from_arrays(list(empty.columns) + [pa.array([], pa.null()) for _ in names],
                                      names=empty.schema.names + names)
