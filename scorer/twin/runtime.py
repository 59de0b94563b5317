"""How Logic Apps takes a trigger's calls and runs them, shared by the twin (scorer.twin.local)
and the local Azure's Logic Apps (scorer.twin.workflows): the trigger's queue of runs, a caller
waiting for the run's Response, when a Recurrence fires next, and where the workflow's Http
actions go (TwinTransport).
"""

from __future__ import annotations

import http.client
import logging
import queue
import socket
import ssl
import threading
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

from scorer.twin.engine import HttpRequest, HttpResponse
from scorer.twin.standin import LocalIdentity

#: Logic Apps' limit on waiting runs for a trigger with a concurrency limit: 10 plus the number
#: of concurrent runs (Logic Apps limits, "Concurrency and de-batching")
MAX_WAITING_RUNS = 10
#: how long a Request trigger's caller waits for the run's Response (then 504)
CALLER_WAIT_S = 120
STORAGE_AUDIENCE = "https://storage.azure.com/"


class TriggerQueue:
    """Runs of one trigger, at most ``runs`` at a time (its runtimeConfiguration), the others
    waiting, at most MAX_WAITING_RUNS + runs of them; with ``runs`` None (concurrency control
    off, Logic Apps' default) every run starts at once. ``owner.execute(trigger, outputs,
    respond, label)`` runs one."""

    def __init__(self, owner: Any, name: str, runs: int | None):
        self.owner = owner
        self.name = name
        self.runs = runs
        self.waiting: queue.Queue = queue.Queue()
        self.workers = [threading.Thread(target=self._work, name=f"runs:{name}", daemon=True)
                        for _ in range(runs or 0)]
        for w in self.workers:
            w.start()

    def fire(self, outputs: dict, respond=None, label: str = "") -> threading.Event | None:
        """Queue a run; the event is set when it has ended. None when too many wait (429)."""
        done = threading.Event()
        if self.runs is None:
            threading.Thread(target=self._one, args=(outputs, respond, label, done), name=f"run:{self.name}",
                             daemon=True).start()
            return done
        if self.waiting.qsize() >= MAX_WAITING_RUNS + self.runs:
            return None
        self.waiting.put((outputs, respond, label, done))
        return done

    def _work(self) -> None:
        while True:
            self._one(*self.waiting.get())

    def _one(self, outputs: dict, respond, label: str, done: threading.Event) -> None:
        try:
            self.owner.execute(self.name, outputs, respond, label)
        except Exception:  # a defect in one run: said, and the trigger's worker goes on
            logging.getLogger("scorer.twin").exception("a run of trigger %s crashed", self.name)
        finally:
            done.set()

    def drop_waiting(self) -> None:
        """Forget the runs that have not started (their callers are told they ended)."""
        while True:
            try:
                self.waiting.get_nowait()[3].set()
            except queue.Empty:
                return


class Call:
    """One caller of a Request trigger, waiting for the run's Response: ``respond`` is the
    engine's callback, False once the caller has stopped waiting."""

    def __init__(self):
        self.answer: dict | None = None
        self.gone = False
        self.lock = threading.Lock()
        self.got = threading.Event()

    def respond(self, answer: dict) -> bool:
        with self.lock:
            if self.gone:
                return False
            self.answer = answer
        self.got.set()
        return True

    def wait(self, seconds: float) -> dict | None:
        self.got.wait(seconds)
        with self.lock:
            self.gone = self.answer is None
            return self.answer


class TwinTransport:
    """Sends the workflow's Http actions: to the ARM stand-in with a bearer token for
    the action's identity and audience, and to Azurite, which cannot read tokens over
    plain HTTP, with an account SAS. Like Azure Storage with a token, a storage
    request must carry ``x-ms-version`` and ``x-ms-date``, and its audience must be
    https://storage.azure.com/. Nothing else is reachable."""

    def __init__(self, identity: LocalIdentity, arm_url: str, blob_endpoint: str, account: str, key: str,
                 tls: ssl.SSLContext | None = None):
        self.identity = identity
        self.tls = tls  # trusts the local Azure's certificate, when ARM is it (https)
        self.arm_url = arm_url
        self.blob_endpoint = blob_endpoint
        self.account, self.key = account, key

    def _sas(self) -> str:
        from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

        return generate_account_sas(self.account, self.key, ResourceTypes(container=True, object=True),
                                    AccountSasPermissions(read=True, write=True, delete=True, list=True, create=True,
                                                          add=True), expiry=datetime.now(timezone.utc) + timedelta(hours=1))

    def send(self, request: HttpRequest, timeout: float) -> HttpResponse:
        headers = dict(request.headers)
        uri = request.uri
        auth = request.authentication or {}
        if uri.startswith(self.arm_url):
            if auth.get("type") == "ManagedServiceIdentity":
                audience = auth.get("audience") or "https://management.azure.com/"
                headers["Authorization"] = "Bearer " + self.identity.token(auth.get("identity", "system"), audience)
        elif uri.startswith(self.blob_endpoint):
            refused = self._storage_refusal(headers, auth)
            if refused:
                return refused
            uri += ("&" if "?" in uri else "?") + self._sas()
        else:
            raise OSError(f"the twin reaches only the ARM stand-in and Azurite, not {uri}")
        parts = urlsplit(uri)
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=self.tls) \
            if parts.scheme == "https" else http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        try:
            conn.request(request.method, parts.path + ("?" + parts.query if parts.query else ""), body=request.body,
                         headers=headers)
            resp = conn.getresponse()
            return HttpResponse(resp.status, dict(resp.getheaders()), resp.read())
        except socket.timeout as exc:
            raise TimeoutError(f"no answer from {parts.netloc} within {timeout:g} s") from exc
        finally:
            conn.close()

    @staticmethod
    def _storage_refusal(headers: dict, auth: dict) -> HttpResponse | None:
        def refuse(message: str) -> HttpResponse:
            body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code><Message>'
                    f"{message}</Message></Error>").encode()
            return HttpResponse(403, {"Content-Type": "application/xml", "x-ms-error-code": "AuthenticationFailed"},
                                body)
        if auth.get("type") != "ManagedServiceIdentity" or auth.get("audience") != STORAGE_AUDIENCE:
            return refuse(f"a token for audience {auth.get('audience')!r}; Blob Storage wants {STORAGE_AUDIENCE}")
        names = {k.lower() for k in headers}
        missing = [h for h in ("x-ms-version", "x-ms-date") if h not in names and not (h == "x-ms-date" and "date" in names)]
        if missing:
            return refuse(f"Server failed to authenticate the request: header(s) {', '.join(missing)} missing "
                          "(required with a bearer token)")
        return None
