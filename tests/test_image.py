"""The scoring image does in a container what the job does on the host.

Each test runs the image the way Azure does, through scripts/run-image: settings
only from the environment, against this session's Azurite (the container shares
the host's network), exit status = the job's. The image comes from
scripts/build-image (its layer cache makes an up-to-date image a few seconds'
work); set SCORER_TEST_IMAGE to test an image built elsewhere instead.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import signal
import subprocess

import pytest

from conftest import ROOT, env_for

pytestmark = [pytest.mark.container, pytest.mark.slow]  # builds and runs the image


def _engine() -> tuple[list[str], dict[str, str]] | None:
    """The engine command and environment docker/engine.sh chooses; None if absent."""
    out = subprocess.run(["bash", str(ROOT / "docker" / "engine.sh")], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    env = dict(os.environ)
    cmd = []
    for line in filter(None, out.stdout.splitlines()):
        if line.startswith("CONTAINERS_CONF="):
            env["CONTAINERS_CONF"] = line.partition("=")[2]
        else:
            cmd.append(line)
    return (cmd, env) if shutil.which(cmd[0]) else None


@pytest.fixture(scope="session")
def engine():
    found = _engine()
    if found is None:
        pytest.skip("no container engine (a docker that answers `docker info`, or podman): "
                    "run scripts/setup-containers")
    return found


@pytest.fixture(scope="session")
def image(engine) -> str:
    tag = os.environ.get("SCORER_TEST_IMAGE")
    if tag:
        return tag
    tag = "scorer:dev"
    build = subprocess.run([str(ROOT / "scripts" / "build-image"), tag], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.fail(f"scripts/build-image failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}")
    return tag


def run_image(settings, image: str, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    env = env_for(settings, SCORER_IMAGE=image, **extra_env)
    return subprocess.run([str(ROOT / "scripts" / "run-image"), *args], env=env, capture_output=True,
                          text=True, timeout=300)


def in_image(engine, image: str, *command: str) -> str:
    """stdout of ``command`` run in the image instead of the job."""
    cmd, env = engine
    out = subprocess.run([*cmd, "run", "--rm", "--entrypoint", command[0], image, *command[1:]], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def events(stdout: str) -> list[str]:
    """The job's log: every stdout line must be a JSON object with an event."""
    return [json.loads(line)["event"] for line in stdout.splitlines()]


def csv_rows(data: bytes) -> list[dict[str, str]]:
    # Not csv.DictReader: it skips blank lines, which in a one-column file are rows of NA.
    header, *rows = csv.reader(io.StringIO(data.decode()))
    return [dict(zip(header, row or [""] * len(header))) for row in rows]


def assert_same_predictions(got: list[dict], expected: list[dict], case: str) -> None:
    assert len(got) == len(expected), case
    for i, (g, e) in enumerate(zip(got, expected)):
        for column, want in e.items():
            have = g[column]
            try:
                same = math.isclose(float(have), float(want), rel_tol=1e-12, abs_tol=1e-15)
            except ValueError:  # labels, and NA written as ""
                same = have == want
            assert same, f"{case} row {i + 1} {column}: image gave {have!r}, R on the host {want!r}"


def cases(fitted) -> list[tuple[str, str | None]]:
    out = []
    for line in (fitted / "cases.txt").read_text().splitlines():
        parts = line.split()
        out.append((parts[0], parts[1] if len(parts) > 1 else None))
    return out


