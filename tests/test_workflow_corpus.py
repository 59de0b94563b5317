"""The engine on workflow definitions nobody here wrote: every definition of the Azure/logicapps
repository and two Logic App quickstarts of azure-quickstart-templates (their ARM expressions
evaluated by scorer.azure.template first, as a deployment would). Sources and licences:
tests/fixtures/workflow-corpus/README.md.

Each definition either loads and runs (every trigger fired once, Http answered by a stand-in,
waits returning at once) without a Python exception or an EngineError, or is refused with a
list that names every action type, trigger type and function the engine does not implement,
found here by a walk of the JSON independent of the engine's. The counts are the ones
docs/twin.md gives."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scorer.azure.expressions import WORKFLOW_FUNCTIONS
from scorer.azure.functions import FUNCTIONS
from scorer.azure.template import Scope, Template
from scorer.twin.engine import SUPPORTED_ACTIONS, SUPPORTED_TRIGGERS, DefinitionRefused, Engine, HttpResponse

ROOT = Path(__file__).parents[1]
CORPUS = ROOT / "tests" / "fixtures" / "workflow-corpus"
SCOPE = Scope("00000000-0000-0000-0000-000000000000", "rg-corpus", "westeurope",
              "11111111-1111-1111-1111-111111111111", "corpus",
              {"name": "AzureCloud", "resourceManager": "https://management.azure.com/",
               "authentication": {"loginEndpoint": "https://login.microsoftonline.com/"}})
QUICKSTART_PARAMETERS = {"logic-app-create": {"logicAppName": "corpus"}}


def _quickstart_definitions(path: Path) -> list[tuple[str, dict]]:
    """The workflow definitions an ARM template deploys, its expressions evaluated."""
    name = path.name.removesuffix(".azuredeploy.json")
    template = Template(json.loads(path.read_text()), QUICKSTART_PARAMETERS.get(name, {}), SCOPE)
    found = []

    def no_state(*args):
        raise AssertionError("a quickstart's workflow does not read another resource's state")

    def take(resources: list, prefix: str) -> None:
        for r in resources:
            if r["type"].lower() == "microsoft.logic/workflows":
                found.append((f"{prefix}{r['name']}", r["properties"]["definition"]))
            elif r["type"].lower() == "microsoft.resources/deployments":  # evaluated in the outer scope
                take(r["properties"]["template"]["resources"], f"{prefix}{r['name']}/")

    take([{**template.evaluate(p, no_state, no_state), "type": p.type} for p in template.plan()], f"{name}/")
    return found


def corpus() -> list[tuple[str, str, dict]]:
    """(id, plan, definition) for every definition of the corpus."""
    index = json.loads((CORPUS / "logicapps" / "index.json").read_text())
    out = [(f"logicapps/{d['file']}", d["plan"], json.loads((CORPUS / "logicapps" / d["file"]).read_text()))
           for d in index["definitions"]]
    for path in sorted((CORPUS / "quickstarts").glob("*.azuredeploy.json")):
        out += [(f"quickstarts/{n}", "Consumption", d) for n, d in _quickstart_definitions(path)]
    return out


CORPUS_DEFINITIONS = corpus()


# --- an oracle independent of the engine's walk -------------------------------------------------------

def _typed(value, found: list) -> None:
    """Every object with a "type" under an actions map (nested scopes, else, cases, default)."""
    if isinstance(value, dict):
        for key in ("actions",):
            for a in (value.get(key) or {}).values() if isinstance(value.get(key), dict) else []:
                if isinstance(a, dict):
                    found.append(a)
                    _typed(a, found)
        for key in ("else", "default"):
            if isinstance(value.get(key), dict):
                _typed(value[key], found)
        for case in (value.get("cases") or {}).values():
            _typed(case, found)


_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def _functions(value, found: set) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _functions(k, found)
            _functions(v, found)
    elif isinstance(value, list):
        for v in value:
            _functions(v, found)
    elif isinstance(value, str) and "@" in value and not value.startswith("@@"):
        exprs = [value[1:]] if value.startswith("@") and not value.startswith("@{") else \
            re.findall(r"@\{(.*?)\}", value)
        for e in exprs:
            found.update(_CALL.findall(re.sub(r"'(?:[^']|'')*'", "''", e)))


def unimplemented(definition: dict) -> set[str]:
    """What the refusal must name: unsupported action and trigger types, unknown functions."""
    actions: list = []
    _typed(definition, actions)
    supported = {t.lower() for t in SUPPORTED_ACTIONS}
    need = {f"'{a['type']}'" for a in actions if str(a.get("type")).lower() not in supported}
    need |= {f"'{t.get('type')}'" for t in (definition.get("triggers") or {}).values()
             if str(t.get("type")).lower() not in {x.lower() for x in SUPPORTED_TRIGGERS}}
    calls: set = set()
    _functions({k: definition.get(k) for k in ("triggers", "actions", "outputs")}, calls)
    known = {f.lower() for f in FUNCTIONS} | {f.lower() for f in WORKFLOW_FUNCTIONS}
    need |= {f"{c}()" for c in calls if c.lower() not in known}
    return need


# --- the stand-in each runnable definition runs against ------------------------------------------------

class Answer200:
    def __init__(self):
        self.sent = []

    def send(self, request, timeout):
        self.sent.append(request)
        return HttpResponse(200, {"Content-Type": "application/json"}, b"{}")


def _records(records: dict):
    for rec in records.values():
        yield rec
        for iteration in rec.inner:
            yield from _records(iteration)


def outcome(definition: dict) -> tuple[str, list[str]]:
    """("run", []) when every trigger's run ended with no EngineError; ("refused", problems)."""
    try:
        engine = Engine(definition, transport=Answer200(), sleep=lambda seconds: False)
    except DefinitionRefused as refused:
        return "refused", refused.problems
    for trigger in definition["triggers"]:
        run = engine.run(trigger, {"headers": {}, "body": {}}, respond=lambda answer: True)
        assert run.status in ("Succeeded", "Failed", "Cancelled", "Skipped"), (trigger, run.status)
        broken = [r.name for r in _records(run.actions) if r.code == "EngineError"]
        assert not broken, f"the engine failed in {broken}: {run.error}"
    return "run", []


