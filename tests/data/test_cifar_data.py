"""CIFAR-100 pipelines: formats, recipe semantics and the (seed, epoch) determinism contract."""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

# What Keras' multi-process distribution calls to find the global batch size (-1: unknown).
from tensorflow.python.data.experimental.ops.distribute import compute_batch_size  # noqa: E402

from keras_gdkd import data as kd  # noqa: E402
from keras_gdkd.data import augment, testing  # noqa: E402

MEAN = np.array([0.5071, 0.4867, 0.4408], np.float32)
STD = np.array([0.2675, 0.2565, 0.2761], np.float32)


@pytest.fixture(scope="module")
def cifar_files(tmp_path_factory):
    return testing.write_fake_cifar100_python(tmp_path_factory.mktemp("cifar"), 100, 37, seed=3)


@pytest.fixture(scope="module")
def indexed_arrays():
    # Label = example index, so every output image can be traced back to its source.
    images, _ = testing.fake_cifar100_arrays(100, seed=5)
    return images, np.arange(100, dtype=np.int32)


def _batches(ds):
    return [(x, y) for x, y in ds.as_numpy_iterator()]


def test_python_archive_folder_and_parent_agree(cifar_files):
    for src in (cifar_files["archive"], cifar_files["folder"], cifar_files["archive"].parent):
        for split in ("train", "test"):
            x, y = kd.load_cifar100(src, split)
            assert x.shape == (len(cifar_files[split][0]), 32, 32, 3) and x.dtype == np.uint8
            assert y.dtype == np.int32 and y.min() >= 0 and y.max() < 100
            np.testing.assert_array_equal(x, cifar_files[split][0])
            np.testing.assert_array_equal(y, cifar_files[split][1])
    # Channel-planar rows: byte 0 is R of pixel (0, 0), byte 1024 its G, byte 2048 its B.
    row = cifar_files["train"][0][0].transpose(2, 0, 1).reshape(-1)
    np.testing.assert_array_equal(kd.load_cifar100(cifar_files["folder"])[0][0, 0, 0], row[::1024])


def test_python_loader_caches_and_refuses_foreign_pickles(cifar_files, tmp_path):
    a = kd.load_cifar100_python(cifar_files["archive"])
    assert kd.load_cifar100_python(cifar_files["archive"]) is a
    bad = tmp_path / "cifar-100-python"
    bad.mkdir()
    (bad / "train").write_bytes(pickle.dumps({b"data": tmp_path}))
    (bad / "test").write_bytes(pickle.dumps({b"data": tmp_path}))
    with pytest.raises(ValueError, match=r"cifar-100-python/train.*refused"):
        kd.load_cifar100_python(bad)


def _archive_with(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def test_truncated_archive_names_the_file(cifar_files, tmp_path):
    blob = cifar_files["archive"].read_bytes()
    for cut in (20, len(blob) // 2):
        truncated = tmp_path / f"cut{cut}" / "cifar-100-python.tar.gz"
        truncated.parent.mkdir()
        truncated.write_bytes(blob[:cut])
        with pytest.raises(
            ValueError, match=r"cut\d+/cifar-100-python.tar.gz.*truncated or corrupt"
        ):
            kd.load_cifar100(truncated.parent)
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"this is not an archive" * 10)
    with pytest.raises(ValueError, match="garbage.tar.gz"):
        kd.load_cifar100(garbage)


def test_archive_member_errors_name_file_and_member(cifar_files, tmp_path):
    good = (cifar_files["folder"] / "test").read_bytes()
    missing = _archive_with(tmp_path / "missing.tar.gz", {"test": good})
    with pytest.raises(ValueError, match=r"missing.tar.gz lacks the CIFAR-100 pickles \['train'\]"):
        kd.load_cifar100(missing)
    corrupt = _archive_with(tmp_path / "corrupt.tar.gz", {"train": good[:500], "test": good})
    with pytest.raises(ValueError, match=r"corrupt.tar.gz \(member cifar-100-python/train\)"):
        kd.load_cifar100(corrupt)
    wrong_keys = pickle.dumps({b"pixels": np.zeros((2, 3072), np.uint8)})
    keys = _archive_with(tmp_path / "keys.tar.gz", {"train": wrong_keys, "test": good})
    with pytest.raises(ValueError, match=r"keys.tar.gz.*b'data' and b'fine_labels'"):
        kd.load_cifar100(keys)
    shape = pickle.dumps({b"data": np.zeros((2, 1000), np.uint8), b"fine_labels": [0, 1]})
    shaped = _archive_with(tmp_path / "shape.tar.gz", {"train": shape, "test": good})
    with pytest.raises(ValueError, match=r"shape.tar.gz.*\(N, 3072\), got uint8 \(2, 1000\)"):
        kd.load_cifar100(shaped)
    labels = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 100]})
    labelled = _archive_with(tmp_path / "labels.tar.gz", {"train": labels, "test": good})
    with pytest.raises(ValueError, match=r"labels.tar.gz.*\[0, 100\), found \[0, 100\]"):
        kd.load_cifar100(labelled)
    count = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0]})
    counted = _archive_with(tmp_path / "count.tar.gz", {"train": count, "test": good})
    with pytest.raises(ValueError, match=r"count.tar.gz.*2 images but labels of shape \(1,\)"):
        kd.load_cifar100(counted)


