"""Microsoft.ContainerRegistry/registries in the local Azure, with ACR Tasks.

- a registry's loginServer is ``{name}.azurecr.local``; its images are the tags its
  builds pushed (and imports copied), and nothing else: a Container App or container
  group naming another tag meets MANIFEST_UNKNOWN;
- ``listBuildSourceUploadUrl`` hands out a SAS URL in Azurite (container
  ``acr-build-sources``), as ACR hands out one in its own storage;
- ``scheduleRun`` with a DockerBuildRequest reads that upload (a tar.gz), and builds
  ``dockerFilePath`` with the builder: podman or docker where one is here (the images
  are then tagged ``{loginServer}/{repository}:{tag}`` in its image store, where the
  Container Instances stand-in finds them), else a builder that checks the Dockerfile is
  in the context and records the tags (jobs then run as processes); the run goes
  Queued, Running, then Succeeded or Failed; its log is a blob whose SAS link
  ``listLogSasUrl`` gives;
- ``importImage`` copies a tag into the registry (the source is not fetched: no registry
  outside this machine can be reached).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from scorer.twin.arm_common import ArmError, now_iso

ROOT = Path(__file__).resolve().parents[2]
SOURCES = "acr-build-sources"
LOGS = "acr-build-logs"


def recording_builder(context: Path, dockerfile: str, images: list[str], args: dict[str, str]) -> tuple[bool, str]:
    """No container engine here: check what ACR would check first, and record the tags."""
    if not (context / dockerfile).is_file():
        return False, f"unable to prepare context: unable to evaluate symlinks in Dockerfile path: {dockerfile}: " \
                      "no such file or directory"
    return True, f"(no container engine on this machine: {', '.join(images)} recorded, not built)\n"


def base_image(backend: Any) -> str:
    """The base image this machine builds from (docker/engine.sh decides: Docker Hub's
    when a registry answers, else the one scripts/setup-containers made)."""
    done = subprocess.run(["bash", "-c", f". {ROOT}/docker/engine.sh; scorer_base_image"], env=backend.env,
                          capture_output=True, text=True, timeout=60)
    return done.stdout.strip() or "docker.io/library/debian:bookworm-slim"


def engine_builder(backend: Any) -> Callable[..., tuple[bool, str]]:
    """A builder that runs the engine's build (podman or docker, with the flags
    scripts/build-image uses here) on the context. The agent reaches registries as this
    machine does: a BASE_IMAGE the build is not given is docker/engine.sh's choice, and
    this machine's pip CA (docker/ca.crt, which deploy.py never uploads) joins the context."""
    def build(context: Path, dockerfile: str, images: list[str], args: dict[str, str]) -> tuple[bool, str]:
        args = {"BASE_IMAGE": base_image(backend), **args}
        if (ROOT / "docker" / "ca.crt").is_file():
            shutil.copy(ROOT / "docker" / "ca.crt", context / "docker" / "ca.crt")
        argv = [*backend.command, "build", "-f", str(context / dockerfile)]
        if backend.name == "podman":
            argv += ["--format", "docker", "--network", "host", "--isolation", "chroot", "--layers"]
        for image in images:
            argv += ["-t", image]
        for k, v in args.items():
            argv += ["--build-arg", f"{k}={v}"]
        done = subprocess.run(argv + [str(context)], capture_output=True, text=True, timeout=3600, env=backend.env)
        return done.returncode == 0, done.stdout + done.stderr
    return build


def default_builder(backend: Any) -> Callable[..., tuple[bool, str]]:
    return engine_builder(backend) if getattr(backend, "command", None) else recording_builder


#: a registry's properties as Azure answers them when a template does not set them: the values of
#: Microsoft's published example (Registries_Get, 2023-07-01, a Standard registry)
REGISTRY_DEFAULTS = {
    "adminUserEnabled": False, "networkRuleSet": {"defaultAction": "Allow", "ipRules": []},
    "policies": {"quarantinePolicy": {"status": "disabled"}, "trustPolicy": {"type": "Notary", "status": "disabled"},
                 "retentionPolicy": {"days": 7, "status": "disabled"}, "exportPolicy": {"status": "enabled"}},
    "encryption": {"status": "disabled"}, "status": None, "dataEndpointEnabled": False, "dataEndpointHostNames": [],
    "privateEndpointConnections": [], "publicNetworkAccess": "Enabled", "networkRuleBypassOptions": "AzureServices",
    "zoneRedundancy": "Disabled",
}


