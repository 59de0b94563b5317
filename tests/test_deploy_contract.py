"""Contract tests of scripts/deploy.py against the Azure SDKs, with no network.

These are CONTRACT tests, NOT verified on Azure. Each test builds the real management
clients (azure-mgmt-*) with ``transport=RecordedTransport(...)``, an azure-core
HttpTransport that answers every request and records what was sent. The answers are
Microsoft's published REST examples (azure-rest-api-specs, copied unchanged into
tests/fixtures/azure-rest-examples), read by ``example()``; where a test needs a value of
its own in one (this deployment's outputs, a registration state, a built tag), it changes
only that value and says so. Where Microsoft publishes no example for an operation, the
test says so and writes the smallest body the SDK's model accepts. They prove that
deploy.py calls the SDKs with arguments the SDKs accept, sends the bodies intended, and
reads the answers it needs; not that Azure behaves as the examples show.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import tarfile
from pathlib import Path

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport, RequestsTransportResponse
from azure.core.rest import HttpRequest as RestHttpRequest
from azure.core.rest._requests_basic import RestRequestsTransportResponse  # azure-core's own wrapper

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "tests" / "fixtures" / "azure-rest-examples"
pytestmark = pytest.mark.contract

SUB = "00000000-0000-0000-0000-000000000000"
RG = "rg-scorer"
OUTPUTS = {
    "logicAppName": "scorer-runner", "storageAccountName": "scorerstabc",
    "blobEndpoint": "https://scorerstabc.blob.core.windows.net/", "registryName": "scoreracrabc",
    "registryLoginServer": "scoreracrabc.azurecr.io", "image": "scoreracrabc.azurecr.io/scorer:t1",
    "jobIdentityClientId": "11111111-1111-1111-1111-111111111111",
    "logicAppIdentityPrincipalId": "22222222-2222-2222-2222-222222222222",
    "logsContainer": "logs", "inputContainer": "input",
}


def example(path: str, status: str = "200") -> tuple[object, dict]:
    """A published example's response: (body, headers) for ``status``."""
    answer = json.loads((EXAMPLES / path).read_text())["responses"][status]
    return copy.deepcopy(answer.get("body")), answer.get("headers") or {}


from scorer.azure import deploy  # noqa: E402 - scripts/deploy.py's logic


class FakeCredential:
    """A TokenCredential whose token carries an oid claim (and idtyp), as Entra ID tokens do."""

    def __init__(self, idtyp: str = "user"):
        self.idtyp = idtyp

    def get_token(self, *scopes, **kwargs):
        claims = {"oid": "33333333-3333-3333-3333-333333333333", "idtyp": self.idtyp}
        payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        return AccessToken(f"e30.{payload}.sig", 4_102_444_800)


class RecordedTransport(HttpTransport):
    """Answers requests from (method, URL regex) -> response rules; records every request.

    A request no rule matches fails the test, so an unexpected call cannot pass unnoticed.
    A rule whose response is a list answers with its items in turn (the last repeats).
    """

    def __init__(self, rules: list[tuple[str, str, int, object, dict]]):
        self.rules = rules
        self.sent: list[tuple[str, str, bytes | None]] = []
        self._turn: dict[int, int] = {}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        pass

    def open(self):
        pass

    def close(self):
        pass

    def send(self, request, **kwargs):
        body = request.content if isinstance(request, RestHttpRequest) else request.body
        if hasattr(body, "read"):
            body = body.read()
        self.sent.append((request.method, request.url, body))
        for i, (method, pattern, status, payload, headers) in enumerate(self.rules):
            if method == request.method and re.search(pattern, request.url):
                if isinstance(payload, list) and payload and isinstance(payload[0], tuple):
                    turn = self._turn.get(i, 0)
                    self._turn[i] = turn + 1
                    status, payload = payload[min(turn, len(payload) - 1)]
                return self._response(request, status, payload, headers)
        raise AssertionError(f"unexpected request {request.method} {request.url}")

    @staticmethod
    def _response(request, status, payload, headers):
        resp = requests.Response()
        resp.status_code = status
        resp._content = payload if isinstance(payload, bytes) else json.dumps(payload).encode() if payload is not None else b""
        resp.headers.update({"Content-Type": "application/json", "x-ms-request-id": "r1", **headers})
        resp.raw = io.BytesIO(resp._content)  # for callers that stream the body
        resp.url = request.url
        resp.request = requests.Request(request.method, request.url).prepare()
        wrapper = RestRequestsTransportResponse if isinstance(request, RestHttpRequest) else RequestsTransportResponse
        return wrapper(request=request, internal_response=resp) if wrapper is RestRequestsTransportResponse \
            else wrapper(request, resp)

    def bodies(self, method: str, pattern: str) -> list[dict]:
        return [json.loads(b) for m, u, b in self.sent if m == method and re.search(pattern, u) and b]


