"""Distil a per-pixel segmentation network on real digits (offline, no download).

Each image is a 32x32 canvas holding two of scikit-learn's handwritten digits (8x8, upsampled
to 16x16), one in each half, at random heights, plus Gaussian noise. Every pixel has one of 11
labels: 0 for background, 1 + d on the strokes of digit d, and 255 (ignored) on the one-pixel
ring around each digit's strokes, like the boundary band of Pascal VOC's masks. Training and
validation canvases are built from disjoint digits (a fixed stratified 70/30 split).

A conv encoder-decoder teacher is trained with cross-entropy, then the same smaller student is
trained with cross-entropy alone, KD, DKD and GDKD (k=3, T=1), the distillation runs through
`keras_gdkd.Distiller(..., ignore_index=255)` with labels of shape (batch, 32, 32). The script
prints a line per run, then mean IoU over the 11 classes and pixel accuracy on the validation
canvases (both ignore the 255 pixels) and wall time per method.

    KERAS_BACKEND=tensorflow python examples/distill_segmentation.py     # a few minutes
    KERAS_BACKEND=jax python examples/distill_segmentation.py --fast     # CI, < 1 min

One seed per method: differences of a point or two of mIoU are within run-to-run noise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import keras
import numpy as np
from keras import ops

import keras_gdkd as kg

NUM_CLASSES = 11  # background + 10 digits
IGNORE = 255
CANVAS = 32
METHODS = ("CE alone", "KD", "DKD", "GDKD")


def make_canvases(images: np.ndarray, labels: np.ndarray, count: int, seed: int) -> tuple:
    """`count` canvases of two digits each: images (count, 32, 32, 1) and labels (count, 32, 32).

    Args:
        images: digits, shape (n, 8, 8), values 0..16.
        labels: their classes 0..9, shape (n,).
        count: canvases to build.
        seed: the NumPy seed of the digit choice, the positions and the noise.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    x = np.zeros((count, CANVAS, CANVAS), "float32")
    y = np.zeros((count, CANVAS, CANVAS), "int32")
    for n in range(count):
        for half in (0, 1):
            i = rng.integers(len(images))
            digit = ndimage.zoom(images[i] / 16.0, 2, order=1)  # 16x16, bilinear
            top, left = rng.integers(0, CANVAS - 16 + 1), 16 * half
            window = (slice(top, top + 16), slice(left, left + 16))
            x[n][window] = np.maximum(x[n][window], digit)
            strokes = digit > 0.4
            y[n][window][strokes] = 1 + labels[i]
        foreground = y[n] > 0
        ring = ndimage.binary_dilation(foreground) & ~foreground
        y[n][ring] = IGNORE
    x += rng.normal(0.0, 0.1, x.shape).astype("float32")
    return x[..., None], y


def load_data(train_count: int, val_count: int, seed: int = 0) -> tuple:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    d_train, d_val, l_train, l_val = train_test_split(
        digits.images, digits.target, test_size=0.3, random_state=seed, stratify=digits.target
    )
    return (
        *make_canvases(d_train, l_train, train_count, seed),
        *make_canvases(d_val, l_val, val_count, seed + 1),
    )


def limit_cpu_threads() -> str:
    """One PyTorch CPU thread unless ``OMP_NUM_THREADS`` is set (see examples/quickstart.py)."""
    if keras.backend.backend() != "torch":
        return ""
    import torch

    if torch.cuda.is_available() or "OMP_NUM_THREADS" in os.environ:
        return ""
    torch.set_num_threads(1)
    return "; torch threads 1 (set OMP_NUM_THREADS to change)"


def encoder_decoder(base: int, name: str) -> keras.Model:
    """A small U-Net: three resolutions (32, 16, 8), skip connections, per-pixel logits."""

    def conv(h, width, stride=1):
        return keras.layers.Conv2D(width, 3, stride, padding="same", activation="relu")(h)

    inputs = keras.Input((CANVAS, CANVAS, 1))
    s1 = conv(conv(inputs, base), base)  # 32x32
    s2 = conv(conv(s1, 2 * base, 2), 2 * base)  # 16x16
    h = conv(conv(s2, 4 * base, 2), 4 * base)  # 8x8
    h = keras.layers.UpSampling2D()(h)
    h = conv(keras.layers.Concatenate()([h, s2]), 2 * base)
    h = keras.layers.UpSampling2D()(h)
    h = conv(keras.layers.Concatenate()([h, s1]), base)
    return keras.Model(inputs, keras.layers.Conv2D(NUM_CLASSES, 1)(h), name=name)


