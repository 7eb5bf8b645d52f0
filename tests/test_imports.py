"""keras_gdkd imports and works on one backend with the other two frameworks absent."""

import subprocess
import sys
from pathlib import Path

import keras

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys

BLOCKED = set(sys.argv[1].split(","))
import numpy as np
import keras_gdkd
from keras_gdkd import models, presets, optimizers, parallel

s = np.random.default_rng(0).normal(size=(4, 10)).astype("float32")
assert float(keras_gdkd.gdkd(s, s[::-1].copy(), k=3)) > 0
model = models.get_model("resnet8", num_classes=10)
distiller = keras_gdkd.Distiller(model, models.get_model("resnet8", num_classes=10))
assert not BLOCKED & set(m.split(".")[0] for m in sys.modules)
print("ok")
"""


def test_the_library_needs_only_the_active_backend(tmp_path):
    backend = keras.backend.backend()
    blocked = {"jax", "torch", "tensorflow"} - {backend}
    if backend != "tensorflow":
        blocked |= {"tensorflow_datasets"}
    # Packages that fail to import, found first on the path: what an install without them does.
    for name in blocked:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('{name} not installed')")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, ",".join(sorted(blocked))],
        env={"KERAS_BACKEND": backend, "PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
