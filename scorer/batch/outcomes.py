"""Where an input ends, and the fences that keep it whole: its output (and rejected rows)
committed only over what was seen at its claim; the input archived after its copy is
written, or quarantined beside a note that says why and what to do; or left pending for
the next run (its claim lost, storage down, a bug), with the attempt recorded. Shared by
an input scored whole (scorer.batch.job) and one scored in parts (scorer.batch.parts).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

from azure.core.exceptions import (HttpResponseError, ResourceExistsError, ResourceModifiedError,
                                   ResourceNotFoundError)

from scorer.batch.claims import Claim, LeaseLost
from scorer.data.rejected import REJECTED_SUFFIX
from scorer.errors import ScorerError, StorageError
from scorer.log import now, redact_obj
from scorer.monitoring.report import InputReport, RunReport
from scorer.settings import Settings
from scorer.storage import (FENCE_ERRORS, MAX_BLOB_NAME, TRANSPORT_ERRORS, Store, as_seen, etag_of, is_outage,
                            name_length)

log = logging.getLogger("scorer.job")

ERROR_SUFFIX = ".error.json"
SOURCE_ETAG = "scorer_source_etag"
ROWS_REJECTED = "scorer_rows_rejected"


class Outcomes:
    """One run's outcomes of inputs, and what they say about the run (its flags)."""

    def __init__(self, settings: Settings, store: Store, report: RunReport) -> None:
        self.settings, self.store, self.report = settings, store, report
        self.internal_error = False
        self.storage_error = False
        self.blob_error = False  # an input Blob Storage refused, that could not even be quarantined
        # put before the extension of an archived or quarantined copy whose name is taken
        self.stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")

    def commit(self, name: str, commit_output: Callable[[dict], Any], output_before: Any,
               rejected: Any | None, meta: dict, rejected_before: Any) -> None:
        """Commit an input's output, then its rejected rows (``rejected``: their staged
        blob, or None when no row was rejected: a file left by an earlier version of the
        input is deleted). The output comes first: a kill between them leaves an output
        whose metadata counts rejected rows that are not there, which the next run scores
        again (``already_committed``); never rejected rows without their output.

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

    def already_committed(self, props: Any, claim: Claim, ir: InputReport, done: Any, rejected: Any) -> bool:
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

    def output_metadata(self, props: Any, card: dict, rows_rejected: int | None) -> dict:
        """An output's metadata: the input's ETag (a rerun after a crash between commit and
        archive finds it scored), the run, the model version that scored it, and how many
        rows were rejected (a rerun finds whether its rejected rows were committed too)."""
        return {SOURCE_ETAG: etag_of(props), "scorer_run_id": self.report.run_id,
                "scorer_model": card["name"], "scorer_model_version": str(card["version"]),
                ROWS_REJECTED: str(rows_rejected or 0)}

    def destination(self, container: str, name: str, etag: str, room: int = 0) -> str:
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
        chosen = str(path.with_name(f"{stem}.{self.stamp}{dot}{exts}")) if taken else name
        if name_length(chosen) + room <= MAX_BLOB_NAME:
            return chosen
        model = name.split("/", 1)[0]
        short = f"{model}/_long-names/{hashlib.sha256(name.encode()).hexdigest()[:32]}"
        return f"{short}.{self.stamp}{dot}{exts}" if chosen != name else f"{short}{dot}{exts}"

    def archive(self, props: Any, claim: Claim, ir: InputReport) -> None:
        s = self.settings
        meta = {SOURCE_ETAG: etag_of(props), "scorer_run_id": self.report.run_id}
        dst = props.name
        try:  # a name not archived before, the usual case: one request instead of a read and a copy
            self._copy_input(props, s.archive_container, dst, metadata=meta, new=True)
        except ResourceExistsError:
            dst = self.destination(s.archive_container, props.name, etag_of(props))
            self._copy_input(props, s.archive_container, dst, metadata=meta)
        claim.delete_input(etag_of(props))
        ir.archived_to = f"{s.archive_container}/{dst}"
        log.info("input archived", extra={"event": "input_archived", "blob": props.name, "to": ir.archived_to})

    def _copy_input(self, props: Any, container: str, dst: str, metadata: dict, new: bool = False) -> None:
        """Copy this version of the input (its ETag) to ``container``/``dst`` (with ``new``,
        only onto no blob: else ResourceExistsError). Raises LeaseLost when it is gone or
        replaced: another job finished it while this one was paused or cut off past its
        lease (issue 26), which is not the input's fault."""
        try:
            self.store.copy(self.settings.input_container, props.name, container, dst, metadata=metadata,
                            source_etag=etag_of(props), new=new)
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
            dst = self.destination(s.quarantine_container, props.name, etag_of(props), room=len(ERROR_SUFFIX))
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
            ir.error = dict(ir.error, quarantine_failed=first_line(e))
            log.warning("claim lost while quarantining", extra={"event": "lease_lost", "blob": props.name})
        except TRANSPORT_ERRORS + (StorageError, HttpResponseError) as e:
            if is_outage(e):
                self.storage_failed(e, ir)
            else:  # this blob cannot even be set aside: say so, leave it, and go on
                self.blob_error = True
                ir.error = dict(ir.error, quarantine_failed=first_line(e))
                log.error("could not quarantine the input", extra={"event": "quarantine_failed", "blob": props.name,
                                                                   "error": first_line(e)})
            ir.status = "left_pending"

    def lease_lost(self, ir: InputReport, exc: BaseException) -> None:
        ir.status = "left_pending"
        ir.error = {"kind": "LeaseLost", "message": f"{ir.blob}: the claim (lease) on this input was lost "
                    f"({first_line(exc)}).",
                    "what_to_do": "Nothing: the input stays in input/; the next run scores it, or archives it "
                                  "without scoring again when its output was already committed."}
        log.warning(ir.error["message"], extra={"event": "lease_lost", "blob": ir.blob})

    def internal_failed(self, exc: BaseException, claim: Claim, ir: InputReport) -> None:
        self.internal_error = True
        ir.status = "left_pending"
        ir.error = {"kind": type(exc).__name__, "message": f"internal error: {exc}",
                    "what_to_do": "The input stays in input/ and is retried; after SCORER_MAX_ATTEMPTS it is "
                                  "quarantined. Please report this with the run report."}
        claim.end_attempt("internal")
        log.error("internal error", exc_info=True, extra={"event": "input_internal_error", "blob": ir.blob})

    def storage_failed(self, exc: Exception, ir: InputReport | None) -> None:
        self.storage_error = True
        err = exc.as_dict() if isinstance(exc, ScorerError) else {
            "kind": "StorageError", "message": f"Blob Storage failed: {first_line(exc)}",
            "what_to_do": StorageError.hint}
        if ir is not None:
            ir.status = "left_pending"
            ir.error = err
        else:
            self.report.error = err
        log.error(err["message"], extra={"event": "storage_error", "blob": ir.blob if ir else None})


def first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__
