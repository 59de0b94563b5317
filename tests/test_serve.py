"""`scorer serve` (issue 13): the published models over HTTP, with real Azurite and R, the
server run as users run it (`scorer serve` in a subprocess). Every answer is checked
against the server's own OpenAPI document."""

from __future__ import annotations

import csv
import io
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from conftest import ROOT, _free_port, env_for
from test_model_families import predict_types

SPEC = json.loads((ROOT / "scorer" / "online" / "openapi.json").read_text())
# the document as one resource, so that its schemas' "#/components/..." references resolve
_REGISTRY = Registry().with_resource("urn:scorer-openapi", Resource(contents=SPEC, specification=DRAFT202012))


def conforms(resp: requests.Response, path: str, method: str = "get") -> dict | str:
    """The response's body, checked against the document's schema for this path,
    method, status and media type."""
    op = SPEC["paths"][path][method]
    spec = op["responses"].get(str(resp.status_code))
    assert spec is not None, f"{method.upper()} {path} answered {resp.status_code}, which the document does not list"
    if "$ref" in spec:
        spec = SPEC["components"]["responses"][spec["$ref"].rsplit("/", 1)[1]]
    media = resp.headers["content-type"].split(";")[0]
    assert media in spec["content"], f"{media} not documented for {resp.status_code}"
    if media != "application/json":
        return resp.text
    schema = dict(spec["content"][media]["schema"])
    if "$ref" in schema:
        schema = {"$ref": "urn:scorer-openapi" + schema["$ref"]}
    else:
        schema = json.loads(json.dumps(schema).replace('"#/components', '"urn:scorer-openapi#/components'))
    body = resp.json()
    Draft202012Validator(schema, registry=_REGISTRY).validate(body)
    return body


