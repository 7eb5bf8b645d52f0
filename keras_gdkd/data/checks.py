"""Finding the data and checking it before a run: `resolve_source`, `check_image_folder`,
`check_data`.

Everything here is cheap and imports neither TensorFlow nor TensorFlow Datasets, except
`full_decode=True` checks (which decode with TensorFlow, exactly as the pipelines do) and
checks of tfds sources.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import os
import re
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from keras_gdkd.data import sources

DATASETS = ("cifar100", "imagenet")
TFDS_NAMES = {"cifar100": "cifar100", "imagenet": "imagenet2012"}
IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")

_HOW = {
    "cifar100": (
        "To provide CIFAR-100, download the python version (cifar-100-python.tar.gz) from "
        f"{CIFAR100_URL} into a folder and pass that folder as data_dir (--data-dir); or, on a "
        "machine with internet access, run `tfds build cifar100 --data_dir DIR`, copy DIR "
        "over and pass it as data_dir."
    ),
    "imagenet": (
        "To provide ImageNet, download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar "
        "from https://image-net.org, then either extract them into <root>/train/<class>/ and "
        "<root>/val/<class>/ (the validation images re-foldered by synset, as for "
        "torchvision) and pass <root> as data_dir (--data-dir), or pass the folder holding "
        "the two tars as manual_dir (--manual-dir) to build tfds imagenet2012 in data_dir "
        "once (hours, ~150 GB)."
    ),
}


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}.")


def tfds_default_data_dir() -> Path:
    """TensorFlow Datasets' default `data_dir` (`$TFDS_DATA_DIR`, else ~/tensorflow_datasets)."""
    return Path(
        os.environ.get("TFDS_DATA_DIR", Path("~", "tensorflow_datasets").expanduser())
    ).expanduser()


def find_prepared_tfds(data_dir: str | os.PathLike, name: str) -> Path | None:
    """The folder of a prepared tfds dataset `name` under `data_dir`, or None.

    Looks for `<data_dir>/<name>/<version>/dataset_info.json` (or
    `<name>/<config>/<version>/...`), the file tfds writes last when it finishes preparing;
    unfinished `incomplete.*` folders do not count. Reads no dataset.
    """
    base = Path(data_dir).expanduser() / name
    if not base.is_dir():
        return None
    for pattern in ("*/dataset_info.json", "*/*/dataset_info.json"):
        for info in sorted(base.glob(pattern)):
            if _VERSION.match(info.parent.name) and info.is_file():
                return info.parent
    return None


def _expected(dataset: str, where: str) -> str:
    if dataset == "cifar100":
        return (
            f"{where}/{sources.CIFAR100_ARCHIVE}, {where}/{sources.CIFAR100_FOLDER}/ (with its "
            f"train and test files), or a prepared tfds cifar100 under {where} "
            f"({where}/cifar100/<version>/)"
        )
    return (
        f"{where}/train/<class>/ and {where}/val/<class>/ image folders, or a prepared tfds "
        f"imagenet2012 under {where} ({where}/imagenet2012/<version>/)"
    )


def _check_manual_dir(manual_dir: str | os.PathLike) -> None:
    folder = Path(manual_dir).expanduser()
    missing = [str(folder / f) for f in IMAGENET_MANUAL_FILES if not (folder / f).is_file()]
    if missing:
        raise ValueError(
            f"manual_dir {folder} lacks {', '.join(missing)}: tfds builds imagenet2012 from "
            f"these two archives. {_HOW['imagenet']}"
        )


