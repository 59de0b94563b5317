"""A local Azure Resource Manager: deploys arm_templates/main.json the way ARM does, so
that `scripts/deploy.py up --local` rehearses the deployment on this machine.

    PUT    /subscriptions/{s}/resourcegroups/{g}                      create a group
    HEAD   /subscriptions/{s}/resourcegroups/{g}                      204 / 404
    DELETE /subscriptions/{s}/resourcegroups/{g}                      everything in it
    GET    /subscriptions/{s}/providers/{namespace}                   registrationState
    POST   /subscriptions/{s}/providers/{namespace}/register
    PUT    .../resourcegroups/{g}/providers/Microsoft.Resources/deployments/{d}
                                 201 + Azure-AsyncOperation; the template deploys in the background
    GET    .../deployments/{d}   provisioningState, outputs, outputResources, error
    POST   .../deployments/{d}/whatIf                                 changes, nothing deployed
    PUT/GET/DELETE {resource id}                                      through its resource type
    POST   {resource id}/{action}                                     listCallbackUrl, scheduleRun, ...

It answers with the shapes of Microsoft's REST examples (../shared/reference/
azure-rest-examples; tests compare), over HTTPS with a certificate of its own (the Azure
SDK sends bearer tokens only over TLS), and checks every request's bearer token: tokens
come from ``POST /local/token``, this machine's `az login`, for the operator, and from the
same minting for the managed identities a deployment creates.

A deployment is what ARM does: the template's parameters are checked and every function
name known before anything is created (400 InvalidTemplate otherwise); then each resource,
in dependency order, is evaluated (reference() reads what is deployed) and handed to its
resource type (scorer.twin.resources), which makes the checks Azure makes when the
resource is created; the first refusal ends the deployment Failed, with ARM's error
shape, and a failed deployment has no outputs. The resources' behaviour lives in
scorer.twin.resources.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import re
import ssl
import threading
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from scorer.azure.template import Planned, Scope, Template, TemplateError
from scorer.twin.arm_common import (ALWAYS_REGISTERED, NAMESPACES, OPERATOR, SUBSCRIPTION, TENANT, ArmError,
                                     json_handler, now_iso)
from scorer.twin.azurite import connection_parts
from scorer.twin.standin import LocalIdentity

def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key, written under ``directory``
    (the client trusts the certificate file itself: it is its own authority)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "scorer local Azure")])
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Deployment:
    """One deployment's record, as GET .../deployments/{name} shows it."""

    def __init__(self, group: str, name: str, template: dict, parameters: dict):
        self.group, self.name = group, name
        self.template, self.parameters = template, parameters
        self.state = "Accepted"
        self.outputs: dict | None = None
        self.output_resources: list[str] = []
        self.error: dict | None = None
        self.timestamp = now_iso()
        self.operation = str(uuid.uuid4())
        self.done = threading.Event()

    def view(self, subscription: str) -> dict:
        props: dict[str, Any] = {"provisioningState": self.state, "timestamp": self.timestamp, "mode": "Incremental",
                                 "templateHash": str(abs(hash(json.dumps(self.template, sort_keys=True)))),
                                 "parameters": {k: {"type": "Object" if isinstance(v.get("value"), dict) else "String",
                                                    "value": v.get("value")} for k, v in self.parameters.items()},
                                 "outputResources": [{"id": i} for i in self.output_resources],
                                 "correlationId": self.operation}
        if self.outputs is not None:
            props["outputs"] = self.outputs
        if self.error is not None:
            props["error"] = self.error
        return {"id": f"/subscriptions/{subscription}/resourceGroups/{self.group}/providers/Microsoft.Resources/"
                      f"deployments/{self.name}",
                "name": self.name, "type": "Microsoft.Resources/deployments", "properties": props}


