"""Writers of small fake datasets in the real on-disk formats (for tests and benchmarks)."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np


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


def fake_cifar100_arrays(num: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random (num, 32, 32, 3) uint8 images and int32 labels in [0, 100)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(num, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, size=num).astype(np.int32)
    return images, labels


def write_fake_cifar100_python(
    directory: str | os.PathLike, num_train: int = 64, num_test: int = 32, seed: int = 0
) -> dict:
    """Writes `cifar-100-python.tar.gz` and its extracted `cifar-100-python/` folder.

    Returns `{"archive": Path, "folder": Path, "train": (x, y), "test": (x, y)}`.
    """
    directory = Path(directory)
    folder = directory / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    splits = {
        "train": fake_cifar100_arrays(num_train, seed),
        "test": fake_cifar100_arrays(num_test, seed + 1),
    }
    archive = directory / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, (x, y) in splits.items():
            blob = _cifar_pickle(x, y)
            (folder / name).write_bytes(blob)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
        meta = pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)]})
        info = tarfile.TarInfo("cifar-100-python/meta")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    return {"archive": archive, "folder": folder, **splits}


def write_fake_image_folder(
    root: str | os.PathLike,
    num_classes: int = 3,
    per_class: int = 4,
    size: tuple[int, int] = (300, 400),
    seed: int = 0,
    fmt: str = "JPEG",
) -> list[str]:
    """Writes `root/<class>/<i>.JPEG` smooth random images of (height, width) `size`.

    Class names are `n0000000k` (sorted = label order). Returns the class names.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    classes = [f"n{k:08d}" for k in range(num_classes)]
    h, w = size
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            # Upsampled noise compresses like a photo, unlike per-pixel noise.
            small = rng.integers(0, 256, size=(max(h // 16, 1), max(w // 16, 1), 3))
            image = Image.fromarray(small.astype(np.uint8)).resize((w, h), Image.BILINEAR)
            ext = "JPEG" if fmt == "JPEG" else fmt.lower()
            image.save(root / name / f"{name}_{i}.{ext}", format=fmt, quality=90)
    return classes
