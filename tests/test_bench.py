"""The bench scripts the README names keep working: their helpers that touch scorer's
own API run here against real Azurite and R (timings stay in bench/, never in tests)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", ["scoring", "serving", "image"])
def test_each_bench_script_starts(script):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / f"{script}.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_image_benchs_publish_step_publishes_what_it_scores(pipeline, fitted):
    name, data = bench_module("image").prepare(fitted, "glm_binomial", pipeline.store, pipeline.settings)
    assert f"{name}/v1/card.json" in pipeline.names("models")
    assert data.startswith((fitted / "glm_binomial.csv").read_bytes()[:20])