def test_tfds_source(tmp_path):
    with tfds.testing.mock_data(num_examples=20):
        train = kd.cifar100_train("tfds", data_dir=tmp_path, batch_size=8, epochs=1)
        test = kd.cifar100_test("tfds", data_dir=tmp_path, batch_size=8)
    assert train.num_examples == 20 and train.steps_per_epoch == 2
    for x, y in _batches(train.dataset):
        assert x.shape == (8, 32, 32, 3) and x.dtype == np.float32
        assert y.dtype == np.int32 and 0 <= y.min() and y.max() < 100
    sizes = [len(y) for _, y in _batches(test)]
    assert sizes == [8, 8, 4]


def test_train_shapes_dtypes_steps(cifar_files):
    data = kd.cifar100_train(cifar_files["archive"], batch_size=32, epochs=2, seed=1)
    assert (data.num_examples, data.steps_per_epoch) == (100, 3)
    batches = _batches(data.dataset)
    assert len(batches) == 6  # drop_remainder: 100 // 32 batches per epoch, 2 epochs
    for x, y in batches:
        assert x.shape == (32, 32, 32, 3) and x.dtype == np.float32
        assert y.shape == (32,) and y.dtype == np.int32
    kw = data.fit_kwargs()
    assert kw["steps_per_epoch"] == 3 and kw["epochs"] == 2 and kw["initial_epoch"] == 0


def _match_crop(out_u8, src, pad=4):
    """Returns (dy, dx, flipped) such that out is that crop of the zero-padded source."""
    padded = np.pad(src, ((pad, pad), (pad, pad), (0, 0)))
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy : dy + 32, dx : dx + 32]
            if np.array_equal(out_u8, crop):
                return dy, dx, False
            if np.array_equal(out_u8, crop[:, ::-1]):
                return dy, dx, True
    return None


def test_pad_crop_flip_semantics_per_image(indexed_arrays):
    images, labels = indexed_arrays
    data = kd.cifar100_train((images, labels), batch_size=50, epochs=3, seed=0)
    draws = []
    for b, (x, y) in enumerate(_batches(data.dataset)):
        # Undo the normalisation exactly enough to recover uint8 pixels.
        pixels = np.rint((x * STD + MEAN) * 255.0).astype(np.int64)
        assert pixels.min() >= 0 and pixels.max() <= 255
        batch_draws = []
        for img, idx in zip(pixels, y, strict=True):
            found = _match_crop(img.astype(np.uint8), images[idx])
            assert found is not None, "output is not a pad-4 crop (+flip) of its source image"
            batch_draws.append(found)
            dy, dx, _ = found
            # The padded border must be exact zeros before normalisation.
            zero = (0.0 - MEAN) / STD
            if dy < 4:
                np.testing.assert_allclose(
                    x[list(y).index(idx)][: 4 - dy],
                    np.broadcast_to(zero, (4 - dy, 32, 3)),
                    atol=1e-5,
                )
        # Per-image, not per-batch: offsets vary within one batch.
        assert len({d[:2] for d in batch_draws}) > 10, f"batch {b} shares crops"
        draws += batch_draws
    flips = np.mean([d[2] for d in draws])
    assert 0.38 < flips < 0.62, flips
    offsets = np.array([d[:2] for d in draws])
    assert offsets.min() == 0 and offsets.max() == 8


