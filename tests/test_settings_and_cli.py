"""Settings are read in one place, documented, and fail by name; the command line
is thin, helpful, and never shows a traceback for a user's mistake."""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
from pathlib import Path

import pytest

from scorer import log
from scorer.cli import build_parser
from scorer.errors import ConfigError
from scorer.settings import ENV_NAMES, SETTINGS, Settings

from conftest import scorer_cli

ROOT = Path(__file__).resolve().parent.parent
CS = {"AZURE_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true"}


def test_every_setting_is_documented_in_the_settings_table():
    doc = (ROOT / "docs" / "running.md").read_text()
    table = doc.split("## Settings", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", table, re.M))
    assert documented == ENV_NAMES


def test_every_setting_field_exists_on_the_settings_object():
    fields = set(Settings.__dataclass_fields__)
    assert {s.field for s in SETTINGS} == fields
    defaults = Settings()
    for s in SETTINGS:
        assert getattr(defaults, s.field) == s.default, s.env


@pytest.mark.parametrize("env,value,words", [
    ("SCORER_MAX_REJECTED_FRACTION", "1.5", "between 0 and 1"),
    ("SCORER_BATCH_ROWS", "many", "SCORER_BATCH_ROWS='many'"),
    ("SCORER_INPUT_CONTAINER", "Input_Files", "lower-case"),
    ("SCORER_LOG_LEVEL", "loud", "DEBUG, INFO"),
    ("SCORER_LEASE_SECONDS", "5", "15-60"),
])
def test_bad_setting_is_named_with_what_is_wrong(env, value, words):
    with pytest.raises(ConfigError) as err:
        Settings.from_env({**CS, env: value})
    assert env in str(err.value) and words in str(err.value) + err.value.hint


def test_no_storage_configured_names_both_ways_to_configure_it():
    with pytest.raises(ConfigError) as err:
        Settings.from_env({})
    assert "AZURE_STORAGE_CONNECTION_STRING" in err.value.hint and "SCORER_ACCOUNT_URL" in err.value.hint


def test_containers_must_be_distinct_so_input_holds_only_pending_work():
    with pytest.raises(ConfigError, match="share a name"):
        Settings.from_env({**CS, "SCORER_ARCHIVE_CONTAINER": "input"})


def test_redacted_settings_never_show_the_connection_string():
    s = Settings.from_env({"AZURE_STORAGE_CONNECTION_STRING": "AccountKey=SECRET;"})
    assert "SECRET" not in str(s.redacted())


@pytest.mark.parametrize("secret", [
    "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=SECRET==;EndpointSuffix=core.windows.net",
    "BlobEndpoint=https://a.blob.core.windows.net;SharedAccessSignature=sv=2024&sig=SECRET",
    "https://a.blob.core.windows.net/input/x.csv?sv=2024-05-04&se=2026&sig=SECRET%3D&sp=r",
    "Authorization: bearer SECRET.token-part_2",
    "grant_type=client_credentials&client_secret=SECRET&scope=x",
])
def test_every_kind_of_secret_is_redacted_from_log_lines(secret):
    stream, root = io.StringIO(), logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        log.setup("INFO", stream=stream)
        logging.getLogger("scorer.test").info(f"could not reach {secret}", extra={"event": "x", "url": secret})
    finally:
        root.handlers[:], root.level = handlers, level
    line = json.loads(stream.getvalue())
    assert "SECRET" not in stream.getvalue() and "<redacted>" in line["msg"] and "<redacted>" in line["url"]
    clean = "POST /v1/models/glm/predict 200 in 1.2 ms (signature checked)"
    assert log.redact(clean) == clean


def _all_parsers(parser: argparse.ArgumentParser, path=("scorer",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, path + (name,))


def test_every_command_and_option_has_help_text():
    missing = []
    for path, parser in _all_parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:
                    if not choice.help:
                        missing.append(" ".join(path) + " " + choice.dest)
            elif not action.help:
                missing.append(" ".join(path) + " " + "/".join(action.option_strings or [action.dest]))
    assert missing == []


def test_bad_setting_exits_2_with_a_message_not_a_traceback(settings):
    out = scorer_cli(settings, "run", SCORER_MAX_REJECTED_FRACTION="lots")
    assert out.returncode == 2
    assert "SCORER_MAX_REJECTED_FRACTION" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_unreachable_storage_exits_4_with_inputs_untouched(settings):
    dead = settings.connection_string.replace(settings.connection_string.split(":")[-1].split("/")[0], "9")
    out = scorer_cli(settings, "run", AZURE_STORAGE_CONNECTION_STRING=dead, timeout=120)
    assert out.returncode == 4, out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert "AccountKey=Eby8" not in out.stdout + out.stderr


def test_run_subprocess_scores_and_exits_0_with_json_lines_on_stdout(settings, fitted, store):
    import json
    scorer_cli(settings, "models", "publish", str(fitted / "glm_gamma.rds"), "--name", "g", check=True)
    store.put_bytes(settings.input_container, "g/a.csv", b"wt,hp\n2.6,110\n3.2,150\n")
    out = scorer_cli(settings, "run")
    assert out.returncode == 0, out.stdout + out.stderr
    events = [json.loads(line)["event"] for line in out.stdout.splitlines()]
    assert events[0] == "run_started" and events[-1] == "run_finished"
    assert {"input_claimed", "first_row_scored", "input_scored", "input_archived", "report_written"} <= set(events)


def test_drop_and_cat_round_trip(settings, fitted, tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("wt,hp\n2.6,110\n")
    assert scorer_cli(settings, "drop", str(f), "--model", "g", "--as", "d/x.csv").returncode == 0
    out = scorer_cli(settings, "cat", f"{settings.input_container}/g/d/x.csv")
    assert out.stdout == "wt,hp\n2.6,110\n"
    bad = scorer_cli(settings, "drop", str(f), "--model", "../etc")
    assert bad.returncode == 2 and "not valid" in bad.stderr


# --- rough edges a new user met (issue 19, item 13) ---------------------------------

def test_a_fresh_account_gets_messages_not_tracebacks(settings):
    listed = scorer_cli(settings, "models", "list")
    assert listed.returncode == 0 and "no models published yet" in listed.stdout
    shown = scorer_cli(settings, "models", "show", "churn")
    assert shown.returncode == 1 and "No model named 'churn'" in shown.stderr
    latest = scorer_cli(settings, "cat", f"{settings.reports_container}/latest")
    assert latest.returncode == 2 and "No run report yet" in latest.stderr
    for out in (listed, shown, latest):
        assert "Traceback" not in out.stdout + out.stderr


def test_run_blob_naming_a_missing_blob_says_so_and_exits_2(settings, fitted, store):
    scorer_cli(settings, "models", "publish", str(fitted / "glm_gamma.rds"), "--name", "g", check=True)
    store.put_bytes(settings.input_container, "g/day.csv", b"wt,hp\n2.6,110\n")
    out = scorer_cli(settings, "run", "--blob", "g/dya.csv")
    assert out.returncode == 2, out.stdout
    assert "g/dya.csv" in out.stdout and "g/day.csv" in out.stdout  # the pending names it may have meant
    assert [b.name for b in store.list_names(settings.input_container)] == ["g/day.csv"]


def test_a_refused_publish_exits_1_and_a_malformed_connection_string_2(settings, tmp_path):
    not_a_model = tmp_path / "x.rds"
    not_a_model.write_bytes(b"not R at all")
    refused = scorer_cli(settings, "models", "publish", str(not_a_model), "--name", "x")
    assert refused.returncode == 1 and "R could not read" in refused.stderr
    bad = scorer_cli(settings, "models", "list", AZURE_STORAGE_CONNECTION_STRING="AccountName=;;=")
    assert bad.returncode == 2 and "AZURE_STORAGE_CONNECTION_STRING" in bad.stderr


def test_a_predict_error_note_counts_the_rows_read(pipeline, fitted):
    pipeline.publish(fitted / "ranger.rds", "rg")
    pipeline.drop("rg/na.csv", b"Sepal.Length,Sepal.Width,Petal.Length,Petal.Width\n,,,\n,,,\n")
    pipeline.run()
    note = pipeline.read_json("quarantine", "rg/na.csv.error.json")
    assert note["kind"] == "PredictError" and note["rows_read"] == 2


def test_a_parquet_text_column_where_numbers_are_expected_is_read_like_csv_text(pipeline, fitted):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    pipeline.publish(fitted / "glm_gamma.rds", "g")
    buf = io.BytesIO()
    pq.write_table(pa.table({"wt": ["2.6", "3.2"], "hp": ["110", "x"]}), buf)
    pipeline.drop("g/t.parquet", buf.getvalue())
    report = pipeline.run(max_rejected_fraction=0.5)
    item = report.inputs[0]
    assert (item.status, item.rows_scored, item.rows_rejected) == ("scored", 1, 1)


def test_a_logged_exception_carries_its_cause_and_its_traceback_only_with_debug():
    # issue 31: `scorer serve` logged an internal error as "internal error" and nothing else
    import io
    import json as _json
    import logging as _logging
    for debug in (False, True):
        stream = io.StringIO()
        handler = _logging.StreamHandler(stream)
        handler.setFormatter(log.JsonFormatter({"debug": True} if debug else {}))
        logger = _logging.getLogger(f"scorer.test-cause-{debug}")
        logger.addHandler(handler)
        try:
            raise KeyError("rows")
        except KeyError:
            logger.error("internal error", exc_info=True)
        line = _json.loads(stream.getvalue())
        assert line["error"] == "KeyError: 'rows'" and ("traceback" in line) is debug
