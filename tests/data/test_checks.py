"""Finding the data (resolve_source) and checking it (check_image_folder, check_data)."""

from __future__ import annotations

import gzip
import importlib
import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_gdkd import data as kd
from keras_gdkd.data import checks, testing

ROOT = Path(__file__).resolve().parents[2]


def _prepared_tfds(data_dir: Path, name: str, version: str = "3.0.2") -> Path:
    """The marker tfds writes last when a dataset is prepared (no records: only resolving)."""
    folder = data_dir / name / version
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text(json.dumps({"name": name}))
    return folder


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    return testing.write_fake_cifar100_python(tmp_path_factory.mktemp("cifar"), 120, 40, seed=2)


# --- resolve_source --------------------------------------------------------------------------


def test_resolve_source_cifar_file_layouts(cifar, tmp_path):
    root = cifar["archive"].parent
    assert kd.resolve_source("cifar100", str(root)) == (str(root), None)
    assert kd.resolve_source("cifar100", cifar["archive"]) == (str(cifar["archive"]), None)
    # The extracted folder itself, and a folder holding only the extracted folder.
    assert kd.resolve_source("cifar100", cifar["folder"]) == (str(cifar["folder"]), None)
    only_folder = tmp_path / "extracted"
    (only_folder / "cifar-100-python").mkdir(parents=True)
    for split in ("train", "test"):
        blob = (cifar["folder"] / split).read_bytes()
        (only_folder / "cifar-100-python" / split).write_bytes(blob)
    assert kd.resolve_source("cifar100", only_folder) == (str(only_folder), None)
    # What it resolves to loads.
    source, _ = kd.resolve_source("cifar100", only_folder)
    assert kd.load_cifar100(source, "test")[0].shape == (40, 32, 32, 3)


def test_resolve_source_cifar_errors_say_what_and_how(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError) as err:
        kd.resolve_source("cifar100", str(missing))
    message = str(err.value)
    assert f"data_dir {missing} does not exist" in message
    assert f"{missing}/cifar-100-python.tar.gz" in message
    assert f"{missing}/cifar-100-python/" in message
    assert f"prepared tfds cifar100 under {missing}" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message and "--data-dir" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"data_dir {empty} is empty.*cifar-100-python.tar.gz"):
        kd.resolve_source("cifar100", empty)
    junk = tmp_path / "junk"
    (junk / "notes").mkdir(parents=True)
    with pytest.raises(ValueError, match=f"{junk} holds no cifar100 data. Expected"):
        kd.resolve_source("cifar100", junk)
    half = tmp_path / "half"
    (half / "cifar-100-python").mkdir(parents=True)
    (half / "cifar-100-python" / "train").write_bytes(b"x")
    with pytest.raises(ValueError, match="cifar-100-python/ is there but lacks its train or test"):
        kd.resolve_source("cifar100", half)
    text = tmp_path / "readme.txt"
    text.write_text("hi")
    with pytest.raises(ValueError, match="is a file; expected a folder"):
        kd.resolve_source("cifar100", text)
    with pytest.raises(ValueError, match="dataset must be one of"):
        kd.resolve_source("mnist", str(tmp_path))
    with pytest.raises(ValueError, match="manual_dir is for ImageNet"):
        kd.resolve_source("cifar100", str(junk), manual_dir=str(junk))


def test_resolve_source_tfds(tmp_path, monkeypatch):
    data_dir = tmp_path / "tfds"
    _prepared_tfds(data_dir, "cifar100")
    assert kd.resolve_source("cifar100", str(data_dir)) == ("tfds", str(data_dir))
    # An unfinished preparation does not count.
    unfinished = tmp_path / "unfinished"
    _prepared_tfds(unfinished, "cifar100", version="incomplete.AB12CD_3.0.2")
    with pytest.raises(ValueError, match="holds no cifar100 data"):
        kd.resolve_source("cifar100", unfinished)
    # No data_dir: tfds' default folder ($TFDS_DATA_DIR) must hold the prepared dataset.
    monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
    assert kd.tfds_default_data_dir() == data_dir
    assert kd.resolve_source("cifar100", None) == ("tfds", None)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "nothing"))
    with pytest.raises(ValueError) as err:
        kd.resolve_source("cifar100", None)
    message = str(err.value)
    assert "no data_dir was given" in message and str(tmp_path / "nothing") in message
    assert "cifar-100-python.tar.gz" in message and "tfds build cifar100" in message


