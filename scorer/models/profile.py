"""The drift profile made at publish: the model's inputs on the reference rows, and its
predictions on a seeded sample of them (monitoring.drift does the counting)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from scorer.data.frames import prepare
from scorer.monitoring.drift import ReferenceBuilder, observe_batch, observe_predictions
from scorer.r.predict import PredictSpec, predict_rows


#: the most reference rows predict() is run on at publish (a seeded sample beyond it)
PREDICTION_SAMPLE = 100_000


def profile_reference(table: pa.Table, spec: PredictSpec, model: Any, r: Any, source: str,
                      decimal: str = ".", batch_rows: int = 250_000) -> tuple[dict, list[str]]:
    """The drift profile of ``table`` (the reference rows, at publish): the model's
    input variables on every row, its predictions on at most PREDICTION_SAMPLE rows
    (a uniform sample, seeded, so that publishing again gives the same profile).
    Returns the profile and notes for the publisher."""
    builder = ReferenceBuilder()
    rejected = 0
    for batch in table.to_batches(max_chunksize=batch_rows):
        prep = prepare(batch, spec.schema, source, decimal)
        rejected += batch.num_rows - prep.n_kept
        builder.add_features(observe_batch(batch, prep))
    notes = []
    if rejected:
        notes.append(f"{rejected} of the reference's {table.num_rows} rows do not fit the model's input schema: "
                     "their unreadable values count as missing in the profile, and they have no predictions.")
    sample = None
    if table.num_rows > PREDICTION_SAMPLE:
        rows = np.sort(np.random.default_rng(0).choice(table.num_rows, PREDICTION_SAMPLE, replace=False))
        table, sample = table.take(pa.array(rows)), PREDICTION_SAMPLE
    warned: Counter = Counter()
    for batch in table.to_batches(max_chunksize=batch_rows):
        prep = prepare(batch, spec.schema, source, decimal)
        if prep.n_kept:
            results, _, _ = predict_rows(r, model, prep, spec, warned)
            builder.add_predictions(observe_predictions(results))
    return builder.profile(source, sample), notes
