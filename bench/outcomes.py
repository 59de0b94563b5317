"""What matching labels to predictions costs (docs/monitoring.md, "Outcomes").

A glm (binomial) published with --id-column; N inputs of R rows scored in one run; then a
label file of L ids, matched by a run that has nothing else to do (scorer.batch.labels:
every output of the model read, the matched rows stored, the metrics per day made again).
Against it, taking turns in the same process, the least any join must do: list the
model's outputs, download each, read its id and prediction columns with pyarrow and keep
the labelled rows (no checks, nothing stored). Prints seconds and the ratio.

    .venv/bin/python bench/outcomes.py                   # 300 outputs of 500 rows, 20,000 labels
    .venv/bin/python bench/outcomes.py --inputs 50 --rows 100 --labels 2000 --repeat 1
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import CLEAN_ENV, Azurite  # noqa: E402  (the tests' real Azurite launcher)


def rows_csv(n: int, seed: int, first_id: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["id", "x1", "x2"])
    for k in range(n):
        w.writerow([f"u{first_id + k}", f"{rng.normal(10, 2):.5f}", f"{rng.uniform():.5f}"])
    return out.getvalue().encode()


def fit(work: Path) -> Path:
    code = ("set.seed(1); d <- data.frame(x1 = rnorm(2000, 10, 2), x2 = runif(2000)); "
            "d$y <- as.integer(runif(2000) < plogis(-4 + 0.35 * d$x1 + d$x2)); "
            "saveRDS(glm(y ~ x1 + x2, binomial, d), commandArgs(TRUE)[1])")
    model = work / "glm.rds"
    subprocess.run(["Rscript", "-e", code, str(model)], check=True, env=CLEAN_ENV, capture_output=True)
    return model


def least_join(store, settings, model: str, labels: dict[str, int]) -> int:
    """Every output of ``model`` downloaded and read, its labelled rows kept: the work any
    join of labels to predictions must do. Returns the rows matched."""
    wanted = pa.array(sorted(labels), pa.string())
    matched = 0
    for b in store.list_names(settings.output_container, f"{model}/"):
        if b.name.endswith(".rejected.csv"):
            continue
        t = pacsv.read_csv(io.BytesIO(store.read_bytes(settings.output_container, b.name)),
                           convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()},
                                                                include_columns=["id", "prediction"]))
        matched += int(pc.sum(pc.is_in(t.column("id"), value_set=wanted)).as_py() or 0)
    return matched


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=300)
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--labels", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ.update({k: v for k, v in CLEAN_ENV.items() if k.startswith("R_")})
    from scorer.batch.job import Job
    from scorer.models.cards import Options
    from scorer.models.registry import Registry
    from scorer.monitoring.runs import OUTCOMES
    from scorer.r import bridge
    from scorer.settings import Settings
    from scorer.storage import Store, connect

    bridge.start()
    logging.getLogger("scorer").setLevel(logging.ERROR)  # the runs' drift warnings are not the bench's output
    with tempfile.TemporaryDirectory(prefix="scorer-bench-outcomes-") as tmp:
        work = Path(tmp)
        az = Azurite(work / "azurite", in_memory=True)
        az.start()
        try:
            settings = Settings(connection_string=az.connection_string)
            store = Store(connect(settings), settings)
            store.ensure_containers()
            Registry(store).publish(fit(work), "churn", Options(id_column="id"))
            for i in range(args.inputs):
                store.put_bytes(settings.input_container, f"churn/in-{i:04d}.csv",
                                rows_csv(args.rows, i, i * args.rows))
            t = time.monotonic()
            assert Job(settings, store).run().exit_code == 0
            scoring = time.monotonic() - t
            rng = np.random.default_rng(3)
            ids = rng.choice(args.inputs * args.rows, size=min(args.labels, args.inputs * args.rows), replace=False)
            labels = {f"u{k}": int(rng.uniform() < 0.3) for k in ids}
            body = "id,outcome\n" + "".join(f"{k},{v}\n" for k, v in labels.items())
            times: dict[str, list[float]] = {"scorer": [], "least": []}
            for turn in range(args.repeat):
                for who in (("scorer", "least") if turn % 2 == 0 else ("least", "scorer")):
                    if who == "scorer":
                        for b in store.list_names(settings.reports_container, OUTCOMES.format(model="churn")):
                            store.delete(settings.reports_container, b.name)  # each turn matches them afresh
                        store.put_bytes(settings.labels_container, f"churn/labels-{turn}.csv", body.encode())
                        t = time.monotonic()
                        report = Job(dataclasses.replace(settings), store).run()
                        times[who].append(time.monotonic() - t)
                        (item,) = report.labels
                        assert item["status"] == "matched" and item["matched"] == len(labels), item
                    else:
                        t = time.monotonic()
                        assert least_join(store, settings, "churn", labels) == len(labels)
                        times[who].append(time.monotonic() - t)
            store.close()
        finally:
            az.stop()
    a, b = statistics.median(times["scorer"]), statistics.median(times["least"])
    load = os.getloadavg()[0]
    print(f"{args.inputs} outputs of {args.rows} rows (scored in {scoring:.1f} s), {len(labels):,} labels; "
          f"load {load:.1f}")
    print(f"  scorer run matching the labels (whole run): {a:.2f} s  {[round(x, 2) for x in times['scorer']]}")
    print(f"  least join (download and read every output): {b:.2f} s  {[round(x, 2) for x in times['least']]}")
    print(f"  ratio {a / b:.2f}; {1000 * a / args.inputs:.1f} ms per output read")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
