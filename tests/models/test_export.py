"""export_model: zoo models as core Keras models; float32 classifiers under mixed precision."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_gdkd.models import (
    TorchBatchNormalization,
    export_model,
    get_model,
    is_imagenet,
    load_torch_weights,
    torch_key_table,
)

# One architecture per builder family (ImageNet ones at 64x64), in two groups: loading a .keras
# file on JAX compiles one random initializer per kernel shape (up to a second each).
FAMILY_GROUPS = [
    ("resnet8", "wrn_16_1", "vgg8"),
    ("resnet18", "mobilenetv1"),
    ("mobilenetv2",),
    ("shufflenetv1", "shufflenetv2"),
]

# Runs with a keras_gdkd that cannot be imported: only core Keras may be needed to load.
LOAD_SCRIPT = """
import json, sys
import numpy as np
import keras

results = {}
for name, path, x_path, y_path in json.loads(sys.argv[1]):
    model = keras.saving.load_model(path)
    x, expected = np.load(x_path), np.load(y_path)
    got = keras.ops.convert_to_numpy(model.predict_on_batch(x))
    results[name] = float(np.max(np.abs(got - expected)))
assert not [m for m in sys.modules if m.startswith("keras_gdkd")]
print("RESULTS " + json.dumps(results))
"""


def _fill(model: keras.Model, seed: int = 0) -> None:
    """Random PyTorch-layout weights (positive running variances) for every tensor."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, slot in torch_key_table(model).items():
        value = rng.normal(scale=0.2, size=slot.torch_shape).astype("float32")
        state[key] = np.abs(value) + 0.5 if key.endswith("running_var") else value
    load_torch_weights(model, state)


def _build(name: str) -> tuple[keras.Model, np.ndarray]:
    shape = (64, 64, 3) if is_imagenet(name) else (32, 32, 3)
    model = get_model(name, num_classes=10, input_shape=shape)
    _fill(model)
    x = np.random.default_rng(1).normal(size=(2, *shape)).astype("float32")
    return model, x


def infer(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model.predict_on_batch(x))


def test_export_is_the_same_model_in_core_layers():
    model, x = _build("shufflenetv2")
    exported = export_model(model)
    assert [layer.name for layer in exported.layers] == [layer.name for layer in model.layers]
    assert exported.name == model.name
    for a, b in zip(model.weights, exported.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a.value), keras.ops.convert_to_numpy(b.value)
        )
    assert not [layer for layer in exported.layers if isinstance(layer, TorchBatchNormalization)]
    assert {type(layer).__module__.split(".")[0] for layer in exported.layers} == {"keras"}
    np.testing.assert_allclose(infer(exported, x), infer(model, x), atol=1e-6)
    # The zoo model itself serializes only core Keras objects except its BatchNorm class.
    config = json.dumps(keras.saving.serialize_keras_object(model))
    assert "HostDraw" not in config and config.count("keras_gdkd") == config.count(
        "TorchBatchNormalization"
    )


def test_export_rejects_custom_layers():
    @keras.saving.register_keras_serializable(package="keras_gdkd_tests")
    class Twice(keras.layers.Layer):
        def call(self, x):
            return 2 * x

    inputs = keras.Input((3,))
    model = keras.Model(inputs, Twice(name="twice")(inputs))
    with pytest.raises(ValueError, match="not core Keras.*keras_gdkd_tests.*Twice"):
        export_model(model)


@pytest.mark.slow
@pytest.mark.parametrize(
    "names", FAMILY_GROUPS, ids=["cifar-resnet-wrn-vgg", "imagenet", "mobilenetv2", "shufflenets"]
)
def test_exports_load_with_plain_keras_in_a_fresh_process(names, tmp_path):
    cases, expected = [], {}
    for name in names:
        model, x = _build(name)
        path = tmp_path / f"{name}.keras"
        export_model(model).save(path)
        y = infer(model, x)
        np.save(tmp_path / f"{name}_x.npy", x)
        np.save(tmp_path / f"{name}_y.npy", y)
        cases.append(
            [name, str(path), str(tmp_path / f"{name}_x.npy"), str(tmp_path / f"{name}_y.npy")]
        )
        expected[name] = float(np.max(np.abs(y)))
        keras.backend.clear_session()
    # A keras_gdkd that fails to import, first on the path: the load must not need it.
    blocker = tmp_path / "blocked" / "keras_gdkd"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('keras_gdkd must not be needed')")
    env = {"KERAS_BACKEND": keras.backend.backend(), "PYTHONPATH": str(blocker.parent),
           "PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3",
           # Halves the initializer compiles on JAX; the loaded weights come from the file.
           "XLA_FLAGS": "--xla_backend_optimization_level=0"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, json.dumps(cases)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    line = [row for row in result.stdout.splitlines() if row.startswith("RESULTS ")][-1]
    deviations = json.loads(line[len("RESULTS ") :])
    print(f"[{keras.backend.backend()}] plain-Keras load, max |output - original|: {deviations}")
    assert sorted(deviations) == sorted(names)
    for name, deviation in deviations.items():
        assert deviation <= 1e-5 * max(1.0, expected[name]), (name, deviation)


def test_classifier_stays_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    for name, head in (("resnet8", "fc"), ("vgg8", "classifier")):
        model = get_model(name, num_classes=10)
        dense = model.get_layer(head)
        assert dense.compute_dtype == "float32" and dense.variable_dtype == "float32"
        assert {v.dtype for v in dense.weights} == {"float32"}
        body = model.get_layer("layer1_0_conv1" if name == "resnet8" else "block0_0")
        assert body.compute_dtype == "bfloat16"  # the body does run in bfloat16
        x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
        # Logits beyond float16's range (65504) stay finite and exact in float32.
        dense.bias.assign(np.full((10,), 1e5, "float32"))
        logits = model(x, training=False)
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(logits)))
        exported = export_model(model)
        assert exported.get_layer(head).compute_dtype == "float32"
