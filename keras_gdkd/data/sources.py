"""Readers for the on-disk formats: CIFAR-100 python archive, TFDS, class-per-folder images."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np

CIFAR100_ARCHIVE = "cifar-100-python.tar.gz"
CIFAR100_FOLDER = "cifar-100-python"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")

Arrays = tuple[np.ndarray, np.ndarray]

_CACHE: dict[tuple, dict[str, Arrays]] = {}
_CACHE_LOCK = threading.Lock()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The CIFAR pickles hold only dicts, lists, bytes and numpy arrays; refuse anything else
    so a tampered archive cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"CIFAR pickle refers to {module}.{name}; refused")


def _decode_cifar_pickle(raw: bytes) -> Arrays:
    entry = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    data = np.asarray(entry[b"data"], dtype=np.uint8)
    # Rows are channel-planar RGB (1024 R, 1024 G, 1024 B); NHWC wants interleaved.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    labels = np.asarray(entry[b"fine_labels"], dtype=np.int32)
    if len(images) != len(labels):
        raise ValueError(f"CIFAR pickle has {len(images)} images but {len(labels)} labels")
    return images, labels


def _resolve_cifar_path(path: Path) -> Path:
    if path.is_dir():
        if (path / "train").is_file() and (path / "test").is_file():
            return path
        for candidate in (path / CIFAR100_FOLDER, path / CIFAR100_ARCHIVE):
            if candidate.exists():
                return _resolve_cifar_path(candidate)
        raise FileNotFoundError(
            f"{path} holds neither `train`/`test` pickles, `{CIFAR100_FOLDER}/` nor "
            f"`{CIFAR100_ARCHIVE}`"
        )
    if path.is_file():
        return path
    raise FileNotFoundError(f"CIFAR-100 source not found: {path}")


def load_cifar100_python(path: str | os.PathLike) -> dict[str, Arrays]:
    """Reads the official CIFAR-100 python format.

    `path` is `cifar-100-python.tar.gz`, the extracted `cifar-100-python/` folder, or a
    folder holding either. Returns `{"train": (images, labels), "test": (...)}` with images
    (N, 32, 32, 3) uint8 and fine labels (N,) int32. Results are cached in memory per file
    (keyed by path, size and mtime), so repeated pipelines decode once.
    """
    resolved = _resolve_cifar_path(Path(path).expanduser().resolve())
    stat = resolved.stat()
    key = ("python", str(resolved), stat.st_mtime_ns, stat.st_size)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    if resolved.is_dir():
        raw = {s: (resolved / s).read_bytes() for s in ("train", "test")}
    else:
        raw = {}
        with tarfile.open(resolved, "r:*") as tar:
            for member in tar.getmembers():
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in ("train", "test"):
                    raw[name] = tar.extractfile(member).read()
        missing = {"train", "test"} - raw.keys()
        if missing:
            raise ValueError(f"{resolved} lacks the CIFAR-100 pickles {sorted(missing)}")
    result = {split: _decode_cifar_pickle(blob) for split, blob in raw.items()}
    with _CACHE_LOCK:
        _CACHE[key] = result
    return result


def load_cifar100_tfds(data_dir: str | os.PathLike | None = None, download: bool = False):
    """Reads `cifar100` from TensorFlow Datasets into memory (cached per `data_dir`).

    With `download=False` (default) the dataset must already be prepared in `data_dir`.
    Returns the same structure as `load_cifar100_python`.
    """
    import tensorflow_datasets as tfds

    key = ("tfds", str(data_dir))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    result = {}
    for split in ("train", "test"):
        ds = tfds.load("cifar100", split=split, data_dir=data_dir, download=download)
        images, labels = [], []
        # Batched reads, not `batch_size=-1`: that path needs a known cardinality.
        for batch in tfds.as_numpy(ds.map(lambda ex: (ex["image"], ex["label"])).batch(8192)):
            images.append(batch[0])
            labels.append(batch[1])
        result[split] = (
            np.ascontiguousarray(np.concatenate(images), dtype=np.uint8),
            np.concatenate(labels).astype(np.int32),
        )
    with _CACHE_LOCK:
        _CACHE[key] = result
    return result


def clear_cache() -> None:
    """Drops the decoded in-memory CIFAR arrays."""
    with _CACHE_LOCK:
        _CACHE.clear()


def list_image_folder(root: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str]]:
    """Lists a class-per-folder tree (`root/<class>/<image>`), like torchvision ImageFolder.

    Classes are the sub-folder names sorted, mapped to 0..C-1; files are sorted within a
    class so the example index of every image is stable across runs and machines.
    Returns (file paths, int32 labels, class names).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir())
    if not classes:
        raise ValueError(f"{root} has no class sub-folders")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(
            e.name
            for e in os.scandir(root / name)
            if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        paths.extend(str(root / name / f) for f in files)
        labels.extend([label] * len(files))
    if not paths:
        raise ValueError(f"{root} holds no images with extensions {IMAGE_EXTENSIONS}")
    return paths, np.asarray(labels, dtype=np.int32), classes
