"""`keras-gdkd analyze`: options, saved logits, generated CIFAR-100 and mock ImageNet end to end."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_gdkd import models
from keras_gdkd.analysis import command, plots
from keras_gdkd.analysis import logits as logits_io
from keras_gdkd.data import load_cifar100
from keras_gdkd.data import testing as fake
from keras_gdkd.runs.errors import RunError

ROOT = Path(__file__).resolve().parents[2]


def _env():
    return {**os.environ, "KERAS_BACKEND": keras.backend.backend(), "PYTHONPATH": str(ROOT)}


def _run(*argv):
    parser = argparse.ArgumentParser(prog="keras-gdkd analyze")
    command.add_arguments(parser)
    return command.main(parser.parse_args([str(a) for a in argv]))


def _strict(path):
    def refuse(name):
        raise AssertionError(f"{path} holds {name}")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def _pngs(folder):
    return sorted(p.name for p in (Path(folder) / "figures").glob("*.png"))


def _write_logits(folder, n=40, c=10, seed=0, labels=None):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c if labels is None else labels
    t = rng.normal(0.0, 2.0, (n, c)).astype("float32")
    t[np.arange(n), y] += 4.0
    logits_io.save_logits(folder / "teacher.npz", t, y)
    logits_io.save_logits(folder / "kd.npz", 0.5 * t + rng.normal(size=(n, c)), y)
    logits_io.save_logits(folder / "gdkd.npz", 0.9 * t + rng.normal(size=(n, c)), y)
    return t, y


def test_help_lists_the_options_without_starting_keras():
    script = (
        "import sys\n"
        "from keras_gdkd.analysis import command\n"
        "try:\n"
        "    command.build_parser().parse_args(['--help'])\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 0\n"
        "assert 'keras' not in sys.modules and 'matplotlib' not in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert done.returncode == 0, done.stderr
    for option in (
        "--teacher",
        "--student",
        "LABEL=PATH[@ARCH]",
        "--dataset",
        "--split",
        "--max-examples",
        "--preset",
        "--method",
        "--k",
        "--w0",
        "--w1",
        "--w2",
        "--temperature",
        "--temperatures",
        "--ratio-threshold",
        "--figure-style",
        "--batch-size",
        "--logits-dir",
        "--output",
    ):
        assert option in done.stdout, option


def test_the_keras_gdkd_command_has_analyze(capsys):
    from keras_gdkd import cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["analyze", "--help"])
    assert stop.value.code == 0
    assert "--logits-dir" in capsys.readouterr().out


def test_model_specs_are_parsed():
    parse = command.parse_model
    assert parse("kd=runs/kd/model.keras") == command.ModelSpec("kd", "runs/kd/model.keras", None)
    assert parse("a=ckpt.pth@resnet8x4") == command.ModelSpec("a", "ckpt.pth", "resnet8x4")
    assert parse("init=@resnet8").random_init
    assert parse("kd") == command.ModelSpec("kd", None, None)
    assert parse("x@y.pth@resnet20", label="teacher") == command.ModelSpec(
        "teacher", "x@y.pth", "resnet20"
    )
    for text, message in (
        ("teacher=t.keras", "cannot name a file"),
        ("a b=t.keras", "cannot name a file"),
        ("kd=", "nothing after"),
        ("kd=ckpt.pth@", "no architecture"),
    ):
        with pytest.raises(RunError, match=message):
            parse(text)


def test_saved_logits_give_every_key_and_the_seven_figures(tmp_path):
    _write_logits(tmp_path / "logits")
    out = tmp_path / "out"
    assert _run("--logits-dir", tmp_path / "logits", "--output", out) == 0
    saved = _strict(out / "analysis.json")
    json.dumps(saved, allow_nan=False)
    assert list(saved) == ["meta", "teacher", "students"]
    assert list(saved["students"]) == ["gdkd", "kd"]  # every npz but teacher.npz, sorted
    for student in saved["students"].values():
        assert set(student) == {"agreement", "gradients", "class_mean"}
    meta = saved["meta"]
    assert (meta["num_examples"], meta["num_classes"], meta["split"]) == (40, 10, "test")
    assert meta["students"] == ["gdkd", "kd"]
    assert meta["sources"] == {"teacher": "logits file", "gdkd": "logits file", "kd": "logits file"}
    assert _pngs(out) == sorted(plots.FIGURES)
    assert (out / "arrays.npz").is_file() and not (out / "logits").exists()


def test_loss_options_preset_and_overrides(tmp_path):
    _write_logits(tmp_path / "logits")
    out = tmp_path / "p"
    assert (
        _run(
            "--logits-dir",
            tmp_path / "logits",
            "--student",
            "kd",
            "--preset",
            "res32x4_res8x4",
            "--method",
            "gdkd",
            "--w2",
            "4",
            "--temperatures",
            "4",
            "--figure-style",
            "gdkd",
            "--output",
            out,
        )
        == 0
    )
    meta = _strict(out / "analysis.json")["meta"]
    assert meta["students"] == ["kd"]
    loss = meta["loss"]
    assert (loss["k"], loss["w1"], loss["w2"], loss["temperature"]) == (5, 2.0, 4.0, 4.0)
    assert (meta["temperatures"], meta["figure_style"]) == ([4.0], "gdkd")
    out = tmp_path / "d"
    assert (
        _run(
            "--logits-dir",
            tmp_path / "logits",
            "--preset",
            "res56_res20",
            "--method",
            "dkd",
            "--temperature",
            "1",
            "--output",
            out,
        )
        == 0
    )
    loss = _strict(out / "analysis.json")["meta"]["loss"]
    assert (loss["name"], loss["temperature"], loss["k"]) == ("dkd", 1.0, 5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--output", "o"], "no student"),
        (
            ["--student", "kd=missing.keras", "--teacher", "t.keras", "--output", "o"],
            "weights file not found",
        ),
        (["--student", "kd", "--output", "o"], "no model given"),
        (
            [
                "--student",
                "kd=@resnet8",
                "--student",
                "kd=@resnet8",
                "--teacher",
                "t.keras",
                "--output",
                "o",
            ],
            "given twice",
        ),
        (
            ["--teacher", "@resnet8", "--student", "kd=@resnet8", "--output", "o"],
            "untrained teacher",
        ),
        (
            [
                "--dataset",
                "imagenet",
                "--split",
                "train",
                "--student",
                "s=@resnet18",
                "--teacher",
                "t.keras",
                "--output",
                "o",
            ],
            "CIFAR-100 only",
        ),
    ],
)
def test_bad_arguments_raise_a_run_error_before_keras_work(tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.keras").write_bytes(b"not read before the checks")
    with pytest.raises(RunError, match=message):
        _run(*argv)
    assert not (tmp_path / "o").exists()


def test_a_checkpoint_without_architecture_and_bad_loss_values_are_refused(tmp_path):
    (tmp_path / "ckpt.pth").write_bytes(b"")
    with pytest.raises(RunError, match="architecture is needed") as caught:
        _run("--teacher", tmp_path / "ckpt.pth", "--student", "s=@resnet8", "--output", tmp_path)
    assert "@ARCH" in caught.value.hint
    _write_logits(tmp_path / "logits")
    with pytest.raises(RunError, match="k=10 leaves no class"):
        _run("--logits-dir", tmp_path / "logits", "--k", "10", "--output", tmp_path / "o")
    with pytest.raises(RunError, match="invalid loss settings"):
        _run(
            "--logits-dir",
            tmp_path / "logits",
            "--method",
            "kd",
            "--k",
            "3",
            "--output",
            tmp_path / "o",
        )


def test_logits_of_other_data_are_refused(tmp_path):
    _write_logits(tmp_path / "logits")
    logits, labels = logits_io.load_logits(tmp_path / "logits" / "kd.npz")
    logits_io.save_logits(tmp_path / "logits" / "kd.npz", logits, labels[::-1])
    with pytest.raises(RunError, match="labels of .*kd.npz differ") as caught:
        _run("--logits-dir", tmp_path / "logits", "--output", tmp_path / "o")
    assert "same data" in caught.value.hint


def test_the_module_entry_point_prints_one_error_line_and_exits_2(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_gdkd.analysis.command",
            "--teacher",
            "nope.keras",
            "--student",
            "s=@resnet8",
            "--output",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert done.returncode == 2
    assert "keras-gdkd: error: --teacher: weights file not found: nope.keras" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """Generated CIFAR-100 files (16 train / 32 test images), a resnet8 teacher and student."""
    root = tmp_path_factory.mktemp("cifar")
    fake.write_fake_cifar100_python(root / "data", num_train=16, num_test=32)
    keras.utils.set_random_seed(0)
    models.get_model("resnet8", num_classes=100).save(root / "teacher.keras")
    keras.utils.set_random_seed(1)
    models.get_model("resnet8", num_classes=100).save(root / "student.keras")
    return root


@pytest.mark.slow
def test_cifar_end_to_end_then_again_from_the_saved_logits(cifar, tmp_path, monkeypatch):
    out = tmp_path / "out"
    student = f"trained={cifar / 'student.keras'}"
    argv = [
        "--teacher",
        cifar / "teacher.keras",
        "--student",
        student,
        "--student",
        "init=@resnet8",
        "--data-dir",
        cifar / "data",
        "--batch-size",
        "16",
        "--output",
        out,
    ]
    assert _run(*argv) == 0
    saved = _strict(out / "analysis.json")
    meta = saved["meta"]
    assert (meta["num_examples"], meta["num_classes"], meta["dataset"]) == (32, 100, "cifar100")
    assert meta["sources"]["init"] == "random init resnet8"
    assert meta["sources"]["teacher"] == str(cifar / "teacher.keras")
    with np.load(out / "arrays.npz") as arrays:
        labels = arrays["labels"]
    assert meta["classes_without_examples"] == 100 - len(set(labels.tolist()))
    assert _pngs(out) == sorted(plots.FIGURES)
    t, y = logits_io.load_logits(out / "logits" / "teacher.npz")
    s, _ = logits_io.load_logits(out / "logits" / "trained.npz")
    np.testing.assert_array_equal(y, labels)
    assert t.shape == (32, 100) and not np.allclose(t, s)
    parsed = command.build_parser().parse_args(["--data-dir", str(cifar / "data"), "--output", "o"])
    images = np.concatenate([x for x, _ in command._dataset(parsed, "cifar100")])
    model = keras.saving.load_model(cifar / "student.keras")
    np.testing.assert_allclose(s, keras.ops.convert_to_numpy(model(images)), rtol=1e-4, atol=1e-4)
    agreement = saved["students"]["trained"]["agreement"]
    assert agreement["top1_agreement"] == pytest.approx(np.mean(s.argmax(1) == t.argmax(1)))

    monkeypatch.setattr(plots, "plot_all", lambda *args, **kwargs: [])  # drawn above already
    again = tmp_path / "again"
    assert _run("--logits-dir", out / "logits", "--output", again) == 0
    redone = _strict(again / "analysis.json")
    assert redone["students"] == saved["students"] and redone["teacher"] == saved["teacher"]


def test_cifar_training_images_in_file_order(cifar, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "plot_all", lambda *args, **kwargs: [])  # drawn elsewhere
    argv = [
        "--teacher",
        cifar / "teacher.keras",
        "--student",
        "init=@resnet8",
        "--split",
        "train",
        "--max-examples",
        "8",
        "--data-dir",
        cifar / "data",
        "--output",
        tmp_path,
    ]
    assert _run(*argv) == 0
    meta = _strict(tmp_path / "analysis.json")["meta"]
    assert (meta["num_examples"], meta["split"]) == (8, "train")
    _, labels = logits_io.load_logits(tmp_path / "logits" / "teacher.npz")
    _, file_labels = load_cifar100(str(cifar / "data"), "train")
    np.testing.assert_array_equal(labels, file_labels[:8])  # no shuffling, no augmentation


def test_a_new_student_joins_saved_logits_of_the_same_data_only(cifar, tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "plot_all", lambda *args, **kwargs: [])  # drawn elsewhere
    _, train_labels = load_cifar100(str(cifar / "data"), "train")
    _, test_labels = load_cifar100(str(cifar / "data"), "test")
    assert not np.array_equal(train_labels[:8], test_labels[:8])
    logits = tmp_path / "logits"
    rng = np.random.default_rng(0)
    for name in ("teacher", "init"):
        logits_io.save_logits(logits / f"{name}.npz", rng.normal(size=(8, 100)), train_labels[:8])
    before = (logits / "teacher.npz").read_bytes()
    common = [
        "--split",
        "train",
        "--max-examples",
        "8",
        "--data-dir",
        cifar / "data",
        "--logits-dir",
        logits,
    ]
    student = f"trained={cifar / 'student.keras'}"
    assert _run("--student", "init", "--student", student, *common, "--output", tmp_path / "o") == 0
    assert (logits / "teacher.npz").read_bytes() == before  # reused, not recomputed
    trained, labels = logits_io.load_logits(logits / "trained.npz")
    assert trained.shape == (8, 100)
    np.testing.assert_array_equal(labels, train_labels[:8])
    assert list(_strict(tmp_path / "o" / "analysis.json")["students"]) == ["init", "trained"]
    with pytest.raises(RunError, match="labels of cifar100 test differ") as caught:
        _run(
            "--student",
            "new=@resnet8",
            "--logits-dir",
            logits,
            "--max-examples",
            "8",
            "--data-dir",
            cifar / "data",
            "--output",
            tmp_path / "mixed",
        )
    assert "--max-examples" in caught.value.hint


@pytest.mark.slow
def test_imagenet_through_tfds_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    manual = tmp_path / "manual"
    manual.mkdir()
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        (manual / name).write_bytes(b"")  # tfds would build from these; mock_data does not
    keras.utils.set_random_seed(0)
    models.get_model("resnet18").save(tmp_path / "teacher.keras")
    with tfds.testing.mock_data(num_examples=6):
        assert (
            _run(
                "--dataset",
                "imagenet",
                "--data-dir",
                tmp_path / "tfds",
                "--manual-dir",
                manual,
                "--teacher",
                tmp_path / "teacher.keras",
                "--student",
                "r18=@resnet18",
                "--seed",
                "1",
                "--batch-size",
                "4",
                "--output",
                tmp_path / "out",
            )
            == 0
        )
    saved = _strict(tmp_path / "out" / "analysis.json")
    meta = saved["meta"]
    assert (meta["num_examples"], meta["num_classes"], meta["split"]) == (6, 1000, "validation")
    assert meta["classes_without_examples"] >= 994
    assert _pngs(tmp_path / "out") == sorted(plots.FIGURES)
    t, y = logits_io.load_logits(tmp_path / "out" / "logits" / "teacher.npz")
    assert t.shape == (6, 1000) and y.min() >= 0 and y.max() < 1000