def resolve_source(
    dataset: str, data_dir: str | os.PathLike | None, manual_dir: str | os.PathLike | None = None
) -> tuple[str, str | None]:
    """Decides where the data of a run comes from, before any of it is loaded.

    Looks at the files only (no dataset is opened and TensorFlow is not imported), so a
    missing or misplaced dataset fails at once with a message saying what was looked for
    and how to provide the data.

    Args:
        dataset: `"cifar100"` or `"imagenet"`.
        data_dir: a folder holding the dataset files (CIFAR-100: `cifar-100-python.tar.gz`
            or the extracted `cifar-100-python/`; the archive file itself is accepted too.
            ImageNet: `train/<class>/` and `val/<class>/`), or a tfds `data_dir` holding a
            prepared `cifar100` / `imagenet2012`. `None`: tfds' default folder
            (`tfds_default_data_dir()`), which must hold the prepared dataset.
        manual_dir: ImageNet only: the folder holding `ILSVRC2012_img_train.tar` and
            `ILSVRC2012_img_val.tar`, from which tfds prepares `imagenet2012` in `data_dir`
            the first time.

    Returns:
        `(source, tfds_data_dir)` for the loaders: `(path, None)` for files, or
        `("tfds", data_dir)` for tfds (`data_dir` may be None: tfds' default).

    Raises:
        ValueError: unknown dataset; `data_dir` missing, empty, or holding neither the
            files nor a prepared tfds dataset; no data at all; an incomplete `manual_dir`.

    Example:

    ```python
    source, tfds_dir = resolve_source("cifar100", "/data/cifar")
    train = cifar100_train(source, data_dir=tfds_dir, batch_size=64, epochs=240)
    ```
    """
    _check_dataset(dataset)
    name = TFDS_NAMES[dataset]
    how = _HOW[dataset]
    if manual_dir is not None and dataset != "imagenet":
        raise ValueError("manual_dir is for ImageNet (tfds imagenet2012) only.")
    if data_dir is None:
        default = tfds_default_data_dir()
        if find_prepared_tfds(default, name) is not None:
            return "tfds", None
        if manual_dir is not None:
            _check_manual_dir(manual_dir)
            return "tfds", None
        raise ValueError(
            f"No {dataset} data: no data_dir was given and tfds' default folder {default} "
            f"holds no prepared {name}. {how}"
        )
    root = Path(data_dir).expanduser()
    expected = _expected(dataset, str(root))
    fresh = not root.exists() or (root.is_dir() and not any(root.iterdir()))
    if fresh and dataset == "imagenet" and manual_dir is not None:
        # A new tfds data_dir: tfds creates it and builds imagenet2012 from manual_dir.
        _check_manual_dir(manual_dir)
        return "tfds", str(root)
    if not root.exists():
        raise ValueError(f"data_dir {root} does not exist. Expected {expected}. {how}")
    if root.is_file():
        if dataset == "cifar100" and root.name.endswith((".tar.gz", ".tgz", ".tar")):
            return str(root), None
        raise ValueError(f"data_dir {root} is a file; expected a folder holding {expected}.")
    if not any(root.iterdir()):
        raise ValueError(f"data_dir {root} is empty. Expected {expected}. {how}")
    found = ""
    if dataset == "cifar100":
        folder = root / sources.CIFAR100_FOLDER
        if (
            (root / sources.CIFAR100_ARCHIVE).is_file()
            or ((folder / "train").is_file() and (folder / "test").is_file())
            or ((root / "train").is_file() and (root / "test").is_file())
        ):
            return str(root), None
        if folder.is_dir():
            found = f" ({folder}/ is there but lacks its train or test file)"
    else:
        train, val = root / "train", root / "val"
        if train.is_dir() and val.is_dir():
            return str(root), None
        if train.is_dir() or val.is_dir():
            present, absent = (train, val) if train.is_dir() else (val, train)
            found = (
                f" ({present}/ is there but {absent}/ is not; both are needed: labels are "
                "numbered by the train class list and runs validate on val)"
            )
    if find_prepared_tfds(root, name) is not None:
        return "tfds", str(root)
    if dataset == "imagenet" and manual_dir is not None and not found:
        _check_manual_dir(manual_dir)
        return "tfds", str(root)
    raise ValueError(f"data_dir {root} holds no {dataset} data{found}. Expected {expected}. {how}")