class Served:
    def __init__(self, settings, **env):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # the log to a file: an unread pipe fills up and stalls the server
        self.log = tempfile.NamedTemporaryFile("w+", prefix="scorer-serve-", suffix=".log")
        self.proc = subprocess.Popen([sys.executable, "-m", "scorer", "serve", "--port", str(self.port)],
                                     env=env_for(settings, **env), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            assert self.proc.poll() is None, self.read_log()
            time.sleep(0.1)
        raise AssertionError("scorer serve did not become ready")

    def post(self, name: str, body, version: int | None = None, timeout: float = 60, **kw) -> requests.Response:
        params = {"version": version} if version is not None else None
        if isinstance(body, (bytes, str)):
            return requests.post(f"{self.url}/v1/models/{name}/predict", data=body, params=params, timeout=timeout, **kw)
        return requests.post(f"{self.url}/v1/models/{name}/predict", json=body, params=params, timeout=timeout, **kw)

    def read_log(self) -> str:
        # opened anew: seeking the handle the server writes through would move its offset too
        return Path(self.log.name).read_text()

    def stop(self) -> str:
        """SIGTERM, and the server's log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        return self.read_log()


@pytest.fixture
def served(pipeline, fitted):
    for case in ("glm_binomial", "rpart_class", "polr", "ranger"):
        pipeline.publish(fitted / f"{case}.rds", case.replace("_", "-"), predict_types(fitted)[case])
    s = Served(pipeline.settings, SCORER_SERVE_REFRESH_SECONDS="1")
    yield s
    log = s.stop()
    assert s.proc.returncode == 0, log[-3000:]
    assert "Traceback" not in log


def rows_of(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def typed(rows: list[dict]) -> list[dict]:
    """CSV text as a JSON client sends it: numbers as numbers, empty as null."""
    out = []
    for r in rows:
        d = {}
        for k, v in r.items():
            try:
                d[k] = float(v) if v != "" else None
            except ValueError:
                d[k] = v
        out.append(d)
    return out


@pytest.mark.parametrize("case", ["glm_binomial", "rpart_class", "polr", "ranger"])
def test_predictions_over_http_equal_rs_own(served, fitted, case):
    name = case.replace("_", "-")
    expected = rows_of(fitted / f"{case}.expected.csv")
    for body in (typed(rows_of(fitted / f"{case}.csv")), (fitted / f"{case}.csv").read_bytes()):
        headers = {"content-type": "text/csv"} if isinstance(body, bytes) else {}
        resp = served.post(name, body, headers=headers)
        assert resp.status_code == 200, resp.text
        got = conforms(resp, "/v1/models/{name}/predict", "post")
        assert got["model"] == name and got["version"] == 1 and got["rejected"] == []
        assert [p["row"] for p in got["predictions"]] == list(range(1, len(expected) + 1))
        for p, e in zip(got["predictions"], expected):
            for col, want in e.items():
                if want == "":
                    assert p[col] is None
                    continue
                try:
                    assert math.isclose(p[col], float(want), rel_tol=1e-12, abs_tol=1e-15), (case, col)
                except ValueError:
                    assert p[col] == want


def test_csv_in_and_out_is_the_blob_outputs_shape(served, fitted):
    resp = served.post("glm-binomial", (fitted / "glm_binomial.csv").read_bytes(),
                       headers={"content-type": "text/csv", "accept": "text/csv"})
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    conforms(resp, "/v1/models/{name}/predict", "post")
    header = resp.text.splitlines()[0]
    assert header.endswith('"prediction"') and resp.headers["X-Scorer-Version"] == "1"


def test_each_error_has_its_status_and_message(served, fitted):
    ok = typed(rows_of(fitted / "glm_binomial.csv"))[:2]
    post = "/v1/models/{name}/predict"

    unseen = [dict(ok[0], education="postgraduate"), ok[1]]
    body = conforms(r := served.post("glm-binomial", unseen), post, "post")
    assert r.status_code == 200 and [p["row"] for p in body["predictions"]] == [2]
    assert body["rejected"][0]["row"] == 1 and "was not seen when the model was fitted" in body["rejected"][0]["reason"]

    both = [dict(ok[0], education="postgraduate"), dict(ok[1], age="forty")]  # each row bad, each column fine
    body = conforms(r := served.post("glm-binomial", both), post, "post")
    assert r.status_code == 422 and body["error"]["kind"] == "AllRowsRejected"
    assert [x["row"] for x in body["rejected"]] == [1, 2] and body["rejected"][1]["column"] == "age"

    body = conforms(r := served.post("glm-binomial", [dict(ok[0], education="postgraduate")]), post, "post")
    assert r.status_code == 422 and "holds none of the model's levels" in body["error"]["message"]

    body = conforms(r := served.post("glm-binomial", [{k: v for k, v in ok[0].items() if k != "age"}]), post, "post")
    assert r.status_code == 400 and "missing required column(s) 'age'" in body["error"]["message"]

    body = conforms(r := served.post("glm-binomial", b'{"rows": [{"age": 3', headers={"content-type": "application/json"}),
                    post, "post")
    assert r.status_code == 400 and "not valid JSON" in body["error"]["message"] and body["error"]["what_to_do"]

    body = conforms(r := served.post("glm-binomial", b"", headers={"content-type": "application/json"}), post, "post")
    assert r.status_code == 400 and body["error"]["kind"] == "InputFormatError"
    body = conforms(r := served.post("glm-binomial", {"rows": []}), post, "post")
    assert r.status_code == 400 and "no rows" in body["error"]["message"]

    # issue 26: JSON true in a number column was scored as 1 (CSV's TRUE is refused)
    body = conforms(r := served.post("glm-binomial", [dict(ok[0], age=True), ok[1]]), post, "post")
    assert r.status_code == 200 and [p["row"] for p in body["predictions"]] == [2]
    assert body["rejected"][0]["row"] == 1 and "'true' is not a number" in body["rejected"][0]["reason"]
    body = conforms(r := served.post("glm-binomial", [dict(ok[0], age=True)]), post, "post")
    assert r.status_code == 422 and "'age' should hold numbers, but it holds bool" in body["error"]["message"]
    # issue 26: an unclosed quote in a CSV body took every later line as its value
    unclosed = (fitted / "glm_binomial.csv").read_text().replace('"', "").splitlines()
    unclosed[1] = unclosed[1].rsplit(",", 1)[0] + ',"1'
    body = conforms(r := served.post("glm-binomial", "\n".join(unclosed) + "\n", headers={"content-type": "text/csv"}),
                    post, "post")
    assert r.status_code == 400 and "line 2, column 'induced'" in body["error"]["message"] and "never closed" in r.text

    body = conforms(r := served.post("nope", ok), post, "post")
    assert r.status_code == 404 and "No model named 'nope'" in body["error"]["message"]
    body = conforms(r := served.post("glm-binomial", ok, version=7), post, "post")
    assert r.status_code == 404 and "has no version 7" in body["error"]["message"]
    body = conforms(r := requests.post(f"{served.url}/v1/models/glm-binomial/predict?version=x", json=ok), post, "post")
    assert r.status_code == 400 and "version='x'" in body["error"]["message"]
    for r in (served.post("glm-binomial", ok), served.post("nope", ok)):
        assert "Traceback" not in r.text


def test_a_body_above_the_limit_is_refused_with_413(pipeline, fitted):
    pipeline.publish(fitted / "glm_binomial.rds", "g", "response")
    s = Served(pipeline.settings, SCORER_SERVE_MAX_BODY_BYTES="1000")
    try:
        body = conforms(r := s.post("g", b"x" * 5000, headers={"content-type": "text/csv"}), "/v1/models/{name}/predict",
                        "post")
        assert r.status_code == 413 and "SCORER_SERVE_MAX_BODY_BYTES" in body["error"]["message"]
    finally:
        s.stop()


def test_models_card_prototype_health_and_the_document(served, fitted):
    listed = conforms(requests.get(served.url + "/v1/models"), "/v1/models")
    assert {m["name"] for m in listed["models"]} == {"glm-binomial", "rpart-class", "polr", "ranger"}
    card = conforms(requests.get(served.url + "/v1/models/glm-binomial"), "/v1/models/{name}")
    assert card["prototype"]["columns"]["education"] == {"type": "string", "levels": ["0-5yrs", "6-11yrs", "12+ yrs"]}
    example = card["prototype"]["example"]
    r = served.post("glm-binomial", example)  # the example a client copies scores
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1
    conforms(requests.get(served.url + "/healthz"), "/healthz")
    ready = conforms(requests.get(served.url + "/readyz"), "/readyz")
    assert ready["models"] == {"glm-binomial": 1, "rpart-class": 1, "polr": 1, "ranger": 1}
    doc = requests.get(served.url + "/openapi.json").json()
    from openapi_spec_validator import validate
    validate(doc)
    assert doc == SPEC


def test_a_new_version_is_served_within_the_refresh_time(served, pipeline, fitted):
    row = typed(rows_of(fitted / "glm_binomial.csv"))[:1]
    assert served.post("glm-binomial", row).json()["version"] == 1
    pipeline.publish(fitted / "glm_binomial.rds", "glm-binomial", "link")  # v2: another predict type
    t = time.monotonic()
    while served.post("glm-binomial", row).json()["version"] != 2:
        assert time.monotonic() - t < 10, "version 2 not served within 10 s (refresh every 1 s)"
        time.sleep(0.1)
    took = time.monotonic() - t
    v1 = served.post("glm-binomial", row, version=1).json()["predictions"][0]["prediction"]
    v2 = served.post("glm-binomial", row).json()["predictions"][0]["prediction"]
    assert 0 < v1 < 1 and math.isclose(v2, math.log(v1 / (1 - v1)), rel_tol=1e-9)  # the link scale
    print(f"version 2 served {took:.2f} s after it was published")


def test_200_concurrent_requests_of_two_models_each_get_their_own_rows(pipeline, fitted):
    for case in ("glm_binomial", "rpart_class"):
        pipeline.publish(fitted / f"{case}.rds", case.replace("_", "-"), predict_types(fitted)[case])
    served = Served(pipeline.settings, SCORER_LOG_LEVEL="DEBUG")
    glm_rows = typed(rows_of(fitted / "glm_binomial.csv"))
    tree_rows = typed(rows_of(fitted / "rpart_class.csv"))
    jobs = []
    for i in range(200):
        model, rows = ("glm-binomial", glm_rows) if i % 2 == 0 else ("rpart-class", tree_rows)
        take = [rows[(i + k) % len(rows)] for k in range(1 + i % 5)]
        jobs.append((model, take))
    # each request's own answer, one at a time
    alone = [served.post(m, b).json() for m, b in jobs]
    with ThreadPoolExecutor(50) as ex:
        together = list(ex.map(lambda job: served.post(*job).json(), jobs))
    log = served.stop()
    for (model, rows), a, t in zip(jobs, alone, together):
        assert t["model"] == model and len(t["predictions"]) == len(rows)
        assert t["predictions"] == a["predictions"]
    calls = [json.loads(line) for line in log.splitlines() if '"r_call"' in line]
    assert max(c["requests"] for c in calls) > 1, "no predict() call gathered two requests"
    assert sum(c["requests"] for c in calls) >= 400  # every request answered by some call


def test_rows_r_refuses_for_a_missing_value_are_rejected_in_gathered_requests(served, fitted):
    """ranger's predict() stops on a missing value: the row is rejected, its neighbours are
    scored, also when requests with and without such rows share one predict() call (found
    by tests/test_differential.py: the answer was 500)."""
    rows = typed(rows_of(fitted / "ranger.csv"))[:6]
    hole = dict(rows[1], **{"Sepal.Width": None})
    bodies = [[rows[0], hole, rows[2]] if i % 2 else rows[i % 6:i % 6 + 2] for i in range(40)]
    alone = [served.post("ranger", b) for b in bodies]
    with ThreadPoolExecutor(20) as ex:
        together = list(ex.map(lambda b: served.post("ranger", b), bodies))
    expected = {json.dumps(r, sort_keys=True): p for r, p in
                zip(rows, served.post("ranger", rows).json()["predictions"])}
    for body, a, t in zip(bodies, alone, together):
        assert a.status_code == t.status_code == 200, (a.text, t.text)
        assert a.json()["predictions"] == t.json()["predictions"]
        assert a.json()["rejected"] == t.json()["rejected"]
        for got in t.json()["predictions"]:
            want = expected[json.dumps(body[got["row"] - 1], sort_keys=True)]
            assert {k: v for k, v in got.items() if k != "row"} == {k: v for k, v in want.items() if k != "row"}
        if hole in body:
            assert [(x["row"], x["column"]) for x in t.json()["rejected"]] == [(2, "Sepal.Width")]
            assert "Missing data in columns: Sepal.Width" in t.json()["rejected"][0]["reason"]  # R's own words


def test_the_readmes_curl_scores_two_rows(pipeline, fitted):
    """The README's quick start, as written: its curl command's body against the server."""
    import re
    import shlex
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Scoring over HTTP", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    args = shlex.split(block[block.index("curl"):].replace("\\\n", " "))
    url, body = args[2], json.loads(args[args.index("-d") + 1])
    assert re.fullmatch(r"http://127\.0\.0\.1:8000/v1/models/infert/predict", url)
    pipeline.publish(fitted / "glm_binomial.rds", "infert", "response")  # the demo's model: infert, by R
    s = Served(pipeline.settings)
    try:
        got = s.post("infert", body).json()
    finally:
        s.stop()
    assert [p["row"] for p in got["predictions"]] == [1, 2] and got["rejected"] == []