def clients_with(rules, idtyp: str = "user") -> tuple[object, RecordedTransport]:
    transport = RecordedTransport(rules)
    return deploy.make_clients(FakeCredential(idtyp), SUB, poll_seconds=0, transport=transport), transport


def deployment_response(state="Succeeded", outputs=OUTPUTS, output_resources=()):
    """PutDeploymentResourceGroup.json's 200 body with this deployment's state, outputs and
    output resources (the example's own are another template's)."""
    body, _ = example("Microsoft.Resources/2022-09-01/PutDeploymentResourceGroup.json")
    body["id"] = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Resources/deployments/scorer"
    body["name"] = "scorer"
    body["properties"]["provisioningState"] = state
    body["properties"]["outputs"] = {k: {"type": "String", "value": v} for k, v in outputs.items()}
    body["properties"]["outputResources"] = [{"id": i} for i in output_resources]
    return body


def provider(state: str) -> dict:
    """GetProvider.json's body with this registration state (the example shows Registering)."""
    body, _ = example("Microsoft.Resources/2022-09-01/GetProvider.json")
    body["registrationState"] = state
    return body


def upload_url() -> dict:
    body, _ = example("Microsoft.ContainerRegistry/2019-04-01/RegistriesGetBuildSourceUploadUrl.json")
    return body


def acr_run(status: str) -> dict:
    """RegistriesScheduleRun.json's 200 body (status Succeeded) with this status."""
    body, _ = example("Microsoft.ContainerRegistry/2019-04-01/RegistriesScheduleRun.json")
    body["properties"]["status"] = status
    return body


RUN_ID = "0accec26-d6de-4757-8e74-d080f38eaaab"  # the examples' run
DEPLOYMENTS = rf"/resourcegroups/{RG}/providers/Microsoft.Resources/deployments/scorer\?"
REGISTERED = [("GET", r"/providers/Microsoft\.[A-Za-z]+\?", 200, provider("Registered"), {})]
FIRST_DEPLOYMENT = [("GET", DEPLOYMENTS, 404, {"error": {"code": "DeploymentNotFound", "message": "not found"}}, {})]
UPLOAD = r"registrystorageaccount\.blob\.core\.windows\.net/registrycontainer/source/"
BUILD = [
    ("POST", r"/registries/scoreracrabc/listBuildSourceUploadUrl\?", 200, upload_url(), {}),
    ("PUT", UPLOAD, 201, b"", {"ETag": '"0x1"', "Last-Modified": "Fri, 02 Jan 2026 03:04:05 GMT"}),
    ("POST", r"/registries/scoreracrabc/scheduleRun\?", 200, acr_run("Queued"), {}),
    ("GET", rf"/registries/scoreracrabc/runs/{RUN_ID}\?", 200, acr_run("Succeeded"), {}),
]


