"""Deploy scorer to an Azure resource group, run it, read its logs, tear it down
(scripts/deploy.py is the command; this is its logic, importable by the tests).

    scripts/deploy.py up -g RG [-l REGION]           deploy or update everything, build the image
    scripts/deploy.py up -g RG --what-if             show what would change (ARM what-if); change nothing
    scripts/deploy.py trigger -g RG                  start a scoring run now
    scripts/deploy.py runs -g RG [--top N]           recent runs and their status
    scripts/deploy.py logs -g RG RUN                 the container logs a run saved (logs container)
    scripts/deploy.py teardown -g RG --yes           delete what `up` created

`up` deploys arm_templates/main.json with logicapp/workflow.json injected as the Logic App's
definition, then builds docker/Dockerfile in the registry with ACR Tasks (no local Docker):
the build context is uploaded as a tar.gz to the URL the registry hands out, and a
DockerBuildRequest is scheduled. Authentication is DefaultAzureCredential (az login, or a
managed identity / service principal in CI).

Every Azure call goes through the clients in ``Clients``, built by ``make_clients``; the
contract tests build them with an azure-core transport that answers without a network.

Errors: DeployError (message says what to do) for anything the user must fix; SDK
HttpResponseError passes through with Azure's own message.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as dt
import fnmatch
import io
import json
import re
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]

from scorer.azure import workflow as wf  # noqa: E402
from scorer.azure.template import split_id  # noqa: E402

TEMPLATE_PATH = ROOT / "arm_templates" / "main.json"
DOCKERFILE = "docker/Dockerfile"
DOCKERIGNORE = ROOT / "docker" / "Dockerfile.dockerignore"
CREATED_TAG = "scorer-created-by"  # on a resource group `up` created, so teardown may delete it
ACR_TERMINAL = {"Succeeded", "Failed", "Canceled", "Error", "Timeout"}
#: Resource providers a run needs registered on the subscription. ARM registers those of
#: the resources a template declares, but the container groups are created later, by the
#: Logic App, whose role is on the resource group only (MicrosoftDocs/azure-docs#95959).
PROVIDERS = ("Microsoft.ContainerInstance", "Microsoft.Logic", "Microsoft.EventGrid", "Microsoft.ContainerRegistry",
             "Microsoft.ManagedIdentity", "Microsoft.Storage")
#: The default regional quota of Container Instances standard cores (Azure docs:
#: "Resource availability and quota limits for ACI"); raise it under Quotas in the portal.
DEFAULT_CORES_QUOTA = 100
BASE_IMAGE = "library/debian:bookworm-slim"   # docker/Dockerfile's BASE_IMAGE, on Docker Hub
BASE_IMAGE_COPY = "base/debian:bookworm-slim"  # where --import-base-image puts it in the registry
# Deletion order for teardown: what depends on a resource goes before it.
TEARDOWN_ORDER = (
    "Microsoft.Authorization/roleAssignments",
    "Microsoft.EventGrid/systemTopics/eventSubscriptions",
    "Microsoft.EventGrid/systemTopics",
    "Microsoft.Logic/workflows",
    "Microsoft.App/containerApps",          # its authConfigs go with it
    "Microsoft.App/managedEnvironments",
    "Microsoft.ContainerRegistry/registries",
    "Microsoft.Storage/storageAccounts",
    "Microsoft.ManagedIdentity/userAssignedIdentities",
    "Microsoft.Authorization/roleDefinitions",   # in the subscription; only once no assignment uses it
)


class DeployError(Exception):
    """Something the person deploying must fix; the message says what."""


@dataclasses.dataclass
class Clients:
    """Every client the script uses, built in one place (``make_clients``)."""

    resources: Any      # azure.mgmt.resource.ResourceManagementClient
    deployments: Any    # azure.mgmt.resource.deployments.DeploymentsMgmtClient
    acr_tasks: Any      # azure.mgmt.containerregistrytasks.ContainerRegistryTasksMgmtClient
    acr: Any            # azure.mgmt.containerregistry.ContainerRegistryManagementClient (import)
    logic: Any          # azure.mgmt.logic.LogicManagementClient
    credential: Any
    client_kwargs: dict  # passed to data-plane clients built later (blob), e.g. transport=
    poll_seconds: float = 5.0
    blob_credential: Any = None  # for Blob Storage when it is not ``credential`` (the local Azure's Azurite)


def make_clients(credential: Any, subscription_id: str, *, poll_seconds: float = 5.0, management: dict | None = None,
                 blob_credential: Any = None, **client_kwargs: Any) -> Clients:
    """Build every management client with ``credential``; ``client_kwargs`` (e.g. transport=) go to all,
    ``management`` (e.g. base_url=) to the management clients only."""
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerregistrytasks import ContainerRegistryTasksMgmtClient
    from azure.mgmt.logic import LogicManagementClient
    from azure.mgmt.resource.resources import ResourceManagementClient
    from azure.mgmt.resource.deployments import DeploymentsMgmtClient

    mgmt = {**client_kwargs, **(management or {})}
    return Clients(
        resources=ResourceManagementClient(credential, subscription_id, **mgmt),
        deployments=DeploymentsMgmtClient(credential, subscription_id, **mgmt),
        acr_tasks=ContainerRegistryTasksMgmtClient(credential, subscription_id, **mgmt),
        acr=ContainerRegistryManagementClient(credential, subscription_id, **mgmt),
        logic=LogicManagementClient(credential, subscription_id, **mgmt),
        credential=credential,
        client_kwargs=client_kwargs,
        poll_seconds=poll_seconds,
        blob_credential=blob_credential,
    )


class LocalCredential:
    """Signs in to the local Azure (scorer.twin.arm) as its operator: its /local/token
    endpoint stands for Entra ID, as `az login` does for Azure."""

    def __init__(self, url: str, cert: str):
        self.url, self.cert = url, cert

    def get_token(self, *scopes: str, **kwargs: Any):
        import requests
        from azure.core.credentials import AccessToken

        resp = requests.post(f"{self.url}local/token", json={"scope": scopes[0] if scopes else self.url},
                             verify=self.cert, timeout=30)
        resp.raise_for_status()
        return AccessToken(resp.json()["access_token"], int(time.time()) + 3600)


def local_clients(directory: Path | None = None, poll_seconds: float = 1.0) -> Clients:
    """Clients for the local Azure whose address ``directory``/endpoint.json gives (started by
    `scorer azure`): the same clients as for Azure, with its endpoint and its sign-in. Raises
    DeployError when none is running."""
    directory = directory or Path(os.environ.get("SCORER_LOCAL_AZURE", ROOT / ".scorer-local" / "azure"))
    try:
        endpoint = json.loads((directory / "endpoint.json").read_text())
    except (OSError, ValueError):
        raise DeployError(f"No local Azure is running ({directory / 'endpoint.json'} is missing): start one with "
                          "`scorer azure` (or `scripts/demo`), then run this again with --local.") from None
    url, cert = endpoint["url"], endpoint["cert"]
    return make_clients(LocalCredential(url, cert), endpoint["subscription"], poll_seconds=poll_seconds,
                        management={"base_url": url, "credential_scopes": [f"{url}.default"]},
                        blob_credential={"account_name": endpoint["storage_account"],
                                         "account_key": endpoint["storage_key"]},
                        connection_verify=cert)


# --- what gets deployed ---------------------------------------------------------------------

def load_template() -> dict:
    """arm_templates/main.json as a dict."""
    return json.loads(TEMPLATE_PATH.read_text())


def template_parameters(values: dict[str, Any], definition: dict, *, prefix: str, image_name: str,
                        operator_principal_id: str = "", location: str | None = None) -> dict[str, dict]:
    """The ARM parameters for one deployment, derived from the workflow's settings ``values``.

    The container names, the input container and the logs container all come from the
    workflow's scorerEnvironment/logsContainer, so the template creates exactly the
    containers the job is told about. Raises WorkflowSettingsError for unusable values.
    """
    params = {
        "namePrefix": prefix,
        "imageName": image_name,
        "blobContainers": wf.blob_containers(values),
        "inputContainer": wf.input_container(values),
        "logsContainer": values["logsContainer"],
        "workflowDefinition": wf.prepare_definition(definition, values),
        "workflowParameterValues": wf.arm_parameter_values(values),
        "blobCreatedTriggerName": wf.BLOB_TRIGGER,
        "operatorPrincipalId": operator_principal_id,
    }
    if location:
        params["location"] = location
    return {k: {"value": v} for k, v in params.items()}


def signed_in_principal(credential: Any) -> tuple[str, str]:
    """(object ID, principal type) of whoever the credential signs in as: the oid claim,
    and ServicePrincipal when the token belongs to an application (idtyp "app", as for
    a service principal or a managed identity in CI), else User. ('', 'User') when
    the token has no oid.

    Read from the ARM token's payload, so no Microsoft Graph permission is needed; the
    token is not verified here because ARM verifies it on every call. A role assignment
    whose principalType does not match fails with UnmatchedPrincipalType.
    """
    token = credential.get_token("https://management.azure.com/.default").token
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return "", "User"
    return claims.get("oid", ""), "ServicePrincipal" if claims.get("idtyp") == "app" else "User"


def ensure_providers(clients: Clients, progress: Callable[[str], None] = print, timeout: float = 600,
                     extra: tuple[str, ...] = ()) -> None:
    """Register the resource providers a run needs (PROVIDERS, and ``extra``) where they
    are not, and wait until they are. Raises DeployError when the caller may not register them."""
    from azure.core.exceptions import HttpResponseError

    waiting = []
    for ns in PROVIDERS + extra:
        state = clients.resources.providers.get(ns).registration_state
        if state == "Registered":
            continue
        progress(f"registering resource provider {ns} (was {state})")
        try:
            clients.resources.providers.register(ns)
        except HttpResponseError as exc:
            if exc.status_code == 403:
                raise DeployError(
                    f"You may not register the resource provider {ns} on this subscription ({exc.error.code if exc.error else 403}). "
                    "Registering is a subscription-level action (Microsoft.Resources/subscriptions/providers/register/"
                    "action, in Contributor or Owner on the subscription). Ask an administrator to run "
                    f"`az provider register --namespace {ns}` (or, in the portal: Subscription > Resource providers > "
                    f"{ns} > Register), then run `up` again.") from None
            raise
        waiting.append(ns)
    deadline = time.monotonic() + timeout
    for ns in waiting:
        while clients.resources.providers.get(ns).registration_state != "Registered":
            if time.monotonic() > deadline:
                raise DeployError(f"Resource provider {ns} was still not Registered after {timeout:.0f} s; check it "
                                  "in the portal (Subscription > Resource providers) and run `up` again.")
            time.sleep(clients.poll_seconds)


def ensure_resource_group(clients: Clients, name: str, location: str | None) -> bool:
    """Create the resource group if missing (tagged so teardown may delete it). Returns True if created.

    Raises DeployError when it is missing and no location was given.
    """
    if clients.resources.resource_groups.check_existence(name):
        return False
    if not location:
        raise DeployError(f"Resource group {name} does not exist. Give --location to create it, "
                          "or create it first (az group create).")
    clients.resources.resource_groups.create_or_update(name, {"location": location, "tags": {CREATED_TAG: "deploy.py"}})
    return True


def what_if(clients: Clients, group: str, deployment: str, template: dict, parameters: dict) -> list[tuple[str, str]]:
    """Ask ARM what a deployment would change. Returns [(changeType, resourceId)], nothing deployed."""
    poller = clients.deployments.deployments.begin_what_if(
        group, deployment,
        {"properties": {"mode": "Incremental", "template": template, "parameters": parameters}},
        polling_interval=clients.poll_seconds)
    result = poller.result()
    changes = result.get("properties", {}).get("changes") or result.get("changes") or []
    return [(c.get("changeType"), c.get("resourceId")) for c in changes]


def deploy_template(clients: Clients, group: str, deployment: str, template: dict, parameters: dict) -> dict[str, Any]:
    """Deploy (Incremental) and wait. Returns the template's outputs as {name: value}.

    Raises DeployError when ARM reports a provisioning state other than Succeeded.
    """
    from azure.core.exceptions import HttpResponseError

    try:
        poller = clients.deployments.deployments.begin_create_or_update(
            group, deployment,
            {"properties": {"mode": "Incremental", "template": template, "parameters": parameters}},
            polling_interval=clients.poll_seconds)
        result = poller.result()
    except HttpResponseError as exc:
        raise DeployError(f"Deployment {deployment} failed: {_arm_error(clients, group, deployment, exc)} "
                          "See the resource group's Deployments blade in the portal.") from None
    props = result.get("properties", {})
    if props.get("provisioningState") != "Succeeded":
        raise DeployError(f"Deployment {deployment} ended {props.get('provisioningState')}: {props.get('error')}. "
                          f"See the resource group's Deployments blade in the portal.")
    return _outputs(props)


#: how Container Apps reports a pull with an identity whose AcrPull assignment has not
#: taken effect yet (Azure/azure-dev#3138); a deployment failing so is tried again
ROLE_NOT_YET = ("UNAUTHORIZED", "unable to pull image")


def deploy_after_roles(clients: Clients, group: str, deployment: str, template: dict, parameters: dict,
                       progress: Callable[[str], None] = print, attempts: int = 10) -> dict[str, Any]:
    """deploy_template, tried again while it fails only because a new role assignment has
    not taken effect (minutes at times on Azure): ``attempts`` tries, ``poll_seconds`` × 10 apart."""
    for attempt in range(1, attempts + 1):
        try:
            return deploy_template(clients, group, deployment, template, parameters)
        except DeployError as exc:
            if attempt == attempts or not any(s in str(exc) for s in ROLE_NOT_YET):
                raise
            progress(f"the image pull was refused: waiting for the role assignments to take effect "
                     f"(try {attempt} of {attempts})")
            time.sleep(max(clients.poll_seconds * 10, 0.5))
    raise AssertionError("unreachable")


def _arm_error(clients: Clients, group: str, deployment: str, exc: Any) -> str:
    """What ARM said went wrong: the refusal itself (a template ARM would not accept), or
    the failed deployment's own error and its details (which resource, and why)."""
    if exc.status_code and exc.status_code >= 400 and exc.error is not None and exc.error.code != "DeploymentFailed":
        return f"{exc.error.code}: {exc.error.message}"
    try:
        error = clients.deployments.deployments.get(group, deployment).get("properties", {}).get("error") or {}
    except Exception:  # the deployment cannot be read: say what the SDK said
        return str(exc.message or exc)
    details = "; ".join(f"{d.get('code')}: {d.get('message')}" for d in error.get("details") or [])
    return f"{error.get('code')}: {details or error.get('message')}"


