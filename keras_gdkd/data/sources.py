"""Readers for the on-disk formats: CIFAR-100 python archive, TFDS, class-per-folder images."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import threading
import zlib
from collections.abc import Sequence
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


class DataNotFoundError(FileNotFoundError, ValueError):
    """A dataset file or folder is missing.

    Both a `FileNotFoundError` (what the loaders raised before) and a `ValueError` (what bad
    input raises everywhere else in `keras_gdkd`), so either `except` clause catches it.
    """


CIFAR100_TRAIN_SIZE = 50_000
CIFAR100_TEST_SIZE = 10_000
_CIFAR_HINT = (
    "Download cifar-100-python.tar.gz (python version) from "
    "https://www.cs.toronto.edu/~kriz/cifar.html again"
)


def _decode_cifar_pickle(raw: bytes, where: str) -> Arrays:
    """Decodes one CIFAR-100 python pickle; `where` names it in errors (file or member)."""
    try:
        entry = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    # Corrupt bytes can make the unpickler raise nearly any exception type (EOFError,
    # UnpicklingError, KeyError, struct errors, ...); all mean the same thing here.
    except Exception as e:
        raise ValueError(
            f"{where} is not a readable CIFAR-100 pickle ({type(e).__name__}: {e}); the file "
            f"is truncated or corrupt. {_CIFAR_HINT}."
        ) from e
    if not isinstance(entry, dict) or b"data" not in entry or b"fine_labels" not in entry:
        found = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise ValueError(
            f"{where} is not a CIFAR-100 pickle: expected a dict with keys b'data' and "
            f"b'fine_labels', found {found}."
        )
    data = np.asarray(entry[b"data"])
    labels = np.asarray(entry[b"fine_labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"{where}: b'data' must be uint8 rows of 3072 bytes (N, 3072), got {data.dtype} "
            f"{data.shape}."
        )
    if labels.shape != (len(data),):
        raise ValueError(f"{where} has {len(data)} images but labels of shape {labels.shape}.")
    if len(labels) and (labels.min() < 0 or labels.max() >= 100):
        raise ValueError(
            f"{where}: fine labels must lie in [0, 100), found [{labels.min()}, {labels.max()}]."
        )
    # Rows are channel-planar RGB (1024 R, 1024 G, 1024 B); NHWC wants interleaved.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels.astype(np.int32)


def _resolve_cifar_path(path: Path) -> Path:
    if path.is_dir():
        if (path / "train").is_file() and (path / "test").is_file():
            return path
        for candidate in (path / CIFAR100_FOLDER, path / CIFAR100_ARCHIVE):
            if candidate.exists():
                return _resolve_cifar_path(candidate)
        raise DataNotFoundError(
            f"{path} holds neither the `train` and `test` pickles, `{CIFAR100_FOLDER}/` nor "
            f"`{CIFAR100_ARCHIVE}`."
        )
    if path.is_file():
        return path
    raise DataNotFoundError(f"CIFAR-100 source not found: {path}")


def _read_cifar_archive(path: Path) -> dict[str, bytes]:
    raw = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in ("train", "test"):
                    raw[name] = tar.extractfile(member).read()
    # A truncated download raises EOFError (gzip), tarfile.ReadError or zlib.error (an
    # OSError subclass on some versions); name the file instead of leaking them bare.
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise ValueError(
            f"{path} is not a readable CIFAR-100 archive ({type(e).__name__}: {e}); the file "
            f"is truncated or corrupt. {_CIFAR_HINT}."
        ) from e
    missing = sorted({"train", "test"} - raw.keys())
    if missing:
        raise ValueError(
            f"{path} lacks the CIFAR-100 pickles {missing} (expected members "
            f"{CIFAR100_FOLDER}/train and {CIFAR100_FOLDER}/test). {_CIFAR_HINT}."
        )
    return raw


def read_cifar100_python(path: str | os.PathLike) -> dict[str, Arrays]:
    """Reads the CIFAR-100 python format without caching; see `load_cifar100_python`.

    Raises:
        DataNotFoundError: nothing in the CIFAR-100 format at `path`.
        ValueError: the archive or a pickle is truncated, corrupt or malformed; the message
            names the file.
    """
    resolved = _resolve_cifar_path(Path(path).expanduser().resolve())
    if resolved.is_dir():
        raw = {s: (resolved / s).read_bytes() for s in ("train", "test")}
        where = {s: str(resolved / s) for s in raw}
    else:
        raw = _read_cifar_archive(resolved)
        where = {s: f"{resolved} (member {CIFAR100_FOLDER}/{s})" for s in raw}
    return {split: _decode_cifar_pickle(blob, where[split]) for split, blob in raw.items()}


def load_cifar100_python(path: str | os.PathLike) -> dict[str, Arrays]:
    """Reads the official CIFAR-100 python format.

    Args:
        path: `cifar-100-python.tar.gz`, the extracted `cifar-100-python/` folder, or a
            folder holding either.

    Returns:
        `{"train": (images, labels), "test": (...)}` with images (N, 32, 32, 3) uint8 and
        fine labels (N,) int32. Results are cached in memory per file (keyed by path, size
        and mtime), so repeated pipelines decode once.

    Raises:
        DataNotFoundError: nothing in the CIFAR-100 format at `path`.
        ValueError: the archive or a pickle is truncated, corrupt or malformed; the message
            names the file.
    """
    resolved = _resolve_cifar_path(Path(path).expanduser().resolve())
    stat = resolved.stat()
    key = ("python", str(resolved), stat.st_mtime_ns, stat.st_size)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
    result = read_cifar100_python(resolved)
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


def _class_folders(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir())


def _some(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def class_difference(found: Sequence[str], expected: Sequence[str]) -> str:
    """Describes how the class set `found` differs from `expected` ("" if they are equal).

    Example: `"missing 1 of 1000 expected classes: n01440764; 2 unexpected: a, b"`.
    """
    found_set, expected_set = set(found), set(expected)
    missing = sorted(expected_set - found_set)
    extra = sorted(found_set - expected_set)
    parts = []
    if missing:
        parts.append(
            f"missing {len(missing)} of {len(expected_set)} expected classes: {_some(missing)}"
        )
    if extra:
        parts.append(f"{len(extra)} unexpected: {_some(extra)}")
    return "; ".join(parts)


def list_image_folder(
    root: str | os.PathLike, class_names: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray, list[str]]:
    """Lists a class-per-folder tree (`root/<class>/<image>`), like torchvision ImageFolder.

    Files are sorted within a class so the example index of every image is stable across
    runs and machines.

    Args:
        root: the folder holding one sub-folder per class.
        class_names: the label order: class `class_names[i]` gets label `i`. `None`: the
            sub-folder names sorted. When given, the sub-folders must be exactly these
            classes (same set), so the same name always gets the same label.

    Returns:
        (file paths, int32 labels, class names in label order).

    Raises:
        DataNotFoundError: `root` is not a folder.
        ValueError: no class sub-folders or no images, duplicated `class_names`, or
            sub-folders that differ from `class_names` (the message lists the differences).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(f"image folder not found: {root}")
    found = _class_folders(root)
    if not found:
        raise ValueError(f"{root} has no class sub-folders (expected {root}/<class>/<image>).")
    if class_names is None:
        classes = found
    else:
        classes = [str(c) for c in class_names]
        if len(set(classes)) != len(classes):
            raise ValueError(
                f"class_names has duplicates: {len(classes)} names, {len(set(classes))} distinct."
            )
        diff = class_difference(found, classes)
        if diff:
            raise ValueError(
                f"The class folders in {root} differ from the {len(classes)} classes the labels "
                f"are numbered by: {diff}. Every class needs a folder (empty is fine), and no "
                "other folders may be there."
            )
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


