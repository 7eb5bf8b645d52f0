"""Sweeps: the grid, the rescaled schedule, validation before any run, sweep.json, the figure."""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from keras_gdkd import models, presets
from keras_gdkd.analysis import sweeps
from keras_gdkd.data import testing as fake
from keras_gdkd.runs import RunError

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class StubRunner:
    """Records each call; its top-1 is a known function of the run, so the summary is checked."""

    def __init__(self, fail_at=None):
        self.calls = []
        self.fail_at = fail_at

    def __call__(self, method, preset, seed, out):
        self.calls.append((method, preset, seed, Path(out)))
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt("killed")
        best = self.top1(method, _param_value(preset), seed)
        return {"best_top1": best, "last_top1": best - 1.0}

    @staticmethod
    def top1(method, value, seed):
        return 50.0 + 3.0 * len(method) + float(value) + 0.5 * seed


def _param_value(preset):
    return preset.loss.get_config()["temperature"]


def _parser():
    parser = argparse.ArgumentParser(prog="keras-gdkd sweep")
    sweeps.add_arguments(parser)
    return parser


def test_the_schedule_is_rescaled_with_python_round():
    # 18.75 -> 19, 22.5 -> 22 (half to even), 26.25 -> 26; warm-up 2.5 -> 2.
    assert sweeps.rescale_schedule((150, 180, 210), 20, 240, 30) == ((19, 22, 26), 2)
    assert sweeps.rescale_schedule((150, 180, 210), 20, 240, 240) == ((150, 180, 210), 20)
    assert sweeps.rescale_schedule((150, 180, 210), 0, 240, 30) == ((19, 22, 26), 0)
    # Decays at or after the last epoch never act and are dropped; a warm-up stays >= 1.
    assert sweeps.rescale_schedule((150, 180, 210), 20, 240, 1) == ((), 1)
    assert sweeps.rescale_schedule((150, 180, 210), 20, 240, 4) == ((2, 3), 1)
    with pytest.raises(ValueError, match="next length that works is 3 epochs"):
        sweeps.rescale_schedule((30, 60, 90), 1, 100, 2)  # (1, 1) after dropping 2


def test_the_grid_runs_every_method_value_and_seed_with_the_rescaled_preset(tmp_path, capsys):
    base = presets.get("res56_res20", "gdkd")
    runner = StubRunner()
    sweep = sweeps.run_sweep(
        base,
        "temperature",
        ["1", 2, 4.0],
        methods=["gdkd", "dkd", "kd"],
        seeds=[0, 1],
        epochs=30,
        output=tmp_path,
        runner=runner,
    )

    expected = [(m, t, s) for m in ("gdkd", "dkd", "kd") for t in (1.0, 2.0, 4.0) for s in (0, 1)]
    assert [(m, _param_value(p), s) for m, p, s, _ in runner.calls] == expected
    for method, preset, seed, out in runner.calls:
        stock = presets.get("res56_res20", method)
        assert preset.method == method and preset.epochs == 30
        assert preset.lr_decay_epochs == (19, 22, 26)
        assert preset.warmup_epochs == (0 if method == "kd" else 2)
        # Only the temperature differs from the method's own loss.
        assert preset.loss == stock.loss.replace(temperature=_param_value(preset))
        assert (preset.student, preset.learning_rate) == (stock.student, stock.learning_rate)
        label = f"{_param_value(preset):g}"
        assert out == tmp_path / method / f"temperature={label}" / f"seed{seed}"
    err = capsys.readouterr().err
    assert err.count("learning-rate decays (150, 180, 210) -> (19, 22, 26)") == 1
    assert "gdkd, dkd: 20 -> 2" in err and "kd: 0 -> 0" in err

    on_disk = json.loads((tmp_path / "sweep.json").read_text())
    assert on_disk == sweep
    assert (sweep["param"], sweep["values"], sweep["epochs"]) == ("temperature", [1, 2, 4], 30)
    assert len(sweep["runs"]) == 18
    for run in sweep["runs"]:
        best = StubRunner.top1(run["method"], run["value"], run["seed"])
        assert run["best_top1"] == best and run["last_top1"] == best - 1.0
        assert run["wall_time_s"] >= 0
    for method in ("gdkd", "dkd", "kd"):
        for value in (1, 2, 4):
            bests = [StubRunner.top1(method, value, s) for s in (0, 1)]
            cell = sweep["summary"][method][str(value)]
            assert cell["n"] == 2
            assert cell["mean"] == pytest.approx(statistics.fmean(bests))
            assert cell["std"] == pytest.approx(statistics.stdev(bests))
            assert cell["last_mean"] == pytest.approx(statistics.fmean(bests) - 1.0)


