"""predict() on every core: R worker processes beside the job's own R.

One R runs one call at a time (scorer/r/bridge.py, "Threads"), so the job's R uses one core.
When a model's predict() is slow, the job starts R workers: each is a process of its
own (``python -m scorer.r.pool``) with its own R and the model loaded, fed one prepared
piece at a time over a socket, in Arrow IPC both ways, and answering with the result
of the same ``scorer.r.predict.predict_rows`` the job's R runs. Pieces wait in one queue
(``Waiting``); each worker's thread takes the next as soon as its worker is free, and
the job's own R takes them between reading batches; scoring.score_stream writes the
results in input order.

    pool = Pool.start(model_file, card, size)   start ``size`` workers (returns at once)
    pool.feed(waiting, spec)                    they take pieces from ``waiting`` until it closes
    waiting.put(Turn(...))                      a piece for whichever R session is free first
    turn.result()                               its Answer (results, dropped, reason, warnings)
    pool.close()                                end them all

A pool outlives the input it was started for: the job feeds the same workers the next
input of the model, and each part of a split input, rather than paying their start
(about a second) again; it closes the pool for another model, and at the end of the run.

A worker that dies (its R crashed, or the kernel killed it for memory) fails the
batch with WorkerDied, which the job treats as an internal error: the input stays
pending and is retried. Workers end when the job closes the pool, or when their socket
closes because the job died.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from scorer import errors
from scorer.data.frames import Prepared, RColumn

log = logging.getLogger("scorer.pool")

#: how long a worker may take to start R and load the model before it is given up
START_TIMEOUT = 120.0


class WorkerDied(RuntimeError):
    """An R worker process ended while it had work (a crash, or killed for memory)."""


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota
    (how Docker's --cpus and, as far as is documented, Container Instances limit a
    container; the machine may show more cores than the container gets)."""
    n = len(os.sched_getaffinity(0))
    quota = None
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        q, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        quota = None if q == "max" else int(q) / int(period)
    except (OSError, ValueError):
        try:  # cgroup v1
            q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            quota = q / period if q > 0 else None
        except (OSError, ValueError):
            pass
    if quota is not None:
        n = min(n, max(1, int(quota + 0.5)))
    return max(1, n)


# -- batches and results as Arrow IPC -------------------------------------------------------

def _ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _read_ipc(data: bytes) -> pa.RecordBatch:
    return pa.ipc.open_stream(data).read_next_batch()


def encode_columns(columns: dict[str, RColumn], nrows: int) -> bytes:
    """Prepared columns (scorer.data.frames.RColumn) as one Arrow batch; each field's
    metadata keeps what Arrow's type does not (kind, levels, tz)."""
    fields, arrays = [], []
    for name, col in columns.items():
        if col.kind == "character":
            arr = pa.array(col.values, pa.string())
        else:
            arr = pa.array(np.asarray(col.values))
        meta = {"kind": col.kind, "levels": json.dumps(col.levels), "ordered": str(col.ordered), "tz": col.tz or ""}
        fields.append(pa.field(name, arr.type, metadata=meta))
        arrays.append(arr)
    schema = pa.schema(fields, metadata={"rows": str(nrows)})
    return _ipc(pa.RecordBatch.from_arrays(arrays, schema=schema) if arrays else
                pa.RecordBatch.from_pylist([], schema=schema))


def decode_columns(data: bytes) -> tuple[dict[str, RColumn], int]:
    batch = _read_ipc(data)
    columns = {}
    for f, arr in zip(batch.schema, batch.columns):
        m = {k.decode(): v.decode() for k, v in f.metadata.items()}
        values = arr.to_pylist() if m["kind"] == "character" else arr.to_numpy(zero_copy_only=False)
        columns[f.name] = RColumn(m["kind"], values, json.loads(m["levels"]), m["ordered"] == "True", m["tz"] or None)
    return columns, int(batch.schema.metadata[b"rows"])


def encode_results(results: list[tuple[str, pa.Array]]) -> bytes:
    # field names by position: a predict() result may be unnamed ("") or repeat a name
    names = [n for n, _ in results]
    batch = pa.RecordBatch.from_arrays([a for _, a in results], names=[str(i) for i in range(len(results))])
    return _ipc(batch.replace_schema_metadata({"names": json.dumps(names)}))


def decode_results(data: bytes) -> list[tuple[str, pa.Array]]:
    batch = _read_ipc(data)
    return list(zip(json.loads(batch.schema.metadata[b"names"]), batch.columns))


# -- the job's side ---------------------------------------------------------------------------

@dataclass
class Answer:
    results: list[tuple[str, pa.Array]]
    dropped: np.ndarray | None
    reason: tuple[str, str] | None
    warnings: Counter


