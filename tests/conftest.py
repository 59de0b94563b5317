"""Shared fixtures: a real Azurite, real R, and storage isolated per test.

Azurite is started once per test session on a free loopback port, in memory, from
the project's own node_modules (scripts/setup installs it). Each test gets its own
set of containers (random suffix), so tests never see each other's blobs.
The models under test are fitted by R itself (tests/r/fit_models.R) on data that
ships with R, together with R's own predictions to compare against.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The environment as it was before embedded R started in this process: R adds its
# own LD_LIBRARY_PATH, which would break other Python builds in subprocesses.
CLEAN_ENV = dict(os.environ)
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite-blob"
from scorer.twin.azurite import AZURITE_KEY as ACCOUNT_KEY, azurite_connection_string, port_answering  # noqa: E402,F401 - ACCOUNT_KEY is for the tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Azurite:
    """A private Azurite process; ``stop``/``start`` simulate a storage outage."""

    def __init__(self, workdir: Path, in_memory: bool = False):
        self.port = _free_port()
        self.workdir = workdir
        self.in_memory = in_memory  # no disk: for bench/, where the emulator's own work should weigh least
        self.proc: subprocess.Popen | None = None
        self.connection_string = azurite_connection_string(self.port)

    def start(self) -> None:
        if not AZURITE_BIN.exists():
            pytest.fail(f"{AZURITE_BIN} is missing: run scripts/setup (it installs Azurite from npm)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [str(AZURITE_BIN), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
             *(["--inMemoryPersistence"] if self.in_memory else ["--location", str(self.workdir)]),
             "--skipApiVersionCheck", "--loose", "--disableTelemetry"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not port_answering(self.port):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("Azurite did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory):
    az = Azurite(tmp_path_factory.mktemp("azurite"))
    az.start()
    yield az
    az.stop()


@pytest.fixture
def settings(azurite):
    from scorer.settings import Settings

    tag = uuid.uuid4().hex[:8]
    return Settings(
        connection_string=azurite.connection_string,
        models_container=f"models-{tag}", input_container=f"input-{tag}",
        output_container=f"output-{tag}", archive_container=f"archive-{tag}",
        quarantine_container=f"quarantine-{tag}", reports_container=f"reports-{tag}", shadow_container=f"shadow-{tag}",
        labels_container=f"labels-{tag}",
        lease_seconds=15,
    )


@pytest.fixture
def store(settings):
    from scorer.storage import Store, connect

    st = Store(connect(settings), settings)
    st.ensure_containers()
    yield st
    st.close()


@pytest.fixture(scope="session")
def fitted(tmp_path_factory) -> Path:
    """Directory with every model family fitted by R, its new data and R's predictions."""
    out = tmp_path_factory.mktemp("models")
    subprocess.run(["Rscript", str(ROOT / "tests" / "r" / "fit_models.R"), str(out)], check=True,
                   capture_output=True, env=CLEAN_ENV)
    return out


def env_for(settings, **extra) -> dict:
    """The environment a `scorer` subprocess needs to use these settings."""
    from scorer.settings import SETTINGS

    env = {k: v for k, v in CLEAN_ENV.items() if not k.startswith("SCORER_")}
    for s in SETTINGS:
        value = getattr(settings, s.field)
        if value is not None:  # a tuple (SCORER_NA_VALUES) as its tokens, or none
            env[s.env] = (",".join(value) or "none") if isinstance(value, tuple) else str(value)
    env.update(extra)
    return env


def scorer_cli(settings, *args, check=False, timeout=300, **extra_env) -> subprocess.CompletedProcess:
    """Run the real `scorer` command line in a subprocess."""
    return subprocess.run([sys.executable, "-m", "scorer", *args], env=env_for(settings, **extra_env),
                          capture_output=True, text=True, check=check, timeout=timeout)


@dataclasses.dataclass
class Pipeline:
    """Test helper over one isolated set of containers."""

    settings: object
    store: object

    def publish(self, path: Path, name: str, predict_type: str | None = None, **options) -> dict:
        """Publish a model; ``options`` are scorer.models.cards.Options fields (predict_args=[...], ...)."""
        from scorer.models.cards import Options
        from scorer.models.registry import Registry
        return Registry(self.store).publish(Path(path), name, Options(predict_type=predict_type, **options)).card

    def drop(self, name: str, data: bytes) -> None:
        self.store.put_bytes(self.settings.input_container, name, data)

    def run(self, **overrides):
        """One job run in this process (R is embedded once per process)."""
        from scorer.batch.job import Job
        s = dataclasses.replace(self.settings, **overrides) if overrides else self.settings
        return Job(s, self.store).run()

    def names(self, which: str) -> list[str]:
        return [b.name for b in self.store.list_names(getattr(self.settings, f"{which}_container"))]

    def read(self, which: str, name: str) -> bytes:
        return self.store.read_bytes(getattr(self.settings, f"{which}_container"), name)

    def read_json(self, which: str, name: str) -> dict:
        return json.loads(self.read(which, name))

    def reports(self) -> list[dict]:
        """The run reports (reports/<run id>.json, beside each its .html page), oldest first."""
        return [self.read_json("reports", n) for n in sorted(self.names("reports"))
                if n.endswith(".json") and "/" not in n]  # not the models' histories under models/


@pytest.fixture
def pipeline(settings, store) -> Pipeline:
    return Pipeline(settings, store)


# Hypothesis keeps the failing cases it finds in the repository (tests/hypothesis-db), so
# that a case found once, here or in CI, is tried first in every later run.
from hypothesis import settings as _hypothesis_settings  # noqa: E402
from hypothesis.database import DirectoryBasedExampleDatabase  # noqa: E402

_hypothesis_settings.register_profile("scorer", database=DirectoryBasedExampleDatabase(str(ROOT / "tests" / "hypothesis-db")))
_hypothesis_settings.load_profile("scorer")


#: the longest files, first: with two test processes (scripts/test), each starts on one of
#: them and the rest of the suite runs beside, instead of after (the start-up loop alone is
#: some 5 to 13 minutes)
LONGEST_FIRST = ("test_startup.py", "test_faults.py")


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