def deployment_outputs(clients: Clients, group: str, deployment: str) -> dict[str, Any]:
    """Outputs of the last `up` in this group ({} when it failed: ARM keeps no outputs of a
    failed deployment). Raises DeployError when there is none."""
    from azure.core.exceptions import ResourceNotFoundError
    try:
        result = clients.deployments.deployments.get(group, deployment)
    except ResourceNotFoundError:
        raise DeployError(f"No deployment {deployment} in {group}: run `scripts/deploy.py up -g {group}` first.") from None
    return _outputs(result.get("properties", {}))


def _outputs(props: dict) -> dict[str, Any]:
    """A deployment's template outputs as {name: value}."""
    return {k: v.get("value") for k, v in (props.get("outputs") or {}).items()}


# --- the image, built by ACR Tasks ----------------------------------------------------------

def _ignore_patterns() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pat = raw.lstrip("!").rstrip("/")
        candidates = [pat] + ([pat[3:]] if pat.startswith("**/") else [])
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        tails = ["/".join(parts[i:j]) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)] \
            if pat.startswith("**/") else []
        if any(fnmatch.fnmatchcase(p, c) for c in candidates for p in prefixes + tails):
            ignored = not negate
    return ignored


def build_context(root: Path = ROOT) -> bytes:
    """The Docker build context as tar.gz bytes: the files docker/Dockerfile.dockerignore lets through.

    docker/Dockerfile itself is always included (ACR reads it from the archive);
    docker/ca.crt never is: it is this machine's proxy CA and would break pip in Azure.
    """
    patterns = _ignore_patterns()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel in sorted(_candidates(root, patterns)):
            if rel.startswith((".git/", ".venv", "node_modules/")) or rel == "docker/ca.crt":
                continue
            if rel != DOCKERFILE and _ignored(rel, patterns):
                continue
            tar.add(root / rel, arcname=rel)
    return buf.getvalue()


