"""Azure Resource Manager templates: the language of arm_templates/main.json, evaluated as
ARM evaluates it (the local Azure in scorer.twin.arm deploys with it; tests read plans).

Per Microsoft's template reference ("Template functions", "Define the order for deploying
resources", "Conditional deployment", "Resource iteration"):

- parameters are checked against their ``type``, ``allowedValues``, ``minLength`` /
  ``maxLength`` and ``minValue`` / ``maxValue``; a default may be an expression;
- ``[...]`` is an expression (``[[`` a literal ``[``); strings are single-quoted, ``''``
  escapes a quote; property access is case-insensitive, as on JSON objects in ARM;
- a resource with a ``copy`` is one instance per ``copyIndex()``; one whose ``condition``
  is false is not deployed, and a ``dependsOn`` on it is dropped;
- resources deploy after what they name in ``dependsOn`` and what their ``reference()``
  or ``list*()`` calls name (the implicit dependency); a cycle is refused;
- ``if()`` evaluates only the branch it takes; ``uniqueString()`` and ``guid()`` give ARM's
  values (MurmurHash64 of the hyphen-joined arguments, base-32; UUID v5 in ARM's namespace).

Where the documentation says a thing fails, this fails: ``reference()`` inside a resource
whose condition is false is still evaluated ("the function is evaluated even if the
resource isn't deployed ... Use the if function", Conditional deployment in ARM
templates), so a reference to a resource that will not exist fails the deployment.

Every expression is parsed, and every function name checked, before anything deploys:
a function this module does not implement is refused by name (TemplateError), so no
deployment runs half a template.

Nothing here does I/O: ``reference()`` and ``list*()`` are answered by the caller.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from scorer.azure.expressions import Call, ExpressionError, Literal, Member, parse, walk


class TemplateError(ValueError):
    """A template or its parameters cannot be deployed; ``code`` is ARM's error code."""

    def __init__(self, message: str, code: str = "InvalidTemplate"):
        super().__init__(message)
        self.code = code


# --- ARM's hashes ------------------------------------------------------------------------------

_M32 = 0xFFFFFFFF
#: ARM's guid() namespace (Microsoft's Bicep string-functions reference describes guid()
#: as a name-based UUID of the hyphen-joined arguments)
GUID_NAMESPACE = uuid.UUID("11fb06fb-712d-4ddd-98c7-e71bbd588830")


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (32 - r))) & _M32


def _signed5(x: int) -> int:
    x = x - (1 << 32) if x & 0x80000000 else x
    return x * 5


def murmur64(data: bytes) -> int:
    """The 64-bit MurmurHash variant ARM's uniqueString() hashes with (two 32-bit lanes,
    seed 0)."""
    c1, c2, c3, c4 = 0xAB0E9789, 0x239B961B, 0x85EBCA6B, 0xC2B2AE35
    h1 = h2 = 0
    n = len(data)
    i = 0
    while i + 8 <= n:
        k1 = int.from_bytes(data[i:i + 4], "little")
        k2 = int.from_bytes(data[i + 4:i + 8], "little")
        k1 = (_rotl((k1 * c2) & _M32, 15) * c1) & _M32
        k2 = (_rotl((k2 * c1) & _M32, 17) * c2) & _M32
        h1 = (_signed5((_rotl(h1 ^ k1, 19) + h2) & _M32) + 0x561CCD1B) & _M32
        h2 = (_signed5((_rotl(h2 ^ k2, 13) + h1) & _M32) + 0x0BCAA747) & _M32
        i += 8
    rest = data[i:]
    if rest:
        k1 = int.from_bytes(rest[:4], "little")
        h1 ^= (_rotl((k1 * c2) & _M32, 15) * c1) & _M32
        if len(rest) > 4:
            k2 = int.from_bytes(rest[4:], "little")
            h2 ^= (_rotl((k2 * c1) & _M32, 17) * c2) & _M32

    def fmix(h: int) -> int:
        h = ((h ^ (h >> 16)) * c3) & _M32
        h = ((h ^ (h >> 13)) * c4) & _M32
        return h ^ (h >> 16)
    r0 = (h2 ^ n) & _M32
    r1 = ((h1 ^ n) + r0) & _M32
    r2 = (r0 + r1) & _M32
    r1, r2 = fmix(r1), fmix(r2)
    r1 = (r1 + r2) & _M32
    r2 = (r2 + r1) & _M32
    return (r2 << 32) | r1


