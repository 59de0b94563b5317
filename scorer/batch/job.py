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
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from scorer import errors
from scorer.batch import split
from scorer.batch.claims import ATTEMPTS_TAG, Attempts, Claim, LeaseLost, is_lease_error
from scorer.monitoring.drift import Tally, not_computed
from scorer.data.frames import na_kept
from scorer.errors import (BlobError, ConfigError, InputError, InputFormatError, Interrupted, ModelError, OutOfDisk, OutOfMemory,
                           PoisonInput, ResourceError, ScorerError, StorageError, TooManyRejected)
from scorer.data.formats import CsvOptions, OutputWriter, QuotingError, format_of, open_input, open_parquet_part
from scorer.log import now, redact_obj
from scorer.models.registry import Registry
from scorer.monitoring.page import render as render_page
from scorer.monitoring.report import InputReport, RunReport, estimate_cost
from scorer.r.pool import Pool, usable_cores
from scorer.batch.stream import Counts, Workers, run_function, score_stream, whole_file
from scorer.data.rejected import RejectedRows
from scorer.r.predict import PredictSpec, seed_for
from scorer.settings import Settings
from scorer.batch.stopping import check as check_stop
from scorer.storage import (FENCE_ERRORS, MAX_BLOB_NAME, MAX_BLOCKS, TRANSPORT_ERRORS, BlobReader, Store, as_seen,
                            is_outage, name_length)

log = logging.getLogger("scorer.job")

REJECTED_SUFFIX = ".rejected.csv"
ERROR_SUFFIX = ".error.json"
SOURCE_ETAG = "scorer_source_etag"
ROWS_REJECTED = "scorer_rows_rejected"
INPUTS_SUFFIX = ".inputs.jsonl"


