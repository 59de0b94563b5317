"""Many consecutive starts of `scorer run`, each with one small input: the loop that
found the start-up crash of issue 17, kept so it can be rerun on any checkout.

    .venv/bin/python tests/startup_loop.py --runs 3000 [--workers 2] [--repo PATH]
            [--sigterm-every 7]

Each worker has its own containers and its own published glm, and for each start
drops one 3-row input, runs `python -m scorer run` from ``--repo`` (default: this
checkout) and records how it ended. Every ``--sigterm-every``-th start is sent
SIGTERM at a seeded point early in its start-up instead of running to the end.

A start counts as a crash when the process died of a signal it was not sent
(SIGSEGV, SIGABRT, ...), or when it ended without logging ``run_finished``.
Prints one JSON line of counts; exits 1 when anything crashed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ROW = b"wt,hp\n2.6,110\n3.2,150\n2.9,98\n"


@dataclass
class Tally:
    starts: int = 0
    finished: int = 0
    sigterm_sent: int = 0
    sigterm_exits: int = 0          # exit 130 after the SIGTERM we sent
    crashes: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def as_dict(self) -> dict:
        return {"starts": self.starts, "finished": self.finished, "sigterm_sent": self.sigterm_sent,
                "sigterm_exits": self.sigterm_exits, "crashes": len(self.crashes),
                "crash_details": self.crashes[:10]}


def one_start(env: dict, repo: Path, input_name: str, sigterm_after: float | None, workdir: Path) -> dict:
    """Run `scorer run` once; return how it ended."""
    proc = subprocess.Popen([sys.executable, "-m", "scorer", "run"], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if sigterm_after is not None:
        time.sleep(sigterm_after)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    return {"rc": proc.returncode, "finished": b'"run_finished"' in out, "input": input_name,
            "stderr_tail": err.decode(errors="replace")[-2000:], "sigterm_after": sigterm_after}


def worker(index: int, runs: int, repo: Path, connection_string: str, fitted: Path, sigterm_every: int,
           seed: int, tally: Tally, workdir: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from scorer.settings import Settings
    from scorer.storage import Store, connect

    tag = f"w{index}{uuid.uuid4().hex[:6]}"
    settings = Settings(connection_string=connection_string, models_container=f"models-{tag}",
                        input_container=f"input-{tag}", output_container=f"output-{tag}",
                        archive_container=f"archive-{tag}", quarantine_container=f"quarantine-{tag}",
                        reports_container=f"reports-{tag}", shadow_container=f"shadow-{tag}", lease_seconds=15)
    store = Store(connect(settings), settings)
    store.ensure_containers()
    from conftest import env_for  # the tests' own environment for a `scorer` subprocess
    env = dict(env_for(settings), PYTHONFAULTHANDLER="1")
    # published by a `scorer` process of its own: this process never starts R
    subprocess.run([sys.executable, "-m", "scorer", "models", "publish", str(fitted), "--name", "g"],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    rng = random.Random(seed + index)
    for i in range(runs):
        name = f"g/s{i:05d}.csv"
        store.put_bytes(settings.input_container, name, ROW)
        sigterm = rng.uniform(0.0, 0.4) if sigterm_every and i % sigterm_every == sigterm_every - 1 else None
        r = one_start(env, repo, name, sigterm, workdir)
        with tally.lock:
            tally.starts += 1
            tally.finished += r["finished"]
            if sigterm is not None:
                tally.sigterm_sent += 1
            died_of_signal = r["rc"] < 0 or r["rc"] in (134, 139)
            if sigterm is not None and r["rc"] == 130:
                tally.sigterm_exits += 1
                ok = r["finished"]
            elif sigterm is not None and r["rc"] == -signal.SIGTERM:
                # SIGTERM before the job installed its handler (the first milliseconds
                # of Python): the default action, nothing claimed yet
                ok = True
            else:
                ok = r["finished"] and not died_of_signal and r["rc"] == 0
            if not ok:
                tally.crashes.append({k: r[k] for k in ("rc", "finished", "input", "sigterm_after", "stderr_tail")})
        # an input is pending (stopped early) or scored, never lost
        pending = store.properties(settings.input_container, name) is not None
        scored = store.properties(settings.output_container, name) is not None
        if not (pending or scored):
            with tally.lock:
                tally.crashes.append({"input": name, "lost": True})
        if pending and not scored:  # left by a stopped or crashed run: clear it for the next start
            time.sleep(0)  # its lease is released on exit 130; a crashed run's lapses
            store.delete(settings.input_container, name)
    store.close()


def run_loop(runs: int, connection_string: str, fitted: Path, repo: Path = ROOT, workers: int = 2,
             sigterm_every: int = 7, seed: int = 17) -> Tally:
    """``runs`` starts spread over ``workers`` threads, each with its own containers."""
    tally = Tally()
    workdir = Path(tempfile.mkdtemp(prefix="scorer-starts-"))
    per = [runs // workers + (1 if i < runs % workers else 0) for i in range(workers)]
    threads = [threading.Thread(target=worker, args=(i, n, repo, connection_string, fitted, sigterm_every,
                                                     seed, tally, workdir)) for i, n in enumerate(per)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout whose `scorer` package is started")
    ap.add_argument("--sigterm-every", type=int, default=7, help="every Nth start gets SIGTERM early (0: never)")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from conftest import Azurite

    tmp = Path(tempfile.mkdtemp(prefix="scorer-loop-"))
    subprocess.run(["Rscript", str(HERE / "r" / "fit_models.R"), str(tmp / "models")], check=True,
                   capture_output=True)
    az = Azurite(tmp / "azurite", in_memory=True)
    az.start()
    try:
        t0 = time.monotonic()
        tally = run_loop(args.runs, az.connection_string, tmp / "models" / "glm_gamma.rds", args.repo.resolve(),
                         args.workers, args.sigterm_every)
        out = tally.as_dict() | {"repo": str(args.repo), "seconds": round(time.monotonic() - t0, 1)}
        print(json.dumps(out, indent=1))
    finally:
        az.stop()
    return 1 if tally.crashes else 0


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.exit(main())
