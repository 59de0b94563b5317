"""`scorer serve`: the published models over HTTP.

    POST /v1/models/{name}/predict[?version=N]   JSON rows or CSV in; predictions out
    GET  /v1/models, /v1/models/{name}           what is published; a model's card and prototype
    GET  /healthz, /readyz, /openapi.json

Threads (scorer/r/bridge.py, "Threads"): R starts first, on the main thread, and only the main
thread calls it: it loads models and runs predict(). The HTTP server (uvicorn, an ASGI
server, with Starlette's routing) runs its event loop on a thread of its own; a request
is parsed and validated there (scorer.data.frames, as for blobs), then queued for R, and its
answer awaited. Blob reads (cards, model files) run on a small thread pool, never on the
loop or the R thread.

Gathering: R runs one call at a time, so requests for the same model version that wait
together go to R as one predict() call and the answers are split back by rows. The R
thread takes every request already waiting; when requests are still being read by the
server, it waits for them up to SCORER_SERVE_GATHER_MS (2 ms), and a gathered call holds
at most SCORER_SERVE_MAX_ROWS rows. A lone client never waits: nothing else is arriving.
If a gathered call fails, each request in it is retried alone, so one bad request fails
only itself.

Versions: the server lists the models container every SCORER_SERVE_REFRESH_SECONDS and
loads a new current version before it serves it; ``?version=N`` loads that version on
first use.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import queue
import signal
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable

import pyarrow as pa
import pyarrow.csv as pacsv

from scorer.data.formats import CsvOptions
from scorer.data.frames import (Prepared, check_columns, function_frame, na_kept, one_batch, prediction_names,
                                prepare)
from scorer.errors import (ConfigError, InputError, ModelNotFound, PredictError, ResourceError, SchemaError,
                           ScorerError)
from scorer.log import redact_obj
from scorer.online.rows import Limits, Scored, outcome, signature, table_from_csv, table_from_json
from scorer.r.pool import Answer, split
from scorer.r.predict import PredictSpec, merge, predict_rows, seed_for

log = logging.getLogger("scorer.serve")

#: bodies up to this size are parsed on the event loop (1,000 rows of glm are 50 KB, under 2 ms);
#: larger ones on the parsing threads, so the loop stays free. Parsing both ways is linear in the
#: body; the hop to a thread and back (and the GIL passing between three busy threads) cost 30%
#: of the throughput of small requests in bench/serving.py when every body took it.
INLINE_PARSE_BYTES = 256 * 1024


class HTTPError(Exception):
    def __init__(self, status: int, kind: str, message: str, hint: str = "", **extra: Any):
        super().__init__(message)
        self.status, self.kind, self.hint, self.extra = status, kind, hint, extra

    def body(self) -> dict:
        """The answer's JSON, redacted: R's messages can hold anything a model's code read."""
        err = {"kind": self.kind, "message": str(self)}
        if self.hint:
            err["what_to_do"] = self.hint
        return redact_obj({"error": err, **self.extra})


def http_error_of(exc: ScorerError) -> HTTPError:
    """The HTTP answer to a scorer error: 404 for an unknown model or version, 400 for a
    bad request (413 when it is over a size limit), 422 when R could not score rows it was
    given, 503 when the server ran short of memory or disk, else 500. The batch job's
    "what to do" speaks of inputs and containers; a client is told what it can do."""
    status = 404 if isinstance(exc, ModelNotFound) else 400 if isinstance(exc, (InputError, ConfigError)) else 500
    hint = exc.hint
    if isinstance(exc, PredictError):
        status = 422  # the rows were read, but R could not score them
    if exc.details.get("too_large"):
        status = 413
    if isinstance(exc, ResourceError):
        status, hint = 503, "The server is short of memory for this request: send fewer rows, or try again later."
    return HTTPError(status, exc.kind, str(exc), hint)


