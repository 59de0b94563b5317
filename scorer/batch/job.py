"""One run of the scoring job, from claim to report.

    run()
      list pending inputs under input/ (all, one model's, or one blob)
      for each input:
        claim it (blob lease, renewed in the background)      batch.claims
        resolve and load its model (checksum-verified)        models.registry
        download, validate, score batch by batch              data.formats, data.frames, batch.stream
        commit the output (and rejected rows) atomically      storage.StagedBlob
        archive the input; or quarantine it with a note       _archive / _quarantine
      write the run report                                     monitoring.report
      return the exit status

Nothing is lost: an input leaves input/ only after its copy in archive/ or
quarantine/ has been written, and only by the job holding its lease. An output
carries the ETag of the input it came from, so a run that died after committing
an output but before archiving its input archives it next time without scoring
it again.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import itertools
import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa
from azure.core.exceptions import HttpResponseError, ResourceModifiedError, ResourceNotFoundError

from scorer import errors
from scorer.batch.claims import ATTEMPTS_TAG, Attempts, Claim, LeaseLost, is_lease_error, poison
from scorer.batch.parts import Parts
from scorer.monitoring.drift import Tally, not_computed
from scorer.data.frames import na_kept
from scorer.errors import (BlobError, ConfigError, InputError, InputFormatError, Interrupted, ModelError, OutOfDisk, OutOfMemory,
                           ResourceError, ScorerError, StorageError, TooManyRejected)
from scorer.data.formats import CsvOptions, InputTable, OutputWriter, content_type, format_of, open_input
from scorer.log import now, redact_obj
from scorer.models.registry import Registry
from scorer.monitoring.page import render as render_page
from scorer.monitoring.report import InputReport, RunReport, estimate_cost
from scorer.r.pool import Pool, usable_cores
from scorer.batch.stream import Counts, Workers, run_function, score_stream, whole_file
from scorer.data.rejected import REJECTED_SUFFIX, RejectedRows
from scorer.r.predict import PredictSpec, seed_for
from scorer.settings import Settings
from scorer.batch.stopping import check as check_stop
from scorer.storage import (FENCE_ERRORS, MAX_BLOB_NAME, TRANSPORT_ERRORS, BlobReader, Store, as_seen, etag_of,
                            is_outage, name_length)

log = logging.getLogger("scorer.job")

ERROR_SUFFIX = ".error.json"
SOURCE_ETAG = "scorer_source_etag"
ROWS_REJECTED = "scorer_rows_rejected"
INPUTS_SUFFIX = ".inputs.jsonl"


def new_run_id() -> str:
    """The run's UTC start to the millisecond, then a random part: run ids (and the
    names of their reports) sort in the order runs started, also within a second."""
    t = datetime.now(timezone.utc)
    return t.strftime("%Y%m%dT%H%M%S") + f"{t.microsecond // 1000:03d}Z-" + uuid.uuid4().hex[:6]


class Job:
    """A run over the pending inputs. ``run()`` returns the finished report."""

    def __init__(self, settings: Settings, store: Store, registry: Registry | None = None,
                 run_id: str | None = None, started_at: float | None = None):
        self.settings = settings
        self.store = store
        self.registry = registry or Registry(store)
        self.report = RunReport(run_id=run_id or new_run_id(),
                                scope={"model": settings.model, "blob": settings.blob},
                                settings=settings.redacted())
        self._t0 = started_at if started_at is not None else time.monotonic()
        self._first_row_logged = False
        self._internal_error = False
        self._storage_error = False
        self._resource_error = False
        self._blob_error = False  # an input Blob Storage refused, that could not even be quarantined
        self._workers_pool: tuple[tuple, Pool] | None = None  # R workers kept for the next input (_pool)
        self._inputs_file: Any = None  # every input's record, past report.LISTED of them (_spill)
        # put before the extension of an archived or quarantined copy whose name is taken
        self._stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        self.parts = Parts(self)  # inputs split across the run's container groups

    # -- the run --------------------------------------------------------------------

    def run(self) -> RunReport:
        log.info("run started", extra={"event": "run_started", "scope": self.report.scope})
        try:
            self.store.ensure_containers()
            for props in self._pending():
                check_stop()
                ir = InputReport(blob=props.name)
                self.report.inputs.append(ir)
                try:
                    self._take(props, ir)
                finally:
                    self.report.settle(ir, self._spill)
                if self._storage_error:
                    break
        except Interrupted:
            self.report.error = {"kind": "Interrupted", "message": "the job was asked to stop; "
                                 "unfinished inputs stay in input/ for the next run"}
            log.warning("run interrupted", extra={"event": "run_interrupted"})
            self.report.exit_code = errors.EXIT_INTERRUPTED
        except ConfigError as exc:
            self.report.error = exc.as_dict()
            log.error(str(exc), extra={"event": "config_error", "error": self.report.error})
            self.report.exit_code = errors.EXIT_CONFIG
        except TRANSPORT_ERRORS + (StorageError, HttpResponseError) as exc:
            self.storage_failed(exc, None)
        self.report.ended = now()
        if self.registry.r_started:  # record which R scored
            self.report.r_version = self.registry.r.r_version
        if self.report.exit_code is None:
            self.report.exit_code = self._exit_code()
        if self._workers_pool is not None:
            self._workers_pool[1].close()
        self.registry.close()
        self.report.cost = estimate_cost(self.settings, time.monotonic() - self._t0)
        written = self._write_report()
        # The last line of the log; when the report could not be stored (storage is
        # down), it carries the whole report, so the outcome is never lost.
        log.info("run finished", extra={"event": "run_finished", "exit_code": self.report.exit_code,
                                        "counts": self.report.counts(),
                                        **({"report": written} if written else {"report_json": self.report.to_dict()})})
        return self.report

    def _take(self, props: Any, ir: InputReport) -> None:
        """One pending input: skipped, its parts joined (when split), or claimed and processed."""
        s = self.settings
        if props.copy is not None and props.copy.status == "pending":
            # a copy into input/ still under way: its content is not all there yet
            self._skip(ir, "a copy into this blob is still in progress; the next run scores it")
            return
        plan = self.parts.plan_of(props) if props.size > s.split_bytes else None
        if plan is not None and plan.state != "whole":  # in parts: join them, whoever planned it
            self.parts.join(plan, props, ir)
            return
        try:
            claim = Claim.take(self.store.blob(s.input_container, props.name), s.lease_seconds)
        except HttpResponseError as exc:
            if is_outage(exc):
                raise
            self._skip(ir, f"Blob Storage refused to lease it: {_first_line(exc)}")
            return
        if claim is None:
            # another job of this run may be cutting it into parts: they are ours too
            plan = self.parts.await_plan(props) if self.parts.splittable(props, format_of_or_none(props.name)) else None
            if plan is not None:
                self.parts.join(plan, props, ir)
            else:
                self._skip(ir, "claimed by another job, or already gone")
            return
        try:
            self._process(props, claim, ir)
        finally:
            claim.release()

    def _spill(self, records: list[dict]) -> None:
        """Write input records beside the run report (a run of more than report.LISTED
        inputs): the report lists the first of them, this file every one."""
        try:
            if self._inputs_file is None:
                self._inputs_file = self.store.staged(self.settings.reports_container,
                                                      f"{self.report.run_id}{INPUTS_SUFFIX}")
            self._inputs_file.write(b"".join(json.dumps(r, default=str).encode() + b"\n" for r in records))
        except Exception as exc:  # the record beside the report is a convenience: never the run's failure
            log.error("could not write the inputs' records", extra={"event": "inputs_file_failed",
                                                                   "error": _first_line(exc)})

    def _pending(self) -> Iterator[Any]:
        """The pending inputs, in name order, read as they are taken: the listing is read a
        page (5,000 names) at a time, never held whole (a listed input is some 5 KB: 500 MB
        for 100,000 of them). An input whose scoring ended with no record (the job killed
        in the act: a crash, the out-of-memory killer) may do it again: it goes last, so
        that it never holds up the inputs after it for SCORER_MAX_ATTEMPTS runs (issue 26);
        only its name is kept meanwhile."""
        s = self.settings
        if s.blob:
            props = self.store.properties(s.input_container, s.blob)
            if props is None:
                model = s.blob.split("/", 1)[0]
                near = [b.name for b in self.store.list_names(s.input_container, prefix=f"{model}/")][:5]
                raise ConfigError(f"SCORER_BLOB (--blob) names {s.input_container}/{s.blob}, which is not pending.",
                                  hint="Give the name under input/, e.g. model/day.csv"
                                  + (f"; pending under {model}/: {', '.join(near)}." if near else
                                     "; nothing is pending under that model's folder (it may have been scored)."),
                                  setting="SCORER_BLOB")
            yield props
            return
        later = []
        for props in self.store.iter_names(s.input_container, prefix=f"{s.model}/" if s.model else None, tags=True):
            if Attempts.parse((props.tags or {}).get(ATTEMPTS_TAG, "")).unrecorded:
                later.append(props.name)
            else:
                yield props
        for name in later:
            props = self.store.properties(s.input_container, name)
            if props is not None:  # else scored meanwhile by another job
                yield props

    def _exit_code(self) -> int:
        if self._storage_error:
            return errors.EXIT_STORAGE
        if self._internal_error:
            return errors.EXIT_INTERNAL
        if self._resource_error:
            return errors.EXIT_RESOURCES
        if self._blob_error or any(i.status == "quarantined" for i in self.report.inputs):
            return errors.EXIT_INPUTS_FAILED
        return errors.EXIT_OK

    def _skip(self, ir: InputReport, why: str) -> None:
        ir.status = "skipped"
        ir.warnings.append(why)
        log.info(f"input skipped: {why}", extra={"event": "input_skipped", "blob": ir.blob})

    # -- one input ------------------------------------------------------------------

    def _process(self, props: Any, claim: Claim, ir: InputReport) -> None:
        """One claimed input, from its attempt's record to its archive, or its quarantine:
        every outcome, a failure too, is recorded in ``ir``."""
        work = _Work(props, claim, ir)
        ahead = self._read_ahead(props.name)
        try:
            admitted = self._admit(work, ahead)
            if admitted is None:  # an earlier run committed its output: archived, not scored again
                return
            card, fmt = admitted
            if self._split_instead(work, card, fmt):
                return
            tally = self._score_whole(work, card, fmt, ahead)
            ir.status = "scored"
            if tally is not None:
                self.drift(ir, tally)
            log.info("input scored", extra={"event": "input_scored", "blob": props.name, "rows_scored": ir.rows_scored,
                                            "rows_rejected": ir.rows_rejected, "rows_written": ir.rows_written,
                                            "model": ir.model, "model_version": ir.model_version})
            self.archive(props, claim, ir)
            if props.size > self.settings.split_bytes:  # a plan given up for scoring whole: its parts go too
                self.parts.drop(props.name)
        except Interrupted:
            ir.status = "left_pending"
            claim.end_attempt("stopped")
            raise
        except Exception as exc:
            self._failed(exc, props, claim, ir)
        finally:
            work.close()

    def _read_ahead(self, name: str) -> "_Ahead":
        """Reads that wait on nothing go out beside the attempt's record (two round trips):
        whether an earlier run committed the output, and the model's card (two more)."""
        s = self.settings
        model_name, _, rel = name.partition("/")
        return _Ahead(
            committed=self.store.submit(self.store.properties, s.output_container, name),
            rejected_before=(self.store.submit(self.store.properties, s.output_container, name + REJECTED_SUFFIX)
                             if name_length(name) + _NAME_ROOM <= MAX_BLOB_NAME else _done(None)),  # else refused below
            card=self.store.submit(self.registry.card, model_name) if rel else None)

    def _admit(self, work: "_Work", ahead: "_Ahead") -> tuple[dict, str] | None:
        """The attempt recorded and the input checked before anything is read: its card
        and format, or None when an earlier run committed its output (then archived)."""
        s = self.settings
        props, claim, ir, name = work.props, work.claim, work.ir, work.props.name
        try:
            record = claim.start_attempt(s.max_attempts)
        except HttpResponseError as exc:
            if is_outage(exc):
                raise
            raise _tag_refused(name, exc) from None
        attempt = ir.attempt = record.number
        _check_name_room(name)
        # Before the poison check: a run killed between commit and archive, even
        # SCORER_MAX_ATTEMPTS times, has still scored the input.
        if self._already_committed(props, claim, ir, ahead.committed.result(), ahead.rejected_before.result()):
            return None
        if attempt > s.max_attempts:
            raise poison(name, record)
        log.info("input claimed", extra={"event": "input_claimed", "blob": name, "attempt": attempt})
        if ahead.card is None:
            raise InputFormatError(
                f"{name}: inputs must be under a model's folder, input/<model-name>/{name}.",
                hint="Move the file into the folder named after the model that should score it.")
        _check_not_derived(name)
        ir.format = fmt = format_of(name)
        card = ahead.card.result()
        ir.model, ir.model_version, ir.model_sha256 = card["name"], card["version"], card["sha256"]
        if props.size > s.max_input_bytes:  # before loading the model: no R for a file refused anyway
            raise InputFormatError(
                f"{name}: {props.size} bytes is more than SCORER_MAX_INPUT_BYTES ({s.max_input_bytes}).",
                hint="Split the file, or raise SCORER_MAX_INPUT_BYTES.")
        return card, fmt

    def _split_instead(self, work: "_Work", card: dict, fmt: str) -> bool:
        """Whether the input is scored in parts (scorer.batch.parts), by this run's jobs."""
        if not (self.parts.splittable(work.props, fmt) and card.get("kind") != "function"
                and card.get("rowwise", True)):
            return False
        plan = self.parts.make_plan(work.props, fmt, card, work.ir)
        if plan is None:
            return False
        work.claim.release()  # parts are claimed one by one; the input stays in input/ until done
        self.parts.join(plan, work.props, work.ir)
        return True

    def _score_whole(self, work: "_Work", card: dict, fmt: str, ahead: "_Ahead") -> Tally | None:
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

    def _load_and_fetch(self, work: "_Work", card: dict, fmt: str, tmp: Path) -> tuple[Any, InputTable]:
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

    def _writers(self, work: "_Work", fmt: str, table: InputTable) -> tuple[OutputWriter, RejectedRows]:
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

    def _score_into(self, work: "_Work", card: dict, model: Any, table: InputTable, out: OutputWriter,
                    rejected: RejectedRows, tally: Tally | None) -> None:
        """The input's rows through predict() (or the whole file through an R function's
        score()) into the writers; how far it got goes in the report, also on failure."""
        s, name, ir, counts = self.settings, work.props.name, work.ir, work.counts
        is_function = card.get("kind") == "function"
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
                             drift=tally, workers=self.workers(card) if spec.rowwise else None)
        finally:  # how far it got, also when it failed
            ir.rows_read, ir.rows_rejected = counts.rows_read, counts.rows_rejected
            if is_function:
                ir.rows_scored, ir.rows_written = None, counts.rows_written
            else:
                ir.rows_scored = counts.rows_scored
            if len(counts.batches_by_r) > 1:
                ir.r_sessions = dict(counts.batches_by_r)
            self.r_warnings(ir, counts)

    def _commit_output(self, work: "_Work", card: dict, fmt: str, table: InputTable, out: OutputWriter,
                       rejected: RejectedRows, ahead: "_Ahead") -> None:
        """Close the writers and commit what they wrote, fenced on what was seen at the claim."""
        s, name, ir, counts = self.settings, work.props.name, work.ir, work.counts
        self.check_counts(name, counts, rejected)
        if counts.rows_read == 0 and card.get("kind") != "function":  # a header, no rows: so is the output, as in R
            out.write(_no_rows(table, card))
            ir.warnings.append("the file has a header but no data rows: the output has the header only")
        t = time.monotonic()
        out.close()
        if rejected.writer is not None:
            rejected.writer.close()
        check_stop()
        if work.claim.lost:
            raise LeaseLost(f"{name}: the claim (lease) on this input was lost while scoring it")
        meta = self.output_metadata(work.props, card, counts.rows_rejected)
        out_sink = work.out_sink
        self.commit(name, lambda seen: out_sink.commit(metadata=meta, content_type=content_type(fmt),
                                                       conditions=seen), ahead.committed.result(),
                    work.rej_sink if rejected.writer is not None else None, meta, ahead.rejected_before.result())
        ir.output = f"{s.output_container}/{name}"
        if rejected.writer is not None:
            ir.rejected_rows = f"{s.output_container}/{name}{REJECTED_SUFFIX}"
        ir.durations_s["commit"] = round(time.monotonic() - t, 3)

    def _failed(self, exc: Exception, props: Any, claim: Claim, ir: InputReport) -> None:
        """What an input's failure means: quarantined (the input or its model is at fault),
        left for the next run (the claim lost, storage down, out of resources, a bug), or
        the run stopped (storage down)."""
        name = props.name
        if isinstance(exc, (InputError, ModelError)):
            self.quarantine(props, claim, ir, exc)
        elif isinstance(exc, LeaseLost):
            self.lease_lost(ir, exc)
        elif isinstance(exc, TRANSPORT_ERRORS + (StorageError, HttpResponseError)):
            if is_outage(exc):
                self.storage_failed(exc, ir)
            elif is_lease_error(exc):  # our claim, not the input, failed
                self.lease_lost(ir, exc)
            else:  # Blob Storage refused this one blob: quarantine it and go on with the others
                self.quarantine(props, claim, ir, BlobError(
                    f"{name}: Blob Storage refused a request about this input or one of its outputs: "
                    f"{_first_line(exc)}",
                    hint="This concerns this blob only; the other inputs went on. Fix what the message "
                    "names (often the blob's name or tags) and drop the file again.",
                    status=getattr(exc, "status_code", None), error_code=getattr(exc, "error_code", None)))
        elif isinstance(exc, (ResourceError, OSError, MemoryError)):
            resource = exc if isinstance(exc, ResourceError) else _as_resource_error(exc, name)
            if resource is None:
                self._internal_failed(exc, claim, ir)
            else:
                self._resource_error = True
                ir.status = "left_pending"
                ir.error = resource.as_dict()
                claim.end_attempt(resource.code)
                log.error(str(resource), exc_info=exc, extra={"event": "input_resource_error", "blob": name,
                                                              "error": ir.error})
        else:  # a bug or an R crash: keep the input, count the attempt, go on
            self._internal_failed(exc, claim, ir)

    def commit(self, name: str, commit_output: Callable[[dict], Any], output_before: Any,
                rejected: Any | None, meta: dict, rejected_before: Any) -> None:
        """Commit an input's output, then its rejected rows (``rejected``: their staged
        blob, or None when no row was rejected: a file left by an earlier version of the
        input is deleted). The output comes first: a kill between them leaves an output
        whose metadata counts rejected rows that are not there, which the next run scores
        again (``_already_committed``); never rejected rows without their output.

        Each write is fenced on what was seen when the input was claimed (``*_before``,
        properties or None): a job paused or cut off past its lease cannot commit over
        another run's result. Raises LeaseLost when a fence holds."""
        s = self.settings
        where = f"{s.output_container}/{name}"
        try:
            commit_output(as_seen(output_before))
            if rejected is not None:
                where += REJECTED_SUFFIX
                rejected.commit(metadata=meta, content_type="text/csv", conditions=as_seen(rejected_before))
            elif rejected_before is not None:  # from an earlier version of this input: it would mislead
                where += REJECTED_SUFFIX
                self.store.delete(s.output_container, name + REJECTED_SUFFIX, **as_seen(rejected_before))
        except FENCE_ERRORS:
            raise LeaseLost(f"{name}: another run wrote {where} while this job was paused or cut off past its "
                            "lease; that run's result stands") from None

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

    # -- one input across container groups (scorer.batch.split) ------------------------------

    def lease_lost(self, ir: InputReport, exc: BaseException) -> None:
        ir.status = "left_pending"
        ir.error = {"kind": "LeaseLost", "message": f"{ir.blob}: the claim (lease) on this input was lost "
                    f"({_first_line(exc)}).",
                    "what_to_do": "Nothing: the input stays in input/; the next run scores it, or archives it "
                                  "without scoring again when its output was already committed."}
        log.warning(ir.error["message"], extra={"event": "lease_lost", "blob": ir.blob})

    def output_metadata(self, props: Any, card: dict, rows_rejected: int | None) -> dict:
        """An output's metadata: the input's ETag (a rerun after a crash between commit and
        archive finds it scored), the run, the model version that scored it, and how many
        rows were rejected (a rerun finds whether its rejected rows were committed too)."""
        return {SOURCE_ETAG: etag_of(props), "scorer_run_id": self.report.run_id,
                "scorer_model": card["name"], "scorer_model_version": str(card["version"]),
                ROWS_REJECTED: str(rows_rejected or 0)}

    def r_warnings(self, ir: InputReport, counts: Counts) -> None:
        """R's warnings, each once, with how many predict() calls gave it."""
        for message, n in counts.warnings.most_common():
            ir.warnings.append(f"R warning ({n} of the predict() calls): {message}" if n > 1 else f"R warning: {message}")
            log.warning(f"R warning: {message}", extra={"event": "r_warning", "blob": ir.blob, "calls": n})

    def _internal_failed(self, exc: BaseException, claim: Claim, ir: InputReport) -> None:
        self._internal_error = True
        ir.status = "left_pending"
        ir.error = {"kind": type(exc).__name__, "message": f"internal error: {exc}",
                    "what_to_do": "The input stays in input/ and is retried; after SCORER_MAX_ATTEMPTS it is "
                                  "quarantined. Please report this with the run report."}
        claim.end_attempt("internal")
        log.error("internal error", exc_info=True, extra={"event": "input_internal_error", "blob": ir.blob})

    def _already_committed(self, props: Any, claim: Claim, ir: InputReport, done: Any, rejected: Any) -> bool:
        """Archive the input, without rescoring, if an earlier run committed the
        output of this exact input (same ETag; ``done``: the output's properties, or
        None) and its rejected rows (``rejected``: their file's properties, or None),
        and died before archiving it. A run that died between the output and its
        rejected rows left them out: the input is scored again."""
        s = self.settings
        meta = (done.metadata or {}) if done is not None else {}
        if meta.get(SOURCE_ETAG) != etag_of(props):
            return False
        rejected_here = rejected is not None and (rejected.metadata or {}).get(SOURCE_ETAG) == etag_of(props)
        if meta.get(ROWS_REJECTED, "0") != "0" and not rejected_here:
            ir.warnings.append("an earlier run committed the output and died before its rejected rows: scored again")
            return False
        if rejected is not None and not rejected_here:  # an earlier version's, whose deletion that run did not reach
            self.store.delete(s.output_container, props.name + REJECTED_SUFFIX, **as_seen(rejected))
        ir.status = "scored"
        ir.output = f"{s.output_container}/{props.name}"
        ir.model = meta.get("scorer_model")
        version = meta.get("scorer_model_version", "")
        ir.model_version = int(version) if version.isdigit() else None
        ir.warnings.append("output was already committed by an earlier run; input archived without rescoring")
        self.archive(props, claim, ir)
        return True

    def spec(self, card: dict, name: str) -> PredictSpec:
        """How ``card``'s model predicts input ``name``: for a random predict(), with R's
        seed from the input's name (the same output when it is scored again)."""
        spec = PredictSpec.from_card(card)
        return dataclasses.replace(spec, seed=seed_for(name)) if spec.random else spec

    def na_kept(self, card: dict) -> frozenset[str]:
        """The card's factor columns that have a level spelled like a missing value."""
        return na_kept(PredictSpec.from_card(card).schema, self.settings.na_values)

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
        else:
            source = self.store.open_read(s.input_container, name, etag=etag_of(props))
            streams.append(source)
        table = open_input(source, fmt, name, s.batch_rows, s.max_input_bytes, CsvOptions.of(s, name, keep_na))
        streams.append(table)
        first = next(table.batches, None)
        table.batches = itertools.chain([first] if first is not None else [], table.batches)
        return table

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
                                                "since_start_s": round(time.monotonic() - self._t0, 3)})

    # -- where an input goes afterwards -------------------------------------------

    def _destination(self, container: str, name: str, etag: str, room: int = 0) -> str:
        """``name`` in ``container``, unless an archived copy of a different input
        (another ETag) already has that name, or (with ``room``, a quarantine) the
        note's name is another input's copy (an input once named ``b.csv.error.json``):
        then the name gets the run's time stamp before its extension, so that nothing
        is overwritten.

        ``room`` is what will be appended to the name (a note's suffix). A name
        that would then pass Blob Storage's limit is replaced by a short one under
        ``<model>/_long-names/``; the note beside it gives the original name.
        """
        path = PurePosixPath(name)
        stem, dot, exts = path.name.partition(".")
        note = (self.store.submit(self.store.properties, container, name + ERROR_SUFFIX)
                if room and name_length(name) + room <= MAX_BLOB_NAME else None)
        existing = self.store.properties(container, name)
        taken = existing is not None and (existing.metadata or {}).get(SOURCE_ETAG) != etag
        if note is not None and not taken:  # the note's name is another input's copy (one named b.csv.error.json)
            note_props = note.result()
            taken = note_props is not None and SOURCE_ETAG in (note_props.metadata or {})
        chosen = str(path.with_name(f"{stem}.{self._stamp}{dot}{exts}")) if taken else name
        if name_length(chosen) + room <= MAX_BLOB_NAME:
            return chosen
        model = name.split("/", 1)[0]
        short = f"{model}/_long-names/{hashlib.sha256(name.encode()).hexdigest()[:32]}"
        return f"{short}.{self._stamp}{dot}{exts}" if chosen != name else f"{short}{dot}{exts}"

    def archive(self, props: Any, claim: Claim, ir: InputReport) -> None:
        s = self.settings
        dst = self._destination(s.archive_container, props.name, etag_of(props))
        self._copy_input(props, s.archive_container, dst,
                         metadata={SOURCE_ETAG: etag_of(props), "scorer_run_id": self.report.run_id})
        claim.delete_input(etag_of(props))
        ir.archived_to = f"{s.archive_container}/{dst}"
        log.info("input archived", extra={"event": "input_archived", "blob": props.name, "to": ir.archived_to})

    def _copy_input(self, props: Any, container: str, dst: str, metadata: dict) -> None:
        """Copy this version of the input (its ETag) to ``container``/``dst``. Raises
        LeaseLost when it is gone or replaced: another job finished it while this one
        was paused or cut off past its lease (issue 26), which is not the input's fault."""
        try:
            self.store.copy(self.settings.input_container, props.name, container, dst, metadata=metadata,
                            source_etag=etag_of(props))
        except (ResourceNotFoundError, ResourceModifiedError):
            raise LeaseLost(f"{props.name}: the input is gone or was replaced while this job was paused or cut off "
                            "past its lease") from None

    def quarantine(self, props: Any, claim: Claim, ir: InputReport, exc: ScorerError) -> None:
        s = self.settings
        try:
            # a job past its lease must not write a note for what another run has done: the
            # error may even be that run's doing (the input deleted under the download)
            claim.confirm()
        except LeaseLost as e:
            self.lease_lost(ir, e)
            return
        except TRANSPORT_ERRORS + (StorageError, HttpResponseError) as e:
            if is_outage(e):
                self.storage_failed(e, ir)
                return
            # any other refusal of the renewal: the quarantine's own writes below will say
        ir.status = "quarantined"
        ir.error = exc.as_dict()
        log.warning(str(exc), extra={"event": "input_quarantined", "blob": props.name, "error": ir.error})
        try:
            dst = self._destination(s.quarantine_container, props.name, etag_of(props), room=len(ERROR_SUFFIX))
            note = {"input": f"{s.input_container}/{props.name}", "quarantined_at": now(),
                    "run_id": self.report.run_id, "model": ir.model, "model_version": ir.model_version,
                    "rows_read": ir.rows_read, "rows_rejected": ir.rows_rejected, **ir.error}
            # the note first: a quarantined input is never seen without its reason
            self.store.put_json(s.quarantine_container, dst + ERROR_SUFFIX, redact_obj(note))
            self._copy_input(props, s.quarantine_container, dst,
                             metadata={SOURCE_ETAG: etag_of(props), "scorer_run_id": self.report.run_id,
                                       "scorer_error": exc.kind})
            claim.delete_input(etag_of(props))
            ir.quarantined_to = f"{s.quarantine_container}/{dst}"
        except LeaseLost as e:  # set aside, but not taken out of input/: the next run settles it
            ir.status = "left_pending"
            ir.error = dict(ir.error, quarantine_failed=_first_line(e))
            log.warning("claim lost while quarantining", extra={"event": "lease_lost", "blob": props.name})
        except TRANSPORT_ERRORS + (StorageError, HttpResponseError) as e:
            if is_outage(e):
                self.storage_failed(e, ir)
            else:  # this blob cannot even be set aside: say so, leave it, and go on
                self._blob_error = True
                ir.error = dict(ir.error, quarantine_failed=_first_line(e))
                log.error("could not quarantine the input", extra={"event": "quarantine_failed", "blob": props.name,
                                                                   "error": _first_line(e)})
            ir.status = "left_pending"

    def storage_failed(self, exc: Exception, ir: InputReport | None) -> None:
        self._storage_error = True
        err = exc.as_dict() if isinstance(exc, ScorerError) else {
            "kind": "StorageError", "message": f"Blob Storage failed: {_first_line(exc)}",
            "what_to_do": StorageError.hint}
        if ir is not None:
            ir.status = "left_pending"
            ir.error = err
        else:
            self.report.error = err
        log.error(err["message"], extra={"event": "storage_error", "blob": ir.blob if ir else None})

    def _write_report(self) -> str | None:
        """Store the run report; return where, or None when storage refused it."""
        s = self.settings
        name = f"{self.report.run_id}.json"
        if self._inputs_file is not None:
            try:
                self._inputs_file.commit(content_type="application/x-ndjson")
                self.report.inputs_file = f"{s.reports_container}/{self.report.run_id}{INPUTS_SUFFIX}"
            except Exception as exc:
                log.error("could not write the inputs' records", extra={"event": "inputs_file_failed",
                                                                       "error": _first_line(exc)})
        doc = self.report.to_dict()
        try:
            self.store.put_json(s.reports_container, name, doc)
        except Exception as exc:  # storage is down: the report goes to the log's last line instead
            log.error("could not write the run report; it is in the run_finished line",
                      extra={"event": "report_failed", "error": _first_line(exc)})
            self._storage_error = True
            if self.report.exit_code == errors.EXIT_OK:
                self.report.exit_code = errors.EXIT_STORAGE
            return None
        page = f"{self.report.run_id}.html"
        try:  # the page people read; the JSON above is the record
            self.store.put_bytes(s.reports_container, page, render_page(doc).encode(),
                                 content_type="text/html; charset=utf-8")
        except Exception as exc:
            log.error("could not write the run report's page", extra={"event": "report_page_failed",
                                                                      "error": _first_line(exc)})
            page = None
        log.info("report written", extra={"event": "report_written", "report": f"{s.reports_container}/{name}",
                                          "page": f"{s.reports_container}/{page}" if page else None})
        return f"{s.reports_container}/{name}"