def test_resolve_source_imagenet(tmp_path, monkeypatch):
    root = tmp_path / "imagenet"
    testing.write_fake_image_folder(root / "train", 2, 1, size=(16, 16))
    testing.write_fake_image_folder(root / "val", 2, 1, size=(16, 16))
    assert kd.resolve_source("imagenet", str(root)) == (str(root), None)
    lone = tmp_path / "train_only"
    testing.write_fake_image_folder(lone / "train", 2, 1, size=(16, 16))
    with pytest.raises(ValueError, match=r"train/ is there but .*val/ is not; both are needed"):
        kd.resolve_source("imagenet", lone)
    with pytest.raises(ValueError, match=r"/train/<class>/ and .*/val/<class>/ image folders"):
        kd.resolve_source("imagenet", tmp_path / "none")
    tfds_dir = tmp_path / "tfds"
    _prepared_tfds(tfds_dir, "imagenet2012", "5.1.0")
    assert kd.resolve_source("imagenet", tfds_dir) == ("tfds", str(tfds_dir))
    # Not prepared yet: tfds builds it from the manual download folder, which must be complete.
    target = tmp_path / "target"
    target.mkdir()
    (target / "placeholder").write_text("")
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "ILSVRC2012_img_train.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="lacks .*ILSVRC2012_img_val.tar"):
        kd.resolve_source("imagenet", target, manual_dir=manual)
    (manual / "ILSVRC2012_img_val.tar").write_bytes(b"")
    assert kd.resolve_source("imagenet", target, manual) == ("tfds", str(target))
    # A new (missing or empty) tfds data_dir is fine too: tfds creates and fills it.
    (tmp_path / "new_empty").mkdir()
    for new in (tmp_path / "new_missing", tmp_path / "new_empty"):
        assert kd.resolve_source("imagenet", new, manual) == ("tfds", str(new))
        with pytest.raises(ValueError, match="does not exist|is empty"):
            kd.resolve_source("imagenet", new)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "nothing"))
    assert kd.resolve_source("imagenet", None, manual) == ("tfds", None)
    with pytest.raises(ValueError, match="ILSVRC2012_img_train.tar .*image-net.org"):
        kd.resolve_source("imagenet", None)


