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
    outcome = np.asarray(outcome, dtype=object)
    index = {c: i for i, c in enumerate(classes)}
    truth = np.array([index.get(v, -1) for v in outcome], dtype=int)
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
        guess = np.array([index.get(p, -2) for p in np.asarray(predicted, dtype=object)[ok]], dtype=int)
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


def by_period(kind: str, classes: list[str] | None, rows: dict[str, np.ndarray]) -> dict:
    """Every period's metrics, per role: {"by_day": [...], "by_week": [...]}, each item
    {period, role, versions, n, <metrics>}, oldest first, current before shadow."""
    out: dict[str, list] = {}
    days = rows["day"]
    for key, periods in (("by_day", days), ("by_week", np.array([week_of(d) for d in days], dtype=object))):
        items = []
        for period in sorted(set(periods.tolist())):
            for role in ("current", "shadow"):
                pick = (periods == period) & (rows["role"] == role)
                if not pick.any():
                    continue
                group = {k: (v[pick] if v is not None else None) for k, v in rows.items()}
                items.append({"period": period, "role": role,
                              "versions": sorted({int(v) for v in rows["version"][pick]}),
                              **metrics(kind, group, classes)})
        out[key] = items
    return out
