"""Run orchestration: the CLI, a smoke distillation on a fake CIFAR archive, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_gdkd import cli, models
from keras_gdkd.data import testing as fake

ROOT = Path(__file__).resolve().parents[1]


def _env():
    return {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A fake CIFAR-100 archive (64 train / 32 test images) and a small random teacher."""
    root = tmp_path_factory.mktemp("run")
    fake.write_fake_cifar100_python(root / "data", num_train=64, num_test=32)
    (root / "data" / "cifar-100-python").rename(root / "unused")  # only the .tar.gz stays
    keras.utils.set_random_seed(0)
    models.get_model("resnet8", num_classes=100).save(root / "teacher.keras")
    return root


def _distill_args(workspace, output, epochs):
    return ["distill", "--preset", "res56_res20", "--method", "gdkd", "--student", "resnet8",
            "--teacher-weights", str(workspace / "teacher.keras"),
            "--data-dir", str(workspace / "data"), "--output", str(output),
            "--epochs", str(epochs), "--batch-size", "16", "--verbose", "2"]  # fmt: skip


@pytest.mark.parametrize("command", [[], ["presets"], ["distill"], ["train-teacher"], ["evaluate"]])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: keras-gdkd" in capsys.readouterr().out


def test_presets_command_prints_the_table_and_one_preset(capsys):
    assert cli.main(["presets"]) == 0
    assert "res32x4_res8x4" in capsys.readouterr().out
    assert cli.main(["presets", "res32x4_res8x4", "--method", "dkd"]) == 0
    assert "resnet8x4" in capsys.readouterr().out


@pytest.fixture(scope="module")
def whole_run(workspace):
    """An uninterrupted 3-epoch distillation, run in this process."""
    output = workspace / "whole"
    start = time.perf_counter()
    assert cli.main(_distill_args(workspace, output, epochs=3)) == 0
    return output, time.perf_counter() - start


def test_smoke_distillation_writes_results_curves_and_model(workspace, whole_run):
    output, seconds = whole_run
    assert seconds < 60
    results = json.loads((output / "results.json").read_text())
    assert results["backend"] == keras.backend.backend()
    assert (results["preset"], results["method"], results["student"]) == (
        "res56_res20", "gdkd", "resnet8")  # fmt: skip
    assert results["epochs_completed"] == 3 and 0 <= results["best_top1"] <= 100
    assert results["images_per_s"] > 0 and results["wall_time_s"] > 0
    assert (output / "curves.png").stat().st_size > 10_000
    assert (output / "log.csv").read_text().count("\n") == 4  # header + 3 epochs
    assert any((output / "tensorboard").rglob("*tfevents*"))
    student = keras.saving.load_model(output / "model.keras")
    assert student.count_params() == models.get_model("resnet8").count_params()
    evaluation = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_gdkd.cli",
            "evaluate",
            str(output / "model.keras"),
            "--data-dir",
            str(workspace / "data"),
        ],  # fmt: skip
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    top1 = json.loads(evaluation.stdout.strip().splitlines()[-1])["top1"]
    assert abs(top1 - results["last_top1"]) < 1e-4


def test_a_killed_run_resumes_to_the_same_weights(workspace, whole_run):
    command = [sys.executable, "-m", "keras_gdkd.cli"]
    whole, broken = whole_run[0], workspace / "broken"

    process = subprocess.Popen(command + _distill_args(workspace, broken, 3), env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    metadata = broken / "backup" / "training_metadata.json"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if metadata.exists() and json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 1:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (broken / "model.keras").exists(), "the run finished before it could be killed"

    subprocess.run(command + _distill_args(workspace, broken, 3), env=_env(), check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    results = json.loads((broken / "results.json").read_text())
    assert results["resumed_from_epoch"] >= 1 and results["epochs_completed"] == 3
    a = keras.saving.load_model(whole / "model.keras")
    b = keras.saving.load_model(broken / "model.keras")
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(wa), keras.ops.convert_to_numpy(wb),
                                   rtol=1e-5, atol=1e-6, err_msg=wa.path)  # fmt: skip


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="--help is backend-neutral")
@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_every_example_script_has_help(script):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--help"],
                            env=_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
