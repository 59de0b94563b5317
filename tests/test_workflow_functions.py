"""The expression functions the workflow engine implements, against the examples of
Microsoft's "Reference guide to workflow expression functions in Azure Logic Apps"
(MicrosoftDocs/azure-docs, articles/logic-apps/workflow-definition-language-functions-reference.md,
as stored at commit 005f055): each case is an example's expression and the result the
reference documents. Where the reference's own result contradicts its description, the
case says so and checks the described behaviour.
"""

from __future__ import annotations

import re

import pytest

from scorer.azure import expressions as ex
from scorer.twin.engine import DefinitionRefused, Engine
from scorer.azure.functions import FUNCTIONS

REFERENCE = [
    ("add(1, 1.5)", 2.5),
    ("addDays('2018-03-15T00:00:00Z', 10)", "2018-03-25T00:00:00.0000000Z"),
    ("addDays('2018-03-15T00:00:00Z', -5)", "2018-03-10T00:00:00.0000000Z"),
    ("addHours('2018-03-15T00:00:00Z', 10)", "2018-03-15T10:00:00.0000000Z"),
    ("addHours('2018-03-15T15:00:00Z', -5)", "2018-03-15T10:00:00.0000000Z"),
    ("addMinutes('2018-03-15T00:10:00Z', 10)", "2018-03-15T00:20:00.0000000Z"),
    ("addMinutes('2018-03-15T00:20:00Z', -5)", "2018-03-15T00:15:00.0000000Z"),
    ("addProperty(json('{ \"firstName\": \"Sophia\", \"lastName\": \"Owen\" }'), 'middleName', 'Anne')",
     {"firstName": "Sophia", "lastName": "Owen", "middleName": "Anne"}),
    ("setProperty(json('{ \"customerName\": { \"firstName\": \"Sophia\", \"surName\": \"Owen\" } }'), 'customerName', "
     "addProperty(json('{ \"customerName\": { \"firstName\": \"Sophia\", \"surName\": \"Owen\" } }')['customerName'], "
     "'middleName', 'Anne'))",
     {"customerName": {"firstName": "Sophia", "surName": "Owen", "middleName": "Anne"}}),
    ("addSeconds('2018-03-15T00:00:00Z', 10)", "2018-03-15T00:00:10.0000000Z"),
    ("addSeconds('2018-03-15T00:00:30Z', -5)", "2018-03-15T00:00:25.0000000Z"),
    ("addToTime('2018-01-01T00:00:00Z', 1, 'Day')", "2018-01-02T00:00:00.0000000Z"),
    ("addToTime('2018-01-01T00:00:00Z', 1, 'Day', 'D')", "Tuesday, January 2, 2018"),
    ("and(true, true)", True), ("and(false, true)", False), ("and(false, false)", False),
    ("and(equals(1, 1), equals(2, 2))", True), ("and(equals(1, 1), equals(1, 2))", False),
    ("and(equals(1, 2), equals(1, 3))", False),
    ("array('hello')", ["hello"]),
    ("base64('hello')", "aGVsbG8="),
    ("base64ToString('aGVsbG8=')", "hello"),
    ("bool(1)", True), ("bool(0)", False), ("bool(-1)", True), ("bool('true')", True), ("bool('false')", False),
    ("coalesce(null, true, false)", True), ("coalesce(null, 'hello', 'world')", "hello"),
    ("coalesce(null, null, null)", None),
    ("concat('Hello', 'World')", "HelloWorld"),
    ("contains('hello world', 'world')", True), ("contains('hello world', 'universe')", False),
    ("createArray('h', 'e', 'l', 'l', 'o')", ["h", "e", "l", "l", "o"]),
    ("dataUri('hello')", "data:text/plain;charset=utf-8;base64,aGVsbG8="),
    ("dataUriToString('data:text/plain;charset=utf-8;base64,aGVsbG8=')", "hello"),
    ("dayOfMonth('2018-03-15T13:27:36Z')", 15),
    ("dayOfWeek('2018-03-15T13:27:36Z')", 4),
    ("dayOfYear('2018-03-15T13:27:36Z')", 74),
    ("decodeUriComponent('https%3A%2F%2Fcontoso.com')", "https://contoso.com"),
    ("div(10,5)", 2), ("div(11,5)", 2), ("div(11,5.0)", 2.2), ("div(11.0,5)", 2.2),
    ("encodeUriComponent('https://contoso.com')", "https%3A%2F%2Fcontoso.com"),
    ("empty('')", True), ("empty('abc')", False),
    ("endsWith('hello world', 'world')", True), ("endsWith('hello world', 'universe')", False),
    ("equals(true, 1)", True), ("equals('abc', 'abcd')", False),
    ("first('hello')", "h"), ("first(createArray(0, 1, 2))", 0),
    ("float('10.333')", 10.333),
    ("formatDateTime('03/15/2018 12:00:00', 'yyyy-MM-ddTHH:mm:ss')", "2018-03-15T12:00:00"),
    ("greater(10, 5)", True), ("greater('apple', 'banana')", False),
    ("greaterOrEquals(5, 5)", True), ("greaterOrEquals('apple', 'banana')", False),
    ("if(equals(1, 1), 'yes', 'no')", "yes"),
    ("indexOf('hello world', 'world')", 6),
    ("int('10')", 10),
    ("json('[1, 2, 3]')", [1, 2, 3]),
    ("json('{\"fullName\": \"Sophia Owen\"}')", {"fullName": "Sophia Owen"}),
    ("intersection(createArray(1, 2, 3), createArray(101, 2, 1, 10), createArray(6, 8, 1, 2))", [1, 2]),
    ("join(createArray('a', 'b', 'c'), '.')", "a.b.c"),
    ("last('abcd')", "d"), ("last(createArray(0, 1, 2, 3))", 3),
    ("lastIndexOf('hello world hello world', 'world')", 18),
    ("lastIndexOf('hello world hello world', '')", 22),
    ("length('abcd')", 4), ("length(createArray(0, 1, 2, 3))", 4),
    ("less(5, 10)", True), ("less('banana', 'apple')", False),
    ("lessOrEquals(10, 10)", True), ("lessOrEquals('apply', 'apple')", False),
    ("max(1, 2, 3)", 3), ("max(createArray(1, 2, 3))", 3),
    ("min(1, 2, 3)", 1), ("min(createArray(1, 2, 3))", 1),
    ("mod(3, 2)", 1),
    ("mul(1, 2)", 2), ("mul(1.5, 2)", 3),
    ("not(false)", True), ("not(true)", False), ("not(equals(1, 2))", True), ("not(equals(1, 1))", False),
    ("or(true, false)", True), ("or(false, false)", False),
    ("or(equals(1, 1), equals(1, 2))", True), ("or(equals(1, 2), equals(1, 3))", False),
    ("range(1, 4)", [1, 2, 3, 4]),
    ("replace('the old string', 'old', 'new')", "the new string"),
    ("removeProperty(json('{ \"firstName\": \"Sophia\", \"middleName\": \"Anne\", \"surName\": \"Owen\" }'), 'middleName')",
     {"firstName": "Sophia", "surName": "Owen"}),
    ("removeProperty(json('{ \"customerName\": { \"firstName\": \"Sophia\", \"middleName\": \"Anne\", \"surName\": \"Owen\" } }')"
     "['customerName'], 'middleName')", {"firstName": "Sophia", "surName": "Owen"}),
    ("setProperty(json('{ \"firstName\": \"Sophia\", \"surName\": \"Owen\" }'), 'surName', 'Hartnett')",
     {"firstName": "Sophia", "surName": "Hartnett"}),
    ("skip(createArray(0, 1, 2, 3), 1)", [1, 2, 3]),
    ("split('a_b_c', '_')", ["a", "b", "c"]), ("split('a_b_c', ' ')", ["a_b_c"]),
    ("startOfDay('2018-03-15T13:30:30Z')", "2018-03-15T00:00:00.0000000Z"),
    ("startOfHour('2018-03-15T13:30:30Z')", "2018-03-15T13:00:00.0000000Z"),
    ("startOfMonth('2018-03-15T13:30:30Z')", "2018-03-01T00:00:00.0000000Z"),
    ("startOfMonth('2018-03-15T13:30:30Z', 'yyyy-MM-dd')", "2018-03-01"),
    ("startsWith('hello world', 'hello')", True), ("startsWith('hello world', 'greetings')", False),
    ("string(10)", "10"),
    ("sub(10.3, .3)", 10),
    ("substring('hello world', 6, 5)", "world"),
    ("subtractFromTime('2018-01-02T00:00:00Z', 1, 'Day')", "2018-01-01T00:00:00.0000000Z"),
    # the reference prints "Monday, January, 1, 2018"; "D" is "dddd, MMMM d, yyyy", as its other examples show
    ("subtractFromTime('2018-01-02T00:00:00Z', 1, 'Day', 'D')", "Monday, January 1, 2018"),
    ("take('abcde', 3)", "abc"), ("take(createArray(0, 1, 2, 3, 4), 3)", [0, 1, 2]),
    ("toLower('Hello World')", "hello world"), ("toUpper('Hello World')", "HELLO WORLD"),
    ("trim(' Hello World  ')", "Hello World"),
    ("union(createArray(1, 2, 3), createArray(1, 2, 10, 101))", [1, 2, 3, 10, 101]),
    ("uriComponent('https://contoso.com')", "https%3A%2F%2Fcontoso.com"),
    ("uriComponentToString('https%3A%2F%2Fcontoso.com')", "https://contoso.com"),
    ("uriHost('https://www.localhost.com:8080')", "www.localhost.com"),
    ("uriPath('https://www.contoso.com/catalog/shownew.htm?date=today')", "/catalog/shownew.htm"),
    ("uriPathAndQuery('https://www.contoso.com/catalog/shownew.htm?date=today')", "/catalog/shownew.htm?date=today"),
    ("uriPort('https://www.localhost:8080')", 8080),
    ("uriQuery('https://www.contoso.com/catalog/shownew.htm?date=today')", "?date=today"),
    # the reference prints "http" for an https URI; the scheme of that URI is https
    ("uriScheme('https://www.contoso.com/catalog/shownew.htm?date=today')", "https"),
    ("parameters('fullName')", "Sophia Owen"),
    ("variables('numItems')", 20),
]


