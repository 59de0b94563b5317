"""One run of the scoring job, from claim to report.

    run()
      list pending inputs under input/ (all, one model's, or one blob)    _pending
      for each input:                                                      _take
        claim it (blob lease, renewed in the background)                   batch.claims.Claim
        record the attempt; check name, format, size                       _process: _admit
        in parts across the run's container groups, if large              batch.parts.Parts
        or whole: load the model, score batch by batch, commit             batch.scoring.Scoring
        archive the input; or quarantine it with a note                    batch.outcomes.Outcomes
      then each pending label file, matched to its predictions            batch.labels.Labels
      write the run report                                                 _write_report
      return the exit status                                               _exit_code

docs/architecture.md walks one input through these, naming each function.

Nothing is lost: an input leaves input/ only after its copy in archive/ or
quarantine/ has been written, and only by the job holding its lease. An output
carries the ETag of the input it came from, so a run that died after committing
an output but before archiving its input archives it next time without scoring
it again.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

from azure.core.exceptions import HttpResponseError

from scorer import errors
from scorer.batch.claims import ATTEMPTS_TAG, Attempts, Claim, LeaseLost, is_lease_error, poison
from scorer.batch.flight import Flight
from scorer.batch.labels import Labels
from scorer.batch.outcomes import Outcomes, first_line
from scorer.batch.parts import Parts
from scorer.batch.scoring import Ahead, Scoring, Work
from scorer.batch.stopping import check as check_stop
from scorer.data.formats import format_of
from scorer.data.rejected import REJECTED_SUFFIX
from scorer.errors import (BlobError, ConfigError, InputError, InputFormatError, Interrupted, ModelError, OutOfDisk,
                           OutOfMemory, ResourceError, StorageError)
from scorer.log import now
from scorer.models.registry import Registry
from scorer.monitoring.history import RunModels
from scorer.monitoring.page import render as render_page
from scorer.monitoring.runs import outcome_summary, record as record_history
from scorer.monitoring.report import InputReport, RunReport, estimate_cost
from scorer.settings import Settings
from scorer.storage import MAX_BLOB_NAME, TRANSPORT_ERRORS, Store, is_outage, name_length

log = logging.getLogger("scorer.job")

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
        self._resource_error = False
        self._inputs_file: Any = None  # every input's record, past report.LISTED of them (_spill)
        self.outcomes = Outcomes(settings, store, self.report)  # commit, archive, quarantine, left pending
        self.scoring = Scoring(settings, store, self.registry, self.outcomes, self._t0)  # R, drift, an input whole
        self.parts = Parts(self)  # inputs split across the run's container groups
        self._cards: dict[str, Future] = {}  # each model's current card, read once per run (_card)
        self.models = RunModels()  # each model's inputs summed, for its history (_write_histories)
        self.labels = Labels(settings, store, self.registry, self.outcomes, self.report.labels)
        self._cards_lock = threading.Lock()

    # -- the run --------------------------------------------------------------------

    def run(self) -> RunReport:
        log.info("run started", extra={"event": "run_started", "scope": self.report.scope})
        flight = Flight(self)  # small inputs worked on together (scorer.batch.flight)
        try:
            self.store.ensure_containers()
            try:
                for props in self._pending():
                    check_stop()
                    ir = InputReport(blob=props.name)
                    self.report.inputs.append(ir)
                    if flight.takes(props):
                        flight.start(props, ir)
                    else:  # a large one alone: the small ones in flight land first
                        flight.land()
                        try:
                            self._take(props, ir)
                        finally:
                            self.settle(ir)
                    if self.outcomes.storage_error:
                        break
                flight.land()
            finally:  # on an error too: every input in flight lands and is settled
                flight.land(quiet=True)
                flight.close()
            if not self.outcomes.storage_error and self.settings.blob is None:  # a blob event's run: its blob alone
                self.labels.run(check_stop)
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
            self.outcomes.storage_failed(exc, None)
        self.report.ended = now()
        if self.registry.r_started:  # record which R scored
            self.report.r_version = self.registry.r.r_version
        if self.report.exit_code is None:
            self.report.exit_code = self._exit_code()
        self.scoring.close()
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
            self._skip(ir, f"Blob Storage refused to lease it: {first_line(exc)}")
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

    def settle(self, ir: InputReport) -> None:
        """Count an input that ended into the report, and its model's history (on the main
        thread: scorer.batch.flight)."""
        self.report.settle(ir, self._spill)
        if ir.model:
            self.models.add(dataclasses.asdict(ir))

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
                                                                   "error": first_line(exc)})

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
        if self.outcomes.storage_error:
            return errors.EXIT_STORAGE
        if self.outcomes.internal_error:
            return errors.EXIT_INTERNAL
        if self._resource_error:
            return errors.EXIT_RESOURCES
        if any(item["status"] == "left_pending" for item in self.report.labels):
            return errors.EXIT_INTERNAL
        if (self.outcomes.blob_error or any(i.status == "quarantined" for i in self.report.inputs)
                or any(item["status"] == "refused" for item in self.report.labels)):
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
        work = Work(props, claim, ir)
        ahead = self._read_ahead(props.name)
        try:
            admitted = self._admit(work, ahead)
            if admitted is None:  # an earlier run committed its output: archived, not scored again
                return
            card, fmt = admitted
            if self._split_instead(work, card, fmt):
                return
            tally = self.scoring.score_whole(work, card, fmt, ahead)
            ir.status = "scored"
            if tally is not None:
                self.scoring.drift(ir, tally)
            log.info("input scored", extra={"event": "input_scored", "blob": props.name, "rows_scored": ir.rows_scored,
                                            "rows_rejected": ir.rows_rejected, "rows_written": ir.rows_written,
                                            "model": ir.model, "model_version": ir.model_version})
            if work.shadow_card is not None:  # after the output is committed: it never waits on the shadow
                self.scoring.shadow(work, card, work.shadow_card, fmt)
            self.outcomes.archive(props, claim, ir)
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

    def _read_ahead(self, name: str) -> "Ahead":
        """Reads that wait on nothing go out beside the attempt's record: whether an earlier
        run committed the output and its rejected rows (two reads side by side: a listing of
        both would be one request, but Blob Storage bills a listing as a write, and the
        emulator's listing time grows with the container; docs/performance.md), and the
        model's card (read once per run and model: ``_card``)."""
        s = self.settings
        model_name, _, rel = name.partition("/")
        return Ahead(
            committed=self.store.submit(self.store.properties, s.output_container, name),
            rejected_before=(self.store.submit(self.store.properties, s.output_container, name + REJECTED_SUFFIX)
                             if name_length(name) + _NAME_ROOM <= MAX_BLOB_NAME else _done(None)),  # else refused below
            card=self._card(model_name) if rel else None)

    def _card(self, model: str) -> Future:
        """The current card of ``model`` and its shadow's (or None), read once per run: every
        input of a run is scored by the versions that were current and shadow when the run
        first needed the model (one published during the run scores from the next run on;
        docs/performance.md)."""
        with self._cards_lock:
            if model not in self._cards:
                self._cards[model] = self.store.submit(self.registry.current_and_shadow, model)
            return self._cards[model]

    def _admit(self, work: "Work", ahead: "Ahead") -> tuple[dict, str] | None:
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
        if self.outcomes.already_committed(props, claim, ir, ahead.committed.result(), ahead.rejected_before.result()):
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
        card, work.shadow_card = ahead.card.result()
        ir.model, ir.model_version, ir.model_sha256 = card["name"], card["version"], card["sha256"]
        if props.size > s.max_input_bytes:  # before loading the model: no R for a file refused anyway
            raise InputFormatError(
                f"{name}: {props.size} bytes is more than SCORER_MAX_INPUT_BYTES ({s.max_input_bytes}).",
                hint="Split the file, or raise SCORER_MAX_INPUT_BYTES.")
        return card, fmt

    def _split_instead(self, work: "Work", card: dict, fmt: str) -> bool:
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

    def _failed(self, exc: Exception, props: Any, claim: Claim, ir: InputReport) -> None:
        """What an input's failure means: quarantined (the input or its model is at fault),
        left for the next run (the claim lost, storage down, out of resources, a bug), or
        the run stopped (storage down)."""
        name = props.name
        if isinstance(exc, (InputError, ModelError)):
            self.outcomes.quarantine(props, claim, ir, exc)
        elif isinstance(exc, LeaseLost):
            self.outcomes.lease_lost(ir, exc)
        elif isinstance(exc, TRANSPORT_ERRORS + (StorageError, HttpResponseError)):
            if is_outage(exc):
                self.outcomes.storage_failed(exc, ir)
            elif is_lease_error(exc):  # our claim, not the input, failed
                self.outcomes.lease_lost(ir, exc)
            else:  # Blob Storage refused this one blob: quarantine it and go on with the others
                self.outcomes.quarantine(props, claim, ir, BlobError(
                    f"{name}: Blob Storage refused a request about this input or one of its outputs: "
                    f"{first_line(exc)}",
                    hint="This concerns this blob only; the other inputs went on. Fix what the message "
                    "names (often the blob's name or tags) and drop the file again.",
                    status=getattr(exc, "status_code", None), error_code=getattr(exc, "error_code", None)))
        elif isinstance(exc, (ResourceError, OSError, MemoryError)):
            resource = exc if isinstance(exc, ResourceError) else _as_resource_error(exc, name)
            if resource is None:
                self.outcomes.internal_failed(exc, claim, ir)
            else:
                self._resource_error = True
                ir.status = "left_pending"
                ir.error = resource.as_dict()
                claim.end_attempt(resource.code)
                log.error(str(resource), exc_info=exc, extra={"event": "input_resource_error", "blob": name,
                                                              "error": ir.error})
        else:  # a bug or an R crash: keep the input, count the attempt, go on
            self.outcomes.internal_failed(exc, claim, ir)

    # -- one input across container groups (scorer.batch.split) ------------------------------

    # -- where an input goes afterwards -------------------------------------------

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
                                                                       "error": first_line(exc)})
        doc = self.report.to_dict()
        try:
            self.store.put_json(s.reports_container, name, doc)
        except Exception as exc:  # storage is down: the report goes to the log's last line instead
            log.error("could not write the run report; it is in the run_finished line",
                      extra={"event": "report_failed", "error": first_line(exc)})
            self.outcomes.storage_error = True
            if self.report.exit_code == errors.EXIT_OK:
                self.report.exit_code = errors.EXIT_STORAGE
            return None
        page = f"{self.report.run_id}.html"
        try:  # the page people read; the JSON above is the record
            self.store.put_bytes(s.reports_container, page, render_page(doc).encode(),
                                 content_type="text/html; charset=utf-8")
        except Exception as exc:
            log.error("could not write the run report's page", extra={"event": "report_page_failed",
                                                                      "error": first_line(exc)})
            page = None
        log.info("report written", extra={"event": "report_written", "report": f"{s.reports_container}/{name}",
                                          "page": f"{s.reports_container}/{page}" if page else None})
        self._write_histories(doc)
        return f"{s.reports_container}/{name}"

    def _write_histories(self, doc: dict) -> None:
        """Each model this run scored: its history, page and the index (scorer.monitoring.runs.record).
        What people read, beside the record: never the run's failure."""
        if not self.models.models and not self.labels.changed:
            return
        t = time.monotonic()
        try:
            outcomes = {m: outcome_summary(self.store, self.settings.reports_container, m) for m in self.labels.changed}
            record_history(self.store, self.settings.reports_container, self.models.entries(doc), outcomes)
        except Exception as exc:
            log.error("could not write the models' histories", extra={"event": "history_failed",
                                                                     "error": first_line(exc)})
            return
        log.info("models' histories written", extra={
            "event": "history_written", "models": sorted(set(self.models.models) | self.labels.changed),
            "seconds": round(time.monotonic() - t, 3)})


