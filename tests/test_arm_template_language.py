"""The ARM template language of scorer/azure/template.py, the local Azure's: functions,
parameters, conditions, copies and ordering, against what Microsoft's template reference
says, and arm_templates/main.json planned with it."""

from __future__ import annotations

import pytest

from scorer.azure import deploy, workflow as wf
from scorer.azure.template import Scope, Template, TemplateError, arm_guid, unique_string

SCOPE = Scope("00000000-0000-0000-0000-000000000000", "rg-test", "westeurope", "11111111-1111-1111-1111-111111111111",
              "scorer", {"name": "AzureCloud", "resourceManager": "https://management.azure.com/",
                         "authentication": {"loginEndpoint": "https://login.microsoftonline.com/"}})


def tpl(resources=(), parameters=None, variables=None, outputs=None, values=None) -> Template:
    return Template({"parameters": parameters or {}, "variables": variables or {}, "resources": list(resources),
                     "outputs": outputs or {}}, values or {}, SCOPE)


def value(expression: str, **kw):
    t = tpl(**kw)
    from scorer.azure.template import _Context
    return t.value(expression, _Context(t))


@pytest.mark.parametrize("parts, expected", [
    # Published with a public reimplementation that says it checked them against Bicep's
    # uniqueString(); not verified against ARM from here.
    (["test"], "rbgf3xv4ufgzg"), (["hello", "world"], "a7wkljktk6wne"), (["abc"], "cgtzqvhu4i23s"),
    (["/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/my-rg"], "bmg7c6xu4tw46"),
    (["foo", "bar", "baz"], "xzi4ioaxtmth4")])
def test_unique_string_gives_arms_values(parts, expected):
    assert unique_string(*parts) == expected


def test_guid_is_a_name_based_uuid_of_the_hyphen_joined_arguments():
    import uuid
    g = arm_guid("a", "b")
    assert uuid.UUID(g).version == 5 and g == arm_guid("a", "b") != arm_guid("a-b", "")
    assert g == str(uuid.uuid5(uuid.UUID("11fb06fb-712d-4ddd-98c7-e71bbd588830"), "a-b"))


@pytest.mark.parametrize("expression, expected", [
    ("[format('{0}-{1}', 'a', 3)]", "a-3"), ("[concat('a', 'b')]", "ab"), ("[concat(createArray(1), createArray(2))]", [1, 2]),
    ("[toLower('AbC')]", "abc"), ("[if(equals(1, 1), 'yes', 'no')]", "yes"), ("[not(empty(''))]", False),
    ("[union(createObject('a', 1), createObject('b', 2))]", {"a": 1, "b": 2}), ("[length(createArray(1, 2, 3))]", 3),
    ("[json('{\"a\": [1]}').a[0]]", 1), ("[createObject('Key', 1).key]", 1), ("[[not an expression]", "[not an expression]"),
    ("[resourceGroup().name]", "rg-test"), ("[subscription().subscriptionId]", SCOPE.subscription_id),
    ("[resourceId('Microsoft.Storage/storageAccounts', 'st')]",
     "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-test/providers/Microsoft.Storage/storageAccounts/st"),
    ("[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'x')]",
     "/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Authorization/roleDefinitions/x"),
    ("[extensionResourceId('/s/r', 'Microsoft.Authorization/roleAssignments', 'g')]",
     "/s/r/providers/Microsoft.Authorization/roleAssignments/g"),
    ("[environment().authentication.loginEndpoint]", "https://login.microsoftonline.com/"),
    ("[contains('Azure', 'zu')]", True), ("[contains('Azure', 'ZU')]", False),   # case-sensitive, as documented
    ("[contains(createObject('Key', 1), 'key')]", True), ("[startsWith('Azure', 'az')]", True),
])
def test_functions(expression, expected):
    assert value(expression) == expected


def test_if_evaluates_only_the_branch_it_takes():
    """Microsoft's if() reference: only the chosen value is evaluated."""
    assert value("[if(false(), parameters('missing'), 'safe')]") == "safe"


def test_an_unknown_function_is_refused_by_name_before_anything_is_deployed():
    with pytest.raises(TemplateError, match="listKeys, listKeyz, pickZones") as e:
        tpl(resources=[{"type": "A.B/c", "apiVersion": "1", "name": "[pickZones('x')]",
                        "properties": {"k": "[listKeyz('x')]", "j": "[listKeys('y', '1')]"}}])
    assert e.value.code == "InvalidTemplateFunction"