@pytest.mark.parametrize("expression, expected", REFERENCE, ids=[e for e, _ in REFERENCE])
def test_reference_example(expression, expected):
    got = ex.evaluate(ex.parse(expression), {"parameters": {"fullName": "Sophia Owen"},
                                            "variables": {"numItems": 20}})
    assert got == expected and isinstance(got, bool) == isinstance(expected, bool), got


def test_div_of_two_integers_is_an_integer_and_of_a_float_a_float():
    # the reference: "If either the dividend or divisor has Float type, the result has Float type"
    assert isinstance(ex.evaluate(ex.parse("div(11,5)"), {}), int)
    assert isinstance(ex.evaluate(ex.parse("div(11,5.0)"), {}), float)


def test_every_function_of_the_reference_that_the_engine_implements_has_an_example():
    tested = {m.group(1) for e, _ in REFERENCE for m in re.finditer(r"([A-Za-z][A-Za-z0-9]*)\(", e)}
    untested = sorted(set(FUNCTIONS) - tested - {
        # examples whose results the reference gives only for a clock or chance
        "utcNow", "guid", "rand", "getFutureTime", "getPastTime", "ticks",
        # aliases of tested functions the reference marks deprecated or alternative
        "decodeBase64"})
    assert untested == []


def test_functions_that_read_the_clock_or_chance_have_the_documented_shapes():
    utc = ex.evaluate(ex.parse("utcNow()"), _Live())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z", utc)
    assert re.fullmatch(r"\([0-9a-f-]{36}\)", ex.evaluate(ex.parse("guid('P')"), _Live()))
    assert ex.evaluate(ex.parse("rand(1, 5)"), _Live()) in (1, 2, 3, 4)
    assert ex.evaluate(ex.parse("ticks('2018-01-01T00:00:00Z')"), _Live()) == 636503616000000000
    assert ex.evaluate(ex.parse("utcNow('yyyy')"), _Live()) == utc[:4]


class _Live:
    """A context with no run state: the real clock and chance."""

    def workflow_function(self, name, args):
        raise ex.ExpressionError(name)


@pytest.mark.parametrize("fn", ["xpath(xml('<a/>'), '/a')", "convertTimeZone('2018-01-01T08:00:00Z', 'UTC', 'X')",
                                "formatNumber(1, '0')", "listCallbackUrl()"])
def test_a_definition_calling_an_unimplemented_function_is_refused_naming_it(fn):
    definition = {"triggers": {"t": {"type": "Request", "kind": "Http"}},
                  "actions": {"A": {"type": "Compose", "inputs": f"@{fn}", "runAfter": {}}}}
    with pytest.raises(DefinitionRefused, match=re.escape(fn.split("(")[0]) + r"\(\) is not implemented"):
        Engine(definition)
