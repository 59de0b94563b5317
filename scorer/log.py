"""JSON-lines logging to stdout, with secrets scrubbed from every line.

Every line is one JSON object: ``ts``, ``level``, ``event`` (a stable name such as
``input_scored``), ``msg`` and the event's own fields. Account keys, SAS
signatures and bearer tokens are redacted here and in reports (``redact``), by their
shape and by the values this process holds (``keep_secret``), so a secret that slips
into an exception message still never reaches a log or a blob. What else writes to
stdout or stderr (R's system(), C code) is logged as lines of its own
(``route_process_output``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Callable
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


#: the values of the secrets this process holds (an account key, a SAS, a client secret):
#: redacted wherever they appear, also bare, without the text that usually precedes them
_literals: list[str] = []


def keep_secret(*values: str | None) -> None:
    """Redact these values from now on, wherever they appear (a bare account key in an R
    error reached the log, the report, the note and an HTTP answer, issue 26). Values
    shorter than 8 characters are ignored: they would redact ordinary words."""
    for v in values:
        if v and len(v) >= 8 and v not in _literals:
            _literals.append(v)
    _literals.sort(key=len, reverse=True)  # a longer secret that holds a shorter one first


def redact(text: str) -> str:
    """``text`` with every known kind of secret, and every value kept with
    ``keep_secret``, replaced by ``<redacted>``."""
    if _ANY_SECRET.search(text):
        for pattern, repl in _SECRET_PATTERNS:
            text = pattern.sub(repl, text)
    for value in _literals:
        if value in text:
            text = text.replace(value, "<redacted>")
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
        if record.exc_info:
            # the cause always (an internal error of `scorer serve` has nothing else to go by);
            # the traceback only with --debug: a user's log never shows one
            out["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
            if self.context.get("debug"):
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


def route_process_output(stream) -> Callable[[], None]:
    """Send what anything but this log writes to file descriptors 1 and 2 (the children of
    R's system(), C code in R packages) through a small forked process that logs each line
    as JSON (``process_output``, redacted), instead of raw into the job's stdout, which is
    JSON lines (issue 26). ``stream`` is a copy of the original stdout, where the log itself
    writes (``setup(stream=...)``). Call while the process has no other thread (it forks),
    after the secrets are kept. Returns the function that puts 1 and 2 back and waits for
    the last lines."""
    import os

    saved = os.dup(1), os.dup(2)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the relay: no thread, no R, only this module
        try:
            os.close(write)
            _relay(read, stream.fileno())
        finally:
            os._exit(0)
    os.close(read)
    os.dup2(write, 1)
    os.dup2(write, 2)
    os.close(write)

    def restore() -> None:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved[0], 1)  # the relay's last writer gone: it reads to the end, and exits
        os.dup2(saved[1], 2)
        os.waitpid(pid, 0)

    return restore


def _relay(read: int, out: int) -> None:
    import os

    with os.fdopen(read, "rb") as src, os.fdopen(out, "w", closefd=False) as dst:
        for raw in src:
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            if text:
                line = {"ts": now(), "level": "INFO", "event": "process_output", "msg": text, **_context}
                dst.write(redact(json.dumps(line)) + "\n")
                dst.flush()


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def monotonic() -> float:
    return time.monotonic()
