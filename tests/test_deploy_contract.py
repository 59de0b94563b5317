"""Contract tests of scripts/deploy.py against the Azure SDKs, with no network.

These are CONTRACT tests, NOT verified on Azure. Each test builds the real management
clients (azure-mgmt-*) and blob clients with ``transport=RecordedTransport(...)``: an
azure-core HttpTransport subclass that answers every request from responses written here
in the shape of Azure's REST API reference, and records what was sent. They prove that
deploy.py calls the SDKs with arguments the SDKs accept, sends the request bodies and URLs
intended, and reads the responses it needs. They cannot prove that Azure accepts the
template or that the responses here match what Azure returns today.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
import sys
import tarfile
from pathlib import Path

import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport, RequestsTransportResponse
from azure.core.rest import HttpRequest as RestHttpRequest
from azure.core.rest._requests_basic import RestRequestsTransportResponse  # azure-core's own wrapper

ROOT = Path(__file__).resolve().parents[1]
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


def load_deploy():
    spec = importlib.util.spec_from_file_location("deploy", ROOT / "scripts" / "deploy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["deploy"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


deploy = load_deploy()


class FakeCredential:
    """A TokenCredential whose token carries an oid claim, as Entra ID tokens do."""

    def get_token(self, *scopes, **kwargs):
        payload = base64.urlsafe_b64encode(json.dumps({"oid": "33333333-3333-3333-3333-333333333333"}).encode()).decode().rstrip("=")
        return AccessToken(f"e30.{payload}.sig", 4_102_444_800)


class RecordedTransport(HttpTransport):
    """Answers requests from (method, URL regex) -> response rules; records every request.

    A request no rule matches fails the test, so an unexpected call cannot pass unnoticed.
    """

    def __init__(self, rules: list[tuple[str, str, int, object, dict]]):
        self.rules = rules
        self.sent: list[tuple[str, str, bytes | None]] = []

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
        for method, pattern, status, payload, headers in self.rules:
            if method == request.method and re.search(pattern, request.url):
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


def clients_with(rules) -> tuple[object, RecordedTransport]:
    transport = RecordedTransport(rules)
    return deploy.make_clients(FakeCredential(), SUB, poll_seconds=0, transport=transport), transport


def deployment_response(state="Succeeded", outputs=OUTPUTS, output_resources=()):
    return {"id": f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Resources/deployments/scorer",
            "name": "scorer", "properties": {
                "provisioningState": state, "mode": "Incremental",
                "outputs": {k: {"type": "String", "value": v} for k, v in outputs.items()},
                "outputResources": [{"id": i} for i in output_resources]}}


DEPLOYMENTS = rf"/resourcegroups/{RG}/providers/Microsoft.Resources/deployments/scorer\?"


def test_up_what_if_calls_arm_what_if_and_deploys_nothing(capsys):
    """Contract test (not verified on Azure): --what-if posts whatIf and prints ARM's changes."""
    rid = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Logic/workflows/scorer-runner"
    clients, transport = clients_with([
        ("HEAD", rf"/resourcegroups/{RG}\?", 204, None, {}),
        ("POST", r"/deployments/scorer/whatIf\?", 200,
         {"status": "Succeeded", "properties": {"changes": [{"resourceId": rid, "changeType": "Modify"}]}}, {}),
    ])
    assert deploy.main(["up", "-g", RG, "--what-if"], clients=clients) == 0
    assert f"Modify     {rid}" in capsys.readouterr().out
    assert not any(m == "PUT" for m, _, _ in transport.sent), "what-if must not change anything"
    (body,) = transport.bodies("POST", r"/whatIf\?")
    props = body["properties"]
    assert props["mode"] == "Incremental"
    assert props["template"] == json.loads((ROOT / "arm_templates" / "main.json").read_text())
    assert props["parameters"]["workflowDefinition"]["value"]["triggers"]["Scheduled_run"]["recurrence"]["schedule"] == {"hours": [2], "minutes": [0]}
    assert props["parameters"]["operatorPrincipalId"]["value"] == "33333333-3333-3333-3333-333333333333"
    assert props["parameters"]["blobContainers"]["value"] == ["models", "input", "output", "archive", "quarantine", "reports", "logs"]