def test_up_what_if_calls_arm_what_if_and_deploys_nothing(capsys):
    """Contract test (not verified on Azure): --what-if posts whatIf and prints ARM's changes."""
    body, _ = example("Microsoft.Resources/2022-09-01/PostDeploymentWhatIfOnResourceGroup.json")
    clients, transport = clients_with([
        ("HEAD", rf"/resourcegroups/{RG}\?", 204, None, {}),
        ("POST", r"/deployments/scorer/whatIf\?", 200, body, {}),
    ])
    assert deploy.main(["up", "-g", RG, "--what-if"], clients=clients) == 0
    out = capsys.readouterr().out
    for change in body["properties"]["changes"]:
        assert f"{change['changeType']:10} {change['resourceId']}" in out
    assert not any(m == "PUT" for m, _, _ in transport.sent), "what-if must not change anything"
    (sent,) = transport.bodies("POST", r"/whatIf\?")
    props = sent["properties"]
    assert props["mode"] == "Incremental"
    assert props["template"] == json.loads((ROOT / "arm_templates" / "main.json").read_text())
    assert props["parameters"]["workflowDefinition"]["value"]["triggers"]["Scheduled_run"]["recurrence"]["schedule"] == {"hours": [2], "minutes": [0]}
    assert props["parameters"]["operatorPrincipalId"]["value"] == "33333333-3333-3333-3333-333333333333"
    assert props["parameters"]["blobContainers"]["value"] == ["models", "input", "output", "archive", "quarantine", "reports", "shadow", "labels", "logs"]


def test_a_first_up_registers_providers_deploys_disabled_builds_then_enables_the_built_tag(capsys):
    """Contract test (not verified on Azure): the whole `up` path through the SDKs
    (issue 14, defects 1 and 5). Microsoft publishes no example for Providers_Register:
    its answer here is GetProvider.json's body."""
    clients, transport = clients_with([
        ("GET", r"/providers/Microsoft\.ContainerInstance\?", 200, [(200, provider("NotRegistered")),
                                                                   (200, provider("Registering")),
                                                                   (200, provider("Registered"))], {}),
        ("POST", r"/providers/Microsoft\.ContainerInstance/register\?", 200, provider("Registering"), {}),
        *REGISTERED,
        ("HEAD", rf"/resourcegroups/{RG}\?", 404, None, {}),
        ("PUT", rf"/resourcegroups/{RG}\?", 201, example("Microsoft.Resources/2022-09-01/CreateResourceGroup.json", "201")[0], {}),
        *FIRST_DEPLOYMENT,
        ("PUT", DEPLOYMENTS, 200, deployment_response(), {}),
        *BUILD,
    ])
    assert deploy.main(["up", "-g", RG, "-l", "westeurope", "--image-tag", "t1", "--parallel-jobs", "3"], clients=clients) == 0
    out = capsys.readouterr().out
    assert "registering resource provider Microsoft.ContainerInstance" in out
    assert "scripts/deploy.py runs -g rg-scorer" in out and "scorer models publish" in out
    assert [m for m, u, _ in transport.sent if "/register?" in u] == ["POST"]
    (rg,) = transport.bodies("PUT", rf"/resourcegroups/{RG}\?")
    assert rg["tags"] == {deploy.CREATED_TAG: "deploy.py"}
    first, second = transport.bodies("PUT", DEPLOYMENTS)
    # no run can start before the image exists: disabled, then enabled with the built tag
    assert first["properties"]["parameters"]["imageReady"]["value"] is False
    p = second["properties"]["parameters"]
    assert p["imageReady"]["value"] is True and p["imageName"]["value"] == "scorer:t1"
    assert p["location"]["value"] == "westeurope" and p["registrySku"]["value"] == "Basic"
    assert p["workflowParameterValues"]["value"]["parallelJobs"] == {"value": 3}
    order = [("PUT" if "deployments" in u else "BUILD") for m, u, _ in transport.sent
             if (m == "PUT" and "deployments" in u) or "scheduleRun" in u]
    assert order == ["PUT", "BUILD", "PUT"]
    (run,) = transport.bodies("POST", r"/scheduleRun\?")
    assert run == {"type": "DockerBuildRequest", "sourceLocation": upload_url()["relativePath"],
                   "dockerFilePath": "docker/Dockerfile", "imageNames": ["scorer:t1", "scorer:latest"],
                   "isPushEnabled": True, "platform": {"os": "Linux", "architecture": "amd64"}, "timeout": 3600}
    (archive,) = [b for m, u, b in transport.sent if m == "PUT" and re.search(UPLOAD, u)]
    names = tarfile.open(fileobj=io.BytesIO(archive)).getnames()
    assert "docker/Dockerfile" in names and "scorer/settings.py" in names
    assert not any(n.startswith((".venv", "node_modules", ".git/")) or n == "docker/ca.crt" for n in names)


