"""A local stand-in for Azure Resource Manager's Container Instances API, for the twin.

A loopback HTTP server that answers the calls logicapp/workflow.json makes, with the
status codes and bodies of Microsoft's published REST examples for
Microsoft.ContainerInstance 2023-05-01 (azure-rest-api-specs; tests/fixtures holds the
copies the tests compare against):

    PUT    .../containerGroups/{name}?api-version=2023-05-01        create: 201, provisioningState Pending
    GET    .../containerGroups/{name}?api-version=2023-05-01        the group, with instanceView
    DELETE .../containerGroups/{name}?api-version=2023-05-01        200 with the group; its container is stopped
    GET    .../containerGroups/{name}/containers/{c}/logs?tail=N     {"content": "..."}

The container runs on this machine through a backend (scorer.twin.backends). States
follow ACI's: provisioningState Pending, then Succeeded once the container runs (or
Failed when its image cannot be pulled, with instanceView.state left Pending and an
event saying why); instanceView.state Running, then Succeeded or Failed when the
container ends (restartPolicy Never); the container's currentState Terminated with its
exitCode. A deleted group answers 404 ResourceNotFound.

Like ARM it checks the bearer token's audience (a token for another resource is
refused with 401 InvalidAuthenticationTokenAudience) and the api-version, and refuses a
body the real API would refuse: it is read with the SDK's own ContainerGroup model,
and a missing required property, an unknown one, or a value outside an enum is a 400.

Faults can be injected (``Faults``): an image that cannot be pulled, a create refused
for quota, a group that never leaves Pending, a group that answers 404, throttling
(429 with Retry-After).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from scorer.twin.arm_common import json_handler
from scorer.twin.backends import Backend

API_VERSIONS = ("2023-05-01",)
_PATH = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/"
                   r"microsoft\.containerinstance/containergroups/(?P<name>[^/]+)"
                   r"(?:/containers/(?P<container>[^/]+)/logs)?/?$", re.I)
_GROUP_NAME = re.compile(r"^(?!-)(?!.*--)[a-z0-9-]{1,63}(?<!-)$")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class LocalIdentity:
    """The twin's managed identities: mints bearer tokens (JWT-shaped, signed with a key
    of this process) for an identity and an audience, and verifies them."""

    def __init__(self):
        self._key = secrets.token_bytes(32)

    def token(self, identity: str, audience: str, seconds: int = 3600, claims: dict | None = None) -> str:
        """A token for a managed identity (``identity`` its resource ID), or, with
        ``claims``, for whoever they name (the local Azure's signed-in user)."""
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        body = _b64(json.dumps({"aud": audience, "xms_mirid": identity, "oid": hashlib.sha1(identity.encode()).hexdigest(),
                                "idtyp": "app", "exp": int(time.time()) + seconds, **(claims or {})}).encode())
        sig = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        return f"{head}.{body}.{sig}"

    def claims(self, token: str) -> dict | None:
        """The token's claims, or None when it is not one of ours or has expired."""
        try:
            head, body, sig = token.split(".")
        except ValueError:
            return None
        good = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(good, sig):
            return None
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        return claims if claims.get("exp", 0) > time.time() else None


@dataclass
class Faults:
    """Failures to inject, as `scorer local --fault` spells them:

    unpullable    every group's image cannot be pulled (provisioningState Failed)
    quota:N       the Nth create is refused (409 ContainerGroupQuotaReached)
    pending       groups never leave Pending
    gone:N        the Nth group answers 404 to GET from its first poll on
    throttle:K    the next K requests answer 429 with Retry-After: 1
    """

    unpullable: bool = False
    quota: set[int] = field(default_factory=set)
    pending: bool = False
    gone: set[int] = field(default_factory=set)
    throttle: int = 0

    @classmethod
    def parse(cls, specs: list[str]) -> "Faults":
        """Raises ValueError naming a spec it does not know."""
        f = cls()
        for spec in specs:
            kind, _, n = spec.partition(":")
            if kind == "unpullable":
                f.unpullable = True
            elif kind == "pending":
                f.pending = True
            elif kind in ("quota", "gone", "throttle") and n.isdigit():
                if kind == "throttle":
                    f.throttle = int(n)
                else:
                    getattr(f, kind).add(int(n))
            else:
                raise ValueError(f"fault {spec!r} is not one of unpullable, pending, quota:N, gone:N, throttle:K")
        return f


class _Group:
    def __init__(self, name: str, body: dict, index: int):
        self.name = name
        self.body = body
        self.index = index              # 1 for the first group created
        self.provisioning = "Pending"
        self.state = "Pending"
        self.container_state: dict = {"state": "Waiting", "detailStatus": ""}
        self.events: list[dict] = []
        self.handle: Any = None
        self.exit_code: int | None = None
        self.started_at = time.monotonic()
        self.deleted = False
        self.polled = 0

    def event(self, name: str, message: str, kind: str = "Normal") -> None:
        self.events.append({"count": 1, "firstTimestamp": _now(), "lastTimestamp": _now(),
                            "message": message, "name": name, "type": kind})


class ArmStandIn:
    """The stand-in server. ``audience`` is the resource-manager URL the workflow uses
    (with its trailing slash); tokens must be for it. ``on_event(group, what, detail)``
    hears of jobs starting and ending, for the console."""

    def __init__(self, backend: Backend, identity: LocalIdentity, subscription: str, resource_group: str,
                 faults: Faults | None = None, on_event: Callable[[str, str, dict], None] | None = None,
                 audience: str | None = None, identity_environment: dict[str, str] | None = None):
        self.backend = backend
        self.identity = identity
        self.subscription = subscription
        self.resource_group = resource_group
        self.faults = faults or Faults()
        self.on_event = on_event or (lambda group, what, detail: None)
        # what a group with a user-assigned identity gets in its environment: here, the
        # Azurite connection string stands for the access the identity's roles give
        self.identity_environment = identity_environment or {}
        self.groups: dict[str, _Group] = {}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status), for tests
        self._created = 0
        self._lock = threading.Lock()
        self.server: http.server.ThreadingHTTPServer | None = None
        if audience is not None:  # served by the local Azure (scorer.twin.arm), on its address
            self.url = audience
            return
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), json_handler(self.handle))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, name="arm-standin", daemon=True).start()

    # -- requests --------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, dict, Any]:
        status, out_headers, payload = self._route(method, path, headers, body)
        self.requests.append((method, urlsplit(path).path, status))
        return status, out_headers, payload

    def _route(self, method, path, headers, body):
        with self._lock:
            if self.faults.throttle > 0:
                self.faults.throttle -= 1
                return 429, {"Retry-After": "1"}, _error("TooManyRequests", "The request is being throttled.")
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        claims = self.identity.claims(auth[7:]) if auth.startswith("Bearer ") else None
        if claims is None:
            return 401, {}, _error("AuthenticationFailed", "Authentication failed. The 'Authorization' header is "
                                   "missing or the access token is not valid.")
        if claims.get("aud") != self.url:
            return 401, {}, _error("InvalidAuthenticationTokenAudience", "The access token has been obtained for "
                                   f"wrong audience or resource '{claims.get('aud')}'. It should exactly match with "
                                   f"one of the allowed audiences '{self.url}'.")
        url = urlsplit(path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        version = query.get("api-version")
        if version not in API_VERSIONS:
            return 400, {}, _error("NoRegisteredProviderFound", f"No registered resource provider found for "
                                   f"location and API version '{version}'. The supported api-versions are "
                                   f"'{', '.join(API_VERSIONS)}'.")
        m = _PATH.match(url.path)
        if not m:
            return 404, {}, _error("NotFound", f"No route for {method} {url.path} in this stand-in.")
        if m["sub"] != self.subscription or m["rg"].lower() != self.resource_group.lower():
            return 404, {}, _error("ResourceGroupNotFound", f"Resource group '{m['rg']}' could not be found.")
        name = m["name"]
        if m["container"]:
            return self._logs(name, m["container"], query) if method == "GET" else \
                (405, {}, _error("MethodNotAllowed", f"{method} is not allowed on logs"))
        if method == "PUT":
            return self._put(name, body)
        if method == "GET":
            return self._get(name)
        if method == "DELETE":
            return self._delete(name)
        return 405, {}, _error("MethodNotAllowed", f"{method} is not allowed here")

    def _put(self, name: str, raw: bytes):
        if not _GROUP_NAME.match(name):
            return 400, {}, _error("ContainerGroupNameInvalid", f"The container group name '{name}' is invalid. The "
                                   "name must contain no more than 63 characters and only lower-case letters, "
                                   "digits and '-'; it cannot start or end with '-' or have two consecutive '-'.")
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            return 400, {}, _error("InvalidRequestContent", f"The request content was invalid and could not be "
                                   f"deserialized: {exc}")
        problems = validate_container_group(body)
        if problems:
            return 400, {}, _error("InvalidRequestContent", "The request content was invalid: " + "; ".join(problems))
        with self._lock:
            if name in self.groups and not self.groups[name].deleted:
                return 409, {}, _error("Conflict", f"The container group '{name}' already exists and is in use.")
            self._created += 1
            index = self._created
            if index in self.faults.quota:
                cpu = body["properties"]["containers"][0]["properties"]["resources"]["requests"]["cpu"]
                return 409, {}, _error("ContainerGroupQuotaReached", "Resource type 'Microsoft.ContainerInstance/"
                                       "containerGroups' container group quota 'StandardCores' exceeded in region "
                                       f"'{body.get('location')}'. Limit: '{cpu}', Usage: '{cpu}', Requested: '{cpu}'.")
            group = _Group(name, body, index)
            self.groups[name] = group
        view = self._view(group)  # as created: Pending, before its life starts (a fast start raced the answer)
        threading.Thread(target=self._lifecycle, args=(group,), name=f"group:{name}", daemon=True).start()
        return 201, {}, view

    def _lifecycle(self, group: _Group) -> None:
        props = group.body["properties"]
        container = props["containers"][0]["properties"]
        image = container["image"]
        group.event("Pulling", f"pulling image \"{image}\"")
        why = ("Failed to pull image \"" + image + "\": manifest unknown (fault injected)") if self.faults.unpullable \
            else self.backend.pull_error(image)
        if why:
            group.provisioning = "Failed"
            group.container_state = {"state": "Waiting", "detailStatus": "ErrImagePull"}
            group.event("Failed", why, "Warning")
            self.on_event(group.name, "failed to start", {"reason": why})
            return
        if self.faults.pending:
            return
        env = {e["name"]: e.get("value", e.get("secureValue", "")) for e in container.get("environmentVariables") or []}
        if (group.body.get("identity") or {}).get("userAssignedIdentities"):
            env.update(self.identity_environment)
        requests = container["resources"]["requests"]
        try:
            group.handle = self.backend.start(group.name, image, env, float(requests["cpu"]),
                                              float(requests["memoryInGB"]))
        except Exception as exc:  # the engine refused the container: as ACI, the group fails to provision
            group.provisioning = "Failed"
            group.event("Failed", f"the container could not start: {exc}", "Warning")
            self.on_event(group.name, "failed to start", {"reason": str(exc)})
            return
        group.event("Pulled", f"Successfully pulled image \"{image}\"")
        group.event("Started", "Started container")
        group.provisioning, group.state = "Succeeded", "Running"
        group.container_state = {"state": "Running", "startTime": _now(), "detailStatus": ""}
        self.on_event(group.name, "started", {"backend": self.backend.name})
        while not group.deleted:
            code = self.backend.poll(group.handle)
            if code is not None:
                self._ended(group, code)
                return
            time.sleep(0.2)

    def _ended(self, group: _Group, code: int) -> None:
        if group.exit_code is not None:
            return
        group.exit_code = code
        group.container_state = {"state": "Terminated", "startTime": group.container_state.get("startTime", _now()),
                                 "exitCode": code, "finishTime": _now(),
                                 "detailStatus": "Completed" if code == 0 else "Error"}
        group.state = "Succeeded" if code == 0 else "Failed"
        group.event("Killing" if group.deleted else "Terminated", f"Container terminated with exit code {code}")
        self.on_event(group.name, "ended", {"exit_code": code, "seconds": time.monotonic() - group.started_at,
                                            "state": group.state})

    def _find(self, name: str) -> _Group | None:
        g = self.groups.get(name)
        return None if g is None or g.deleted else g

    def _not_found(self, name: str):
        return 404, {}, _error("ResourceNotFound", f"The Resource 'Microsoft.ContainerInstance/containerGroups/{name}' "
                               f"under resource group '{self.resource_group}' was not found. For more details please "
                               "go to https://aka.ms/ARMResourceNotFoundFix")

    def _get(self, name: str):
        group = self._find(name)
        if group is None or group.index in self.faults.gone:
            return self._not_found(name)
        group.polled += 1
        return 200, {}, self._view(group)

    def _delete(self, name: str):
        group = self._find(name)
        if group is None:
            return 204, {}, None
        group.deleted = True
        if group.handle is not None:
            self.backend.stop(group.handle)  # SIGTERM, then SIGKILL after the grace period, as ACI
            code = self.backend.poll(group.handle)
            if code is not None:
                self._ended(group, code)
            self.backend.remove(group.handle)
        view = self._view(group)
        self.on_event(name, "deleted", {})
        return 200, {}, view

    def _logs(self, name: str, container: str, query: dict):
        group = self._find(name)
        if group is None:
            return self._not_found(name)
        if container != group.body["properties"]["containers"][0]["name"]:
            return 404, {}, _error("ContainerNotFound", f"The container '{container}' of container group '{name}' "
                                   "was not found.")
        if group.handle is None:
            return 400, {}, _error("ContainerGroupNotReady", f"The container of container group '{name}' has not "
                                   "started, so it has no logs.")
        text = self.backend.logs(group.handle).decode("utf-8", "replace")
        tail = int(query.get("tail", "0") or 0)
        lines = text.splitlines(keepends=True)
        return 200, {}, {"content": "".join(lines[-tail:] if tail else lines)}

    def _view(self, group: _Group) -> dict:
        """The group as ARM shows it: the request, with provisioningState and instance views."""
        body = json.loads(json.dumps(group.body))
        props = body["properties"]
        for c in props["containers"]:
            c["properties"]["instanceView"] = {"restartCount": 0, "currentState": group.container_state,
                                               "events": [e for e in group.events if e["name"] != "Terminated"]}
            for e in c["properties"].get("environmentVariables") or []:
                e.pop("secureValue", None)  # never returned, as ARM
        for cred in props.get("imageRegistryCredentials") or []:
            cred.pop("password", None)
        props["provisioningState"] = group.provisioning
        props["instanceView"] = {"events": [e for e in group.events if e["type"] == "Warning"], "state": group.state}
        out = {"id": f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/providers/"
                     f"Microsoft.ContainerInstance/containerGroups/{group.name}",
               "name": group.name, "type": "Microsoft.ContainerInstance/containerGroups", **body}
        identity = out.get("identity")
        if isinstance(identity, dict):
            for k, v in (identity.get("userAssignedIdentities") or {}).items():
                identity["userAssignedIdentities"][k] = {"principalId": hashlib.md5(k.encode()).hexdigest(),
                                                         "clientId": hashlib.sha1(k.encode()).hexdigest()[:32]}
        return out

    def close(self) -> None:
        """Stop every job that still runs and the server."""
        for group in list(self.groups.values()):
            if not group.deleted:
                self._delete(group.name)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def _error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def validate_container_group(body: dict) -> list[str]:
    """What the real API would refuse in a container-group PUT body, read with the
    SDK's ContainerGroup model: missing required properties, unknown properties,
    enum values it does not know, and container names ACI does not accept."""
    from azure.mgmt.containerinstance import models

    problems: list[str] = []
    if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
        return ["the body has no properties object"]
    try:
        group = models.ContainerGroup.deserialize(body)
    except Exception as exc:  # the SDK's deserializer raises several kinds
        return [f"the body does not deserialize as a ContainerGroup ({exc})"]
    _required(group, "", problems)
    _unknown(body, group.serialize(keep_readonly=True), "", problems)
    if not body.get("location"):
        problems.append("location is required")
    enums = {"restart_policy": models.ContainerGroupRestartPolicy, "os_type": models.OperatingSystemTypes}
    for attr, enum in enums.items():
        value = getattr(group, attr, None)
        if value is not None and value not in {e.value for e in enum}:
            problems.append(f"properties.{group._attribute_map[attr]['key'].split('.')[-1]} {value!r} is not one of "
                            f"{', '.join(e.value for e in enum)}")
    for c in group.containers or []:
        if c.name and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", c.name):
            problems.append(f"container name {c.name!r} must be lower-case letters, digits and '-'")
    return problems


def _required(model: Any, path: str, problems: list[str]) -> None:
    for attr, rule in getattr(model, "_validation", {}).items():
        if rule.get("required") and getattr(model, attr, None) is None:
            problems.append(f"{path}{model._attribute_map[attr]['key']} is required")
    for attr in getattr(model, "_attribute_map", {}):
        value = getattr(model, attr, None)
        items = value if isinstance(value, list) else [value]
        for i, v in enumerate(items):
            if hasattr(v, "_attribute_map"):
                key = model._attribute_map[attr]["key"]
                _required(v, f"{path}{key}{f'[{i}]' if isinstance(value, list) else ''}.", problems)


def _unknown(sent: Any, known: Any, path: str, problems: list[str]) -> None:
    """Keys of ``sent`` the model dropped: properties the API does not define."""
    if isinstance(sent, dict) and isinstance(known, dict):
        for k, v in sent.items():
            if k not in known:
                if v is not None and not (path.endswith("userAssignedIdentities.")):
                    problems.append(f"{path}{k} is not a property the API defines")
            else:
                _unknown(v, known[k], f"{path}{k}.", problems)
    elif isinstance(sent, list) and isinstance(known, list):
        for i, (a, b) in enumerate(zip(sent, known)):
            _unknown(a, b, f"{path[:-1]}[{i}].", problems)