def split(answer: Answer, sizes: list[int]) -> list[Answer]:
    """One predict() answer over merged rows, back into each batch's (or request's) share."""
    out, start, at = [], 0, 0  # results hold no row for a dropped one: ``at`` counts in them
    for n in sizes:
        dropped = answer.dropped[start:start + n] if answer.dropped is not None else None
        k = n - int(dropped.sum()) if dropped is not None else n
        out.append(Answer([(name, arr.slice(at, k)) for name, arr in answer.results], dropped, answer.reason,
                          answer.warnings))
        start, at = start + n, at + k
    return out


class Turn:
    """A piece of an input on its way through predict(), answered by the job's R or a
    worker's; ``result()`` waits for it and raises the error it met."""

    def __init__(self, batch: pa.RecordBatch, prep: Prepared, offset: int):
        self.batch, self.prep, self.offset = batch, prep, offset
        self.by: str | None = None
        self._answer: Answer | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()

    def finish(self, by: str, answer: Answer | None = None, error: BaseException | None = None) -> None:
        self.by, self._answer, self._error = by, answer, error
        self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self) -> Answer | None:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._answer


class Waiting:
    """Pieces waiting for an R session, in input order: the job's R takes them between
    its other work, each worker as soon as it is free."""

    def __init__(self) -> None:
        self._queue: deque[Turn] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._idle = 0  # workers blocked in take(), waiting for a piece

    def put(self, turn: Turn) -> None:
        with self._cv:
            self._queue.append(turn)
            self._cv.notify()

    def take(self, block: bool, leave_for_idle: bool = False) -> Turn | None:
        """The next piece; None when there is none (not blocking) or after close().
        With ``leave_for_idle`` (the job's R, which could take every piece before a
        waiting worker wakes up), only a piece that no idle worker is waiting for."""
        with self._cv:
            if block:
                self._idle += 1
                try:
                    while not self._queue and not self._closed:
                        self._cv.wait()
                finally:
                    self._idle -= 1
            if self._closed or len(self._queue) <= (self._idle if leave_for_idle else 0):
                return None
            return self._queue.popleft()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


class Worker:
    """One R worker process and the thread that talks to it."""

    def __init__(self, number: int, model_file: Path, packages: list[str], attach: list[str], what: str):
        self.number = number
        ours, theirs = socket.socketpair()
        self.conn = ours
        env = dict(os.environ, SCORER_WORKER=str(number))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scorer.r.pool", str(theirs.fileno())], pass_fds=(theirs.fileno(),), env=env,
            stdin=subprocess.DEVNULL, stdout=2)  # the job's stdout is its JSON log: a worker writes to stderr
        theirs.close()
        self.ready = threading.Event()
        self.closing = False
        self.failed: BaseException | None = None
        self._feeder: threading.Thread | None = None
        self._load = {"op": "load", "model": str(model_file), "packages": packages, "attach": attach, "what": what}
        threading.Thread(target=self._start, name=f"r-worker-{number}", daemon=True).start()

    def _start(self) -> None:
        try:
            self.conn.settimeout(START_TIMEOUT)
            header, _ = self._call(self._load, b"")
            self.conn.settimeout(None)
            if not header.get("ok"):
                raise WorkerDied(f"R worker {self.number} could not load the model: {header['error']['message']}")
            self.ready.set()
        except BaseException as exc:  # this worker is not used; the others, and the job's R, go on
            self.failed = exc
            self.ready.set()
            if not self.closing:  # not just the input finishing before the worker was up
                log.warning(f"R worker {self.number} did not start: {exc}", extra={"event": "r_worker_failed"})

    def _call(self, header: dict, payload: bytes) -> tuple[dict, bytes]:
        try:
            _send(self.conn, header, payload)
            got = _recv(self.conn)
        except (ConnectionError, BrokenPipeError):  # the process is gone: said below
            got = None
        if got is None:
            try:
                code = self.proc.wait(1)
            except subprocess.TimeoutExpired:
                code = None
            raise WorkerDied(f"R worker {self.number} ended unexpectedly"
                             + (f" (exit status {code})" if code is not None else ""))
        return got

    def usable(self) -> bool:
        """Whether this worker can take pieces (it may still be starting)."""
        return self.failed is None and not self.closing and self.proc.poll() is None

    def feed(self, waiting: Waiting, spec: Any) -> None:
        """Once started, take pieces from ``waiting`` and predict them with ``spec``
        (scorer.r.predict.PredictSpec) until it closes, or until this worker fails."""
        before = self._feeder

        def run() -> None:
            if before is not None:  # the last input's piece, if one is still on its way (its input failed)
                before.join()
            self.ready.wait()
            if self.failed is not None:
                return
            header = {"op": "predict", "type": spec.predict_type, "args": spec.args, "outputs": spec.output_columns}
            while (turn := waiting.take(block=True)) is not None:
                try:
                    got, data = self._call(header, encode_columns(turn.prep.columns, turn.prep.n_kept))
                    if not got.get("ok"):
                        turn.finish(str(self.number), error=_error_from(got["error"]))
                        continue
                    dropped = np.array(got["dropped"], dtype=bool) if got["dropped"] is not None else None
                    turn.finish(str(self.number), Answer(decode_results(data), dropped,
                                                         tuple(got["reason"]) if got["reason"] else None,
                                                         Counter(got["warnings"])))
                except BaseException as exc:  # this worker is gone: its piece fails (in input order), it stops
                    self.failed = exc
                    turn.finish(str(self.number), error=exc)
                    return

        self._feeder = threading.Thread(target=run, name=f"r-worker-{self.number}-feed", daemon=True)
        self._feeder.start()

    def close(self) -> None:
        self.closing = True
        try:
            self.conn.close()
        except OSError:
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Pool:
    """R worker processes for one model (the job's own R not counted)."""

    def __init__(self, workers: list[Worker]):
        self.workers = workers

    @classmethod
    def start(cls, model_file: Path, card: dict, size: int) -> "Pool":
        """``size`` workers for the model of ``card`` (its verified file at ``model_file``),
        starting in the background."""
        what = f"model {card['name']!r} version {card['version']}"
        log.info(f"starting {size} R worker(s)", extra={"event": "r_workers_starting", "workers": size})
        return cls([Worker(i + 1, model_file, list(card.get("packages") or {}), card.get("attach") or [], what)
                    for i in range(size)])

    def feed(self, waiting: Waiting, spec: Any) -> "Pool":
        """Each usable worker takes pieces from ``waiting`` (once started) until it closes."""
        for w in self.workers:
            if w.usable():
                w.feed(waiting, spec)
        return self

    def usable(self) -> bool:
        return any(w.usable() for w in self.workers)

    def close(self) -> None:
        for w in self.workers:
            w.close()