def etag_of(props: Any) -> str:
    """The blob's ETag without quotes: listings and property reads differ in quoting."""
    return (props.etag or "").strip('"')


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
            self._storage_failed(exc, None)
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
        plan = self._plan_of(props) if props.size > s.split_bytes else None
        if plan is not None and plan.state != "whole":  # in parts: join them, whoever planned it
            self._join(plan, props, ir)
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
            plan = self._await_plan(props) if self._splittable(props, format_of_or_none(props.name)) else None
            if plan is not None:
                self._join(plan, props, ir)
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
        s = self.settings
        name = props.name
        t0 = time.monotonic()
        sinks: list[Any] = []
        streams: list[Any] = []  # the input's blob stream, then the table read from it
        counts = Counts()
        model_name, _, rel = name.partition("/")
        # Reads that wait on nothing go out beside the attempt's record (two round trips):
        # whether an earlier run committed the output, and the model's card (two more).
        committed = self.store.submit(self.store.properties, s.output_container, name)
        rejected_before = (self.store.submit(self.store.properties, s.output_container, name + REJECTED_SUFFIX)
                           if name_length(name) + _NAME_ROOM <= MAX_BLOB_NAME else _done(None))  # else refused below
        card_read = self.store.submit(self.registry.card, model_name) if rel else None
        try:
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
            if self._already_committed(props, claim, ir, committed.result(), rejected_before.result()):
                return
            if attempt > s.max_attempts:
                raise _poison(name, record)
            log.info("input claimed", extra={"event": "input_claimed", "blob": name, "attempt": attempt})
            if not rel:
                raise InputFormatError(
                    f"{name}: inputs must be under a model's folder, input/<model-name>/{name}.",
                    hint="Move the file into the folder named after the model that should score it.")
            _check_not_derived(name)
            ir.format = fmt = format_of(name)
            card = card_read.result()
            ir.model, ir.model_version, ir.model_sha256 = card["name"], card["version"], card["sha256"]

            if props.size > s.max_input_bytes:  # before loading the model: no R for a file refused anyway
                raise InputFormatError(
                    f"{name}: {props.size} bytes is more than SCORER_MAX_INPUT_BYTES ({s.max_input_bytes}).",
                    hint="Split the file, or raise SCORER_MAX_INPUT_BYTES.")
            if self._splittable(props, fmt) and card.get("kind") != "function" and card.get("rowwise", True):
                plan = self._make_plan(props, fmt, card, ir)
                if plan is not None:
                    claim.release()  # parts are claimed one by one; the input stays in input/ until done
                    self._join(plan, props, ir)
                    return
            self.registry.r  # R starts before the download's threads, if not already: see scorer/r/bridge.py
            with tempfile.TemporaryDirectory(prefix="scorer-") as tmp:
                t = time.monotonic()
                # The input downloads, and its first batch is read, while R loads the model.
                fetch = self.store.submit(self._fetch, props, Path(tmp) / "input", fmt, ir, streams,
                                          self._na_kept(card))
                is_function = card.get("kind") == "function"
                profile = None if is_function else self.store.submit(self.registry.profile, card)
                try:
                    model = self.registry.load(card)
                except BaseException:
                    # The model's error is the one to report. The download cannot be
                    # cancelled midway, and must finish before its directory goes.
                    wait([fetch])
                    raise
                ir.durations_s["load_model"] = round(time.monotonic() - t, 3)
                table = fetch.result()
                t = time.monotonic()
                out_sink = self.store.staged(s.output_container, name)
                sinks.append(out_sink)
                out = OutputWriter(out_sink, fmt, table.delimiter, table.decimal, encoding=table.encoding)
                if fmt != "parquet":
                    ir.csv = {"delimiter": table.delimiter, "decimal": table.decimal}
                rej_sink = self.store.staged(s.output_container, name + REJECTED_SUFFIX)
                sinks.append(rej_sink)  # staged lazily: blocks are only sent once a row is rejected
                rejected = RejectedRows(lambda: OutputWriter(rej_sink, "csv"))
                if is_function:
                    tally, ir.drift = None, not_computed("an R function has no reference profile")
                else:
                    tally = self._drift_tally(card, ir, profile.result)
                try:
                    if is_function:  # the whole file, once, through score(data, ...)
                        run_function(table, model, self.registry.r, card.get("params") or [], out, name, counts,
                                     s.max_function_bytes, check_stop=check_stop, text=card.get("text_columns"))
                    else:
                        spec = self._spec(card, name)
                        if not spec.rowwise:  # predicted whole, as R would: see cards.rows_together
                            whole = whole_file(table.batches, s.max_function_bytes, name, "this model's "
                                               "predictions depend on the rows predicted together, so it gets the "
                                               "whole file at once", check_stop)
                            table.batches = iter([whole] if whole is not None else [])
                        score_stream(table, spec, model, self.registry.r, out, rejected,
                                     name, counts, on_first_scored=self._first_row, check_stop=check_stop,
                                     drift=tally, workers=self._workers(card) if spec.rowwise else None)
                finally:  # how far it got, also when it failed
                    ir.rows_read, ir.rows_rejected = counts.rows_read, counts.rows_rejected
                    if is_function:
                        ir.rows_scored, ir.rows_written = None, counts.rows_written
                    else:
                        ir.rows_scored = counts.rows_scored
                    if len(counts.batches_by_r) > 1:
                        ir.r_sessions = dict(counts.batches_by_r)
                    self._r_warnings(ir, counts)
                ir.durations_s["score"] = round(time.monotonic() - t, 3)
                self._check_counts(name, counts, rejected)
                if counts.rows_read == 0 and not is_function:  # a header, no rows: so is the output, as in R
                    out.write(_no_rows(table, card))
                    ir.warnings.append("the file has a header but no data rows: the output has the header only")
                t = time.monotonic()
                out.close()
                if rejected.writer is not None:
                    rejected.writer.close()
                check_stop()
                if claim.lost:
                    raise LeaseLost(f"{name}: the claim (lease) on this input was lost while scoring it")
                meta = self._output_metadata(props, card, counts.rows_rejected)
                self._commit(name, lambda seen: out_sink.commit(metadata=meta, content_type=_content_type(fmt),
                                                                conditions=seen), committed.result(),
                             rej_sink if rejected.writer is not None else None, meta, rejected_before.result())
                ir.output = f"{s.output_container}/{name}"
                if rejected.writer is not None:
                    ir.rejected_rows = f"{s.output_container}/{name}{REJECTED_SUFFIX}"
                ir.durations_s["commit"] = round(time.monotonic() - t, 3)
            ir.status = "scored"
            if tally is not None:
                self._drift(ir, tally)
            log.info("input scored", extra={"event": "input_scored", "blob": name, "rows_scored": ir.rows_scored,
                                            "rows_rejected": ir.rows_rejected, "rows_written": ir.rows_written,
                                            "model": ir.model, "model_version": ir.model_version})
            self._archive(props, claim, ir)
            if props.size > s.split_bytes:  # a plan given up for scoring whole: its parts go too
                self._drop_parts(name)
        except (InputError, ModelError) as exc:
            self._quarantine(props, claim, ir, exc)
        except Interrupted:
            ir.status = "left_pending"
            claim.end_attempt("stopped")
            raise
        except LeaseLost as exc:
            self._lease_lost(ir, exc)
        except TRANSPORT_ERRORS + (StorageError, HttpResponseError) as exc:
            if is_outage(exc):
                self._storage_failed(exc, ir)
            elif is_lease_error(exc):  # our claim, not the input, failed
                self._lease_lost(ir, exc)
            else:  # Blob Storage refused this one blob: quarantine it and go on with the others
                self._quarantine(props, claim, ir, BlobError(
                    f"{name}: Blob Storage refused a request about this input or one of its outputs: "
                    f"{_first_line(exc)}",
                    hint="This concerns this blob only; the other inputs went on. Fix what the message "
                    "names (often the blob's name or tags) and drop the file again.",
                    status=getattr(exc, "status_code", None), error_code=getattr(exc, "error_code", None)))
        except (ResourceError, OSError, MemoryError) as exc:
            resource = exc if isinstance(exc, ResourceError) else _as_resource_error(exc, name)
            if resource is None:
                self._internal_failed(exc, claim, ir)
            else:
                self._resource_error = True
                ir.status = "left_pending"
                ir.error = resource.as_dict()
                claim.end_attempt(resource.code)
                log.error(str(resource), exc_info=True, extra={"event": "input_resource_error", "blob": name,
                                                               "error": ir.error})
        except Exception as exc:  # a bug or an R crash: keep the input, count the attempt, go on
            self._internal_failed(exc, claim, ir)
        finally:
            for sink in sinks:  # drops what was staged and not committed; after a commit, nothing
                sink.abandon()
            for stream in reversed(streams):  # the table before the blob stream it reads: see InputTable.close
                stream.close()
                if isinstance(stream, BlobReader) and stream.seconds is not None:
                    ir.durations_s["download"] = round(stream.seconds, 3)
            ir.durations_s["total"] = round(time.monotonic() - t0, 3)

    def _commit(self, name: str, commit_output: Callable[[dict], Any], output_before: Any,
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

    def _workers(self, card: dict) -> Workers | None:
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

    def _drift_tally(self, card: dict, ir: InputReport, read: Callable[[], dict | None] | None = None
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

    def _drift(self, ir: InputReport, tally: Tally) -> None:
        ir.drift = tally.result()
        flagged = ir.drift["flagged"]
        if flagged:
            every = {**ir.drift["features"], **ir.drift["predictions"]}
            listed = ", ".join(f"{n} (PSI {every[n]['psi']:.2f})" for n in flagged)
            ir.warnings.append(f"drift: {listed}, at or above SCORER_DRIFT_PSI {tally.threshold:g}")
            log.warning(f"drift: {listed}", extra={"event": "drift_flagged", "blob": ir.blob, "flagged": flagged})

    # -- one input across container groups (scorer.batch.split) ------------------------------

    def _splittable(self, props: Any, fmt: str | None) -> bool:
        s = self.settings
        return (s.parallel_jobs > 1 and props.size > s.split_bytes and fmt is not None
                and split.not_splittable(fmt) is None
                and name_length(split.where(props.name)) + len("/rejected-00000") <= MAX_BLOB_NAME)

    def _plan_of(self, props: Any) -> split.Plan | None:
        """The plan of this input (this exact input: same ETag), or None. A plan of an
        input since replaced is removed."""
        s = self.settings
        try:
            plan = split.Plan.from_json(self.store.get_json(s.output_container, f"{split.where(props.name)}/plan.json"))
        except ResourceNotFoundError:
            return None
        if plan.etag != etag_of(props):
            self._drop_parts(props.name)
            return None
        return plan

    def _await_plan(self, props: Any, seconds: float = 30.0) -> split.Plan | None:
        """Wait while the job holding the input writes its plan (a moment: a few small
        range reads); None once it is clear there will be none."""
        s = self.settings
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            check_stop()
            plan = self._plan_of(props)
            if plan is not None:
                return plan if plan.state != "whole" else None
            now_props = self.store.properties(s.input_container, props.name)
            if now_props is None or now_props.lease.state != "leased":
                return None
            time.sleep(0.5)
        return None

    def _make_plan(self, props: Any, fmt: str, card: dict, ir: InputReport) -> split.Plan | None:
        """Cut the input into parts and publish the plan; None when it is not worth it."""
        s = self.settings
        name = props.name
        existing = self._plan_of(props)
        if existing is not None:
            if existing.state == "whole":  # given up earlier: scored whole, saying why
                ir.warnings.append(f"not split: {existing.reason}")
                return None
            return existing
        if fmt == "parquet":
            source = split.RangeFile(self.store, s.input_container, name, props.size, etag_of(props))
            plan = split.plan_parquet(source, name, etag_of(props), props.size, s.split_bytes)
        else:
            plan = split.plan_csv(self.store, s.input_container, name, etag_of(props), props.size, s.split_bytes,
                                  s.csv_decimal)
        if len(plan.parts) < 2:
            return None
        plan.model_version = int(card["version"])
        folder = split.where(name)
        for k in range(len(plan.parts)):  # the parts first, the plan last: a plan's parts always exist
            self.store.put_bytes(s.output_container, f"{folder}/part-{k:05d}", b"", overwrite=True)
        try:
            self.store.put_json(s.output_container, f"{folder}/plan.json", plan.to_json(), overwrite=False)
        except ResourceExistsError:  # another job planned it first: theirs stands
            return self._plan_of(props)
        log.info(f"{name}: split into {len(plan.parts)} parts", extra={
            "event": "input_split", "blob": name, "parts": len(plan.parts)})
        ir.warnings.append(f"split into {len(plan.parts)} parts of about {s.split_bytes} bytes for the run's "
                           f"{s.parallel_jobs} container groups")
        return plan

    def _join(self, plan: split.Plan, props: Any, ir: InputReport) -> None:
        """Score parts of a split input while there are parts to claim, then finish it
        if every part is done."""
        model_name = plan.input.split("/", 1)[0]
        ir.format = plan.fmt
        try:
            card = self.registry.card(model_name, plan.model_version)
            ir.model, ir.model_version, ir.model_sha256 = card["name"], card["version"], card["sha256"]
            if plan.state == "open":
                model = self.registry.load(card)
                while (got := self._claim_part(plan)) is not None:
                    k, pclaim = got
                    try:
                        check_stop()
                        if not self._score_part(plan, k, card, model, pclaim, ir):
                            break  # the plan was given up, or failed
                    except Interrupted:
                        pclaim.end_attempt("stopped")
                        raise
                    finally:
                        pclaim.release()
            self._finish(plan, props, card, ir)
        except Interrupted:
            ir.status = "left_pending"
            raise
        except (InputError, ModelError) as exc:  # the model cannot be loaded: the whole input fails
            self._fail_plan(plan, exc.as_dict())
            self._finish(plan, props, None, ir)
        except LeaseLost as exc:  # the input's or the plan's: another job settles it
            self._lease_lost(ir, exc)
        except (ResourceModifiedError, ResourceNotFoundError):  # replaced (or removed) under its parts
            self._drop_parts(plan.input)
            ir.status = "left_pending"
            ir.warnings.append("the input was replaced while its parts were scored: its plan is dropped, and the "
                               "new file is scored from the start by the next claim")
            log.warning(f"{plan.input}: replaced while its parts were scored", extra={
                "event": "split_input_replaced", "blob": plan.input})
        except TRANSPORT_ERRORS + (StorageError, HttpResponseError) as exc:
            if is_outage(exc):
                self._storage_failed(exc, ir)
            else:
                raise

    def _claim_part(self, plan: split.Plan) -> tuple[int, Claim] | None:
        """A part nobody has done or holds, claimed; None when there is none. A part
        started SCORER_MAX_ATTEMPTS times without finishing fails the plan (poison)."""
        s = self.settings
        for k in range(len(plan.parts)):
            blob = self.store.blob(s.output_container, plan.blob("part", k))
            props = self.store.properties(s.output_container, plan.blob("part", k))
            if props is None or props.size > 0 or props.lease.state == "leased":
                continue
            claim = Claim.take(blob, s.lease_seconds)
            if claim is None:
                continue
            record = claim.start_attempt(s.max_attempts)
            if record.number > s.max_attempts:
                poison = _poison(f"{plan.input} (part {k + 1} of {len(plan.parts)})", record)
                self._write_part(plan, k, claim, {"state": "failed", "error": poison.as_dict()})
                claim.release()
                continue
            return k, claim
        return None

    def _write_part(self, plan: split.Plan, k: int, claim: Claim, record: dict) -> None:
        self.store.put_bytes(self.settings.output_container, plan.blob("part", k), json.dumps(record).encode(),
                             content_type="application/json", lease=claim.lease)

    def _score_part(self, plan: split.Plan, k: int, card: dict, model: Any, claim: Claim, ir: InputReport) -> bool:
        """Score part ``k``; write its record under its lease. Returns False when the
        plan can go no further (given up for a quoted field across lines, or failed)."""
        s = self.settings
        part = plan.parts[k]
        where = f"{plan.input} (part {k + 1} of {len(plan.parts)})"
        t0 = time.monotonic()
        counts = Counts()
        sinks: list[Any] = []
        streams: list[Any] = []
        check = None
        try:
            if plan.fmt == "parquet":
                source = split.RangeFile(self.store, s.input_container, plan.input, plan.size, plan.etag)
                table = open_parquet_part(source, list(range(*part["row_groups"])), where, s.batch_rows,
                                          s.max_input_bytes)
            else:
                # by the plan's ETag: an input replaced while its parts are scored fails the
                # part (412) rather than mix the two files in one output (issue 26)
                raw = self.store.open_read(s.input_container, plan.input, offset=part["start"],
                                           length=part["end"] - part["start"], prefix=plan.header.encode("latin-1"),
                                           etag=plan.etag)
                check = split.QuoteCheck(raw)
                streams.append(check)
                options = dataclasses.replace(CsvOptions.of(s, plan.input, self._na_kept(card)), decimal=plan.decimal,
                                              delimiter=plan.delimiter)
                table = open_input(check, "csv", where, s.batch_rows, s.max_input_bytes, options)
            streams.append(table)
            # a block prefix of this attempt's own: a part taken over never commits a dead job's blocks
            prefix = f"p{k:05d}{uuid.uuid4().hex[:10]}"
            if plan.fmt == "parquet":
                out_sink = self.store.staged(s.output_container, plan.blob("out", k))
                out = OutputWriter(out_sink, "parquet")
            else:
                # each part's share of the output blob's blocks, one left for the header
                out_sink = self.store.staged(s.output_container, plan.input, prefix=prefix,
                                             max_blocks=(MAX_BLOCKS - 1) // len(plan.parts))
                out = OutputWriter(out_sink, "csv", plan.delimiter, plan.decimal, header=False,
                                   encoding=s.csv_encoding)
            sinks.append(out_sink)
            rej_sink = self.store.staged(s.output_container, plan.blob("rejected", k))
            sinks.append(rej_sink)
            rejected = RejectedRows(lambda: OutputWriter(rej_sink, "csv"))
            if plan.fmt == "parquet":  # its first row's number is known: rows numbered as the input's
                rejected.base = part["first_row"]
            tally = self._drift_tally(card, ir)
            score_stream(table, self._spec(card, plan.input), model, self.registry.r, out, rejected, where, counts,
                         on_first_scored=self._first_row, check_stop=check_stop, drift=tally,
                         workers=self._workers(card))
            out.close()
            if rejected.writer is not None:
                rejected.writer.close()
            if check is not None and check.odd_line:
                self._give_up(plan, f"a quoted field spans lines (part {k + 1} of {len(plan.parts)} has a line with "
                              "an odd number of quote characters), so the file cannot be cut at line ends")
                return False
            blocks = out_sink.flush_blocks() if plan.fmt != "parquet" else []
            if plan.fmt == "parquet":
                out_sink.commit(content_type="application/vnd.apache.parquet")
            if rejected.writer is not None:
                rej_sink.commit(content_type="text/csv")
            check_stop()
            seconds = round(time.monotonic() - t0, 3)
            self._write_part(plan, k, claim, {
                "state": "done", "rows_read": counts.rows_read, "rows_scored": counts.rows_scored,
                "rows_rejected": counts.rows_rejected, "blocks": blocks,
                "names": out.schema.names if out.schema is not None else None,
                "rejected": rejected.writer is not None, "first_rejects": rejected.first, "numbered_from": rejected.base,
                "warnings": dict(counts.warnings), "drift": tally.state() if tally else None,
                "by": {"run_id": self.report.run_id, "host": self.report.host}, "seconds": seconds})
            ir.parts.append({"part": k + 1, "rows_read": counts.rows_read, "rows_scored": counts.rows_scored,
                             "rows_rejected": counts.rows_rejected, "seconds": seconds})
            self._r_warnings(ir, counts)
            return True
        except QuotingError:  # a cut inside a quoted value, or bad quoting: the whole file's reader says which
            self._give_up(plan, f"part {k + 1} of {len(plan.parts)} does not read as CSV on its own (a quoted "
                          "value may span a cut)")
            return False
        except (InputError, ModelError) as exc:
            self._write_part(plan, k, claim, {"state": "failed", "error": exc.as_dict()})
            self._fail_plan(plan, exc.as_dict())
            return False
        finally:
            for sink in sinks:
                sink.abandon()
            for stream in reversed(streams):
                stream.close()

    def _give_up(self, plan: split.Plan, reason: str) -> None:
        """The input is scored whole after all (its parts are left for the clean-up)."""
        plan.state, plan.reason = "whole", reason
        self.store.put_json(self.settings.output_container, f"{split.where(plan.input)}/plan.json", plan.to_json())
        log.warning(f"{plan.input}: not split after all: {reason}", extra={"event": "split_given_up",
                                                                            "blob": plan.input})

    def _fail_plan(self, plan: split.Plan, error: dict) -> None:
        if plan.state == "open":
            plan.state, plan.reason = "failed", json.dumps(error)
            try:
                self.store.put_json(self.settings.output_container, f"{split.where(plan.input)}/plan.json",
                                    plan.to_json())
            except HttpResponseError:  # leased by a finisher: it will see the failed part
                pass

    def _finish(self, plan: split.Plan, props: Any, card: dict | None, ir: InputReport) -> None:
        """Commit a split input once every part is done (under the plan's lease, so one
        job does it), then archive the input; or quarantine it when a part failed."""
        s = self.settings
        folder = split.where(plan.input)
        records = [split.record(self._read_or_empty(plan.blob("part", k))) for k in range(len(plan.parts))]
        failed = [r for r in records if r and r.get("state") == "failed"]
        if plan.state == "whole":
            ir.status = "left_pending"
            ir.warnings.append(f"not split: {plan.reason}; the next claim scores it whole")
            return
        if not failed and plan.state != "failed" and any(r is None for r in records):
            done = sum(r is not None for r in records)
            ir.status = "left_pending"
            ir.warnings.append(f"{done} of {len(records)} parts scored so far; the rest by other jobs of this run, "
                               "or by the next run")
            return
        plan_claim = Claim.take(self.store.blob(s.output_container, f"{folder}/plan.json"), s.lease_seconds)
        if plan_claim is None:  # another job is finishing it
            ir.status = "left_pending"
            return
        input_claim = None
        try:
            input_claim = Claim.take(self.store.blob(s.input_container, plan.input), s.lease_seconds)
            if input_claim is None:
                ir.status = "left_pending"
                ir.warnings.append("every part is done, but another job holds the input: the next claim finishes it")
                return
            now_props = self.store.properties(s.input_container, plan.input)
            if now_props is None or etag_of(now_props) != plan.etag:
                raise ResourceModifiedError(f"{plan.input} was replaced while its parts were scored")
            if failed or plan.state == "failed":
                error = failed[0]["error"] if failed else json.loads(plan.reason or "{}")
                self._quarantine(props, input_claim, ir, _PartError(error))
                self._drop_parts(plan.input, keep_lease=plan_claim)
                return
            self._commit_parts(plan, props, card, records, ir)
            self._archive(props, input_claim, ir)
            self._drop_parts(plan.input, keep_lease=plan_claim)
        except (InputError, ModelError) as exc:  # the whole's own check (too many rejected rows, no rows)
            self._quarantine(props, input_claim, ir, exc)
            self._drop_parts(plan.input, keep_lease=plan_claim)
        finally:
            if input_claim is not None:
                input_claim.release()
            plan_claim.release()

    def _commit_parts(self, plan: split.Plan, props: Any, card: dict, records: list[dict], ir: InputReport) -> None:
        s = self.settings
        name = plan.input
        counts = Counts(rows_read=sum(r["rows_read"] for r in records),
                        rows_scored=sum(r["rows_scored"] for r in records),
                        rows_rejected=sum(r["rows_rejected"] for r in records))
        # each part numbered its rows from 1: as rows of the input, they follow the parts before
        offsets = np.cumsum([0] + [r["rows_read"] for r in records[:-1]])
        firsts = RejectedRows(lambda: None)
        for k, r in enumerate(records):
            counts.warnings.update(r["warnings"])
            shift = int(offsets[k]) - r.get("numbered_from", 0)
            firsts.first += [dict(x, row=x["row"] + shift) for x in r.get("first_rejects") or []]
        firsts.first = firsts.first[:RejectedRows.FIRST]
        ir.rows_read, ir.rows_scored, ir.rows_rejected = counts.rows_read, counts.rows_scored, counts.rows_rejected
        self._check_counts(name, counts, firsts)
        output_before = self.store.submit(self.store.properties, s.output_container, name)
        rejected_before = self.store.submit(self.store.properties, s.output_container, name + REJECTED_SUFFIX)
        meta = self._output_metadata(props, card, counts.rows_rejected)
        parts_rejected = [(k, self.store.read_bytes(s.output_container, plan.blob("rejected", k)))
                          for k, r in enumerate(records) if r["rejected"]]
        rejected = None
        if parts_rejected:  # staged here, committed after the output (see _commit)
            rejected = self.store.staged(s.output_container, name + REJECTED_SUFFIX)
            if plan.fmt == "parquet":  # numbered as the input's rows already: the files one after another
                for i, (_, data) in enumerate(parts_rejected):
                    rejected.write(data if i == 0 else data[data.index(b"\n") + 1:])
            else:  # CSV parts numbered their rows from 1; every other column is text, read back as it was
                w = OutputWriter(rejected, "csv")
                for k, data in parts_rejected:
                    for b in split.renumbered_rejects(data, int(offsets[k])).to_batches():
                        w.write(b)
                w.close()
        if plan.fmt == "parquet":
            sink = self.store.staged(s.output_container, name)
            w = OutputWriter(sink, "parquet")
            for k in range(len(records)):  # each part's scored rows, in order, copied into one file
                src = self.store.properties(s.output_container, plan.blob("out", k))
                if src is None:
                    continue
                table = open_parquet_part(split.RangeFile(self.store, s.output_container, plan.blob("out", k), src.size),
                                          None, name, s.batch_rows, s.max_input_bytes)
                for batch in table.batches:
                    w.write(batch)
            w.close()
            self._commit(name, lambda seen: sink.commit(metadata=meta, content_type=_content_type("parquet"),
                                                        conditions=seen),
                         output_before.result(), rejected, meta, rejected_before.result())
        else:
            names = next(r["names"] for r in records if r["names"])
            sink = self.store.staged(s.output_container, name, prefix=f"h{plan.id:0<15.15}")
            sink.write(split.csv_header_bytes(names, plan.delimiter).decode().encode(s.csv_encoding, errors="replace"))
            blocks = sink.flush_blocks() + [b for r in records for b in r["blocks"]]
            self._commit(name, lambda seen: sink.commit(metadata=meta, content_type=_content_type("csv"), blocks=blocks,
                                                        conditions=seen),
                         output_before.result(), rejected, meta, rejected_before.result())
        if rejected is not None:
            ir.rejected_rows = f"{s.output_container}/{name}{REJECTED_SUFFIX}"
        ir.output = f"{s.output_container}/{name}"
        ir.csv = {"delimiter": plan.delimiter, "decimal": plan.decimal} if plan.fmt != "parquet" else None
        ir.parts = [{"part": k + 1, "rows_read": r["rows_read"], "rows_scored": r["rows_scored"],
                     "rows_rejected": r["rows_rejected"], "seconds": r["seconds"], "by": r["by"]}
                    for k, r in enumerate(records)]
        tally = self._drift_tally(card, ir)
        if tally is not None:
            for r in records:
                if r.get("drift"):
                    tally.absorb(r["drift"])
            self._drift(ir, tally)
        self._r_warnings(ir, counts)
        ir.status = "scored"
        log.info("input scored", extra={"event": "input_scored", "blob": name, "rows_scored": ir.rows_scored,
                                        "rows_rejected": ir.rows_rejected, "parts": len(records),
                                        "model": ir.model, "model_version": ir.model_version})

    def _read_or_empty(self, blob: str) -> bytes:
        try:
            return self.store.read_bytes(self.settings.output_container, blob)
        except ResourceNotFoundError:
            return b""

    def _drop_parts(self, name: str, keep_lease: Claim | None = None) -> None:
        """Remove a plan's blobs (its parts, their outputs and rejected rows; the plan last)."""
        s = self.settings
        folder = split.where(name)
        for b in self.store.list_names(s.output_container, prefix=f"{folder}/"):
            if b.name != f"{folder}/plan.json":
                self.store.delete(s.output_container, b.name)
        self.store.delete(s.output_container, f"{folder}/plan.json",
                          lease=keep_lease.lease if keep_lease is not None else None)

    def _lease_lost(self, ir: InputReport, exc: BaseException) -> None:
        ir.status = "left_pending"
        ir.error = {"kind": "LeaseLost", "message": f"{ir.blob}: the claim (lease) on this input was lost "
                    f"({_first_line(exc)}).",
                    "what_to_do": "Nothing: the input stays in input/; the next run scores it, or archives it "
                                  "without scoring again when its output was already committed."}
        log.warning(ir.error["message"], extra={"event": "lease_lost", "blob": ir.blob})

    def _output_metadata(self, props: Any, card: dict, rows_rejected: int | None) -> dict:
        """An output's metadata: the input's ETag (a rerun after a crash between commit and
        archive finds it scored), the run, the model version that scored it, and how many
        rows were rejected (a rerun finds whether its rejected rows were committed too)."""
        return {SOURCE_ETAG: etag_of(props), "scorer_run_id": self.report.run_id,
                "scorer_model": card["name"], "scorer_model_version": str(card["version"]),
                ROWS_REJECTED: str(rows_rejected or 0)}

    def _r_warnings(self, ir: InputReport, counts: Counts) -> None:
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
        self._archive(props, claim, ir)
        return True

    def _spec(self, card: dict, name: str) -> PredictSpec:
        """How ``card``'s model predicts input ``name``: for a random predict(), with R's
        seed from the input's name (the same output when it is scored again)."""
        spec = PredictSpec.from_card(card)
        return dataclasses.replace(spec, seed=seed_for(name)) if spec.random else spec

    def _na_kept(self, card: dict) -> frozenset[str]:
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

    def _check_counts(self, name: str, counts: Any, rejected: RejectedRows) -> None:
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

    def _first_row(self) -> None:
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

    def _archive(self, props: Any, claim: Claim, ir: InputReport) -> None:
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

    def _quarantine(self, props: Any, claim: Claim, ir: InputReport, exc: ScorerError) -> None:
        s = self.settings
        try:
            # a job past its lease must not write a note for what another run has done: the
            # error may even be that run's doing (the input deleted under the download)
            claim.confirm()
        except LeaseLost as e:
            self._lease_lost(ir, e)
            return
        except TRANSPORT_ERRORS + (StorageError, HttpResponseError) as e:
            if is_outage(e):
                self._storage_failed(e, ir)
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
                self._storage_failed(e, ir)
            else:  # this blob cannot even be set aside: say so, leave it, and go on
                self._blob_error = True
                ir.error = dict(ir.error, quarantine_failed=_first_line(e))
                log.error("could not quarantine the input", extra={"event": "quarantine_failed", "blob": props.name,
                                                                   "error": _first_line(e)})
            ir.status = "left_pending"

    def _storage_failed(self, exc: Exception, ir: InputReport | None) -> None:
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


class _PartError(InputError):
    """The error a part of a split input recorded: the whole input is quarantined with
    its kind, message and what to do."""

    def __init__(self, error: dict):
        super().__init__(error.get("message", "a part of the input failed"), hint=error.get("what_to_do"))
        self._kind = error.get("kind", "InputError")

    @property
    def kind(self) -> str:
        return self._kind


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


def _poison(name: str, record: Attempts) -> PoisonInput:
    started = record.number - 1
    history = record.history(started)
    codes = set(record.outcomes.values())
    if "no-space" in codes:
        hint = OutOfDisk.hint.split(";")[0] + ", then drop it again."
    elif "out-of-memory" in codes:
        hint = OutOfMemory.hint.split(";")[0] + ", then drop it again."
    elif "stopped" in codes:
        hint = "Give the job more time (jobTimeout) or split the file, then drop it again."
    else:
        hint = ("Check the job's logs for those runs; split the file or give the container more memory "
                "(memoryInGB) or time (jobTimeout), then drop it again.")
    return PoisonInput(f"{name}: scoring this input was started {started} times and never finished: "
                       + "; ".join(history) + ".", hint=hint, attempts=history)


def _as_resource_error(exc: BaseException, name: str) -> ResourceError | None:
    """The ResourceError an OS or memory error stands for, or None for any other."""
    if isinstance(exc, MemoryError):
        return OutOfMemory(f"{name}: the job ran out of memory while working on this input ({_first_line(exc)}).")
    if isinstance(exc, OSError) and (exc.errno == errno.ENOSPC or "No space left on device" in str(exc)):
        return OutOfDisk(f"{name}: the job ran out of disk space while working on this input "
                         f"(no space left on device: {_first_line(exc)}).")
    return None


def _content_type(fmt: str) -> str:
    return {"csv": "text/csv", "csv.gz": "application/gzip", "parquet": "application/vnd.apache.parquet"}[fmt]


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

