"""Writers of small fake datasets in the real on-disk formats (for tests and benchmarks)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

from keras_gdkd.data.sources import CIFAR100_ARCHIVE, CIFAR100_FOLDER


def _cifar_pickle(images: np.ndarray, labels: np.ndarray) -> bytes:
    # Official layout: rows of 3072 bytes, channel-planar (all R, then G, then B).
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    entry = {
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
        b"batch_label": b"fake",
        b"fine_labels": [int(v) for v in labels],
        b"coarse_labels": [int(v) // 5 for v in labels],
        b"data": np.ascontiguousarray(data, dtype=np.uint8),
    }
    return pickle.dumps(entry, protocol=2)


def class_colours(num_classes: int) -> np.ndarray:
    """A fixed, well-separated RGB colour per class: (num_classes, 3) float32 in [40, 215].

    Class `k`'s colour is the `k`-th point of an n x n x n grid (n = ceil(cbrt(C))), the
    same whatever the seed, so train and test splits written with different seeds share
    their class prototypes.
    """
    n = max(2, int(np.ceil(num_classes ** (1.0 / 3.0) - 1e-9)))
    levels = np.linspace(40.0, 215.0, n)
    k = np.arange(num_classes)
    return np.stack([levels[k % n], levels[(k // n) % n], levels[(k // (n * n)) % n]], 1).astype(
        np.float32
    )


def _upsample_linear(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    # Bilinear (half-pixel centres) along one axis: smooth noise, like a photo's texture.
    cells = x.shape[axis]
    pos = np.clip((np.arange(size) + 0.5) * cells / size - 0.5, 0, cells - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, cells - 1)
    shape = [1] * x.ndim
    shape[axis] = size
    t = (pos - lo).reshape(shape)
    return np.take(x, lo, axis=axis) * (1 - t) + np.take(x, hi, axis=axis) * t


def _class_images(labels: np.ndarray, num_classes: int, size, rng, noise_cells=None):
    """uint8 images: class colour + class stripe pattern + per-image brightness and noise.

    The colour alone separates the classes; the stripes (horizontal or vertical, period
    from the class) survive crops and horizontal flips and make the images look less flat.
    `noise_cells`: draw the noise on a coarse grid and upsample it (JPEG-friendly).
    """
    h, w = size
    n = len(labels)
    colours = class_colours(num_classes)[labels]  # (n, 3)
    # Periods of 4-8 pixels at 32x32, scaled with larger images so they stay smooth.
    period = (4 + 2 * (labels % 3)) * max(1, min(h, w) // 32)
    vertical = (labels // 3) % 2 == 1
    phase = rng.uniform(0.0, 2 * np.pi, n)
    coords = np.where(
        vertical[:, None, None], np.arange(w)[None, None, :], np.arange(h)[None, :, None]
    )
    angle = (2 * np.pi / period)[:, None, None] * coords + phase[:, None, None]
    stripes = 18.0 * np.sin(angle.astype(np.float32))
    brightness = rng.uniform(-12.0, 12.0, n)
    if noise_cells is None:
        noise = 24.0 * rng.standard_normal((n, h, w, 3), dtype=np.float32)
    else:
        coarse = 24.0 * rng.standard_normal((n, *noise_cells, 3), dtype=np.float32)
        noise = _upsample_linear(_upsample_linear(coarse, h, axis=1), w, axis=2)
    images = (
        colours[:, None, None, :] + stripes[..., None] + brightness[:, None, None, None] + noise
    )
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)


def fake_cifar100_arrays(num: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake CIFAR-100: (num, 32, 32, 3) uint8 images and int32 labels in [0, 100).

    Labels are balanced (`num // 100` or one more per class) in a seeded random order; each
    image is its class's colour and stripe pattern plus per-image noise (see
    `class_colours`), so a small CNN learns it well above chance within an epoch or two.
    A pure function of (num, seed).
    """
    if num < 0:
        raise ValueError(f"num must be >= 0, got {num}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num) % 100).astype(np.int32)
    images = np.empty((num, 32, 32, 3), np.uint8)
    # Chunks bound the float64 intermediates (a full 50k split would need ~1 GB at once).
    for start in range(0, num, 4096):
        images[start : start + 4096] = _class_images(
            labels[start : start + 4096], 100, (32, 32), rng
        )
    return images, labels


def _write_cifar_archive(directory: Path, splits: dict, extracted: bool) -> Path:
    if extracted:
        (directory / CIFAR100_FOLDER).mkdir(parents=True, exist_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / CIFAR100_ARCHIVE
    # mtime=0 in the gzip header (tar members default to mtime 0): byte-identical archives
    # for identical arguments.
    with (
        open(archive, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        for name, (x, y) in splits.items():
            blob = _cifar_pickle(x, y)
            if extracted:
                (directory / CIFAR100_FOLDER / name).write_bytes(blob)
            info = tarfile.TarInfo(f"{CIFAR100_FOLDER}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        meta = pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)]})
        info = tarfile.TarInfo(f"{CIFAR100_FOLDER}/meta")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    return archive


def write_fake_cifar100_python(
    directory: str | os.PathLike, num_train: int = 64, num_test: int = 32, seed: int = 0
) -> dict:
    """Writes `cifar-100-python.tar.gz` and its extracted `cifar-100-python/` folder.

    The images are learnable (see `fake_cifar100_arrays`); train uses `seed`, test
    `seed + 1`.

    Returns:
        `{"archive": Path, "folder": Path, "train": (x, y), "test": (x, y)}`.
    """
    directory = Path(directory)
    splits = {
        "train": fake_cifar100_arrays(num_train, seed),
        "test": fake_cifar100_arrays(num_test, seed + 1),
    }
    archive = _write_cifar_archive(directory, splits, extracted=True)
    return {"archive": archive, "folder": directory / CIFAR100_FOLDER, **splits}


def write_demo_cifar100(
    folder: str | os.PathLike, num_train: int, num_test: int, seed: int = 0
) -> Path:
    """Writes a synthetic, learnable CIFAR-100 `cifar-100-python.tar.gz` for offline try-outs.

    The archive has the official format (so every CIFAR-100 code path runs on it), with
    `num_train` / `num_test` images whose class is visible in their colour and stripes:
    a small network reaches well above the 1% chance level in an epoch or two. It is not
    CIFAR-100; accuracies on it say nothing about real results.

    Args:
        folder: where to write the archive (created if needed).
        num_train: training images (balanced over the 100 classes; >= 100 recommended).
        num_test: test images.
        seed: the images and labels are a pure function of (num_train, num_test, seed).

    Returns:
        `folder`, ready to pass as `data_dir` (`--data-dir`).

    Example:

    ```python
    data_dir = write_demo_cifar100("/tmp/demo", num_train=5000, num_test=1000)
    source, tfds_dir = resolve_source("cifar100", str(data_dir))
    ```
    """
    for name, value in (("num_train", num_train), ("num_test", num_test)):
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    folder = Path(folder)
    splits = {
        "train": fake_cifar100_arrays(int(num_train), seed),
        "test": fake_cifar100_arrays(int(num_test), seed + 1),
    }
    _write_cifar_archive(folder, splits, extracted=False)
    return folder


def write_fake_image_folder(
    root: str | os.PathLike,
    num_classes: int = 3,
    per_class: int = 4,
    size: tuple[int, int] = (300, 400),
    seed: int = 0,
    fmt: str = "JPEG",
) -> list[str]:
    """Writes `root/<class>/<class>_<i>.<ext>` learnable images of (height, width) `size`.

    Class names are `n0000000k` (sorted = label order). Each image is its class's colour
    and stripes (as `fake_cifar100_arrays`, the same for every seed) plus smooth per-image
    noise, which compresses like a photo. `fmt` is a PIL format (`"JPEG"`, `"PNG"`, ...).
    A pure function of the arguments.

    Returns:
        The class names.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    classes = [f"n{k:08d}" for k in range(num_classes)]
    h, w = size
    ext = "JPEG" if fmt == "JPEG" else fmt.lower()
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        labels = np.full(per_class, label, np.int32)
        cells = (max(h // 16, 1), max(w // 16, 1))
        images = _class_images(labels, num_classes, (h, w), rng, noise_cells=cells)
        for i, image in enumerate(images):
            Image.fromarray(image).save(root / name / f"{name}_{i}.{ext}", format=fmt, quality=90)
    return classes