@dataclass
class _Ahead:
    """An input's reads sent before its claim's record is written (Job._read_ahead)."""

    committed: Future  # the output's properties, or None
    rejected_before: Future  # the rejected rows' properties, or None
    card: Future | None  # the model's card; None for a blob outside a model's folder


class _Work:
    """One claimed input's work in progress: what must be abandoned or closed at its end,
    whatever happened (Job._process)."""

    def __init__(self, props: Any, claim: Claim, ir: InputReport) -> None:
        self.props, self.claim, self.ir = props, claim, ir
        self.t0 = time.monotonic()
        self.sinks: list[Any] = []
        self.streams: list[Any] = []  # the input's blob stream, then the table read from it
        self.counts = Counts()
        self.out_sink: Any = None
        self.rej_sink: Any = None
        self.profile: Future | None = None

    def close(self) -> None:
        for sink in self.sinks:  # drops what was staged and not committed; after a commit, nothing
            sink.abandon()
        for stream in reversed(self.streams):  # the table before the blob stream it reads: see InputTable.close
            stream.close()
            if isinstance(stream, BlobReader) and stream.seconds is not None:
                self.ir.durations_s["download"] = round(stream.seconds, 3)
        self.ir.durations_s["total"] = round(time.monotonic() - self.t0, 3)