def unique_string(*parts: str) -> str:
    """ARM's uniqueString(): 13 base-32 characters of the hash of the hyphen-joined parts."""
    h = murmur64("-".join(parts).encode("utf-8"))
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    # five bits at a time from the top; the 13th character takes the last four and a zero
    return "".join(alphabet[((h << (5 * i)) & 0xFFFFFFFFFFFFFFFF) >> 59] for i in range(13))


def arm_guid(*parts: str) -> str:
    """ARM's guid(): a version-5 UUID of the hyphen-joined parts in ARM's namespace."""
    return str(uuid.uuid5(GUID_NAMESPACE, "-".join(parts)))


# --- resource IDs ------------------------------------------------------------------------------

def resource_id(scope: str, rtype: str, *names: str) -> str:
    """``{scope}/providers/{namespace}/{type}/{name}[/{child type}/{child name}...]``."""
    segments = rtype.strip("/").split("/")
    namespace, types = segments[0], segments[1:]
    if len(types) != len(names):
        raise TemplateError(f"resourceId('{rtype}', ...) needs {len(types)} name(s), got {len(names)}: "
                            f"one per type segment.")
    path = "/".join(f"{t}/{n}" for t, n in zip(types, names))
    return f"{scope}/providers/{namespace}/{path}"


def split_id(rid: str) -> tuple[str, str, str]:
    """(scope, full type, full name) of a resource ID: for
    ``/subscriptions/s/resourceGroups/g/providers/A.B/x/n1/y/n2``, ('/subscriptions/s/resourceGroups/g',
    'A.B/x/y', 'n1/n2'). An extension resource's scope is the resource it extends."""
    scope, sep, rest = rid.rpartition("/providers/")
    if not sep:
        raise TemplateError(f"{rid!r} is not a resource ID.")
    parts = rest.split("/")
    return scope, "/".join([parts[0]] + parts[1::2]), "/".join(parts[2::2])


def same_id(a: str, b: str) -> bool:
    """Resource IDs compare case-insensitively, as ARM compares them."""
    return a.lower() == b.lower()


# --- the deployment's context -----------------------------------------------------------------

@dataclasses.dataclass
class Scope:
    """Where a deployment runs: what resourceGroup(), subscription(), deployment() and
    environment() answer."""

    subscription_id: str
    resource_group: str
    location: str
    tenant_id: str
    deployment_name: str
    environment: dict  # environment(): name, resourceManager, authentication.loginEndpoint, suffixes...

    @property
    def group_id(self) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"


@dataclasses.dataclass
class Planned:
    """One resource instance of a template: what to PUT, and after what."""

    index: int             # position in the template's resources (its identity in messages)
    copy_index: int | None
    type: str
    api_version: str
    name: str
    id: str
    deploy: bool           # its condition
    raw: dict              # the resource as written; evaluated at deploy time (reference() needs state)
    depends: set[str]      # lower-cased IDs of the template's resources it must follow

    @property
    def label(self) -> str:
        return f"{self.type} '{self.name}'"


#: the functions this module implements (case-insensitive, as ARM's are)
Reference = Callable[[str, str | None, bool], Any]   # (resource id, api version, full) -> state
ListCall = Callable[[str, str, str, Any], Any]         # (function name, resource id, api version, body)


