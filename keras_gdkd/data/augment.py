"""The data recipes of the GDKD experiments (CIFAR-100, ImageNet) as pure TensorFlow functions.

Every random draw takes its randomness from explicit per-example uniforms or seeds (see
`_seeding`), never from op state, so results depend only on (seed, epoch, example index).
"""

from __future__ import annotations

import math

import tensorflow as tf

from keras_gdkd.data import _seeding

CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: tf.Tensor, mean=CIFAR100_MEAN, std=CIFAR100_STD) -> tf.Tensor:
    """Maps pixels in [0, 255] (any dtype) to `(x / 255 - mean) / std`, float32, NHWC/HWC."""
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    # One fused multiply-add per pixel instead of three passes.
    return tf.cast(images, tf.float32) * (1.0 / (255.0 * std)) - mean / std


def cifar_pad_crop_flip(images: tf.Tensor, uniforms: tf.Tensor, pad: int = 4) -> tf.Tensor:
    """Per-image zero-pad + random crop back to the input size + random horizontal flip.

    Args:
        images: (B, H, W, C) batch, any dtype (uint8 keeps the gathers cheap).
        uniforms: (B, 3) floats in [0, 1): row offset, column offset, flip (flip if < 0.5).
        pad: zero padding on each side; offsets are uniform in [0, 2 * pad].

    Returns:
        The (B, H, W, C) batch, same dtype; each image has its own crop and flip.
    """
    height, width = images.shape[1], images.shape[2]
    span = 2 * pad + 1
    offsets = tf.minimum(tf.cast(uniforms[:, :2] * span, tf.int32), span - 1)
    flip = uniforms[:, 2] < 0.5
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    rows = offsets[:, :1] + tf.range(height)[None, :]
    cols_fwd = tf.range(width)[None, :]
    # A flip is just a reversed column gather, so crop and flip cost one gather each.
    cols = offsets[:, 1:2] + tf.where(flip[:, None], width - 1 - cols_fwd, cols_fwd)
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


def random_resized_crop_window(
    height: tf.Tensor,
    width: tf.Tensor,
    seed: tf.Tensor,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    attempts: int = 10,
) -> tf.Tensor:
    """torchvision `RandomResizedCrop.get_params`, vectorised over its 10 attempts.

    Returns int32 `[top, left, crop_height, crop_width]`. The first of `attempts` samples
    (area ~ U(scale) * H * W, log aspect ratio ~ U(log ratio)) that fits is used; if none
    fits, the centre crop of the largest window whose aspect ratio is clamped into `ratio`.
    Rounding is half-to-even like Python's `round`.
    """
    h_f = tf.cast(height, tf.float64)
    w_f = tf.cast(width, tf.float64)
    u = tf.cast(tf.random.stateless_uniform([attempts, 4], seed, dtype=tf.float32), tf.float64)
    target_area = h_f * w_f * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = tf.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    cw = tf.round(tf.sqrt(target_area * aspect))
    ch = tf.round(tf.sqrt(target_area / aspect))
    fits = (cw > 0) & (cw <= w_f) & (ch > 0) & (ch <= h_f)
    top = tf.floor(u[:, 2] * (h_f - ch + 1.0))
    left = tf.floor(u[:, 3] * (w_f - cw + 1.0))
    first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
    sampled = tf.stack([top[first], left[first], ch[first], cw[first]])

    in_ratio = w_f / h_f
    fb_w = tf.where(in_ratio > ratio[1], tf.round(h_f * ratio[1]), w_f)
    fb_h = tf.where(in_ratio < ratio[0], tf.round(w_f / ratio[0]), h_f)
    fallback = tf.stack([tf.floor((h_f - fb_h) / 2.0), tf.floor((w_f - fb_w) / 2.0), fb_h, fb_w])
    window = tf.where(tf.reduce_any(fits), sampled, fallback)
    return tf.cast(window, tf.int32)


