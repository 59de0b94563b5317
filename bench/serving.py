"""Benchmark: `scorer serve` against plumber, the usual R way to serve a model over HTTP.

    .venv/bin/python bench/serving.py              # every figure of docs/serving.md; about 3 minutes
    .venv/bin/python bench/serving.py --seconds 2  # a quick look

Both serve the same glm (fitted with fixed seeds, as in bench/scoring.py), each in its own
process, on this machine; the load comes from a small asyncio HTTP/1.1 client in this
process (one request at a time on each connection, kept alive or new for each request,
whichever the server answers faster), which is neither server.
plumber's script is the obvious one (bench/plumber_api.R): readRDS at start, predict() in a
@post handler, jsonlite in and out. Both get the same JSON body, a bare array of rows.
Scenarios, the two servers taking turns in each:
  1. 1-row requests, one client: median and p99 latency;
  2. 1-row requests, 16 clients: rows per second;
  3. 1,000-row requests, 8 clients: rows per second and p99 latency.
Then each server's peak memory (VmHWM). Ratios are printed; the targets are in docs/serving.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from conftest import CLEAN_ENV, Azurite, _free_port  # noqa: E402
from scoring import R_FIT, gen_glm, write_csv  # noqa: E402


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    length, chunked = None, False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        k, _, v = line.decode().partition(":")
        if k.lower() == "content-length":
            length = int(v)
        elif k.lower() == "transfer-encoding" and "chunked" in v.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readline()
        return status, body
    return status, await reader.readexactly(length or 0)


async def _client(port: int, path: str, body: bytes, until: float, latencies: list[float], fresh: bool) -> None:
    """Requests back to back until ``until``: on one keep-alive connection, or with
    ``fresh`` on a new connection each (connecting counted in the latency)."""
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if fresh else "") + "\r\n"
               ).encode() + body
    conn = None
    try:
        while time.perf_counter() < until:
            t = time.perf_counter()
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", port)
            status, answer = await _one(*conn, request)
            if status != 200:
                raise RuntimeError(f"{path}: HTTP {status}: {answer[:300]!r}")
            latencies.append(time.perf_counter() - t)
            if fresh:
                conn[1].close()
                conn = None
    finally:
        if conn is not None:
            conn[1].close()


def load(port: int, path: str, body: bytes, clients: int, seconds: float, fresh: bool = False) -> list[float]:
    """Each client sends requests back to back for ``seconds``; returns every latency."""
    latencies: list[float] = []

    async def run() -> None:
        until = time.perf_counter() + seconds
        await asyncio.gather(*(_client(port, path, body, until, latencies, fresh) for _ in range(clients)))

    asyncio.run(run())
    return latencies


def answer(port: int, path: str, body: bytes) -> dict:
    async def run() -> dict:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        try:
            return json.loads((await _one(reader, writer, request))[1])
        finally:
            writer.close()
    return asyncio.run(run())


def p(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_ready(url_port: int, path: str, body: bytes, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:  # its log goes with the work directory: show it now
            raise RuntimeError(f"{log.stem} exited with status {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            load(url_port, path, body, 1, 0.01)
            return
        except (OSError, RuntimeError, ValueError, IndexError):
            time.sleep(0.2)
    raise RuntimeError("server not ready")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each measurement (default 8)")
    ap.add_argument("--turns", type=int, default=3, help="turns per scenario and server; medians are printed")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="scorer-serve-bench-"))
    az = Azurite(work / "azurite", in_memory=True)
    az.start()
    servers: dict[str, subprocess.Popen] = {}
    try:
        train = work / "train.csv"
        write_csv(gen_glm(20_000), train)
        (work / "fit.R").write_text(R_FIT)
        model = work / "glm.rds"
        subprocess.run(["Rscript", str(work / "fit.R"), "glm", str(train), str(model)], check=True, env=CLEAN_ENV)
        rows = gen_glm(1000, seed=5).select(["gre", "gpa", "rank"]).to_pylist()
        one, thousand = json.dumps(rows[:1]).encode(), json.dumps(rows).encode()

        tag = uuid.uuid4().hex[:8]
        env = dict(CLEAN_ENV, AZURE_STORAGE_CONNECTION_STRING=az.connection_string, SCORER_LOG_LEVEL="WARNING",
                   **{f"SCORER_{c.upper()}_CONTAINER": f"{c}-{tag}"
                      for c in ("models", "input", "output", "archive", "quarantine", "reports", "shadow")})
        subprocess.run([sys.executable, "-m", "scorer", "models", "publish", str(model), "--name", "glm"], env=env,
                       check=True, capture_output=True)
        ports = {"scorer": _free_port(), "plumber": _free_port()}
        paths = {"scorer": "/v1/models/glm/predict", "plumber": "/predict"}
        logs = {n: open(work / f"{n}.log", "w") for n in ports}  # files: an unread pipe would stall a server
        servers["scorer"] = subprocess.Popen(
            [sys.executable, "-m", "scorer", "serve", "--port", str(ports["scorer"])], env=env,
            stdout=logs["scorer"], stderr=subprocess.STDOUT)
        run_plumber = ('a <- commandArgs(TRUE); '
                       'plumber::plumb(a[[1]])$run(host = "127.0.0.1", port = as.integer(a[[2]]), docs = FALSE)')
        servers["plumber"] = subprocess.Popen(
            ["Rscript", "-e", run_plumber, str(ROOT / "bench" / "plumber_api.R"), str(ports["plumber"])],
            env=dict(CLEAN_ENV, MODEL=str(model)), stdout=logs["plumber"], stderr=subprocess.STDOUT)
        for name in servers:
            wait_ready(ports[name], paths[name], one, servers[name], work / f"{name}.log")

        # the two answer alike: a check, not a figure
        ours = [x["prediction"] for x in answer(ports["scorer"], paths["scorer"], thousand)["predictions"]]
        theirs = answer(ports["plumber"], paths["plumber"], thousand)["predictions"]
        assert len(ours) == len(theirs) == 1000 and max(abs(a - b) for a, b in zip(ours, theirs)) < 1e-12
        with open("/proc/loadavg") as f:
            print(f"machine: {platform.node()}, {os.cpu_count()} cores, load {' '.join(f.read().split()[:3])}; "
                  f"{args.seconds:g} s per measurement, {args.turns} turns", flush=True)
        # plumber (httpuv) answers a keep-alive connection's requests about 40 ms late on Linux
        # (its headers and body go out in two writes: Nagle's algorithm meets delayed ACKs),
        # while a new connection per request gets its answer in a few ms. Each scenario is
        # measured both ways and each server is compared at its best.
        scenarios = [("1 row, 1 client", one, 1, 1), ("1 row, 16 clients", one, 1, 16),
                     ("1,000 rows, 8 clients", thousand, 1000, 8)]
        results = []
        for label, body, nrows, clients in scenarios:
            got: dict[str, dict[str, list[float]]] = {n: {"median": [], "p99": [], "rows_s": []} for n in servers}
            for turn in range(args.turns):
                for name in (("scorer", "plumber") if turn % 2 == 0 else ("plumber", "scorer")):
                    best = min((load(ports[name], paths[name], body, clients, args.seconds, fresh)
                                for fresh in (False, True)), key=statistics.median)
                    lat = best
                    got[name]["median"].append(statistics.median(lat))
                    got[name]["p99"].append(p(lat, 0.99))
                    got[name]["rows_s"].append(len(lat) * nrows / args.seconds)
            med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in got.items()}
            r = {"scenario": label, **{f"{n}_{k}": v for n, d in med.items() for k, v in d.items()}}
            r["latency_ratio"] = med["scorer"]["median"] / med["plumber"]["median"]
            r["throughput_ratio"] = med["scorer"]["rows_s"] / med["plumber"]["rows_s"]
            results.append(r)
            print(f"{label:22} | scorer: median {med['scorer']['median'] * 1000:7.2f} ms, p99 "
                  f"{med['scorer']['p99'] * 1000:7.2f} ms, {med['scorer']['rows_s']:9.0f} rows/s | plumber: median "
                  f"{med['plumber']['median'] * 1000:7.2f} ms, p99 {med['plumber']['p99'] * 1000:7.2f} ms, "
                  f"{med['plumber']['rows_s']:9.0f} rows/s | latency scorer/plumber {r['latency_ratio']:.2f}, "
                  f"rows/s scorer/plumber {r['throughput_ratio']:.1f}", flush=True)
        mem = {n: peak_mb(proc.pid) for n, proc in servers.items()}
        results.append({"peak_mb": mem})
        print(f"peak memory (VmHWM): scorer serve {mem['scorer']:.0f} MB, plumber {mem['plumber']:.0f} MB")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        for proc in servers.values():
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        az.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