def _candidates(root: Path, patterns: list[str]) -> list[str]:
    """Every file below ``root`` that the ignore patterns might let through: a directory
    they ignore is not walked unless a ``!`` pattern could reach inside it (the repository
    root holds .venv/ and node_modules/, whose walk alone took seconds)."""
    wanted = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]

    def may_hold(rel: str) -> bool:
        return not _ignored(rel, patterns) or any(
            w == rel or w.startswith(rel + "/") or rel.startswith(w + "/") or any(c in w for c in "*?[") for w in wanted)
    out = []
    for here, dirs, files in os.walk(root):
        base = Path(here).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = [d for d in dirs if d not in (".git", "node_modules") and not d.startswith(".venv")
                   and may_hold(prefix + d)]
        out += [prefix + f for f in files]
    return out


def build_image(clients: Clients, group: str, registry: str, context: bytes, image_names: list[str],
                progress: Callable[[str], None] = print, base_image: str | None = None,
                extra_r_packages: str = "") -> str:
    """Upload ``context`` and build it in ``registry`` with ACR Tasks. Returns the run ID.

    ``base_image`` replaces the Dockerfile's BASE_IMAGE (a copy in the registry, see
    import_base_image); ``extra_r_packages`` is the Dockerfile's EXTRA_R_PACKAGES (Debian
    package names, see r_debs). Raises DeployError (with the build log's link) when the build does
    not succeed, and with what to do when the subscription does not allow ACR Tasks.
    """
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.containerregistrytasks import models as acr
    from azure.storage.blob import BlobClient

    source = clients.acr_tasks.registries.get_build_source_upload_url(group, registry)
    BlobClient.from_blob_url(source.upload_url, **clients.client_kwargs).upload_blob(context, overwrite=True)
    progress(f"uploaded build context ({len(context) / 1e6:.1f} MB); building {', '.join(image_names)} in {registry}")
    request = acr.DockerBuildRequest(
        source_location=source.relative_path, docker_file_path=DOCKERFILE, image_names=image_names,
        is_push_enabled=True, platform=acr.PlatformProperties(os="Linux", architecture="amd64"),
        timeout=3600,
        arguments=[acr.Argument(name=n, value=v) for n, v in
                   (("BASE_IMAGE", base_image), ("EXTRA_R_PACKAGES", extra_r_packages)) if v] or None)
    try:
        run = clients.acr_tasks.registries.schedule_run(group, registry, request)
    except HttpResponseError as exc:
        code = exc.error.code if exc.error else ""
        if code == "TasksOperationsNotAllowed" or "TasksOperationsNotAllowed" in str(exc):
            raise DeployError(
                "This subscription does not allow ACR Tasks (TasksOperationsNotAllowed: free-trial and some credit "
                "subscriptions). Build the image elsewhere and push it to the registry: scripts/build-image, then "
                f"`docker tag scorer:dev {registry}.azurecr.io/scorer:TAG && az acr login -n {registry} && docker push "
                f"{registry}.azurecr.io/scorer:TAG`; then run `up --skip-build --image-tag TAG --image-pushed`.") from None
        raise
    run_id = run.properties.run_id
    status = run.properties.status
    while status not in ACR_TERMINAL:
        time.sleep(clients.poll_seconds)
        status = clients.acr_tasks.runs.get(group, registry, run_id).properties.status
    if status != "Succeeded":
        link = clients.acr_tasks.runs.get_log_sas_url(group, registry, run_id).log_link
        raise DeployError(f"Image build {run_id} ended {getattr(status, 'value', status)}. Build log: {link}")
    return run_id