def _image_shape(encoded: tf.Tensor) -> tf.Tensor:
    return tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.extract_jpeg_shape(encoded, output_type=tf.int32)[:2],
        lambda: tf.shape(tf.io.decode_image(encoded, channels=3, expand_animations=False))[:2],
    )


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG (accurate IDCT, like PIL) or PNG/GIF/BMP bytes to (H, W, 3) uint8."""
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
    )
    return tf.ensure_shape(image, [None, None, 3])


def _decode_window(encoded: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    # decode_and_crop_jpeg skips the IDCT outside the window: the main ImageNet speed win.
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.image.decode_and_crop_jpeg(
            encoded, window, channels=3, dct_method="INTEGER_ACCURATE"
        ),
        lambda: tf.image.crop_to_bounding_box(
            tf.io.decode_image(encoded, channels=3, expand_animations=False),
            window[0],
            window[1],
            window[2],
            window[3],
        ),
    )
    return tf.ensure_shape(image, [None, None, 3])


def _resize_like_pil(image: tf.Tensor, size) -> tf.Tensor:
    # PIL's bilinear filter is antialiased and returns uint8; keep values on that grid.
    out = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.round(tf.clip_by_value(out, 0.0, 255.0))


def imagenet_train_image(
    encoded: tf.Tensor,
    seed: tf.Tensor,
    size: int = 224,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
    normalized: bool = True,
) -> tf.Tensor:
    """Random-resized crop to `size` + random horizontal flip (+ ImageNet normalisation).

    `seed` is a shape-[2] stateless seed; the result is a pure function of (bytes, seed).
    Returns float32 (size, size, 3); pixels in [0, 255] when `normalized=False`.
    """
    shape = _image_shape(encoded)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    window = random_resized_crop_window(shape[0], shape[1], crop_seed, scale, ratio)
    image = _resize_like_pil(_decode_window(encoded, window), [size, size])
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    return normalize(image, IMAGENET_MEAN, IMAGENET_STD) if normalized else image


def resize_short_side_size(height: tf.Tensor, width: tf.Tensor, short: int = 256) -> tf.Tensor:
    """torchvision `Resize(short)` output size: short side = `short`, long = int(short*L/S)."""
    h = tf.cast(height, tf.float64)
    w = tf.cast(width, tf.float64)
    short_f = tf.constant(float(short), tf.float64)
    new_h = tf.where(h <= w, short_f, tf.floor(short_f * h / w))
    new_w = tf.where(h <= w, tf.floor(short_f * w / h), short_f)
    return tf.cast(tf.stack([new_h, new_w]), tf.int32)


def center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """torchvision `CenterCrop(size)` (offsets `round((H - size) / 2)`, half-to-even)."""
    shape = tf.shape(image)
    top = tf.cast(tf.round(tf.cast(shape[0] - size, tf.float64) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(shape[1] - size, tf.float64) / 2.0), tf.int32)
    return tf.image.crop_to_bounding_box(image, top, left, size, size)


def imagenet_eval_image(
    encoded: tf.Tensor, resize: int = 256, size: int = 224, normalized: bool = True
) -> tf.Tensor:
    """Resize the short side to `resize`, centre crop `size` (+ ImageNet normalisation)."""
    image = decode_rgb(encoded)
    shape = tf.shape(image)
    image = _resize_like_pil(image, resize_short_side_size(shape[0], shape[1], resize))
    image = tf.ensure_shape(center_crop(image, size), [size, size, 3])
    return normalize(image, IMAGENET_MEAN, IMAGENET_STD) if normalized else image


class StrongAugment:
    """Optional teacher-training augmentation: `keras.layers.RandAugment` then
    `keras.layers.RandomErasing`, applied per image inside `tf.data`.

    The Keras layers draw from internal seed generators (stateful); here each layer's
    generator is replaced by one that hands out seeds derived from the per-example seed,
    so every draw still depends only on (seed, epoch, example index). This relies on the
    Keras 3 layer attributes `generator` / `_backend_generators`; a clear error is raised
    if a future Keras changes them.

    `exclude_ops` removes RandAugment ops by layer name (default: `equalization`, see
    below). Ops are chosen per image; magnitudes and erasing boxes are drawn per image from a
    per-batch seed (batches are themselves a pure function of (seed, epoch)).
    """

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: float = 0.5,
        erasing: bool = True,
        erasing_scale: tuple[float, float] = (0.02, 0.33),
        exclude_ops: tuple[str, ...] = ("equalization",),
    ):
        import keras

        class _Injected(keras.random.SeedGenerator):
            # No state variable: each `next()` within one traced call returns a fresh
            # stateless seed `base + [0, k]`.
            def __init__(self):
                self.base = None
                self.count = 0

            def next(self, ordered=True):
                if self.base is None:
                    raise RuntimeError("StrongAugment seed not set")
                out = self.base + tf.constant([0, 1], tf.int64) * self.count
                self.count += 1
                return out

        self._gen = _Injected()
        self.num_ops = num_ops
        self._rand_augment = keras.layers.RandAugment(
            value_range=(0, 255), num_ops=num_ops, factor=magnitude
        )
        # Keras' Equalization pools one histogram over the whole batch (not per image) and,
        # under the JAX backend, unrolls 256 ops per channel (~30 s to trace), so it is left
        # out by default; pass `exclude_ops=()` to keep Keras' full op list.
        ops = tuple(n for n in self._rand_augment._AUGMENT_LAYERS if n not in exclude_ops)
        object.__setattr__(self._rand_augment, "_AUGMENT_LAYERS", ops)
        layers = [self._rand_augment]
        layers += [getattr(self._rand_augment, n) for n in self._rand_augment._AUGMENT_LAYERS]
        self._erasing = None
        if erasing:
            self._erasing = keras.layers.RandomErasing(
                factor=1.0, scale=erasing_scale, fill_value=0.0, value_range=(0, 255)
            )
            layers.append(self._erasing)
        for layer in layers:
            if not hasattr(layer, "generator"):
                # Deterministic ops (e.g. AutoContrast) have no generator; a random layer
                # without one cannot draw at all (`_get_seed_generator` raises).
                if layer is self._rand_augment or layer is self._erasing:
                    raise RuntimeError(
                        f"{type(layer).__name__} has no `generator`; this Keras version is "
                        "not supported by StrongAugment's deterministic seeding."
                    )
                continue
            object.__setattr__(layer, "generator", self._gen)
            object.__setattr__(layer, "_backend_generators", {"tensorflow": self._gen})

    def __call__(
        self,
        images: tf.Tensor,
        seed: tf.Tensor,
        op_uniforms: tf.Tensor,
        mean=None,
        std=None,
    ) -> tf.Tensor:
        """Augments a (B, H, W, 3) batch of [0, 255] pixels; returns float32.

        Args:
            images: the batch (any dtype).
            seed: shape-[2] stateless seed for the magnitudes and erasing boxes (drawn per
                image from it, so it must be unique per batch, e.g. keyed by the batch's
                first example index).
            op_uniforms: (B, num_ops) uniforms in [0, 1) choosing each image's ops, so the
                op choice is per image (Keras' RandAugment alone picks one set per batch).
            mean, std: if given, normalise after RandAugment and before erasing, so the
                erased area is 0 = the dataset mean (as Cutout does).
        """
        ra = self._rand_augment
        self._gen.base = tf.cast(seed, tf.int64)
        self._gen.count = 0
        images = tf.cast(images, tf.float32)
        transformation = ra.get_random_transformation(images, training=True)
        num_layers = len(ra._AUGMENT_LAYERS)
        idx = tf.minimum(tf.cast(op_uniforms * num_layers, tf.int32), num_layers - 1)
        # (num_ops, B, 1, 1, 1): RandAugment's `where(layer_idxes[i] == k, ...)` then picks
        # per image.
        transformation["layer_idxes"] = tf.transpose(idx)[:, :, None, None, None]
        images = ra.transform_images(images, transformation, training=True)
        images = tf.clip_by_value(images, 0.0, 255.0)
        if mean is not None:
            images = normalize(images, mean, std)
        if self._erasing is not None:
            images = self._erasing(images, training=True)
        return images


def strong_inputs(seed: int, epoch, index: tf.Tensor, num_ops: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(batch seed, per-image op uniforms) for `StrongAugment`, independent of crop/flip.

    The batch seed is keyed by the batch's first example: unique within an epoch.
    """
    batch_seed = _seeding.example_seed(seed, epoch, index[0], salt=_seeding.SALT_STRONG)
    op_uniforms = _seeding.example_uniform(seed, epoch, index, num_ops, _seeding.SALT_STRONG)
    return batch_seed, op_uniforms
