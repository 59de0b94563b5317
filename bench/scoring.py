"""Benchmark: scorer end to end through Blob Storage against plain R and naive rpy2.

    .venv/bin/python bench/scoring.py            # 1M rows glm, wide model, ranger; about 5 minutes
    .venv/bin/python bench/scoring.py --big      # also 10M rows: memory and drift-profile figures
    .venv/bin/python bench/scoring.py --rows 200000 --repeat 1   # quick look

Every figure is measured in the same run, on the same generated data (fixed seeds),
with (a), (b) and (c) taking turns:
  (a) scorer: `python -m scorer run` as a process, input blob to output blob through
      Azurite (download, validate, predict in embedded R, upload, commit, archive,
      report), process start to exit. Azurite keeps its blobs in memory here: it
      runs on the same two cores as the job, and in Azure the storage service
      takes none of the job's CPU, so the emulator's own work should weigh least;
  (b) plain R: `Rscript` with data.table (fread, predict, fwrite) on local files;
  (c) naive rpy2: pandas read_csv, pandas2ri conversion of the whole frame, predict,
      pandas to_csv (bench/naive_rpy2.py).
It prints wall-clock medians, the ratios (a)/(b) and (c)/(a), peak memory (max RSS)
of the job, cold start (process start to first row scored, from the job's log), and
(a) with a drift profile against (a) without, on the glm rows (and 10M with --big).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from conftest import CLEAN_ENV, Azurite  # noqa: E402  (the tests' real Azurite launcher)

R_FIT = r"""
args <- commandArgs(trailingOnly = TRUE)
kind <- args[[1]]; train <- args[[2]]; out <- args[[3]]
suppressMessages(library(data.table))
d <- fread(train)
if (kind == "glm") {
  d[, rank := factor(rank)]
  m <- glm(admit ~ gre + gpa + rank, family = binomial, data = d)
} else if (kind == "wide") {
  for (j in grep("^f", names(d), value = TRUE)) set(d, j = j, value = factor(d[[j]]))
  m <- glm(y ~ ., family = binomial, data = d)
} else {
  suppressMessages(library(ranger))
  d[, rank := factor(rank)]
  d[, admit := factor(admit)]
  m <- ranger(admit ~ gre + gpa + rank, data = d, num.trees = 50, probability = TRUE, seed = 1,
              respect.unordered.factors = "order")
}
m$data <- NULL; m$model <- NULL  # keep the saved model small, as a careful user would
saveRDS(m, out)
"""

R_PLAIN = r"""
args <- commandArgs(trailingOnly = TRUE)
suppressMessages(library(data.table))
m <- readRDS(args[[1]])
if (inherits(m, "ranger")) suppressMessages(library(ranger))  # only what the model needs
d <- fread(args[[2]], colClasses = list(character = strsplit(args[[4]], ",")[[1]]))
for (j in strsplit(args[[4]], ",")[[1]]) if (j != "") set(d, j = j, value = factor(d[[j]]))
p <- predict(m, d, type = args[[5]])
if (inherits(p, "ranger.prediction")) p <- p$predictions
if (is.matrix(p)) d[, paste0("prediction_", colnames(p)) := as.data.table(p)] else d[, prediction := p]
fwrite(d, args[[3]])
"""


def gen_glm(n: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    gre = rng.integers(220, 801, n).astype(np.float64)
    gpa = np.round(rng.uniform(2.2, 4.0, n), 2)
    rank = rng.integers(1, 5, n)
    eta = -3.99 + 0.00226 * gre + 0.804 * gpa - np.array([0, 0, 0.675, 1.34, 1.55])[rank]
    admit = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(np.int64)
    return pa.table({"admit": admit, "gre": gre, "gpa": gpa, "rank": rank})


def gen_wide(n: int, seed: int = 11) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols = {f"x{i:02d}": np.round(rng.normal(size=n), 4) for i in range(50)}
    for i in range(10):
        cols[f"f{i}"] = np.array(["a", "b", "c", "d", "e"])[rng.integers(0, 5, n)]
    eta = sum(cols[f"x{i:02d}"] * (0.05 * (i % 7)) for i in range(50)) + (cols["f0"] == "a") * 0.5
    cols["y"] = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(np.int64)
    return pa.table(cols)


def write_csv(t: pa.Table, path: Path) -> None:
    pacsv.write_csv(t, path)


NAIVE_DEPS = ROOT / "bench" / "out" / "naive-deps"
PANDAS = "pandas==3.1.1"


def naive_env(env_base: dict) -> dict:
    """Environment for baseline (c): pandas from a folder of its own, so that it is
    never installed in .venv, where pyarrow would import it on first use and skew (a)."""
    if not (NAIVE_DEPS / "pandas").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "--target", str(NAIVE_DEPS), PANDAS], check=True)
    return dict(env_base, PYTHONPATH=str(NAIVE_DEPS))


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, int, str]:
    """Run ``cmd`` under a tiny wrapper that reports its own child's peak RSS."""
    wrapper = ("import resource,subprocess,sys,json,time;t=time.perf_counter();"
               "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
               "w=time.perf_counter()-t;"
               "print(json.dumps({'rc':p.returncode,'wall':w,'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
               "'out':p.stdout[-200000:],'err':p.stderr[-3000:]}))")
    res = subprocess.run([sys.executable, "-c", wrapper, *cmd], env=env, capture_output=True, text=True)
    r = json.loads(res.stdout)
    if r["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({r['rc']}):\n{r['out'][-2000:]}\n{r['err']}")
    return r["wall"], r["rss"], r["out"]