def r_debs(packages: str) -> str:
    """Debian package names for ``--r-packages prophet,forecast``, from scripts/r-debs
    (the one definition of the rule, shared with scripts/setup and build-image)."""
    done = subprocess.run([str(ROOT / "scripts" / "r-debs"), packages], capture_output=True, text=True)
    if done.returncode:
        raise DeployError(done.stderr.strip())
    return done.stdout.strip()


def import_base_image(clients: Clients, group: str, registry: str, login_server: str,
                      progress: Callable[[str], None] = print) -> str:
    """Copy the Dockerfile's base image from Docker Hub into the registry (ACR's import,
    as `az acr import`): shared ACR Tasks agents pull Docker Hub anonymously and are often
    throttled. Returns the copy's reference for BASE_IMAGE."""
    from azure.mgmt.containerregistry.models import (ImportImageParameters, ImportMode, ImportSource,
                                                     ImportSourceCredentials)

    user, token = os.environ.get("DOCKERHUB_USERNAME"), os.environ.get("DOCKERHUB_TOKEN")
    # an anonymous import is itself a Docker Hub pull, throttled like the build's: with an
    # account's token (from the environment, never the command line) it has the account's limits
    credentials = ImportSourceCredentials(username=user, password=token) if user and token else None
    progress(f"importing docker.io/{BASE_IMAGE} into {registry} as {BASE_IMAGE_COPY}"
             + (f" (as Docker Hub user {user})" if credentials else " (anonymously: set DOCKERHUB_USERNAME and "
                                                                    "DOCKERHUB_TOKEN to use an account's limits)"))
    clients.acr.registries.begin_import_image(group, registry, ImportImageParameters(
        source=ImportSource(registry_uri="registry.hub.docker.com", source_image=BASE_IMAGE, credentials=credentials),
        target_tags=[BASE_IMAGE_COPY], mode=ImportMode.FORCE), polling_interval=clients.poll_seconds).result()
    return f"{login_server}/{BASE_IMAGE_COPY}"