def format_of_or_none(name: str) -> str | None:
    try:
        return format_of(name)
    except InputFormatError:
        return None


def _no_rows(table: Any, card: dict) -> pa.RecordBatch:
    """An output of no rows for an input of none: its columns, then the prediction
    columns the model gave at publish (their types unknown without a prediction)."""
    from scorer.data.frames import prediction_names

    schema = table.schema or pa.schema([(n, pa.string()) for n in table.names])
    results = [(n, None) for n in card.get("prediction_columns") or [""]]
    names = prediction_names(results, schema.names)
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema] + [pa.array([], pa.null()) for _ in names],
                                      names=schema.names + names)


def _done(value: Any) -> Future:
    """A future that already holds ``value``."""
    f: Future = Future()
    f.set_result(value)
    return f


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


#: the most scorer appends to an input's name: a time stamp (".20261122T031500Z",
#: when an archived file of the same name exists) or ".rejected.csv"
_NAME_ROOM = max(len(".20261122T031500Z"), len(REJECTED_SUFFIX))


def _check_name_room(name: str) -> None:
    """Raise BlobError when the names scorer derives from ``name`` would pass
    Blob Storage's limit: found before any of them is written."""
    n = name_length(name)
    if n + _NAME_ROOM > MAX_BLOB_NAME:
        raise BlobError(
            f"{name[:60]}...: the input's name is {n} characters long; the names scorer writes beside it "
            f"(rejected rows, an archived copy with a time stamp) add up to {_NAME_ROOM}, which would pass "
            f"Blob Storage's limit of {MAX_BLOB_NAME}.",
            hint=f"Shorten the path to at most {MAX_BLOB_NAME - _NAME_ROOM} characters and drop the file again.",
            name_length=n)


