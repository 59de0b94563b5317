"""``scorer.predict``: score a data frame in this Python process, with a published
model or a local .rds, through the same validation and bridge to R as the batch job.

    import scorer
    scored, rejected = scorer.predict("churn", df)            # the current version of a published model
    scored, rejected = scorer.predict("churn", df, version=2)
    scored, rejected = scorer.predict("model.rds", table)     # a model saved with saveRDS
    result, _ = scorer.predict("forecast", df)                # an R function: what score(df) returns

``df`` may be a pandas DataFrame (pandas is the optional extra ``scorer[pandas]``,
imported only when given one) or a pyarrow Table; both results are of the same type.
``scored`` holds the rows that could be scored, in order, with their prediction columns
(named as in blob outputs); ``rejected`` the others, with ``rejected_row`` (from 1),
``rejected_column``, ``rejected_value`` and ``rejected_reason`` before their columns.
A published R function gets the whole frame, once, as a file would: ``scored`` is the data
frame its score() returns, ``rejected`` empty.

R starts in this process on first use, on the calling thread, which must be the
process's main thread (scorer/r/bridge.py, "Threads"). Models are loaded once per process.
A published model's name needs the storage settings `scorer run` reads
(AZURE_STORAGE_CONNECTION_STRING, or SCORER_ACCOUNT_URL).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from scorer.data.frames import check_columns, function_frame, one_batch, prediction_names, prepare
from scorer.data.rejected import RejectedRows
from scorer.errors import ConfigError, InputFormatError
from scorer.online.rows import outcome
from scorer.r.pool import Answer
from scorer.r.predict import PredictSpec, predict_rows, seed_for

_loaded: dict[tuple, tuple[Any, PredictSpec, dict]] = {}
_registry: list[Any] = []


def _from_rds(path: Path) -> tuple[Any, PredictSpec]:
    from scorer.models.cards import Options, describe_model
    from scorer.r.bridge import bridge

    key = ("file", str(path.resolve()), path.stat().st_mtime_ns)
    if key not in _loaded:
        r = bridge()
        before = r.loaded_namespaces()
        model = r.read_model(path, str(path))
        fields, _ = describe_model(r, model, before, Options(), None)
        r.attach(fields["attach"])
        _loaded[key] = (model, PredictSpec.from_card(fields), dict(fields, kind="model"))
    return _loaded[key]


def _published(name: str, version: int | None) -> tuple[Any, PredictSpec]:
    from scorer.models.registry import Registry
    from scorer.settings import Settings
    from scorer.storage import Store, connect

    if not _registry:
        settings = Settings.from_env()
        _registry.append(Registry(Store(connect(settings), settings)))
    registry = _registry[0]
    card = registry.card(name, version)
    key = ("model", card["name"], int(card["version"]))
    if key not in _loaded:
        spec = PredictSpec.from_card(card)
        if spec.random:  # the same frame gets the same answer
            spec = dataclasses.replace(spec, seed=seed_for(f"{card['name']}/v{card['version']}"))
        _loaded[key] = (registry.load(card), spec, card)
    return _loaded[key]


def _table(frame: Any) -> tuple[pa.Table, bool]:
    if isinstance(frame, pa.Table):
        return frame, False
    if type(frame).__module__.startswith("pandas"):  # without importing pandas for an Arrow caller
        return pa.Table.from_pandas(frame, preserve_index=False), True
    raise ConfigError(f"scorer.predict: frame is a {type(frame).__name__}, not a pandas DataFrame or a pyarrow "
                      "Table.", hint="Pass a pandas DataFrame or a pyarrow Table.")


def predict(model: str | Path, frame: Any, version: int | None = None) -> tuple[Any, Any]:
    """Score ``frame`` with ``model``; see the module's docstring. Raises ScorerError:
    ModelNotFound, ModelLoadError, SchemaError (a missing or mistyped column),
    PredictError (R's predict() failed)."""
    from scorer.r.bridge import bridge

    is_file = isinstance(model, Path) or str(model).lower().endswith(".rds")
    if is_file and version is not None:
        raise ConfigError("scorer.predict: version is for published models, not a .rds file.",
                          hint="Leave version out, or give a published model's name.")
    if is_file and not Path(model).is_file():
        raise ConfigError(f"scorer.predict: {model}: no such file.", hint="Give the path of a model saved with saveRDS().")
    loaded, spec, card = _from_rds(Path(model)) if is_file else _published(str(model), version)
    table, as_pandas = _table(frame)
    where = f"scorer.predict({str(model)!r})"
    if table.num_rows == 0:
        raise InputFormatError(f"{where}: the frame has no rows.", hint="Pass at least one row.")
    r = bridge()
    if card.get("kind") == "function":  # the whole frame, once, through score(data, ...)
        whole = one_batch(table)
        prep = function_frame(whole, card.get("text_columns"), where)
        got, _ = r.call_score(loaded, prep.columns, whole.num_rows, card.get("params") or [], seed_for(where))
        result = pa.table([a for _, a in got], names=[n for n, _ in got])
        empty = _Collect().table(table.schema)
        return (result.to_pandas(), empty.to_pandas()) if as_pandas else (result, empty)
    check_columns(table.column_names, spec.schema, where)
    scored_parts: list[pa.Table] = []
    rejected = _Collect()
    names = None
    offset = 0
    # a model whose rows depend on each other (card's rowwise) gets the frame in one call, as R would
    for batch in table.combine_chunks().to_batches(max_chunksize=250_000 if spec.rowwise else None):
        prep = prepare(batch, spec.schema, where)
        answer = Answer(*predict_rows(r, loaded, prep, spec, Counter()), Counter()) if prep.n_kept else None
        done = outcome(prep, answer, lambda results: prediction_names(results, batch.schema.names))
        if done.rows:
            names = names or done.names
            kept = batch.take(pa.array([i - 1 for i in done.rows], pa.int64()))
            scored_parts.append(pa.Table.from_batches([pa.RecordBatch.from_arrays(
                list(kept.columns) + done.columns, names=kept.schema.names + names)]))
        rows = [x["row"] - 1 for x in done.rejected]
        rejected.writer.add(batch, rows, offset, [(x["row"] - 1, x["column"], x["value"], x["reason"])
                                                  for x in done.rejected])
        offset += batch.num_rows
    scored = pa.concat_tables(scored_parts) if scored_parts else table.schema.empty_table()
    bad = rejected.table(table.schema)
    return (scored.to_pandas(), bad.to_pandas()) if as_pandas else (scored, bad)


class _Collect:
    """RejectedRows into an Arrow table instead of a CSV blob."""

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []
        self.writer = RejectedRows(lambda: self)

    def write(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)

    def table(self, schema: pa.Schema) -> pa.Table:
        if self.batches:
            return pa.Table.from_batches(self.batches)
        fields = [pa.field("rejected_row", pa.int64())] + [pa.field(n, pa.string()) for n in RejectedRows.COLUMNS[1:]]
        return pa.schema(fields + list(schema)).empty_table()