def test_up_creates_the_group_deploys_builds_with_acr_tasks_and_prints_next_steps(capsys):
    """Contract test (not verified on Azure): the whole `up` path through the SDKs."""
    upload = "https://acrsrc.blob.core.windows.net/source/202601/abc.tar.gz?sv=2024&sig=x"
    clients, transport = clients_with([
        ("HEAD", rf"/resourcegroups/{RG}\?", 404, None, {}),
        ("PUT", rf"/resourcegroups/{RG}\?", 201, {"id": f"/subscriptions/{SUB}/resourceGroups/{RG}", "name": RG, "location": "westeurope"}, {}),
        ("PUT", DEPLOYMENTS, 200, deployment_response(), {}),
        ("POST", r"/registries/scoreracrabc/listBuildSourceUploadUrl\?", 200, {"uploadUrl": upload, "relativePath": "source/202601/abc.tar.gz"}, {}),
        ("PUT", r"acrsrc\.blob\.core\.windows\.net/source/", 201, b"", {"ETag": '"0x1"', "Last-Modified": "Fri, 02 Jan 2026 03:04:05 GMT"}),
        ("POST", r"/registries/scoreracrabc/scheduleRun\?", 200, {"properties": {"runId": "ca1", "status": "Queued"}}, {}),
        ("GET", r"/registries/scoreracrabc/runs/ca1\?", 200, {"properties": {"runId": "ca1", "status": "Succeeded"}}, {}),
    ])
    assert deploy.main(["up", "-g", RG, "-l", "westeurope", "--image-tag", "t1", "--parallel-jobs", "3"], clients=clients) == 0
    out = capsys.readouterr().out
    assert "scripts/deploy.py runs -g rg-scorer" in out and "scorer models publish" in out
    (rg,) = transport.bodies("PUT", rf"/resourcegroups/{RG}\?")
    assert rg["tags"] == {deploy.CREATED_TAG: "deploy.py"}
    (dep,) = transport.bodies("PUT", DEPLOYMENTS)
    params = dep["properties"]["parameters"]
    assert params["imageName"]["value"] == "scorer:t1" and params["location"]["value"] == "westeurope"
    assert params["workflowParameterValues"]["value"]["parallelJobs"] == {"value": 3}
    (run,) = transport.bodies("POST", r"/scheduleRun\?")
    assert run == {"type": "DockerBuildRequest", "sourceLocation": "source/202601/abc.tar.gz",
                   "dockerFilePath": "docker/Dockerfile", "imageNames": ["scorer:t1", "scorer:latest"],
                   "isPushEnabled": True, "platform": {"os": "Linux", "architecture": "amd64"}, "timeout": 3600}
    (archive,) = [b for m, u, b in transport.sent if m == "PUT" and "acrsrc" in u]
    names = tarfile.open(fileobj=io.BytesIO(archive)).getnames()
    assert "docker/Dockerfile" in names and "scorer/settings.py" in names
    assert not any(n.startswith((".venv", "node_modules", ".git/")) or n == "docker/ca.crt" for n in names)


def test_failed_image_build_reports_the_build_log_link(capsys):
    """Contract test (not verified on Azure): a failed ACR run ends `up` with the log link."""
    clients, _ = clients_with([
        ("HEAD", rf"/resourcegroups/{RG}\?", 204, None, {}),
        ("PUT", DEPLOYMENTS, 200, deployment_response(), {}),
        ("POST", r"/listBuildSourceUploadUrl\?", 200, {"uploadUrl": "https://s.blob.core.windows.net/c/b.tgz?sig=x", "relativePath": "c/b.tgz"}, {}),
        ("PUT", r"s\.blob\.core\.windows\.net/c/b\.tgz", 201, b"", {}),
        ("POST", r"/scheduleRun\?", 200, {"properties": {"runId": "ca2", "status": "Failed"}}, {}),
        ("POST", r"/runs/ca2/listLogSasUrl\?", 200, {"logLink": "https://logs.example/ca2"}, {}),
    ])
    assert deploy.main(["up", "-g", RG, "--no-grant-me"], clients=clients) == 1
    assert "https://logs.example/ca2" in capsys.readouterr().err


