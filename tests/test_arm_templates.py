"""Offline checks of arm_templates/: Microsoft's published schemas, checkov, and our own rules.

Nothing here reaches Azure. The schema checks use the offline bundle in ../shared/schemas
(Microsoft's ARM schemas plus a local workflow-definition subset); checkov runs from
.venv-tools/ (scripts/setup-cloud-tools). Either is skipped, saying so, when absent.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scorer.azure import workflow as wf  # noqa: E402
from scorer.settings import ENV_NAMES  # noqa: E402

TEMPLATES = sorted((ROOT / "arm_templates").glob("*.json"))
MAIN = ROOT / "arm_templates" / "main.json"
SCHEMAS = ROOT.parent / "shared" / "schemas"
CHECKOV = ROOT / ".venv-tools" / "bin" / "checkov"

ROLE = {
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": "AcrPull",
    "f1a07417-d97a-45cb-824c-7a7467783830": "Managed Identity Operator",
    "5d977122-f97e-4b4d-a52f-6b43003ddb4d": "Azure Container Instances Contributor",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
    "BlobIndexTags": "BlobIndexTags",  # the template's own custom role
}
BROAD_ROLES = {"8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner", "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
               "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator"}


def load_validator():
    """The bundle's validate_example module, or skip the test with the reason."""
    if not (SCHEMAS / "validate_example.py").exists():
        pytest.skip(f"schema check skipped: the offline ARM schema bundle is not at {SCHEMAS} "
                    "(developers and CI have it as ../shared/schemas)")
    spec = importlib.util.spec_from_file_location("validate_example", SCHEMAS / "validate_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def template() -> dict:
    return json.loads(MAIN.read_text())


def deployed_template() -> dict:
    """main.json as ARM evaluates it on `up`: the prepared workflow definition inlined."""
    definition = wf.load()["definition"]
    t = template()
    for r in t["resources"]:
        if r["type"] == "Microsoft.Logic/workflows":
            r["properties"]["definition"] = wf.prepare_definition(definition, wf.settings(definition))
    return t


def test_every_template_parses_as_json():
    assert TEMPLATES, "arm_templates/ holds no template"
    for path in TEMPLATES:
        json.loads(path.read_text())


#: types whose schema is in the bundle's copy of Microsoft's file but not in its trimmed
#: template: each such resource is validated against that file's own definition
OUTSIDE_TRIMMED = {"Microsoft.Authorization/roleDefinitions"}


def schema_errors(arm, t: dict, mode: str) -> list[str]:
    """Microsoft's schemas' complaints about template ``t``: the bundle's template schema for
    the types it lists, the provider file's resource definition for OUTSIDE_TRIMMED."""
    from jsonschema import Draft4Validator

    whole = arm.validate_template(t, mode=mode)
    unknown = [m for m in whole["messages"] if "no schema for" in m]
    assert all(any(f"for {k}@" in m for k in OUTSIDE_TRIMMED) for m in unknown), unknown
    result = arm.validate_template(t, mode=mode, skip_unknown_types=True)
    errors = [m for m in result["messages"] + (result["extra"] if not result["ok"] else []) if "no schema for" not in m]
    for r in t["resources"]:
        if r["type"] in OUTSIDE_TRIMMED:
            provider, kind = r["type"].split("/", 1)
            ref = (f"https://schema.management.azure.com/schemas/{r['apiVersion']}/{provider}.json"
                   f"#/resourceDefinitions/{kind}")
            validator = Draft4Validator({"$ref": ref}, registry=arm.load_registry(mode))
            errors += [f"{r['type']} {r['name']}: {e.message}" for e in validator.iter_errors(r)]
    return errors


@pytest.mark.parametrize("mode", ["compat", "strict"])
def test_templates_validate_against_microsofts_schemas(mode):
    # compat = Microsoft's files with the bundle's documented false positives removed;
    # strict additionally rejects properties the schemas do not declare (misspellings).
    arm = load_validator()
    for path in TEMPLATES:
        errors = schema_errors(arm, json.loads(path.read_text()), mode)
        assert not errors, f"{path.name} ({mode}):\n" + "\n".join(errors)


def test_a_misspelled_role_definition_property_is_caught():
    """The resource validated outside the trimmed template is really checked."""
    arm = load_validator()
    t = template()
    rd = next(r for r in t["resources"] if r["type"] == "Microsoft.Authorization/roleDefinitions")
    rd["properties"]["permisions"] = rd["properties"].pop("permissions")
    assert any("permisions" in e for e in schema_errors(arm, t, "strict"))


def test_template_with_the_workflow_inlined_passes_the_workflow_definition_layer():
    # With the definition given as a parameter the [wdl] layer sees only an expression;
    # inlined, it checks the definition exactly as the Logic App receives it.
    arm = load_validator()
    errors = schema_errors(arm, deployed_template(), "strict")
    assert not errors, "\n".join(errors)


def test_raw_schema_failures_are_only_the_bundles_documented_false_positives():
    # The upstream schemas reject tags and Logic App definitions given as expressions and
    # long storage-container name expressions (see ../shared/schemas/README.md); anything
    # else failing raw would be a real error the compat patches hide.
    arm = load_validator()
    known = re.compile(r"\.tags: .* is not of type 'object'|\.name: .* is too long|"
                       r"\.properties\.definition: .* is not of type 'object'|"
                       r"no schema for Microsoft\.Authorization/roleDefinitions@")  # checked alone: schema_errors
    result = arm.validate_template(template(), mode="raw")
    unexpected = [m for m in result["messages"] if not known.search(m)]
    assert not unexpected, "\n".join(unexpected)


def test_checkov_finds_no_failed_check_and_every_skip_is_justified():
    if not CHECKOV.exists():
        pytest.skip(f"checkov skipped: {CHECKOV} is missing; run scripts/setup-cloud-tools")
    proc = subprocess.run([str(CHECKOV), "-d", str(ROOT / "arm_templates"), "--framework", "arm",
                           "--skip-download", "--compact", "-o", "json"],
                          capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [(c["check_id"], c["resource"]) for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, f"checkov failed checks: {failed}"
    assert sum(r["summary"]["passed"] for r in reports) > 0, "checkov ran no check at all"
    # A skip needs a reason in the template itself, not just an ID.
    for res in template()["resources"]:
        for item in res.get("metadata", {}).get("checkov", []):
            m = re.match(r"checkov:skip=(CKV_[A-Z]+_\d+): (.+)", item)
            assert m and len(m.group(2)) > 40, f"unjustified checkov skip on {res['type']}: {item!r}"


def test_every_parameter_has_a_description():
    for path in TEMPLATES:
        for name, p in json.loads(path.read_text())["parameters"].items():
            assert p.get("metadata", {}).get("description"), f"{path.name}: parameter {name} has no description"


def test_location_defaults_to_the_resource_groups():
    assert template()["parameters"]["location"]["defaultValue"] == "[resourceGroup().location]"
    for r in template()["resources"]:
        if "location" in r:
            assert r["location"] == "[parameters('location')]", r["type"]


def test_api_versions_are_literal():
    for r in template()["resources"]:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", r["apiVersion"]), (r["type"], r["apiVersion"])


def test_no_parameter_is_secret_or_carries_a_default_secret():
    for name, p in template()["parameters"].items():
        assert p["type"].lower() not in ("securestring", "secureobject"), name
        assert not re.search(r"key|password|secret|connection", name, re.I), name


def test_storage_account_is_https_only_tls12_private_blobs_and_no_shared_key():
    (sa,) = [r for r in template()["resources"] if r["type"] == "Microsoft.Storage/storageAccounts"]
    props = sa["properties"]
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["allowBlobPublicAccess"] is False
    assert props["allowSharedKeyAccess"] is False
    (containers,) = [r for r in template()["resources"]
                     if r["type"] == "Microsoft.Storage/storageAccounts/blobServices/containers"]
    assert containers["properties"]["publicAccess"] == "None"


def test_containers_created_are_exactly_those_the_job_and_logic_app_use():
    values = wf.settings(wf.load()["definition"])
    assert wf.blob_containers(values) == ["models", "input", "output", "archive", "quarantine", "reports", "shadow", "labels", "logs"]
    assert template()["parameters"]["blobContainers"]["defaultValue"] == wf.blob_containers(values)
    assert template()["parameters"]["inputContainer"]["defaultValue"] == wf.input_container(values)
    assert template()["parameters"]["logsContainer"]["defaultValue"] == values["logsContainer"]


def _role_assignments() -> list[dict]:
    return [r for r in template()["resources"] if r["type"] == "Microsoft.Authorization/roleAssignments"]


def _role_guid(ra: dict) -> str:
    return re.search(r"variables\('roles'\)\.(\w+)", ra["properties"]["roleDefinitionId"]).group(1)


def test_identities_get_exactly_the_least_privilege_roles_and_scopes():
    roles = template()["variables"]["roles"]
    grants = set()
    for ra in _role_assignments():
        found = re.search(r"'([0-9a-f-]{36})'", roles[_role_guid(ra)])
        guid = found.group(1) if found else _role_guid(ra)  # a custom role: by its variable's name
        principal = ra["properties"]["principalId"]
        who = "job" if "jobIdentityId'), '2023" in principal else \
              "logicapp" if "logicAppIdentityId'), '2023" in principal else \
              "api" if "apiIdentityId'), '2023" in principal else "operator"
        scope = ra.get("scope", "<resource group>")
        scope = scope.split("(")[0] if scope == "<resource group>" else re.sub(r"\{\d\}", "*", scope.split("'")[1])
        grants.add((who, ROLE[guid], scope))
    assert grants == {
        ("job", "Storage Blob Data Contributor", "Microsoft.Storage/storageAccounts/*"),
        # index tags (each attempt's record), which the Contributor role does not grant
        ("job", "BlobIndexTags", "Microsoft.Storage/storageAccounts/*"),
        ("job", "AcrPull", "Microsoft.ContainerRegistry/registries/*"),
        ("logicapp", "Azure Container Instances Contributor", "<resource group>"),
        ("logicapp", "Managed Identity Operator", "Microsoft.ManagedIdentity/userAssignedIdentities/*"),
        ("logicapp", "Storage Blob Data Contributor", "Microsoft.Storage/storageAccounts/*/blobServices/default/containers/*"),
        ("operator", "Storage Blob Data Contributor", "Microsoft.Storage/storageAccounts/*"),
        # --with-api: read the models container, pull the image; nothing else
        ("api", "Storage Blob Data Reader", "Microsoft.Storage/storageAccounts/*/blobServices/default/containers/*"),
        ("api", "AcrPull", "Microsoft.ContainerRegistry/registries/*"),
    }


#: Blob data actions of the built-in role, as Microsoft documents it (Azure built-in roles,
#: Storage: https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage)
CONTRIBUTOR_DATA_ACTIONS = {"blobs/delete", "blobs/read", "blobs/write", "blobs/move/action", "blobs/add/action"}
#: The data action each blob operation the job makes needs ("Permissions for Blob service
#: operations", https://learn.microsoft.com/rest/api/storageservices/authorize-with-azure-active-directory):
#: Get Blob Tags and List Blobs with include=tags need tags/read, Set Blob Tags tags/write
#: ("This task can be performed by a Storage Blob Data Owner or a security principal that has
#: been given permission to ... blobs/tags/write ... via a custom Azure role", the blob index
#: how-to), which Storage Blob Data Contributor does not hold.
JOB_NEEDS = {
    "Get Blob, Get Blob Properties, List Blobs": "blobs/read",
    "Put Blob, Put Block, Put Block List, Copy Blob, Lease Blob": "blobs/write",
    "Delete Blob": "blobs/delete",
    "Get Blob Tags, List Blobs include=tags (scorer.batch.claims, Job._pending)": "blobs/tags/read",
    "Set Blob Tags (Claim.start_attempt, Claim.end_attempt)": "blobs/tags/write",
}


def test_the_job_identity_holds_every_data_action_its_blob_calls_need():
    """Every first run on Azure failed with 403 (issue 29): the job records each attempt in
    the input's index tags, which Storage Blob Data Contributor does not grant."""
    t = template()
    custom = next(r for r in t["resources"] if r["type"] == "Microsoft.Authorization/roleDefinitions")
    (perm,) = custom["properties"]["permissions"]
    prefix = "Microsoft.Storage/storageAccounts/blobServices/containers/"
    assert perm["actions"] == [] and all(a.startswith(prefix + "blobs/tags/") for a in perm["dataActions"])
    assert custom["properties"]["assignableScopes"] == ["[resourceGroup().id]"]
    held = set(CONTRIBUTOR_DATA_ACTIONS) | {a.removeprefix(prefix) for a in perm["dataActions"]}
    job_roles = {_role_guid(ra) for ra in _role_assignments() if "jobIdentityId'), '2023" in ra["properties"]["principalId"]}
    assert {"StorageBlobDataContributor", "BlobIndexTags"} <= job_roles
    assert {need for need in JOB_NEEDS.values() if need not in held} == set()
    # the code makes the calls the table says it makes
    claims = (ROOT / "scorer" / "batch" / "claims.py").read_text()
    assert "get_blob_tags" in claims and "set_blob_tags" in claims
    assert 'include=["tags"]' in (ROOT / "scorer" / "storage.py").read_text()


def test_no_broad_or_subscription_wide_role_is_granted():
    text = MAIN.read_text()
    for guid, name in BROAD_ROLES.items():
        assert guid not in text, f"{name} is granted"
    for ra in _role_assignments():
        assert "subscription()" not in ra.get("scope", ""), ra["name"]


def test_identity_role_assignments_declare_service_principal():
    # principalType avoids PrincipalNotFound while a brand-new identity replicates in Entra ID.
    for ra in _role_assignments():
        if "operatorPrincipalId" in ra["properties"]["principalId"]:
            assert ra["properties"]["principalType"] == "[parameters('operatorPrincipalType')]"
        else:
            assert ra["properties"]["principalType"] == "ServicePrincipal", ra["name"]


def test_event_subscription_targets_the_workflows_blob_trigger_and_input_container():
    (sub,) = [r for r in template()["resources"] if r["type"] == "Microsoft.EventGrid/systemTopics/eventSubscriptions"]
    assert template()["parameters"]["blobCreatedTriggerName"]["defaultValue"] == wf.BLOB_TRIGGER
    assert wf.BLOB_TRIGGER in wf.load()["definition"]["triggers"]
    assert "parameters('blobCreatedTriggerName')" in sub["properties"]["destination"]["properties"]["endpointUrl"]
    f = sub["properties"]["filter"]
    assert f["includedEventTypes"] == ["Microsoft.Storage.BlobCreated"]
    assert "parameters('inputContainer')" in f["subjectBeginsWith"]


def test_outputs_include_everything_the_deploy_script_reads():
    deploy_src = (ROOT / "scorer" / "azure" / "deploy.py").read_text()
    # the deployment's outputs are the local variable `outputs` (not rep.outputs of a Logic App run)
    read = set(re.findall(r"(?<![.\w])outputs\[\"(\w+)\"\]|(?<![.\w])outputs\.get\(\"(\w+)\"", deploy_src))
    names = {a or b for a, b in read}
    assert names, "deploy.py reads no output"
    assert names <= set(template()["outputs"]), names - set(template()["outputs"])


def test_logic_app_gets_every_deployment_specific_workflow_parameter():
    (la,) = [r for r in template()["resources"] if r["type"] == "Microsoft.Logic/workflows"]
    params_expr = la["properties"]["parameters"]
    for name in wf.ARM_FILLED:
        assert f"'{name}', createObject('value'" in params_expr, f"the template does not set workflow parameter {name}"
    assert "'SCORER_ACCOUNT_URL'" in params_expr and "'AZURE_CLIENT_ID'" in params_expr


def test_the_api_is_conditional_scales_to_zero_and_admits_no_anonymous_caller():
    t = template()
    api = [r for r in t["resources"] if "api" in json.dumps(r.get("name", "")) or r["type"].startswith("Microsoft.App/")]
    assert {r["type"] for r in api} >= {"Microsoft.App/managedEnvironments", "Microsoft.App/containerApps",
                                        "Microsoft.App/containerApps/authConfigs"}
    for r in t["resources"]:
        if r["type"].startswith("Microsoft.App/") or "apiIdentity" in json.dumps(r):
            # the app and its auth config also wait for the image (imageReady: deploy.py's first deployment)
            assert r.get("condition") in ("[parameters('withApi')]",
                                          "[and(parameters('withApi'), parameters('imageReady'))]"), r["type"]
    app = next(r for r in t["resources"] if r["type"] == "Microsoft.App/containerApps")
    assert app["properties"]["template"]["scale"]["minReplicas"] == 0
    (container,) = app["properties"]["template"]["containers"]
    assert container["args"][:1] == ["serve"] and "0.0.0.0" in container["args"]
    assert {e["name"] for e in container["env"]} <= ENV_NAMES | {"AZURE_CLIENT_ID"}
    assert app["properties"]["configuration"]["ingress"]["allowInsecure"] is False
    assert "secrets" not in app["properties"]["configuration"]  # no secret anywhere: identities only
    auth = next(r for r in t["resources"] if r["type"] == "Microsoft.App/containerApps/authConfigs")
    assert auth["properties"]["globalValidation"]["unauthenticatedClientAction"] == "Return401"
    assert auth["properties"]["identityProviders"]["azureActiveDirectory"]["enabled"] is True
    assert t["outputs"]["apiUrl"]["condition"] == "[and(parameters('withApi'), parameters('imageReady'))]"