class Template:
    """One template with its parameters in one scope. ``plan()`` gives the resource
    instances in deployment order; ``evaluate()`` a resource's body once the resources
    it depends on are deployed; ``outputs()`` the outputs."""

    def __init__(self, template: dict, parameters: dict[str, Any], scope: Scope):
        self.template = template
        self.scope = scope
        self._variables: dict[str, Any] = {}
        self._resolving: set[str] = set()
        check_functions(template)
        self.parameters = self._parameters(parameters)

    # -- parameters and variables -------------------------------------------------------------

    def _parameters(self, given: dict[str, Any]) -> dict[str, Any]:
        declared = self.template.get("parameters") or {}
        values = {k: (v["value"] if isinstance(v, dict) and "value" in v else v) for k, v in given.items()}
        unknown = sorted(set(values) - set(declared))
        if unknown:
            raise TemplateError(f"The template has no parameter(s) {', '.join(unknown)}; it declares "
                                f"{', '.join(sorted(declared))}.", "InvalidTemplate")
        out: dict[str, Any] = {}
        for name, spec in declared.items():
            if name in values:
                value = values[name]
            elif "defaultValue" in spec:
                self.parameters = out  # a default may read the parameters declared before it
                value = self.value(spec["defaultValue"], _Context(self))
            else:
                raise TemplateError(f"The value for the template parameter '{name}' is not provided. Give it in "
                                    f"the deployment's parameters.", "InvalidTemplate")
            check_parameter(name, spec, value)
            out[name] = value
        return out

    def variable(self, name: str) -> Any:
        declared = self.template.get("variables") or {}
        key = next((k for k in declared if k.lower() == name.lower()), None)
        if key is None:
            raise TemplateError(f"The template variable '{name}' is not found.")
        if key not in self._variables:
            if key in self._resolving:
                raise TemplateError(f"The template variable '{key}' refers to itself.")
            self._resolving.add(key)
            try:
                self._variables[key] = self.value(declared[key], _Context(self))
            finally:
                self._resolving.discard(key)
        return self._variables[key]

    # -- resources ----------------------------------------------------------------------------

    def plan(self) -> list[Planned]:
        """Every resource instance, in an order that deploys each after what it depends on.
        Raises TemplateError for a cycle, a dependsOn naming nothing in the template, or
        two resources with one ID."""
        found: list[Planned] = []
        for index, raw in enumerate(self.template.get("resources") or []):
            copy_spec = raw.get("copy")
            count = 1
            if copy_spec:
                count = self.value(copy_spec.get("count"), _Context(self))
                if not isinstance(count, int) or not 0 <= count <= 800:
                    raise TemplateError(f"resources[{index}]: copy count {count!r} must be a whole number 0-800.")
            for i in range(count):
                ctx = _Context(self, copy_index=i if copy_spec else None)
                rtype = self.value(raw["type"], ctx)
                name = self.value(raw["name"], ctx)
                names = name.split("/")
                if rtype.count("/") != len(names):
                    raise TemplateError(f"resources[{index}]: the name '{name}' has {len(names)} segment(s); type "
                                        f"'{rtype}' needs {rtype.count('/')}.", "InvalidTemplate")
                rid = resource_id(self._scope_of(raw, rtype, ctx), rtype, *names)
                deploy = bool(self.value(raw.get("condition", True), ctx))
                found.append(Planned(index, ctx.copy_index, rtype, raw["apiVersion"], name, rid, deploy, raw, set()))
        by_id: dict[str, Planned] = {}
        for p in found:
            if p.id.lower() in by_id:
                raise TemplateError(f"The resource '{p.id}' is defined multiple times in the template.")
            by_id[p.id.lower()] = p
        copies = {str(r["copy"]["name"]).lower(): i for i, r in enumerate(self.template.get("resources") or [])
                  if r.get("copy")}
        for p in found:
            p.depends = self._dependencies(p, found, by_id, copies)
        return _ordered(found, by_id)

    def _scope_of(self, raw: dict, rtype: str, ctx: "_Context") -> str:
        """The ID a resource lives under: its ``scope`` (an extension resource such as a
        role assignment: a full ID, or one relative to the group), else the group; role
        definitions live in the subscription."""
        if "scope" in raw:
            scope = str(self.value(raw["scope"], ctx))
            return scope.rstrip("/") if scope.startswith("/") else f"{self.scope.group_id}/providers/{scope.strip('/')}"
        if rtype.lower() == "microsoft.authorization/roledefinitions":
            return f"/subscriptions/{self.scope.subscription_id}"
        return self.scope.group_id

    def _dependencies(self, p: Planned, found: list[Planned], by_id: dict[str, Planned],
                      copies: dict[str, int]) -> set[str]:
        ctx = _Context(self, copy_index=p.copy_index)
        out: set[str] = set()
        for dep in p.raw.get("dependsOn") or []:
            named = self.value(dep, ctx)
            if str(named).lower() in copies:  # a copy loop's name: every instance of it
                out |= {q.id.lower() for q in found if q.index == copies[str(named).lower()]}
                continue
            target = _find_declared(str(named), found, by_id)
            if target is None:
                raise TemplateError(f"Deployment template validation failed: 'The resource '{named}' is not defined "
                                    f"in the template.' ({p.label}: a dependsOn names it; a scoped resource such as "
                                    "a role assignment is named by extensionResourceId(scope, type, name).)")
            out.add(target.id.lower())
        for rid in self._referenced(p, ctx):
            target = _find_declared(rid, found, by_id)
            if target is not None and target is not p:
                out.add(target.id.lower())
        return out

    def _referenced(self, p: Planned, ctx: "_Context") -> set[str]:
        """IDs the resource's reference()/list*() calls name (the implicit dependencies):
        their first argument, evaluated; a call whose argument needs another reference is
        left to dependsOn."""
        found: set[str] = set()
        for text in _expression_texts({k: v for k, v in p.raw.items() if k not in ("dependsOn", "copy")}):
            for node in walk(parse(text)):
                if isinstance(node, Call) and _is_state_call(node.name) and node.args:
                    try:
                        found.add(str(_evaluate(node.args[0], ctx)))
                    except _NeedsState:
                        pass
        return found

    def evaluate(self, p: Planned, reference: Reference, list_call: ListCall) -> dict:
        """The resource's body as ARM sends it to its provider: every expression evaluated."""
        ctx = _Context(self, copy_index=p.copy_index, reference=reference, list_call=list_call)
        body = {k: self.value(v, ctx) for k, v in p.raw.items()
                if k not in ("condition", "copy", "dependsOn", "comments", "metadata", "apiVersion", "type", "scope")}
        body["name"] = p.name
        return body

    def check_references(self, p: Planned, reference: Reference, list_call: ListCall) -> None:
        """Evaluate a not-deployed resource's reference()/list*() calls, as ARM does (see
        the module's docstring): a TemplateError if one names a resource that does not exist."""
        ctx = _Context(self, copy_index=p.copy_index, reference=reference, list_call=list_call)
        for text in _expression_texts(p.raw.get("properties")):
            tree = parse(text)
            if any(isinstance(n, Call) and _is_state_call(n.name) for n in walk(tree)):
                _evaluate(tree, ctx)

    def outputs(self, reference: Reference, list_call: ListCall) -> dict[str, dict]:
        ctx = _Context(self, reference=reference, list_call=list_call)
        out = {}
        for name, spec in (self.template.get("outputs") or {}).items():
            if not self.value(spec.get("condition", True), ctx):
                continue
            value = self.value(spec.get("value"), ctx)
            out[name] = {"type": _type_name(spec.get("type", "string")), "value": value}
        return out

    # -- values -------------------------------------------------------------------------------

    def value(self, raw: Any, ctx: "_Context") -> Any:
        """A JSON value with every ``[expression]`` string evaluated."""
        if isinstance(raw, str):
            if raw.startswith("[[") or not (raw.startswith("[") and raw.endswith("]")):
                return raw[1:] if raw.startswith("[[") else raw
            return _evaluate(_parsed(raw), ctx)
        if isinstance(raw, list):
            return [self.value(v, ctx) for v in raw]
        if isinstance(raw, dict):
            return {self.value(k, ctx): self.value(v, ctx) for k, v in raw.items()}
        return raw