def test_normalisation_and_test_pipeline(cifar_files):
    ds = kd.cifar100_test(cifar_files["folder"], batch_size=16)
    # Mapped per example, then batched: static shapes but the batch dim, and a batch size
    # that tf.data (hence Keras' multi-process distribution) can read off the graph.
    x_spec, y_spec = ds.element_spec
    assert x_spec.shape.as_list() == [None, 32, 32, 3] and x_spec.dtype == tf.float32
    assert y_spec.shape.as_list() == [None] and y_spec.dtype == tf.int32
    assert int(compute_batch_size(ds)) == 16
    first = _batches(ds)
    second = _batches(ds)
    assert [len(y) for _, y in first] == [16, 16, 5]  # all 37 examples, partial batch kept
    x = np.concatenate([b[0] for b in first])
    y = np.concatenate([b[1] for b in first])
    ref_x, ref_y = cifar_files["test"]
    np.testing.assert_array_equal(y, ref_y)  # file order, no shuffling
    np.testing.assert_allclose(x, (ref_x / 255.0 - MEAN) / STD, atol=1e-5)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    assert augment.CIFAR100_MEAN == tuple(MEAN.tolist()) or np.allclose(augment.CIFAR100_MEAN, MEAN)
    np.testing.assert_allclose(augment.CIFAR100_STD, STD)


def test_determinism_and_resume(indexed_arrays):
    src = indexed_arrays
    run = kd.cifar100_train(src, batch_size=25, epochs=3, seed=7)
    again = kd.cifar100_train(src, batch_size=25, epochs=3, seed=7)
    resumed = kd.cifar100_train(src, batch_size=25, epochs=3, seed=7, initial_epoch=1)
    other_seed = kd.cifar100_train(src, batch_size=25, epochs=1, seed=8)
    full = _batches(run.dataset)
    steps = run.steps_per_epoch
    assert len(full) == 3 * steps
    for a, b in zip(full, _batches(again.dataset), strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # A run restarted at epoch 1 sees exactly the uninterrupted run's epochs 1 and 2.
    tail = _batches(resumed.dataset)
    assert len(tail) == 2 * steps
    for a, b in zip(full[steps:], tail, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    for a, b in zip(full[2 * steps :], _batches(run.epoch_dataset(2)), strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    orders = [np.concatenate([y for _, y in full[e * steps : (e + 1) * steps]]) for e in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(100))  # each epoch is a permutation
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    seed_order = np.concatenate([y for _, y in _batches(other_seed.dataset)])
    assert not np.array_equal(orders[0], seed_order)


def test_draws_do_not_depend_on_batch_size(indexed_arrays):
    """An example's augmentation depends on (seed, epoch, index), not on its batch."""
    a = kd.cifar100_train(indexed_arrays, batch_size=20, epochs=1, seed=2)
    b = kd.cifar100_train(indexed_arrays, batch_size=50, epochs=1, seed=2)
    xa = {int(i): img for x, y in _batches(a.dataset) for img, i in zip(x, y, strict=True)}
    xb = {int(i): img for x, y in _batches(b.dataset) for img, i in zip(x, y, strict=True)}
    for i in xa:
        np.testing.assert_array_equal(xa[i], xb[i])


def test_strong_augment_is_deterministic(indexed_arrays):
    make = lambda: kd.cifar100_train(  # noqa: E731
        indexed_arrays, batch_size=16, epochs=1, seed=4, strong_augment=True
    )
    first = _batches(make().dataset.take(2))
    second = _batches(make().dataset.take(2))
    plain = _batches(
        kd.cifar100_train(indexed_arrays, batch_size=16, epochs=1, seed=4).dataset.take(2)
    )
    for a, b, p in zip(first, second, plain, strict=True):
        assert a[0].shape == (16, 32, 32, 3) and a[0].dtype == np.float32
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], p[1])  # same order as the plain stream
        assert not np.allclose(a[0], p[0])


def test_keras_fit_consumes_the_stream(indexed_arrays):
    import keras

    data = kd.cifar100_train(indexed_arrays, batch_size=25, epochs=2, seed=0)
    model = keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(100)]
    )
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(**data.fit_kwargs(), verbose=0)
    assert len(history.history["loss"]) == 2
    assert model.evaluate(kd.cifar100_test(indexed_arrays, batch_size=64), verbose=0) > 0


