"""A challenger in the shadow: an input scored again by the model's shadow version, beside
the current one, and the two compared row by row.

After the current version's output is committed (scorer.batch.scoring.Scoring.shadow), the
input is read again and each batch goes to both versions: the current one again (so that
the two answers are row by row on the same rows: the current version's committed output is
never read back or touched) and the shadow. The shadow's predictions, beside the input's
columns, go to ``shadow/<model>/<path>``; the comparison, on the rows both scored:

- per prediction column the two share (same name): for numbers, the mean and the largest
  absolute difference; for classes (text), the share of rows whose value changes;
- per column, the PSI between the two versions' predictions: numbers in the deciles of the
  current version's predictions in the input's first batch (right-closed, as drift's bins),
  classes by value; a bin for missing values.

Pure but for the predict() calls (``predict``: scorer.r.predict.predict_rows with R bound).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scorer.data.formats import InputTable
from scorer.data.frames import prediction_names, prepare
from scorer.monitoring.drift import psi
from scorer.r.predict import PredictSpec


@dataclass
class Column:
    """One prediction column's comparison so far."""

    numeric: bool
    rows: int = 0
    abs_sum: float = 0.0
    abs_max: float = 0.0
    changed: int = 0
    edges: np.ndarray | None = None
    current: Counter = field(default_factory=Counter)  # bin (or value) -> rows, the current version's
    shadow: Counter = field(default_factory=Counter)

    def add(self, a: pa.Array, b: pa.Array) -> None:
        self.rows += len(a)
        if self.numeric:
            x = np.asarray(pc.cast(a, pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
            y = np.asarray(pc.cast(b, pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
            both = ~np.isnan(x) & ~np.isnan(y)
            d = np.abs(x[both] - y[both])
            self.abs_sum += float(d.sum())
            self.abs_max = max(self.abs_max, float(d.max()) if d.size else 0.0)
            self.changed += int((np.isnan(x) != np.isnan(y)).sum())
            if self.edges is None:
                finite = x[np.isfinite(x)]
                self.edges = np.unique(np.quantile(finite, [i / 10 for i in range(1, 10)])) if finite.size else \
                    np.array([], dtype=float)
            for counts, v in ((self.current, x), (self.shadow, y)):
                missing = np.isnan(v)
                bins = np.searchsorted(self.edges, v[~missing], side="left")  # (e[i-1], e[i]] -> i
                counts.update(Counter(bins.tolist()))
                counts["missing"] += int(missing.sum())
        else:
            xs, ys = a.cast(pa.string()).to_pylist(), b.cast(pa.string()).to_pylist()
            self.changed += sum(1 for u, v in zip(xs, ys) if u != v)
            self.current.update("missing" if v is None else v for v in xs)
            self.shadow.update("missing" if v is None else v for v in ys)

    def result(self) -> dict:
        keys = sorted(set(self.current) | set(self.shadow), key=str)
        rows = max(self.rows, 1)
        out: dict[str, Any] = {"rows": self.rows, "changed_share": self.changed / rows,
                               "psi": psi([self.current[k] / rows for k in keys], [self.shadow[k] / rows for k in keys])}
        if self.numeric:
            out.update(mean_abs_diff=self.abs_sum / rows, max_abs_diff=self.abs_max)
        return out


@dataclass
class Comparison:
    """The shadow's predictions against the current version's, on the rows both scored."""

    columns: dict[str, Column] = field(default_factory=dict)
    rows_read: int = 0
    rows_compared: int = 0
    #: rows the shadow refused or rejected that the current version scored, and the reverse
    rows_only_current: int = 0
    rows_only_shadow: int = 0
    warnings: Counter = field(default_factory=Counter)

    def result(self) -> dict:
        return {"rows_read": self.rows_read, "rows_compared": self.rows_compared,
                "rows_only_current": self.rows_only_current, "rows_only_shadow": self.rows_only_shadow,
                "columns": {n: c.result() for n, c in self.columns.items()},
                "r_warnings": [m for m, _ in self.warnings.most_common()]}


def _kept(prep: Any, dropped: np.ndarray | None) -> np.ndarray:
    """The batch's rows that got a prediction: kept by the check, not refused by R."""
    keep = prep.keep.copy()
    if dropped is not None:
        kept_rows = np.flatnonzero(keep)
        keep[kept_rows[dropped]] = False
    return keep


def shadow_stream(table: InputTable, current: tuple[PredictSpec, Any], shadow: tuple[PredictSpec, Any],
                  predict: Callable, out: Any, where: str, check_stop: Callable[[], None] | None = None) -> Comparison:
    """Every batch of ``table`` through both versions; the shadow's rows and predictions to
    ``out``; returns the comparison. Raises what scoring raises (the caller reports it)."""
    comparison = Comparison()
    names_out: list[str] | None = None
    for batch in table.batches:
        if check_stop:
            check_stop()
        comparison.rows_read += batch.num_rows
        if not batch.num_rows:
            continue
        answers = []
        for spec, model in (current, shadow):
            prep = prepare(batch, spec.schema, where, table.decimal)
            warned: Counter = Counter()
            results, dropped, _ = predict(model, prep, spec, warned) if prep.n_kept else ([], None, None)
            answers.append((_kept(prep, dropped), results))
            if spec is shadow[0]:
                comparison.warnings.update(warned)
        (keep_c, res_c), (keep_s, res_s) = answers
        if keep_s.any():
            if names_out is None:
                names_out = prediction_names(res_s, batch.schema.names)
            scored = batch.filter(pa.array(keep_s)) if not keep_s.all() else batch
            out.write(pa.RecordBatch.from_arrays(list(scored.columns) + [a for _, a in res_s],
                                                 names=scored.schema.names + names_out))
        both = keep_c & keep_s
        comparison.rows_compared += int(both.sum())
        comparison.rows_only_current += int((keep_c & ~keep_s).sum())
        comparison.rows_only_shadow += int((keep_s & ~keep_c).sum())
        if not both.any():
            continue
        at_c = pa.array((np.cumsum(keep_c) - 1)[both])  # positions among each version's results
        at_s = pa.array((np.cumsum(keep_s) - 1)[both])
        theirs = dict(res_s)
        for name, a in res_c:
            if name not in theirs:
                continue
            b = theirs[name]
            numeric = all(pa.types.is_integer(x.type) or pa.types.is_floating(x.type) for x in (a, b))
            column = comparison.columns.setdefault(name or "prediction", Column(numeric=numeric))
            column.add(a.take(at_c), b.take(at_s))
    return comparison
