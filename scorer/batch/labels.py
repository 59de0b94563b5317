"""Outcomes when they arrive: label files matched to the predictions already written.

A label file is dropped into ``labels/<model>/<any path>`` (CSV, .csv.gz or Parquet, as an
input), weeks after the predictions perhaps. Each run takes the pending ones after its
inputs (Job.run):

    Labels.run()                          every pending label file, one at a time
      claim it (a blob lease)             scorer.batch.claims.Claim
      read and check it                   read_labels: its keys and outcomes
      match it to the predictions         _match: each output of the model (and its shadow's)
      store the matched rows              reports/models/<model>/outcomes/<path>@<etag>.parquet
      archive it                          archive/_labels/<model>/<path>
    or refuse it, with a note             quarantine/_labels/<model>/<path> + .error.json

A row is matched by the id column the model was published with (``--id-column``): every
prediction of that id in ``output/<model>/`` is matched, however many runs ago (an id
scored each night is matched once per night, each in its own run's period). Without one, a
label file names the input (``input``: its path under the model, as dropped) and the row
(``row``: its data row number, from 1, as rejected rows are numbered). The outcome is the
column ``--outcome-column`` named (default ``outcome``).

Refused whole, with a note naming the file, row and column: a file without the id (or
input and row) or outcome column, and an outcome that is not a number (a numeric model) or
not a known class (a classifier). Refused row by row, counted and listed by id in the run
report: an id twice in the file (which label is right is unknown), an id labelled by an
earlier file (the first stands). Counted: ids with no prediction found (``unmatched``) and
rows without an outcome. Nothing is lost: the file itself is archived whole.

The stored rows are the source of the model's quality metrics: after the run's report,
``scorer.monitoring.runs.outcome_summary`` reads every stored file of each model whose
labels changed and sums them (scorer.monitoring.quality), and ``runs.record`` writes the
metrics into the model's history and page (Job._write_histories).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import re
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from azure.core.exceptions import HttpResponseError

from scorer.batch.claims import Claim
from scorer.batch.outcomes import ERROR_SUFFIX, ROWS_REJECTED, SOURCE_ETAG, Outcomes, first_line
from scorer.data.formats import CsvOptions, format_of, open_input
from scorer.data.rejected import REJECTED_SUFFIX
from scorer.errors import InputError, InputFormatError, ModelNotFound, SchemaError, ScorerError, StorageError
from scorer.log import now, redact_obj
from scorer.monitoring.quality import day_of
from scorer.monitoring.runs import OUTCOME_META, OUTCOMES
from scorer.settings import Settings
from scorer.storage import TRANSPORT_ERRORS, Store, etag_of, is_outage

log = logging.getLogger("scorer.labels")

#: archived and refused label files go under this prefix (no model name starts with "_")
PREFIX = "_labels/"
#: ids a report lists of each kind (duplicates, unmatched)
LISTED_IDS = 20
_INTEGRAL = re.compile(r"^([+-]?\d+)\.0*$")
_TRUE, _FALSE = {"1", "TRUE", "T", "true", "True"}, {"0", "FALSE", "F", "false", "False"}


@dataclass
class LabelRows:
    """A label file's rows: each row's key (the id, or input and row), its outcome as
    text (None: empty), its row number in the file."""

    keys: np.ndarray
    outcomes: np.ndarray
    rows: np.ndarray
    duplicates: list[str] = field(default_factory=list)


def key_text(values: pa.Array) -> np.ndarray:
    """Ids as text, the same however a file typed them: 00017 stays 00017, an integer read
    as a number (17, 17.0) is 17, spaces around are dropped."""
    text = pc.utf8_trim_whitespace(values.cast(pa.string())).to_pylist()
    out = np.empty(len(text), dtype=object)
    for i, t in enumerate(text):
        m = _INTEGRAL.match(t) if t else None
        out[i] = m.group(1) if m else t
    return out


def row_key(inputs: Any, rows: Any) -> np.ndarray:
    """The key of a row named by its input's path and its row number."""
    return np.array([f"{i}\x00{int(r)}" for i, r in zip(inputs, rows)], dtype=object)


