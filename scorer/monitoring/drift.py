"""Drift without labels: a profile of the training data taken at publish, and how far
each scored input is from it, as the population stability index (PSI).

Pure code on Arrow and NumPy (scoring.profile_reference runs the model on the
reference rows at publish).

    observe_batch / observe_predictions   a batch's columns as observations
    ReferenceBuilder                      all of the reference's observations -> a profile
    Tally                                 an input's observations, in the profile's bins -> drift

The bins (docs/monitoring.md says the same for users):

- a number, Date or date-time: the reference's decile edges (duplicates dropped),
  bins right-closed ``(-inf, e1], (e1, e2], ..., (e_k, inf)``, then a bin for missing
  values (a value that does not parse counts as missing);
- a factor, text or logical: the reference's 50 most frequent values, one bin
  pooling every other value (new levels land there), then the missing bin.

Shares are over all rows, the missing bin included. With ``e`` the reference's
share of a bin and ``a`` the input's, each raised to at least ``PSI_FLOOR``::

    PSI = sum over bins of (a - e) * ln(a / e)

0.1 is commonly read as a moderate shift and 0.2 as a significant one
(SCORER_DRIFT_PSI, default 0.2, flags a variable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from scorer.data.frames import NA_INTEGER, Prepared

PROFILE_FORMAT = 1
PSI_FLOOR = 1e-4
TOP_LEVELS = 50
#: levels kept to tell a new level from a rare one (beyond it, new levels are not named)
KNOWN_LEVELS = 1000
#: new levels an input's drift entry names, at most
SHOW_NEW = 20
#: fewer rows than this get PSI values but no flag: with ten bins, a handful of rows
#: moves a share by whole tenths, and PSI would flag noise (a 24-row file flagged 0.5)
MIN_ROWS_TO_FLAG = 100
DECILES = [i / 10 for i in range(1, 10)]


@dataclass
class Observation:
    """One column of one batch. ``numeric``: ``values`` (float64, NaN = missing);
    ``categorical``: ``counts`` per value and the number of missing values."""

    kind: str
    rows: int
    values: np.ndarray | None = None
    counts: dict[str, int] = field(default_factory=dict)
    missing: int = 0
    r_class: str | None = None


def _categorical(arr: pa.Array, r_class: str | None = None) -> Observation:
    vc = pc.value_counts(arr)
    values = vc.field("values")
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        # a factor read as numbers (codes 1-4): its distinct values as text, not every row's
        values = values.cast(pa.string())
    counts = {}
    for v, n in zip(values.to_pylist(), vc.field("counts").to_pylist()):
        if v is not None:
            counts[v] = n
    return Observation("categorical", len(arr), counts=counts, missing=arr.null_count, r_class=r_class)


def _numeric(values: np.ndarray, r_class: str | None = None) -> Observation:
    # ``missing`` is left for the reference builder to count: the live tally gets it
    # from the same pass that bins the values
    return Observation("numeric", len(values), values=np.asarray(values, dtype=np.float64), r_class=r_class)


def observe_batch(batch: pa.RecordBatch, prep: Prepared) -> dict[str, Observation]:
    """The batch's input variables, over all its rows. Numbers, dates and date-times
    come from the values sent to R (one that did not parse counts as missing); a
    factor's or text's from the file as written, so levels the model never saw are
    counted too."""
    out = {}
    for name, col in prep.all_rows.items():
        if col.kind in ("numeric", "date", "posixct"):
            out[name] = _numeric(col.values, {"date": "Date", "posixct": "POSIXct"}.get(col.kind))
        elif col.kind == "logical":
            codes = col.values
            na = codes == NA_INTEGER
            counts = {"TRUE": int((codes == 1).sum()), "FALSE": int((codes == 0).sum())}
            out[name] = Observation("categorical", len(codes), counts={k: v for k, v in counts.items() if v},
                                    missing=int(na.sum()), r_class="logical")
        else:  # factor, character
            out[name] = _categorical(batch.column(batch.schema.get_field_index(name)), col.kind)
    return out


def observe_predictions(results: list[tuple[str, pa.Array]]) -> dict[str, Observation]:
    """A predict() result's columns, keyed ``prediction`` or ``prediction_<name>``
    (before the suffix an output adds where an input column has the name)."""
    out = {}
    for n, arr in results:
        key = "prediction" if n == "" else f"prediction_{n}"
        t = arr.type
        if pa.types.is_floating(t) or pa.types.is_integer(t):
            out[key] = _numeric(pc.fill_null(arr.cast(pa.float64()), float("nan")).to_numpy(zero_copy_only=False))
        elif pa.types.is_date(t):
            days = arr.cast(pa.int32()).cast(pa.float64())
            out[key] = _numeric(pc.fill_null(days, float("nan")).to_numpy(zero_copy_only=False), "Date")
        elif pa.types.is_timestamp(t):
            secs = arr.cast(pa.timestamp("us", tz=t.tz)).cast(pa.int64()).cast(pa.float64())
            out[key] = _numeric(pc.fill_null(secs, float("nan")).to_numpy(zero_copy_only=False) / 1e6, "POSIXct")
        elif pa.types.is_duration(t):
            continue  # a difftime result: rare, and no share of one means much
        else:
            out[key] = _categorical(arr)
    return out


# -- the reference ------------------------------------------------------------------------

class _Column:
    """Everything seen of one column, to be binned once the whole reference is in."""

    def __init__(self, kind: str, r_class: str | None):
        self.kind = kind
        self.r_class = r_class
        self.rows = 0
        self.missing = 0
        self.parts: list[np.ndarray] = []
        self.counts: dict[str, int] = {}

    def add(self, ob: Observation) -> None:
        self.rows += ob.rows
        if ob.kind == "numeric":
            present = ~np.isnan(ob.values)
            self.missing += ob.rows - int(present.sum())
            self.parts.append(ob.values[present])
        else:
            self.missing += ob.missing
            for k, v in ob.counts.items():
                self.counts[k] = self.counts.get(k, 0) + v

    def profile(self) -> dict:
        rows = max(self.rows, 1)
        if self.kind == "numeric":
            values = np.concatenate(self.parts) if self.parts else np.zeros(0)
            edges = np.unique(np.quantile(values, DECILES)) if len(values) else np.zeros(0)
            counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
            return {"kind": "numeric", "r_class": self.r_class, "rows": self.rows, "edges": edges.tolist(),
                    "shares": (counts / rows).tolist(), "missing": self.missing / rows,
                    "min": float(values.min()) if len(values) else None,
                    "max": float(values.max()) if len(values) else None}
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        top = ranked[:TOP_LEVELS]
        other = sum(n for _, n in ranked[TOP_LEVELS:])
        return {"kind": "categorical", "r_class": self.r_class, "rows": self.rows,
                "levels": [k for k, _ in top], "shares": [n / rows for _, n in top], "other": other / rows,
                "missing": self.missing / rows,
                # every level, to tell a new one from a rare one (None when there are too many)
                "known_levels": sorted(self.counts) if len(self.counts) <= KNOWN_LEVELS else None}


class ReferenceBuilder:
    """Collects the reference's observations batch by batch; ``profile()`` bins them."""

    def __init__(self) -> None:
        self.features: dict[str, _Column] = {}
        self.predictions: dict[str, _Column] = {}

    @staticmethod
    def _add(into: dict[str, _Column], obs: dict[str, Observation]) -> None:
        for name, ob in obs.items():
            into.setdefault(name, _Column(ob.kind, ob.r_class)).add(ob)

    def add_features(self, obs: dict[str, Observation]) -> None:
        self._add(self.features, obs)

    def add_predictions(self, obs: dict[str, Observation]) -> None:
        self._add(self.predictions, obs)

    def profile(self, source: str, sampled_for_predictions: int | None = None) -> dict:
        return {"format": PROFILE_FORMAT, "source": source,
                "rows": max((c.rows for c in self.features.values()), default=0),
                "prediction_rows": max((c.rows for c in self.predictions.values()), default=0),
                "prediction_sample": sampled_for_predictions,
                "features": {n: c.profile() for n, c in self.features.items()},
                "predictions": {n: c.profile() for n, c in self.predictions.items()}}