def _find_declared(named: str, found: list[Planned], by_id: dict[str, Planned]) -> Planned | None:
    """The template's resource a dependsOn or reference() names: by ID, or by name (the
    last name segment, or the whole name)."""
    hit = by_id.get(named.lower())
    if hit is not None:
        return hit
    names = [p for p in found if named.lower() in (p.name.lower(), p.name.split("/")[-1].lower())]
    return names[0] if len(names) == 1 else None


def _ordered(found: list[Planned], by_id: dict[str, Planned]) -> list[Planned]:
    """Dependency order (a resource after everything it depends on), stable otherwise.
    A dependency on a resource whose condition is false is dropped, as ARM drops it."""
    done: list[Planned] = []
    placed: set[str] = set()
    pending = list(found)
    while pending:
        ready = [p for p in pending if all(d in placed for d in p.depends)]
        if not ready:
            cycle = ", ".join(p.label for p in pending)
            raise TemplateError(f"Circular dependency detected among: {cycle}.", "InvalidTemplate")
        for p in ready:
            done.append(p)
            placed.add(p.id.lower())
            pending.remove(p)
    for p in done:
        p.depends = {d for d in p.depends if by_id[d].deploy}
    return done


# --- parameters ------------------------------------------------------------------------------

_TYPES = {"string": str, "securestring": str, "int": int, "bool": bool, "object": dict, "secureobject": dict,
          "array": list}