def test_resolve_source_and_checks_import_no_tensorflow(cifar):
    script = (
        "import sys\n"
        "from keras_gdkd.data import resolve_source, check_data, imagenet_class_names\n"
        f"print(resolve_source('cifar100', {str(cifar['archive'].parent)!r}))\n"
        f"assert check_data('cifar100', {str(cifar['archive'].parent)!r}).ok\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]


# --- check_image_folder ----------------------------------------------------------------------


def _corrupt_folder(root: Path) -> dict[str, str]:
    """A fake image folder with one broken file per kind; returns {file name: reason start}."""
    classes = testing.write_fake_image_folder(root, 2, 6, size=(24, 32))
    testing.write_fake_image_folder(root / "pngs", 1, 3, size=(24, 32), fmt="PNG")
    jpegs = sorted((root / classes[0]).iterdir())
    pngs = sorted((root / "pngs" / "n00000000").iterdir())
    jpeg, png = jpegs[0].read_bytes(), pngs[0].read_bytes()
    jpegs[1].write_bytes(b"")
    jpegs[2].write_bytes(jpeg[: len(jpeg) * 2 // 3])
    jpegs[3].write_bytes(b"<html>404 Not Found</html>")
    jpegs[4].write_bytes(jpeg + b"\x00" * 5000)  # bytes after the end marker: decodes fine
    jpegs[5].write_bytes(png)  # a PNG named .JPEG: the pipelines detect the format
    pngs[1].write_bytes(png[:-30])
    (root / classes[1] / "notes.txt").write_text("not an image extension: ignored")
    return {
        jpegs[1].name: "empty file",
        jpegs[2].name: "truncated JPEG",
        jpegs[3].name: "not a JPEG, PNG, GIF or BMP image (starts with 3c 68",
        pngs[1].name: "truncated PNG",
    }


def test_check_image_folder_finds_each_kind_of_damage(tmp_path):
    expected = _corrupt_folder(tmp_path)
    report = kd.check_image_folder(tmp_path)
    assert not report.ok and report.checked == 15
    assert {Path(p.path).name: p.reason for p in report.problems}.keys() == expected.keys()
    for problem in report.problems:
        assert problem.reason.startswith(expected[Path(problem.path).name]), problem
        assert Path(problem.path).is_file()
    assert [p.path for p in report.problems] == sorted(p.path for p in report.problems)
    text = str(report)
    assert text.startswith(f"images under {tmp_path}: 4 PROBLEM(S) (15 checked, fast check")
    assert all(f"BAD {p.path}: {p.reason}" in text for p in report.problems)
    assert "1 more" in report.summary(max_problems=3)
    with pytest.raises(ValueError, match="Bad data found .*full_decode=True") as err:
        report.raise_if_bad()
    assert expected and all(name in str(err.value) for name in expected)
    # One thread or many: the same report.
    single = kd.check_image_folder(tmp_path, workers=1)
    assert single.problems == report.problems and single.checked == report.checked


def test_check_image_folder_clean_empty_and_bad_arguments(tmp_path):
    testing.write_fake_image_folder(tmp_path / "ok", 3, 2, size=(16, 16))
    report = kd.check_image_folder(tmp_path / "ok")
    assert report.ok and report.checked == 6 and report.problems == ()
    assert "OK (6 checked" in str(report)
    report.raise_if_bad()  # nothing to raise
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    empty = kd.check_image_folder(tmp_path / "empty")
    assert not empty.ok and "no image files" in empty.problems[0].reason
    with pytest.raises(ValueError, match="is not a folder"):
        kd.check_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="workers"):
        kd.check_image_folder(tmp_path / "ok", workers=0)


def test_full_decode_catches_damage_inside_a_complete_file(tmp_path):
    pytest.importorskip("tensorflow")
    testing.write_fake_image_folder(tmp_path, 1, 3, size=(24, 32))
    files = sorted((tmp_path / "n00000000").iterdir())
    damaged = bytearray(files[0].read_bytes())
    damaged[20:120] = bytes(100)  # quantisation tables and frame header zeroed; markers intact
    files[0].write_bytes(bytes(damaged))
    assert kd.check_image_folder(tmp_path).ok  # start and end markers look fine
    report = kd.check_image_folder(tmp_path, full_decode=True)
    assert report.full_decode and report.checked == 3
    assert [p.path for p in report.problems] == [str(files[0])]
    reason = report.problems[0].reason
    assert reason.startswith("cannot be decoded: ") and "function_node" not in reason


def test_truncated_jpeg_breaks_training_and_the_check_names_it(tmp_path):
    tf = pytest.importorskip("tensorflow")
    testing.write_fake_image_folder(tmp_path / "train", 2, 2, size=(24, 32))
    testing.write_fake_image_folder(tmp_path / "val", 2, 1, size=(24, 32), seed=1)
    bad = tmp_path / "train" / "n00000001" / "n00000001_0.JPEG"
    bad.write_bytes(bad.read_bytes()[:300])
    run = kd.imagenet_train(tmp_path, batch_size=4, epochs=1, image_size=16)
    with pytest.raises(tf.errors.InvalidArgumentError):
        list(run.dataset.as_numpy_iterator())  # the failure names no file...
    report = kd.check_data("imagenet", str(tmp_path))  # ...the check does
    assert [p.path for p in report.problems] == [str(bad)]


# --- check_data ------------------------------------------------------------------------------


def test_check_data_cifar(cifar, tmp_path):
    report = kd.check_data("cifar100", str(cifar["archive"].parent))
    assert report.ok, str(report)
    assert "train: 120 images (32, 32, 3) uint8, 100 classes (the official set has 50000)" in str(
        report
    )
    assert kd.check_data("cifar100", str(cifar["folder"])).ok
    blob = cifar["archive"].read_bytes()
    for name, data, reason in (
        ("half", blob[: len(blob) // 2], "truncated or corrupt gzip stream"),
        # Only the gzip trailer (CRC, length) cut: the tar reader alone would not notice.
        ("trailer", blob[:-4], "truncated or corrupt gzip stream"),
    ):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "cifar-100-python.tar.gz").write_bytes(data)
        report = kd.check_data("cifar100", str(folder))
        assert not report.ok
        [problem] = report.problems
        assert problem.path == str(folder / "cifar-100-python.tar.gz")
        assert problem.reason.startswith(reason)
    broken = tmp_path / "pickles" / "cifar-100-python"
    broken.mkdir(parents=True)
    (broken / "train").write_bytes((cifar["folder"] / "train").read_bytes()[:-100])
    (broken / "test").write_bytes((cifar["folder"] / "test").read_bytes())
    [problem] = kd.check_data("cifar100", str(broken.parent)).problems
    assert f"{broken}/train is not a readable CIFAR-100 pickle" in problem.reason
    with pytest.raises(ValueError, match="does not exist"):
        kd.check_data("cifar100", str(tmp_path / "missing"))
    # A gzip file that is not a tar archive.
    other = tmp_path / "other"
    other.mkdir()
    with gzip.open(other / "cifar-100-python.tar.gz", "wb") as f:
        f.write(b"just text " * 100)
    [problem] = kd.check_data("cifar100", str(other)).problems
    assert "not a readable CIFAR-100 archive" in problem.reason


def test_check_data_imagenet_folders(tmp_path):
    good = tmp_path / "good"
    testing.write_fake_image_folder(good / "train", 3, 2, size=(16, 16))
    testing.write_fake_image_folder(good / "val", 3, 1, size=(16, 16), seed=1)
    report = kd.check_data("imagenet", str(good))
    assert report.ok and report.checked == 9
    assert "train: 3 classes, 6 images" in str(report) and "val: 3 classes, 3 images" in str(report)
    bad = tmp_path / "bad"
    testing.write_fake_image_folder(bad / "train", 4, 2, size=(16, 16))
    testing.write_fake_image_folder(bad / "val", 3, 1, size=(16, 16), seed=1)
    (bad / "val" / "n00000002" / "n00000002_0.JPEG").write_bytes(b"")
    for f in (bad / "train" / "n00000001").iterdir():
        f.unlink()
    report = kd.check_data("imagenet", str(bad))
    reasons = {p.path: p.reason for p in report.problems}
    assert reasons == {
        str(bad / "train"): "1 class folder(s) without images: n00000001",
        str(bad / "val"): (
            "val class folders differ from the train class list: "
            "missing 1 of 4 expected classes: n00000003"
        ),
        str(bad / "val" / "n00000002" / "n00000002_0.JPEG"): "empty file (0 bytes)",
    }


@pytest.fixture
def dummy_tfds(tmp_path, monkeypatch):
    """A small prepared tfds dataset (`dummy_mnist`, generated offline) standing in for cifar100."""
    tfds = pytest.importorskip("tensorflow_datasets")
    try:
        importlib.import_module("importlib_resources")
    except ImportError:
        # Older tfds installs import this backport when preparing any dataset.
        monkeypatch.setitem(sys.modules, "importlib_resources", importlib.resources)
    tfds.testing.DummyMnist(data_dir=tmp_path).download_and_prepare()
    monkeypatch.setitem(checks.TFDS_NAMES, "cifar100", "dummy_mnist")
    return tmp_path


def test_check_data_tfds(dummy_tfds):
    assert kd.resolve_source("cifar100", str(dummy_tfds)) == ("tfds", str(dummy_tfds))
    report = kd.check_data("cifar100", str(dummy_tfds))
    assert report.ok and report.checked == 2, str(report)  # one shard per split
    assert "train: 20 examples in 1 shard(s)" in str(report)
    full = kd.check_data("cifar100", str(dummy_tfds), full_decode=True)
    assert full.ok and full.checked == 2 + 40, str(full)
    shards = sorted(dummy_tfds.glob("dummy_mnist/*/dummy_mnist-train.tfrecord*"))
    blob = shards[0].read_bytes()
    shards[0].write_bytes(blob[: len(blob) // 2])
    damaged = kd.check_data("cifar100", str(dummy_tfds), full_decode=True)
    assert not damaged.ok and "train" in damaged.problems[0].path
    shards[0].unlink()
    [problem] = kd.check_data("cifar100", str(dummy_tfds)).problems
    assert problem.path == str(shards[0]) and problem.reason == "shard file missing"


def test_report_is_a_plain_value():
    problem = kd.DataProblem("a/b.JPEG", "empty file (0 bytes)")
    report = kd.DataReport("images under a", 3, (problem,), ("train: 1 class",), 0.25)
    assert str(problem) == "a/b.JPEG: empty file (0 bytes)"
    assert str(report).splitlines() == [
        "images under a: 1 PROBLEM(S) (3 checked, fast check, 0.2 s)",
        "  train: 1 class",
        "  BAD a/b.JPEG: empty file (0 bytes)",
    ]
    assert not report.ok and kd.DataReport("x", 0).ok
    assert np.isclose(report.seconds, 0.25)


def test_public_names_resolve():
    for name in kd.__all__:
        assert getattr(kd, name) is not None
    assert set(kd.__all__) <= set(dir(kd))
    with pytest.raises(AttributeError):
        kd.no_such_name  # noqa: B018
