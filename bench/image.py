"""The scoring image: its size and its cold start, against the budgets of issue 3.

    .venv/bin/python bench/image.py [--image scorer:dev] [--runs 5] [--family glm_binomial ...]

Size: the image's uncompressed size as the engine reports it, against the 450 MB
budget and the 837 MB of rocker/r-ver (the figure in the issue; not measured here),
and the size of each layer.

Cold start: Azure bills an Azure Container Instances group from the start of its
image pull, and the job's work starts at its first scored row. For each model
family: a private Azurite with the model published (fitted by tests/r/fit_models.R)
and one small input pending; the time from launching `<engine> run` to the "ts" of
the job's `first_row_scored` log line. The container shares the host's kernel, so
its clock is the host's. Two baselines are measured in the same run:

    engine       `<engine> run` until a process inside the container runs
                 (the engine's own share, which Azure replaces with its own)
    --version    until `scorer --version` has printed: Python and scorer start

The first run of each family follows a drop of the page cache when that is
permitted (root): every file then comes from disk, the worst case for a freshly
pulled image; the rest are warm. The load average is printed at the start and the
end: on a shared 2-core machine other work moves these figures a lot.
Needs: the image (scripts/build-image), podman or docker (docker/engine.sh),
R with the model packages and Azurite (scripts/setup). Build first; this script
does not.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZE_BUDGET_MB = 450
ROCKER_R_VER_MB = 837
COLD_START_BUDGET_S = 1.5
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def engine() -> tuple[list[str], dict[str, str]]:
    """The engine command line and environment, from docker/engine.sh."""
    out = subprocess.run(["bash", str(ROOT / "docker" / "engine.sh")], check=True,
                         capture_output=True, text=True).stdout.split("\n")
    env = dict(os.environ)
    cmd = []
    for line in filter(None, out):
        if line.startswith("CONTAINERS_CONF="):
            env["CONTAINERS_CONF"] = line.partition("=")[2]
        else:
            cmd.append(line)
    return cmd, env


def image_size(eng: list[str], env: dict, image: str) -> tuple[int, list[tuple[int, str]]]:
    total = int(subprocess.run([*eng, "image", "inspect", "--format", "{{.Size}}", image], env=env,
                               check=True, capture_output=True, text=True).stdout.strip())
    if eng[0] == "podman":
        rows = json.loads(subprocess.run([*eng, "history", "--format", "json", image], env=env,
                                         check=True, capture_output=True, text=True).stdout)
        layers = [(int(r["size"]), r["CreatedBy"]) for r in rows]
    else:
        out = subprocess.run([*eng, "history", "--human=false", "--no-trunc", "--format",
                              "{{.Size}}\t{{.CreatedBy}}", image], env=env,
                             check=True, capture_output=True, text=True).stdout
        layers = [(int(s), c) for s, _, c in (line.partition("\t") for line in out.splitlines())]
    return total, [(size, cmd) for size, cmd in reversed(layers) if size > 0]


def describe_layer(created_by: str) -> str:
    text = " ".join(created_by.replace("/bin/sh -c ", "").replace("#(nop) ", "").split())
    return text[:90]


class Azurite:
    """A private, throw-away Azurite on a free port (the project's own from npm)."""

    def __init__(self, workdir: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.connection_string = (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:{self.port}/devstoreaccount1;")
        binary = ROOT / "node_modules" / ".bin" / "azurite-blob"
        if not binary.exists():
            sys.exit(f"{binary} is missing: run scripts/setup")
        self.proc = subprocess.Popen(
            [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location",
             str(workdir), "--skipApiVersionCheck", "--loose", "--disableTelemetry"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    sys.exit("Azurite did not start")
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def first_output_s(eng, env, image, *args, entrypoint=None) -> float:
    """Seconds from launching the container to its first line of output."""
    cmd = [*eng, "run", "--rm", "--network", "host"]
    if entrypoint:
        cmd += ["--entrypoint", entrypoint]
    t0 = time.time()
    proc = subprocess.Popen([*cmd, image, *args], env=env, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    t = time.time()
    proc.communicate()
    if proc.returncode != 0 or not line:
        sys.exit(f"{' '.join(cmd)} {image} {' '.join(args)} failed with status {proc.returncode}")
    return t - t0


def engine_start_s(eng, env, image) -> float:
    """Seconds from launching the container to the moment a process in it runs,
    by the clock the process reads (date, inside the container)."""
    cmd = [*eng, "run", "--rm", "--network", "host", "--entrypoint", "/usr/bin/date", image, "+%s.%N"]
    t0 = time.time()
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip()) - t0


def cold_start_s(eng, env, image, connection_string: str) -> tuple[float, float, int]:
    """(seconds to first row scored, seconds to exit, exit status) of one `scorer run`."""
    run_env = dict(env, AZURE_STORAGE_CONNECTION_STRING=connection_string)
    cmd = [*eng, "run", "--rm", "--network", "host", "-e", "AZURE_STORAGE_CONNECTION_STRING", image, "run"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=run_env, stdout=subprocess.PIPE, text=True)
    first = None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "first_row_scored" and first is None:
            first = datetime.fromisoformat(record["ts"]).timestamp() - t0
    status = proc.wait()
    ended = time.time() - t0
    if first is None:
        sys.exit("the job logged no first_row_scored event:\n" + "".join(lines[-20:]))
    return first, ended, status


def prepare(fitted: Path, family: str, store, settings) -> tuple[str, bytes]:
    """Publish ``family``'s model; return its name and the input to drop."""
    from scorer.models.cards import Options
    from scorer.models.registry import Registry

    types = {}
    for line in (fitted / "cases.txt").read_text().splitlines():
        parts = line.split()
        types[parts[0]] = parts[1] if len(parts) > 1 else None
    name = family.replace("_", "-")
    Registry(store).publish(fitted / f"{family}.rds", name, Options(predict_type=types[family]))
    return name, (fitted / f"{family}.csv").read_bytes()


def summary(values: list[float]) -> str:
    return (f"median {statistics.median(values):.3f} s  min {min(values):.3f}  max {max(values):.3f}"
            f"  (n={len(values)})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default="scorer:dev")
    p.add_argument("--runs", type=int, default=5, help="runs per measurement (default 5)")
    p.add_argument("--family", action="append",
                   help="model families from tests/r/fit_models.R (default: glm_binomial and ranger, "
                        "the lightest and the heaviest R packages to load)")
    args = p.parse_args()
    families = args.family or ["glm_binomial", "ranger"]
    eng, env = engine()
    # Other work on the machine slows every figure below; say how busy it was.
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start")

    total, layers = image_size(eng, env, args.image)
    mb = total / 1e6
    print(f"image {args.image} ({eng[0]})")
    print(f"  size          {total} bytes = {mb:.1f} MB; budget {SIZE_BUDGET_MB} MB "
          f"({mb / SIZE_BUDGET_MB:.0%} of it, {'within' if mb <= SIZE_BUDGET_MB else 'OVER'}); "
          f"rocker/r-ver {ROCKER_R_VER_MB} MB (issue 3's figure): {mb / ROCKER_R_VER_MB:.2f}x")
    for size, created_by in layers:
        print(f"  {size / 1e6:8.1f} MB  {describe_layer(created_by)}")

    print("\nbaselines (same run)")
    starts = [engine_start_s(eng, env, args.image) for _ in range(args.runs)]
    print(f"  engine: run -> process in the container runs     {summary(starts)}")
    versions = [first_output_s(eng, env, args.image, "--version") for _ in range(args.runs)]
    print(f"  run -> `scorer --version` printed               {summary(versions)}")

    from scorer.settings import Settings
    from scorer.storage import Store, connect

    with tempfile.TemporaryDirectory(prefix="bench-image-") as tmp:
        fitted = Path(tmp) / "fitted"
        subprocess.run(["Rscript", str(ROOT / "tests" / "r" / "fit_models.R"), str(fitted)], check=True,
                       capture_output=True)
        azurite = Azurite(Path(tmp) / "azurite")
        try:
            settings = Settings(connection_string=azurite.connection_string)
            store = Store(connect(settings), settings)
            store.ensure_containers()
            print(f"\ncold start: run -> first row scored (budget {COLD_START_BUDGET_S} s), one small "
                  "input pending")
            for family in families:
                name, data = prepare(fitted, family, store, settings)
                firsts, exits = [], []
                cold = None
                for i in range(args.runs):
                    store.put_bytes(settings.input_container, f"{name}/bench-{i}.csv", data)
                    dropped = i == 0 and drop_page_cache()
                    first, ended, status = cold_start_s(eng, env, args.image, azurite.connection_string)
                    if status != 0:
                        sys.exit(f"{family}: the job exited with status {status}")
                    if dropped:
                        cold = first
                    else:
                        firsts.append(first)
                    exits.append(ended)
                verdict = "within" if statistics.median(firsts) <= COLD_START_BUDGET_S else "OVER"
                print(f"  {family:14} warm {summary(firsts)}  {verdict} budget; "
                      f"{statistics.median(firsts) / statistics.median(versions):.1f}x `--version`")
                if cold is not None:
                    print(f"  {'':14} after dropping the page cache: {cold:.3f} s")
                print(f"  {'':14} run -> container exited: median {statistics.median(exits):.3f} s")
            store.close()
        finally:
            azurite.stop()
    print(f"machine: load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