def test_other_methods_keep_the_given_presets_overrides(tmp_path):
    base = presets.get("res56_res20", "gdkd").replace(student="resnet8", batch_size=16)
    runner = StubRunner()
    sweeps.run_sweep(
        base, "temperature", [2], methods=["gdkd", "kd"], epochs=2, output=tmp_path, runner=runner
    )
    kd = runner.calls[1][1]
    assert (kd.method, kd.student, kd.batch_size) == ("kd", "resnet8", 16)
    assert (kd.ce_weight, kd.distill_weight) == (0.1, 0.9)  # KD's own weights


def test_fixed_loss_parameters_apply_to_every_run_and_are_checked_first(tmp_path):
    base = presets.get("res56_res20", "gdkd")
    runner = StubRunner()
    args = dict(epochs=2, output=tmp_path, runner=runner)
    sweeps.run_sweep(base, "temperature", [1, 2], loss_overrides={"k": 3, "w2": 2.0}, **args)
    assert {(p.loss_config["k"], p.loss_config["w2"]) for _, p, *_ in runner.calls} == {(3, 2.0)}
    with pytest.raises(ValueError, match="do not fit kd: kd has no hyper-parameter k"):
        sweeps.run_sweep(
            base, "temperature", [1], methods=["gdkd", "kd"], loss_overrides={"k": 3}, **args
        )
    with pytest.raises(ValueError, match="temperature is the swept parameter"):
        sweeps.run_sweep(base, "temperature", [1], loss_overrides={"temperature": 2.0}, **args)
    assert len(runner.calls) == 2


def test_a_loss_changed_in_the_given_preset_stays_with_its_method(tmp_path):
    gdkd = presets.get("res56_res20", "gdkd")
    base = gdkd.replace(loss=gdkd.loss.replace(k=3))
    runner = StubRunner()
    sweeps.run_sweep(
        base, "temperature", [2], methods=["gdkd", "kd"], epochs=2, output=tmp_path, runner=runner
    )
    ran = {preset.method: preset for _, preset, *_ in runner.calls}
    assert ran["gdkd"].loss_config["k"] == 3
    assert ran["kd"].loss_config["temperature"] == 2.0 and "k" not in ran["kd"].loss_config


@pytest.mark.parametrize(
    "param, values, methods, message",
    [
        ("k", [2, 100], ["gdkd"], "k=100"),  # k = C leaves no class outside the top-k
        ("k", [1, 3], ["gdkd", "gdkd3"], "k=1"),  # gdkd3 needs k >= 2
        ("k", [2], ["gdkd", "kd"], "not a hyper-parameter of kd"),
        ("beta", [2], ["dkd", "gdkd"], "not a hyper-parameter of gdkd"),
        ("temperature", [4, 0], ["kd"], "temperature=0"),
        ("temperature", [4, "4.0"], ["kd"], "repeat"),
        ("k", [2.5], ["gdkd"], "integers"),
        ("method", ["gdkd", "nope"], None, "nope"),
    ],
)
def test_an_invalid_grid_raises_before_any_run(tmp_path, param, values, methods, message):
    runner = StubRunner()
    with pytest.raises(ValueError, match=message):
        sweeps.run_sweep(
            presets.get("res56_res20", "gdkd"),
            param,
            values,
            methods=methods,
            epochs=30,
            output=tmp_path / "out",
            runner=runner,
        )
    assert runner.calls == [] and not (tmp_path / "out").exists()


def test_too_few_epochs_for_the_schedule_raise_before_any_run(tmp_path):
    runner = StubRunner()
    with pytest.raises(ValueError, match="next length that works is 3 epochs"):
        sweeps.run_sweep(
            presets.get("res34_res18", "gdkd"),
            "temperature",
            [1],
            epochs=2,
            output=tmp_path,
            runner=runner,
        )
    assert runner.calls == []


