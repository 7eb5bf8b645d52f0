"""Multi-process data parallelism on 127.0.0.1: 2 processes == 1 process.

Each run trains a small :class:`~keras_gdkd.Distiller` (two tiny conv nets with BatchNorm, GDKD)
for 2 epochs on a deterministic global-batched ``tf.data`` stream inside
:func:`keras_gdkd.parallel.data_parallel`, then evaluates it on a dataset whose size is not a
multiple of the global batch, through :func:`keras_gdkd.parallel.pad_for_evaluation`. The
2-process run (one CPU device per process) must give the weights and evaluation of the
1-process run, every process must return the same evaluation, and only process 0 writes files.

JAX joins the processes with ``jax.distributed`` (:func:`initialize_multi_host`); TensorFlow
with ``TF_CONFIG`` and ``MultiWorkerMirroredStrategy`` (which needs the shim in
:mod:`keras_gdkd.compat`). Each test runs from the pytest run of its own backend.

This file is also the workers' script: ``python tests/test_multihost.py OUT NUM PID PORT``
prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BACKEND = keras.backend.backend()
CLASSES = 5
GLOBAL_BATCH = 16
TRAIN_EXAMPLES = 64
EVAL_EXAMPLES = 50  # 3 full batches of 16 and one of 2: padded with 14 weight-0 examples
TIMEOUT = 300  # seconds per worker; a hang fails the test instead of blocking it


# --- the worker --------------------------------------------------------------------------------


def _tiny_net(width: int, name: str) -> keras.Model:
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name="conv")(inputs)
    h = keras.layers.BatchNormalization(momentum=0.9, name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(CLASSES, name="fc")(h), name=name)


def _data(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6, 6, 3)).astype("float32")
    x[: n // 2] += 1.0  # the two halves of a batch differ: BatchNorm must see the global batch
    return x, rng.integers(0, CLASSES, n).astype("int32")


def _initial_weights(models) -> None:
    """Random weights, BatchNorm statistics included (so that copying them is checked)."""
    rng = np.random.default_rng(7)
    for model in models:
        weights = []
        for w in model.weights:
            if w.path.endswith(("gamma", "moving_variance")):
                weights.append(rng.uniform(0.5, 1.5, w.shape))
            else:
                weights.append(rng.normal(0.0, 0.3, w.shape))
        model.set_weights([w.astype("float32") for w in weights])


def _worker(out: Path) -> dict:
    import tensorflow as tf

    import keras_gdkd as kg
    from keras_gdkd import parallel

    start = time.perf_counter()
    with parallel.data_parallel() as setup:
        teacher, student = _tiny_net(8, "teacher"), _tiny_net(4, "student")
        _initial_weights([teacher, student])
        # Each BatchNorm must normalize with the global batch (on JAX it does so by itself).
        teacher, student = parallel.sync_batchnorm(teacher), parallel.sync_batchnorm(student)
        distiller = kg.Distiller(teacher, student, loss=kg.GDKD(k=2), warmup_epochs=0)
        distiller.compile(
            optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
            weighted_metrics=[
                "accuracy",
                keras.metrics.SparseCategoricalCrossentropy(from_logits=True, name="ce"),
            ],
        )
        train = tf.data.Dataset.from_tensor_slices(_data(TRAIN_EXAMPLES, 0)).batch(GLOBAL_BATCH)
        history = distiller.fit(train, epochs=2, verbose=0)
        x, y = _data(EVAL_EXAMPLES, 1)
        padded = parallel.pad_for_evaluation(
            tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH),
            GLOBAL_BATCH,
            num_examples=EVAL_EXAMPLES,
        )
        evaluation = distiller.evaluate(padded, verbose=0, return_dict=True)
    weights = {w.path: keras.ops.convert_to_numpy(w) for w in distiller.student.weights}
    result = {
        "process": parallel.process_index(),
        "processes": parallel.process_count(),
        "kind": setup.kind,
        "num_replicas": setup.num_replicas,
        "loss": [float(v) for v in history.history["loss"]],
        "eval": {k: float(v) for k, v in evaluation.items()},
        "seconds": time.perf_counter() - start,
    }
    if parallel.is_primary():
        np.savez(out / "weights.npz", **{k.replace("/", "|"): v for k, v in weights.items()})
        (out / f"written_by_{parallel.process_index()}.json").write_text(json.dumps(result))
    return result


# --- spawning ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(out: Path, num_processes: int) -> list[tuple[subprocess.Popen, Path]]:
    """Starts the workers of one run; their output goes to files (pipes could fill and block)."""
    out.mkdir()
    base = {
        **os.environ,
        "KERAS_BACKEND": BACKEND,
        "PYTHONPATH": str(ROOT),
        "CUDA_VISIBLE_DEVICES": "",
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    base.pop("TF_CONFIG", None)
    base.pop("XLA_FLAGS", None)  # one CPU device per process
    ports = [_free_port() for _ in range(num_processes)]
    workers = []
    for pid in range(num_processes):
        env = dict(base)
        if BACKEND == "tensorflow" and num_processes > 1:
            addresses = [f"127.0.0.1:{port}" for port in ports]
            env["TF_CONFIG"] = json.dumps(
                {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": pid}}
            )
        command = [sys.executable, __file__, str(out), str(num_processes), str(pid), str(ports[0])]
        log = out.parent / f"{out.name}_{pid}.log"
        with open(log, "wb") as sink:
            proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=sink, stderr=sink)
        workers.append((proc, log))
    return workers


def _collect(workers: list[tuple[subprocess.Popen, Path]]) -> list[dict]:
    results, failures = [], []
    for proc, log in workers:
        proc.wait(timeout=TIMEOUT)
        text = log.read_text(errors="replace")
        lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            failures.append(f"{log.name}: rc={proc.returncode}\n{text[-4000:]}")
        else:
            results.append(json.loads(lines[-1][len("RESULT ") :]))
    assert not failures, "worker failed:\n" + "\n".join(failures)
    return sorted(results, key=lambda r: r["process"])


def _weights(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "weights.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.mark.slow
@pytest.mark.skipif(
    BACKEND not in ("jax", "tensorflow"), reason="multi-process training: JAX or TensorFlow"
)
def test_two_processes_match_one_process(tmp_path):
    start = time.perf_counter()
    # Both runs at once: the reference costs no extra wall time.
    runs = {name: _start(tmp_path / name, n) for name, n in (("single", 1), ("double", 2))}
    try:
        single, double = _collect(runs["single"]), _collect(runs["double"])
    finally:
        for proc, _ in runs["single"] + runs["double"]:
            if proc.poll() is None:
                proc.kill()
    seconds = time.perf_counter() - start

    assert [r["processes"] for r in double] == [2, 2] and [r["process"] for r in double] == [0, 1]
    kind = {"jax": "jax-data-parallel", "tensorflow": "tf-multi-worker"}[BACKEND]
    assert all(r["kind"] == kind and r["num_replicas"] == 2 for r in double), double
    assert single[0]["kind"] == "single"
    # Only process 0 wrote files.
    assert sorted(p.name for p in (tmp_path / "double").iterdir()) == [
        "weights.npz",
        "written_by_0.json",
    ]

    a, b = _weights(tmp_path / "single"), _weights(tmp_path / "double")
    assert a.keys() == b.keys()
    weight_diff = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    loss_diff = max(abs(x - y) for x, y in zip(single[0]["loss"], double[0]["loss"]))
    # Every process returns the same (global) evaluation, equal to the 1-process one.
    ev1, ev2 = single[0]["eval"], double[0]["eval"]
    assert double[1]["eval"] == ev2
    diffs = {k: abs(ev1[k] - ev2[k]) for k in ev1}
    print(
        f"{BACKEND}: 1 vs 2 processes: max |weight diff| {weight_diff:.2e}, train loss diff "
        f"{loss_diff:.2e}, eval diffs {diffs}; eval {ev2}; wall {seconds:.1f} s "
        f"(worker seconds: 1 proc {single[0]['seconds']:.1f}, "
        f"2 procs {[round(r['seconds'], 1) for r in double]})"
    )
    assert weight_diff < 1e-6 and loss_diff < 1e-5  # logged losses: float32 sums, other order
    assert ev1["accuracy"] == ev2["accuracy"]
    assert diffs["ce"] < 1e-6 and diffs["loss"] < 1e-6

    # The padded evaluation is exact: the same numbers from the unpadded data in numpy.
    student = _tiny_net(4, "student")
    student.set_weights([a[k.replace("/", "|")] for k in [w.path for w in student.weights]])
    x, y = _data(EVAL_EXAMPLES, 1)
    logits = keras.ops.convert_to_numpy(student(x, training=False))
    accuracy = float(np.mean(np.argmax(logits, -1) == y))
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    ce = float(-np.mean(log_probs[np.arange(EVAL_EXAMPLES), y]))
    assert abs(ev2["accuracy"] - accuracy) < 1e-7 and abs(ev2["ce"] - ce) < 1e-5
    # Keras's loss averages sum(w * ce) / batch over the padded batches (see pad_for_evaluation).
    padded_size = -(-EVAL_EXAMPLES // GLOBAL_BATCH) * GLOBAL_BATCH
    assert abs(ev2["loss"] - ce * EVAL_EXAMPLES / padded_size) < 1e-5


# --- the TensorFlow multi-worker shim (keras_gdkd.compat) ----------------------------------------


def test_multi_worker_shim_matches_this_keras():
    """Fails when Keras changes the code the shim wraps: re-check the shim, then its hashes."""
    pytest.importorskip("tensorflow")
    from keras_gdkd import compat

    assert compat.tf_multi_worker_sources() == compat.PATCHED_TF_SOURCES, (
        f"Keras {keras.__version__} changed the functions keras_gdkd.compat wraps for "
        "MultiWorkerMirroredStrategy; check whether the bug is fixed (then drop the shim) or "
        "update the wrappers and PATCHED_TF_SOURCES."
    )


@pytest.mark.skipif(BACKEND != "tensorflow", reason="patches the TensorFlow trainer")
def test_multi_worker_shim_leaves_other_strategies_alone():
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    from keras_gdkd import compat

    assert compat.patch_tf_multi_worker_fit() is True
    assert compat.patch_tf_multi_worker_fit() is True  # once per process
    wrapped = trainer.reduce_per_replica
    assert wrapped is not wrapped.__wrapped__
    assert trainer.TensorFlowTrainer._maybe_symbolic_build.__wrapped__ is not None
    # Without a multi-worker strategy the wrappers run Keras's own code.
    strategy = tf.distribute.get_strategy()
    values = {"loss": tf.constant(2.0), "logits": tf.ones((2, 3))}
    for reduction in ("auto", "mean", "sum", "first"):
        got = wrapped(values, strategy, reduction)
        expected = wrapped.__wrapped__(values, strategy, reduction)
        for key in values:
            np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy())
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(np.ones((4, 3)), np.zeros((4, 2)), batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.skipif(BACKEND == "tensorflow", reason="the shim is for the TensorFlow backend")
def test_multi_worker_shim_refuses_other_backends():
    pytest.importorskip("tensorflow")
    from keras_gdkd import compat

    with pytest.raises(ValueError, match="tensorflow backend only"):
        compat.patch_tf_multi_worker_fit()


if __name__ == "__main__":
    _out, _num, _pid, _port = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    from keras_gdkd import parallel as _parallel

    if _num > 1:
        if BACKEND == "jax":
            _parallel.initialize_multi_host(f"127.0.0.1:{_port}", _num, _pid)
        else:
            _parallel.initialize_multi_host()
    print("RESULT " + json.dumps(_worker(_out)), flush=True)
