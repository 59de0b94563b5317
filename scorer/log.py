"""JSON-lines logging to stdout, with secrets scrubbed from every line.

Every line is one JSON object: ``ts``, ``level``, ``event`` (a stable name such as
``input_scored``), ``msg`` and the event's own fields. Account keys, SAS
signatures and bearer tokens are redacted here and in reports (``redact``), so a
secret that slips into an exception message still never reaches a log or a blob.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import datetime, timezone

# each kind of secret: what comes before it, and what it is made of
_SECRETS = [
    (r"AccountKey=", r"[^;\s\"']+"),
    (r"SharedAccessSignature=", r"[^;\s\"']+"),
    (r"[?&]sig=", r"[^&\s\"']+"),
    (r"Bearer\s+", r"[A-Za-z0-9._~+/=-]+"),
    (r"client_secret=", r"[^&\s\"']+"),
]
_SECRET_PATTERNS = [(re.compile(f"({before}){value}", re.I), r"\1<redacted>") for before, value in _SECRETS]
# one search for any of them first: most lines hold none, and five substitutions cost a
# request's log line a third of its time
_ANY_SECRET = re.compile("|".join(before for before, _ in _SECRETS), re.I)

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact(text: str) -> str:
    """``text`` with every known kind of secret replaced by ``<redacted>``."""
    if not _ANY_SECRET.search(text):
        return text
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


def redact_obj(obj):
    """Redact every string inside a JSON-like structure."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    return obj


class JsonFormatter(logging.Formatter):
    def __init__(self, context: dict):
        super().__init__()
        self.context = context

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "event": getattr(record, "event", record.name),
            "msg": record.getMessage(),
        }
        out.update(self.context)
        for k, v in vars(record).items():
            if k not in _STANDARD and k != "event":
                out[k] = v
        if record.exc_info and self.context.get("debug"):
            out["traceback"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str))


_context: dict = {}


def setup(level: str = "INFO", debug: bool = False, stream=None) -> dict:
    """Send scorer's logs (and the Azure SDK's warnings) to stdout as JSON lines.
    Returns the context dict whose keys (e.g. run_id) are added to every line."""
    _context.clear()
    if debug:
        _context["debug"] = True
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(_context))
    # what a line never shows is not gathered (the logging HOWTO's "Optimization"): the
    # caller's file and line, thread and process; a line costs a third less
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("scorer").setLevel("DEBUG" if debug else level)
    # the SDK logs every HTTP request at INFO: far too chatty for a job log
    logging.getLogger("azure").setLevel(logging.WARNING)
    return _context


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def monotonic() -> float:
    return time.monotonic()
