"""keras_gdkd imports and works on one backend with the other two frameworks absent, and
TensorFlow (the data pipelines) loads beside the active backend without crashing."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import pytest

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


# TensorFlow beside the active backend, in one process: keras_gdkd.data is tf.data on every
# backend. A CUDA build of torch brings triton, and triton imported after TensorFlow kills the
# process (SIGSEGV); torch.optim and torch.compile import it through torch._dynamo, and so does
# Keras's torch backend. A subprocess turns such a crash into a failure that names the cause.
TF_BESIDE_BACKEND = """
import importlib.util
import sys

if sys.argv[1] == "tensorflow-first":
    import tensorflow
import keras  # the active backend: keras_gdkd's own order is the backend first, then tf.data
import numpy as np

import keras_gdkd
from keras_gdkd import data
import tensorflow as tf

model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
x, y = np.zeros((8, 4), "float32"), np.zeros((8,), "int32")
model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), epochs=1, verbose=0)
if importlib.util.find_spec("torch") is not None:
    import torch._dynamo  # what torch.optim and torch.compile import, with triton if installed
print("ok")
"""


@pytest.mark.parametrize("order", ["backend-first", "tensorflow-first"])
def test_tensorflow_imports_beside_the_backend_without_crashing(order):
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed (the data pipelines need it)")
    backend = keras.backend.backend()
    if backend == "torch" and order == "tensorflow-first":
        pytest.skip(
            "on the torch backend keras loads torch (and triton, if any) before TensorFlow: "
            "keras_gdkd and this suite import keras first"
        )
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-c", TF_BESIDE_BACKEND, order],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if result.returncode < 0:
        cause = (
            "triton is installed: it comes with a CUDA build of torch and crashes when imported "
            "after TensorFlow; install torch from PyTorch's CPU index (README, Install)"
            if importlib.util.find_spec("triton") is not None
            else "no known cause"
        )
        pytest.fail(
            f"importing TensorFlow and the {backend} backend ({order}) killed Python with "
            f"signal {-result.returncode}: {cause}.\n{result.stderr[-2000:]}"
        )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