@pytest.mark.parametrize("spec, given, message", [
    ({"type": "string", "allowedValues": ["a", "b"]}, "c", "allowed values are: a, b"),
    ({"type": "string", "minLength": 3}, "ab", "too short"), ({"type": "string", "maxLength": 2}, "abc", "too long"),
    ({"type": "int", "minValue": 1}, 0, "less than its minValue"), ({"type": "int"}, "1", "not of type 'int'"),
    ({"type": "bool"}, 1, "not of type 'bool'"), ({"type": "string"}, None, "is not provided"),
])
def test_parameters_are_checked_against_their_declaration(spec, given, message):
    with pytest.raises(TemplateError, match=message):
        tpl(parameters={"p": spec}, values={} if given is None else {"p": {"value": given}})


def test_an_unknown_parameter_is_refused_naming_the_declared_ones():
    with pytest.raises(TemplateError, match="no parameter.* q; it declares p"):
        tpl(parameters={"p": {"type": "string", "defaultValue": "x"}}, values={"q": {"value": 1}})


def test_copy_condition_and_dependencies_order_the_plan():
    plan = tpl(resources=[
        {"type": "A.B/kids", "apiVersion": "1", "name": "[format('k{0}', copyIndex())]", "copy": {"name": "kids", "count": 2},
         "dependsOn": ["[resourceId('A.B/parents', 'p')]"]},
        {"type": "A.B/parents", "apiVersion": "1", "name": "p", "properties": {"x": "[reference('q').y]"}},
        {"type": "A.B/others", "apiVersion": "1", "name": "q", "condition": "[false()]"},
        {"type": "A.B/last", "apiVersion": "1", "name": "z", "dependsOn": ["kids"]},
    ]).plan()
    assert [p.name for p in plan] == ["q", "p", "k0", "k1", "z"]   # reference() orders p after q
    assert [p.deploy for p in plan] == [False, True, True, True, True]
    assert plan[1].depends == set()   # q is not deployed: the dependency is dropped, as ARM drops it


def test_a_cycle_is_refused():
    with pytest.raises(TemplateError, match="Circular dependency"):
        tpl(resources=[{"type": "A.B/x", "apiVersion": "1", "name": "a", "dependsOn": ["b"]},
                       {"type": "A.B/x", "apiVersion": "1", "name": "b", "dependsOn": ["a"]}]).plan()


def test_a_depends_on_a_scoped_resource_by_its_group_level_id_is_refused_with_arms_words():
    with pytest.raises(TemplateError, match="is not defined in the template.*extensionResourceId"):
        tpl(resources=[
            {"type": "Microsoft.Authorization/roleAssignments", "apiVersion": "1", "name": "g", "scope": "A.B/x/r"},
            {"type": "A.B/x", "apiVersion": "1", "name": "r"},
            {"type": "A.B/y", "apiVersion": "1", "name": "app",
             "dependsOn": ["[resourceId('Microsoft.Authorization/roleAssignments', 'g')]"]}]).plan()


def main_json(**values) -> Template:
    definition = wf.load()["definition"]
    params = deploy.template_parameters(wf.settings(definition, {}), definition, prefix="scorer", image_name="scorer:t")
    params.update({k: {"value": v} for k, v in values.items()})
    return Template(deploy.load_template(), params, SCOPE)


@pytest.mark.parametrize("values", [{}, {"imageReady": False}, {"withApi": True, "apiClientId": "x"},
                                    {"withApi": True, "apiClientId": "x", "imageReady": False}])
def test_main_json_plans_in_every_configuration_deploy_py_uses(values):
    plan = main_json(**values).plan()
    deployed = {p.type for p in plan if p.deploy}
    assert ("Microsoft.EventGrid/systemTopics/eventSubscriptions" in deployed) == values.get("imageReady", True)
    assert ("Microsoft.App/containerApps" in deployed) == (values.get("withApi", False) and values.get("imageReady", True))
    order = [p.type for p in plan]
    assert order.index("Microsoft.Logic/workflows") < order.index("Microsoft.EventGrid/systemTopics/eventSubscriptions")


def test_main_json_names_its_logic_app_as_deploy_py_reads_it():
    """deploy.running_tag reads the Logic App by this name when the last deployment failed."""
    (workflow,) = [p for p in main_json().plan() if p.type == "Microsoft.Logic/workflows"]
    assert workflow.name == "scorer-runner"