def built_tags(clients: Clients, group: str, registry: str) -> set[str]:
    """The scorer image tags a succeeded ACR Tasks run of this registry pushed."""
    tags = set()
    for run in clients.acr_tasks.runs.list(group, registry, filter="Status eq 'Succeeded'"):
        for image in run.properties.output_images or []:
            if image.repository == "scorer" and image.tag:
                tags.add(image.tag)
    return tags


# --- runs -----------------------------------------------------------------------------------

def trigger_run(clients: Clients, group: str, logic_app: str) -> None:
    """Fire the schedule trigger now: one run that scores everything pending."""
    clients.logic.workflow_triggers.run(group, logic_app, wf.SCHEDULE_TRIGGER)


def recent_runs(clients: Clients, group: str, logic_app: str, top: int = 10) -> list[dict[str, Any]]:
    """The newest runs: name, status, start and end time, error code."""
    out = []
    for run in clients.logic.workflow_runs.list(group, logic_app, top=top):
        error = run.error if isinstance(run.error, dict) else {}
        out.append({"name": run.name, "status": run.status, "start": run.start_time, "end": run.end_time,
                    "error": (error.get("code") if error else None)})
        if len(out) >= top:
            break
    return out


def saved_logs(clients: Clients, blob_endpoint: str, logs_container: str, run: str) -> dict[str, str]:
    """The logs a run saved, by container group: the workflow writes each group's log
    (with its last polled state) to <logs container>/runs/<run name>/<group>.log. (The Logic
    Apps API gives an action's outputs only behind outputsLink, so the run's group names
    are not read from its actions.)"""
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient(blob_endpoint, credential=clients.blob_credential or clients.credential,
                                **clients.client_kwargs)
    container = service.get_container_client(logs_container)
    out: dict[str, str] = {}
    for blob in container.list_blobs(name_starts_with=f"runs/{run}/"):
        out[blob.name] = container.get_blob_client(blob.name).download_blob().readall().decode("utf-8", "replace")
    return out


# --- teardown -------------------------------------------------------------------------------

def resources_to_delete(clients: Clients, group: str, deployment: str) -> list[str]:
    """IDs of what the deployment created, in an order that deletes dependants first
    ([] when there is no such deployment)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        result = clients.deployments.deployments.get(group, deployment)
    except ResourceNotFoundError:
        return []
    ids = [r["id"] for r in result.get("properties", {}).get("outputResources") or []]
    rank = {t.lower(): i for i, t in enumerate(TEARDOWN_ORDER)}
    chosen = [rid for rid in ids if split_id(rid)[1].lower() in rank]
    return sorted(chosen, key=lambda rid: rank[split_id(rid)[1].lower()])


def teardown(clients: Clients, group: str, deployment: str, progress: Callable[[str], None] = print) -> None:
    """Delete what `up` created: the whole group if `up` created it, else the deployment's
    resources; and, either way, what it created outside the group (the custom role
    definition lives in the subscription: deleting the group leaves it behind)."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        rg = clients.resources.resource_groups.get(group)
    except ResourceNotFoundError:
        progress(f"resource group {group} does not exist: nothing to delete")
        return
    doomed = resources_to_delete(clients, group, deployment)
    api = {r["type"].lower(): r["apiVersion"] for r in load_template()["resources"]}
    inside = f"/resourcegroups/{group.lower()}/"
    if (rg.tags or {}).get(CREATED_TAG):
        progress(f"deleting resource group {group} (created by deploy.py)")
        clients.resources.resource_groups.begin_delete(group, polling_interval=clients.poll_seconds).result()
        doomed = [rid for rid in doomed if inside not in rid.lower()]
    for rid in doomed:
        progress(f"deleting {rid}")
        clients.resources.resources.begin_delete_by_id(
            rid, api_version=api[split_id(rid)[1].lower()], polling_interval=clients.poll_seconds).result()
    if not (rg.tags or {}).get(CREATED_TAG):
        clients.deployments.deployments.begin_delete(group, deployment, polling_interval=clients.poll_seconds).result()


# --- command line ---------------------------------------------------------------------------