def scores(model: keras.Model, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(mean IoU over the 11 classes, pixel accuracy), both over the non-ignored pixels.

    A class that neither occurs nor is predicted is left out of the mean (no such class
    occurs with these validation sets, where every digit appears).
    """
    # Direct calls of one batch shape: unlike `Model.predict`, nothing is compiled per model.
    chunks = [model(x[i : i + 128], training=False) for i in range(0, len(x), 128)]
    predicted = np.concatenate([np.argmax(ops.convert_to_numpy(c), axis=-1) for c in chunks])
    valid = y != IGNORE
    truth, guess = y[valid].astype("int64"), predicted[valid].astype("int64")
    confusion = np.bincount(
        truth * NUM_CLASSES + guess, minlength=NUM_CLASSES * NUM_CLASSES
    ).reshape(NUM_CLASSES, NUM_CLASSES)
    tp = np.diag(confusion).astype("float64")
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = tp[union > 0] / union[union > 0]
    return float(iou.mean()), float(tp.sum() / confusion.sum())


def distillation_setups() -> dict:
    """Loss and CE weight per method; T=1 and GDKD's k=3 as in the authors' segmentation runs."""
    return {
        "KD": (kg.KD(temperature=1.0), 0.5),
        "DKD": (kg.DKD(alpha=1.0, beta=2.0, temperature=1.0), 1.0),
        "GDKD": (kg.GDKD(k=3, w0=1.0, w1=1.0, w2=2.0, temperature=1.0), 1.0),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="small data, short runs (CI)")
    parser.add_argument("--train", type=int, help="training canvases (2000; --fast 512)")
    parser.add_argument("--val", type=int, help="validation canvases (640; --fast 128)")
    parser.add_argument("--epochs", type=int, help="student epochs (5; --fast 2)")
    parser.add_argument("--teacher-epochs", type=int, help="teacher epochs (8; --fast 3)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    defaults = (
        dict(train=512, val=128, epochs=2, teacher_epochs=3)
        if args.fast
        else dict(train=2000, val=640, epochs=5, teacher_epochs=8)
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    teacher_base, student_base = (8, 4) if args.fast else (16, 6)

    threads = limit_cpu_threads()
    x_train, y_train, x_val, y_val = load_data(args.train, args.val, args.seed)
    ignored = float(np.mean(y_val == IGNORE))
    print(
        f"backend: {keras.backend.backend()}{threads}; canvases {CANVAS}x{CANVAS}: "
        f"{len(x_train)} train / {len(x_val)} validation, {NUM_CLASSES} classes, "
        f"{ignored:.1%} of validation pixels ignored (label {IGNORE})",
        flush=True,
    )
    start_all = time.perf_counter()

    def fit(model, epochs):
        start = time.perf_counter()
        model.fit(x_train, y_train, batch_size=args.batch, epochs=epochs, verbose=0)
        return time.perf_counter() - start

    def ce():
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE)

    keras.utils.set_random_seed(args.seed)
    teacher = encoder_decoder(teacher_base, "teacher")
    teacher.compile(optimizer=keras.optimizers.Adam(args.lr), loss=ce())
    seconds = fit(teacher, args.teacher_epochs)
    miou, pixel = scores(teacher, x_val, y_val)
    print(
        f"teacher U-Net base {teacher_base} ({teacher.count_params()} parameters), "
        f"{args.teacher_epochs} epochs: mIoU {miou:.4f}, pixel accuracy {pixel:.4f} "
        f"({seconds:.1f} s)",
        flush=True,
    )
    rows = [("teacher", miou, pixel, seconds)]
    setups = distillation_setups()
    print(
        f"student U-Net base {student_base}, Adam {args.lr}, batch {args.batch}, {args.epochs} "
        "epochs; losses:"
    )
    for method, (loss, ce_weight) in setups.items():
        print(f"  {method}: {type(loss).__name__} {loss.get_config()} ce_weight {ce_weight}")

    for method in METHODS:
        keras.utils.set_random_seed(args.seed + 1)  # the same initial student for every method
        student = encoder_decoder(student_base, "student")
        if method == "CE alone":
            model = student
            model.compile(optimizer=keras.optimizers.Adam(args.lr), loss=ce())
        else:
            loss, ce_weight = setups[method]
            model = kg.Distiller(
                teacher, student, loss=loss, ce_weight=ce_weight, ignore_index=IGNORE
            )
            model.compile(optimizer=keras.optimizers.Adam(args.lr))
        seconds = fit(model, args.epochs)
        miou, pixel = scores(student, x_val, y_val)
        print(
            f"  {method:<8} mIoU {miou:.4f}, pixel accuracy {pixel:.4f} ({seconds:.1f} s)",
            flush=True,
        )
        rows.append((method, miou, pixel, seconds))

    print(f"\n{'method':<9} {'mIoU':>7} {'pixel acc':>9} {'time':>8}")
    for method, miou, pixel, seconds in rows:
        print(f"{method:<9} {miou:7.4f} {pixel:9.4f} {seconds:7.1f}s")
    print(f"total {time.perf_counter() - start_all:.0f} s (training and validation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