def test_a_failed_build_leaves_the_workflow_on_the_image_it_had_and_links_the_log(capsys):
    """Contract test (not verified on Azure): issue 14, defect 5."""
    log, _ = example("Microsoft.ContainerRegistry/2019-04-01/RunsGetLogSasUrl.json")
    clients, transport = clients_with([
        *REGISTERED,
        ("HEAD", rf"/resourcegroups/{RG}\?", 204, None, {}),
        ("GET", DEPLOYMENTS, 200, deployment_response(outputs={**OUTPUTS, "image": "scoreracrabc.azurecr.io/scorer:old"}), {}),
        ("PUT", DEPLOYMENTS, 200, deployment_response(), {}),
        *BUILD[:3],
        ("GET", rf"/registries/scoreracrabc/runs/{RUN_ID}\?", 200, acr_run("Failed"), {}),
        ("POST", rf"/runs/{RUN_ID}/listLogSasUrl\?", 200, log, {}),
    ])
    assert deploy.main(["up", "-g", RG, "--no-grant-me"], clients=clients) == 1
    assert log["logLink"] in capsys.readouterr().err
    (only,) = transport.bodies("PUT", DEPLOYMENTS)
    assert only["properties"]["parameters"]["imageName"]["value"] == "scorer:old"
    assert only["properties"]["parameters"]["imageReady"]["value"] is True


def test_skip_build_needs_a_tag_an_acr_run_built_or_one_pushed_by_hand(capsys):
    """Contract test (not verified on Azure): issue 14, defect 5. RunsList.json's run,
    with its output image changed to scorer:t2."""
    runs, _ = example("Microsoft.ContainerRegistry/2019-04-01/RunsList.json")
    runs["value"][0]["properties"]["outputImages"][0].update(repository="scorer", tag="t2")
    base = [*REGISTERED, ("HEAD", rf"/resourcegroups/{RG}\?", 204, None, {}),
            ("GET", DEPLOYMENTS, 200, deployment_response(), {}),
            ("GET", r"/registries/scoreracrabc/runs\?", 200, runs, {}),
            ("PUT", DEPLOYMENTS, 200, deployment_response(), {})]
    clients, transport = clients_with(base)
    assert deploy.main(["up", "-g", RG, "--no-grant-me", "--skip-build"], clients=clients) == 1
    assert "--image-tag" in capsys.readouterr().err
    assert deploy.main(["up", "-g", RG, "--no-grant-me", "--skip-build", "--image-tag", "nope"], clients=clients) == 1
    assert "--image-pushed" in capsys.readouterr().err and not transport.bodies("PUT", DEPLOYMENTS)
    assert deploy.main(["up", "-g", RG, "--no-grant-me", "--skip-build", "--image-tag", "t2"], clients=clients) == 0
    assert transport.bodies("PUT", DEPLOYMENTS)[-1]["properties"]["parameters"]["imageName"]["value"] == "scorer:t2"
    assert deploy.main(["up", "-g", RG, "--no-grant-me", "--skip-build", "--image-tag", "mine",
                        "--image-pushed"], clients=clients) == 0


@pytest.mark.parametrize("idtyp, principal_type", [("app", "ServicePrincipal"), ("user", "User")])
def test_the_operators_role_assignment_names_the_principal_type_of_the_token(idtyp, principal_type):
    """Contract test (not verified on Azure): issue 14, defect 2 (UnmatchedPrincipalType)."""
    clients, transport = clients_with([
        *REGISTERED, ("HEAD", rf"/resourcegroups/{RG}\?", 204, None, {}),
        ("GET", DEPLOYMENTS, 200, deployment_response(), {}),
        ("PUT", DEPLOYMENTS, 200, deployment_response(), {}), *BUILD], idtyp=idtyp)
    assert deploy.main(["up", "-g", RG], clients=clients) == 0
    params = transport.bodies("PUT", DEPLOYMENTS)[-1]["properties"]["parameters"]
    assert params["operatorPrincipalType"]["value"] == principal_type
    assert params["operatorPrincipalId"]["value"] == "33333333-3333-3333-3333-333333333333"