def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    ints = lambda s: [int(x) for x in s.split(",")] if s else None  # noqa: E731
    return {"cpuCores": args.cpu, "memoryInGB": args.memory, "parallelJobs": args.parallel_jobs,
            "scheduleFrequency": args.schedule_frequency, "scheduleInterval": args.schedule_interval,
            "scheduleHours": ints(args.schedule_hours), "scheduleMinutes": ints(args.schedule_minutes),
            "jobTimeout": args.job_timeout, "pollSeconds": args.poll_seconds}


def next_steps(group: str, outputs: dict[str, Any], local: bool = False) -> str:
    """What to do after `up`, with this deployment's names filled in (and --local for the local Azure)."""
    cmd = "scripts/deploy.py --local" if local else "scripts/deploy.py"
    account = outputs.get("blobEndpoint", "https://<account>.blob.core.windows.net/")
    where = (f"SCORER_ACCOUNT_URL={account}" if account.startswith("https://") else
             'eval "$(scripts/azurite env)";')  # the local Azure's storage is Azurite, which takes no tokens
    return f"""
Deployed. Next:
  1. Publish a model (needs Storage Blob Data Contributor, granted to you unless --no-grant-me):
       {where} scorer models publish MODEL.rds --name NAME
  2. Drop input into {outputs.get('inputContainer', 'input')}/NAME/... (CSV or Parquet); the blob event starts a run,
     and the schedule scores whatever is pending (including anything an event missed).
  3. Watch runs:   {cmd} runs -g {group}
     Run now:      {cmd} trigger -g {group}
     Job logs:     {cmd} logs -g {group} RUN
  Role assignments can take a few minutes to apply; a run in the first minutes may fail with 403.
  Remove everything: {cmd} teardown -g {group} --yes""" + (f"""
  HTTP API: {outputs['apiUrl']} (Entra ID sign-in required; docs/serving.md shows how to call it):
       TOKEN=$(az account get-access-token --resource api://<api client id> --query accessToken -o tsv)
       curl -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
            -d '{{"rows": [...]}}' {outputs['apiUrl']}/v1/models/NAME/predict""" if outputs.get("apiUrl") else "")


def _check_up(args: argparse.Namespace, values: dict) -> None:
    """`up`'s arguments refused before anything is deployed, each with what to do."""
    cores = values["parallelJobs"] * float(values["cpuCores"])
    if cores > args.cores_quota:
        raise DeployError(
            f"parallelJobs × cpuCores is {cores:g} cores, more than the {args.cores_quota} standard cores of Container "
            "Instances your region allows (100 by default): the groups past the quota would be refused at run time. "
            "Ask for more (portal: Quotas > Container Instances > Standard Cores), then pass --cores-quota N; or lower "
            "--parallel-jobs or --cpu.")
    if args.skip_build and not args.image_tag:
        raise DeployError("--skip-build deploys an image that exists already: give its tag with --image-tag.")
    if args.with_api and not re.fullmatch(r"[0-9a-fA-F-]{36}", args.api_client_id or ""):
        raise DeployError(
            "--with-api needs --api-client-id: the application (client) ID of an Entra ID app registration that "
            "protects the API (Container Apps authentication admits only callers with a token for it). Create one: "
            "`az ad app create --display-name scorer-api --sign-in-audience AzureADMyOrg --query appId -o tsv`, then "
            "`az ad app update --id <appId> --identifier-uris api://<appId>` and `az ad app update --id <appId> --set "
            "api.requestedAccessTokenVersion=2` (the API checks the v2.0 issuer; docs/serving.md has the rest).")
    if args.skip_build and args.r_packages:
        raise DeployError("--r-packages adds packages while building the image; with --skip-build nothing is built. "
                          "Leave one of them out.")


def _up_parameters(args: argparse.Namespace, values: dict, definition: dict, oid: str, ptype: str, tag: str,
                   state: str) -> dict:
    """The template's parameters for an `up` deploying image ``scorer:<tag>``; ``state``
    Disabled when that image is not built yet (imageReady false: the workflow stays
    Disabled and nothing that needs the image is created)."""
    params = template_parameters(values, definition, prefix=args.prefix, image_name=f"scorer:{tag}",
                                 operator_principal_id=oid, location=args.location)
    params["operatorPrincipalType"] = {"value": ptype}
    params["registrySku"] = {"value": args.registry_sku}
    params["imageReady"] = {"value": state == "Enabled"}
    if args.with_api:
        params["withApi"] = {"value": True}
        params["apiClientId"] = {"value": args.api_client_id}
        params["modelsContainer"] = {"value": wf.models_container(values)}
        params["apiMaxReplicas"] = {"value": args.api_max_replicas}
    return params


def running_tag(clients: Clients, group: str, prefix: str, previous: dict | None) -> str | None:
    """The image tag the workflow runs now, or None when it runs none (a first deployment,
    or a workflow left Disabled). Read from the last deployment's outputs; when that
    deployment failed (no outputs), from the Logic App itself, so that a failed update never
    turns a working workflow off while its next image builds."""
    if previous:
        return previous.get("image", "").rpartition(":")[2] or None
    if previous is None:
        return None
    from azure.core.exceptions import ResourceNotFoundError
    try:  # the template's logicAppName, format('{0}-runner', namePrefix): tests/test_arm_template_language.py pins it
        workflow = clients.logic.workflows.get(group, f"{prefix}-runner")
    except ResourceNotFoundError:
        return None
    image = (workflow.parameters or {}).get("image")
    value = getattr(image, "value", None) if image is not None else None
    return str(value).rpartition(":")[2] if value and workflow.state == "Enabled" else None