def read_labels(table: pa.Table, spec: dict, where: str) -> LabelRows:
    """A label file's keys and outcomes. Raises SchemaError naming the missing column."""
    have = set(table.column_names)
    need = [spec["id_column"]] if spec.get("id_column") else ["input", "row"]
    need.append(spec.get("column") or "outcome")
    missing = [c for c in need if c not in have]
    if missing:
        how = (f"the id column {spec['id_column']!r}" if spec.get("id_column") else
               "the columns input (the input's path under the model, as dropped) and row (its data row number, "
               "from 1), since the model was published without --id-column")
        raise SchemaError(f"{where}: the label file has no column {', '.join(map(repr, missing))}; a label file "
                          f"needs {how} and the outcome column {need[-1]!r}. It has: "
                          f"{', '.join(map(repr, table.column_names[:20]))}.",
                          hint="Add the columns and drop the file again (its copy is kept here).", columns=missing)
    if spec.get("id_column"):
        keys = key_text(table.column(spec["id_column"]).combine_chunks())
    else:
        rows = _numbers(table.column("row").combine_chunks(), ".")
        bad = np.flatnonzero(np.isnan(rows) | (rows < 1) | (rows != np.floor(rows)))
        if bad.size:
            raise SchemaError(f"{where}: row {bad[0] + 1}: the column row holds "
                              f"{table.column('row')[int(bad[0])].as_py()!r}, not a data row number (1 or more).",
                              hint="Give each label the row number of its input row, from 1.", column="row")
        keys = row_key(pc.utf8_trim_whitespace(table.column("input").combine_chunks().cast(pa.string())).to_pylist(),
                       rows)
    outcome = table.column(need[-1]).combine_chunks()
    text = np.array(pc.utf8_trim_whitespace(outcome.cast(pa.string())).to_pylist(), dtype=object)
    text[[t == "" for t in text]] = None
    return LabelRows(keys=keys, outcomes=text, rows=np.arange(1, table.num_rows + 1))


def split_duplicates(labels: LabelRows, earlier: set[str]) -> LabelRows:
    """The rows whose key is once in the file and in no earlier label file; the others'
    keys in ``duplicates``."""
    uniq, counts = np.unique(labels.keys.astype(str), return_counts=True)
    twice = set(uniq[counts > 1].tolist())
    drop = np.array([k in twice or k in earlier for k in labels.keys], dtype=bool)
    dup = sorted(set(labels.keys[drop].tolist()))
    return LabelRows(keys=labels.keys[~drop], outcomes=labels.outcomes[~drop], rows=labels.rows[~drop],
                     duplicates=dup)


def parse_outcomes(text: np.ndarray, rows: np.ndarray, kind: str, classes: list[str] | None,
                   where: str, column: str, decimal: str = ".") -> np.ndarray:
    """The outcomes, checked: numbers (with the file's ``decimal`` mark, as the reader found
    it) for a numeric model; for a classifier its classes (two classes also take 1/0 and
    TRUE/FALSE, the second class being 1). None stays None. Raises SchemaError naming the
    first row that is neither."""
    present = np.array([t is not None for t in text], dtype=bool)
    if kind == "number":
        out = np.full(len(text), np.nan)
        for i in np.flatnonzero(present):
            try:
                out[i] = float(str(text[i]).replace(decimal, ".") if decimal != "." else text[i])
            except ValueError:
                raise SchemaError(f"{where}: row {rows[i]}, column {column!r}: {text[i]!r} is not a number, and the "
                                  "model predicts numbers.", hint="Fix the outcome and drop the file again.",
                                  column=column, row=int(rows[i])) from None
        return out
    known = list(classes or [])
    out = np.empty(len(text), dtype=object)
    for i, t in enumerate(text):
        if t is None or t in known:
            out[i] = t
        elif len(known) == 2 and t in _TRUE | _FALSE:
            out[i] = known[1] if t in _TRUE else known[0]
        else:
            raise SchemaError(f"{where}: row {rows[i]}, column {column!r}: {t!r} is not one of the model's classes "
                              f"({', '.join(map(repr, known[:20]))}"
                              + (", or 1/0, TRUE/FALSE for the second and first" if len(known) == 2 else "") + ").",
                              hint="Fix the outcome and drop the file again.", column=column, row=int(rows[i]))
    return out


