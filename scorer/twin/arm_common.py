"""What the local Azure's parts share (scorer.twin.arm serves, scorer.twin.resources and
its siblings are the resource types): the refusal every one of them raises, this
machine's subscription, tenant and signed-in operator, timestamps and resource IDs."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import secrets
from typing import Any, Callable

from scorer.azure.template import split_id

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
TENANT = "72f988bf-0000-0000-0000-000000000000"
OPERATOR = "7a3c6f1e-0000-4000-8000-00000000beef"   # the signed-in user's object ID here
#: resource providers a subscription has; the local subscription starts with none registered
NAMESPACES = ("Microsoft.Resources", "Microsoft.Storage", "Microsoft.ManagedIdentity", "Microsoft.Authorization",
              "Microsoft.ContainerRegistry", "Microsoft.Logic", "Microsoft.EventGrid", "Microsoft.App",
              "Microsoft.ContainerInstance")
#: registered from the start, as on every Azure subscription
ALWAYS_REGISTERED = ("Microsoft.Resources", "Microsoft.Authorization")


class ArmError(Exception):
    """A refusal, with its HTTP status and ARM's error code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parent_id(rid: str) -> str:
    """The ID of a child resource's parent (``.../a/x/b/y`` -> ``.../a/x``)."""
    scope, rtype, name = split_id(rid)
    ns, *types = rtype.split("/")
    names = name.split("/")
    if len(types) < 2:
        return scope
    return scope + "/providers/" + ns + "/" + "/".join(f"{t}/{n}" for t, n in zip(types[:-1], names[:-1]))


def json_handler(handle: Callable[[str, str, dict, bytes], tuple[int, dict, Any]]) -> type:
    """An HTTP request handler class that answers every method with ``handle(method,
    target, headers, body)``: (status, headers, JSON-able payload or bytes), as ARM does
    (JSON, an x-ms-request-id, no body for HEAD)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            status, headers, payload = handle(self.command, self.path, dict(self.headers), raw)
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            for k, v in {"Content-Type": "application/json; charset=utf-8", "x-ms-request-id": secrets.token_hex(8),
                         **headers}.items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_DELETE = do_POST = do_PATCH = do_HEAD = _serve
    return Handler