def _type_name(t: str) -> str:
    return {"string": "String", "securestring": "SecureString", "int": "Int", "bool": "Bool", "object": "Object",
            "secureobject": "SecureObject", "array": "Array"}.get(t.lower(), t)


def check_parameter(name: str, spec: dict, value: Any) -> None:
    """A parameter's value against its declaration; TemplateError naming what to change."""
    kind = str(spec.get("type", "")).lower()
    want = _TYPES.get(kind)
    if want is None:
        raise TemplateError(f"The template parameter '{name}' has type '{spec.get('type')}', which ARM does not know.")
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise TemplateError(f"Template parameter '{name}': the value {json.dumps(value)[:80]} is not of type "
                            f"'{spec.get('type')}'.", "InvalidTemplate")
    allowed = spec.get("allowedValues")
    if allowed is not None and value not in allowed and not (isinstance(value, list) and all(v in allowed for v in value)):
        raise TemplateError(f"The provided value {json.dumps(value)[:80]} for the template parameter '{name}' is not "
                            f"valid. The parameter's allowed values are: {', '.join(map(str, allowed))}.",
                            "InvalidTemplate")
    if isinstance(value, (str, list)):
        if "minLength" in spec and len(value) < spec["minLength"]:
            raise TemplateError(f"The provided value for the template parameter '{name}' is too short: its length "
                                f"is {len(value)}, the least allowed {spec['minLength']}.")
        if "maxLength" in spec and len(value) > spec["maxLength"]:
            raise TemplateError(f"The provided value for the template parameter '{name}' is too long: its length "
                                f"is {len(value)}, the most allowed {spec['maxLength']}.")
    if want is int:
        if "minValue" in spec and value < spec["minValue"]:
            raise TemplateError(f"Template parameter '{name}': {value} is less than its minValue {spec['minValue']}.")
        if "maxValue" in spec and value > spec["maxValue"]:
            raise TemplateError(f"Template parameter '{name}': {value} is more than its maxValue {spec['maxValue']}.")


# --- expressions -----------------------------------------------------------------------------

_PARSED: dict[str, Any] = {}


def _parsed(raw: str):
    tree = _PARSED.get(raw)
    if tree is None:
        try:
            tree = _PARSED[raw] = parse(raw[1:-1])
        except ExpressionError as exc:
            raise TemplateError(f"The template expression {raw!r} is not valid: {exc}.") from None
    return tree


def _expression_texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value[1:-1]] if value.startswith("[") and value.endswith("]") and not value.startswith("[[") else []
    if isinstance(value, list):
        return [t for v in value for t in _expression_texts(v)]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _expression_texts(k) + _expression_texts(v)]
    return []


def check_functions(template: dict) -> None:
    """Parse every expression and refuse, by name, any function not implemented here."""
    unknown: set[str] = set()
    for text in _expression_texts(template):
        try:
            tree = parse(text)
        except ExpressionError as exc:
            raise TemplateError(f"The template expression '[{text}]' is not valid: {exc}.") from None
        for node in walk(tree):
            if isinstance(node, Call) and not known(node.name):
                unknown.add(node.name)
    if unknown:
        raise TemplateError(f"The template uses function(s) the local Azure does not implement: "
                            f"{', '.join(sorted(unknown))}. Nothing was deployed. Use the functions "
                            "scorer/azure/template.py lists (FUNCTIONS), or add one there with a test.",
                            "InvalidTemplateFunction")