def test_container_scores_every_model_family_exactly_as_r_on_the_host(pipeline, fitted, image):
    # One run over every family: the image's R, packages and rpy2 build must give
    # the host's predictions to double precision, or the two R installs drifted.
    names = {}
    for case, predict_type in cases(fitted):
        card = pipeline.publish(fitted / f"{case}.rds", case.replace("_", "-"), predict_type)
        names[case] = f"{card['name']}/day.csv"
        pipeline.drop(names[case], (fitted / f"{case}.csv").read_bytes())

    run = run_image(pipeline.settings, image, SCORER_LOG_LEVEL="DEBUG")

    failed = [line for line in run.stdout.splitlines() if '"input_quarantined"' in line or '"level": "ERROR"' in line]
    assert run.returncode == 0, "\n".join(failed) or run.stdout[-3000:] + run.stderr
    assert events(run.stdout)[-1] == "run_finished"
    # scorer.R's functions byte-compiled at build time (scorer/r/compile.R), not by R's JIT at every start
    (started,) = [e for e in map(json.loads, run.stdout.splitlines()) if e["event"] == "r_started"]
    assert started["r_functions"] == "compiled"
    for case, blob in names.items():
        expected = csv_rows((fitted / f"{case}.expected.csv").read_bytes())
        assert_same_predictions(csv_rows(pipeline.read("output", blob)), expected, case)
    assert pipeline.names("input") == []
    assert sorted(pipeline.names("archive")) == sorted(names.values())
    (report,) = pipeline.reports()
    assert report["exit_code"] == 0
    assert {i["status"] for i in report["inputs"]} == {"scored"}


def test_container_exits_3_with_a_bad_input_quarantined_and_the_report_written(pipeline, fitted, image):
    pipeline.publish(fitted / "glm_binomial.rds", "infert", "response")
    pipeline.drop("infert/bad.csv", b"age,parity,Education,spontaneous\n26,6,0-5yrs,2\n")

    run = run_image(pipeline.settings, image)

    assert run.returncode == 3, run.stdout[-3000:] + run.stderr
    assert "input_quarantined" in events(run.stdout)
    assert pipeline.names("input") == []
    assert {"infert/bad.csv", "infert/bad.csv.error.json"} <= set(pipeline.names("quarantine"))
    assert pipeline.read_json("quarantine", "infert/bad.csv.error.json")["kind"] == "SchemaError"
    (report,) = pipeline.reports()
    assert report["exit_code"] == 3
    assert [(i["blob"], i["status"]) for i in report["inputs"]] == [("infert/bad.csv", "quarantined")]


