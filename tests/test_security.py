"""Nothing let in: R code in data or names has no effect, secrets never reach logs,
reports or notes, and the first managed-identity token is retried."""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import pytest

from conftest import ACCOUNT_KEY, scorer_cli

PAYLOAD = '"); system("touch {marker}"); ("'


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "pwned"


def test_r_code_in_column_names_levels_and_blob_names_has_no_effect(pipeline, fitted, marker):
    pipeline.publish(fitted / "glm_poisson.rds", "pois")
    evil = PAYLOAD.format(marker=marker)
    quoted = evil.replace('"', '""')
    csv = (f'wool,tension,"{quoted}"\n'
           f'A,L,1\nB,"{quoted}",2\n' + "A,M,3\n" * 20).encode()
    pipeline.drop(f"pois/{evil.replace('/', '_')}.csv", csv)
    report = pipeline.run()
    assert report.exit_code == 0
    assert report.inputs[0].rows_rejected == 1  # the payload is only an unseen level
    assert not marker.exists()


def test_r_code_in_model_names_is_refused_before_r_sees_it(pipeline, fitted, marker):
    evil = PAYLOAD.format(marker=marker)
    with pytest.raises(Exception, match="not valid"):
        pipeline.publish(fitted / "lm.rds", evil)
    pipeline.drop(f"{evil.replace('/', '_')}/a.csv", b"x\n1\n")
    report = pipeline.run()
    assert report.inputs[0].status == "quarantined" and report.inputs[0].error["kind"] == "ModelNotFound"
    assert not marker.exists()


@pytest.mark.slow
def test_account_key_never_appears_in_logs_reports_or_error_notes(settings, fitted, store):
    scorer_cli(settings, "models", "publish", str(fitted / "lm.rds"), "--name", "cars", check=True)
    store.put_bytes(settings.input_container, "cars/ok.csv", b"wt,cyl,hp\n2.6,6,110\n")
    store.put_bytes(settings.input_container, "cars/bad.csv", b"wt\n1\n")
    store.put_bytes(settings.input_container, "nomodel/x.csv", b"wt\n1\n")
    out = scorer_cli(settings, "--debug", "run")
    assert out.returncode == 3
    texts = [out.stdout, out.stderr]
    for container in (settings.reports_container, settings.quarantine_container, settings.output_container):
        for b in store.list_names(container):
            texts.append(store.read_bytes(container, b.name).decode(errors="replace"))
    bad = scorer_cli(settings, "run", AZURE_STORAGE_CONNECTION_STRING=settings.connection_string.replace(
        "127.0.0.1", "127.0.0.9"), timeout=120)
    texts += [bad.stdout, bad.stderr]
    assert len(texts) > 6
    for text in texts:
        assert ACCOUNT_KEY not in text
        assert ACCOUNT_KEY[:20] not in text


class FlakyIdentityEndpoint(http.server.BaseHTTPRequestHandler):
    """An App Service-style managed-identity endpoint on loopback that is not ready
    for its first requests, as ACI's identity endpoint is at container start."""

    failures_left = 2
    calls = 0

    def do_GET(self):  # noqa: N802 - http.server's naming
        cls = type(self)
        cls.calls += 1
        if cls.failures_left > 0:
            cls.failures_left -= 1
            self.send_response(503)
            self.end_headers()
            return
        body = json.dumps({"access_token": "t0k3n", "expires_on": str(int(time.time()) + 3600),
                           "resource": "https://storage.azure.com", "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_first_managed_identity_token_is_retried_until_the_endpoint_is_ready(monkeypatch):
    from azure.identity import ManagedIdentityCredential

    from scorer.storage import wait_for_token

    server = http.server.HTTPServer(("127.0.0.1", 0), FlakyIdentityEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{server.server_port}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "header")
    try:
        FlakyIdentityEndpoint.failures_left, FlakyIdentityEndpoint.calls = 6, 0
        # no retries inside the credential: every retry is wait_for_token's own
        credential = wait_for_token(lambda: ManagedIdentityCredential(retry_total=0), timeout=30,
                                    sleep=lambda s: None)
        assert FlakyIdentityEndpoint.calls == 7
        assert credential.get_token("https://storage.azure.com/.default").token == "t0k3n"
    finally:
        server.shutdown()


def test_token_that_never_comes_fails_with_the_setting_to_raise():
    from scorer.errors import StorageError
    from scorer.storage import wait_for_token

    class Never:
        def get_token(self, *scopes):
            raise RuntimeError("ManagedIdentityCredential: endpoint unavailable")

    now = [0.0]
    with pytest.raises(StorageError) as err:
        wait_for_token(Never, timeout=120, sleep=lambda s: now.__setitem__(0, now[0] + s),
                       clock=lambda: now[0])
    assert "within 120 s" in str(err.value) and "endpoint unavailable" in str(err.value)
    assert err.value.details["setting"] == "SCORER_CREDENTIAL_TIMEOUT"