CONTAINERS = ("models", "input", "output", "archive", "quarantine", "reports")


def scorer_run(az: Azurite, env_base: dict, model: Path, inp: Path, ptype: str | None = None,
               reference: Path | None = None) -> tuple[float, int, str]:
    """(a) once: publish ``model`` (with a drift profile of ``reference`` if given), drop
    ``inp``, then time `scorer run`, in containers of its own that are deleted afterwards
    (the in-memory Azurite would fill up)."""
    from azure.storage.blob import BlobServiceClient

    tag = uuid.uuid4().hex[:8]
    env = dict(env_base, AZURE_STORAGE_CONNECTION_STRING=az.connection_string,
               **{f"SCORER_{c.upper()}_CONTAINER": f"{c}-{tag}" for c in CONTAINERS})
    pub = subprocess.run([sys.executable, "-m", "scorer", "models", "publish", str(model), "--name", "m",
                          *(["--predict-type", ptype] if ptype else []),
                          *(["--reference", str(reference)] if reference else [])],
                         env=env, check=True, capture_output=True, text=True)
    assert ("drift profile:" in pub.stdout) == (reference is not None), pub.stdout + pub.stderr
    subprocess.run([sys.executable, "-m", "scorer", "drop", str(inp), "--model", "m", "--as", "in.csv"],
                   env=env, check=True, capture_output=True)
    result = measure([sys.executable, "-m", "scorer", "run"], env)
    service = BlobServiceClient.from_connection_string(az.connection_string)
    for c in CONTAINERS:
        service.delete_container(f"{c}-{tag}")
    return result


class Case:
    def __init__(self, name: str, table: pa.Table, kind: str, factors: list[str], ptype: str, work: Path):
        self.name, self.kind, self.factors, self.ptype = name, kind, factors, ptype
        self.dir = work / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.input = self.dir / "input.csv"
        self.model = self.dir / "model.rds"
        features = [c for c in table.column_names if c not in ("admit", "y")]
        self.rows = table.num_rows
        write_csv(table.select(features), self.input)
        train = self.dir / "train.csv"
        write_csv(table.slice(0, min(table.num_rows, 20_000)), train)
        script = self.dir / "fit.R"
        script.write_text(R_FIT)
        subprocess.run(["Rscript", str(script), kind, str(train), str(self.model)], check=True)


def bench_case(case: Case, az: Azurite, repeat: int, env_base: dict) -> dict:
    plain = case.dir / "plain.R"
    plain.write_text(R_PLAIN)
    res: dict = {"case": case.name, "rows": case.rows}
    a_runs, a_rss, cold, b_runs, c_runs = [], [], [], [], []
    # (a), (b) and (c) take turns, so that drift in the machine's speed (it is a
    # shared VM) weighs on all three alike.
    for i in range(repeat):
        wall, rss, out = scorer_run(az, env_base, case.model, case.input, case.ptype)
        events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        finished = next(e for e in events if e["event"] == "run_finished")
        assert finished["exit_code"] == 0 and finished["counts"]["rows_scored"] == case.rows, finished
        cold += [e["since_start_s"] for e in events if e["event"] == "first_row_scored"]
        a_runs.append(wall)
        a_rss.append(rss)
        wall, rss, _ = measure(["Rscript", str(plain), str(case.model), str(case.input),
                                str(case.dir / "plain_out.csv"), ",".join(case.factors), case.ptype], env_base)
        b_runs.append(wall)
        if case.kind == "glm":
            wall, _, _ = measure([sys.executable, str(ROOT / "bench" / "naive_rpy2.py"), str(case.model),
                                  str(case.input), str(case.dir / "naive_out.csv"), *case.factors],
                                 naive_env(env_base))
            c_runs.append(wall)
    res["a_scorer_s"] = statistics.median(a_runs)
    res["a_runs_s"] = a_runs
    res["a_peak_rss_mb"] = max(a_rss) / 1024
    res["cold_start_s"] = statistics.median(cold)
    res["b_plain_r_s"] = statistics.median(b_runs)
    res["b_runs_s"] = b_runs
    res["a_over_b"] = res["a_scorer_s"] / res["b_plain_r_s"]
    if c_runs:
        res["c_naive_rpy2_s"] = statistics.median(c_runs)
        res["c_over_a"] = res["c_naive_rpy2_s"] / res["a_scorer_s"]
    return res