def test_bad_arguments(indexed_arrays):
    with pytest.raises(ValueError):
        kd.cifar100_train(indexed_arrays, batch_size=8, epochs=2, initial_epoch=2)
    with pytest.raises(ValueError):
        kd.cifar100_train(indexed_arrays, batch_size=101, epochs=1)
    # Both a FileNotFoundError (as before) and a ValueError (bad input).
    with pytest.raises(FileNotFoundError):
        kd.load_cifar100("/nonexistent/cifar")
    with pytest.raises(ValueError, match="/nonexistent/cifar"):
        kd.load_cifar100("/nonexistent/cifar")
    with pytest.raises(ValueError, match="batch_size"):
        kd.cifar100_test(indexed_arrays, batch_size=0)


def test_fake_data_is_learnable_by_class():
    """The class shows in each image: nearest class colour of the image mean is right."""
    images, labels = testing.fake_cifar100_arrays(1000, seed=11)
    assert np.bincount(labels, minlength=100).tolist() == [10] * 100  # balanced
    again = testing.fake_cifar100_arrays(1000, seed=11)
    np.testing.assert_array_equal(images, again[0])
    np.testing.assert_array_equal(labels, again[1])
    assert not np.array_equal(images, testing.fake_cifar100_arrays(1000, seed=12)[0])
    colours = testing.class_colours(100)
    means = images.reshape(len(images), -1, 3).mean(1)
    nearest = np.argmin(((means[:, None, :] - colours[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).mean() > 0.95
    # Still images, not flat colour: per-image pixel spread from stripes and noise.
    assert images.reshape(len(images), -1).std(1).min() > 10


def test_small_cnn_beats_chance_on_demo_data(tmp_path):
    import keras

    folder = kd.write_demo_cifar100(tmp_path / "demo", num_train=2000, num_test=500, seed=0)
    assert sorted(p.name for p in folder.iterdir()) == ["cifar-100-python.tar.gz"]
    assert kd.resolve_source("cifar100", str(folder)) == (str(folder), None)
    train = kd.cifar100_train(str(folder), batch_size=100, epochs=2, seed=0)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(100),
        ]
    )
    model.compile(
        keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(**train.fit_kwargs(), verbose=0)  # 40 steps
    accuracy = model.evaluate(kd.cifar100_test(str(folder), batch_size=100), verbose=0)[1]
    assert accuracy > 0.15, accuracy  # chance is 0.01


def test_demo_archive_is_reproducible_and_checked(tmp_path):
    a = kd.write_demo_cifar100(tmp_path / "a", num_train=200, num_test=100, seed=3)
    b = kd.write_demo_cifar100(tmp_path / "b", num_train=200, num_test=100, seed=3)
    archive = "cifar-100-python.tar.gz"
    assert (a / archive).read_bytes() == (b / archive).read_bytes()
    x, y = kd.load_cifar100(a, "test")
    assert x.shape == (100, 32, 32, 3) and y.shape == (100,)
    with pytest.raises(ValueError, match="num_train"):
        kd.write_demo_cifar100(tmp_path / "c", num_train=0, num_test=10)
