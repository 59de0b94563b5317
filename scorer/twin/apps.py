"""Container Apps, run: each app the local Azure creates (scorer.twin.resources) runs its
container's command (`scorer serve ...`) as a process of this checkout or a container of
its image (scorer.twin.backends), behind an ingress of its own on 127.0.0.1 that does what
Container Apps' built-in authentication does once the app's authConfig enables it.

    started(view)     the app's template: (re)started, a new revision, on a port of this machine
    auth(view)        containerApps/authConfigs: the ingress enforces it from then on
    removed(view)     the app deleted: its process stopped
    url(name)         where the app answers here (its fqdn stands for it)

The authentication, as Microsoft's documentation describes it for Entra ID (Container Apps
"Authentication and authorization", "Microsoft identity platform access tokens"): with
``globalValidation.unauthenticatedClientAction: Return401`` a request without a valid
bearer token is answered 401 before it reaches the app; a token is valid when it is the
local Entra's (signed by scorer.twin.standin.LocalIdentity, unexpired), its ``iss`` is the
provider's ``openIdIssuer``, and its ``aud`` is one of ``validation.allowedAudiences`` (or
the registration's client ID when none is listed). The local Entra issues a v1 token
(``iss https://sts.windows.net/<tenant>/``) unless the app registration asks for v2
(``requestedAccessTokenVersion: 2``; here the token request says it: ``app_token``).
"""

from __future__ import annotations

import http.client
import http.server
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("scorer.twin")

#: headers a proxy does not pass on
_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class App:
    """One running app: its process, the port it listens on, and its ingress."""

    name: str
    upstream: int
    handle: Any = None
    auth: dict | None = None
    server: http.server.ThreadingHTTPServer | None = None
    revisions: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}" if self.server else ""


class Apps:
    """The local Azure's running Container Apps."""

    def __init__(self, types: Any):  # types: scorer.twin.resources.ResourceTypes
        self.types = types
        self.apps: dict[str, App] = {}
        self.lock = threading.Lock()

    def url(self, name: str) -> str:
        """Where app ``name`` answers on this machine (http://127.0.0.1:PORT)."""
        return self.apps[name.lower()].url

    def started(self, view: dict, existing: dict | None) -> None:
        from scorer.twin.backends import ProcessBackend

        name = view["name"]
        props = view["properties"]
        container = ((props.get("template") or {}).get("containers") or [{}])[0]
        port = _free_port()
        args = _with_port([str(a) for a in container.get("args") or []], port)
        env = {e["name"]: str(e.get("value", "")) for e in container.get("env") or []}
        # the app's identity's access, as the container groups' (scorer.twin.standin): Azurite's key
        env["AZURE_STORAGE_CONNECTION_STRING"] = self.types.azure.azurite
        backend = self.types.options.backend or ProcessBackend()
        with self.lock:
            app = self.apps.get(name.lower())
            if app is not None and app.revisions and app.revisions[-1] == props.get("latestReadyRevisionName"):
                return  # the same revision: nothing to restart
            if app is None:
                app = self.apps[name.lower()] = App(name=name, upstream=port)
                app.server = self._ingress(app)
            elif app.handle is not None:
                backend.stop(app.handle)
                backend.remove(app.handle)
            app.upstream = port
            app.handle = backend.start(f"{name}-{port}", str(container.get("image", "")), env,
                                       float((container.get("resources") or {}).get("cpu") or 1), 2.0, args=args)
            app.revisions.append(props.get("latestReadyRevisionName"))
        log.info(f"container app {name} running at {app.url}", extra={"event": "app_started", "app": name,
                                                                         "url": app.url})
        if self.types.options.on_app is not None:
            self.types.options.on_app(name, app.url)

    def auth(self, view: dict, existing: dict | None) -> None:
        app = self.apps.get(view["id"].split("/")[-3].lower())
        if app is not None:
            app.auth = view["properties"]

    def removed(self, view: dict) -> None:
        from scorer.twin.backends import ProcessBackend

        with self.lock:
            app = self.apps.pop(view["name"].lower(), None)
        if app is not None:
            backend = self.types.options.backend or ProcessBackend()
            if app.handle is not None:
                backend.stop(app.handle)
                backend.remove(app.handle)
            if app.server is not None:
                app.server.shutdown()
                app.server.server_close()

    def close(self) -> None:
        for name in list(self.apps):
            self.removed({"name": name})

    # -- the ingress -----------------------------------------------------------------------------

    def refusal(self, app: App, headers: Any) -> str | None:
        """Why the app's authentication refuses a request with these headers, or None."""
        auth = app.auth or {}
        if not (auth.get("platform") or {}).get("enabled"):
            return None
        if (auth.get("globalValidation") or {}).get("unauthenticatedClientAction", "RedirectToLoginPage") \
                == "AllowAnonymous":
            return None
        aad = (auth.get("identityProviders") or {}).get("azureActiveDirectory") or {}
        value = headers.get("Authorization") or ""
        claims = self.types.azure.identity.claims(value[7:]) if value.startswith("Bearer ") else None
        if claims is None:
            return "no valid bearer token"
        issuer = ((aad.get("registration") or {}).get("openIdIssuer") or "").rstrip("/")
        if str(claims.get("iss", "")).rstrip("/") != issuer:
            return f"the token's issuer {claims.get('iss')!r} is not the provider's openIdIssuer {issuer!r}"
        audiences = (aad.get("validation") or {}).get("allowedAudiences") or \
            [(aad.get("registration") or {}).get("clientId")]
        if claims.get("aud") not in audiences:
            return f"the token's audience {claims.get('aud')!r} is not among {audiences}"
        return None

    def _ingress(self, app: App) -> http.server.ThreadingHTTPServer:
        apps = self

        class Ingress(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                why = apps.refusal(app, self.headers)
                if why is not None:
                    self._answer(401, {"WWW-Authenticate": 'Bearer realm="' + app.name + '"'}, b"")
                    log.info(f"container app {app.name}: 401, {why}", extra={"event": "app_refused",
                                                                             "app": app.name, "why": why})
                    return
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", app.upstream, timeout=120)
                    conn.request(self.command, self.path, body=body or None,
                                 headers={k: v for k, v in self.headers.items() if k.lower() not in _HOP})
                    resp = conn.getresponse()
                    data = resp.read()
                    conn.close()
                except OSError:  # the revision is still starting: as Container Apps' envoy answers
                    self._answer(503, {}, b"upstream connect error")
                    return
                self._answer(resp.status, {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}, data)

            def _answer(self, status: int, headers: dict, data: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ingress)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name=f"ingress:{app.name}", daemon=True).start()
        return server


def _with_port(args: list[str], port: int) -> list[str]:
    """The container's arguments with its --port given this machine's free port (every app's
    container listens on its targetPort in its own network on Azure; here they share one)."""
    out = list(args)
    for i, a in enumerate(out[:-1]):
        if a == "--port":
            out[i + 1] = str(port)
            return out
    return out + ["--port", str(port)]