class Registries:
    """Registries, their images and their ACR Tasks runs."""

    def __init__(self, types: Any):
        self.types = types
        self.azure = types.azure
        self.images: dict[str, set[str]] = {}   # registry id (lower) -> {"repo:tag"}
        self.runs: dict[str, dict] = {}          # run id -> run

    def registry(self, view: dict, existing: dict | None) -> None:
        name = view["name"]
        if not re.fullmatch(r"[a-zA-Z0-9]{5,50}", name):
            raise ArmError(400, "InvalidRegistryName", f"The registry name '{name}' is invalid: 5-50 letters and "
                           "digits only.")
        view["properties"].update({"loginServer": f"{name.lower()}.azurecr.local", "creationDate": now_iso()})
        for key, value in REGISTRY_DEFAULTS.items():  # what the template leaves out, Azure fills in
            view["properties"].setdefault(key, json.loads(json.dumps(value)))
        self.images.setdefault(view["id"].lower(), set())

    def by_login_server(self, server: str) -> dict | None:
        for rid in self.images:
            found = self.azure.find(rid)
            if found and found["properties"]["loginServer"].lower() == server.lower():
                return found
        return None

    def has_image(self, registry: dict, repo_tag: str) -> bool:
        return repo_tag in self.images.get(registry["id"].lower(), set())

    # -- ACR Tasks ----------------------------------------------------------------------------

    def request(self, method: str, path: str, query: dict, headers: dict, body: Any):
        m = re.fullmatch(r"(.*/providers/Microsoft\.ContainerRegistry/registries/[^/]+)/"
                         r"(listBuildSourceUploadUrl|scheduleRun|importImage|runs(?:/([^/]+)(/listLogSasUrl)?)?)",
                         path, re.I)
        if not m:
            return None
        registry = self.azure.find(m[1])
        if registry is None:
            raise ArmError(404, "ResourceNotFound", f"The registry '{m[1].rpartition('/')[2]}' was not found.")
        action = m[2].split("/")[0].lower()
        if action == "listbuildsourceuploadurl" and method == "POST":
            return 200, {}, self._upload_url()
        if action == "schedulerun" and method == "POST":
            return 200, {}, self._schedule(registry, body or {})
        if action == "importimage" and method == "POST":
            return 200, {}, self._import(registry, body or {})
        if action == "runs" and m[3] is None and method == "GET":
            wanted = re.search(r"Status eq '(\w+)'", query.get("$filter", ""))
            runs = [r for r in self.runs.values() if r["registry"] == registry["id"].lower()
                    and (not wanted or r["view"]["properties"]["status"] == wanted[1])]
            return 200, {}, {"value": [r["view"] for r in runs]}
        run = self.runs.get(m[3] or "")
        if run is None:
            raise ArmError(404, "ResourceNotFound", f"The run '{m[3]}' was not found.")
        if m[4] and method == "POST":
            return 200, {}, {"logLink": run["log_link"]}
        return 200, {}, run["view"]

    def _import(self, registry: dict, body: dict) -> None:
        """importImage: no registry outside this machine is reached, so the source is the
        image this machine builds from (the base image is the one thing deploy.py imports),
        tagged into the registry where an engine is here."""
        backend = self.types.options.backend
        for tag in body.get("targetTags") or []:
            if getattr(backend, "command", None):
                login = registry["properties"]["loginServer"]
                subprocess.run([*backend.command, "tag", base_image(backend), f"{login}/{tag}"], env=backend.env,
                               capture_output=True, timeout=120)
            self.images[registry["id"].lower()].add(tag)

    def push(self, login_server: str, image: str, repo_tag: str) -> None:
        """`docker push` of this machine's ``image`` as ``repo_tag`` (what a user who builds
        elsewhere does, then `up --skip-build --image-pushed`): tagged into the registry where
        an engine is here, recorded either way."""
        registry = self.by_login_server(login_server)
        if registry is None:
            raise ArmError(404, "NAME_UNKNOWN", f"repository name not known to registry {login_server}")
        backend = self.types.options.backend
        if getattr(backend, "command", None):
            subprocess.run([*backend.command, "tag", image, f"{login_server}/{repo_tag}"], env=backend.env,
                           capture_output=True, timeout=120)
        self.images[registry["id"].lower()].add(repo_tag)

    def _sas_url(self, container: str, blob: str, write: bool) -> str:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        service = self.types.storage.service()
        try:
            service.create_container(container)
        except Exception:  # it exists
            pass
        sas = generate_blob_sas(service.account_name, container, blob, account_key=service.credential.account_key,
                                permission=BlobSasPermissions(read=True, write=write, create=write),
                                expiry=datetime.now(timezone.utc) + timedelta(hours=1))
        return f"{self.types.storage.endpoint()}{container}/{blob}?{sas}"

    def _upload_url(self) -> dict:
        relative = f"source/{datetime.now(timezone.utc):%Y%m%d%H}/{uuid.uuid4()}.tar.gz"
        return {"uploadUrl": self._sas_url(SOURCES, relative, write=True), "relativePath": relative}

    def _schedule(self, registry: dict, request: dict) -> dict:
        if request.get("type") != "DockerBuildRequest":
            raise ArmError(400, "InvalidRunRequest", f"The run request type '{request.get('type')}' is not one the "
                           "local Azure runs (DockerBuildRequest).")
        run_id = f"loc{len(self.runs) + 1}"
        login = registry["properties"]["loginServer"]
        view = {"id": f"{registry['id']}/runs/{run_id}", "name": run_id, "type": "Microsoft.ContainerRegistry/"
                "registries/runs", "properties": {"runId": run_id, "status": "Queued", "runType": "QuickRun",
                                                  "createTime": now_iso(), "outputImages": [],
                                                  "platform": request.get("platform")}}
        run = {"registry": registry["id"].lower(), "view": view, "log_link": self._sas_url(LOGS, f"{run_id}.log", False)}
        self.runs[run_id] = run
        threading.Thread(target=self._build, args=(run, registry, login, request), daemon=True,
                         name=f"acr-run:{run_id}").start()
        return view

    def _build(self, run: dict, registry: dict, login: str, request: dict) -> None:
        props = run["view"]["properties"]
        props["status"] = "Running"
        props["startTime"] = now_iso()
        images = [str(i) for i in request.get("imageNames") or []]
        args = {a["name"]: a["value"] for a in request.get("arguments") or []}
        try:
            ok, log = self._build_context(request, login, images, args)
        except Exception as exc:  # the run fails with the reason, as an ACR run does
            ok, log = False, f"{type(exc).__name__}: {exc}"
        if ok and self.types.options.build_fails:
            ok, log = False, log + "\nfault injected: the build step failed\n"
        if ok:
            self.images[registry["id"].lower()].update(images)
            props["outputImages"] = [{"registry": login, "repository": i.partition(":")[0], "tag": i.partition(":")[2]}
                                     for i in images]
        self._save_log(run["view"]["name"], log)
        props["status"] = "Succeeded" if ok else "Failed"
        props["finishTime"] = now_iso()

    def _build_context(self, request: dict, login: str, images: list[str], args: dict) -> tuple[bool, str]:
        service = self.types.storage.service()
        data = service.get_blob_client(SOURCES, request["sourceLocation"]).download_blob().readall()
        builder = self.types.options.builder or default_builder(self.types.options.backend)
        with tempfile.TemporaryDirectory(prefix="acr-context-") as tmp:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                tar.extractall(tmp, filter="data")
            return builder(Path(tmp), request.get("dockerFilePath") or "Dockerfile",
                           [f"{login}/{i}" for i in images], args)

    def _save_log(self, run_id: str, log: str) -> None:
        self.types.storage.service().get_blob_client(LOGS, f"{run_id}.log").upload_blob(log.encode(), overwrite=True)

    def close(self) -> None:
        pass