# -- an input against the reference ------------------------------------------------------

def psi(expected: list[float], actual: list[float]) -> float:
    """The population stability index of two share vectors over the same bins."""
    total = 0.0
    for e, a in zip(expected, actual):
        e, a = max(e, PSI_FLOOR), max(a, PSI_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


class _Bins:
    """One profiled column's bins, counting an input's observations into them."""

    def __init__(self, ref: dict):
        self.ref = ref
        self.rows = 0
        if ref["kind"] == "numeric":
            # +inf closes the last value bin; NaN is not <= anything, so what is left is missing
            self.edges = np.append(np.asarray(ref["edges"], dtype=np.float64), np.inf)
            self.counts = np.zeros(len(self.edges) + 1, dtype=np.int64)  # value bins, then missing
        else:
            self.index = {lv: i for i, lv in enumerate(ref["levels"])}
            self.known = set(ref["known_levels"]) if ref.get("known_levels") is not None else None
            self.counts = np.zeros(len(ref["levels"]) + 2, dtype=np.int64)  # levels, other, missing
            self.seen: set[str] = set()
            self.new: dict[str, int] = {}

    def add(self, ob: Observation) -> None:
        self.rows += ob.rows
        if self.ref["kind"] == "numeric":
            if ob.kind != "numeric":  # text where the reference had numbers: none of it is a number
                self.counts[-1] += ob.rows
                return
            # one comparison pass per edge (ten at most) beats searchsorted's binary search
            # fourfold here: cumulative counts of values <= each edge, then their steps
            v = ob.values
            upto = np.fromiter((np.count_nonzero(v <= e) for e in self.edges), np.int64, len(self.edges))
            self.counts[:-1] += np.diff(upto, prepend=0)
            self.counts[-1] += len(v) - upto[-1]
            return
        if ob.kind != "categorical":
            self.counts[-2] += ob.rows - ob.missing
            self.counts[-1] += ob.missing
            return
        for value, n in ob.counts.items():
            self.seen.add(value)
            i = self.index.get(value)
            if i is None:
                self.counts[-2] += n
                if self.known is not None and value not in self.known:
                    self.new[value] = self.new.get(value, 0) + n
            else:
                self.counts[i] += n
        self.counts[-1] += ob.missing

    def state(self) -> dict:
        """The counts so far, as JSON, for a part of a split input (merged by ``absorb``)."""
        out = {"rows": self.rows, "counts": self.counts.tolist()}
        if self.ref["kind"] != "numeric":
            out.update(seen=sorted(self.seen), new=self.new)
        return out

    def absorb(self, state: dict) -> None:
        self.rows += state["rows"]
        self.counts += np.asarray(state["counts"], dtype=np.int64)
        if self.ref["kind"] != "numeric":
            self.seen.update(state["seen"])
            for k, v in state["new"].items():
                self.new[k] = self.new.get(k, 0) + v

    def result(self) -> dict:
        ref = self.ref
        rows = max(self.rows, 1)
        now = (self.counts / rows).tolist()
        if ref["kind"] == "numeric":
            before = list(ref["shares"]) + [ref["missing"]]
            out = {"kind": "numeric", "r_class": ref.get("r_class"), "edges": ref["edges"]}
        else:
            before = list(ref["shares"]) + [ref["other"], ref["missing"]]
            out = {"kind": "categorical", "r_class": ref.get("r_class"), "levels": ref["levels"]}
            out["new_levels"] = [k for k, _ in sorted(self.new.items(), key=lambda kv: (-kv[1], kv[0]))][:SHOW_NEW]
            out["new_levels_rows"] = int(sum(self.new.values()))
            out["absent_levels"] = [lv for lv, s in zip(ref["levels"], ref["shares"]) if s > 0 and lv not in self.seen]
        out.update({"psi": psi(before, now), "rows": self.rows, "missing": now[-1], "reference_missing": before[-1],
                    "reference": before, "current": now})
        return out


class Tally:
    """An input's drift against a profile: features counted on the reader's thread,
    predictions on the writer's (each side touched by one thread only)."""

    def __init__(self, profile: dict, threshold: float, where: str | None = None):
        self.profile = profile
        self.threshold = threshold
        self.where = where
        self.features = {n: _Bins(p) for n, p in profile["features"].items()}
        self.predictions = {n: _Bins(p) for n, p in profile["predictions"].items()}

    def add_features(self, obs: dict[str, Observation]) -> None:
        for name, bins in self.features.items():
            ob = obs.get(name)
            if ob is not None:
                bins.add(ob)

    def add_predictions(self, obs: dict[str, Observation]) -> None:
        for name, bins in self.predictions.items():
            ob = obs.get(name)
            if ob is not None:
                bins.add(ob)

    def state(self) -> dict:
        """Every bin's counts so far, as JSON (a part of a split input records it)."""
        return {"features": {n: b.state() for n, b in self.features.items()},
                "predictions": {n: b.state() for n, b in self.predictions.items()}}

    def absorb(self, state: dict) -> None:
        """Add the counts of another part of the same input."""
        for side, bins in (("features", self.features), ("predictions", self.predictions)):
            for n, st in state[side].items():
                if n in bins:
                    bins[n].absorb(st)

    def result(self) -> dict:
        """The input's ``drift`` entry (README: inputs[i].drift)."""
        features = {n: b.result() if b.rows else {"absent": True} for n, b in self.features.items()}
        predictions = {n: b.result() for n, b in self.predictions.items() if b.rows}
        rows = max((b.rows for b in self.features.values()), default=0)
        flagged = [n for n, d in list(features.items()) + list(predictions.items())
                   if not d.get("absent") and d["psi"] >= self.threshold] if rows >= MIN_ROWS_TO_FLAG else []
        flagged.sort(key=lambda n: -(features.get(n) or predictions.get(n))["psi"])
        out = {"computed": True, "threshold": self.threshold, "flagged": flagged,
               "profile": self.where, "reference_rows": self.profile.get("rows"),
               "features": features, "predictions": predictions}
        if rows < MIN_ROWS_TO_FLAG:
            out["note"] = (f"only {rows} rows: PSI is too noisy to flag anything below {MIN_ROWS_TO_FLAG} rows "
                           "(the values are still given)")
        return out


def not_computed(reason: str) -> dict:
    return {"computed": False, "reason": reason}
