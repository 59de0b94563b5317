"""One input split across the run's container groups (SCORER_PARALLEL_JOBS), run over
Blob Storage: the job that claims a large input cuts it (scorer.batch.split plans the
byte ranges or row groups) and publishes the plan; every job of the run, the planner
too, claims parts one by one and scores each into its share of the output; the job that
finds every part done commits them as one output, under the plan's lease, and archives
the input, or quarantines it when a part failed.

    Job._take / Job._process       Parts.join(plan)
      plan_of / make_plan            _claim_part -> _score_part (each under its lease)
      await_plan                     _finish -> _commit_parts -> Job.commit, Job.archive

An input's outcomes (commit, archive, quarantine, the report's record) are the Job's own
(``self.job``), the same as for an input scored whole.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import uuid
from typing import Any

import numpy as np
from azure.core.exceptions import (HttpResponseError, ResourceExistsError, ResourceModifiedError,
                                   ResourceNotFoundError)

from scorer.batch import split
from scorer.batch.claims import Claim, LeaseLost, poison
from scorer.batch.stopping import check as check_stop
from scorer.batch.stream import Counts, score_stream
from scorer.data.formats import CsvOptions, OutputWriter, QuotingError, content_type, open_input, open_parquet_part
from scorer.data.rejected import REJECTED_SUFFIX, RejectedRows
from scorer.errors import InputError, Interrupted, ModelError, StorageError
from scorer.monitoring.report import InputReport
from scorer.storage import MAX_BLOB_NAME, MAX_BLOCKS, TRANSPORT_ERRORS, etag_of, is_outage, name_length

log = logging.getLogger("scorer.job")


class PartError(InputError):
    """The error a part of a split input recorded: the whole input is quarantined with
    its kind, message and what to do."""

    def __init__(self, error: dict):
        super().__init__(error.get("message", "a part of the input failed"), hint=error.get("what_to_do"))
        self._kind = error.get("kind", "InputError")

    @property
    def kind(self) -> str:
        return self._kind


class Parts:
    """The split inputs of one job's run (see the module's docstring)."""

    def __init__(self, job: Any) -> None:
        self.job = job  # scorer.batch.job.Job: its outcomes and report
        self.settings = job.settings
        self.store = job.store
        self.registry = job.registry

    def splittable(self, props: Any, fmt: str | None) -> bool:
        s = self.settings
        return (s.parallel_jobs > 1 and props.size > s.split_bytes and fmt is not None
                and split.not_splittable(fmt) is None
                and name_length(split.where(props.name)) + len("/rejected-00000") <= MAX_BLOB_NAME)

    def plan_of(self, props: Any) -> split.Plan | None:
        """The plan of this input (this exact input: same ETag), or None. A plan of an
        input since replaced is removed."""
        s = self.settings
        try:
            plan = split.Plan.from_json(self.store.get_json(s.output_container, f"{split.where(props.name)}/plan.json"))
        except ResourceNotFoundError:
            return None
        if plan.etag != etag_of(props):
            self.drop(props.name)
            return None
        return plan

    def await_plan(self, props: Any, seconds: float = 30.0) -> split.Plan | None:
        """Wait while the job holding the input writes its plan (a moment: a few small
        range reads); None once it is clear there will be none."""
        s = self.settings
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            check_stop()
            plan = self.plan_of(props)
            if plan is not None:
                return plan if plan.state != "whole" else None
            now_props = self.store.properties(s.input_container, props.name)
            if now_props is None or now_props.lease.state != "leased":
                return None
            time.sleep(0.5)
        return None

    def make_plan(self, props: Any, fmt: str, card: dict, ir: InputReport) -> split.Plan | None:
        """Cut the input into parts and publish the plan; None when it is not worth it."""
        s = self.settings
        name = props.name
        existing = self.plan_of(props)
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
            return self.plan_of(props)
        log.info(f"{name}: split into {len(plan.parts)} parts", extra={
            "event": "input_split", "blob": name, "parts": len(plan.parts)})
        ir.warnings.append(f"split into {len(plan.parts)} parts of about {s.split_bytes} bytes for the run's "
                           f"{s.parallel_jobs} container groups")
        return plan

    def join(self, plan: split.Plan, props: Any, ir: InputReport) -> None:
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
            self.job.outcomes.lease_lost(ir, exc)
        except (ResourceModifiedError, ResourceNotFoundError):  # replaced (or removed) under its parts
            self.drop(plan.input)
            ir.status = "left_pending"
            ir.warnings.append("the input was replaced while its parts were scored: its plan is dropped, and the "
                               "new file is scored from the start by the next claim")
            log.warning(f"{plan.input}: replaced while its parts were scored", extra={
                "event": "split_input_replaced", "blob": plan.input})
        except TRANSPORT_ERRORS + (StorageError, HttpResponseError) as exc:
            if is_outage(exc):
                self.job.outcomes.storage_failed(exc, ir)
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
                poisoned = poison(f"{plan.input} (part {k + 1} of {len(plan.parts)})", record)
                self._write_part(plan, k, claim, {"state": "failed", "error": poisoned.as_dict()})
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
        scoring = self.job.scoring
        where = f"{plan.input} (part {k + 1} of {len(plan.parts)})"
        t0 = time.monotonic()
        counts = Counts()
        sinks: list[Any] = []
        streams: list[Any] = []
        try:
            table, check = self._open_part(plan, k, card, where, streams)
            out, out_sink, rejected, rej_sink = self._part_writers(plan, k, sinks)
            tally = scoring.drift_tally(card, ir)
            score_stream(table, scoring.spec(card, plan.input), model, self.registry.r, out, rejected, where, counts,
                         on_first_scored=scoring.first_row, check_stop=check_stop, drift=tally,
                         workers=scoring.workers(card))
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
                "by": {"run_id": self.job.report.run_id, "host": self.job.report.host}, "seconds": seconds})
            ir.parts.append({"part": k + 1, "rows_read": counts.rows_read, "rows_scored": counts.rows_scored,
                             "rows_rejected": counts.rows_rejected, "seconds": seconds})
            scoring.r_warnings(ir, counts)
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

    def _open_part(self, plan: split.Plan, k: int, card: dict, where: str, streams: list) -> tuple[Any, Any]:
        """Part ``k`` of the input, opened for reading: (its table, the quote check of a
        CSV part, or None)."""
        s, part = self.settings, plan.parts[k]
        if plan.fmt == "parquet":
            source = split.RangeFile(self.store, s.input_container, plan.input, plan.size, plan.etag)
            table = open_parquet_part(source, list(range(*part["row_groups"])), where, s.batch_rows,
                                      s.max_input_bytes)
            streams.append(table)
            return table, None
        # by the plan's ETag: an input replaced while its parts are scored fails the
        # part (412) rather than mix the two files in one output (issue 26)
        raw = self.store.open_read(s.input_container, plan.input, offset=part["start"],
                                   length=part["end"] - part["start"], prefix=plan.header.encode("latin-1"),
                                   etag=plan.etag)
        check = split.QuoteCheck(raw)
        streams.append(check)
        options = dataclasses.replace(CsvOptions.of(s, plan.input, self.job.scoring.na_kept(card)),
                                      decimal=plan.decimal, delimiter=plan.delimiter)
        table = open_input(check, "csv", where, s.batch_rows, s.max_input_bytes, options)
        streams.append(table)
        return table, check

    def _part_writers(self, plan: split.Plan, k: int, sinks: list) -> tuple[OutputWriter, Any, RejectedRows, Any]:
        """Part ``k``'s output (a Parquet file of its own, or its share of the CSV output's
        blocks) and rejected rows, staged: (writer, sink, rejected rows, their sink)."""
        s = self.settings
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
            rejected.base = plan.parts[k]["first_row"]
        return out, out_sink, rejected, rej_sink

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
                self.job.outcomes.quarantine(props, input_claim, ir, PartError(error))
                self.drop(plan.input, keep_lease=plan_claim)
                return
            self._commit_parts(plan, props, card, records, ir)
            self.job.outcomes.archive(props, input_claim, ir)
            self.drop(plan.input, keep_lease=plan_claim)
        except (InputError, ModelError) as exc:  # the whole's own check (too many rejected rows, no rows)
            self.job.outcomes.quarantine(props, input_claim, ir, exc)
            self.drop(plan.input, keep_lease=plan_claim)
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
        self.job.scoring.check_counts(name, counts, firsts)
        output_before = self.store.submit(self.store.properties, s.output_container, name)
        rejected_before = self.store.submit(self.store.properties, s.output_container, name + REJECTED_SUFFIX)
        meta = self.job.outcomes.output_metadata(props, card, counts.rows_rejected)
        rejected = _rejected_of_parts(self.store, self.settings, plan, records, offsets)
        self._output_of_parts(plan, records, meta, rejected, output_before.result(), rejected_before.result())
        self._record_parts(plan, card, records, counts, rejected is not None, ir)

    def _output_of_parts(self, plan: split.Plan, records: list[dict], meta: dict, rejected: Any | None,
                         output_before: Any, rejected_before: Any) -> None:
        """Commit the parts' outputs as the input's one output: Parquet parts copied into
        one file; CSV parts' blocks committed after a header block, nothing copied."""
        s, name = self.settings, plan.input
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
            self.job.outcomes.commit(name, lambda seen: sink.commit(
                metadata=meta, content_type=content_type("parquet"), conditions=seen),
                output_before, rejected, meta, rejected_before)
        else:
            names = next(r["names"] for r in records if r["names"])
            sink = self.store.staged(s.output_container, name, prefix=f"h{plan.id:0<15.15}")
            sink.write(split.csv_header_bytes(names, plan.delimiter).decode().encode(s.csv_encoding, errors="replace"))
            blocks = sink.flush_blocks() + [b for r in records for b in r["blocks"]]
            self.job.outcomes.commit(name, lambda seen: sink.commit(
                metadata=meta, content_type=content_type("csv"), blocks=blocks, conditions=seen),
                output_before, rejected, meta, rejected_before)

    def _record_parts(self, plan: split.Plan, card: dict, records: list[dict], counts: Counts, rejected: bool,
                      ir: InputReport) -> None:
        """The committed input's record: its outputs, parts, drift and warnings."""
        s, name = self.settings, plan.input
        if rejected:
            ir.rejected_rows = f"{s.output_container}/{name}{REJECTED_SUFFIX}"
        ir.output = f"{s.output_container}/{name}"
        ir.csv = {"delimiter": plan.delimiter, "decimal": plan.decimal} if plan.fmt != "parquet" else None
        ir.parts = [{"part": k + 1, "rows_read": r["rows_read"], "rows_scored": r["rows_scored"],
                     "rows_rejected": r["rows_rejected"], "seconds": r["seconds"], "by": r["by"]}
                    for k, r in enumerate(records)]
        tally = self.job.scoring.drift_tally(card, ir)
        if tally is not None:
            for r in records:
                if r.get("drift"):
                    tally.absorb(r["drift"])
            self.job.scoring.drift(ir, tally)
        self.job.scoring.r_warnings(ir, counts)
        ir.status = "scored"
        log.info("input scored", extra={"event": "input_scored", "blob": name, "rows_scored": ir.rows_scored,
                                        "rows_rejected": ir.rows_rejected, "parts": len(records),
                                        "model": ir.model, "model_version": ir.model_version})

    def _read_or_empty(self, blob: str) -> bytes:
        try:
            return self.store.read_bytes(self.settings.output_container, blob)
        except ResourceNotFoundError:
            return b""

    def drop(self, name: str, keep_lease: Claim | None = None) -> None:
        """Remove a plan's blobs (its parts, their outputs and rejected rows; the plan last)."""
        s = self.settings
        folder = split.where(name)
        for b in self.store.list_names(s.output_container, prefix=f"{folder}/"):
            if b.name != f"{folder}/plan.json":
                self.store.delete(s.output_container, b.name)
        self.store.delete(s.output_container, f"{folder}/plan.json",
                          lease=keep_lease.lease if keep_lease is not None else None)


def _rejected_of_parts(store: Any, s: Any, plan: split.Plan, records: list[dict], offsets: Any) -> Any | None:
    """The parts' rejected rows as one file, staged (committed after the output, see
    Outcomes.commit), numbered as rows of the input; None when no row was rejected."""
    parts_rejected = [(k, store.read_bytes(s.output_container, plan.blob("rejected", k)))
                      for k, r in enumerate(records) if r["rejected"]]
    if not parts_rejected:
        return None
    rejected = store.staged(s.output_container, plan.input + REJECTED_SUFFIX)
    if plan.fmt == "parquet":  # numbered as the input's rows already: the files one after another
        for i, (_, data) in enumerate(parts_rejected):
            rejected.write(data if i == 0 else data[data.index(b"\n") + 1:])
    else:  # CSV parts numbered their rows from 1; every other column is text, read back as it was
        w = OutputWriter(rejected, "csv")
        for k, data in parts_rejected:
            for b in split.renumbered_rejects(data, int(offsets[k])).to_batches():
                w.write(b)
        w.close()
    return rejected
