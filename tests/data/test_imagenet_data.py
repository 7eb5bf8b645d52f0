"""ImageNet pipelines: folder/TFDS sources, torchvision crop semantics, determinism."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")
Image = pytest.importorskip("PIL.Image")

# What Keras' multi-process distribution calls to find the global batch size (-1: unknown).
from tensorflow.python.data.experimental.ops.distribute import compute_batch_size  # noqa: E402

from keras_gdkd import data as kd  # noqa: E402
from keras_gdkd.data import augment, testing  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    testing.write_fake_image_folder(root / "train", num_classes=3, per_class=3, size=(300, 400))
    # PNG (lossless) for the exact geometry checks of the validation recipe.
    testing.write_fake_image_folder(root / "val", 3, 2, size=(300, 400), seed=1, fmt="PNG")
    return root


def _batches(ds):
    return list(ds.as_numpy_iterator())


def test_folder_listing_sorted_like_imagefolder(folder):
    paths, labels, classes = kd.list_image_folder(folder / "train")
    assert classes == sorted(classes) and len(classes) == 3
    assert labels.dtype == np.int32 and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(p.split("/")[-2] == classes[y] for p, y in zip(paths, labels, strict=True))


def test_folder_train_shapes_determinism_resume(folder):
    run = kd.imagenet_train(folder, batch_size=4, epochs=3, seed=1)
    assert (run.num_examples, run.steps_per_epoch) == (9, 2)
    full = _batches(run.dataset)
    assert len(full) == 6
    for x, y in full:
        assert x.shape == (4, 224, 224, 3) and x.dtype == np.float32
        assert y.dtype == np.int32 and y.min() >= 0 and y.max() < 3
        assert not np.allclose(x[0], x[1])
    resumed = _batches(
        kd.imagenet_train(folder, batch_size=4, epochs=3, seed=1, initial_epoch=2).dataset
    )
    for a, b in zip(full[4:], resumed, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # Different epochs draw different crops (and, almost surely, a different order).
    assert not np.array_equal(full[0][0], full[2][0])


def test_random_resized_crop_window_matches_torchvision_rules():
    h, w = 300, 400
    for s in range(200):
        seed = tf.constant([s, 11], tf.int64)
        top, left, ch, cw = kd.random_resized_crop_window(h, w, seed).numpy().tolist()
        assert 0 <= top and top + ch <= h and 0 <= left and left + cw <= w
        # Reference: torchvision's get_params on the same uniforms.
        u = tf.random.stateless_uniform([10, 4], seed).numpy().astype(np.float64)
        for a in range(10):
            area = h * w * (0.08 + 0.92 * u[a, 0])
            ar = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * u[a, 1])
            rw, rh = round(math.sqrt(area * ar)), round(math.sqrt(area / ar))
            if 0 < rw <= w and 0 < rh <= h:
                rt = math.floor(u[a, 2] * (h - rh + 1))
                rl = math.floor(u[a, 3] * (w - rw + 1))
                assert (top, left, ch, cw) == (rt, rl, rh, rw)
                break
        # Scale and ratio ranges, up to the rounding of the sides.
        assert 0.08 * h * w * 0.9 <= ch * cw <= h * w
        assert 3 / 4 * 0.95 <= cw / ch <= 4 / 3 * 1.05


def test_random_resized_crop_fallback_is_centre_crop():
    # A 10x1000 strip: no sample can fit, so torchvision falls back to a centre crop with
    # the ratio clamped to 4/3: h = 10, w = round(10 * 4/3) = 13.
    window = kd.random_resized_crop_window(10, 1000, tf.constant([0, 1], tf.int64))
    assert window.numpy().tolist() == [0, (1000 - 13) // 2, 10, 13]
    window = kd.random_resized_crop_window(1000, 10, tf.constant([0, 1], tf.int64))
    assert window.numpy().tolist() == [(1000 - 13) // 2, 0, 13, 10]


def _png(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_train_image_flips_about_half():
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    encoded = tf.constant(_png(src))
    ratio = (64 / 48, 64 / 48)  # full-image window every time: only the flip is random
    crop = augment.imagenet_train_image(
        encoded,
        tf.constant([0, 0], tf.int64),
        size=32,
        scale=(1.0, 1.0),
        ratio=ratio,
        normalized=False,
    ).numpy()
    flips = 0
    for s in range(60):
        out = augment.imagenet_train_image(
            encoded,
            tf.constant([s, 3], tf.int64),
            size=32,
            scale=(1.0, 1.0),
            ratio=ratio,
            normalized=False,
        ).numpy()
        same, mirrored = np.array_equal(out, crop), np.array_equal(out, crop[:, ::-1])
        assert same or mirrored
        flips += int(mirrored)
    assert 15 <= flips <= 45


def test_val_short_side_256_centre_224_non_square(folder):
    ds = kd.imagenet_val(folder, batch_size=4)
    x_spec, y_spec = ds.element_spec
    assert x_spec.shape.as_list() == [None, 224, 224, 3] and y_spec.shape.as_list() == [None]
    assert int(compute_batch_size(ds)) == 4  # readable by Keras' multi-process distribution
    batches = _batches(ds)
    assert [len(y) for _, y in batches] == [4, 2]  # all 6 images, partial batch kept
    x = np.concatenate([b[0] for b in batches])
    paths, labels, _ = kd.list_image_folder(folder / "val")
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), labels)
    for img, path in zip(x, paths, strict=True):
        src = Image.open(path).convert("RGB")  # 400 wide, 300 high
        # torchvision: Resize(256) -> (341, 256), CenterCrop(224) -> left round(58.5) = 58, top 16.
        ref = np.asarray(src.resize((341, 256), Image.BILINEAR), np.float32)[16:240, 58:282]
        pixels = (img * STD + MEAN) * 255.0
        assert np.abs(pixels - ref).mean() < 1.5  # PIL vs TF bilinear kernels differ slightly
        shifted = np.asarray(src.resize((341, 256), Image.BILINEAR), np.float32)[16:240, 60:284]
        assert np.abs(pixels - shifted).mean() > np.abs(pixels - ref).mean()
    again = np.concatenate([b[0] for b in _batches(ds)])
    np.testing.assert_array_equal(x, again)
    assert augment.resize_short_side_size(300, 400).numpy().tolist() == [256, 341]
    assert augment.resize_short_side_size(500, 375).numpy().tolist() == [341, 256]
    np.testing.assert_allclose(augment.IMAGENET_MEAN, MEAN)
    np.testing.assert_allclose(augment.IMAGENET_STD, STD)


def test_tfds_source(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        run = kd.imagenet_train("tfds", data_dir=tmp_path, batch_size=2, epochs=2, seed=3)
        again = kd.imagenet_train("tfds", data_dir=tmp_path, batch_size=2, epochs=2, seed=3)
        val = kd.imagenet_val("tfds", data_dir=tmp_path, batch_size=4)
        assert (run.num_examples, run.steps_per_epoch) == (6, 3)
        first, second = _batches(run.dataset), _batches(again.dataset)
        assert len(first) == 6
        for (x, y), (x2, y2) in zip(first, second, strict=True):
            assert x.shape == (2, 224, 224, 3) and x.dtype == np.float32
            assert y.dtype == np.int32 and y.min() >= 0 and y.max() < 1000
            np.testing.assert_array_equal(x, x2)
            np.testing.assert_array_equal(y, y2)
        assert [len(y) for _, y in _batches(val)] == [4, 2]
        assert int(compute_batch_size(val)) == 4
        names = tfds.builder("imagenet2012", data_dir=tmp_path).info.features["label"].names
        pinned = kd.imagenet_val("tfds", data_dir=tmp_path, batch_size=4, class_names=names)
        assert [len(y) for _, y in _batches(pinned)] == [4, 2]
        with pytest.raises(ValueError, match="numbers its 1000 labels differently"):
            kd.imagenet_val("tfds", data_dir=tmp_path, class_names=names[::-1])
        with pytest.raises(
            ValueError, match=r"missing 1 of 1000 expected classes: x; 1 unexpected: n\d+"
        ):
            kd.imagenet_train("tfds", data_dir=tmp_path, epochs=1, class_names=names[:-1] + ["x"])


def _tree(root, train_classes, val_classes, per_class=1, size=(20, 24)):
    """train/ and val/ with the given class names (copied from a fake folder)."""
    src = testing.write_fake_image_folder(root / "src", len(train_classes), per_class, size)
    for split, names in (("train", train_classes), ("val", val_classes)):
        for i, name in enumerate(names):
            (root / split / name).mkdir(parents=True)
            for f in sorted((root / "src" / src[i % len(src)]).iterdir()):
                (root / split / name / f.name).write_bytes(f.read_bytes())
    return root


def test_val_labels_follow_the_train_class_list_by_name(tmp_path):
    root = _tree(tmp_path, ["a", "b", "c", "d"], ["a", "b", "c", "d"])
    assert kd.imagenet_class_names(root) == ["a", "b", "c", "d"]
    assert kd.imagenet_class_names(root / "train") == ["a", "b", "c", "d"]
    val = kd.imagenet_val(root, batch_size=8, image_size=16, resize_size=16)
    assert _batches(val)[0][1].tolist() == [0, 1, 2, 3]
    # The val folder given directly finds its train/ sibling for the class list.
    direct = kd.imagenet_val(root / "val", batch_size=8, image_size=16, resize_size=16)
    assert _batches(direct)[0][1].tolist() == [0, 1, 2, 3]
    # A pinned list numbers both splits: "d" is label 0 everywhere.
    pinned = ["d", "c", "b", "a"]
    val = kd.imagenet_val(root, batch_size=8, image_size=16, resize_size=16, class_names=pinned)
    assert _batches(val)[0][1].tolist() == [0, 1, 2, 3]  # listing order follows the pinned list
    paths, labels, classes = kd.list_image_folder(root / "val", pinned)
    assert classes == pinned and [p.split("/")[-2] for p in paths] == pinned
    train = kd.imagenet_train(root, batch_size=4, epochs=1, image_size=16, class_names=pinned)
    assert sorted(_batches(train.dataset)[0][1].tolist()) == [0, 1, 2, 3]


def test_val_class_set_must_match_train(tmp_path):
    # "b" missing from val: numbering val on its own would shift c -> 1 and d -> 2.
    missing = _tree(tmp_path / "m", ["a", "b", "c", "d"], ["a", "c", "d"])
    with pytest.raises(ValueError, match=r"missing 1 of 4 expected classes: b") as err:
        kd.imagenet_val(missing, batch_size=2)
    assert str(missing / "val") in str(err.value)
    extra = _tree(tmp_path / "e", ["a", "b"], ["a", "b", "zz", "zy"])
    with pytest.raises(ValueError, match=r"2 unexpected: zy, zz"):
        kd.imagenet_val(extra, batch_size=2)
    many = _tree(tmp_path / "n", [f"c{i:02d}" for i in range(12)], ["c00"])
    with pytest.raises(
        ValueError, match=r"missing 11 of 12 .*c01, c02, c03, c04, c05, \.\.\. \(6 more\)"
    ):
        kd.imagenet_val(many, batch_size=2)
    ok = _tree(tmp_path / "o", ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match="class_names has duplicates"):
        kd.imagenet_train(ok, epochs=1, batch_size=1, class_names=["a", "a"])
    with pytest.raises(ValueError, match=r"missing 1 of 3 expected classes: c"):
        kd.imagenet_train(ok, epochs=1, batch_size=1, class_names=["a", "b", "c"])
    # Without train/ next to it, the val numbering has no reference.
    lone = tmp_path / "lone"
    testing.write_fake_image_folder(lone / "val", 2, 1, size=(20, 24))
    with pytest.raises(ValueError, match="class_names"):
        kd.imagenet_val(lone, batch_size=2)
    val = kd.imagenet_val(lone, batch_size=2, image_size=16, resize_size=16,
                          class_names=["n00000000", "n00000001"])  # fmt: skip
    assert _batches(val)[0][1].tolist() == [0, 1]


def test_fake_image_folder_is_learnable_and_deterministic(tmp_path):
    classes = testing.write_fake_image_folder(tmp_path / "a", 4, 3, size=(32, 40), fmt="PNG")
    testing.write_fake_image_folder(tmp_path / "b", 4, 3, size=(32, 40), fmt="PNG")
    colours = testing.class_colours(4)
    for label, name in enumerate(classes):
        for f in sorted((tmp_path / "a" / name).iterdir()):
            assert f.read_bytes() == (tmp_path / "b" / name / f.name).read_bytes()
            mean = np.asarray(Image.open(f), np.float32).reshape(-1, 3).mean(0)
            assert np.argmin(((colours - mean) ** 2).sum(1)) == label