def test_no_permission_to_register_a_provider_says_what_to_ask_an_admin_for(capsys):
    """Contract test (not verified on Azure): no example publishes a Providers_Register
    refusal; the body is ARM's error shape with AuthorizationFailed."""
    clients, _ = clients_with([
        ("GET", r"/providers/Microsoft\.ContainerInstance\?", 200, provider("NotRegistered"), {}),
        ("POST", r"/register\?", 403, {"error": {"code": "AuthorizationFailed", "message": "no register action"}}, {}),
    ])
    assert deploy.main(["up", "-g", RG, "--no-grant-me"], clients=clients) == 1
    err = capsys.readouterr().err
    assert "az provider register --namespace Microsoft.ContainerInstance" in err and "subscription" in err


def test_acr_tasks_refused_by_the_subscription_says_how_to_build_elsewhere(capsys):
    """Contract test (not verified on Azure): issue 14, defect 10. No example publishes
    the TasksOperationsNotAllowed error; the body is ARM's error shape with that code."""
    clients, transport = clients_with([
        *REGISTERED, ("HEAD", rf"/resourcegroups/{RG}\?", 204, None, {}), *FIRST_DEPLOYMENT,
        ("PUT", DEPLOYMENTS, 200, deployment_response(), {}), *BUILD[:2],
        ("POST", r"/scheduleRun\?", 409, {"error": {"code": "TasksOperationsNotAllowed",
                                                   "message": "ACR Tasks requests are not permitted"}}, {}),
    ])
    assert deploy.main(["up", "-g", RG, "--no-grant-me"], clients=clients) == 1
    err = capsys.readouterr().err
    assert "TasksOperationsNotAllowed" in err and "--skip-build --image-tag TAG --image-pushed" in err
    (only,) = transport.bodies("PUT", DEPLOYMENTS)
    assert only["properties"]["parameters"]["imageReady"]["value"] is False


def test_import_base_image_copies_it_into_the_registry_and_builds_from_the_copy():
    """Contract test (not verified on Azure): issue 14, defect 10 (throttled Docker Hub
    pulls). The import answers with ImportImageFromPublicRegistry.json's 200."""
    clients, transport = clients_with([
        *REGISTERED, ("HEAD", rf"/resourcegroups/{RG}\?", 204, None, {}), *FIRST_DEPLOYMENT,
        ("PUT", DEPLOYMENTS, 200, deployment_response(), {}),
        ("POST", r"/registries/scoreracrabc/importImage\?", 200, None, {}), *BUILD,
    ])
    assert deploy.main(["up", "-g", RG, "--no-grant-me", "--import-base-image"], clients=clients) == 0
    (imported,) = transport.bodies("POST", r"/importImage\?")
    assert imported["source"] == {"registryUri": "registry.hub.docker.com", "sourceImage": deploy.BASE_IMAGE}
    assert imported["targetTags"] == [deploy.BASE_IMAGE_COPY]
    (run,) = transport.bodies("POST", r"/scheduleRun\?")
    assert run["arguments"] == [{"name": "BASE_IMAGE", "value": f"scoreracrabc.azurecr.io/{deploy.BASE_IMAGE_COPY}"}]


def test_import_base_image_uses_docker_hub_credentials_from_the_environment(monkeypatch):
    """Contract test (not verified on Azure): an anonymous import is throttled like the
    build's own pull; with DOCKERHUB_USERNAME and DOCKERHUB_TOKEN set, the import carries
    them as ImportSourceCredentials (the token never on the command line)."""
    monkeypatch.setenv("DOCKERHUB_USERNAME", "someone")
    monkeypatch.setenv("DOCKERHUB_TOKEN", "dckr_pat_example")
    clients, transport = clients_with([
        *REGISTERED, ("HEAD", rf"/resourcegroups/{RG}\?", 204, None, {}), *FIRST_DEPLOYMENT,
        ("PUT", DEPLOYMENTS, 200, deployment_response(), {}),
        ("POST", r"/registries/scoreracrabc/importImage\?", 200, None, {}), *BUILD,
    ])
    assert deploy.main(["up", "-g", RG, "--no-grant-me", "--import-base-image"], clients=clients) == 0
    (imported,) = transport.bodies("POST", r"/importImage\?")
    assert imported["source"]["credentials"] == {"username": "someone", "password": "dckr_pat_example"}


