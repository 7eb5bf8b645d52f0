"""Shared test fixtures.

The suite runs once per backend (``KERAS_BACKEND`` = tensorflow, jax, torch); see README.
Material from ``../shared`` (spec oracles and golden fixtures) is optional: tests that need it
skip with a reason when the folder is absent, as in a plain clone.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import pytest

SHARED_DIR = Path(
    os.environ.get("KERAS_GDKD_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared")
).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """Path to ``../shared``; skips the test when it is not there."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"../shared not found at {SHARED_DIR} (a plain clone has no shared/ folder)")
    return SHARED_DIR


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from the default dtype policy and a clean name scope."""
    yield
    keras.config.set_dtype_policy("float32")
    # Without the full gc.collect() of free_memory=True, which cost 0.5-0.7 s per test (minutes
    # per suite); Python's own collector still runs.
    keras.backend.clear_session(free_memory=False)


def pytest_report_header(config):
    return f"keras {keras.__version__}, backend {keras.backend.backend()}, shared: {SHARED_DIR}"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: takes tens of seconds (runs in CI; deselect with -m 'not slow')"
    )