def _error_from(d: dict) -> BaseException:
    cls = getattr(errors, d.get("type", ""), None)
    if isinstance(cls, type) and issubclass(cls, errors.ScorerError):
        return cls(d["message"], hint=d.get("hint"))
    return WorkerDied(f"R worker failed: {d['message']}")


# -- the wire: a JSON header and an opaque payload ---------------------------------------

def _send(conn: socket.socket, header: dict, payload: bytes) -> None:
    head = json.dumps(header).encode()
    conn.sendall(len(head).to_bytes(4, "big") + len(payload).to_bytes(8, "big") + head + payload)


def _recv_exactly(conn: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _recv(conn: socket.socket) -> tuple[dict, bytes] | None:
    sizes = _recv_exactly(conn, 12)
    if sizes is None:
        return None
    head = _recv_exactly(conn, int.from_bytes(sizes[:4], "big"))
    payload = _recv_exactly(conn, int.from_bytes(sizes[4:], "big"))
    if head is None or payload is None:
        return None
    return json.loads(head), payload


# -- the worker's side ------------------------------------------------------------------------

def serve(fd: int) -> None:
    """A worker: start R (first, on the main thread), then answer until the socket closes."""
    from scorer.r import bridge as rbridge
    from scorer.r.predict import PredictSpec, predict_rows

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the job's to handle; it closes the pool
    rbridge.start()
    conn = socket.socket(fileno=fd)
    r = model = None
    while True:
        got = _recv(conn)
        if got is None:
            return
        header, payload = got
        try:
            if header["op"] == "load":  # as Registry.load: the namespaces (their methods), attach, read
                r = rbridge.bridge()
                missing = r.missing_packages(header["packages"])
                if missing:
                    raise errors.ModelLoadError(f"R package(s) {', '.join(missing)} are not installed")
                r.attach(header["attach"])
                model = r.read_model(Path(header["model"]), header["what"])
                _send(conn, {"ok": True}, b"")
            else:
                columns, n = decode_columns(payload)
                prep = Prepared(columns=columns, keep=np.ones(n, dtype=bool))
                spec = PredictSpec(predict_type=header["type"], args=header["args"] or [],
                                   output_columns=header["outputs"])
                warned: Counter = Counter()
                results, dropped, reason = predict_rows(r, model, prep, spec, warned)
                _send(conn, {"ok": True, "dropped": dropped.tolist() if dropped is not None else None,
                             "reason": list(reason) if reason else None, "warnings": dict(warned)},
                      encode_results(results))
        except errors.ScorerError as exc:
            _send(conn, {"ok": False, "error": {"type": type(exc).__name__, "message": str(exc), "hint": exc.hint}},
                  b"")
        except Exception as exc:  # reported to the job as a worker failure (an internal error there)
            _send(conn, {"ok": False, "error": {"type": "", "message": f"{type(exc).__name__}: {exc}"}}, b"")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format=f"r-worker {os.environ.get('SCORER_WORKER', '?')}: %(message)s")
    serve(int(sys.argv[1]))
    os._exit(0)  # no interpreter teardown of embedded R (see scorer.cli._quick_exit)