def imagenet_split_folder(root: str | os.PathLike, split: str) -> Path:
    """`root/<split>` when that folder exists, else `root` itself (already the split folder)."""
    root = Path(root).expanduser()
    return root / split if (root / split).is_dir() else root


def imagenet_train_folder(root: str | os.PathLike) -> Path:
    """The train folder for a dataset root, a train folder, or a val folder next to train/."""
    root = Path(root).expanduser()
    if (root / "train").is_dir():
        return root / "train"
    if root.name == "train" and root.is_dir():
        return root
    # A split folder (e.g. val/) given directly: its train/ is the sibling.
    if not (root / "val").is_dir() and (root.parent / "train").is_dir():
        return root.parent / "train"
    raise DataNotFoundError(
        f"No ImageNet train folder at {root / 'train'} (nor {root.parent / 'train'}): the "
        "class list that numbers the labels comes from train/<class>/ folder names. Pass "
        "the dataset root holding train/ and val/, or give `class_names` explicitly."
    )


def imagenet_class_names(root: str | os.PathLike) -> list[str]:
    """The ImageNet class list: the train class folder names, sorted (label `i` = entry `i`).

    Both the train and the val pipelines number classes by this list, so a val folder
    with a class missing cannot shift the labels of the classes after it. Save it with a
    run and pass it back as `class_names` to pin the numbering.

    Args:
        root: the dataset root holding `train/` (and `val/`), or the `train/` folder itself.

    Returns:
        The sorted class folder names, e.g. `["n01440764", "n01443537", ...]`.

    Example:

    ```python
    names = imagenet_class_names("/data/imagenet")
    val = imagenet_val("/data/imagenet", class_names=names)
    ```
    """
    train = imagenet_train_folder(root)
    names = _class_folders(train)
    if not names:
        raise ValueError(f"{train} has no class sub-folders (expected {train}/<class>/<image>).")
    return names
