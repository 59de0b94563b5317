"""Nothing lost, nothing scored twice, whatever fails: SIGKILL at seeded points, and
Blob Storage going away in the middle of a run.

Invariants checked after every fault and at the end:
- an input is in input/ (pending), archive/ (scored) or quarantine/ (with its
  note); it is never simply gone. Right after a kill between copying it out and
  deleting it, it may be in two places; the next run settles that, so at the end
  each input is in exactly one;
- an output, whenever it is visible, is complete (every row of its input);
- at the end every input was scored exactly once or quarantined.
"""

from __future__ import annotations

import io
import random
import signal
import subprocess
import sys
import time

import pyarrow.csv as pacsv
import pytest

from conftest import Azurite, Pipeline, env_for, scorer_cli

pytestmark = pytest.mark.slow

ROWS = 60_000


def make_input(i: int) -> bytes:
    return ("wt,hp\n" + "".join(f"{2 + (j % 300) / 100},{50 + (i + j) % 250}\n" for j in range(ROWS))).encode()


def check_invariants(p: Pipeline, names: list[str], final: bool = False) -> None:
    inputs, archive = set(p.names("input")), set(p.names("archive"))
    quarantine = set(p.names("quarantine"))
    for name in names:
        places = (name in inputs) + (name in archive) + (name in quarantine)
        assert places == 1 if final else places >= 1, f"{name} is in {places} places"
        if name in quarantine:
            assert name + ".error.json" in quarantine, f"{name} quarantined without its note"
    for out in p.names("output"):
        table = pacsv.read_csv(io.BytesIO(p.read("output", out)))
        assert table.num_rows == ROWS, f"partial output visible: {out} has {table.num_rows} rows"


def test_sigkill_at_50_seeded_points_loses_nothing_and_scores_once(pipeline, fitted):
    pipeline.publish(fitted / "glm_gamma.rds", "g")
    rng = random.Random(20261122)
    env = env_for(pipeline.settings)
    # How long one whole run of one input takes here, so that the kill points spread
    # over start-up, claim, download, scoring, commit and archive however fast the
    # job and the machine are (a faster job outran fixed points: 31 of 50 killed).
    names = ["g/warm-up.csv"]
    pipeline.drop(names[0], make_input(99))
    t = time.monotonic()
    scorer_cli(pipeline.settings, "run", check=True)
    whole_run = time.monotonic() - t
    kills = 0
    for round_ in range(50):
        name = f"g/r{round_:02d}.csv"
        pipeline.drop(name, make_input(round_))
        names.append(name)
        proc = subprocess.Popen([sys.executable, "-m", "scorer", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(whole_run * rng.uniform(0.1, 1.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        check_invariants(pipeline, names)
    assert kills >= 35  # most points really interrupted a run
    time.sleep(pipeline.settings.lease_seconds + 1)  # the killed runs' claims lapse
    for _ in range(3):
        report = pipeline.run()
        if not pipeline.names("input"):
            break
        time.sleep(pipeline.settings.lease_seconds + 1)
    check_invariants(pipeline, names, final=True)
    assert pipeline.names("input") == []
    scored = set(pipeline.names("archive"))
    quarantined = {n for n in pipeline.names("quarantine") if not n.endswith(".error.json")}
    assert scored | quarantined == set(names) and not scored & quarantined
    for n in quarantined:  # only inputs killed in the act MAX_ATTEMPTS times
        assert pipeline.read_json("quarantine", n + ".error.json")["kind"] == "PoisonInput"
    assert set(pipeline.names("output")) == scored
    assert report.exit_code in (0, 3)
    print(f"\nfault figures: a whole run took {whole_run:.2f} s; {kills} of 50 runs killed; "
          f"{len(scored)} inputs scored once, "
          f"{len(quarantined)} quarantined as poison, 0 lost, 0 partial outputs seen")


def test_storage_outage_mid_run_exits_4_with_inputs_intact_and_the_next_run_completes(fitted, tmp_path):
    from scorer.settings import Settings
    from scorer.storage import Store, connect

    az = Azurite(tmp_path / "azurite")  # persistent, so a restart keeps the blobs
    az.start()
    try:
        settings = Settings(connection_string=az.connection_string, lease_seconds=15)
        store = Store(connect(settings), settings)
        store.ensure_containers()
        p = Pipeline(settings, store)
        p.publish(fitted / "glm_gamma.rds", "g")
        for i in range(4):
            p.drop(f"g/{i}.csv", make_input(i) * 1)
        proc = subprocess.Popen([sys.executable, "-m", "scorer", "run"], env=env_for(settings),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            if '"input_scored"' in line:
                az.stop()  # storage goes away after the first input
                break
        rest = proc.stdout.read()
        assert proc.wait(timeout=180) == 4, rest
        assert '"storage_error"' in rest and "Traceback" not in rest
        az.start()
        names = [f"g/{i}.csv" for i in range(4)]
        check_invariants(p, names)
        assert len(p.names("input")) >= 2  # the unfinished ones are still pending
        time.sleep(16)  # a claim held when storage vanished lapses
        report = p.run()
        assert report.exit_code == 0
        assert p.names("input") == [] and sorted(p.names("archive")) == sorted(names)
        check_invariants(p, names, final=True)
        store.close()
    finally:
        az.stop()


def test_storage_outage_while_an_input_still_downloads_leaves_it_pending(fitted, tmp_path):
    """CSV inputs are parsed as they download. Storage vanishing midway is a storage
    failure (exit 4, input left pending), never taken for a malformed file."""
    from scorer.settings import Settings
    from scorer.storage import Store, connect

    az = Azurite(tmp_path / "azurite")
    az.start()
    try:
        # small batches keep the job reading slowly, far behind the end of the file
        settings = Settings(connection_string=az.connection_string, lease_seconds=15, batch_rows=2_000)
        store = Store(connect(settings), settings)
        store.ensure_containers()
        p = Pipeline(settings, store)
        p.publish(fitted / "glm_gamma.rds", "g")
        header, rows = make_input(0).split(b"\n", 1)
        p.drop("g/big.csv", header + b"\n" + rows * 60)  # 3.6M rows, about 36 MB
        proc = subprocess.Popen([sys.executable, "-m", "scorer", "run"], env=env_for(settings),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            if '"first_row_scored"' in line:
                az.stop()
                break
        rest = proc.stdout.read()
        assert proc.wait(timeout=180) == 4, rest
        # the download, an upload or the lease renewal may be the first to fail
        assert '"storage_error"' in rest
        assert '"input_quarantined"' not in rest and "Traceback" not in rest
        az.start()
        assert p.names("input") == ["g/big.csv"]
        assert p.names("output") == [] and p.names("quarantine") == []
        store.close()
    finally:
        az.stop()