def _check_not_derived(name: str) -> None:
    """Raise InputFormatError for an input named as scorer names another input's rejected
    rows (``x.csv.rejected.csv``, what a user drops after fixing them): its output would
    take their place, or a later ``x.csv`` would delete it (issue 26)."""
    if name.endswith(REJECTED_SUFFIX):
        base = PurePosixPath(name[:-len(REJECTED_SUFFIX)])
        fixed = base.with_name(f"{base.name.partition('.')[0]}-fixed.csv")
        raise InputFormatError(
            f"{name}: names ending in {REJECTED_SUFFIX} are kept for the rejected rows scorer writes beside an "
            f"input's output (this one's output would be {base}'s rejected rows).",
            hint=f"Rename the file (e.g. {fixed.name}) and drop it again.")


def _tag_refused(name: str, exc: HttpResponseError) -> BlobError:
    if exc.error_code == "TagsTooLarge" or "tags" in str(exc).lower():
        return BlobError(
            f"{name}: Blob Storage refused scorer's attempt tag ({ATTEMPTS_TAG}): the input already carries the "
            f"ten blob index tags a blob may have, or tags too large ({_first_line(exc)}).",
            hint="Remove at least one of the input's index tags (or copy it without tags) and drop it again: "
            "scorer keeps one tag of its own on a pending input, to count its attempts.",
            status=exc.status_code, error_code=exc.error_code)
    return BlobError(f"{name}: Blob Storage refused to read or write the input's index tags: {_first_line(exc)}",
                     hint="Fix what the message names and drop the file again.",
                     status=exc.status_code, error_code=exc.error_code)


def _as_resource_error(exc: BaseException, name: str) -> ResourceError | None:
    """The ResourceError an OS or memory error stands for, or None for any other."""
    if isinstance(exc, MemoryError):
        return OutOfMemory(f"{name}: the job ran out of memory while working on this input ({_first_line(exc)}).")
    if isinstance(exc, OSError) and (exc.errno == errno.ENOSPC or "No space left on device" in str(exc)):
        return OutOfDisk(f"{name}: the job ran out of disk space while working on this input "
                         f"(no space left on device: {_first_line(exc)}).")
    return None


def run(settings: Settings, store: Store | None = None, started_at: float | None = None) -> RunReport:
    """Run the job with these settings; builds the storage client if none is given."""
    from scorer.storage import connect
    own = store is None
    store = store or Store(connect(settings), settings)
    try:
        return Job(settings, store, started_at=started_at).run()
    finally:
        if own:
            store.close()