#: the list*() functions the local Azure answers (scorer.twin.resources); ARM's others are each
#: resource provider's, and refused up front here
LIST_FUNCTIONS = ("listcallbackurl",)


def known(name: str) -> bool:
    """Whether ``name`` is a template function implemented here (names are case-insensitive)."""
    low = name.lower()
    return low in FUNCTIONS or low in _CONTEXT_FUNCTIONS or low in ("if", "reference") or low in LIST_FUNCTIONS


def _is_state_call(name: str) -> bool:
    low = name.lower()
    return low == "reference" or (low.startswith("list") and low not in ("list",))


class _NeedsState(Exception):
    """reference()/list*() asked while planning, before anything is deployed."""


@dataclasses.dataclass
class _Context:
    template: Template
    copy_index: int | None = None
    reference: Reference | None = None
    list_call: ListCall | None = None


def _member(target: Any, key: Any, optional: bool) -> Any:
    if isinstance(target, dict):
        if key in target:
            return target[key]
        low = str(key).lower()
        for k, v in target.items():
            if str(k).lower() == low:
                return v
        if optional:
            return None
        raise TemplateError(f"The language expression property '{key}' doesn't exist, available properties are "
                            f"'{', '.join(map(str, target))}'.")
    if isinstance(target, list) and isinstance(key, int) and not isinstance(key, bool):
        if 0 <= key < len(target):
            return target[key]
        raise TemplateError(f"The language expression index {key} is out of range (the array has {len(target)}).")
    if target is None and optional:
        return None
    raise TemplateError(f"The language expression property '{key}' cannot be read from {type(target).__name__}.")


def _evaluate(node, ctx: _Context) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Member):
        return _member(_evaluate(node.target, ctx), _evaluate(node.key, ctx), node.optional)
    name = node.name.lower()
    if name == "if":
        if len(node.args) != 3:
            raise TemplateError("if() takes a condition, a true value and a false value.")
        cond = _evaluate(node.args[0], ctx)
        if not isinstance(cond, bool):
            raise TemplateError(f"if(): the condition is {json.dumps(cond)[:60]}, not a Boolean.")
        return _evaluate(node.args[1] if cond else node.args[2], ctx)
    args = [_evaluate(a, ctx) for a in node.args]
    if _is_state_call(name):
        if ctx.reference is None:
            raise _NeedsState()
        if name == "reference":
            rid = _as_id(args[0], ctx)
            return ctx.reference(rid, args[1] if len(args) > 1 else None, len(args) > 2 and str(args[2]).lower() == "full")
        return ctx.list_call(node.name, _as_id(args[0], ctx), args[1] if len(args) > 1 else "", args[2] if len(args) > 2 else None)
    if name in _CONTEXT_FUNCTIONS:
        return _CONTEXT_FUNCTIONS[name](ctx, *args)
    fn = FUNCTIONS.get(name)
    if fn is None:
        raise TemplateError(f"The template function '{node.name}' is not known.", "InvalidTemplateFunction")
    try:
        return fn(*args)
    except TypeError as exc:
        raise TemplateError(f"The template function '{node.name}' got unusable arguments: {exc}.") from None


def _as_id(named: Any, ctx: _Context) -> str:
    """reference()'s target: a resource ID, or the name of a resource this template declares."""
    text = str(named)
    if text.startswith("/"):
        return text
    for p in ctx.template.plan():
        if text.lower() in (p.name.lower(), p.name.split("/")[-1].lower()):
            return p.id
    raise TemplateError(f"The resource '{text}' is not defined in the template.", "InvalidTemplate")


# -- the functions ------------------------------------------------------------------------------

