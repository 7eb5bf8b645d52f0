"""ImageNet pipelines from TensorFlow Datasets or a class-per-folder tree of images."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import tensorflow as tf

from keras_gdkd.data import _seeding, augment, pipeline, sources

NUM_CLASSES = 1000


def _check_tfds_classes(builder, class_names: Sequence[str] | None) -> None:
    if class_names is None:
        return
    names = list(builder.info.features["label"].names)
    if list(class_names) != names:
        diff = sources.class_difference(names, class_names) or "same classes, different order"
        raise ValueError(
            f"tfds {builder.name} numbers its {len(names)} labels differently from the "
            f"{len(class_names)} given class_names: {diff}."
        )


def _tfds_builder(data_dir, manual_dir):
    import tensorflow_datasets as tfds

    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    if manual_dir is not None:
        # Builds the TFRecords from ILSVRC2012_img_{train,val}.tar once; no-op afterwards.
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))
        )
    return builder


def _tfds_split(builder, split: str, shuffle_seed: int | None):
    import tensorflow_datasets as tfds

    options = tf.data.Options()
    options.deterministic = True
    read_config = tfds.ReadConfig(
        shuffle_seed=shuffle_seed,
        shuffle_reshuffle_each_iteration=False,
        try_autocache=False,
        options=options,
    )
    return builder.as_dataset(
        split=split,
        shuffle_files=shuffle_seed is not None,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=read_config,
    )


def _num_examples(ds: tf.data.Dataset, builder, split: str) -> int:
    n = int(ds.cardinality())
    if n < 0:
        n = int(builder.info.splits[split].num_examples)
    return n


def imagenet_train(
    source: str | os.PathLike = "tfds",
    *,
    batch_size: int = 256,
    epochs: int,
    initial_epoch: int = 0,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    image_size: int = 224,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    shuffle_buffer: int = 16_384,
    class_names: Sequence[str] | None = None,
) -> pipeline.TrainData:
    """ImageNet training stream of the GDKD ImageNet recipe, see `TrainData` for the epoch contract.

    Per image: torchvision random-resized crop to `image_size` (scale, log-uniform ratio,
    10 attempts, centre-crop fallback), random horizontal flip, ImageNet normalisation.
    Yields `(float32 (B, S, S, 3), int32 (B,))`; partial batches dropped.

    `source="tfds"`: `imagenet2012` from `data_dir` (prepared from `manual_dir` if given).
    Each epoch reads the files in an order seeded by (seed, epoch) and shuffles through a
    `shuffle_buffer`-sized buffer with that seed; the example index used for the
    augmentation draws is the position within the epoch.
    Otherwise `source` is a folder `<root>/train/<class>/*.JPEG` (or `<root>/<class>/...`):
    a global per-epoch permutation, draws keyed by the file's index in sorted order.

    `class_names` pins the label numbering (label `i` is `class_names[i]`, e.g. the list
    `imagenet_class_names` gave when the run started); the train folder must hold exactly
    these classes, and a tfds source must number them the same way, else `ValueError`.
    `None`: the train class folders sorted by name.
    """
    pipeline.check_epochs(epochs, initial_epoch)
    train_image = functools.partial(
        augment.imagenet_train_image, size=image_size, scale=scale, ratio=ratio
    )

    def finish(ds):
        ds = ds.batch(batch_size, drop_remainder=True)
        return pipeline.with_options(ds.prefetch(pipeline.AUTOTUNE))

    if isinstance(source, str) and source == "tfds":
        builder = _tfds_builder(data_dir, manual_dir)
        _check_tfds_classes(builder, class_names)
        n = _num_examples(_tfds_split(builder, "train", None), builder, "train")
        steps = pipeline.steps_for(n, batch_size)

        def one_epoch(epoch: int) -> tf.data.Dataset:
            epoch_seed = int(_seeding.epoch_seed(seed, epoch))
            ds = _tfds_split(builder, "train", epoch_seed)
            ds = ds.shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)

            @pipeline.no_autograph
            def make(pos, ex):
                image = train_image(ex["image"], _seeding.example_seed(seed, epoch, pos))
                return image, tf.cast(ex["label"], tf.int32)

            ds = ds.enumerate().map(make, num_parallel_calls=pipeline.AUTOTUNE, deterministic=True)
            return ds.take(steps * batch_size)

        def build(first: int, stop: int) -> tf.data.Dataset:
            ds = one_epoch(first)
            for epoch in range(first + 1, stop):
                ds = ds.concatenate(one_epoch(epoch))
            return finish(ds)

    else:
        train_root = sources.imagenet_split_folder(source, "train")
        paths, labels, _ = sources.list_image_folder(train_root, class_names)
        n = len(paths)
        steps = pipeline.steps_for(n, batch_size)
        paths_t = tf.constant(paths)
        labels_t = tf.constant(labels)

        @pipeline.no_autograph
        def epoch_indices(epoch):
            perm = _seeding.epoch_permutation(n, seed, epoch)[: steps * batch_size]
            return tf.data.Dataset.from_tensor_slices(perm).map(lambda i: (epoch, i))

        @pipeline.no_autograph
        def make(epoch, i):
            encoded = tf.io.read_file(tf.gather(paths_t, i))
            image = train_image(encoded, _seeding.example_seed(seed, epoch, i))
            return image, tf.gather(labels_t, i)

        def build(first: int, stop: int) -> tf.data.Dataset:
            ds = pipeline.epochs_range(first, stop).flat_map(epoch_indices)
            return finish(ds.map(make, num_parallel_calls=pipeline.AUTOTUNE, deterministic=True))

    return pipeline.TrainData.from_builder(
        build,
        steps_per_epoch=steps,
        num_examples=n,
        batch_size=batch_size,
        initial_epoch=initial_epoch,
        epochs=epochs,
    )


def imagenet_val(
    source: str | os.PathLike = "tfds",
    *,
    batch_size: int = 256,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    image_size: int = 224,
    resize_size: int = 256,
    class_names: Sequence[str] | None = None,
) -> tf.data.Dataset:
    """ImageNet validation set: short side to `resize_size`, centre crop `image_size`,
    ImageNet normalisation; fixed order, keeps the partial last batch.

    Args:
        source: `"tfds"` (split `validation` of `imagenet2012`) or a folder
            `<root>/val/<class>/*.JPEG` (or the `val/` folder itself).
        batch_size: examples per batch; the last batch may be smaller.
        data_dir, manual_dir: the tfds data and manual download folders.
        image_size, resize_size: the centre crop and the short side before it.
        class_names: label `i` is `class_names[i]`. `None`: the train class list by name,
            `imagenet_class_names(root)` (the sorted folder names of `<root>/train/`), so
            val labels always match the train labels. The val folder must hold exactly
            these classes (same set); differences raise `ValueError` listing them.

    Returns:
        A `tf.data.Dataset` of `(float32 (B, S, S, 3), int32 (B,))`, per-example map then
        `batch(batch_size, drop_remainder=False)`: the element spec is
        `((None, S, S, 3), (None,))`, and tf.data's static batch-size inference (which
        Keras' multi-process distribution uses to split batches) finds `batch_size`.
    """
    pipeline.check_batch_size(batch_size)
    eval_image = functools.partial(augment.imagenet_eval_image, resize=resize_size, size=image_size)
    if isinstance(source, str) and source == "tfds":
        builder = _tfds_builder(data_dir, manual_dir)
        _check_tfds_classes(builder, class_names)
        ds = _tfds_split(builder, "validation", None)
        ds = ds.map(
            pipeline.no_autograph(
                lambda ex: (eval_image(ex["image"]), tf.cast(ex["label"], tf.int32))
            ),
            num_parallel_calls=pipeline.AUTOTUNE,
            deterministic=True,
        )
    else:
        if class_names is None:
            class_names = sources.imagenet_class_names(source)
        val_root = sources.imagenet_split_folder(source, "val")
        paths, labels, _ = sources.list_image_folder(val_root, class_names)
        ds = tf.data.Dataset.from_tensor_slices((paths, labels))
        ds = ds.map(
            pipeline.no_autograph(lambda p, y: (eval_image(tf.io.read_file(p)), y)),
            num_parallel_calls=pipeline.AUTOTUNE,
            deterministic=True,
        )
    ds = ds.batch(batch_size, drop_remainder=False)
    return pipeline.with_options(ds.prefetch(pipeline.AUTOTUNE))
