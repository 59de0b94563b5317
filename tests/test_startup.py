"""Start-up never crashes (issue 17): R starts on the main thread before any other
thread exists, and a thousand consecutive `scorer run` starts, some stopped with
SIGTERM during start-up, all end cleanly."""

from __future__ import annotations

import json

import pytest

from startup_loop import run_loop

from conftest import scorer_cli


def test_r_starts_on_the_main_thread_before_any_other_thread(pipeline, fitted):
    pipeline.publish(fitted / "glm_gamma.rds", "g")
    pipeline.drop("g/a.csv", b"wt,hp\n2.6,110\n")
    proc = scorer_cli(pipeline.settings, "run", SCORER_LOG_LEVEL="DEBUG")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    (started,) = [e for e in events if e["event"] == "r_started"]
    assert started["on_thread"] == "MainThread" and started["other_threads"] == []
    names = [e["event"] for e in events]
    assert names.index("r_started") < names.index("run_started")


@pytest.mark.slow
def test_a_thousand_starts_in_a_row_never_crash(azurite, fitted):
    """About 5 minutes. The loop that found the crash: the code before the fix
    died of SIGSEGV 3 times in 1,500 starts of this loop."""
    tally = run_loop(1000, azurite.connection_string, fitted / "glm_gamma.rds")
    print(f"\nstart-up figures: {json.dumps(tally.as_dict() | {'crash_details': None})}")
    assert tally.starts == 1000
    assert tally.crashes == [], tally.crashes[:3]
    assert tally.sigterm_sent > 100  # SIGTERM during start-up really happened in the loop