@dataclass
class Loaded:
    card: dict
    model: Any  # an R function's LoadedScript when card["kind"] is "function"
    spec: PredictSpec
    bytes: int = 0  # the model file's size: what a loaded version is counted as

    @property
    def is_function(self) -> bool:
        return self.card.get("kind") == "function"


@dataclass
class _Load:
    card: dict
    data: bytes  # the verified model file, downloaded off the R thread (Registry.fetch)
    deliver: Callable[[Loaded | BaseException], None]


@dataclass
class _Forget:
    """Unload a version (R's thread releases R objects)."""
    key: tuple[str, int]


@dataclass
class _Predict:
    key: tuple[str, int]
    loaded: Loaded
    prep: Prepared
    sig: tuple
    deliver: Callable[[Answer | BaseException], None]
    abandoned: bool = False  # its deadline passed: R drops it unless it has started


@dataclass
class _Call:
    """An R function's turn: one request is one file, given to score(data, ...) whole."""
    loaded: Loaded
    prep: Prepared
    nrows: int
    deliver: Callable[[list[tuple[str, pa.Array]] | BaseException], None]
    abandoned: bool = False


@dataclass
class State:
    ready: bool = False
    current: dict[str, int] = field(default_factory=dict)        # model name -> current version
    loaded: dict[tuple[str, int], Loaded] = field(default_factory=dict)
    arriving: int = 0                                             # requests read but not yet queued for R