def format_of_or_none(name: str) -> str | None:
    try:
        return format_of(name)
    except InputFormatError:
        return None


def _done(value: Any) -> Future:
    """A future that already holds ``value``."""
    f: Future = Future()
    f.set_result(value)
    return f


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
            f"ten blob index tags a blob may have, or tags too large ({first_line(exc)}).",
            hint="Remove at least one of the input's index tags (or copy it without tags) and drop it again: "
            "scorer keeps one tag of its own on a pending input, to count its attempts.",
            status=exc.status_code, error_code=exc.error_code)
    return BlobError(f"{name}: Blob Storage refused to read or write the input's index tags: {first_line(exc)}",
                     hint="Fix what the message names and drop the file again.",
                     status=exc.status_code, error_code=exc.error_code)


def _as_resource_error(exc: BaseException, name: str) -> ResourceError | None:
    """The ResourceError an OS or memory error stands for, or None for any other."""
    if isinstance(exc, MemoryError):
        return OutOfMemory(f"{name}: the job ran out of memory while working on this input ({first_line(exc)}).")
    if isinstance(exc, OSError) and (exc.errno == errno.ENOSPC or "No space left on device" in str(exc)):
        return OutOfDisk(f"{name}: the job ran out of disk space while working on this input "
                         f"(no space left on device: {first_line(exc)}).")
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