def test_r_packages_reach_the_build_as_debian_packages_and_a_bad_name_is_refused_first(capsys):
    """Contract test (not verified on Azure): the build answers with the REST examples
    (RegistriesScheduleRun etc.); the argument names docker/Dockerfile's EXTRA_R_PACKAGES."""
    clients, transport = clients_with([
        *REGISTERED, ("HEAD", rf"/resourcegroups/{RG}\?", 204, None, {}), *FIRST_DEPLOYMENT,
        ("PUT", DEPLOYMENTS, 200, deployment_response(), {}), *BUILD,
    ])
    assert deploy.main(["up", "-g", RG, "--no-grant-me", "--r-packages", "prophet,forecast"], clients=clients) == 0
    (run,) = transport.bodies("POST", r"/scheduleRun\?")
    assert run["arguments"] == [{"name": "EXTRA_R_PACKAGES", "value": "r-cran-prophet r-cran-forecast"}]
    assert "ARG EXTRA_R_PACKAGES" in (ROOT / "docker" / "Dockerfile").read_text()

    clients, transport = clients_with([])
    assert deploy.main(["up", "-g", RG, "--no-grant-me", "--r-packages", "prophet;rm"], clients=clients) == 1
    assert "'prophet;rm' is not an R package name" in capsys.readouterr().err and transport.sent == []


def test_with_api_deploys_the_container_app_with_its_entra_app_and_says_how_to_call_it(capsys):
    """Contract test (not verified on Azure): --with-api registers Microsoft.App and
    passes the template's API parameters; ARM answers with PutDeploymentResourceGroup.json."""
    api_id = "00000000-0000-0000-0000-00000000abcd"
    outputs = dict(OUTPUTS, apiUrl="https://scorer-api.example.westeurope.azurecontainerapps.io")
    clients, transport = clients_with([
        *REGISTERED, ("HEAD", rf"/resourcegroups/{RG}\?", 204, None, {}), *FIRST_DEPLOYMENT,
        ("PUT", DEPLOYMENTS, 200, deployment_response(outputs=outputs), {}), *BUILD,
    ])
    assert deploy.main(["up", "-g", RG, "--no-grant-me", "--with-api", "--api-client-id", api_id], clients=clients) == 0
    assert any("/providers/Microsoft.App?" in u for m, u, _ in transport.sent if m == "GET")
    last = transport.bodies("PUT", DEPLOYMENTS)[-1]["properties"]["parameters"]
    assert last["withApi"] == {"value": True} and last["apiClientId"] == {"value": api_id}
    assert last["modelsContainer"] == {"value": "models"} and last["apiMaxReplicas"] == {"value": 5}
    out = capsys.readouterr().out
    assert outputs["apiUrl"] in out and "az account get-access-token --resource api://" in out

    clients, transport = clients_with([])
    assert deploy.main(["up", "-g", RG, "--no-grant-me", "--with-api"], clients=clients) == 1
    assert "--api-client-id" in capsys.readouterr().err and transport.sent == []


def test_teardown_deletes_the_container_app_before_its_environment_and_identity():
    """Contract test (not verified on Azure)."""
    base = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers"
    created = [f"{base}/Microsoft.ManagedIdentity/userAssignedIdentities/scorer-api",
               f"{base}/Microsoft.App/managedEnvironments/scorer-api-env",
               f"{base}/Microsoft.App/containerApps/scorer-api",
               f"{base}/Microsoft.App/containerApps/scorer-api/authConfigs/current",
               f"{base}/Microsoft.Authorization/roleAssignments/bbbb"]
    transport = teardown_in_existing_group(created, "Authorization|App|ManagedIdentity")
    deleted = [u.split("?")[0] for m, u, _ in transport.sent if m == "DELETE"]
    assert [d.rsplit("/", 2)[-2] for d in deleted[:-1]] == ["roleAssignments", "containerApps", "managedEnvironments",
                                                            "userAssignedIdentities"]
    assert any("api-version=2024-03-01" in u for m, u, _ in transport.sent if "containerApps" in u)


