"""The CLI and damaged or mismatched data: one clear line naming the file, exit status 2."""

import shutil

import keras
import pytest

from keras_gdkd import cli, models
from keras_gdkd.data import testing as fake


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    """train/ with three classes, val/ with the same three, and a copy whose val lacks one."""
    root = tmp_path_factory.mktemp("imagenet")
    for split in ("train", "val"):
        fake.write_fake_image_folder(root / "good" / split, num_classes=3, per_class=2,
                                     size=(40, 50))  # fmt: skip
    shutil.copytree(root / "good", root / "missing-val-class")
    shutil.rmtree(root / "missing-val-class" / "val" / "n00000001")
    return root


def test_check_data_names_a_truncated_jpeg(imagenet, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(imagenet / "good", damaged)
    jpeg = sorted((damaged / "train" / "n00000002").iterdir())[0]
    jpeg.write_bytes(jpeg.read_bytes()[:200])
    assert cli.main(["check-data", "--dataset", "imagenet", "--data-dir", str(damaged)]) == 2
    assert str(jpeg) in capsys.readouterr().err
    assert cli.main(["check-data", "--dataset", "imagenet", "--data-dir",
                     str(imagenet / "good")]) == 0  # fmt: skip


def test_val_classes_must_equal_train_classes(imagenet, tmp_path, capsys):
    keras.utils.set_random_seed(0)
    model = models.get_model("resnet8", num_classes=1000, input_shape=(224, 224, 3))
    model.save(tmp_path / "model.keras")
    args = ["evaluate", str(tmp_path / "model.keras"), "--dataset", "imagenet", "--data-dir",
            str(imagenet / "missing-val-class"), "--batch-size", "4"]  # fmt: skip
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "n00000001" in err and "Traceback" not in err
    # The class list saved with a run must match the data it is evaluated on.
    (tmp_path / "classes.json").write_text('["n00000000", "n00000001", "n00000009"]')
    args[args.index("--data-dir") + 1] = str(imagenet / "good")
    assert cli.main(args) == 2
    assert "differ from those the model was trained on" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_cifar_archive_is_named_before_the_output_folder_exists(tmp_path, damage,
                                                                         capsys):  # fmt: skip
    fake.write_fake_cifar100_python(tmp_path / "data", num_train=16, num_test=8)
    shutil.rmtree(tmp_path / "data" / "cifar-100-python")
    archive = tmp_path / "data" / "cifar-100-python.tar.gz"
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"<html>" * 100)
    keras.utils.set_random_seed(0)
    models.get_model("resnet8").save(tmp_path / "teacher.keras")
    args = ["distill", "--preset", "res56_res20", "--student", "resnet8", "--teacher-weights",
            str(tmp_path / "teacher.keras"), "--data-dir", str(tmp_path / "data"),
            "--output", str(tmp_path / "out"), "--verbose", "0"]  # fmt: skip
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert str(archive) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_no_data_dir_and_no_prepared_tfds_says_how_to_provide_the_data(tmp_path, monkeypatch,
                                                                      capsys):  # fmt: skip
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    (tmp_path / "m.keras").write_bytes(b"")  # the data is checked before the model is read
    assert cli.main(["evaluate", str(tmp_path / "m.keras")]) == 2
    err = capsys.readouterr().err
    assert "--data-dir" in err and "Traceback" not in err