def test_container_stops_on_sigterm_with_status_130_leaving_unfinished_inputs_pending(pipeline, fitted, image):
    # Azure stops a container group with SIGTERM. The job runs under tini (PID 1),
    # which passes the signal on; the job stops at a safe point and says so.
    pipeline.publish(fitted / "glm_binomial.rds", "infert", "response")
    rows = (fitted / "glm_binomial.csv").read_bytes()
    header, _, body = rows.partition(b"\n")
    data = header + b"\n" + body * 2000
    for i in range(20):
        pipeline.drop(f"infert/part-{i:02d}.csv", data)
    env = env_for(pipeline.settings, SCORER_IMAGE=image)
    proc = subprocess.Popen([str(ROOT / "scripts" / "run-image")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(json.loads(line)["event"])
        if seen[-1] == "input_claimed":
            # run-image has exec'd the engine's `run`, which forwards the signal.
            proc.send_signal(signal.SIGTERM)
            break
    rest, err = proc.communicate(timeout=120)
    seen += events(rest)

    assert proc.returncode == 130, (seen, err)
    assert "run_interrupted" in seen
    (report,) = pipeline.reports()
    assert report["exit_code"] == 130
    pending = [i["blob"] for i in report["inputs"] if i["status"] == "left_pending"]
    assert pending and set(pending) <= set(pipeline.names("input"))
    assert len(pipeline.names("input")) + len(pipeline.names("archive")) == 20


def test_container_exits_2_naming_a_bad_setting_from_the_environment(settings, image):
    run = run_image(settings, image, SCORER_LEASE_SECONDS="5")

    assert run.returncode == 2, run.stdout + run.stderr
    assert "SCORER_LEASE_SECONDS" in run.stderr
    assert "Traceback" not in run.stderr


def test_image_r_packages_are_the_hosts_versions(engine, image):
    # One list (docker/r-packages.txt) for host and image: the same Debian
    # versions must come out of it on both, or CI tests a different R.
    listed = []
    for line in (ROOT / "docker" / "r-packages.txt").read_text().splitlines():
        listed += line.partition("#")[0].split()
    fmt = "${Package} ${Version}\n"
    host = subprocess.run(["dpkg-query", "-W", "-f", fmt, *listed], capture_output=True, text=True)
    assert host.returncode == 0, f"the host lacks some of docker/r-packages.txt (run scripts/setup): {host.stderr}"
    assert in_image(engine, image, "dpkg-query", "-W", "-f", fmt, *listed) == host.stdout


def test_image_runs_as_a_user_without_compilers_or_pip(engine, image):
    out = in_image(engine, image, "python", "-c",
                   "import os, shutil; print(os.getuid(), [t for t in "
                   "('gcc', 'cc', 'c++', 'gfortran', 'pip', 'pip3') if shutil.which(t)])")
    uid, tools = out.split(" ", 1)
    assert uid != "0"
    assert tools.strip() == "[]"


def test_image_config_holds_no_credentials(engine, image):
    cmd, env = engine
    inspect = subprocess.run([*cmd, "image", "inspect", image], env=env, capture_output=True, text=True,
                             check=True).stdout
    history = subprocess.run([*cmd, "history", "--no-trunc", image], env=env, capture_output=True,
                             text=True, check=True).stdout
    for text in (inspect, history):
        for marker in ("AccountKey", "AZURE_STORAGE_CONNECTION_STRING", "SharedAccessSignature", "sig="):
            assert marker not in text


@pytest.mark.slow
def test_an_image_built_with_r_packages_runs_a_prophet_forecast_function(pipeline, engine):
    """scripts/build-image --r-packages prophet,forecast: the image loads prophet (whose
    RcppParallel asks dpkg-architecture, absent from the image, for libtbb's directory)
    and a forecast fitted in the container equals the host's."""
    tag = "scorer:forecast-test"
    build = subprocess.run([str(ROOT / "scripts" / "build-image"), tag, "--r-packages", "prophet,forecast"],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    pipeline.publish(ROOT / "examples" / "forecast_prophet.R", "daily", params=["horizon=14"])
    rows = [f"2024-01-{d:02d},{50 + 8 * math.sin(d * 2 * math.pi / 7):.6f}" for d in range(1, 32)]
    data = ("date,y\n" + "\n".join(rows) + "\n").encode()
    pipeline.drop("daily/shop.csv", data)
    run = run_image(pipeline.settings, tag)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr
    in_container = csv_rows(pipeline.read("output", "daily/shop.csv"))
    assert len(in_container) == 14 and in_container[0]["date"] == "2024-02-01"
    # the same function on the host
    pipeline.drop("daily/shop.csv", data)
    assert pipeline.run().inputs[0].status == "scored"
    on_host = csv_rows(pipeline.read("output", "daily/shop.csv"))
    assert [r["date"] for r in in_container] == [r["date"] for r in on_host]
    # prediction agreed to 1e-15 here; lower/upper (from prophet's simulated draws, the
    # same seed) differed in the 11th digit between image and host (measured 1e-11).
    for got, want in zip(in_container, on_host):
        for column in ("prediction", "lower", "upper"):
            assert math.isclose(float(got[column]), float(want[column]), rel_tol=1e-9), (column, got, want)


def test_the_image_serves_http_with_the_same_command(pipeline, fitted, image):
    """`scorer serve` is a command of the same image: started the way the Container App
    starts it (args serve --host 0.0.0.0 --port N), it scores rows as the host does."""
    import time

    import requests

    from conftest import _free_port

    pipeline.publish(fitted / "glm_binomial.rds", "infert", "response")
    port = _free_port()
    env = env_for(pipeline.settings, SCORER_IMAGE=image)
    proc = subprocess.Popen([str(ROOT / "scripts" / "run-image"), "serve", "--host", "0.0.0.0", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the image's server did not become ready"
            time.sleep(0.2)
        rows = csv_rows((fitted / "glm_binomial.csv").read_bytes())
        body = [{k: (float(v) if k != "education" else v) for k, v in r.items()} for r in rows]
        got = requests.post(f"http://127.0.0.1:{port}/v1/models/infert/predict", json=body, timeout=30).json()
        expected = csv_rows((fitted / "glm_binomial.expected.csv").read_bytes())
        assert_same_predictions([{"prediction": p["prediction"]} for p in got["predictions"]], expected, "serve")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out[-3000:]