def test_more_cores_than_the_regional_quota_are_refused_before_anything_is_deployed(capsys):
    clients, transport = clients_with([])
    assert deploy.main(["up", "-g", RG, "--parallel-jobs", "30", "--cpu", "4"], clients=clients) == 1
    assert "120 cores" in capsys.readouterr().err and transport.sent == []
    clients, transport = clients_with([*REGISTERED, ("HEAD", rf"/resourcegroups/{RG}\?", 204, None, {}),
                                       ("POST", r"/whatIf\?", 200, {"status": "Succeeded", "properties": {"changes": []}}, {})])
    assert deploy.main(["up", "-g", RG, "--parallel-jobs", "30", "--cpu", "4", "--cores-quota", "200",
                        "--what-if"], clients=clients) == 0


def test_failed_deployment_is_reported_not_built_on():
    """Contract test (not verified on Azure): a deployment that ends Failed raises DeployError."""
    clients, transport = clients_with([("PUT", DEPLOYMENTS, 200, deployment_response(state="Failed"), {})])
    with pytest.raises(deploy.DeployError, match="ended Failed"):
        deploy.deploy_template(clients, RG, "scorer", {}, {})
    assert len(transport.sent) == 1


def test_logs_lists_the_logs_the_workflow_saved_under_the_runs_name(azurite):
    """`logs RUN` reads <logs>/<run>/<group>.log from Blob Storage (real Azurite): no
    action outputs are needed, which the Logic Apps API hides behind outputsLink
    (issue 14, defect 3)."""
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.storage.blob import BlobServiceClient

    from conftest import ACCOUNT_KEY
    endpoint = f"http://127.0.0.1:{azurite.port}/devstoreaccount1/"
    cred = AzureNamedKeyCredential("devstoreaccount1", ACCOUNT_KEY)
    service = BlobServiceClient(endpoint, credential=cred)
    service.create_container("logs-deploy")
    service.get_blob_client("logs-deploy", "runs/08585/scorer-1.log").upload_blob(b"scored 3 inputs\n")
    service.get_blob_client("logs-deploy", "08584/scorer-0.log").upload_blob(b"another run\n")
    clients = deploy.Clients(None, None, None, None, None, cred, {})
    logs = deploy.saved_logs(clients, endpoint, "logs-deploy", "08585")
    assert logs == {"runs/08585/scorer-1.log": "scored 3 inputs\n"}
    assert deploy.saved_logs(clients, endpoint, "logs-deploy", "09999") == {}


def test_trigger_fires_the_schedule_trigger_of_the_deployed_logic_app(capsys):
    """Contract test (not verified on Azure): `trigger` posts .../triggers/Scheduled_run/run."""
    clients, transport = clients_with([
        ("GET", DEPLOYMENTS, 200, deployment_response(), {}),
        ("POST", r"/workflows/scorer-runner/triggers/Scheduled_run/run\?", 202, None, {}),
    ])
    assert deploy.main(["trigger", "-g", RG], clients=clients) == 0
    assert transport.sent[-1][0] == "POST"


def test_runs_lists_recent_runs_with_status(capsys):
    """Contract test (not verified on Azure): `runs` pages workflow runs and prints status."""
    run = lambda name, status: {"name": name, "properties": {"status": status, "startTime": "2026-01-02T02:00:00Z",  # noqa: E731
                                                              "endTime": "2026-01-02T02:10:00Z",
                                                              "error": {"code": "ScoringJobFailed"} if status == "Failed" else None}}
    clients, transport = clients_with([
        ("GET", DEPLOYMENTS, 200, deployment_response(), {}),
        ("GET", r"/workflows/scorer-runner/runs\?", 200, {"value": [run("08585", "Succeeded"), run("08584", "Failed")]}, {}),
    ])
    assert deploy.main(["runs", "-g", RG, "--top", "5"], clients=clients) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("08585  Succeeded") and "ScoringJobFailed" in out[1]
    assert re.search(r"\$top=5", transport.sent[-1][1])


