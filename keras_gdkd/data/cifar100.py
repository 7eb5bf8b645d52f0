"""CIFAR-100 pipelines: in-memory uint8 arrays, batch-vectorised per-image augmentation."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from keras_gdkd.data import _seeding, augment, pipeline, sources

NUM_CLASSES = 100
Source = str | os.PathLike | tuple[np.ndarray, np.ndarray]


def load_cifar100(
    source: Source = "tfds",
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns `(images (N, 32, 32, 3) uint8, labels (N,) int32)` of one split.

    `source`: `"tfds"` (TensorFlow Datasets `cifar100` in `data_dir`), a path to
    `cifar-100-python.tar.gz` / the extracted `cifar-100-python/` folder / a folder holding
    either, or an `(images, labels)` pair of arrays (used as is, whatever `split`).
    """
    if isinstance(source, tuple):
        images, labels = source
        return np.asarray(images, np.uint8), np.asarray(labels, np.int32)
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR-100 splits are 'train' and 'test', got {split!r}")
    if isinstance(source, str) and source == "tfds":
        return sources.load_cifar100_tfds(data_dir, download=download)[split]
    return sources.load_cifar100_python(source)[split]


def cifar100_train(
    source: Source = "tfds",
    *,
    batch_size: int = 64,
    epochs: int,
    initial_epoch: int = 0,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    strong_augment: bool | augment.StrongAugment = False,
) -> pipeline.TrainData:
    """CIFAR-100 training stream of the GDKD CIFAR recipe, see `TrainData` for the epoch contract.

    Per image: zero-pad 4, random 32x32 crop, random horizontal flip, normalise with the
    CIFAR-100 mean/std. Shuffle order and all draws derive from (seed, epoch, example
    index) only. Yields `(float32 (B, 32, 32, 3), int32 (B,))`; partial batches dropped.
    `strong_augment=True` adds `StrongAugment()` (Keras RandAugment + RandomErasing) for
    teacher training; pass a `StrongAugment` instance to configure it.
    """
    pipeline.check_epochs(epochs, initial_epoch)
    images, labels = load_cifar100(source, "train", data_dir, download)
    n = len(images)
    steps = pipeline.steps_for(n, batch_size)
    images_t = tf.constant(images)
    labels_t = tf.constant(labels)
    strong = augment.StrongAugment() if strong_augment is True else (strong_augment or None)

    @pipeline.no_autograph
    def epoch_batches(epoch):
        perm = _seeding.epoch_permutation(n, seed, epoch)[: steps * batch_size]
        batches = tf.data.Dataset.from_tensor_slices(tf.reshape(perm, [steps, batch_size]))
        return batches.map(lambda idx: (epoch, idx))

    @pipeline.no_autograph
    def make_batch(epoch, idx):
        x = tf.gather(images_t, idx)
        u = _seeding.example_uniform(seed, epoch, idx, 3)
        x = augment.cifar_pad_crop_flip(x, u, pad=4)
        if strong is None:
            x = augment.normalize(x, augment.CIFAR100_MEAN, augment.CIFAR100_STD)
        else:
            batch_seed, op_u = augment.strong_inputs(seed, epoch, idx, strong.num_ops)
            x = strong(x, batch_seed, op_u, augment.CIFAR100_MEAN, augment.CIFAR100_STD)
        return tf.ensure_shape(x, [batch_size, 32, 32, 3]), tf.gather(labels_t, idx)

    def build(first: int, stop: int) -> tf.data.Dataset:
        ds = pipeline.epochs_range(first, stop).flat_map(epoch_batches)
        ds = ds.map(make_batch, num_parallel_calls=pipeline.AUTOTUNE, deterministic=True)
        return pipeline.with_options(ds.prefetch(pipeline.AUTOTUNE))

    return pipeline.TrainData.from_builder(
        build,
        steps_per_epoch=steps,
        num_examples=n,
        batch_size=batch_size,
        initial_epoch=initial_epoch,
        epochs=epochs,
    )


def cifar100_test(
    source: Source = "tfds",
    *,
    batch_size: int = 256,
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> tf.data.Dataset:
    """CIFAR-100 evaluation set in file order, normalised only; keeps the partial last batch.

    Args:
        source: as for `load_cifar100`.
        batch_size: examples per batch; the last batch may be smaller.
        split: `"test"` (default) or `"train"`.
        data_dir, download: the tfds data folder, and whether tfds may download.

    Returns:
        A deterministic `tf.data.Dataset` of `(float32 (B, 32, 32, 3), int32 (B,))`, built
        as a per-example map then `batch(batch_size, drop_remainder=False)`: the element
        spec is `((None, 32, 32, 3), (None,))`, and tf.data's static batch-size inference
        (which Keras' multi-process distribution uses to split batches) finds `batch_size`.
    """
    pipeline.check_batch_size(batch_size)
    images, labels = load_cifar100(source, split, data_dir, download)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    normalize = pipeline.no_autograph(
        lambda x, y: (augment.normalize(x, augment.CIFAR100_MEAN, augment.CIFAR100_STD), y)
    )
    ds = ds.map(normalize, num_parallel_calls=pipeline.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=False)
    return pipeline.with_options(ds.prefetch(pipeline.AUTOTUNE))
