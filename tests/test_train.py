"""Runs you can trust: the CLI's run lifecycle on a fake CIFAR archive, one test per failure mode.

A run is killed, damaged, diverged, locked, changed, or missing a dependency, and must either go
on to exactly the weights of an uninterrupted run or stop with one clear line and exit status 2.
"""

import importlib.util
import json
import os
import shutil
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
from keras_gdkd.runs import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 3


def _env():
    return {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A fake CIFAR-100 archive (64 train / 32 test images) and a small random teacher."""
    root = tmp_path_factory.mktemp("run")
    fake.write_fake_cifar100_python(root / "data", num_train=64, num_test=32)
    shutil.rmtree(root / "data" / "cifar-100-python")  # only the .tar.gz stays
    keras.utils.set_random_seed(0)
    models.get_model("resnet8", num_classes=100).save(root / "teacher.keras")
    return root


def _args(workspace, output, epochs=EPOCHS, *extra):
    return ["distill", "--preset", "res56_res20", "--method", "gdkd", "--student", "resnet8",
            "--teacher-weights", str(workspace / "teacher.keras"),
            "--data-dir", str(workspace / "data"), "--output", str(output),
            "--epochs", str(epochs), "--batch-size", "16", "--verbose", "0", *extra]  # fmt: skip


def _with(args, flag, value):
    """``args`` with ``flag`` set to ``value`` (replaced if present)."""
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


def _weights(path):
    return [keras.ops.convert_to_numpy(w) for w in keras.saving.load_model(path).weights]


def _assert_same_model(a, b):
    for wa, wb in zip(_weights(a), _weights(b)):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def whole_run(workspace):
    """An uninterrupted 3-epoch distillation, run in this process."""
    output = workspace / "whole"
    start = time.perf_counter()
    assert cli.main(_args(workspace, output)) == 0
    return output, time.perf_counter() - start


def _copy(run, workspace, name):
    target = workspace / name
    shutil.copytree(run, target)
    (target / "run.lock").unlink(missing_ok=True)
    return target


@pytest.mark.parametrize(
    "command", [[], ["presets"], ["distill"], ["train-teacher"], ["evaluate"], ["check-data"],
                ["demo"], ["analyze"], ["sweep"]]
)  # fmt: skip
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: keras-gdkd" in capsys.readouterr().out


def test_help_and_version_answer_without_starting_keras():
    script = (
        "import sys, keras_gdkd.cli as c\n"
        "for cmd in ('distill', 'analyze', 'sweep'):\n"
        "    try: c.main([cmd, '--help'])\n"
        "    except SystemExit: pass\n"
        "assert 'keras' not in sys.modules, 'keras was imported'"
    )
    result = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    version = subprocess.run([sys.executable, "-m", "keras_gdkd.cli", "--version"], env=_env(),
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert version.stdout.startswith("keras-gdkd ")


def test_presets_command_prints_the_table_and_one_preset(capsys):
    assert cli.main(["presets"]) == 0
    assert "res32x4_res8x4" in capsys.readouterr().out
    assert cli.main(["presets", "res32x4_res8x4", "--method", "dkd"]) == 0
    assert "resnet8x4" in capsys.readouterr().out


def test_a_run_writes_results_curves_last_and_best_models(workspace, whole_run):
    output, seconds = whole_run
    assert seconds < 90
    results = json.loads((output / "results.json").read_text())
    assert results["status"] == "complete" and results["backend"] == keras.backend.backend()
    assert (results["preset"], results["method"], results["student"]) == (
        "res56_res20", "gdkd", "resnet8")  # fmt: skip
    assert results["seed"] == 0 and results["data"]["dataset"] == "cifar100"
    assert results["epochs_completed"] == EPOCHS and 0 <= results["best_top1"] <= 100
    assert results["model"].startswith("model.keras") and results["best_model"].startswith(
        f"best.keras: epoch {results['best_epoch']}"
    )
    assert results["images_per_s"] > 0 and results["compile_s"] > 0
    assert results["wall_time_s"] > 0 and results["starts"] == 1
    assert (output / "curves.png").stat().st_size > 10_000
    assert (output / "log.csv").read_text().count("\n") == 1 + EPOCHS
    config = json.loads((output / "run.json").read_text())
    assert config["preset"]["learning_rate"] == pytest.approx(0.05 * 16 / 64)  # scaled to batch
    assert config["backend"] == keras.backend.backend() and "keras" in config["versions"]
    if importlib.util.find_spec("tensorboard"):
        assert any((output / "tensorboard").rglob("*tfevents*"))
    student = keras.saving.load_model(output / "model.keras")
    assert student.count_params() == models.get_model("resnet8").count_params()
    keras.saving.load_model(output / "best.keras")
    assert [e for e, _ in ckpt.CheckpointStore(output / "backup").slots()] == [EPOCHS, EPOCHS - 1]


def test_evaluate_matches_the_last_epoch(workspace, whole_run, capsys):
    output, _ = whole_run
    args = ["evaluate", str(output / "model.keras"), "--data-dir", str(workspace / "data")]
    assert cli.main(args) == 0
    top1 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["top1"]
    results = json.loads((output / "results.json").read_text())
    assert abs(top1 - results["last_top1"]) < 1e-4


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_finished_run_with_a_damaged_model_exports_it_again(workspace, whole_run, damage,
                                                             capsys):  # fmt: skip
    run = _copy(whole_run[0], workspace, f"damaged-{damage}")
    if damage == "truncate":
        (run / "model.keras").write_bytes(b"")
    else:
        (run / "model.keras").unlink()
    assert cli.main(_args(workspace, run)) == 0
    assert "already complete" in capsys.readouterr().err
    _assert_same_model(run / "model.keras", whole_run[0] / "model.keras")


def test_a_truncated_newest_checkpoint_falls_back_and_retrains_the_same_epoch(
    workspace, whole_run, capsys
):
    run = _copy(whole_run[0], workspace, "truncated-backup")
    newest = run / "backup" / f"epoch-{EPOCHS:04d}" / ckpt.WEIGHTS_NAME
    newest.write_bytes(newest.read_bytes()[:1000])
    (run / "model.keras").unlink()
    with pytest.warns(UserWarning, match="previous good checkpoint"):
        assert cli.main(_args(workspace, run)) == 0
    assert f"resuming from epoch {EPOCHS}" in capsys.readouterr().err
    _assert_same_model(run / "model.keras", whole_run[0] / "model.keras")


def test_a_kill_inside_the_epoch_commit_resumes_without_training_an_epoch_twice(
    workspace, whole_run, monkeypatch
):
    run = workspace / "killed-in-commit"
    real_replace, calls = os.replace, []

    def replace(src, dst):
        if Path(dst).name == "epoch-0002":  # weights of epoch 2 written, not yet committed
            raise KeyboardInterrupt
        calls.append(dst)
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    assert cli.main(_args(workspace, run)) == 130  # "interrupted; run again to resume"
    monkeypatch.undo()
    assert [e for e, _ in ckpt.CheckpointStore(run / "backup").slots()] == [1]
    assert cli.main(_args(workspace, run)) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["epochs_completed"] == EPOCHS and results["starts"] == 2
    assert len(results_rows := (run / "log.csv").read_text().splitlines()) == 1 + EPOCHS, (
        results_rows
    )
    _assert_same_model(run / "model.keras", whole_run[0] / "model.keras")


@pytest.mark.slow
def test_a_sigkilled_run_resumes_to_the_same_weights(workspace, whole_run):
    command = [sys.executable, "-m", "keras_gdkd.cli"]
    broken = workspace / "sigkilled"
    process = subprocess.Popen(command + _args(workspace, broken), env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if (broken / "backup" / "epoch-0001").exists():
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (broken / "model.keras").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(command + _args(workspace, broken), env=_env(), capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Took over the lock" not in resumed.stderr or "pid" in resumed.stderr
    results = json.loads((broken / "results.json").read_text())
    assert results["starts"] == 2 and results["epochs_completed"] == EPOCHS
    _assert_same_model(broken / "model.keras", whole_run[0] / "model.keras")


def test_a_diverging_run_stops_with_exit_2_and_keeps_no_nan_model(workspace, capsys):
    run = workspace / "diverged"
    assert cli.main(_args(workspace, run, 2, "--lr", "1e6")) == 2
    err = capsys.readouterr().err
    assert "training diverged at epoch 1" in err and "hint: lower the learning rate" in err
    assert "Traceback" not in err
    assert not (run / "model.keras").exists()
    assert json.loads((run / "results.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize(
    "flag, value, message",
    [("--lr", "-1", "must be a positive number"), ("--lr", "nan", "must be a positive number"),
     ("--epochs", "0", "must be an integer >= 1"), ("--batch-size", "0", "must be an integer")],
)  # fmt: skip
def test_bad_numbers_are_refused_before_anything_starts(workspace, flag, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(_with(_args(workspace, workspace / "never"), flag, value))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (workspace / "never").exists()


@pytest.mark.parametrize(
    "extra, message",
    [(["--beta", "2"], "gdkd has no hyper-parameter beta; its hyper-parameters are k, w0"),
     (["--k", "100"], r"k must satisfy 1 <= k < num_classes, i.e. lie in [1, 99]"),
     (["--temperature", "0"], "temperature must be a finite positive number"),
     (["--method", "dist", "--standardize"], "dist has no hyper-parameter standardize")],
)  # fmt: skip
def test_bad_loss_overrides_are_refused_before_anything_starts(workspace, extra, message, capsys):
    assert cli.main(_with(_args(workspace, workspace / "never"), *extra[:2]) + extra[2:]) == 2
    assert message in capsys.readouterr().err
    assert not (workspace / "never").exists()


def test_loss_overrides_are_used_and_recorded(workspace):
    run = workspace / "dist-t2"
    extra = ["--temperature", "2", "--gamma", "1.5"]
    assert cli.main(_with(_args(workspace, run, 1), "--method", "dist") + extra) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["method"] == "dist"
    assert results["loss"] == {"beta": 2.0, "gamma": 1.5, "temperature": 2.0}
    config = json.loads((run / "run.json").read_text())
    assert config["preset"]["loss"] == results["loss"]
    header = (run / "log.csv").read_text().splitlines()[0].split(",")
    assert {"inter_loss", "intra_loss"} <= set(header)


def test_a_second_run_into_a_busy_folder_is_refused(workspace, whole_run, capsys):
    run = _copy(whole_run[0], workspace, "busy")
    hold = (
        "import sys, time\nfrom keras_gdkd.runs import RunLock\n"
        "RunLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(run)], env=_env(),
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli.main(_args(workspace, run)) == 2
        assert f"in use by another run (pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    "change, shown",
    [(["--lr", "0.1"], "preset.learning_rate"), (["--seed", "3"], "data.seed"),
     (["--method", "kd"], "preset.method"), (["--student", "resnet14"], "preset.student"),
     (["--temperature", "2"], "preset.loss.temperature"),
     (["--batch-size", "8"], "preset.batch_size")],
)  # fmt: skip
def test_a_resume_with_another_configuration_is_refused(workspace, whole_run, change, shown,
                                                        capsys):  # fmt: skip
    run = _copy(whole_run[0], workspace, f"changed-{shown}-{change[1]}")
    assert cli.main(_with(_args(workspace, run), *change)) == 2
    err = capsys.readouterr().err
    assert "was started with another configuration" in err and shown in err and "--force" in err


def test_force_continues_a_changed_run_and_missing_optional_packages_only_warn(
    workspace, whole_run, monkeypatch, capsys
):
    run = _copy(whole_run[0], workspace, "forced")
    shutil.rmtree(run / "tensorboard", ignore_errors=True)
    (run / "curves.png").unlink()
    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name in ("tensorboard", "matplotlib") else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert cli.main(_args(workspace, run, EPOCHS + 1, "--force")) == 0
    err = capsys.readouterr().err
    assert "--force: continuing" in err and "preset.epochs" in err
    assert "tensorboard is not installed" in err and "matplotlib is not installed" in err
    assert not (run / "tensorboard").exists() and not (run / "curves.png").exists()
    results = json.loads((run / "results.json").read_text())
    assert results["epochs_completed"] == EPOCHS + 1 and results["starts"] == 2


def test_missing_inputs_are_errors_before_the_output_folder_exists(workspace, tmp_path, capsys):
    missing_data = _with(_args(workspace, tmp_path / "out1"), "--data-dir", str(tmp_path / "no"))
    assert cli.main(missing_data) == 2
    assert "cifar-100-python" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert (
        cli.main(_with(_args(workspace, tmp_path / "out2"), "--data-dir", str(tmp_path / "empty")))
        == 2
    )
    teacher = str(tmp_path / "teacher.pth")
    assert cli.main(_with(_args(workspace, tmp_path / "out3"), "--teacher-weights", teacher)) == 2
    err = capsys.readouterr().err
    assert "weights file not found" in err and "Traceback" not in err
    assert not any((tmp_path / f"out{i}").exists() for i in (1, 2, 3))


def test_debug_shows_the_traceback(workspace, tmp_path):
    args = _with(_args(workspace, tmp_path / "out"), "--teacher-weights", str(tmp_path / "t.pth"))
    with pytest.raises(ValueError, match="weights file not found"):
        cli.main(["--debug", *args])


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="--help is backend-neutral")
@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_every_example_script_has_help(script):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / script), "--help"],
                            env=_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


def test_a_batch_size_override_scales_the_learning_rate_once():
    from keras_gdkd import optimizers, presets, train

    imagenet = presets.get("res34_res18", "gdkd")
    assert train.resolve_preset(imagenet, batch_size=256).learning_rate == pytest.approx(0.1)
    assert train.resolve_preset(imagenet, batch_size=256, learning_rate=0.3).learning_rate == 0.3
    # At the call site: the optimizer gets the scaled rate, and does not scale it again.
    run = train.resolve_preset(imagenet, batch_size=256)
    rate = optimizers.make_optimizer(run, 10, batch_size=run.batch_size).learning_rate
    assert float(keras.ops.convert_to_numpy(rate)) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        train.resolve_preset(imagenet, epochs=0)
    with pytest.raises(ValueError, match="learning rate must be a positive number"):
        train.resolve_preset(imagenet, learning_rate=float("inf"))
    with pytest.raises(ValueError, match="batch size must be an integer >= 1"):
        train.train_teacher("resnet8", data=train.DataSpec(), output="never", batch_size=0)


def test_quiet_start_up_still_shows_a_native_crash():
    script = ("import ctypes, sys\nfrom keras_gdkd import cli\n"
              "with cli._quiet_native_logging(True):\n"
              "    print('start-up noise', file=sys.stderr, flush=True)\n"
              "    ctypes.string_at(0)\n")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode != 0
    assert "Segmentation fault" in result.stderr and "start-up noise" not in result.stderr