def test_teardown_deletes_a_resource_group_it_created():
    """Contract test (not verified on Azure): a group tagged by `up` is deleted whole."""
    clients, transport = clients_with([
        ("GET", rf"/resourcegroups/{RG}\?", 200, {"id": f"/subscriptions/{SUB}/resourceGroups/{RG}", "name": RG,
                                                  "location": "westeurope", "tags": {deploy.CREATED_TAG: "deploy.py"}}, {}),
        ("GET", DEPLOYMENTS, 200, deployment_response(output_resources=[ROLE_DEFINITION]), {}),
        ("DELETE", rf"/resourcegroups/{RG}\?", 200, None, {}),
        ("DELETE", r"/providers/Microsoft\.Authorization/roleDefinitions/", 200, None, {}),
    ])
    assert deploy.main(["teardown", "-g", RG, "--yes"], clients=clients) == 0
    # the custom role definition lives in the subscription: deleting the group leaves it
    assert [(m, "roleDefinitions" in u) for m, u, _ in transport.sent] == [
        ("GET", False), ("GET", False), ("DELETE", False), ("DELETE", True)]


ROLE_DEFINITION = f"/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/4e79e181-1178-5807-bb3c-1d8371e87d44"


def teardown_in_existing_group(created: list[str], providers: str):
    """`deploy.py teardown` in a group it did not create, whose deployment made ``created``;
    deletes are answered for the resource providers ``providers`` (a regex alternation).
    Returns the transport, with what was sent."""
    clients, transport = clients_with([
        ("GET", rf"/resourcegroups/{RG}\?", 200, {"id": "x", "name": RG, "location": "westeurope", "tags": {}}, {}),
        ("GET", DEPLOYMENTS, 200, deployment_response(output_resources=created), {}),
        ("DELETE", rf"/providers/Microsoft\.({providers})/", 200, None, {}),
        ("DELETE", DEPLOYMENTS, 204, None, {}),
    ])
    assert deploy.main(["teardown", "-g", RG, "--yes"], clients=clients) == 0
    return transport


def test_teardown_in_an_existing_group_deletes_only_what_the_deployment_created_dependants_first():
    """Contract test (not verified on Azure): role assignments go before identities, each with its apiVersion."""
    base = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers"
    created = [f"{base}/Microsoft.ManagedIdentity/userAssignedIdentities/scorer-job",
               f"{base}/Microsoft.Storage/storageAccounts/scorerstabc",
               f"{base}/Microsoft.Storage/storageAccounts/scorerstabc/blobServices/default/containers/input",
               f"{base}/Microsoft.Authorization/roleAssignments/aaaa",
               f"{base}/Microsoft.Logic/workflows/scorer-runner",
               f"{base}/Microsoft.EventGrid/systemTopics/scorer-storage-events/eventSubscriptions/input-blob-created"]
    transport = teardown_in_existing_group(created, "Authorization|EventGrid|Logic|Storage|ManagedIdentity")
    deleted = [u for m, u, _ in transport.sent if m == "DELETE"]
    assert [u.split("?")[0].split("/providers/")[1].split("/")[0] for u in deleted] == [
        "Microsoft.Authorization", "Microsoft.EventGrid", "Microsoft.Logic", "Microsoft.Storage",
        "Microsoft.ManagedIdentity", "Microsoft.Resources"]
    assert "api-version=2022-04-01" in deleted[0] and "api-version=2023-01-31" in deleted[4]
    assert not any("/containers/input" in u for u in deleted), "children go with their account"


def test_teardown_refuses_without_yes(capsys):
    """Not an Azure call at all: the guard that protects the data."""
    clients, transport = clients_with([])
    assert deploy.main(["teardown", "-g", RG], clients=clients) == 1
    assert "--yes" in capsys.readouterr().err and transport.sent == []


def test_every_command_and_option_has_help_text():
    p = deploy.parser()
    sub = next(a for a in p._actions if a.dest == "command")
    for name, sp in sub.choices.items():
        assert sub._choices_actions and any(c.dest == name and c.help for c in sub._choices_actions), name
        for action in sp._actions:
            if action.dest != "help":
                assert action.help, f"{name} {action.option_strings or action.dest} has no help"