@pytest.mark.parametrize("name, plan, definition", CORPUS_DEFINITIONS, ids=[c[0] for c in CORPUS_DEFINITIONS])
def test_each_definition_runs_or_is_refused_naming_everything_unimplemented(name, plan, definition):
    result, problems = outcome(definition)
    need = unimplemented(definition)
    if result == "run":
        assert not need, f"it ran, yet uses {need}"
        return
    text = " | ".join(problems)
    missing = sorted(n for n in need if n not in text)
    assert not missing, f"the refusal does not name {missing}: {text}"


def test_the_counts_in_docs_twin_md_are_the_corpus_counts():
    counts = {"definitions": 0, "load and run": 0, "refused: Standard (single-tenant) workflows": 0,
              "refused: Consumption workflows": 0}
    for _, plan, definition in CORPUS_DEFINITIONS:
        counts["definitions"] += 1
        result, _ = outcome(definition)
        key = "load and run" if result == "run" else f"refused: {plan} (single-tenant) workflows" \
            if plan == "Standard" else "refused: Consumption workflows"
        counts[key] += 1
    text = (ROOT / "docs" / "twin.md").read_text()
    table = text[text.index("| corpus |"):]
    stated = {m.group(1).strip(): int(m.group(2)) for m in re.finditer(r"^\| ([^|]+) \| (\d+) \|", table, re.M)}
    assert {k: stated.get(k) for k in counts} == counts


def test_the_quickstart_written_in_lower_case_loads_and_runs():
    (name, definition), = _quickstart_definitions(CORPUS / "quickstarts" / "logic-app-create.azuredeploy.json")
    assert definition["triggers"]["recurrence"]["type"] == "recurrence"
    assert definition["actions"]["actionType"]["type"] == "http"
    assert outcome(definition) == ("run", [])
