"""Smoke tests of the benchmark scripts: each ``--smoke`` run exits 0 and writes a sane JSON.

Every script runs as a subprocess on the current backend, which it takes from ``KERAS_BACKEND``
(no ``--backend``). The subprocesses start together (their imports dominate) and each test waits
for its own. No timing is asserted.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPTS = ("step", "loss", "gpu", "data")
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory) -> dict:
    """Start every ``--smoke`` run at once; {script: (Popen, json path)}."""
    backend = keras.backend.backend()
    tmp = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    runs = {}
    for name in SCRIPTS:
        out = tmp / f"{name}.json"
        # No --backend: the scripts default to the active Keras backend (KERAS_BACKEND here).
        cmd = [sys.executable, str(BENCH / f"{name}.py"), "--smoke", "--json", str(out)]
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        runs[name] = (proc, out)
    yield runs
    for proc, _ in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _finish(runs: dict, name: str) -> tuple[dict, str]:
    proc, out = runs[name]
    try:
        stdout, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, _ = proc.communicate()
        pytest.fail(f"{name}.py --smoke timed out:\n{stdout[-3000:]}")
    assert proc.returncode == 0, f"{name}.py --smoke failed:\n{stdout[-3000:]}"
    assert out.exists(), f"{name}.py wrote no JSON:\n{stdout[-3000:]}"
    return json.loads(out.read_text()), stdout


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_step_smoke(smoke_runs):
    report, stdout = _finish(smoke_runs, "step")
    assert report["config"]["backend"] == keras.backend.backend()
    assert report["config"]["smoke"] is True
    assert set(report["results"]) == {"student", "teacher", "kd", "gdkd"}
    for kind, result in report["results"].items():
        for key in ("ms_per_step", "images_per_s", "first_step_ms", "compile_and_warmup_s"):
            assert _positive(result[key]), (kind, key, result[key])
        assert isinstance(result["jit_compile"], bool)
    assert set(report["ratios"]) >= {"gdkd_over_student_plus_teacher", "gdkd_over_kd"}
    assert all(_positive(v) for v in report["ratios"].values())
    assert "(d) Distiller GDKD step" in stdout


def test_loss_smoke(smoke_runs):
    report, stdout = _finish(smoke_runs, "loss")
    assert report["config"]["backend"] == keras.backend.backend()
    (row,) = report["results"]
    assert (row["batch"], row["classes"]) == (8, 10)
    assert set(row["ms"]) == {"kd", "dkd", "gdkd", "gdkd3"}
    assert all(_positive(v) for v in row["ms"].values())
    assert set(row["ratio_to_kd"]) == {"dkd", "gdkd", "gdkd3"}
    assert all(_positive(v) for v in row["ratio_to_kd"].values())
    assert "gdkd/kd" in stdout


def test_gpu_smoke(smoke_runs):
    report, stdout = _finish(smoke_runs, "gpu")
    assert isinstance(report["gpu"], bool)
    if not report["gpu"]:
        assert "No GPU" in stdout
        assert report["runs"] == []
    else:
        assert report["runs"], "a GPU was found but nothing ran"
        for run in report["runs"]:
            assert "error" not in run, run
            for result in run["report"]["results"].values():
                assert _positive(result["images_per_s"])


def test_data_smoke(smoke_runs):
    report, _ = _finish(smoke_runs, "data")
    assert report["smoke"] is True
    assert len(report["results"]) >= 4
    for row in report["results"]:
        assert row["batches"] > 0
        assert _positive(row["images_per_s"]) and _positive(row["images_per_s_per_core"])


@pytest.mark.slow  # three fresh interpreters on the CPU backends (20-50 s)
def test_loss_memory_smoke(tmp_path):
    """``loss.py --memory --smoke``: peak memory of kd, dkd and gdkd on a tiny dense case."""
    out = tmp_path / "memory.json"
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, str(BENCH / "loss.py"), "--memory", "--smoke", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"loss.py --memory --smoke failed:\n{output[-3000:]}"
    report = json.loads(out.read_text())
    assert report["config"]["memory"] is True
    assert report["config"]["backend"] == keras.backend.backend()
    assert report["config"]["shape"] == [2, 4]
    (row,) = report["results"]
    assert row["classes"] == 50
    assert set(row["mib"]) == {"kd", "dkd", "gdkd"}
    # Resident-memory deltas of a 1.6 KB case can round to 0 pages; never negative or NaN.
    assert all(math.isfinite(v) and v >= 0 for v in row["mib"].values())
    if keras.backend.backend() == "jax":  # the compiled analysis counts every buffer exactly
        assert all(v > 0 for v in row["mib"].values())
    assert "gdkd/kd" in proc.stdout and "peak memory" in proc.stdout