def _format(fmt: str, *args: Any) -> str:
    def one(m: re.Match) -> str:
        i, spec = int(m.group(1)), m.group(2)
        if i >= len(args):
            raise TemplateError(f"format('{fmt}', ...): index {i} but only {len(args)} argument(s).")
        v = args[i]
        if spec:
            if isinstance(v, (int, float)) and spec.upper().startswith("N"):
                return f"{v:,.{int(spec[1:] or 2)}f}"
            if isinstance(v, (int, float)) and spec.upper().startswith("D"):
                return f"{int(v):0{int(spec[1:] or 1)}d}"
            raise TemplateError(f"format(): the format '{spec}' is not one the local Azure implements (N, D).")
        return _text(v)
    out = re.sub(r"\{(\d+)(?::([^}]*))?\}", one, fmt.replace("{{", "\x00").replace("}}", "\x01"))
    return out.replace("\x00", "{").replace("\x01", "}")


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return "" if v is None else str(v)


def _concat(*xs: Any) -> Any:
    if xs and all(isinstance(x, list) for x in xs):
        return [v for x in xs for v in x]
    return "".join(_text(x) for x in xs)


def _union(*xs: Any) -> Any:
    if all(isinstance(x, dict) for x in xs):
        out: dict = {}
        for x in xs:
            for k, v in x.items():
                out[k] = _union(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
        return out
    if all(isinstance(x, list) for x in xs):
        out_list: list = []
        for x in xs:
            out_list += [v for v in x if v not in out_list]
        return out_list
    raise TemplateError("union() takes objects or arrays, all of one kind.")


def _create_object(*kv: Any) -> dict:
    if len(kv) % 2:
        raise TemplateError("createObject() takes key/value pairs.")
    return {str(kv[i]): kv[i + 1] for i in range(0, len(kv), 2)}


def _length(x: Any) -> int:
    if isinstance(x, (str, list, dict)):
        return len(x)
    raise TemplateError(f"length() of {type(x).__name__}: give a string, an array or an object.")


def _empty(x: Any) -> bool:
    return x is None or (isinstance(x, (str, list, dict)) and len(x) == 0)


def _bool(x: Any) -> bool:
    if isinstance(x, str) and x.lower() in ("true", "false"):
        return x.lower() == "true"
    if isinstance(x, (bool, int)):
        return bool(x)
    raise TemplateError(f"bool() of {x!r}.")


def _json_fn(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise TemplateError(f"json(): {text[:60]!r} is not valid JSON.") from None


def _equals(a: Any, b: Any) -> bool:
    return a == b and type(a) is type(b) if not isinstance(a, str) else isinstance(b, str) and a == b


def _contains(container: Any, item: Any) -> bool:
    """Microsoft's contains(): a substring (case-sensitive), an object's key (keys are
    case-insensitive), an array's element."""
    if isinstance(container, str):
        return str(item) in container
    if isinstance(container, dict):
        return any(str(k).lower() == str(item).lower() for k in container)
    return item in container


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def fn(a: Any, b: Any) -> bool:
        if type(a) is not type(b) or not isinstance(a, (int, str)):
            raise TemplateError("comparisons take two integers or two strings.")
        return op(a, b)
    return fn


def _div(a: int, b: int) -> int:
    if b == 0:
        raise TemplateError("div(): division by zero.")
    return int(a / b)


def _ints(*xs: Any) -> list[int]:
    flat = list(xs[0]) if len(xs) == 1 and isinstance(xs[0], list) else list(xs)
    if not flat or not all(isinstance(x, int) and not isinstance(x, bool) for x in flat):
        raise TemplateError("min()/max() take integers, or one array of them.")
    return flat


def _copy_index(ctx: _Context, offset: int = 0) -> int:
    if ctx.copy_index is None:
        raise TemplateError("copyIndex() is used outside a copy loop.")
    return ctx.copy_index + offset


def _resource_id(ctx: _Context, *args: str) -> str:
    scope = ctx.template.scope.group_id
    if args and re.fullmatch(r"[0-9a-fA-F-]{36}", args[0]) and len(args) > 1 and "/" not in args[0]:
        scope, args = f"/subscriptions/{args[0]}", args[1:]
        if args and "." not in args[0]:
            scope, args = f"{scope}/resourceGroups/{args[0]}", args[1:]
    elif args and "." not in args[0].split("/")[0]:
        scope, args = f"/subscriptions/{ctx.template.scope.subscription_id}/resourceGroups/{args[0]}", args[1:]
    return resource_id(scope, args[0], *args[1:])


def _subscription_resource_id(ctx: _Context, *args: str) -> str:
    return resource_id(f"/subscriptions/{ctx.template.scope.subscription_id}", args[0], *args[1:])


def _resource_group(ctx: _Context) -> dict:
    s = ctx.template.scope
    return {"id": s.group_id, "name": s.resource_group, "type": "Microsoft.Resources/resourceGroups",
            "location": s.location, "properties": {"provisioningState": "Succeeded"}}


def _subscription(ctx: _Context) -> dict:
    s = ctx.template.scope
    return {"id": f"/subscriptions/{s.subscription_id}", "subscriptionId": s.subscription_id,
            "tenantId": s.tenant_id, "displayName": "local"}


def _parameter(ctx: _Context, name: str) -> Any:
    params = ctx.template.parameters
    key = next((k for k in params if k.lower() == str(name).lower()), None)
    if key is None:
        raise TemplateError(f"The template parameter '{name}' is not found.")
    return params[key]


_CONTEXT_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "parameters": _parameter,
    "variables": lambda ctx, name: ctx.template.variable(name),
    "copyindex": _copy_index,
    "resourcegroup": _resource_group,
    "subscription": _subscription,
    "tenant": lambda ctx: {"tenantId": ctx.template.scope.tenant_id},
    "deployment": lambda ctx: {"name": ctx.template.scope.deployment_name, "properties": {}},
    "environment": lambda ctx: ctx.template.scope.environment,
    "resourceid": _resource_id,
    "subscriptionresourceid": _subscription_resource_id,
    "tenantresourceid": lambda ctx, *a: resource_id("", a[0], *a[1:]),
    "extensionresourceid": lambda ctx, scope, *a: resource_id(scope, a[0], *a[1:]),
}

FUNCTIONS: dict[str, Callable[..., Any]] = {
    # string
    "format": _format, "concat": _concat, "uniquestring": unique_string, "guid": arm_guid,
    "tolower": lambda s: s.lower(), "toupper": lambda s: s.upper(), "trim": lambda s: s.strip(),
    "replace": lambda s, a, b: s.replace(a, b), "startswith": lambda s, p: s.lower().startswith(p.lower()),
    "endswith": lambda s, p: s.lower().endswith(p.lower()), "indexof": lambda s, p: s.lower().find(p.lower()),
    "lastindexof": lambda s, p: s.lower().rfind(p.lower()), "split": lambda s, d: s.split(d),
    "substring": lambda s, i, n=None: s[i:] if n is None else s[i:i + n], "string": _text,
    "base64": lambda s: base64.b64encode(s.encode()).decode(), "padleft": lambda s, n, c=" ": _text(s).rjust(n, c),
    "base64tostring": lambda s: base64.b64decode(s).decode(),
    # array and object
    "createarray": lambda *xs: list(xs), "array": lambda x: x if isinstance(x, list) else [x],
    "createobject": _create_object, "union": _union, "json": _json_fn, "null": lambda: None,
    "length": _length, "empty": _empty, "contains": _contains,
    "first": lambda x: (x[0] if x else None), "last": lambda x: (x[-1] if x else None),
    "take": lambda x, n: x[:max(0, n)], "skip": lambda x, n: x[max(0, n):],
    "range": lambda start, n: list(range(start, start + n)), "min": lambda *x: min(_ints(*x)),
    "max": lambda *x: max(_ints(*x)),
    "intersection": lambda a, *xs: [v for v in a if all(v in x for x in xs)] if isinstance(a, list)
    else {k: v for k, v in a.items() if all(x.get(k) == v for x in xs)},
    # logical and comparison
    "and": lambda *xs: all(xs), "or": lambda *xs: any(xs), "not": lambda x: not x, "bool": _bool,
    "true": lambda: True, "false": lambda: False, "equals": _equals,
    "less": _compare(lambda a, b: a < b), "lessorequals": _compare(lambda a, b: a <= b),
    "greater": _compare(lambda a, b: a > b), "greaterorequals": _compare(lambda a, b: a >= b),
    "coalesce": lambda *xs: next((x for x in xs if x is not None), None),
    # numeric
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "div": _div,
    "mod": lambda a, b: a % b, "int": lambda x: int(x),
}
