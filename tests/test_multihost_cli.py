"""`keras-gdkd distill` in 2 JAX processes on 127.0.0.1 equals 1 process; process 0 alone writes.

The 2-process run trains one epoch, then the same command with `--epochs 2 --force` resumes both
processes from their own checkpoints; the result is compared with a 1-process 2-epoch run. The
test set (32 images) is smaller than the evaluation batch (256): the padded last batch must give
both processes the same, exact top-1.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_gdkd import models
from keras_gdkd.data import testing as fake

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(keras.backend.backend() != "jax", reason="multi-process CLI runs on JAX"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(root: Path, output: Path, epochs: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "keras_gdkd.cli", "distill", "--preset", "res56_res20",
            "--student", "resnet8", "--teacher-weights", str(root / "teacher.keras"),
            "--data-dir", str(root / "data"), "--output", str(output), "--epochs", str(epochs),
            "--batch-size", "16", "--verbose", "0", *extra]  # fmt: skip


def _env() -> dict:
    return {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT),
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}  # fmt: skip


def _two_processes(root: Path, output: Path, epochs: int, *extra: str) -> list[str]:
    port = _free_port()
    procs = [
        subprocess.Popen(
            _command(
                root,
                output,
                epochs,
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
                *extra,
            ),
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=400)
            assert proc.returncode == 0, err[-3000:]
            outputs.append(out)
    finally:
        for proc in procs:
            proc.kill()
    return outputs


def test_two_processes_equal_one_and_only_process_0_writes(tmp_path):
    fake.write_fake_cifar100_python(tmp_path / "data", num_train=64, num_test=32)
    shutil.rmtree(tmp_path / "data" / "cifar-100-python")
    keras.utils.set_random_seed(0)
    models.get_model("resnet8", num_classes=100).save(tmp_path / "teacher.keras")

    start = time.perf_counter()
    single = tmp_path / "single"
    subprocess.run(_command(tmp_path, single, 2), env=_env(), check=True, capture_output=True,
                   timeout=400)  # fmt: skip
    single_s = time.perf_counter() - start

    start = time.perf_counter()
    double = tmp_path / "double"
    _two_processes(tmp_path, double, 1)
    stdout = _two_processes(tmp_path, double, 2, "--force")  # resumes on both processes
    double_s = time.perf_counter() - start

    # Every process prints the same results; process 0 alone wrote the run's files.
    results = [json.loads(out[out.index("{") :]) for out in stdout]
    assert results[0]["last_top1"] == results[1]["last_top1"]
    assert results[0]["num_processes"] == 2 and results[0]["starts"] == 2
    assert sorted(p.name for p in double.iterdir()) == sorted(p.name for p in single.iterdir())
    assert sorted(p.name for p in (double / "backup").iterdir()) == [
        "epoch-0001", "epoch-0002", "process-1"]  # fmt: skip
    assert sorted(p.name for p in (double / "backup" / "process-1").iterdir()) == [
        "epoch-0001", "epoch-0002", "run.lock"]  # fmt: skip

    one = json.loads((single / "results.json").read_text())
    two = json.loads((double / "results.json").read_text())
    assert two["last_top1"] == one["last_top1"] and two["best_top1"] == one["best_top1"]
    a = keras.saving.load_model(single / "model.keras").weights
    b = keras.saving.load_model(double / "model.keras").weights
    diff = max(float(np.max(np.abs(keras.ops.convert_to_numpy(x) - keras.ops.convert_to_numpy(y))))
               for x, y in zip(a, b))  # fmt: skip
    print(
        f"2 processes vs 1: max weight difference {diff:.2e}, top-1 {two['last_top1']} vs "
        f"{one['last_top1']}, wall {double_s:.0f} s vs {single_s:.0f} s"
    )
    assert diff < 1e-5