def test_a_method_sweep_runs_the_listed_methods_unchanged(tmp_path):
    runner = StubRunner()
    sweep = sweeps.run_sweep(
        presets.get("res56_res20", "gdkd"),
        "method",
        ["gdkd", "gdkd_v1", "gdkd_v3"],
        epochs=30,
        output=tmp_path,
        runner=runner,
    )
    assert [
        (m, p.method, p.loss == presets.get("res56_res20", m).loss) for m, p, _, _ in runner.calls
    ] == [(m, m, True) for m in ("gdkd", "gdkd_v1", "gdkd_v3")]
    assert runner.calls[1][3] == tmp_path / "gdkd_v1" / "method=gdkd_v1" / "seed0"
    assert set(sweep["summary"]) == {"gdkd", "gdkd_v1", "gdkd_v3"}
    path = sweeps.plot_sweep(sweep, tmp_path / "sweep_method.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="do not pass methods"):
        sweeps.run_sweep(
            presets.get("res56_res20", "gdkd"),
            "method",
            ["gdkd"],
            methods=["gdkd"],
            epochs=30,
            output=tmp_path,
            runner=runner,
        )


def test_a_killed_sweep_keeps_its_results_and_the_rerun_skips_finished_runs(tmp_path):
    base = presets.get("res56_res20", "gdkd")
    args = dict(methods=["gdkd", "kd"], seeds=[0, 1], epochs=8, output=tmp_path)
    killed = StubRunner(fail_at=4)
    with pytest.raises(KeyboardInterrupt):
        sweeps.run_sweep(base, "temperature", [1, 4], runner=killed, **args)
    kept = json.loads((tmp_path / "sweep.json").read_text())
    assert [(r["method"], r["value"], r["seed"]) for r in kept["runs"]] == [
        ("gdkd", 1, 0),
        ("gdkd", 1, 1),
        ("gdkd", 4, 0),
    ]
    assert kept["summary"]["gdkd"]["1"]["n"] == 2 and "kd" not in kept["summary"]
    results = json.loads(
        (tmp_path / "gdkd" / "temperature=1" / "seed0" / "results.json").read_text()
    )
    assert (results["status"], results["epochs"]) == ("complete", 8)

    rerun = StubRunner()
    sweep = sweeps.run_sweep(base, "temperature", [1, 4], runner=rerun, **args)
    assert [(m, _param_value(p), s) for m, p, s, _ in rerun.calls] == [
        ("gdkd", 4.0, 1),
        ("kd", 1.0, 0),
        ("kd", 1.0, 1),
        ("kd", 4.0, 0),
        ("kd", 4.0, 1),
    ]
    assert len(sweep["runs"]) == 8 and sweep["runs"][:3] == kept["runs"]

    again = StubRunner()
    assert (
        sweeps.run_sweep(base, "temperature", [1, 4], runner=again, **args)["runs"]
        == (sweep["runs"])
    )
    assert again.calls == []
    # Another length or parameter into the same folder is refused rather than mixed in.
    with pytest.raises(RunError, match="sweep of temperature over 8 epochs"):
        sweeps.run_sweep(base, "temperature", [1], runner=again, **{**args, "epochs": 9})


def test_damaged_sweep_and_results_files_are_rebuilt_by_the_rerun(tmp_path):
    base = presets.get("res56_res20", "gdkd")
    args = dict(seeds=[0], epochs=8, output=tmp_path)
    sweeps.run_sweep(base, "temperature", [1, 4], runner=StubRunner(), **args)
    (tmp_path / "sweep.json").write_text('{"param": "temper')  # killed mid-write elsewhere
    (tmp_path / "gdkd" / "temperature=4" / "seed0" / "results.json").write_bytes(b"")
    rerun = StubRunner()
    sweep = sweeps.run_sweep(base, "temperature", [1, 4], runner=rerun, **args)
    assert [_param_value(p) for _, p, _, _ in rerun.calls] == [4.0]  # only the damaged run
    assert [r["value"] for r in sweep["runs"]] == [1, 4]
    assert json.loads((tmp_path / "sweep.json").read_text())["runs"] == sweep["runs"]


def test_the_stub_sweep_draws_its_figure_and_the_cli_redraws_it(tmp_path, capsys):
    sweep = sweeps.run_sweep(
        presets.get("res56_res20", "gdkd"),
        "temperature",
        [1, 2, 4, 8],
        methods=["gdkd", "dkd", "kd"],
        seeds=[0, 1, 2],
        epochs=30,
        output=tmp_path,
        runner=StubRunner(),
    )
    assert sweep["teacher_top1"] == presets.get("res56_res20").reference.teacher_top1
    png = sweeps.plot_sweep(sweep, tmp_path / "sweep_temperature.png")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 20_000
    png.unlink()
    args = _parser().parse_args(
        [
            "--preset",
            "res56_res20",
            "--param",
            "temperature",
            "--values",
            "1",
            "--output",
            str(tmp_path),
            "--plot-only",
        ]
    )
    assert sweeps.main(args) == 0
    out = capsys.readouterr().out
    assert png.read_bytes()[:8] == PNG_MAGIC and str(png) in out
    assert "gdkd" in out and "dkd" in out and "kd" in out
    args.param = "k"
    with pytest.raises(RunError, match="not k"):
        sweeps.main(args)


def test_sweep_help_and_missing_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in (
        "--preset",
        "--methods",
        "--param",
        "--values",
        "--epochs",
        "--seeds",
        "--teacher-weights",
        "--data-dir",
        "--output",
        "--plot-only",
    ):
        assert flag in help_text
    args = _parser().parse_args(
        [
            "--preset",
            "res56_res20",
            "--param",
            "temperature",
            "--values",
            "1",
            "--output",
            str(tmp_path),
        ]
    )
    with pytest.raises(RunError, match="--epochs and --teacher-weights required") as error:
        sweeps.main(args)
    assert "--plot-only" in error.value.hint


def test_the_sweep_options_parse_without_importing_keras():
    script = (
        "import argparse, sys\nfrom keras_gdkd.analysis import sweeps\n"
        "p = argparse.ArgumentParser(); sweeps.add_arguments(p)\n"
        "p.parse_args(['--preset', 'x', '--param', 'k', '--values', '1', '--output', 'o'])\n"
        "assert 'keras' not in sys.modules, 'keras was imported'"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A fake CIFAR-100 archive (64 train / 32 test images) and a small random teacher."""
    root = tmp_path_factory.mktemp("sweep")
    fake.write_fake_cifar100_python(root / "data", num_train=64, num_test=32)
    shutil.rmtree(root / "data" / "cifar-100-python")  # only the .tar.gz stays
    keras.utils.set_random_seed(0)
    models.get_model("resnet8", num_classes=100).save(root / "teacher.keras")
    return root


@pytest.mark.slow
def test_a_real_sweep_completes_and_a_rerun_skips_it(workspace, monkeypatch, capsys):
    output = workspace / "sweep"
    args = _parser().parse_args(
        [
            "--preset",
            "res56_res20",
            "--methods",
            "gdkd",
            "--student",
            "resnet8",
            "--param",
            "temperature",
            "--values",
            "2",
            "4",
            "--epochs",
            "1",
            "--seeds",
            "0",
            "--teacher-weights",
            str(workspace / "teacher.keras"),
            "--data-dir",
            str(workspace / "data"),
            "--batch-size",
            "16",
            "--verbose",
            "0",
            "--output",
            str(output),
        ]
    )
    assert sweeps.main(args) == 0
    sweep = json.loads((output / "sweep.json").read_text())
    assert [(r["method"], r["value"], r["seed"]) for r in sweep["runs"]] == [
        ("gdkd", 2, 0),
        ("gdkd", 4, 0),
    ]
    for run, value in zip(sweep["runs"], ("2", "4")):
        assert 0 <= run["best_top1"] <= 100 and 0 <= run["last_top1"] <= 100
        folder = output / "gdkd" / f"temperature={value}" / "seed0"
        results = json.loads((folder / "results.json").read_text())
        assert (results["status"], results["epochs_completed"]) == ("complete", 1)
        assert run["best_top1"] == results["best_top1"]
        config = json.loads((folder / "run.json").read_text())
        assert config["preset"]["loss"]["temperature"] == float(value)
        assert config["preset"]["student"] == "resnet8" and config["preset"]["epochs"] == 1
        assert config["preset"]["warmup_epochs"] == 1 and config["preset"]["lr_decay_epochs"] == []
    assert sweep["summary"]["gdkd"]["2"]["n"] == 1
    assert (output / "sweep_temperature.png").read_bytes()[:8] == PNG_MAGIC
    assert "figure:" in capsys.readouterr().out

    from keras_gdkd import train

    def must_not_run(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train, "distill", must_not_run)
    assert sweeps.main(args) == 0
    assert json.loads((output / "sweep.json").read_text())["runs"] == sweep["runs"]
    assert capsys.readouterr().err.count(": finished, best top-1") == 2