def test_failed_deployment_is_reported_not_built_on():
    """Contract test (not verified on Azure): a deployment that ends Failed raises DeployError."""
    clients, transport = clients_with([("PUT", DEPLOYMENTS, 200, deployment_response(state="Failed"), {})])
    with pytest.raises(deploy.DeployError, match="ended Failed"):
        deploy.deploy_template(clients, RG, "scorer", {}, {})
    assert len(transport.sent) == 1


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


def test_logs_prints_each_groups_saved_log_from_the_logs_container(capsys):
    """Contract test (not verified on Azure): `logs RUN` reads group names from the run, logs from blobs."""
    name = "scorer-20260102020000-0123abcd"
    clients, transport = clients_with([
        ("GET", DEPLOYMENTS, 200, deployment_response(), {}),
        ("GET", r"/runs/08585/actions/Compose_group_name/repetitions\?", 200,
         {"value": [{"name": "000000", "properties": {"status": "Succeeded", "outputs": name}}]}, {}),
        ("GET", rf"scorerstabc\.blob\.core\.windows\.net/logs/{name}\.log", 200, b"scored 3 inputs\n",
         {"Content-Type": "text/plain", "Content-Length": "16", "Content-Range": "bytes 0-15/16", "x-ms-blob-type": "BlockBlob"}),
    ])
    assert deploy.main(["logs", "-g", RG, "08585"], clients=clients) == 0
    out = capsys.readouterr().out
    assert f"===== logs/{name}.log" in out and "scored 3 inputs" in out


def test_teardown_deletes_a_resource_group_it_created():
    """Contract test (not verified on Azure): a group tagged by `up` is deleted whole."""
    clients, transport = clients_with([
        ("GET", rf"/resourcegroups/{RG}\?", 200, {"id": f"/subscriptions/{SUB}/resourceGroups/{RG}", "name": RG,
                                                  "location": "westeurope", "tags": {deploy.CREATED_TAG: "deploy.py"}}, {}),
        ("DELETE", rf"/resourcegroups/{RG}\?", 200, None, {}),
    ])
    assert deploy.main(["teardown", "-g", RG, "--yes"], clients=clients) == 0
    assert [m for m, _, _ in transport.sent] == ["GET", "DELETE"]


def test_teardown_in_an_existing_group_deletes_only_what_the_deployment_created_dependants_first():
    """Contract test (not verified on Azure): role assignments go before identities, each with its apiVersion."""
    base = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers"
    created = [f"{base}/Microsoft.ManagedIdentity/userAssignedIdentities/scorer-job",
               f"{base}/Microsoft.Storage/storageAccounts/scorerstabc",
               f"{base}/Microsoft.Storage/storageAccounts/scorerstabc/blobServices/default/containers/input",
               f"{base}/Microsoft.Authorization/roleAssignments/aaaa",
               f"{base}/Microsoft.Logic/workflows/scorer-runner",
               f"{base}/Microsoft.EventGrid/systemTopics/scorer-storage-events/eventSubscriptions/input-blob-created"]
    clients, transport = clients_with([
        ("GET", rf"/resourcegroups/{RG}\?", 200, {"id": "x", "name": RG, "location": "westeurope", "tags": {}}, {}),
        ("GET", DEPLOYMENTS, 200, deployment_response(output_resources=created), {}),
        ("DELETE", r"/providers/Microsoft\.(Authorization|EventGrid|Logic|Storage|ManagedIdentity)/", 200, None, {}),
        ("DELETE", DEPLOYMENTS, 204, None, {}),
    ])
    assert deploy.main(["teardown", "-g", RG, "--yes"], clients=clients) == 0
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