def drift_case(case: Case, rows: int, az: Azurite, repeat: int, env_base: dict, work: Path) -> dict:
    """The same input scored with and without a drift profile (the glm's training rows),
    taking turns: what counting the input and its predictions into the profile's bins costs."""
    inp = work / f"drift{rows}.csv"
    t = gen_glm(rows, seed=rows % 997)
    write_csv(t.select(["gre", "gpa", "rank"]), inp)
    del t
    runs: dict[bool, list[float]] = {True: [], False: []}
    for i in range(repeat):
        for with_profile in ((True, False) if i % 2 == 0 else (False, True)):
            wall, _, out = scorer_run(az, env_base, case.model, inp, case.ptype,
                                      reference=case.dir / "train.csv" if with_profile else None)
            runs[with_profile].append(wall)
    inp.unlink()
    on, off = statistics.median(runs[True]), statistics.median(runs[False])
    return {"case": f"drift{rows}", "rows": rows, "with_profile_s": on, "without_profile_s": off,
            "ratio": on / off, "with_runs_s": runs[True], "without_runs_s": runs[False]}


def memory_case(rows: int, model: Path, az: Azurite, work: Path, env_base: dict) -> float:
    d = work / f"mem{rows}"
    d.mkdir(exist_ok=True)
    inp = d / "input.csv"
    t = gen_glm(rows, seed=rows % 1000)
    write_csv(t.select(["gre", "gpa", "rank"]), inp)
    del t
    _, rss, _ = scorer_run(az, env_base, model, inp)
    inp.unlink()
    return rss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows for the glm case (default 1M)")
    ap.add_argument("--wide-rows", type=int, default=200_000, help="rows for the wide and ranger cases")
    ap.add_argument("--repeat", type=int, default=5, help="runs per measurement; medians are printed")
    ap.add_argument("--big", action="store_true", help="also score 10M rows for the streaming-memory figures")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="scorer-bench-"))
    env_base = dict(CLEAN_ENV)
    env_base.pop("AZURE_STORAGE_CONNECTION_STRING", None)
    az = Azurite(work / "azurite", in_memory=True)
    az.start()
    try:
        print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
              f"Python {platform.python_version()}; data and models generated with fixed seeds in {work}")
        cases = [
            Case("glm", gen_glm(args.rows), "glm", ["rank"], "response", work),
            Case("wide", gen_wide(args.wide_rows), "wide", [f"f{i}" for i in range(10)], "response", work),
            Case("ranger", gen_glm(args.wide_rows, seed=3), "ranger", ["rank"], "response", work),
        ]
        results = []
        for case in cases:
            r = bench_case(case, az, args.repeat, env_base)
            results.append(r)
            line = (f"{r['case']:7} {r['rows']:>9,} rows | (a) scorer {r['a_scorer_s']:6.2f} s "
                    f"(peak {r['a_peak_rss_mb']:.0f} MB, cold start {r['cold_start_s']:.2f} s) | "
                    f"(b) Rscript+data.table {r['b_plain_r_s']:6.2f} s | (a)/(b) = {r['a_over_b']:.2f}")
            if "c_over_a" in r:
                line += f" | (c) naive rpy2 {r['c_naive_rpy2_s']:6.2f} s | (c)/(a) = {r['c_over_a']:.1f}"
            print(line, flush=True)
        for rows in [args.rows] + ([10_000_000] if args.big else []):
            r = drift_case(cases[0], rows, az, args.repeat, env_base, work)
            results.append(r)
            print(f"drift   {rows:>9,} rows | with a drift profile {r['with_profile_s']:6.2f} s | without "
                  f"{r['without_profile_s']:6.2f} s | ratio {r['ratio']:.3f} (medians of {args.repeat}, taking turns)",
                  flush=True)
        if args.big:
            m1 = memory_case(1_000_000, cases[0].model, az, work, env_base)
            m10 = memory_case(10_000_000, cases[0].model, az, work, env_base)
            results.append({"case": "memory", "peak_1m_mb": m1, "peak_10m_mb": m10, "ratio": m10 / m1})
            print(f"memory  job peak RSS: 1M rows {m1:.0f} MB, 10M rows {m10:.0f} MB, ratio {m10 / m1:.2f}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        az.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
