"""The HTTP routes of `scorer serve` (Starlette), over scorer.online.serve.Server.

Every answer is JSON (CSV for predictions when the client asks with ``Accept: text/csv``);
every error is ``{"error": {"kind", "message", "what_to_do"}}`` with the batch job's own
messages; never a traceback. One JSON log line per request: method, path, status, rows,
duration; never the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import Response
from starlette.routing import Route

from scorer.errors import ScorerError
from scorer.online.rows import prototype, records
from scorer.online.serve import HTTPError, Server, csv_body, http_error_of, openapi

log = logging.getLogger("scorer.serve")


class JSONResponse(_StarletteJSON):
    """JSON with orjson: a 1,000-row answer serializes in 0.05 ms rather than 0.7 ms."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def _body(request: Request, server: Server) -> bytes:
    """The request's body: at most SCORER_SERVE_MAX_BODY_BYTES, sent within
    SCORER_SERVE_BODY_SECONDS, and at most SCORER_SERVE_MAX_BODIES read at once, so that slow
    or large bodies cannot hold the server's memory. Raises HTTPError (413, 408, 503)."""
    s = server.settings
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > s.serve_max_body_bytes:
        raise _too_large(s.serve_max_body_bytes)
    if server.bodies is None or server.bodies.locked():
        raise HTTPError(503, "Busy", f"{s.serve_max_bodies} requests are sending their bodies already "
                        "(SCORER_SERVE_MAX_BODIES).", hint="Try again in a moment.", retry_after=1)
    async with server.bodies:
        chunks, size = [], 0

        async def read() -> None:
            nonlocal size
            async for chunk in request.stream():
                size += len(chunk)
                if size > s.serve_max_body_bytes:
                    raise _too_large(s.serve_max_body_bytes)
                chunks.append(chunk)
        try:
            async with asyncio.timeout(s.serve_body_seconds):  # no task of its own, as wait_for would make
                await read()
        except TimeoutError:
            raise HTTPError(408, "RequestTimeout", f"the body did not arrive within SCORER_SERVE_BODY_SECONDS "
                            f"({s.serve_body_seconds:g} s; {size} bytes came).",
                            hint="Send the body at once, or fewer rows per request.") from None
        return b"".join(chunks)


def _too_large(limit: int) -> HTTPError:
    return HTTPError(413, "RequestTooLarge", f"the body is larger than SCORER_SERVE_MAX_BODY_BYTES ({limit} bytes).",
                     hint="Send fewer rows per request, or drop a file for batch scoring.")


def _version(request: Request) -> int | None:
    raw = request.query_params.get("version")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:  # "²" is a digit to Python, not a number
        raise HTTPError(400, "ConfigError", f"version={raw!r} is not a version number.",
                        hint="Give a published version, e.g. ?version=2, or leave it out for the current one.")
    return int(raw)


def build_app(server: Server) -> Starlette:
    s = server.settings
    spec = openapi()

    async def healthz(request: Request) -> Response:
        # the liveness probe: a model whose predict() never returns holds R for good, so the
        # replica must be restarted (docs/serving.md, "Probes")
        since = server.r_busy_since
        busy = time.monotonic() - since if since is not None else 0.0
        if busy > s.serve_stuck_seconds:
            return JSONResponse({"status": "stuck", "message": f"R has been in one call for {busy:.0f} s "
                                 f"(SCORER_SERVE_STUCK_SECONDS is {s.serve_stuck_seconds:g})."}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not server.state.ready:
            return JSONResponse({"status": "starting", "message": "loading the published models"}, status_code=503)
        return JSONResponse({"status": "ready", "models": dict(sorted(server.state.current.items()))})

    async def list_models(request: Request) -> Response:
        catalog = await server.blocking(server.registry.catalog)
        return JSONResponse({"models": [{"name": n, "versions": v, "current": v[-1]} for n, v in catalog.items()]})

    async def show_model(request: Request) -> Response:
        name = request.path_params["name"]
        card = await _card(server, name, _version(request))
        return JSONResponse(dict(card, prototype=prototype(card)))

    async def predict(request: Request) -> Response:
        name = request.path_params["name"]
        version = _version(request)
        body = await _body(request, server)
        loaded, table, scored = await server.score(name, version, body, request.headers.get("content-type", ""))
        request.state.rows = table.num_rows
        card = loaded.card
        if "text/csv" in request.headers.get("accept", ""):
            rejected = ",".join(str(r["row"]) for r in scored.rejected[:100])
            return Response(csv_body(table, scored, loaded.is_function), media_type="text/csv",
                             headers={"X-Scorer-Model": card["name"], "X-Scorer-Version": str(card["version"]),
                                      "X-Scorer-Rejected-Rows": rejected})
        return JSONResponse({"model": card["name"], "version": card["version"], "predictions": records(scored),
                             "rejected": scored.rejected})

    async def openapi_doc(request: Request) -> Response:
        return JSONResponse(spec)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        server.bodies = asyncio.Semaphore(s.serve_max_bodies)
        task = asyncio.create_task(server.refresher())
        yield
        task.cancel()

    async def http_error(request: Request, exc: HTTPError) -> Response:
        retry = exc.extra.pop("retry_after", None)
        return JSONResponse(exc.body(), status_code=exc.status,
                            headers={"Retry-After": str(retry)} if retry is not None else None)

    async def internal_error(request: Request, exc: Exception) -> Response:
        # the details go to the log (by _Logged, which sees the exception next), never to the client
        return JSONResponse({"error": {"kind": "InternalError", "message": "internal error; the server's log has "
                                       "the details", "what_to_do": "Please report it with the time of the "
                                       "request."}}, status_code=500)

    app = Starlette(routes=[
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/openapi.json", openapi_doc),
        Route("/v1/models", list_models), Route("/v1/models/{name}", show_model),
        Route("/v1/models/{name}/predict", predict, methods=["POST"]),
    ], lifespan=lifespan, exception_handlers={HTTPError: http_error, Exception: internal_error})
    return _Logged(app)


async def _card(server: Server, name: str, version: int | None) -> dict:
    try:
        return await server.blocking(server.registry.card, name, version)
    except ScorerError as exc:
        raise http_error_of(exc) from None


class _Logged:
    """ASGI middleware: one log line per request (method, path, status, rows, time),
    and the traceback of an internal error, which the client never sees."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t = time.perf_counter()
        status = 500

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:  # already answered with a 500 by internal_error
            log.error("internal error", exc_info=True, extra={"event": "serve_internal_error", "path": scope["path"]})
        state = scope.get("state") or {}
        log.info(f"{scope['method']} {scope['path']} {status}",
                 extra={"event": "request", "method": scope["method"], "path": scope["path"], "status": status,
                        "rows": state.get("rows"), "ms": round((time.perf_counter() - t) * 1000, 2)})