def cmd_up(args: argparse.Namespace, clients: Clients) -> int:
    definition = wf.load()["definition"]
    values = wf.settings(definition, _overrides(args))
    _check_up(args, values)
    extra_debs = r_debs(args.r_packages) if args.r_packages else ""  # refused here, before anything is deployed
    oid, ptype = ("", "User") if args.no_grant_me else signed_in_principal(clients.credential)
    template = load_template()
    new_tag = args.image_tag or dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")

    def parameters(tag: str, state: str) -> dict:
        return _up_parameters(args, values, definition, oid, ptype, tag, state)

    if args.what_if:
        if not clients.resources.resource_groups.check_existence(args.resource_group):
            print(f"resource group {args.resource_group} does not exist: everything would be created")
            return 0
        for change, rid in what_if(clients, args.resource_group, args.prefix, template, parameters(new_tag, "Enabled")):
            print(f"{change:10} {rid}")
        return 0
    ensure_providers(clients, extra=("Microsoft.App",) if args.with_api else ())
    ensure_resource_group(clients, args.resource_group, args.location)
    try:
        previous = deployment_outputs(clients, args.resource_group, args.prefix)
    except DeployError:  # a first deployment
        previous = None
    current = running_tag(clients, args.resource_group, args.prefix, previous)
    print(f"deploying {TEMPLATE_PATH.relative_to(ROOT)} to {args.resource_group} ...")
    if args.skip_build:
        if previous == {} and not args.image_pushed:
            raise DeployError(f"The last deployment {args.prefix} in {args.resource_group} did not succeed, so it "
                              f"has no registry to check scorer:{new_tag} in. Run `up` without --skip-build (it "
                              "builds the image), or add --image-pushed if you pushed that tag yourself.")
        if not args.image_pushed and (previous is None or new_tag not in built_tags(
                clients, args.resource_group, previous["registryName"])):
            raise DeployError(f"No ACR Tasks run built scorer:{new_tag} in this deployment's registry, so deploying it "
                              "would point the workflow at an image that may not exist. Build it (run `up` without "
                              "--skip-build), or, if you pushed it yourself, add --image-pushed.")
        outputs = deploy_after_roles(clients, args.resource_group, args.prefix, template, parameters(new_tag, "Enabled"))
    else:
        # The workflow keeps the image it runs (or, on a first deployment, stays disabled)
        # until the new one is built: a run during the build, or after a failed build,
        # never points at a tag that does not exist.
        outputs = deploy_template(clients, args.resource_group, args.prefix, template,
                                  parameters(current or new_tag, "Enabled" if current else "Disabled"))
        base = import_base_image(clients, args.resource_group, outputs["registryName"], outputs["registryLoginServer"]) \
            if args.import_base_image else None
        build_image(clients, args.resource_group, outputs["registryName"], build_context(),
                    [f"scorer:{new_tag}", "scorer:latest"], base_image=base,
                    extra_r_packages=extra_debs)
        outputs = deploy_after_roles(clients, args.resource_group, args.prefix, template, parameters(new_tag, "Enabled"))
        print(f"image {outputs['image']} built; the workflow runs it")
    if args.publish_model:
        env = dict(os.environ, SCORER_ACCOUNT_URL=outputs["blobEndpoint"])
        env.pop("AZURE_STORAGE_CONNECTION_STRING", None)
        subprocess.run([sys.executable, "-m", "scorer", "models", "publish", args.publish_model,
                        "--name", args.model_name], env=env, check=True)
    print(next_steps(args.resource_group, outputs, args.local))
    return 0


def cmd_trigger(args: argparse.Namespace, clients: Clients) -> int:
    outputs = deployment_outputs(clients, args.resource_group, args.prefix)
    trigger_run(clients, args.resource_group, outputs["logicAppName"])
    print(f"run started; follow it with: scripts/deploy.py runs -g {args.resource_group}")
    return 0


def cmd_runs(args: argparse.Namespace, clients: Clients) -> int:
    outputs = deployment_outputs(clients, args.resource_group, args.prefix)
    for r in recent_runs(clients, args.resource_group, outputs["logicAppName"], args.top):
        print(f"{r['name']}  {r['status']:10} {r['start']!s:32}  {r['end'] or '(running)'!s:32}  {r['error'] or ''}")
    return 0


def cmd_logs(args: argparse.Namespace, clients: Clients) -> int:
    outputs = deployment_outputs(clients, args.resource_group, args.prefix)
    logs = saved_logs(clients, outputs["blobEndpoint"], outputs["logsContainer"], args.run)
    if not logs:
        raise DeployError(f"Run {args.run} saved no log: it created no container group (an event already scored, "
                          "or a validation), or it is still running. `runs` lists recent runs.")
    for name, text in logs.items():
        print(f"===== {outputs['logsContainer']}/{name}")
        print(text)
    return 0


def cmd_teardown(args: argparse.Namespace, clients: Clients) -> int:
    if not args.yes:
        raise DeployError("teardown deletes the storage account with every model, input and output in it. "
                          "Add --yes to go ahead.")
    teardown(clients, args.resource_group, args.prefix)
    return 0