class LocalAzure:
    """The server. ``azurite`` is the connection string of the Blob Storage that storage
    accounts map to; ``options`` configures the resource types (scorer.twin.resources.Options)."""

    def __init__(self, directory: Path, azurite: str, options: Any = None, port: int = 0):
        from scorer.twin.resources import Options, ResourceTypes

        self.directory = directory
        self.azurite = azurite
        self.cert, key = self_signed(directory)
        self.identity = LocalIdentity()
        self.subscription, self.tenant = SUBSCRIPTION, TENANT
        self.groups: dict[str, dict] = {}
        self.resources: dict[str, dict] = {}           # lower-cased id -> the resource's view
        self.deployments: dict[tuple[str, str], Deployment] = {}
        self.registration = {ns: ("Registered" if ns in ALWAYS_REGISTERED else "NotRegistered") for ns in NAMESPACES}
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status), for tests
        self.lock = threading.RLock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), json_handler(self.handle))
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/"
        self.types = ResourceTypes(self, options or Options())
        parts = connection_parts(azurite)
        (directory / "endpoint.json").write_text(json.dumps({
            "url": self.url, "cert": str(self.cert), "subscription": self.subscription,
            "storage_account": parts.get("AccountName"), "storage_key": parts.get("AccountKey")}))
        threading.Thread(target=self.server.serve_forever, name="local-azure", daemon=True).start()

    def environment(self) -> dict:
        """environment(): Azure's cloud names with this machine's endpoints."""
        return {"name": "ScorerLocal", "resourceManager": self.url, "gallery": "", "graph": "", "portal": self.url,
                "authentication": {"loginEndpoint": f"{self.url}local/login/", "audiences": [self.url],
                                   "tenant": "common", "identityProvider": "AAD"},
                "suffixes": {"storage": "local", "acrLoginServer": ".azurecr.local", "keyvaultDns": ".vault.local"}}

    def user_token(self, audience: str, version: int = 1) -> str:
        """A bearer token for the signed-in operator, as Entra ID issues a user's: a v1 token
        (issuer https://sts.windows.net/<tenant>/) unless the resource's app registration asks
        for v2 (``version`` 2: the issuer is the login endpoint's <tenant>/v2.0)."""
        issuer = (f"{self.environment()['authentication']['loginEndpoint']}{self.tenant}/v2.0" if version == 2
                  else f"https://sts.windows.net/{self.tenant}/")
        return self.identity.token(f"user:{OPERATOR}", audience, claims={
            "oid": OPERATOR, "idtyp": "user", "tid": self.tenant, "iss": issuer, "ver": f"{version}.0"})

    # -- requests ------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict, raw: bytes) -> tuple[int, dict, Any]:
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            return 400, {}, {"error": {"code": "InvalidRequestContent", "message": "The request content is not JSON."}}
        try:
            if url.path.startswith("/local/"):
                status, out_headers, payload = self.types.local(method, url.path, query, headers, body, raw)
            else:
                self._authenticate(headers)
                status, out_headers, payload = self._route(method, url.path.rstrip("/"), query, headers, body)
        except ArmError as exc:
            status, out_headers, payload = exc.status, {}, exc.body()
        except TemplateError as exc:
            status, out_headers, payload = 400, {}, {"error": {"code": exc.code, "message": str(exc)}}
        self.requests.append((method, url.path, status))
        return status, out_headers, payload

    def _authenticate(self, headers: dict) -> dict:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        claims = self.identity.claims(auth[7:]) if auth.startswith("Bearer ") else None
        if claims is None:
            raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing "
                           "or the access token is not valid.")
        if claims.get("aud") not in (self.url, self.url.rstrip("/")):
            raise ArmError(401, "InvalidAuthenticationTokenAudience", "The access token has been obtained for wrong "
                           f"audience or resource '{claims.get('aud')}'. It should exactly match with one of the "
                           f"allowed audiences '{self.url}'.")
        return claims

    def _route(self, method: str, path: str, query: dict, headers: dict, body: Any) -> tuple[int, dict, Any]:
        m = re.fullmatch(r"/subscriptions/([^/]+)(.*)", path, re.I)
        if not m or m[1] != self.subscription:
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{m[1] if m else path}' could not be found.")
        rest = m[2]
        if mm := re.fullmatch(r"/providers/([^/]+)(/register)?", rest, re.I):
            return self._provider(method, mm[1], bool(mm[2]))
        if mm := re.fullmatch(r"/resourcegroups/([^/]+)", rest, re.I):
            return self._group(method, mm[1], body)
        if mm := re.fullmatch(r"/resourcegroups/([^/]+)/providers/Microsoft\.Resources/deployments/([^/]+)(/whatIf)?",
                              rest, re.I):
            return self._deployment(method, mm[1], mm[2], bool(mm[3]), body)
        if mm := re.fullmatch(r"/resourcegroups/([^/]+)/providers/Microsoft\.Resources/deployments/([^/]+)/"
                              r"operationStatuses/([^/]+)", rest, re.I):
            return self._operation(mm[1], mm[2])
        group = re.match(r"/resourcegroups/([^/]+)/", rest, re.I)
        if group and group[1].lower() not in self.groups:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{group[1]}' could not be found.")
        return self.types.request(method, path, query, headers, body)

    # -- providers and groups -----------------------------------------------------------------

    def _provider(self, method: str, namespace: str, register: bool) -> tuple[int, dict, Any]:
        known = next((ns for ns in NAMESPACES if ns.lower() == namespace.lower()), None)
        if known is None:
            raise ArmError(404, "InvalidResourceNamespace", f"The resource namespace '{namespace}' is invalid.")
        if register and method == "POST":
            self.registration[known] = "Registered"  # at once: the wait is one of Azure's time scales
        return 200, {}, {"id": f"/subscriptions/{self.subscription}/providers/{known}", "namespace": known,
                         "registrationState": self.registration[known], "registrationPolicy": "RegistrationRequired",
                         "resourceTypes": []}

    def group_view(self, name: str) -> dict:
        g = self.groups[name.lower()]
        return {"id": f"/subscriptions/{self.subscription}/resourceGroups/{g['name']}", "name": g["name"],
                "type": "Microsoft.Resources/resourceGroups", "location": g["location"], "tags": g.get("tags") or {},
                "properties": {"provisioningState": "Succeeded"}}

    def _group(self, method: str, name: str, body: Any) -> tuple[int, dict, Any]:
        key = name.lower()
        if method == "HEAD":
            return (204 if key in self.groups else 404), {}, None
        if method == "PUT":
            if not (body or {}).get("location"):
                raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
            created = key not in self.groups
            self.groups[key] = {"name": self.groups.get(key, {}).get("name", name), "location": body["location"],
                                "tags": body.get("tags") or {}}
            return (201 if created else 200), {}, self.group_view(name)
        if key not in self.groups:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found.")
        if method == "GET":
            return 200, {}, self.group_view(name)
        if method == "DELETE":
            prefix = f"/subscriptions/{self.subscription}/resourcegroups/{key}/"
            for rid in sorted((r for r in self.resources if r.startswith(prefix)), key=len, reverse=True):
                if rid in self.resources:
                    self.types.delete(self.resources[rid]["id"])
            self.deployments = {k: v for k, v in self.deployments.items() if k[0] != key}
            del self.groups[key]
            return 200, {}, None
        raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a resource group.")

    # -- deployments --------------------------------------------------------------------------

    def scope(self, group: str, deployment: str) -> Scope:
        return Scope(self.subscription, self.groups[group.lower()]["name"], self.groups[group.lower()]["location"],
                     self.tenant, deployment, self.environment())

    def _deployment(self, method: str, group: str, name: str, what_if: bool, body: Any) -> tuple[int, dict, Any]:
        key = (group.lower(), name.lower())
        if method == "GET":
            if key not in self.deployments:
                raise ArmError(404, "DeploymentNotFound", f"Deployment '{name}' could not be found.")
            return 200, {}, self.deployments[key].view(self.subscription)
        if method == "DELETE":  # Deployments_Delete answers 202 or 204; this one is done at once
            self.deployments.pop(key, None)
            return 204, {}, None
        props = (body or {}).get("properties") or {}
        template, parameters = props.get("template"), props.get("parameters") or {}
        if not isinstance(template, dict):
            raise ArmError(400, "InvalidTemplate", "The deployment has no template (properties.template).")
        tpl = Template(template, parameters, self.scope(group, name))   # InvalidTemplate before anything runs
        plan = tpl.plan()
        if what_if:
            return 200, {}, {"status": "Succeeded", "properties": {"changes": self.types.what_if(plan, tpl)}}
        if method != "PUT":
            raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a deployment.")
        running = self.deployments.get(key)
        if running is not None and not running.done.is_set():
            raise ArmError(409, "DeploymentActive", f"The deployment '{name}' is still running; wait for it to end.")
        record = Deployment(group, name, template, parameters)
        self.deployments[key] = record
        threading.Thread(target=self._deploy, args=(record, tpl, plan), name=f"deployment:{name}",
                         daemon=True).start()
        op = f"{self.url}subscriptions/{self.subscription}/resourcegroups/{group}/providers/Microsoft.Resources/" \
             f"deployments/{name}/operationStatuses/{record.operation}?api-version=2022-09-01"
        return 201, {"Azure-AsyncOperation": op}, record.view(self.subscription)

    def _operation(self, group: str, name: str) -> tuple[int, dict, Any]:
        record = self.deployments.get((group.lower(), name.lower()))
        if record is None:
            raise ArmError(404, "DeploymentNotFound", f"Deployment '{name}' could not be found.")
        out: dict[str, Any] = {"status": record.state if record.done.is_set() else "Running"}
        if record.error and record.done.is_set():
            out["error"] = record.error
        return 200, {}, out

    def _deploy(self, record: Deployment, tpl: Template, plan: list[Planned]) -> None:
        record.state = "Running"
        try:
            for p in plan:
                if not p.deploy:
                    tpl.check_references(p, self.types.reference, self.types.list_call)
                    continue
                body = tpl.evaluate(p, self.types.reference, self.types.list_call)
                self.types.put(p, body)
                record.output_resources.append(p.id)
            record.outputs = tpl.outputs(self.types.reference, self.types.list_call)
            record.state = "Succeeded"
        except (ArmError, TemplateError) as exc:
            code = exc.code
            record.error = {"code": "DeploymentFailed", "message": "At least one resource deployment operation failed. "
                            "Please list deployment operations for details. Please see https://aka.ms/arm-deployment-"
                            "operations for usage details.",
                            "details": [{"code": code, "message": getattr(exc, "message", str(exc))}]}
            record.state = "Failed"
        except Exception as exc:  # a defect here must still end the deployment, never leave it Running
            record.error = {"code": "InternalServerError", "message": f"{type(exc).__name__}: {exc}"}
            record.state = "Failed"
        finally:
            record.timestamp = now_iso()
            record.done.set()

    def find(self, rid: str) -> dict | None:
        return self.resources.get(rid.lower())

    def close(self) -> None:
        self.types.close()
        self.server.shutdown()
        self.server.server_close()


