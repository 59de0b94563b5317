"""One batch's predict() call, and what R refuses in it.

``predict_rows`` calls the model's predict() (through the bridge ``r``: the job's own R,
or a worker's, scorer.r.pool) on a prepared batch with the card's arguments
(PredictSpec). When R refuses the batch, the rows it refuses are found (halving the batch
for a model whose rows are predicted alike alone or together; else the rows with a
missing value) and returned as dropped, with R's reason, so that the others are scored.
Pure but for the call into R; no blobs, no files.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from scorer.data.frames import NA_INTEGER, Field, Prepared, RColumn
from scorer.errors import PredictError


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
    #: whether several inputs' or requests' rows may go to R in one call: rowwise as tested
    #: at publish (a card from before that test says nothing: never), and not random
    gather: bool = False

    @classmethod
    def from_card(cls, card: dict) -> "PredictSpec":
        schema = card.get("input_schema")
        return cls(schema=[Field.from_card(f) for f in schema] if schema else None,
                   predict_type=card.get("predict_type"), args=card.get("predict_args") or [],
                   output_columns=card.get("output_columns"), rowwise=card.get("rowwise", True),
                   random=card.get("random", False),
                   gather=bool(card.get("rowwise", True) and card.get("rowwise_checked") and not card.get("random")))


def select_outputs(results: list[tuple[str, Any]], wanted: list[str] | None) -> list[tuple[str, Any]]:
    """The named columns of a predict() result, in the order asked for (all of
    them when ``wanted`` is None). Raises PredictError naming what is missing."""
    if not wanted:
        return results
    by_name = {n: a for n, a in results}
    missing = [w for w in wanted if w not in by_name]
    if missing:
        raise PredictError(f"predict() returned no column(s) {', '.join(map(repr, missing))}; it returned "
                           f"{', '.join(repr(n) for n in by_name) or 'one unnamed vector'}.",
                           hint="Publish again with --output-columns naming columns the result has.")
    return [(w, by_name[w]) for w in wanted]


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
        which = [k for k, m in masks.items() if m.any()]
        if incomplete.all():
            # R's message may be about something else (a level a formula's factor() never saw)
            raise PredictError(
                f"{exc} Every row also has a missing value, in column(s) {', '.join(map(repr, which))}, which this "
                "model's predict() may not accept.",
                hint="Read R's message first; if it is about missing values, fill them before scoring.",
            ) from None
        complete = ~incomplete
        cols = {k: c.take(complete) for k, c in prep.columns.items()}
        results = call(cols, int(complete.sum()))
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


def merge(preps: list[Prepared]) -> Prepared:
    """The kept rows of several prepared batches (or requests) of one layout, as one."""
    if len(preps) == 1:
        return preps[0]
    columns = {}
    for name, first in preps[0].columns.items():
        parts = [p.columns[name].values for p in preps]
        values = [v for part in parts for v in part] if first.kind == "character" else np.concatenate(parts)
        columns[name] = RColumn(first.kind, values, first.levels, first.ordered, first.tz)
    n = sum(p.n_kept for p in preps)
    return Prepared(columns=columns, keep=np.ones(n, dtype=bool))


def seed_for(name: str) -> int:
    """R's random seed for scoring the input ``name``: the same on every rerun and in
    every container (so a function that simulates, such as prophet's intervals, writes
    the same output twice), different between files."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "big") & 0x7FFFFFFF