class Server:
    def __init__(self, settings: Any, store: Any, host: str = "127.0.0.1", port: int = 8000):
        from scorer.models.registry import Registry

        self.settings = settings
        self.store = store
        self.registry = Registry(store)
        self.host, self.port = host, port
        self.state = State()
        self.work: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.io = ThreadPoolExecutor(4, thread_name_prefix="serve-io")
        # parsing and validating bodies: never on the event loop, so /healthz and small
        # requests are answered while a large body is read
        self.cpu = ThreadPoolExecutor(2, thread_name_prefix="serve-parse")
        self.limits = Limits.of(settings)
        self._lock = threading.Lock()
        self.server = None
        #: when the R thread started the call it is in (None when idle), for /healthz
        self.r_busy_since: float | None = None
        self.bodies: asyncio.Semaphore | None = None  # made on the event loop (build_app's lifespan)
        self.versions_used: dict[tuple[str, int], float] = {}  # a non-current version's last use
        self.catalog: tuple[dict[str, list[int]], float] = ({}, float("-inf"))  # the last listing, and when
        self.load_failed: set[tuple[str, int]] = set()  # said once in the log, not at every refresh
        self.retired: deque = deque()  # (when, Loaded) unloaded versions, released later on R's thread

    # -- the main thread: R --------------------------------------------------------------

    def run(self, app: Any) -> int:
        """Serve ``app`` (scorer.online.app.build_app(self): the routes import this module,
        never the other way) until SIGTERM or SIGINT. R must have been started (rbridge.start)."""
        import uvicorn

        self.registry.r  # the bridge (started already, on this thread)
        config = uvicorn.Config(app, host=self.host, port=self.port, log_config=None, access_log=False,
                                lifespan="on", server_header=False, date_header=False)
        self.server = uvicorn.Server(config)
        http = threading.Thread(target=self.server.run, name="http", daemon=True)

        def stop(signum, frame):  # noqa: ARG001
            # Container Apps' scale-in sends SIGTERM: stop accepting, answer what was accepted
            # (uvicorn waits for the requests in flight), then exit, within the drain time
            if not self.stopping.is_set():
                log.info(f"SIGTERM: draining the requests in flight (at most {self.settings.serve_drain_seconds:g} s)",
                         extra={"event": "serve_draining", "queued": self.work.qsize()})
            self.stopping.set()
            self.server.should_exit = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        http.start()
        log.info(f"serving on http://{self.host}:{self.port}", extra={"event": "serve_started",
                                                                     "host": self.host, "port": self.port})
        try:
            self._r_loop(http)
        finally:
            self.server.should_exit = True
            http.join(5)
            self.io.shutdown(wait=False, cancel_futures=True)
            self.cpu.shutdown(wait=False, cancel_futures=True)
            log.info("stopped", extra={"event": "serve_stopped", "unanswered": self.work.qsize()})
        return 0

    def _serving(self, http: threading.Thread, drain_until: list) -> bool:
        """True until a SIGTERM's drain is over: the HTTP server has answered what it
        accepted and stopped, or SCORER_SERVE_DRAIN_SECONDS have passed."""
        if not self.stopping.is_set():
            return True
        if not drain_until:
            drain_until.append(time.monotonic() + self.settings.serve_drain_seconds)
        return http.is_alive() and time.monotonic() < drain_until[0]

    def _r_loop(self, http: threading.Thread) -> None:
        s = self.settings
        deferred: deque = deque()
        gather = s.serve_gather_ms / 1000
        drain_until: list = []
        while self._serving(http, drain_until):
            while self.retired and self.retired[0][0] < time.monotonic():
                self.retired.popleft()
            try:
                item = deferred.popleft() if deferred else self.work.get(timeout=0.2)
            except queue.Empty:
                continue
            if getattr(item, "abandoned", False):  # its client was told 504: nothing to do
                continue
            self.r_busy_since = time.monotonic()
            try:
                self._one(item, deferred, gather)
            finally:
                self.r_busy_since = None

    def _one(self, item: Any, deferred: deque, gather: float) -> None:
        """One turn of R: a load, a function's call, or a predict() call with the requests
        for the same model version gathered (the others wait in ``deferred``)."""
        if isinstance(item, _Load):
            self._load(item)
            return
        if isinstance(item, _Forget):
            loaded = self.state.loaded.pop(item.key, None)
            if loaded is not None:
                self.registry.forget(*item.key)
                # a request under way may still hold it: its last reference is dropped here, on R's
                # thread, once no request can (releasing an R object is an R call)
                self.retired.append((time.monotonic() + self.settings.serve_deadline_seconds + 60, loaded))
                log.info(f"model {item.key[0]!r} version {item.key[1]} unloaded (SCORER_SERVE_VERSIONS_BYTES)",
                         extra={"event": "serve_unloaded", "model": item.key[0], "version": item.key[1]})
            return
        if isinstance(item, _Call):  # never gathered: a request is a whole file
            self._call(item)
            return
        group, rows = [item], item.prep.n_kept
        deadline = time.monotonic() + gather
        while rows < self.settings.serve_max_rows:
            try:
                nxt = self.work.get_nowait()
            except queue.Empty:
                wait = deadline - time.monotonic()
                if self.state.arriving <= 0 or wait <= 0:
                    break
                try:
                    nxt = self.work.get(timeout=wait)
                except queue.Empty:
                    break
            if isinstance(nxt, _Predict) and nxt.key == item.key and nxt.sig == item.sig:
                if not nxt.abandoned:
                    group.append(nxt)
                    rows += nxt.prep.n_kept
            else:
                deferred.append(nxt)
        self._predict(group)

    def _load(self, item: _Load) -> None:
        card = item.card
        key = (card["name"], int(card["version"]))
        try:
            if key not in self.state.loaded:
                model = self.registry.load(card, item.data)
                spec = PredictSpec.from_card(card)
                if spec.random:  # the same request gets the same answer
                    spec = dataclasses.replace(spec, seed=seed_for(f"{card['name']}/v{card['version']}"))
                self.state.loaded[key] = Loaded(card, model, spec, len(item.data))
            item.deliver(self.state.loaded[key])
        except BaseException as exc:
            item.deliver(exc)

    def _call(self, item: _Call) -> None:
        card = item.loaded.card
        try:
            # the same request gets the same answer: R's seed from the model's name and version,
            # as a file's comes from its name (seed_for)
            results, _ = self.registry.r.call_score(item.loaded.model, item.prep.columns, item.nrows,
                                                    card.get("params") or [],
                                                    seed_for(f"{card['name']}/v{card['version']}"))
            item.deliver(results)
        except BaseException as exc:
            item.deliver(exc)

    def _predict(self, group: list[_Predict]) -> None:
        r = self.registry.r
        first = group[0]
        try:
            warned: Counter = Counter()
            merged = merge([g.prep for g in group])
            answer = Answer(*predict_rows(r, first.loaded.model, merged, first.loaded.spec, warned), warned)
        except ScorerError as exc:
            if len(group) == 1:
                first.deliver(exc)
            else:  # one request's rows may be the cause: each alone, so only that one fails
                for g in group:
                    self._predict([g])
            return
        except BaseException as exc:
            for g in group:
                g.deliver(exc)
            return
        for g, part in zip(group, split(answer, [g.prep.n_kept for g in group])):
            g.deliver(part)
        log.debug("predict() call", extra={"event": "r_call", "requests": len(group), "rows": merged.n_kept})

    # -- the event loop's side -------------------------------------------------------------

    async def _to_r(self, make: Callable[[Callable], Any], deadline: float | None = None) -> Any:
        """Queue R's work and await its answer; past ``deadline`` (time.monotonic()) the
        request is answered 504 and its work marked abandoned, so R skips it if it has
        not started it."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def deliver(value: Any) -> None:
            def settle() -> None:
                if fut.done():  # the client went away
                    return
                if isinstance(value, BaseException):
                    fut.set_exception(value)
                else:
                    fut.set_result(value)
            loop.call_soon_threadsafe(settle)

        item = make(deliver)
        self.work.put(item)
        if deadline is None:
            return await fut

        def expire() -> None:  # a timer, not wait_for: a task per request cost throughput
            if not fut.done():
                item.abandoned = True  # an answer that comes later is dropped (settle sees fut done)
                fut.set_exception(HTTPError(
                    504, "DeadlineExceeded", "no predictions within SCORER_SERVE_DEADLINE_SECONDS "
                    f"({self.settings.serve_deadline_seconds:g} s): R was busy with earlier requests, or this "
                    "model is slow for this many rows.", hint="Try again later, or send fewer rows per request."))
        timer = loop.call_later(max(0.0, deadline - time.monotonic()), expire)
        try:
            return await fut
        finally:
            timer.cancel()

    async def blocking(self, fn: Callable, *args: Any) -> Any:
        """Blob I/O off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)

    async def model(self, name: str, version: int | None) -> Loaded:
        """The loaded model (current version unless ``version``); loads it if needed.
        Raises ScorerError (404 for an unknown model or version)."""
        if version is None:
            version = self.state.current.get(name)
        key = (name, version)
        if version is not None and key in self.state.loaded:
            self._used(key)
            return self.state.loaded[key]
        catalog, listed_at = self.catalog
        if name not in catalog and time.monotonic() - listed_at < self.settings.serve_refresh_seconds:
            # the refresher listed the models a moment ago: no listing per unknown name
            raise ModelNotFound(f"No model named {name!r} is published.", model=name,
                                hint="GET /v1/models lists the published models"
                                + (f": {', '.join(catalog)}." if catalog else " (none yet)."))
        loaded = await self._load_card(await self.blocking(self.registry.card, name, version))
        if version is None:
            with self._lock:
                self.state.current.setdefault(name, int(loaded.card["version"]))
        self._used((name, int(loaded.card["version"])))
        return loaded

    def _used(self, key: tuple[str, int], keep: bool = True) -> None:
        """Note a use of a version; beyond SCORER_SERVE_VERSIONS_BYTES of non-current
        versions, the least recently used are unloaded (on R's thread): all but ``key``, or
        ``key`` too when it has just stopped being current (``keep`` False)."""
        if self.state.current.get(key[0]) == key[1]:
            return
        with self._lock:
            self.versions_used[key] = time.monotonic()
            kept = sorted(self.versions_used, key=self.versions_used.get, reverse=True)
            total = 0
            for k in kept:
                loaded = self.state.loaded.get(k)
                total += loaded.bytes if loaded else 0
                if total > self.settings.serve_versions_bytes and (k != key or not keep):
                    del self.versions_used[k]
                    self.work.put(_Forget(k))

    async def _load_card(self, card: dict) -> Loaded:
        """Load ``card``'s model in R: downloaded here (off the R thread), then read by R."""
        key = (card["name"], int(card["version"]))
        if key in self.state.loaded:
            return self.state.loaded[key]
        data = await self.blocking(self.registry.fetch, card)
        return await self._to_r(lambda deliver: _Load(card, data, deliver))

    async def predict(self, loaded: Loaded, prep: Prepared, deadline: float | None = None) -> Answer:
        key = (loaded.card["name"], int(loaded.card["version"]))
        # a model whose predictions depend on the rows predicted together, or come back in
        # another order (not PredictSpec.gather): each request alone, never gathered with others
        sig = signature(prep) if loaded.spec.gather else (object(),)
        return await self._to_r(lambda deliver: _Predict(key, loaded, prep, sig, deliver), deadline)

    async def refresh(self) -> None:
        """Load each model's newest version, then make it current (never before it is loaded)."""
        catalog = await self.blocking(self.registry.catalog)
        self.catalog = (catalog, time.monotonic())
        for name, versions in catalog.items():
            newest = versions[-1]
            if self.state.current.get(name) == newest or (name, newest) in self.load_failed:
                continue
            try:
                await self._load_card(await self.blocking(self.registry.card, name, newest))
            except BaseException as exc:  # that model answers with its error on request; the rest are served
                self.load_failed.add((name, newest))
                log.warning(f"model {name!r} version {newest} could not be loaded: {exc}",
                            extra={"event": "serve_load_failed", "model": name, "version": newest})
                continue
            with self._lock:
                before = self.state.current.get(name)
                self.state.current[name] = newest
            if before is not None:
                self._used((name, before), keep=False)  # no longer current: it joins the LRU's versions
                log.info(f"model {name!r}: now serving version {newest} (was {before})",
                         extra={"event": "serve_new_version", "model": name, "version": newest})

    async def refresher(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # storage down: keep serving what is loaded, try again later
                log.warning(f"could not list the models: {exc}", extra={"event": "serve_refresh_failed"})
            self.state.ready = True
            await asyncio.sleep(self.settings.serve_refresh_seconds)

    # -- one request ---------------------------------------------------------------------------

    async def score(self, name: str, version: int | None, body: bytes, content_type: str) -> tuple[Loaded, Any, Scored]:
        """Parse, validate and score a request body, within SCORER_SERVE_DEADLINE_SECONDS.
        Returns the model, the request's table and the outcome. Raises HTTPError."""
        deadline = time.monotonic() + self.settings.serve_deadline_seconds
        with self._lock:
            self.state.arriving += 1
        queued = False
        try:
            loaded = await self.model(name, version)
            if len(body) <= INLINE_PARSE_BYTES:  # linear, and under a few ms: a thread hop would cost more
                table, prep, decimal = self._parse(loaded, body, content_type)
            else:
                table, prep, decimal = await asyncio.get_running_loop().run_in_executor(
                    self.cpu, self._parse, loaded, body, content_type)
            with self._lock:
                self.state.arriving -= 1
            queued = True
            if loaded.is_function:
                return loaded, table, await self._score_function(loaded, prep, table.num_rows, deadline)
            answer = await self.predict(loaded, prep, deadline)
            return loaded, table, outcome(prep, answer, lambda results: prediction_names(results, []))
        except ScorerError as exc:
            raise http_error_of(exc) from None
        finally:
            if not queued:
                with self._lock:
                    self.state.arriving -= 1

    def _parse(self, loaded: Loaded, body: bytes, content_type: str) -> tuple[pa.Table, Prepared, str]:
        """A body as the model's rows (on the parsing threads): the table, its rows prepared
        for R (an R function's typed as the batch job types its file), and the decimal mark.
        Linear in the body's size; the request limits first. Raises ScorerError, HTTPError."""
        where = "request"
        if content_type.startswith("text/csv"):
            charset = next((p.split("=", 1)[1].strip().strip('"') for p in content_type.split(";")[1:]
                            if p.strip().lower().startswith("charset=")), "utf-8")  # the body says, not a setting
            options = dataclasses.replace(CsvOptions.of(self.settings, "", na_kept(loaded.spec.schema,
                                                                                   self.settings.na_values)),
                                          encoding=charset)
            # the body is within SCORER_SERVE_MAX_BODY_BYTES already; read as Arrow it grows (offsets,
            # validity), so the reader's own cap is set where no body under that limit reaches it
            table, _, decimal = table_from_csv(body, where, 8 * self.settings.serve_max_body_bytes, options)
            self.limits.check(where, table.num_rows, table.column_names)
        else:
            table, decimal = table_from_json(body, where, self.limits), "."
        if loaded.is_function:
            return table, function_frame(one_batch(table), loaded.card.get("text_columns"), where, decimal), decimal
        schema = loaded.spec.schema
        check_columns(table.column_names, schema, where)
        batch = table.combine_chunks().to_batches()[0] if table.num_rows else None
        try:
            prep = prepare(batch, schema, where, decimal)
        except SchemaError as exc:  # the columns are there, but none of a column's values fits
            raise HTTPError(422, exc.kind, str(exc), exc.hint) from None
        if prep.n_kept == 0:
            scored = outcome(prep, None, lambda _: [])
            raise HTTPError(422, "AllRowsRejected", f"none of the {table.num_rows} row(s) could be scored.",
                            hint="See rejected for each row and why.", rejected=scored.rejected)
        return table, prep, decimal

    async def _score_function(self, loaded: Loaded, prep: Prepared, nrows: int, deadline: float | None = None
                              ) -> Scored:
        """An R function's answer to a request: the request's rows are the file score(data, ...)
        gets, typed as the batch job types a file (run_function, in _parse); its data frame is
        the answer, rows and columns of its own (numbered from 1 as its rows, not the request's)."""
        results = await self._to_r(lambda deliver: _Call(loaded, prep, nrows, deliver), deadline)
        names = [n for n, _ in results]
        columns = [a for _, a in results]
        return Scored(names, columns, list(range(1, (len(columns[0]) if columns else 0) + 1)), [])


def csv_body(table: pa.Table, scored: Scored, function: bool = False) -> bytes:
    """The request's scored rows with their predictions, as the blob output's CSV
    (a prediction column named like an input column gets ``_`` appended); an R
    function's data frame alone, as its blob output is."""
    if function:
        sink = pa.BufferOutputStream()
        pacsv.write_csv(pa.Table.from_arrays(scored.columns, names=scored.names), sink)
        return sink.getvalue().to_pybytes()
    kept = table.take(pa.array([r - 1 for r in scored.rows], pa.int64()))
    used, names = set(kept.column_names), []
    for n in scored.names:
        while n in used:
            n += "_"
        used.add(n)
        names.append(n)
    out = pa.Table.from_arrays(list(kept.columns) + scored.columns, names=kept.column_names + names)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(out, sink)
    return sink.getvalue().to_pybytes()


def openapi() -> dict:
    """The API's OpenAPI document (scorer/online/openapi.json, checked against the server by the tests)."""
    return json.loads(resources.files("scorer.online").joinpath("openapi.json").read_text())
