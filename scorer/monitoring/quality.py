"""A model's quality once outcomes arrive: predictions matched to their labels
(scorer.batch.labels) summed into metrics per period. Pure: NumPy arrays in, dicts out.

A matched row is one prediction (a row of an output, scored in some run) and the outcome a
label file gave for it. Its period is the day, or the ISO week, of the run that made the
prediction (the run id starts with its UTC start). Each period's metrics are over the rows
scored in it, per role: the current version's predictions (``current``) and the shadow's
(``shadow``) on the same rows, side by side.

For numbers (``kind: number``): n, RMSE, MAE, and bias (the mean of prediction minus
outcome: above 0, the model predicts too high).

For classes (``kind: class``): n and accuracy (the predicted class, or the most probable
one, against the outcome); with probabilities also log loss (minus the mean natural log of
the probability given to the outcome, clipped to [1e-15, 1 - 1e-15] as scikit-learn does)
and AUC (two classes: the probability that a random positive is scored above a random
negative, ties counting half, which is the Mann-Whitney statistic; more classes: each class
against the rest, averaged, scikit-learn's ``multi_class="ovr", average="macro"``). A
metric that cannot be computed on a period's rows (AUC with one class present) is None.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pyarrow as pa

CLIP = 1e-15


def day_of(run_id: str) -> str:
    """The UTC day a run started, from its id (20261207T224206851Z-c6e124 -> 2026-12-07)."""
    return f"{run_id[0:4]}-{run_id[4:6]}-{run_id[6:8]}"


def week_of(day: str) -> str:
    """The ISO week of a day (2026-12-07 -> 2026-W50)."""
    y, w, _ = date.fromisoformat(day).isocalendar()
    return f"{y}-W{w:02d}"


def number_metrics(score: np.ndarray, outcome: np.ndarray) -> dict:
    """RMSE, MAE and bias of predicted numbers against outcomes (rows with either missing
    are left out and counted)."""
    score, outcome = np.asarray(score, dtype=float), np.asarray(outcome, dtype=float)
    ok = ~np.isnan(score) & ~np.isnan(outcome)
    d = score[ok] - outcome[ok]
    n = int(ok.sum())
    return {"n": n, "missing_prediction": int((~ok).sum()),
            "rmse": float(np.sqrt(np.mean(d * d))) if n else None,
            "mae": float(np.mean(np.abs(d))) if n else None,
            "bias": float(np.mean(d)) if n else None}


def auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """The probability that a random positive row scores above a random negative one, ties
    counting half: the Mann-Whitney U over the two groups' sizes, from the scores' ranks
    (average ranks for ties). None without both groups."""
    score = np.asarray(score, dtype=float)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=float)
    s = score[order]
    # average ranks (1-based) of tied runs
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def class_metrics(outcome: np.ndarray, classes: list[str], predicted: np.ndarray | None,
                  probabilities: np.ndarray | None) -> dict:
    """Accuracy, and with ``probabilities`` (rows x classes, in ``classes``' order) log loss
    and AUC. ``outcome`` holds each row's class as text; ``predicted`` the class the model
    predicted (None: the most probable one). Rows with no prediction are left out and counted."""
    if predicted is None and probabilities is None:
        return {"n": 0, "missing_prediction": len(outcome), "accuracy": None, "log_loss": None, "auc": None}
    index = {c: i for i, c in enumerate(classes)}
    enc = pa.array(np.asarray(outcome, dtype=object), type=pa.string()).dictionary_encode()
    lookup = np.array([index.get(v, -1) for v in enc.dictionary.to_pylist()] + [-1], dtype=int)
    truth = lookup[enc.indices.fill_null(len(lookup) - 1).to_numpy(zero_copy_only=False)]
    ok = truth >= 0
    if probabilities is not None:
        probabilities = np.asarray(probabilities, dtype=float).reshape(len(outcome), len(classes))
        ok &= ~np.isnan(probabilities).any(axis=1)
    if predicted is not None:
        ok &= np.array([p is not None for p in predicted], dtype=bool)
    n = int(ok.sum())
    out: dict[str, Any] = {"n": n, "missing_prediction": int((~ok).sum())}
    if not n:
        return dict(out, accuracy=None, log_loss=None, auc=None)
    t = truth[ok]
    if predicted is not None:
        said = pa.array(np.asarray(predicted, dtype=object)[ok], type=pa.string()).dictionary_encode()
        known = np.array([index.get(v, -2) for v in said.dictionary.to_pylist()] + [-2], dtype=int)
        guess = known[said.indices.fill_null(len(known) - 1).to_numpy(zero_copy_only=False)]
    else:
        guess = np.argmax(probabilities[ok], axis=1)  # the first class wins a tie, as R's which.max does
    out["accuracy"] = float(np.mean(guess == t))
    if probabilities is None:
        return dict(out, log_loss=None, auc=None)
    p = probabilities[ok]
    out["log_loss"] = float(-np.mean(np.log(np.clip(p[np.arange(n), t], CLIP, 1 - CLIP))))
    if len(classes) == 2:
        out["auc"] = auc(p[:, 1], t == 1)
    else:
        each = [auc(p[:, k], t == k) for k in range(len(classes))]
        out["auc"] = float(np.mean(each)) if all(a is not None for a in each) else None
    return out


def metrics(kind: str, rows: dict[str, np.ndarray], classes: list[str] | None) -> dict:
    """One group's metrics from its matched rows (the columns scorer.batch.labels stores)."""
    if kind == "number":
        return number_metrics(rows["score"], rows["outcome_number"])
    labels = rows.get("label")
    if labels is not None and all(v is None for v in labels):
        labels = None
    return class_metrics(rows["outcome"], classes or [], labels, rows.get("probabilities"))


#: the columns the metrics read (scorer.batch.labels stores a few more)
METRIC_COLUMNS = ("outcome", "outcome_number", "score", "label", "probabilities")


def _codes(values: Any) -> tuple[list[str], np.ndarray]:
    """Text values as (the distinct ones sorted, each value's index among them)."""
    enc = pa.array(values, type=pa.string()).dictionary_encode()
    names = enc.dictionary.to_pylist()
    order = np.argsort(np.array(names, dtype=object), kind="stable")
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    return [names[i] for i in order], rank[enc.indices.to_numpy(zero_copy_only=False)]


def by_period(kind: str, classes: list[str] | None, rows: dict[str, np.ndarray]) -> dict:
    """Every period's metrics, per role: {"by_day": [...], "by_week": [...]}, each item
    {period, role, versions, n, <metrics>}, oldest first, current before shadow. Rows are
    grouped by one sort of integer codes, not a pass per period: a year of days over a
    million rows took 4.1 s here with the test suite running beside it (13.6 s before)."""
    days, day_at = _codes(rows["day"])
    weeks, week_of_day = _codes([week_of(d) for d in days])  # a date parsed once per day
    shadow = np.asarray(rows["role"]) == "shadow"
    versions = np.asarray(rows["version"], dtype=np.int64)
    columns = {k: rows[k] for k in METRIC_COLUMNS if rows.get(k) is not None}
    out: dict[str, list] = {}
    for key, names, at in (("by_day", days, day_at), ("by_week", weeks, week_of_day[day_at])):
        group = at * 2 + shadow  # current before shadow within a period
        order = np.argsort(group, kind="stable")
        bounds = np.searchsorted(group[order], np.arange(2 * len(names) + 1))
        items = []
        for g in range(2 * len(names)):
            pick = order[bounds[g]:bounds[g + 1]]
            if not len(pick):
                continue
            items.append({"period": names[g // 2], "role": "shadow" if g % 2 else "current",
                          "versions": np.unique(versions[pick]).tolist(),
                          **metrics(kind, {k: v[pick] for k, v in columns.items()}, classes)})
        out[key] = items
    return out