# --- reports ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DataProblem:
    """One bad file (or archive member, or folder) and what is wrong with it."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class DataReport:
    """The result of `check_image_folder` / `check_data`.

    Attributes:
        subject: what was checked (dataset and location).
        checked: how many files (or archive members, tfds shards, examples) were checked.
        problems: the bad ones, sorted by path; empty when all is well.
        details: informational lines (split sizes, class counts, what was not checked).
        seconds: wall time of the check.
        full_decode: whether every image was decoded (else: fast structural checks only).

    `report.ok` is True when there are no problems; `str(report)` is a readable summary
    (`summary(max_problems)` for a longer list); `report.raise_if_bad()` raises a
    `ValueError` with the summary.
    """

    subject: str
    checked: int
    problems: tuple[DataProblem, ...] = ()
    details: tuple[str, ...] = ()
    seconds: float = 0.0
    full_decode: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self, max_problems: int = 20) -> str:
        """A multi-line summary listing at most `max_problems` problems."""
        mode = "full decode" if self.full_decode else "fast check"
        status = "OK" if self.ok else f"{len(self.problems)} PROBLEM(S)"
        lines = [f"{self.subject}: {status} ({self.checked} checked, {mode}, {self.seconds:.1f} s)"]
        lines += [f"  {d}" for d in self.details]
        lines += [f"  BAD {p}" for p in self.problems[:max_problems]]
        if len(self.problems) > max_problems:
            lines.append(f"  ... and {len(self.problems) - max_problems} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def raise_if_bad(self) -> None:
        """Raises `ValueError` (with the summary) when there are problems."""
        if not self.ok:
            hint = "" if self.full_decode else " (fast check; full_decode=True decodes every image)"
            raise ValueError(f"Bad data found{hint}:\n{self.summary()}")


def _merge(subject: str, reports: Iterable[DataReport], details=(), seconds=0.0) -> DataReport:
    reports = list(reports)
    problems = sorted((p for r in reports for p in r.problems), key=lambda p: p.path)
    return DataReport(
        subject=subject,
        checked=sum(r.checked for r in reports),
        problems=tuple(problems),
        details=tuple(details) + tuple(d for r in reports for d in r.details),
        seconds=seconds,
        full_decode=any(r.full_decode for r in reports),
    )


# --- image files -----------------------------------------------------------------------------

_JPEG = b"\xff\xd8\xff"
_PNG = b"\x89PNG\r\n\x1a\n"
_TAIL = 1024


def _fast_image_problem(path: str) -> str | None:
    """Why the file cannot be a complete JPEG/PNG/GIF/BMP image, or None.

    Reads the first bytes and the last KiB only (the whole file only for the rare image
    with bytes after its end marker). Truncation is caught through the end marker: a cut
    JPEG lacks FF D9 after its scan data, a cut PNG its IEND chunk.
    """
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(0, size - _TAIL))
            tail = f.read()
            if head.startswith(_JPEG):
                if tail.endswith(b"\xff\xd9"):
                    return None
                f.seek(0)
                data = f.read()
                # Trailing bytes after the end-of-image marker are ignored by decoders; only
                # an end marker after the last start-of-scan proves the scan data complete.
                sos = data.rfind(b"\xff\xda")
                if sos >= 0 and data.find(b"\xff\xd9", sos) >= 0:
                    return None
                return (
                    "truncated JPEG: no end-of-image marker (FF D9) after the scan data "
                    f"({size} bytes)"
                )
            if head.startswith(_PNG):
                if b"IEND" in tail:
                    return None
                f.seek(0)
                if b"IEND" in f.read():
                    return None
                return f"truncated PNG: no IEND chunk ({size} bytes)"
    except OSError as e:
        return f"cannot be read: {e}"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return None if tail.endswith(b";") else f"truncated GIF: no trailer byte 3B ({size} bytes)"
    if head[:2] == b"BM" and len(head) >= 6:
        declared = int.from_bytes(head[2:6], "little")
        return None if size >= declared else f"truncated BMP: {size} of {declared} bytes"
    return f"not a JPEG, PNG, GIF or BMP image (starts with {head[:8].hex(' ')})"


def _tf_message(error: Exception) -> str:
    # TensorFlow wraps op errors as "{{function_node ...}} message [Op:Name]": keep the message.
    message = str(getattr(error, "message", error)).strip()
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    message = re.sub(r"\s*\[Op:\w+\]", "", message)
    return message.splitlines()[0] if message else type(error).__name__


def _decode_problem(path: str) -> str | None:
    import tensorflow as tf

    from keras_gdkd.data import augment

    try:
        # The pipelines' own decoder, so what passes here also passes in training.
        image = augment.decode_rgb(tf.io.read_file(path))
    except (tf.errors.OpError, ValueError) as e:
        return f"cannot be decoded: {_tf_message(e)}"
    if 0 in image.shape:
        return f"decodes to an empty image {tuple(image.shape)}"
    return None


def _image_problems(paths: Sequence[str], full_decode: bool) -> list[DataProblem]:
    problems = []
    for path in paths:
        reason = _fast_image_problem(path)
        if reason is None and full_decode:
            reason = _decode_problem(path)
        if reason is not None:
            problems.append(DataProblem(path, reason))
    return problems


def _default_workers() -> int:
    # File reads are I/O-bound and release the GIL: more threads than cores helps on
    # network storage; decoding in TensorFlow releases the GIL too.
    return min(32, 4 * (os.cpu_count() or 1))


def list_image_files(root: str | os.PathLike) -> list[str]:
    """Every file under `root` (recursively) with an image extension, sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        found.extend(
            os.path.join(folder, f)
            for f in sorted(files)
            if f.lower().endswith(sources.IMAGE_EXTENSIONS)
        )
    return found


