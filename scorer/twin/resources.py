"""The resource types arm_templates/main.json declares, as the local Azure (scorer.twin.arm)
creates them: each makes the checks Azure makes when the resource is created or updated,
and answers with the shapes of Microsoft's REST examples.

    Microsoft.Storage/storageAccounts (+ blobServices, containers, managementPolicies)
        Azurite is the data plane: every account is Azurite's account; a container is created
        there; a lifecycle rule is kept, and ``lifecycle_deletes`` says which blobs it deletes
    Microsoft.ManagedIdentity/userAssignedIdentities
        a principalId and clientId, known to the directory only after ``Options.directory_delay``
    Microsoft.Authorization/roleDefinitions, roleAssignments
        the role must exist (built-in or created), the principal must exist and be of the
        principalType named, a custom role only at its assignableScopes; an assignment takes
        effect ``Options.rbac_delay`` seconds after it is created
    Microsoft.ContainerRegistry/registries (+ ACR Tasks: upload URL, scheduleRun, runs, logs; importImage)
        builds the uploaded context with ``Options.builder``; the tags it pushed are the registry's images
    Microsoft.Logic/workflows
        the definition is loaded by the workflow engine (refused where it refuses); ``state``
        is honoured: a Disabled workflow's Request trigger answers 400; listCallbackUrl;
        triggers/run; runs (scorer.twin.workflows hosts the runs)
    Microsoft.EventGrid/systemTopics, systemTopics/eventSubscriptions
        a WebHook subscription is validated at create and at update: the endpoint must answer
        the SubscriptionValidationEvent with 200 and the code within ``Options.handshake_seconds``
        (30 on Azure), or the subscription, and the deployment, fail; afterwards BlobCreated
        events are delivered with the subscription's filters
    Microsoft.App/managedEnvironments, containerApps, containerApps/authConfigs
        the app's image must be in the registry, and its identity must hold AcrPull there; the
        app runs, behind its authentication (scorer.twin.apps)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
import uuid
from typing import Any, Callable

from scorer.azure.template import Planned, Template, split_id
from scorer.twin.arm_common import OPERATOR, ArmError, now_iso, parent_id
from scorer.twin.azurite import connection_parts

#: built-in roles by ID (the ones main.json assigns, and the usual three), with the data
#: actions the local storage front checks
BUILT_IN_ROLES = {
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1": "Storage Blob Data Reader",
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": "AcrPull",
    "f1a07417-d97a-45cb-824c-7a7467783830": "Managed Identity Operator",
    "5d977122-f97e-4b4d-a52f-6b43003ddb4d": "Container Instances Contributor",
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "acdd72a7-3385-48ef-bd42-f606fba81ae7": "Reader",
}
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
#: the Container Apps environments' domain here: an app is <name>.APPS_DOMAIN
APPS_DOMAIN = "local.azurecontainerapps.local"


@dataclasses.dataclass
class Options:
    """How the local Azure's resources behave where Azure's timing or capacity would decide.

    handshake_seconds  how long Event Grid waits for the validation answer (Azure: 30)
    rbac_delay         seconds before a new role assignment takes effect (Azure: minutes, at times)
    rbac_misses        the same delay counted in uses: a new assignment fails its first N checks
                       (deterministic, for tests)
    directory_delay    seconds before a new identity's principal is known to the directory
    builder            builds an ACR Tasks context: (context dir, dockerfile, image names, build args)
                       -> (succeeded, log); default: scorer.twin.builds.default_builder()
    backend            runs container groups (scorer.twin.backends); default: processes
    event_poll         seconds between Event Grid's looks at the storage account
    build_fails        every ACR Tasks build fails (a fault)
    faults, on_job_event  the Container Instances stand-in's faults, and who hears of its jobs
    recurrences        whether Recurrence triggers fire by themselves
    on_app             who hears that a Container App runs, and where (scorer.twin.apps)
    """

    handshake_seconds: float = 30.0
    rbac_delay: float = 0.0
    rbac_misses: int = 0
    directory_delay: float = 0.0
    builder: Callable[..., tuple[bool, str]] | None = None
    backend: Any = None
    event_poll: float = 1.0
    build_fails: bool = False
    faults: Any = None                 # Container Instances faults (scorer.twin.standin.Faults)
    on_job_event: Callable[[str, str, dict], None] | None = None   # a job started, ended, could not start
    recurrences: bool = True           # Recurrence triggers fire on their own (the twin fires them itself)
    on_app: Callable[[str, str], None] | None = None   # a Container App runs: (name, its URL here)


def _uuid_for(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(p.lower() for p in parts)))


class ResourceTypes:
    """Every resource of the local Azure, kept in ``azure.resources`` as ARM shows them."""

    def __init__(self, azure: Any, options: Options):  # azure: scorer.twin.arm.LocalAzure
        from scorer.twin.apps import Apps
        from scorer.twin.builds import Registries
        from scorer.twin.events import EventGrid
        from scorer.twin.workflows import Workflows

        self.azure = azure
        self.options = options
        self.principals: dict[str, tuple[str, float]] = {}   # principalId -> (type, known from)
        self.assignments: list[dict] = []                     # effective role assignments
        self.registries = Registries(self)
        self.workflows = Workflows(self)
        self.events = EventGrid(self)
        self.storage = Storage(self)
        self.apps = Apps(self)
        self.principals[OPERATOR] = ("User", 0.0)

    # -- the deployment's view ----------------------------------------------------------------

    def reference(self, rid: str, api_version: str | None, full: bool) -> Any:
        found = self.azure.find(rid)
        if found is None:
            scope, rtype, name = split_id(rid)
            raise ArmError(404, "ResourceNotFound", f"The Resource '{rtype}/{name}' under resource group "
                           f"'{scope.rpartition('/')[2]}' was not found. For more details please go to "
                           "https://aka.ms/ARMResourceNotFoundFix")
        return found if full else found.get("properties", {})

    def list_call(self, name: str, rid: str, api_version: str, body: Any) -> Any:
        if name.lower() == "listcallbackurl":
            return self.workflows.callback(rid)
        raise ArmError(400, "InvalidTemplate", f"{name}() is not a list function the local Azure implements "
                       "(listCallbackUrl).")

    def what_if(self, plan: list[Planned], tpl: Template) -> list[dict]:
        changes = []
        for p in plan:
            if not p.deploy:
                continue
            existing = self.azure.find(p.id)
            if existing is None:
                change = "Create"
            else:
                try:
                    body = tpl.evaluate(p, self.reference, self.list_call)
                    change = "NoChange" if body.get("properties") == existing.get("_request", {}).get("properties") \
                        else "Modify"
                except ArmError:
                    change = "Modify"
            changes.append({"resourceId": p.id, "changeType": change})
        return changes

    # -- create, read, delete ----------------------------------------------------------------

    def put(self, p: Planned, body: dict) -> dict:
        """Create or update one resource of a deployment (raises ArmError as Azure refuses)."""
        return self._put(p.id, p.type, body)

    def _put(self, rid: str, rtype: str, body: dict) -> dict:
        scope, _, _ = split_id(rid)
        if scope.count("/providers/") and self.azure.find(scope) is None:
            raise ArmError(404, "ResourceNotFound", f"The scope '{scope}' of '{rid}' does not exist.")
        parent = parent_id(rid)
        if parent != scope and self.azure.find(parent) is None:
            raise ArmError(404, "ParentResourceNotFound", f"Can not perform requested operation on nested resource. "
                           f"Parent resource '{parent.rpartition('/providers/')[2]}' not found.")
        kind = rtype.lower()
        existing = self.azure.find(rid)
        view = {"id": rid, "name": rid.rpartition("/")[2], "type": rtype,
                **{k: v for k, v in body.items() if k in ("location", "tags", "sku", "kind", "identity")},
                "properties": dict(body.get("properties") or {}), "_request": body}
        handler = self._handlers().get(kind)
        if handler is not None:
            handler(view, existing)
        view["properties"].setdefault("provisioningState", "Succeeded")
        with self.azure.lock:
            self.azure.resources[rid.lower()] = view
        after = self._after().get(kind)
        if after is not None:
            after(view, existing)
        return view

    def _handlers(self) -> dict[str, Callable[[dict, dict | None], None]]:
        return {
            "microsoft.storage/storageaccounts": self.storage.account,
            "microsoft.storage/storageaccounts/blobservices/containers": self.storage.container,
            "microsoft.managedidentity/userassignedidentities": self._identity,
            "microsoft.authorization/roledefinitions": self._role_definition,
            "microsoft.authorization/roleassignments": self._role_assignment,
            "microsoft.containerregistry/registries": self.registries.registry,
            "microsoft.logic/workflows": self.workflows.workflow,
            "microsoft.eventgrid/systemtopics": self.events.topic,
            "microsoft.app/managedenvironments": self._managed_environment,
            "microsoft.app/containerapps": self._container_app,
        }

    def _after(self) -> dict[str, Callable[[dict, dict | None], None]]:
        """What runs once the resource is stored (it may call back into it)."""
        return {"microsoft.eventgrid/systemtopics/eventsubscriptions": self.events.subscription,
                "microsoft.logic/workflows": self.workflows.deployed,
                "microsoft.app/containerapps": self.apps.started,
                "microsoft.app/containerapps/authconfigs": self.apps.auth}

    def delete(self, rid: str) -> None:
        with self.azure.lock:
            gone = [k for k in self.azure.resources if k == rid.lower() or k.startswith(rid.lower() + "/")]
            views = [self.azure.resources.pop(k) for k in sorted(gone, key=len, reverse=True)]
        for view in views:
            kind = view["type"].lower()
            if kind == "microsoft.logic/workflows":
                self.workflows.removed(view)
            elif kind == "microsoft.eventgrid/systemtopics/eventsubscriptions":
                self.events.removed(view)
            elif kind == "microsoft.storage/storageaccounts/blobservices/containers":
                self.storage.removed(view)
            elif kind == "microsoft.authorization/roleassignments":
                self.assignments = [a for a in self.assignments if a["id"].lower() != view["id"].lower()]
            elif kind == "microsoft.app/containerapps":
                self.apps.removed(view)

    def request(self, method: str, path: str, query: dict, headers: dict, body: Any) -> tuple[int, dict, Any]:
        """A management request that is not about groups, providers or deployments."""
        for handler in (self.registries.request, self.workflows.request, self.workflows.container_groups):
            answer = handler(method, path, query, headers, body)
            if answer is not None:
                return answer
        try:
            scope, rtype, name = split_id(path)
        except Exception:
            raise ArmError(404, "NotFound", f"No route for {method} {path}.") from None
        if method == "PUT":
            return 200, {}, _public(self._put(path, rtype, body or {}))
        found = self.azure.find(path)
        if found is None:
            if method == "DELETE":
                return 204, {}, None
            raise ArmError(404, "ResourceNotFound", f"The Resource '{rtype}/{name}' under resource group "
                           f"'{scope.rpartition('/')[2]}' was not found.")
        if method == "GET":
            return 200, {}, _public(found)
        if method == "DELETE":
            if rtype.lower() == "microsoft.authorization/roledefinitions" and \
                    any(a["role"] == name.lower() for a in self.assignments):
                raise ArmError(409, "RoleDefinitionHasAssignments", "There are existing role assignments "
                               "referencing role (code: RoleDefinitionHasAssignments).")
            self.delete(found["id"])
            return 200, {}, None
        raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on {rtype}.")

    def local(self, method: str, path: str, query: dict, headers: dict, body: Any, raw: bytes):
        """This machine's own endpoints: /local/token (sign in), /local/workflows/... (callback URLs)."""
        if path == "/local/token" and method == "POST":
            scope = str((body or {}).get("scope") or self.azure.url)
            audience = scope.removesuffix(".default").removesuffix("/")
            # an API's app registration decides its tokens' version (requestedAccessTokenVersion);
            # here the request says it, there being no app registrations (scorer.twin.apps)
            version = int((body or {}).get("requestedAccessTokenVersion") or 1)
            return 200, {}, {"access_token": self.azure.user_token(audience, version), "expires_in": 3600}
        answer = self.workflows.invoke(method, path, query, headers, body, raw)
        if answer is not None:
            return answer
        raise ArmError(404, "NotFound", f"No route for {method} {path}.")

    # -- identities and roles -----------------------------------------------------------------

    def _identity(self, view: dict, existing: dict | None) -> None:
        principal = _uuid_for("principal", view["id"])
        view["properties"].update({"principalId": principal, "clientId": _uuid_for("client", view["id"]),
                                   "tenantId": self.azure.tenant})
        if principal not in self.principals:
            self.principals[principal] = ("ServicePrincipal", time.monotonic() + self.options.directory_delay)

    def _role_definition(self, view: dict, existing: dict | None) -> None:
        props = view["properties"]
        problems = [k for k in ("roleName", "permissions", "assignableScopes") if not props.get(k)]
        if problems:
            raise ArmError(400, "InvalidRoleDefinition", f"The role definition lacks {', '.join(problems)}.")
        for scope in props["assignableScopes"]:
            if not re.fullmatch(r"/subscriptions/[^/]+(/resourceGroups/[^/]+)?", scope, re.I):
                raise ArmError(400, "InvalidAssignableScope", f"The assignable scope '{scope}' is not a subscription "
                               "or a resource group.")

    def role_name(self, role_definition_id: str) -> str | None:
        """The role's name, when it exists (built in, or a definition created here)."""
        guid = role_definition_id.rpartition("/")[2].lower()
        if guid in BUILT_IN_ROLES:
            return BUILT_IN_ROLES[guid]
        custom = self.azure.find(f"/subscriptions/{self.azure.subscription}/providers/Microsoft.Authorization/"
                                 f"roleDefinitions/{guid}")
        return custom["properties"]["roleName"] if custom else None

    def _role_assignment(self, view: dict, existing: dict | None) -> None:
        props = view["properties"]
        role, principal = str(props.get("roleDefinitionId", "")), str(props.get("principalId", ""))
        if self.role_name(role) is None:
            raise ArmError(400, "RoleDefinitionDoesNotExist", f"The specified role definition with ID "
                           f"'{role.rpartition('/')[2]}' does not exist.")
        known = self.principals.get(principal)
        if known is None or known[1] > time.monotonic():
            raise ArmError(400, "PrincipalNotFound", f"Principal {principal.replace('-', '')} does not exist in the "
                           f"directory {self.azure.tenant}. Check that you have the correct principal ID. If you are "
                           "creating this principal and then immediately assigning a role, this error might be "
                           "related to a replication delay. In this case, set the role assignment principalType "
                           "property to a value, such as ServicePrincipal, User, or Group.")
        wanted = props.get("principalType")
        if wanted and wanted != known[0]:
            raise ArmError(400, "UnmatchedPrincipalType", f"The PrincipalId '{principal.replace('-', '')}' has type "
                           f"'{known[0]}' , which is different from specified PrincipalType '{wanted}'.")
        scope = view["id"].rpartition("/providers/Microsoft.Authorization/")[0]
        props["scope"] = scope
        custom = self.azure.find(role) if "/roleDefinitions/" in role and role.rpartition("/")[2].lower() \
            not in BUILT_IN_ROLES else None
        if custom and not any(scope.lower().startswith(s.lower()) for s in custom["properties"]["assignableScopes"]):
            raise ArmError(403, "AuthorizationFailed", f"The role definition '{role}' may not be assigned at "
                           f"'{scope}': it is not under its assignableScopes.")
        same = next((a for a in self.assignments if a["id"].lower() == view["id"].lower()), None)
        if same is None:  # sending an existing assignment again changes nothing, its propagation included
            self.assignments.append({"id": view["id"], "scope": scope, "role": role.rpartition("/")[2].lower(),
                                     "principal": principal, "from": time.monotonic() + self.options.rbac_delay,
                                     "misses": self.options.rbac_misses})

    def holds(self, principal: str, role_guid: str, scope: str) -> bool:
        """Whether ``principal`` holds the role at ``scope`` (an assignment there or above it
        that has taken effect)."""
        now = time.monotonic()
        for a in self.assignments:
            if a["principal"] == principal and a["role"] == role_guid and \
                    (scope.lower() + "/").startswith(a["scope"].lower() + "/"):
                if a["misses"] > 0:
                    a["misses"] -= 1
                    return False
                if a["from"] <= now:
                    return True
        return False

    # -- Container Apps -------------------------------------------------------------------------

    def _managed_environment(self, view: dict, existing: dict | None) -> None:
        # what an app's address is made of, as Azure's <app>.<defaultDomain>; no static IP but loopback
        view["properties"].update(defaultDomain=APPS_DOMAIN, staticIp="127.0.0.1", deploymentErrors=None,
                                  zoneRedundant=bool(view["properties"].get("zoneRedundant", False)))

    def _container_app(self, view: dict, existing: dict | None) -> None:
        props = view["properties"]
        if self.azure.find(str(props.get("environmentId", ""))) is None:
            raise ArmError(400, "ManagedEnvironmentNotFound", f"The environment '{props.get('environmentId')}' of "
                           "the container app was not found.")
        registries = {r.get("server", "").lower(): r for r in (props.get("configuration") or {}).get("registries") or []}
        for container in (props.get("template") or {}).get("containers") or []:
            image = str(container.get("image", ""))
            server, _, repo_tag = image.partition("/")
            registry = self.registries.by_login_server(server)
            if registry is None:
                continue  # a public image: not this machine's concern
            if server.lower() not in registries:
                raise ArmError(400, "ContainerAppRegistryMissing", f"The image '{image}' is in registry {server}, "
                               "which configuration.registries does not name.")
            identity = registries[server.lower()].get("identity", "")
            found = self.azure.find(identity)
            principal = (found or {}).get("properties", {}).get("principalId", "")
            if not self.holds(principal, ACR_PULL, registry["id"]):
                raise ArmError(400, "ContainerAppOperationError", f"Failed to provision revision for container app "
                               f"'{view['name']}'. Error details: The following field(s) are either invalid or "
                               f"missing. Field 'template.containers.{container.get('name')}.image' is invalid with "
                               f"details: 'Invalid value: \"{image}\": GET https:: UNAUTHORIZED: authentication "
                               "required': the identity does not hold AcrPull on the registry (yet).")
            if not self.registries.has_image(registry, repo_tag):
                raise ArmError(400, "ContainerAppOperationError", f"Failed to provision revision for container app "
                               f"'{view['name']}'. Error details: Field 'template.containers.{container.get('name')}"
                               f".image' is invalid with details: 'Invalid value: \"{image}\": GET https:: "
                               f"MANIFEST_UNKNOWN: manifest tagged by \"{repo_tag.partition(':')[2]}\" is not found'.")
        fqdn = f"{view['name']}.{APPS_DOMAIN}"
        props.setdefault("configuration", {}).setdefault("ingress", {})["fqdn"] = fqdn
        # a new revision per change of the template, as Azure names them: <app>--<suffix>
        template = json.dumps(props.get("template"), sort_keys=True).encode()
        revision = f"{view['name']}--{hashlib.sha256(template).hexdigest()[:7]}"
        props.update(latestRevisionFqdn=fqdn, latestReadyRevisionName=revision,
                     managedEnvironmentId=props.get("environmentId"))
        props["runningStatus"] = "Running"

    def close(self) -> None:
        self.apps.close()
        self.events.close()
        self.workflows.close()
        self.registries.close()


