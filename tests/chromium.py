"""Headless Chromium (Debian's `chromium`) driven over the DevTools protocol: open a
page, and record every network request, console message, exception and log entry
(where Chromium reports a Content-Security-Policy violation) while it loads."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import websocket


@dataclass
class Visit:
    requests: list[str] = field(default_factory=list)   # URLs, the page's own included
    console: list[dict] = field(default_factory=list)    # Runtime.consoleAPICalled params
    exceptions: list[dict] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)        # Log.entryAdded entries
    failed: list[str] = field(default_factory=list)      # Network.loadingFailed reasons


class Chromium:
    def __init__(self) -> None:
        exe = shutil.which("chromium")
        if exe is None:
            raise FileNotFoundError("chromium")
        self.profile = tempfile.TemporaryDirectory(prefix="scorer-chromium-")
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile.name}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            url = m.group(1) if m else None
        if url is None:
            self.close()
            raise RuntimeError("chromium did not start its DevTools endpoint")
        self.ws = websocket.create_connection(url, timeout=30)
        self._id = 0
        self._events: list[dict] = []

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def _drain(self, seconds: float, until: str | None = None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ws.settimeout(max(0.05, end - time.monotonic()))
            try:
                event = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                break
            self._events.append(event)
            if until and event.get("method") == until:
                break
        self.ws.settimeout(30)

    def visit(self, url: str, width: int = 1100, height: int = 900) -> tuple[Visit, str]:
        """Open ``url`` in a new tab; returns what happened and the tab's session id."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": width < 600}, session=session)
        self._events.clear()
        self.call("Page.navigate", {"url": url}, session=session)
        self._drain(20, until="Page.loadEventFired")
        self._drain(1.0)  # late console messages and requests
        seen = Visit()
        for e in self._events:
            if e.get("sessionId") != session:
                continue
            p = e.get("params", {})
            method = e.get("method")
            if method == "Network.requestWillBeSent":
                seen.requests.append(p["request"]["url"])
            elif method == "Network.loadingFailed":
                seen.failed.append(p.get("blockedReason") or p.get("errorText", ""))
            elif method == "Runtime.consoleAPICalled":
                seen.console.append(p)
            elif method == "Runtime.exceptionThrown":
                seen.exceptions.append(p)
            elif method == "Log.entryAdded":
                seen.log.append(p["entry"])
        return seen, session

    def evaluate(self, expression: str, session: str):
        got = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        return got["result"].get("value")

    def screenshot(self, session: str, clip: dict | None = None) -> bytes:
        params = {"format": "png", "captureBeyondViewport": True}
        if clip:
            params["clip"] = dict(clip, scale=1)
        return base64.b64decode(self.call("Page.captureScreenshot", params, session=session)["data"])

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.profile.cleanup()
