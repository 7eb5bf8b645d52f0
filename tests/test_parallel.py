"""Data parallelism: one step on 1 device == the same step split over 2 devices.

The multi-device checks run in a subprocess with 2 virtual CPU devices (JAX:
``XLA_FLAGS=--xla_force_host_platform_device_count=2``; TensorFlow: 2 logical CPUs), because
both must be configured before the framework initialises. To save CI time each runs once per
CI, from the pytest run of its own backend. This file is also the subprocess's script:
``python tests/test_parallel.py jax|tensorflow`` prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "tensorflow":
    # Two logical CPUs must exist before anything (keras included) initialises TensorFlow.
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras
import numpy as np
import pytest

import keras_gdkd as kg
from keras_gdkd import parallel

BACKEND = keras.backend.backend()
CLASSES = 10
ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5


# --- models and one training run, shared by the tests and the subprocess worker ---------------


class _ShardingProbe(keras.layers.Layer):
    """Identity that records how JAX shards its input inside the compiled step."""

    seen: list[dict] = []

    def call(self, inputs):
        import jax

        def record(sharding):
            devices = len(sharding.device_set)
            replicated = bool(sharding.is_fully_replicated)
            _ShardingProbe.seen.append({"devices": devices, "replicated": replicated})

        jax.debug.inspect_array_sharding(inputs, callback=record)
        return inputs


def _conv_model(width: int, name: str, probe: bool = False) -> keras.Model:
    # Zero kernels: random initializers compile slowly on JAX's CPU backend; see _initial_weights.
    conv = dict(padding="same", use_bias=False, kernel_initializer="zeros")
    inputs = keras.Input((8, 8, 3))
    h = _ShardingProbe(name="probe")(inputs) if probe else inputs
    h = keras.layers.Conv2D(width, 3, name="conv1", **conv)(h)
    # momentum 0.9 (torch's 0.1) so that one step moves the statistics visibly.
    h = keras.layers.BatchNormalization(momentum=0.9, name="bn1")(h)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.Conv2D(width, 3, strides=2, name="conv2", **conv)(h)
    h = keras.layers.BatchNormalization(momentum=0.9, name="bn2")(h)
    h = keras.layers.ReLU(name="relu2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    fc = keras.layers.Dense(CLASSES, kernel_initializer="zeros", name="fc")
    return keras.Model(inputs, fc(h), name=name)


def _batch(n: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8, 8, 3)).astype("float32")
    x[: n // 2] = 2.0 * x[: n // 2] + 1.0  # replicas see different statistics
    return x, rng.integers(0, CLASSES, n).astype("int32")


def _random_weights(model: keras.Model, rng: np.random.Generator) -> list[np.ndarray]:
    """Kernels ~ He-uniform-like, BN gamma/beta/moving statistics perturbed from 1/0/0/1."""
    weights = []
    for w in model.weights:
        shape, name = tuple(w.shape), w.path.split("/")[-1]
        if name == "kernel":
            limit = np.sqrt(6.0 / np.prod(shape[:-1]))
            weights.append(rng.uniform(-limit, limit, shape))
        elif name in ("gamma", "moving_variance"):
            weights.append(rng.uniform(0.5, 1.5, shape))
        else:  # beta, bias, moving_mean
            weights.append(rng.normal(0.0, 0.1, shape))
    return [w.astype("float32") for w in weights]


def _initial_weights() -> tuple[list, list]:
    rng = np.random.default_rng(0)
    teacher, student = _conv_model(16, "teacher"), _conv_model(8, "student")
    return _random_weights(teacher, rng), _random_weights(student, rng)


def _train_step(init, sync: bool, probe: bool = False) -> dict:
    """Builds teacher/student from ``init``, runs one SGD-momentum step on a global batch of 8."""
    teacher, student = _conv_model(16, "teacher"), _conv_model(8, "student", probe)
    teacher.set_weights(init[0])
    student.set_weights(init[1])
    if sync:
        teacher, student = parallel.sync_batchnorm(teacher), parallel.sync_batchnorm(student)
    distiller = kg.Distiller(teacher, student, loss=kg.GDKD(k=3, w1=2.0, w2=6.0))
    distiller.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    x, y = _batch()
    logs = distiller.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
    return {
        "logs": {k: float(v[-1]) for k, v in logs.items()},
        "weights": {w.path: keras.ops.convert_to_numpy(w).tolist() for w in student.weights},
        "student": student,
    }


def _max_diffs(a: dict, b: dict) -> dict:
    def diff(names):
        return max(
            float(np.max(np.abs(np.asarray(a["weights"][n]) - np.asarray(b["weights"][n]))))
            for n in names
        )

    names = list(a["weights"])
    moving = [n for n in names if "moving_" in n]
    return {
        "loss": max(abs(a["logs"][k] - b["logs"][k]) for k in a["logs"]),
        "weights": diff([n for n in names if n not in moving]),
        "bn_moving": diff(moving),
    }


# --- subprocess workers -----------------------------------------------------------------------


def _jax_worker() -> dict:
    init = _initial_weights()
    _ShardingProbe.seen.clear()
    single = _train_step(init, sync=False, probe=True)
    single_seen = list(_ShardingProbe.seen)
    _ShardingProbe.seen.clear()
    with parallel.data_parallel() as setup:
        split = _train_step(init, sync=True, probe=True)
        distribution = keras.distribution.distribution()
        kernel = split["student"].get_layer("conv1").kernel.value
    return {
        "setup": {"kind": setup.kind, "num_replicas": setup.num_replicas},
        "distribution_set": type(distribution).__name__,
        "distribution_restored": keras.distribution.distribution() is None,
        "kernel_devices": len(kernel.sharding.device_set),
        "single_seen": single_seen,
        "split_seen": list(_ShardingProbe.seen),
        "diff": _max_diffs(single, split),
        "single_logs": single["logs"],
    }


def _tf_worker() -> dict:
    import tensorflow as tf

    init = _initial_weights()
    single = _train_step(init, sync=True)  # no strategy: sync_batchnorm leaves it unchanged
    runs = {}
    for sync in (True, False):
        with parallel.data_parallel(["/cpu:0", "/cpu:1"]) as setup:
            runs[sync] = _train_step(init, sync=sync)
            student = runs[sync]["student"]
            bns = [layer for layer in student.layers if "bn" in layer.name]
            runs[sync]["synchronized"] = all(layer.synchronized for layer in bns)
            runs[sync]["mirrored"] = isinstance(
                student.get_layer("conv1").kernel.value, tf.distribute.DistributedValues
            )
    return {
        "setup": {"kind": setup.kind, "num_replicas": setup.num_replicas},
        "single_synchronized": any(
            layer.synchronized for layer in single["student"].layers if "bn" in layer.name
        ),
        "synchronized": runs[True]["synchronized"],
        "unsynchronized": not runs[False]["synchronized"],
        "mirrored": runs[True]["mirrored"],
        "diff": _max_diffs(single, runs[True]),
        "single_logs": single["logs"],
        "diff_without_sync": _max_diffs(single, runs[False]),
    }


def _run_worker(backend: str, env: dict[str, str]) -> dict:
    env = {**os.environ, **env, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, __file__, backend],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"worker failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    result = json.loads(lines[-1][len("RESULT ") :])
    print(f"{backend} single-device logs {result['single_logs']}")
    print(f"{backend} single vs 2 devices, max |diff|: {result['diff']}")
    return result


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.skipif(BACKEND != "jax", reason="runs once per CI, from the jax pytest run")
def test_jax_data_parallel_step_matches_single_device():
    result = _run_worker(
        "jax",
        {"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"},
    )
    assert result["setup"] == {"kind": "jax-data-parallel", "num_replicas": 2}
    assert result["distribution_set"] == "DataParallel"
    assert result["distribution_restored"]
    assert result["kernel_devices"] == 2  # variables replicated on both devices
    # The batch really is split: inside the compiled step the input spans 2 devices unreplicated.
    assert result["split_seen"] and all(
        s == {"devices": 2, "replicated": False} for s in result["split_seen"]
    )
    assert all(s["devices"] == 1 for s in result["single_seen"])
    diff = result["diff"]
    assert diff["loss"] < TOL and diff["weights"] < TOL and diff["bn_moving"] < TOL, diff


@pytest.mark.skipif(BACKEND != "tensorflow", reason="runs once per CI, from the tensorflow run")
def test_tf_mirrored_step_matches_single_device_with_sync_batchnorm():
    result = _run_worker("tensorflow", {"CUDA_VISIBLE_DEVICES": ""})
    assert result["setup"] == {"kind": "tf-mirrored", "num_replicas": 2}
    assert result["mirrored"] and result["synchronized"] and result["unsynchronized"]
    assert not result["single_synchronized"]  # outside a strategy sync_batchnorm is a no-op
    diff = result["diff"]
    assert diff["loss"] < TOL and diff["weights"] < TOL and diff["bn_moving"] < TOL, diff
    # Without SyncBN each replica normalizes with its half-batch statistics: they differ.
    assert result["diff_without_sync"]["bn_moving"] > 1e-2, result["diff_without_sync"]


def _single_accelerator_or_less() -> bool:
    if BACKEND == "jax":
        return len(keras.distribution.list_devices()) < 2
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_logical_devices("GPU")) < 2
    return True  # torch: always single-device


def test_data_parallel_without_accelerators_is_a_no_op():
    if not _single_accelerator_or_less():
        pytest.skip("several accelerators are visible: data_parallel() would distribute")
    x, _ = _batch()
    weights = _initial_weights()[1]
    outside = _conv_model(8, "student")
    outside.set_weights(weights)
    previous = keras.distribution.distribution()
    with parallel.data_parallel() as setup:
        assert keras.distribution.distribution() is previous
        if BACKEND == "tensorflow":
            import tensorflow as tf

            assert not tf.distribute.has_strategy()
        inside = _conv_model(8, "student")
        inside.set_weights(weights)
        np.testing.assert_array_equal(inside.predict(x, verbose=0), outside.predict(x, verbose=0))
    assert keras.distribution.distribution() is previous
    assert setup.kind == "single" and setup.num_replicas == 1 and setup.backend == BACKEND
    assert setup.strategy is None and setup.distribution is None and setup.devices == ()


def test_data_parallel_on_one_named_device():
    with parallel.data_parallel(["cpu:0"]) as setup:
        model = _conv_model(4, "m")
        out = model.predict(_batch()[0], verbose=0)
    assert setup.kind == "single" and setup.devices == ("cpu:0",)
    assert out.shape == (8, CLASSES)


@pytest.mark.skipif(BACKEND != "torch", reason="the torch backend only")
def test_torch_warns_that_it_runs_single_device(caplog):
    with caplog.at_level(logging.WARNING, logger="keras_gdkd.parallel"):
        with parallel.data_parallel(["cpu:0", "cpu:1"]) as setup:
            pass
    assert setup.kind == "single" and setup.num_replicas == 1 and setup.devices == ("cpu:0",)
    assert "single device" in caplog.text


# --- multi-process helpers (single process here; 2 processes: tests/test_multihost.py) --------


def test_process_helpers_in_a_single_process(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert parallel.process_index() == 0
    assert parallel.process_count() == 1
    assert parallel.is_primary() is True


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TF_CONFIG describes TensorFlow clusters")
def test_process_helpers_read_tf_config(monkeypatch):
    cluster = {"chief": ["h0:1"], "worker": ["h1:1", "h2:1"]}
    for task, index in ((("chief", 0), 0), (("worker", 0), 1), (("worker", 1), 2)):
        config = {"cluster": cluster, "task": {"type": task[0], "index": task[1]}}
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
        assert parallel.process_index() == index
        assert parallel.process_count() == 3
        assert parallel.is_primary() is (index == 0)
    for bad in (
        "not json",
        json.dumps({"cluster": cluster}),
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 2}}),
        json.dumps({"cluster": cluster, "task": {"type": "evaluator", "index": 0}}),
    ):
        monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(ValueError, match="TF_CONFIG"):
            parallel.process_index()


@pytest.mark.parametrize(
    "kwargs, env, match",
    [
        ({"coordinator": "127.0.0.1:1234"}, {}, "num_processes, process_id missing"),
        ({"num_processes": 2, "process_id": 0}, {}, "coordinator missing"),
        ({"coordinator": "127.0.0.1", "num_processes": 2, "process_id": 0}, {}, "host:port"),
        ({"coordinator": "127.0.0.1:1234", "num_processes": 2, "process_id": 2}, {}, r"\[0, 1\]"),
        ({"coordinator": "127.0.0.1:1234", "num_processes": 0, "process_id": 0}, {}, ">= 1"),
        ({"coordinator": "a:1,b:2", "num_processes": 3, "process_id": 0}, {}, "2 job addresses"),
        ({"coordinator": "a:1", "num_processes": "2", "process_id": 0}, {}, "must be an int"),
        (
            {},
            {"KERAS_DISTRIBUTION_JOB_ADDRESSES": "a:1", "KERAS_DISTRIBUTION_NUM_PROCESSES": "two"},
            "KERAS_DISTRIBUTION_NUM_PROCESSES must be an integer",
        ),
        (
            {"coordinator": "a:1", "process_id": 1},
            {"KERAS_DISTRIBUTION_NUM_PROCESSES": "1"},
            r"\[0, 0\]",
        ),
    ],
)
@pytest.mark.skipif(BACKEND != "jax", reason="the JAX arguments")
def test_initialize_multi_host_rejects_bad_jax_values(monkeypatch, kwargs, env, match):
    # Every case fails before jax.distributed starts: nothing is initialised.
    for name in ("JOB_ADDRESSES", "NUM_PROCESSES", "PROCESS_ID"):
        monkeypatch.delenv(f"KERAS_DISTRIBUTION_{name}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=match):
        parallel.initialize_multi_host(**kwargs)
    import jax

    assert not jax.distributed.is_initialized()


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's multi-worker configuration")
def test_initialize_multi_host_on_tensorflow_needs_tf_config_only(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG environment variable"):
        parallel.initialize_multi_host()
    with pytest.raises(ValueError, match="are for JAX"):
        parallel.initialize_multi_host("127.0.0.1:1234", 2, 0)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's multi-worker configuration")
def test_tf_config_after_tensorflow_started_says_what_to_do(monkeypatch):
    import tensorflow as tf

    tf.constant(1.0) + 1.0  # TensorFlow has run an op: collectives can no longer be configured
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    )
    monkeypatch.setattr(parallel, "_TF_STRATEGIES", {})
    with pytest.raises(ValueError, match="initialize_multi_host"):
        with parallel.data_parallel():
            pass


@pytest.mark.skipif(BACKEND != "torch", reason="the torch backend only")
def test_initialize_multi_host_is_refused_on_torch():
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        parallel.initialize_multi_host("127.0.0.1:1234", 2, 0)


# --- pad_for_evaluation -----------------------------------------------------------------------


def _eval_data(n: int = 10, seed: int = 3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 5)).astype("float32"), rng.integers(0, 3, n).astype("int32")


@pytest.mark.parametrize("batched", [True, False])
def test_pad_for_evaluation_yields_static_full_batches(batched):
    import tensorflow as tf

    x, y = _eval_data(10)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if batched:
        dataset = dataset.batch(3)  # another batch size, last batch partial
    padded = parallel.pad_for_evaluation(dataset, 4, num_examples=10)
    spec = padded.element_spec
    assert [tuple(s.shape) for s in spec] == [(4, 5), (4,), (4,)]
    assert spec[2].dtype == tf.float32
    assert int(padded.cardinality()) == 3
    # Without num_examples the size is known only when tf.data knows it without reading.
    inferred = parallel.pad_for_evaluation(dataset, 4).cardinality()
    assert int(inferred) == (tf.data.UNKNOWN_CARDINALITY if batched else 3)
    static = tf.data.Dataset.from_tensor_slices((x, y)).batch(2, drop_remainder=True)
    assert int(parallel.pad_for_evaluation(static, 4).cardinality()) == 3
    batches = [tuple(t.numpy() for t in batch) for batch in padded]
    xs, ys, ws = (np.concatenate(parts) for parts in zip(*batches))
    np.testing.assert_array_equal(xs[:10], x)
    np.testing.assert_array_equal(ys[:10], y)
    np.testing.assert_array_equal(ws, [1.0] * 10 + [0.0] * 2)
    np.testing.assert_array_equal(xs[10:], 0.0)


def test_pad_for_evaluation_keeps_weights_and_nested_inputs():
    import tensorflow as tf

    x, y = _eval_data(5)
    w = np.arange(1, 6, dtype="float64")
    dataset = tf.data.Dataset.from_tensor_slices(({"a": x, "b": x[:, :2]}, y, w)).batch(2)
    padded = list(parallel.pad_for_evaluation(dataset, 4))  # num_examples unknown: still padded
    assert len(padded) == 2
    assert tuple(padded[0][0]["b"].shape) == (4, 2)
    weights = np.concatenate([batch[2].numpy() for batch in padded])
    np.testing.assert_array_equal(weights, [1, 2, 3, 4, 5, 0, 0, 0])


def test_pad_for_evaluation_rejects_bad_arguments():
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(_eval_data(6)).batch(2)
    for size in (0, 2.0, True):
        with pytest.raises(ValueError, match="global_batch_size"):
            parallel.pad_for_evaluation(dataset, size)
    with pytest.raises(ValueError, match="num_examples"):
        parallel.pad_for_evaluation(dataset, 4, num_examples=0)
    with pytest.raises(ValueError, match=r"\(x, y\)"):
        parallel.pad_for_evaluation(dataset.map(lambda x, y: x), 4)
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        parallel.pad_for_evaluation(_eval_data(6), 4)
    # A wrong num_examples (2 batches declared, 1 yielded) fails while iterating.
    with pytest.raises(tf.errors.FailedPreconditionError):
        list(parallel.pad_for_evaluation(dataset, 8, num_examples=12))


def test_padded_evaluate_is_exact_for_weighted_metrics():
    """Model.evaluate on padded batches == on the plain data, for weighted metrics."""
    import tensorflow as tf

    n, batch = 10, 4
    x, y = _eval_data(n)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        weighted_metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="w_accuracy"),
            keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="w_ce"),
        ],
    )
    plain_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    plain = model.evaluate(plain_ds, verbose=0, return_dict=True)
    padded = model.evaluate(
        parallel.pad_for_evaluation(plain_ds, batch, num_examples=n), verbose=0, return_dict=True
    )
    # The reference, from numpy.
    logits = keras.ops.convert_to_numpy(model(x))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    accuracy = float(np.mean(np.argmax(logits, -1) == y))
    ce = float(-np.mean(log_probs[np.arange(n), y]))
    assert (
        plain["accuracy"]
        == plain["w_accuracy"]
        == padded["w_accuracy"]
        == pytest.approx(accuracy, abs=1e-7)
    )
    assert padded["w_ce"] == pytest.approx(plain["w_ce"], abs=1e-6)
    assert padded["w_ce"] == pytest.approx(ce, abs=1e-5)
    assert plain["loss"] == pytest.approx(ce, abs=1e-5)
    # Keras 3 does not weight `metrics=[...]`: the 2 padding rows (label 0) count.
    pad_hits = int(np.argmax(keras.ops.convert_to_numpy(model(np.zeros((1, 5), "float32")))) == 0)
    expected = (accuracy * n + 2 * pad_hits) / 12
    assert padded["accuracy"] == pytest.approx(expected, abs=1e-7)
    # The loss is sum(w * ce) / batch per batch, averaged over the 3 padded batches.
    assert padded["loss"] == pytest.approx(ce * n / 12, abs=1e-5)


def test_padded_evaluate_of_a_distiller():
    """The Distiller's evaluation (student cross-entropy) on padded batches."""
    import tensorflow as tf

    n, batch = 10, 4
    x, y = _batch(n, seed=5)
    init = _initial_weights()
    teacher, student = _conv_model(16, "teacher"), _conv_model(8, "student")
    teacher.set_weights(init[0])
    student.set_weights(init[1])
    distiller = kg.Distiller(teacher, student, loss=kg.GDKD(k=2))
    distiller.compile(
        optimizer="sgd",
        weighted_metrics=[
            "accuracy",
            keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="ce"),
        ],
    )
    plain_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    plain = distiller.evaluate(plain_ds, verbose=0, return_dict=True)
    # num_examples: the batches of plain_ds have no static size, so tf.data cannot count them.
    padded = distiller.evaluate(
        parallel.pad_for_evaluation(plain_ds, batch, num_examples=n), verbose=0, return_dict=True
    )
    assert padded["accuracy"] == plain["accuracy"]
    assert padded["ce"] == pytest.approx(plain["ce"], abs=1e-6)
    assert padded["ce_loss"] == pytest.approx(plain["ce"] * n / 12, abs=1e-5)