class Storage:
    """Storage accounts on Azurite: one Azurite account serves every account name."""

    def __init__(self, types: ResourceTypes):
        self.types = types
        self.azure = types.azure

    def service(self):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.types.azure.azurite)

    def endpoint(self) -> str:
        parts = connection_parts(self.azure.azurite)
        return parts["BlobEndpoint"].rstrip("/") + "/"

    def account(self, view: dict, existing: dict | None) -> None:
        name = view["name"]
        if not re.fullmatch(r"[a-z0-9]{3,24}", name):
            raise ArmError(400, "AccountNameInvalid", f"{name} is not a valid storage account name. Storage account "
                           "name must be between 3 and 24 characters in length and use numbers and lower-case "
                           "letters only.")
        view["properties"].update({"primaryEndpoints": {"blob": self.endpoint()}, "creationTime": now_iso(),
                                   "primaryLocation": view.get("location"), "statusOfPrimary": "available"})

    def container(self, view: dict, existing: dict | None) -> None:
        from azure.core.exceptions import ResourceExistsError

        name = view["name"]
        if not re.fullmatch(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", name):
            raise ArmError(400, "ContainerOperationFailure", f"The specified resource name '{name}' contains invalid "
                           "characters or length (3-63 lower-case letters, digits and single hyphens).")
        try:
            self.service().create_container(name)
        except ResourceExistsError:
            pass

    def removed(self, view: dict) -> None:
        try:
            self.service().delete_container(view["name"])
        except Exception:  # already gone from Azurite: nothing to delete
            pass

    def lifecycle_deletes(self, account_id: str, blobs: list[tuple[str, float]]) -> list[str]:
        """Which of ``blobs`` ("container/name", days since last modified) the account's
        lifecycle rules delete today (prefixMatch and daysAfterModificationGreaterThan)."""
        policy = self.azure.find(account_id + "/managementPolicies/default")
        rules = ((policy or {}).get("properties", {}).get("policy") or {}).get("rules") or []
        out = []
        for path, days in blobs:
            for rule in rules:
                if not rule.get("enabled", True):
                    continue
                definition = rule.get("definition") or {}
                prefixes = (definition.get("filters") or {}).get("prefixMatch") or [""]
                limit = (((definition.get("actions") or {}).get("baseBlob") or {}).get("delete") or {}) \
                    .get("daysAfterModificationGreaterThan")
                if limit is not None and days > limit and any(path.startswith(p) for p in prefixes):
                    out.append(path)
                    break
        return out


def _public(view: dict) -> dict:
    """A resource as GET shows it (without what the local Azure keeps for itself)."""
    return {k: v for k, v in view.items() if not k.startswith("_")}