def main(args: Any) -> int:
    """`scorer azure`: serve the local Azure until Ctrl-C or SIGTERM (then 130)."""
    import os
    import signal

    from scorer.errors import EXIT_INTERRUPTED
    from scorer.twin.backends import ContainerBackend, ProcessBackend
    from scorer.twin.azurite import ROOT, azurite_connection_string, ensure_azurite
    from scorer.twin.resources import Options

    azurite = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if not azurite:
        port = int(os.environ.get("AZURITE_PORT", "10000"))
        ensure_azurite(port)
        azurite = azurite_connection_string(port)
    backend = None if args.engine == "process" else ContainerBackend.detect(args.engine)
    directory = Path(os.environ.get("SCORER_LOCAL_AZURE", ROOT / ".scorer-local" / "azure"))
    def app_runs(name: str, url: str) -> None:
        print(f"container app {name} answers at {url}; a token for it: POST {azure.url}local/token with "
              '{"scope": "api://<api client id>/.default", "requestedAccessTokenVersion": 2} (docs/twin.md)',
              flush=True)

    azure = LocalAzure(directory, azurite, Options(backend=backend or ProcessBackend(), rbac_delay=args.rbac_delay,
                                                   on_app=app_runs), port=args.port)
    print(f"local Azure at {azure.url} (certificate {azure.cert}); images "
          f"{'built with ' + backend.name if backend else 'recorded, jobs run as processes'}.\n"
          f"Deploy into it: scripts/deploy.py --local up -g rg-scorer -l local", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        azure.close()
        (directory / "endpoint.json").unlink(missing_ok=True)
    return EXIT_INTERRUPTED