def test_sync_batchnorm_is_a_no_op_off_tensorflow():
    if BACKEND == "tensorflow":
        pytest.skip("TensorFlow converts: see test_sync_batchnorm_keeps_names_weights_and_outputs")
    model = _conv_model(4, "m")
    # JAX: SPMD batch statistics are global anyway; torch: single device.
    assert parallel.sync_batchnorm(model, synchronized=True) is model
    assert parallel.sync_batchnorm(model) is model


@pytest.mark.skipif(BACKEND != "tensorflow", reason="synchronized=True exists on TensorFlow only")
def test_sync_batchnorm_keeps_names_weights_and_outputs(tmp_path):
    model = kg.models.get_model("resnet8", num_classes=CLASSES, input_shape=(16, 16, 3))
    rng = np.random.default_rng(0)
    # Non-trivial BN parameters and moving statistics, so that copying them is checked.
    model.set_weights(_random_weights(model, rng))
    x = rng.normal(size=(4, 16, 16, 3)).astype("float32")
    expected = model.predict(x, verbose=0)

    assert parallel.sync_batchnorm(model) is model  # no strategy: nothing to synchronize
    clone = parallel.sync_batchnorm(model, synchronized=True)
    assert clone is not model
    assert [layer.name for layer in clone.layers] == [layer.name for layer in model.layers]
    assert [w.path for w in clone.weights] == [w.path for w in model.weights]
    for a, b in zip(model.weights, clone.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    bns = [layer for layer in clone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.synchronized for layer in bns)
    np.testing.assert_array_equal(clone.predict(x, verbose=0), expected)

    # `synchronized` round-trips through a .keras file, and `synchronized=False` undoes it.
    path = tmp_path / "synced.keras"
    clone.save(path)
    loaded = keras.saving.load_model(path)
    assert all(loaded.get_layer(layer.name).synchronized for layer in bns)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    plain = parallel.sync_batchnorm(loaded, synchronized=False)
    assert not any(plain.get_layer(layer.name).synchronized for layer in bns)
    np.testing.assert_array_equal(plain.predict(x, verbose=0), expected)

    # Training-mode outputs agree too: with one replica the synchronized moments are the local
    # ones (computed as E[x^2] - E[x]^2, not by tf.nn.moments: hence the tolerance). Last, as
    # it updates the moving statistics.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(clone(x, training=True)),
        keras.ops.convert_to_numpy(model(x, training=True)),
        rtol=1e-4,
        atol=1e-4,
    )


if __name__ == "__main__":
    worker = {"jax": _jax_worker, "tensorflow": _tf_worker}[sys.argv[1]]
    assert keras.backend.backend() == sys.argv[1], keras.backend.backend()
    print("RESULT " + json.dumps(worker()), flush=True)