def check_images(
    paths: Sequence[str],
    subject: str,
    full_decode: bool = False,
    workers: int | None = None,
) -> DataReport:
    """Checks the image files `paths` in a thread pool; see `check_image_folder`."""
    workers = _default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if full_decode:
        import tensorflow  # noqa: F401  (imported once here, not racing in every thread)
    start = time.perf_counter()
    chunk = 64
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    problems: list[DataProblem] = []
    if workers == 1 or len(chunks) <= 1:
        for part in chunks:
            problems += _image_problems(part, full_decode)
    else:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for found in pool.map(lambda part: _image_problems(part, full_decode), chunks):
                problems += found
    return DataReport(
        subject=subject,
        checked=len(paths),
        problems=tuple(sorted(problems, key=lambda p: p.path)),
        seconds=time.perf_counter() - start,
        full_decode=full_decode,
    )


def check_image_folder(
    root: str | os.PathLike, full_decode: bool = False, workers: int | None = None
) -> DataReport:
    """Finds corrupt images under `root` before a run trips over them.

    Every file with an image extension (`.jpg`, `.jpeg`, `.png`, `.bmp`, `.gif`, any case)
    under `root`, recursively, is checked:

    * fast (default): not empty; starts with a JPEG, PNG, GIF or BMP signature (the
      extension may lie: a PNG named `.JPEG` is fine, the pipelines detect the format);
      complete: a JPEG ends its scan data with the end-of-image marker FF D9, a PNG has
      its IEND chunk, a GIF its trailer, a BMP its declared size. This catches empty,
      truncated and non-image files at a few hundred microseconds per file;
    * `full_decode=True`: additionally decodes every image with the pipelines' own
      TensorFlow decoder, which catches corrupt data inside complete-looking files too,
      at the cost of a full decode per image.

    Args:
        root: a folder of images, e.g. an ImageNet root (train/ and val/) or one split.
        full_decode: decode every image as well.
        workers: threads (default: 4 per core, at most 32).

    Returns:
        A `DataReport`: `report.ok`, `report.problems` (path and reason per bad file),
        `str(report)` for a summary.

    Raises:
        ValueError: `root` is not a folder.

    Example:

    ```python
    report = check_image_folder("/data/imagenet")
    print(report)
    report.raise_if_bad()
    ```
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder of images.")
    paths = list_image_files(root)
    report = check_images(paths, f"images under {root}", full_decode, workers)
    if not paths:
        return dataclasses.replace(
            report,
            problems=(DataProblem(str(root), f"no image files {sources.IMAGE_EXTENSIONS}"),),
        )
    return report


# --- whole datasets --------------------------------------------------------------------------


def _check_cifar_files(source: str) -> DataReport:
    start = time.perf_counter()
    try:
        resolved = sources._resolve_cifar_path(Path(source).expanduser().resolve())
    except sources.DataNotFoundError as e:
        return DataReport(f"CIFAR-100 at {source}", 0, (DataProblem(source, str(e)),))
    details = []
    problems = []
    if resolved.is_file():
        try:
            # Reading the gzip stream to its end verifies its CRC and length, which the
            # tar reader (it stops at the end-of-archive blocks) does not.
            with gzip.open(resolved, "rb") as f:
                while f.read(1 << 22):
                    pass
        except gzip.BadGzipFile:
            pass  # a plain .tar, or not an archive at all: the tar reader says which
        except (EOFError, OSError, zlib.error) as e:
            problems.append(DataProblem(str(resolved), f"truncated or corrupt gzip stream ({e})"))
    if not problems:
        try:
            splits = sources.read_cifar100_python(resolved)
        except ValueError as e:
            problems.append(DataProblem(str(resolved), str(e)))
        else:
            for split, official in (
                ("train", sources.CIFAR100_TRAIN_SIZE),
                ("test", sources.CIFAR100_TEST_SIZE),
            ):
                images, labels = splits[split]
                note = "" if len(images) == official else f" (the official set has {official})"
                details.append(
                    f"{split}: {len(images)} images {images.shape[1:]} uint8, "
                    f"{len(set(labels.tolist()))} classes{note}"
                )
    return DataReport(
        subject=f"CIFAR-100 python format at {resolved}",
        checked=2,
        problems=tuple(problems),
        details=tuple(details),
        seconds=time.perf_counter() - start,
    )


def _check_imagenet_folders(root: Path, full_decode: bool, workers: int | None) -> DataReport:
    start = time.perf_counter()
    train, val = root / "train", root / "val"
    problems, details, reports = [], [], []
    class_names = sources.imagenet_class_names(root)
    val_classes = sources._class_folders(val)
    diff = sources.class_difference(val_classes, class_names)
    if diff:
        problems.append(
            DataProblem(str(val), f"val class folders differ from the train class list: {diff}")
        )
    for name, folder, classes in (("train", train, class_names), ("val", val, val_classes)):
        paths = list_image_files(folder)
        per_class = {c: 0 for c in classes}
        for p in paths:
            c = os.path.basename(os.path.dirname(p))
            if c in per_class:
                per_class[c] += 1
        empty = sorted(c for c, n in per_class.items() if n == 0)
        details.append(f"{name}: {len(classes)} classes, {len(paths)} images")
        if empty:
            problems.append(
                DataProblem(
                    str(folder),
                    f"{len(empty)} class folder(s) without images: {sources._some(empty)}",
                )
            )
        reports.append(check_images(paths, name, full_decode, workers))
    report = _merge(
        f"ImageNet folders at {root}",
        [DataReport("", 0, tuple(problems)), *reports],
        details,
        time.perf_counter() - start,
    )
    return dataclasses.replace(report, full_decode=full_decode)


def _check_tfds(name: str, data_dir: str | None, full_decode: bool) -> DataReport:
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from keras_gdkd.data import augment

    start = time.perf_counter()
    builder = tfds.builder(name, data_dir=data_dir)
    subject = f"tfds {name} in {builder.data_dir}"
    if not builder.is_prepared():
        return DataReport(
            subject,
            0,
            details=("not prepared yet: tfds builds it from manual_dir at the first run",),
            seconds=time.perf_counter() - start,
        )
    problems, details, checked = [], [], 0
    for split, info in sorted(builder.info.splits.items()):
        details.append(f"{split}: {info.num_examples} examples in {info.num_shards} shard(s)")
        for path in info.filepaths:
            checked += 1
            if not path.exists():
                problems.append(DataProblem(os.fspath(path), "shard file missing"))
            # epath's stat result (local or cloud storage) names the size `length`.
            elif getattr(path.stat(), "length", 1) == 0:
                problems.append(DataProblem(os.fspath(path), "shard file empty"))
        if problems or not full_decode:
            continue
        ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        position = -1
        try:
            for position, example in enumerate(ds):
                try:
                    augment.decode_rgb(example["image"])
                except (tf.errors.OpError, ValueError) as e:
                    problems.append(
                        DataProblem(
                            f"{subject} {split}[{position}]", f"cannot be decoded: {_tf_message(e)}"
                        )
                    )
        except tf.errors.OpError as e:
            problems.append(
                DataProblem(
                    f"{subject} {split}", f"unreadable after example {position}: {_tf_message(e)}"
                )
            )
        checked += position + 1
    return DataReport(
        subject,
        checked,
        tuple(problems),
        tuple(details),
        time.perf_counter() - start,
        full_decode,
    )


def check_data(
    dataset: str,
    data_dir: str | os.PathLike | None,
    full_decode: bool = False,
    manual_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> DataReport:
    """Checks a dataset where `resolve_source` finds it, without training on it.

    * CIFAR-100 files: the gzip stream is complete (CRC), the archive (or extracted
      folder) opens, the `train` and `test` pickles are present and decode to uint8
      (N, 3072) rows with one label in [0, 100) per row.
    * ImageNet folders: the val class folders are exactly the train classes, every class
      has images, and every image passes `check_image_folder` (fast, or `full_decode`).
    * tfds sources: every shard file of every split exists and is non-empty; with
      `full_decode`, every example is read and its image decoded.

    Args:
        dataset: `"cifar100"` or `"imagenet"`.
        data_dir, manual_dir: as for `resolve_source`.
        full_decode: decode every image (ImageNet, tfds) as well.
        workers: threads for image checks (default: 4 per core, at most 32).

    Returns:
        A `DataReport` (`report.ok`, `report.problems`, `str(report)`).

    Raises:
        ValueError: the data cannot be found (from `resolve_source`).

    Example:

    ```python
    report = check_data("imagenet", "/data/imagenet")
    print(report)
    if not report.ok:
        raise SystemExit(1)
    ```
    """
    source, tfds_dir = resolve_source(dataset, data_dir, manual_dir)
    if source == "tfds":
        return _check_tfds(TFDS_NAMES[dataset], tfds_dir, full_decode)
    if dataset == "cifar100":
        return _check_cifar_files(source)
    return _check_imagenet_folders(Path(source), full_decode, workers)