def _workflow_options(up: argparse.ArgumentParser) -> None:
    """`up`'s options for the workflow's settings (logicapp/workflow.json's parameters)."""
    up.add_argument("--cpu", type=float, help="vCPUs per container group (workflow default: cpuCores)")
    up.add_argument("--memory", type=float, help="GB per container group (workflow default: memoryInGB)")
    up.add_argument("--parallel-jobs", type=int, help="container groups per run (workflow default: parallelJobs)")
    up.add_argument("--schedule-frequency", help="Second, Minute, Hour, Day, Week or Month")
    up.add_argument("--schedule-interval", type=int, help="units of --schedule-frequency between runs")
    up.add_argument("--schedule-hours", help="UTC hours, comma-separated, e.g. 2,14 (Day and Week schedules)")
    up.add_argument("--schedule-minutes", help="minutes, comma-separated, e.g. 0,30 (Hour, Day and Week schedules)")
    up.add_argument("--job-timeout", help="ISO 8601 duration the job may run, e.g. PT2H")
    up.add_argument("--poll-seconds", type=int, help="seconds between polls of the container group (1-45)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deploy.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--subscription", help="subscription ID (default: AZURE_SUBSCRIPTION_ID)")
    p.add_argument("--prefix", default="scorer", help="name prefix of the resources and of the ARM deployment")
    p.add_argument("--local", action="store_true", help="to the local Azure (`scorer azure`), not Azure: a rehearsal")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="deploy or update everything, build and push the image")
    up.add_argument("--what-if", action="store_true", help="show what would change (ARM what-if), change nothing")
    up.add_argument("-l", "--location", help="region; needed when the resource group does not exist yet")
    up.add_argument("--image-tag", help="tag of the image to build (default: UTC timestamp)")
    up.add_argument("--skip-build", action="store_true",
                    help="do not build; deploy pointing at scorer:IMAGE_TAG, which an ACR Tasks run built before")
    up.add_argument("--image-pushed", action="store_true",
                    help="with --skip-build: the tag was pushed by hand (no ACR Tasks run built it); deploy it anyway")
    up.add_argument("--import-base-image", action="store_true",
                    help="copy the Dockerfile's base image from Docker Hub into the registry first and build from the "
                    "copy (when ACR Tasks' anonymous Docker Hub pulls are throttled)")
    up.add_argument("--with-api", action="store_true",
                    help="also deploy the HTTP API (scorer serve) as a Container App: scale to zero, Entra ID sign-in")
    up.add_argument("--api-client-id", metavar="APP_ID",
                    help="with --with-api: the Entra ID app registration that protects the API (docs/serving.md)")
    up.add_argument("--api-max-replicas", type=int, default=5, help="with --with-api: most replicas under load")
    up.add_argument("--r-packages", metavar="PKG,PKG",
                    help="R packages from Debian to add to the image beyond docker/r-packages.txt, e.g. prophet,forecast")
    up.add_argument("--registry-sku", choices=["Basic", "Standard", "Premium"], default="Basic",
                    help="registry tier (default Basic; Microsoft's guide to identity pulls in ACI lists Premium: use it "
                    "if a first run fails to pull the image)")
    up.add_argument("--cores-quota", type=int, default=DEFAULT_CORES_QUOTA,
                    help="your region's Container Instances standard-cores quota (default: Azure's default, 100); "
                    "parallelJobs × cpu may not exceed it")
    up.add_argument("--no-grant-me", action="store_true",
                    help="do not give the signed-in user Storage Blob Data Contributor on the account")
    up.add_argument("--publish-model", metavar="MODEL.rds", help="publish this model after deploying (needs R)")
    up.add_argument("--model-name", help="name to publish --publish-model under")
    _workflow_options(up)
    up.set_defaults(func=cmd_up)

    for name, func, text in (("trigger", cmd_trigger, "start a scoring run now"),
                             ("runs", cmd_runs, "list recent runs with their status"),
                             ("logs", cmd_logs, "print the container logs a run saved"),
                             ("teardown", cmd_teardown, "delete what `up` created")):
        s = sub.add_parser(name, help=text)
        s.set_defaults(func=func)
        if name == "runs":
            s.add_argument("--top", type=int, default=10, help="how many runs")
        if name == "logs":
            s.add_argument("run", help="run name, as `runs` prints it")
        if name == "teardown":
            s.add_argument("--yes", action="store_true", help="really delete (storage data included)")
    for s in sub.choices.values():
        s.add_argument("-g", "--resource-group", required=True, help="target resource group")
    return p


def main(argv: list[str] | None = None, clients: Clients | None = None) -> int:
    """Command-line entry point; ``clients`` lets tests pass clients with a fake transport."""
    args = parser().parse_args(argv)
    if args.command == "up" and args.publish_model and not args.model_name:
        print("error: --publish-model needs --model-name", file=sys.stderr)
        return 2
    try:
        if clients is None and args.local:
            clients = local_clients()
        if clients is None:
            from azure.identity import DefaultAzureCredential
            subscription = args.subscription or os.environ.get("AZURE_SUBSCRIPTION_ID")
            if not subscription:
                raise DeployError("No subscription: pass --subscription or set AZURE_SUBSCRIPTION_ID "
                                  "(az account show --query id -o tsv).")
            clients = make_clients(DefaultAzureCredential(), subscription)
        return args.func(args, clients)
    except (DeployError, wf.WorkflowSettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