def _numbers(values: pa.Array, decimal: str) -> np.ndarray:
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        return np.asarray(values.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
    out = np.full(len(values), np.nan)
    for i, t in enumerate(values.cast(pa.string()).to_pylist()):
        t = (t or "").strip()
        if t and t.upper() != "NA":
            try:
                out[i] = float(t.replace(decimal, ".") if decimal != "." else t)
            except ValueError:
                out[i] = np.nan
    return out


def output_column(names: list[str], raw: str) -> str | None:
    """Where the card's prediction column ``raw`` is in an output: prediction[_raw], with
    the _ an input column of that name added (the last such name is the prediction's)."""
    base = "prediction" if raw == "" else f"prediction_{raw}"
    found = None
    while base in names:
        found, base = base, base + "_"
    return found


def resolve(spec: dict, names: list[str], types: dict[str, pa.DataType]) -> dict | None:
    """The outcome spec with its columns as an output names them, or None when the output
    has none of them. A spec without a kind (an R function, a card from before outcomes)
    takes it from the output: a text ``prediction`` is a class, a number a number."""
    if spec.get("kind") is None:
        col = output_column(names, "")
        if col is None:
            return None
        text = pa.types.is_string(types[col]) or pa.types.is_dictionary(types[col])
        return dict(spec, kind="class" if text else "number", label=col if text else None,
                    score=None if text else col, columns={"label" if text else "score": col})
    cols: dict[str, Any] = {}
    if spec.get("label") is not None:
        cols["label"] = output_column(names, spec["label"])
    if spec.get("probabilities"):
        probs = {c: output_column(names, raw) for c, raw in spec["probabilities"].items()}
        if all(probs.values()):
            cols["probabilities"] = probs
    if spec["kind"] == "number":
        cols["score"] = output_column(names, spec["score"])
    if not any(v for v in cols.values()):
        return None
    return dict(spec, columns=cols)


def matched_table(spec: dict, outcome: np.ndarray, got: dict[str, list]) -> pa.Table:
    """The matched rows as stored: key, outcome, role, version, run, day, and the prediction
    as quality needs it (score; label; probabilities in the classes' order)."""
    cols: dict[str, Any] = {
        "key": pa.array(got["key"], pa.string()), "role": pa.array(got["role"], pa.string()),
        "version": pa.array(got["version"], pa.int32()), "run_id": pa.array(got["run_id"], pa.string()),
        "day": pa.array([day_of(r) for r in got["run_id"]], pa.string()), "output": pa.array(got["output"], pa.string())}
    if spec["kind"] == "number":
        cols["outcome_number"] = pa.array(outcome, pa.float64())
        cols["score"] = pa.array(got["score"], pa.float64())
    else:
        cols["outcome"] = pa.array(outcome.tolist(), pa.string())
        cols["label"] = pa.array(got["label"], pa.string())
        cols["probabilities"] = pa.array(got["probabilities"], pa.list_(pa.float64()))
    meta = {OUTCOME_META: json.dumps({"kind": spec["kind"], "classes": spec.get("classes")}).encode()}
    return pa.table(cols).replace_schema_metadata(meta)


class Labels:
    """The run's label files (``run``), each into ``report`` (a list of dicts)."""

    def __init__(self, settings: Settings, store: Store, registry: Any, outcomes: Outcomes, report: list[dict]):
        self.settings, self.store, self.registry, self.outcomes = settings, store, registry, outcomes
        self.report = report
        #: models whose stored outcomes changed in this run (their metrics are made again)
        self.changed: set[str] = set()
        #: each model's stored files' keys, read once per run (every label file checks them)
        self._keys: dict[str, dict[str, set[str]]] = {}

    def run(self, check_stop: Any = None) -> None:
        s = self.settings
        prefix = f"{s.model}/" if s.model else None
        for props in list(self.store.iter_names(s.labels_container, prefix)):
            if check_stop:
                check_stop()
            self.report.append(self._take(props))

    def _take(self, props: Any) -> dict:
        s, name = self.settings, props.name
        item: dict[str, Any] = {"blob": f"{s.labels_container}/{name}", "status": "left_pending", "started": now()}
        claim = Claim.take(self.store.blob(s.labels_container, name), s.lease_seconds)
        if claim is None:
            item.update(status="skipped", note="another run holds it")
            return item
        try:
            model, _, rest = name.partition("/")
            if not rest:
                raise InputFormatError(f"{s.labels_container}/{name}: a label file goes under its model's name, "
                                       f"{s.labels_container}/<model>/{name}.", hint="Move it there.")
            item["model"] = model
            self._one(props, model, claim, item)
        except InputError as exc:
            self._refuse(props, claim, item, exc)
        except ModelNotFound as exc:
            self._refuse(props, claim, item, InputError(str(exc), hint=exc.hint))
        except TRANSPORT_ERRORS + (StorageError, HttpResponseError) as exc:
            if is_outage(exc):
                raise  # the run stops as for an input (Job.run): the file stays for the next run
            item["error"] = {"kind": "StorageError", "message": first_line(exc)}
        except Exception as exc:  # a bug: say so, keep the file for the next run, go on
            item["error"] = {"kind": "InternalError", "message": f"{type(exc).__name__}: {first_line(exc)}"}
            log.error("labels failed", exc_info=exc, extra={"event": "labels_failed", "blob": item["blob"]})
        finally:
            claim.release()
            item["ended"] = now()
        return item

    def _one(self, props: Any, model: str, claim: Claim, item: dict) -> None:
        s, name = self.settings, props.name
        where = f"{s.labels_container}/{name}"
        card = self.registry.card(model)
        spec = dict(card.get("outcome") or {"id_column": None, "column": "outcome", "kind": None})
        item["id_column"], item["outcome_column"] = spec.get("id_column"), spec.get("column") or "outcome"
        table, decimal = self._read(props, where)
        every = read_labels(table, spec, where)
        stored = f"{OUTCOMES.format(model=model)}{name.split('/', 1)[1]}@{_short(etag_of(props))}.parquet"
        labels = split_duplicates(every, self._earlier_keys(model, stored))
        item.update(rows=table.num_rows, duplicates=len(labels.duplicates),
                    duplicate_ids=labels.duplicates[:LISTED_IDS], no_outcome=int(sum(o is None for o in labels.outcomes)))
        has = np.array([o is not None for o in labels.outcomes], dtype=bool)
        labels = LabelRows(labels.keys[has], labels.outcomes[has], labels.rows[has], labels.duplicates)
        got, spec = self._match(model, spec, labels, where)
        # every row's outcome is checked, those refused as duplicates too: a bad value refuses the file
        outcome = parse_outcomes(every.outcomes, every.rows, spec["kind"], spec.get("classes"), where,
                                 item["outcome_column"], decimal)[labels.rows - 1]
        at = {k: i for i, k in enumerate(labels.keys.tolist())}
        matched = {k for k in got["key"]}
        roles = Counter(got["role"])
        item.update(kind=spec["kind"], matched=len(matched), predictions_matched=roles["current"],
                    shadow_predictions_matched=roles["shadow"],
                    unmatched=len(labels.keys) - len(matched),
                    unmatched_ids=[k.replace("\x00", " row ") for k in labels.keys.tolist() if k not in matched]
                    [:LISTED_IDS])
        if got["key"]:
            rows = matched_table(spec, outcome[[at[k] for k in got["key"]]], got)
            sink = io.BytesIO()
            pq.write_table(rows, sink)
            self.store.put_bytes(s.reports_container, stored, sink.getvalue(),
                                 metadata={SOURCE_ETAG: etag_of(props), "scorer_kind": spec["kind"]})
            item["stored"] = f"{s.reports_container}/{stored}"
        try:
            self._archive(props, claim, item)
        except BaseException:
            # not archived (replaced under us, an outage, a stop): the file is taken again, and
            # its stored rows must not count it twice meanwhile. (A kill right here leaves them:
            # the same file taken again rewrites them, their name holding its ETag; a file
            # replaced in that gap finds its ids labelled already, refused and listed as such.)
            if got["key"]:
                try:
                    self.store.delete(s.reports_container, stored)
                except Exception:  # noqa: BLE001, S110 - the error being raised says more
                    pass
            raise
        if got["key"]:
            self.changed.add(model)
            self._keys[model][stored] = set(got["key"])

    def _read(self, props: Any, where: str) -> tuple[pa.Table, str]:
        """The label file whole, and its decimal mark (CSV: as found or set; Parquet: ".")."""
        s = self.settings
        format_of(props.name)  # a format it cannot read is refused before the size
        if props.size > s.max_input_bytes:
            raise InputFormatError(f"{where}: {props.size:,} bytes, more than SCORER_MAX_INPUT_BYTES "
                                   f"({s.max_input_bytes:,}).", hint="Split the label file.")
        with self._opened(s.labels_container, props, where) as table:
            batches = list(table.batches)
        if not batches:
            raise InputFormatError(f"{where}: the label file has a header and no rows.", hint="Drop labels with rows.")
        return pa.Table.from_batches(batches), table.decimal

    def _earlier_keys(self, model: str, stored: str) -> set[str]:
        """Keys earlier label files of ``model`` matched (its own earlier try, ``stored``, aside)."""
        if model not in self._keys:  # read at the model's first label file of the run; the run's own add theirs
            self._keys[model] = {}
            for b in self.store.list_names(self.settings.reports_container, OUTCOMES.format(model=model)):
                if b.name.endswith(".parquet"):
                    data = self.store.read_bytes(self.settings.reports_container, b.name)
                    self._keys[model][b.name] = set(
                        pq.read_table(io.BytesIO(data), columns=["key"]).column("key").to_pylist())
        return set().union(*(keys for name, keys in self._keys[model].items() if name != stored))

    def _match(self, model: str, spec: dict, labels: LabelRows, where: str) -> tuple[dict, dict]:
        """Every prediction of a labelled key: the current version's outputs, then the
        shadow's. Returns the matched rows (columns as lists) and the spec resolved."""
        s = self.settings
        got: dict[str, list] = {k: [] for k in ("key", "role", "version", "run_id", "output", "score", "label",
                                                 "probabilities")}
        wanted = pa.array(sorted(set(labels.keys.tolist())), pa.string())
        resolved = None
        for role, container in (("current", s.output_container), ("shadow", s.shadow_container)):
            for blob in self._outputs(container, model, spec, labels):
                r = self._match_output(container, blob, spec, wanted, role, got)
                resolved = resolved or r
        if resolved is None:
            if spec.get("kind") is None:
                raise SchemaError(f"{where}: no output of {model} has a prediction column to match the labels to.",
                                  hint="Drop the labels once predictions are in output/.")
            resolved = spec
        return got, resolved

    def _outputs(self, container: str, model: str, spec: dict, labels: LabelRows) -> list[Any]:
        if spec.get("id_column"):
            return [b for b in self.store.iter_names(container, f"{model}/", metadata=True)
                    if not b.name.endswith(REJECTED_SUFFIX) and "/_parts/" not in b.name and _scored(b.name)]
        if container == self.settings.shadow_container:  # the shadow's rows are not numbered: ids only
            return []
        inputs = sorted({k.split("\x00", 1)[0] for k in labels.keys.tolist()})
        found = [self.store.properties(container, f"{model}/{i}") for i in inputs]
        return [b for b in found if b is not None]

    def _match_output(self, container: str, blob: Any, spec: dict, wanted: pa.Array, role: str,
                      got: dict[str, list]) -> dict | None:
        meta = blob.metadata or {}
        rel = blob.name.split("/", 1)[1]
        row_numbers = None if spec.get("id_column") else self._row_numbers(container, blob)
        with self._opened(container, blob, f"{container}/{blob.name}") as table:
            resolved, seen = None, 0
            for batch in table.batches:
                if resolved is None:
                    resolved = resolve(spec, batch.schema.names, dict(zip(batch.schema.names,
                                                                            batch.schema.types)))
                    if resolved is None or (spec.get("id_column") and
                                            spec["id_column"] not in batch.schema.names):
                        return None  # not this model's predictions as the card says, or no ids
                keys = (pa.array(key_text(batch.column(spec["id_column"])).tolist(), pa.string())
                        if spec.get("id_column") else
                        pa.array(row_key([rel] * batch.num_rows, row_numbers[seen: seen + batch.num_rows]),
                                 pa.string()))
                seen += batch.num_rows
                hit = pc.is_in(keys, value_set=wanted)
                if not pc.any(hit).as_py():
                    continue
                picked = batch.filter(hit)
                _collect(got, resolved, picked, keys.filter(hit), table.decimal, role, meta, blob.name)
        return resolved

    @contextlib.contextmanager
    def _opened(self, container: str, blob: Any, where: str) -> Iterator[Any]:
        """The blob (this version of it: its ETag) downloaded and opened as an input is
        (scorer.data.formats.open_input), closed after."""
        s = self.settings
        fmt = format_of(blob.name)
        with tempfile.TemporaryDirectory(prefix="scorer-labels-") as tmp:
            path = Path(tmp) / "blob"
            self.store.download_to(container, blob.name, path, etag=etag_of(blob))
            with open(path, "rb") as f:
                table = open_input(path if fmt == "parquet" else f, fmt, where, s.batch_rows, s.max_input_bytes,
                                   CsvOptions.of(s, blob.name))
                try:
                    yield table
                finally:
                    table.close()

    def _row_numbers(self, container: str, blob: Any) -> "RowNumbers":
        """Each output row's data row number in its input: the input's rows, the rejected
        ones (output/<name>.rejected.csv) taken out."""
        rejected: list[int] = []
        if int((blob.metadata or {}).get(ROWS_REJECTED, "0") or 0):
            data = self.store.read_bytes(container, blob.name + REJECTED_SUFFIX)
            table = open_input(io.BytesIO(data), "csv", blob.name + REJECTED_SUFFIX, self.settings.batch_rows,
                               self.settings.max_input_bytes, CsvOptions())
            try:
                for batch in table.batches:
                    rejected += [int(x) for x in batch.column("rejected_row").to_pylist()]
            finally:
                table.close()
        return RowNumbers(rejected)

    def _archive(self, props: Any, claim: Claim, item: dict) -> None:
        s = self.settings
        etag = etag_of(props)
        dst = self.outcomes.destination(s.archive_container, PREFIX + props.name, etag)
        self.store.copy(s.labels_container, props.name, s.archive_container, dst, source_etag=etag,
                        metadata={SOURCE_ETAG: etag, "scorer_run_id": self.outcomes.report.run_id})
        claim.delete_input(etag)
        item.update(status="matched", archived_to=f"{s.archive_container}/{dst}")
        log.info("labels matched", extra={"event": "labels_matched", "blob": item["blob"],
                                          "matched": item.get("matched"), "unmatched": item.get("unmatched"),
                                          "duplicates": item.get("duplicates")})

    def _refuse(self, props: Any, claim: Claim, item: dict, exc: ScorerError) -> None:
        s = self.settings
        etag = etag_of(props)
        item.update(status="refused", error=exc.as_dict())
        log.warning(str(exc), extra={"event": "labels_refused", "blob": item["blob"], "error": item["error"]})
        try:
            dst = self.outcomes.destination(s.quarantine_container, PREFIX + props.name, etag, room=len(ERROR_SUFFIX))
            note = {"labels": item["blob"], "refused_at": now(), "run_id": self.outcomes.report.run_id, **item["error"]}
            self.store.put_json(s.quarantine_container, dst + ERROR_SUFFIX, redact_obj(note))
            self.store.copy(s.labels_container, props.name, s.quarantine_container, dst, source_etag=etag,
                            metadata={SOURCE_ETAG: etag, "scorer_error": exc.kind})
            claim.delete_input(etag)
            item["quarantined_to"] = f"{s.quarantine_container}/{dst}"
        except Exception as e:  # noqa: BLE001 - the file stays in labels/ for the next run
            item.update(status="left_pending", error=dict(item["error"], quarantine_failed=first_line(e)))


class RowNumbers:
    """Each output row's data row number in its input (from 1), ``rejected`` (the rejected
    rows' numbers) taken out: ``numbers[start:stop]`` for output rows start..stop-1."""

    def __init__(self, rejected: list[int]):
        r = np.sort(np.asarray(rejected, dtype=np.int64))
        # before output row k stand k kept rows: a rejected row r_i comes before it when the
        # kept rows before r_i (r_i - 1 - i) are at most k
        self._kept_before = r - np.arange(len(r))

    def __getitem__(self, s: slice) -> np.ndarray:
        k = np.arange(s.start, s.stop, dtype=np.int64)
        return k + 1 + np.searchsorted(self._kept_before, k + 1, side="right")


def _scored(name: str) -> bool:
    try:
        format_of(name)
        return True
    except InputError:
        return False


def _short(etag: str) -> str:
    return hashlib.sha256(etag.strip('"').encode()).hexdigest()[:12]


def _collect(got: dict[str, list], spec: dict, batch: pa.RecordBatch, keys: pa.Array, decimal: str, role: str,
             meta: dict, output: str) -> None:
    """One output batch's matched rows, into ``got`` (see Labels._match)."""
    n = batch.num_rows
    cols = spec["columns"]
    got["key"] += keys.to_pylist()
    got["role"] += [role] * n
    got["version"] += [int(meta.get("scorer_model_version") or 0)] * n
    got["run_id"] += [meta.get("scorer_run_id") or "00000000"] * n
    got["output"] += [output] * n
    got["score"] += (_numbers(batch.column(cols["score"]), decimal).tolist()
                     if cols.get("score") else [None] * n)
    got["label"] += (batch.column(cols["label"]).cast(pa.string()).to_pylist() if cols.get("label") else [None] * n)
    probs = cols.get("probabilities")
    if probs and spec["kind"] == "class":
        classes = spec["classes"]
        if len(probs) == 1 and len(classes) == 2:  # one number: the second class's probability
            p = _numbers(batch.column(probs[classes[1]]), decimal)
            matrix = np.column_stack([1 - p, p])
        else:
            matrix = np.column_stack([_numbers(batch.column(probs[c]), decimal) for c in classes])
        got["probabilities"] += [list(map(float, r)) for r in matrix]
    else:
        got["probabilities"] += [None] * n
