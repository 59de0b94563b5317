"""The ARM stand-in answers with the shapes of Microsoft's published REST examples for
Microsoft.ContainerInstance 2023-05-01 (tests/fixtures/azure-rest-examples, copied
unchanged from Azure/azure-rest-api-specs), checks the token's audience like ARM, and
refuses the bodies the real API would refuse. Not verified against Azure itself."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from scorer.twin.backends import ProcessBackend
from scorer.twin.standin import ArmStandIn, LocalIdentity, validate_container_group

EXAMPLES = Path(__file__).resolve().parent / "fixtures" / "azure-rest-examples" / "Microsoft.ContainerInstance" / "2023-05-01"
SUB, RG = "00000000-0000-0000-0000-000000000000", "rg"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


@pytest.fixture
def standin():
    s = ArmStandIn(ProcessBackend(), LocalIdentity(), SUB, RG)
    yield s
    s.close()


def call(standin, method: str, path: str, body: dict | None = None, audience: str | None = None,
         api: str = "2023-05-01") -> tuple[int, dict | None]:
    token = standin.identity.token("/subscriptions/x/identity", audience or standin.url)
    u = urlsplit(standin.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    sep = "&" if "?" in path else "?"
    conn.request(method, f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerInstance/"
                 f"containerGroups/{path}{sep}api-version={api}",
                 body=json.dumps(body).encode() if body is not None else None,
                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data) if data else None


def group_body(image: str = "scorer:dev", command_env: list | None = None) -> dict:
    return {"location": "westeurope", "properties": {
        "osType": "Linux", "restartPolicy": "Never",
        "containers": [{"name": "scorer", "properties": {
            "image": image, "resources": {"requests": {"cpu": 1, "memoryInGB": 2}},
            "environmentVariables": command_env or [{"name": "SCORER_MODEL", "value": "nothing-here"},
                                                    {"name": "AZURE_STORAGE_CONNECTION_STRING",
                                                     "secureValue": "not a connection string"}]}}]}}


def keys(obj, prefix=""):
    """The set of key paths of a JSON object (list items merged)."""
    out = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.add(prefix + k)
            out |= keys(v, prefix + k + ".")
    elif isinstance(obj, list):
        for v in obj:
            out |= keys(v, prefix + "[].")
    return out


def test_create_get_logs_delete_answer_with_the_published_shapes(standin):
    status, created = call(standin, "PUT", "scorer-1", group_body())
    assert status == 201 and created["properties"]["provisioningState"] == "Pending"
    published = set()
    for f in EXAMPLES.glob("*.json"):  # every container-group body Microsoft's examples show
        doc = json.loads(f.read_text())
        for answer in doc["responses"].values():
            if isinstance(answer.get("body"), dict) and "properties" in answer["body"]:
                published |= keys(answer["body"])
        for value in doc["parameters"].values():
            if isinstance(value, dict) and "properties" in value:
                published |= keys(value)
    ours = keys(created)
    # every field the stand-in answers with is one Microsoft's examples show, except those
    # no example fills (identity ids, environment variables): those the spec's model defines
    from azure.mgmt.containerinstance.models import ContainerGroup
    modelled = keys(ContainerGroup.deserialize(created).serialize(keep_readonly=True))
    assert ours - published <= modelled and ours <= modelled | {"properties.provisioningState", "id", "name", "type"}
    assert {k for k in ours - published} <= {"properties.containers.[].properties.environmentVariables.[].name",
                                             "properties.containers.[].properties.environmentVariables.[].value"}
    import time
    deadline = time.monotonic() + 60
    while True:
        status, got = call(standin, "GET", "scorer-1")
        if got["properties"]["instanceView"]["state"] in ("Succeeded", "Failed") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200 and got["properties"]["provisioningState"] == "Succeeded"
    view = got["properties"]["containers"][0]["properties"]["instanceView"]
    assert view["currentState"]["state"] == "Terminated" and isinstance(view["currentState"]["exitCode"], int)
    assert all("secureValue" not in e for e in got["properties"]["containers"][0]["properties"]["environmentVariables"])
    status, logs = call(standin, "GET", "scorer-1/containers/scorer/logs?tail=10")
    assert status == 200 and set(logs) == set(example("ContainerListLogs.json")["responses"]["200"]["body"])
    status, deleted = call(standin, "DELETE", "scorer-1")
    assert str(status) in example("ContainerGroupsDelete.json")["responses"] and deleted["name"] == "scorer-1"
    status, gone = call(standin, "GET", "scorer-1")
    assert status == 404 and gone["error"]["code"] == "ResourceNotFound"


def test_a_token_for_another_audience_is_refused_as_arm_refuses_it(standin):
    status, body = call(standin, "GET", "scorer-1", audience="https://storage.azure.com/")
    assert status == 401 and body["error"]["code"] == "InvalidAuthenticationTokenAudience"


def test_an_api_version_arm_does_not_serve_is_refused(standin):
    status, body = call(standin, "GET", "scorer-1", api="2019-12-01")
    assert status == 400 and "2023-05-01" in body["error"]["message"]


@pytest.mark.parametrize("change, words", [
    (lambda b: b["properties"].pop("osType"), "osType is required"),
    (lambda b: b["properties"]["containers"][0]["properties"]["resources"]["requests"].pop("cpu"), "cpu is required"),
    (lambda b: b["properties"].__setitem__("restartPolicy", "Sometimes"), "restartPolicy 'Sometimes'"),
    (lambda b: b["properties"].__setitem__("restartPolicyy", "Never"), "restartPolicyy is not a property"),
    (lambda b: b["properties"]["containers"][0].__setitem__("name", "Scorer"), "container name 'Scorer'"),
])
def test_a_body_the_real_api_refuses_is_refused(standin, change, words):
    body = group_body()
    change(body)
    assert any(words in p for p in validate_container_group(body)), validate_container_group(body)
    status, answer = call(standin, "PUT", "scorer-2", body)
    assert status == 400 and answer["error"]["code"] == "InvalidRequestContent"


def test_the_published_create_example_request_is_accepted(standin):
    """Microsoft's own example body passes the stand-in's checks."""
    body = example("ContainerGroupsCreateOrUpdate.json")["parameters"]["containerGroup"]
    assert validate_container_group(body) == []
