"""The dense-logit examples run end to end: ``--fast`` as a subprocess on the current backend.

Each run must exit 0 and print its results table with a row per method and finite numbers.
Quality is not asserted: ``--fast`` trains for seconds, too short for the methods to differ.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parents[1]
# --fast took 24-125 s on 2 CPU cores shared with other jobs (load 4-8); hence the margin.
TIMEOUT_S = 300
LM_ROWS = ("teacher", "CE alone", "KD T=1", "DKD T=1", "GDKD T=1", "GDKD T=4")
SEGMENTATION_ROWS = ("teacher", "CE alone", "KD", "DKD", "GDKD")


def _run_fast(script: str) -> str:
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend(), TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, str(ROOT / "examples" / script), "--fast"]
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{script} --fast took over {TIMEOUT_S} s:\n{str(error.stdout)[-3000:]}")
    assert proc.returncode == 0, f"{script} --fast failed:\n{(proc.stdout + proc.stderr)[-3000:]}"
    return proc.stdout


def _table(stdout: str, header_start: str, columns: int) -> dict[str, list[float]]:
    """{method: [numbers]} from the table that follows the line starting with `header_start`."""
    lines = stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(header_start)]
    assert starts, f"no results table in the output:\n{stdout[-3000:]}"
    rows = {}
    for line in lines[starts[-1] + 1 :]:
        if not line.strip() or line.startswith("total"):
            break
        cells = line.split()
        method, values = " ".join(cells[:-columns]), cells[-columns:]
        rows[method] = [float(v.rstrip("s")) for v in values]
    return rows


@pytest.mark.slow
def test_distill_lm_fast():
    rows = _table(_run_fast("distill_lm.py"), "method", columns=3)
    assert tuple(rows) == LM_ROWS
    for method, (bits, perplexity, seconds) in rows.items():
        assert all(math.isfinite(v) for v in (bits, perplexity, seconds)), (method, rows)
        assert bits > 0 and perplexity > 1 and seconds > 0, (method, rows)


@pytest.mark.slow
def test_distill_segmentation_fast():
    rows = _table(_run_fast("distill_segmentation.py"), "method", columns=3)
    assert tuple(rows) == SEGMENTATION_ROWS
    for method, (miou, pixel_accuracy, seconds) in rows.items():
        assert 0.0 <= miou <= 1.0 and 0.0 <= pixel_accuracy <= 1.0, (method, rows)
        assert math.isfinite(seconds) and seconds > 0, (method, rows)
