"""Logits of several models on one dataset, their npz files, and the helpers every analysis shares.

`collect_logits` runs every model on every batch in one pass, so the rows of the teacher and of
each student stay aligned with the labels. `save_logits`/`load_logits` use the authors' dump
format (npz keys `logits` and `labels`), so their plotting scripts read these files and ours read
theirs. The analyses (`teacher`, `agreement`, `gradients`, `class_mean`) take the `(N, C)` logits
and `(N,)` labels and process them in row chunks; the small helpers they share live here too.
"""

from __future__ import annotations

import math
import numbers
import os
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import keras
import numpy as np

from keras_gdkd.runs.files import atomic_path

DEFAULT_BATCH_SIZE = 4096
# The fewest rows a chunk is padded to: small inputs share one shape (padding 64 rows is free).
_MIN_ROWS = 64


# --- collecting and storing ----------------------------------------------------------------


def collect_logits(
    models: Mapping[str, keras.Model], dataset: Iterable, max_examples: int | None = None
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Run every model on every batch of `dataset`, in one pass, in inference mode.

    Each batch goes through all the models before the next is read, so a shuffling or
    augmenting pipeline still gives rows that match across models and labels. A
    `keras_gdkd.Distiller` is replaced by its student (with the Distiller's `student_output`
    selection), which is the model it trains.

    Args:
        models: `{name: keras.Model}`; each returns logits of shape `(batch, C)` (a one-element
            list or dict of them is accepted).
        dataset: any iterable of `(x, y)` or `(x, y, sample_weight)` batches: a `tf.data.Dataset`,
            a `keras.utils.PyDataset`, a list of NumPy pairs, ... `y` holds integer class
            indices of shape `(batch,)` or `(batch, 1)`.
        max_examples: stop after this many examples (the last batch is cut); `None` for all.

    Returns:
        `(logits, labels)`: `{name: float32 array (N, C)}` and an int64 array `(N,)`.

    Raises:
        ValueError: for an empty `models` or dataset, a non-model entry, a batch that is not
            `(x, y)`, non-integer labels, or outputs that are not `(batch, C)`.

    Example:

    ```python
    logits, labels = collect_logits({"teacher": teacher, "kd": student}, test_ds)
    save_logits("teacher.npz", logits["teacher"], labels)
    ```
    """
    from keras_gdkd.distiller import Distiller

    if not isinstance(models, Mapping) or not models:
        raise ValueError(f"models must be a non-empty mapping name -> keras.Model; got {models!r}.")
    runners = {}
    for name, model in models.items():
        if not isinstance(model, keras.Model):
            raise ValueError(f"models[{name!r}] must be a keras.Model; got {type(model).__name__}.")
        selector = None
        if isinstance(model, Distiller):
            model, selector = model.student, model.student_output
        runners[name] = (model, selector)
    if max_examples is not None and (
        isinstance(max_examples, bool)
        or not isinstance(max_examples, numbers.Integral)
        or max_examples < 1
    ):
        raise ValueError(f"max_examples must be a positive integer or None; got {max_examples!r}.")

    chunks = {name: [] for name in runners}
    label_chunks, seen = [], 0
    for batch in dataset:
        if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
            raise ValueError(
                "Each batch of the dataset must be (x, y) or (x, y, sample_weight); got "
                f"{type(batch).__name__}{'' if not hasattr(batch, '__len__') else len(batch)}."
            )
        x, y = batch[0], _batch_labels(batch[1])
        take = len(y) if max_examples is None else min(len(y), max_examples - seen)
        x = keras.tree.map_structure(lambda v, n=take: _to_numpy(v)[:n], x)
        y = y[:take]
        for name, (model, selector) in runners.items():
            out = _select(model(x, training=False), selector, name)
            out = keras.ops.convert_to_numpy(keras.ops.cast(out, "float32"))
            if out.ndim != 2 or out.shape[0] != take:
                raise ValueError(
                    f"Model {name!r} must return logits of shape ({take}, num_classes) for a batch "
                    f"of {take}; got {out.shape}."
                )
            chunks[name].append(out)
        label_chunks.append(y)
        seen += take
        if max_examples is not None and seen >= max_examples:
            break
    if not seen:
        raise ValueError("The dataset gave no examples.")
    logits = {name: np.concatenate(parts) for name, parts in chunks.items()}
    return logits, np.concatenate(label_chunks)


def _to_numpy(value) -> np.ndarray:
    try:
        return np.asarray(value)
    except (TypeError, RuntimeError, ValueError):  # accelerator tensors refuse __array__
        return np.asarray(keras.ops.convert_to_numpy(value))


def _batch_labels(y) -> np.ndarray:
    y = _to_numpy(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            "Labels must be integer class indices of shape (batch,) or (batch, 1); got dtype "
            f"{y.dtype} and shape {y.shape}. Convert one-hot labels with argmax(y, axis=-1)."
        )
    return y.astype("int64")


def _select(outputs, selector, name: str):
    if selector is not None:
        return outputs[selector]
    if isinstance(outputs, Mapping):
        outputs = list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        if len(outputs) != 1:
            raise ValueError(
                f"Model {name!r} returns {len(outputs)} outputs; give a model that returns the "
                "logits only (e.g. keras.Model(model.input, model.outputs[0]))."
            )
        outputs = outputs[0]
    return outputs


def save_logits(path: str | os.PathLike, logits, labels) -> None:
    """Write logits and labels to an npz file with keys `logits` and `labels`, atomically.

    The file is written under a temporary name in the same folder and then renamed, so a reader
    never sees a half-written file and an interrupted run leaves the old file intact.

    Args:
        path: the destination; written exactly as given (no `.npz` is appended).
        logits: shape `(N, C)`, stored as float32.
        labels: integer class indices, shape `(N,)`, stored as int64.

    Raises:
        ValueError: if the shapes do not match or the labels are not integers.
    """
    logits, labels = as_logits(logits), as_labels(labels)
    if labels is None or len(labels) != len(logits):
        raise ValueError(
            f"labels must have shape ({len(logits)},) to match the logits; "
            f"got {None if labels is None else labels.shape}."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # np.savez given a file object writes exactly there (no ".npz" added to the name).
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, logits=logits, labels=labels)


def load_logits(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an npz file with keys `logits` and `labels` (ours or the authors' dumps).

    Other keys (the authors' `feats`) are ignored.

    Returns:
        `(logits, labels)` as float32 `(N, C)` and int64 `(N,)`.

    Raises:
        ValueError: if the file is damaged, a key is missing or the shapes do not match.
    """
    try:
        with np.load(os.fspath(path), allow_pickle=False) as data:
            missing = {"logits", "labels"} - set(data.files)
            if missing:
                raise ValueError(
                    f"{os.fspath(path)} has keys {sorted(data.files)}; expected 'logits' and "
                    "'labels'."
                )
            logits, labels = as_logits(data["logits"]), as_labels(data["labels"])
    except (OSError, EOFError, zipfile.BadZipFile) as error:  # truncated or not an npz
        raise ValueError(f"{os.fspath(path)} is not a readable npz file ({error}).") from error
    if len(labels) != len(logits):
        raise ValueError(
            f"{os.fspath(path)}: {len(logits)} rows of logits but {len(labels)} labels."
        )
    return logits, labels


# --- helpers shared by the analyses ---------------------------------------------------------


def as_logits(logits, name: str = "logits", num_classes: int | None = None) -> np.ndarray:
    """`logits` as a float32 NumPy array of shape `(N, C)` with `C >= 2` and finite values.

    Raises:
        ValueError: for another shape, a class count other than `num_classes`, or a NaN/inf.
    """
    x = np.asarray(keras.ops.convert_to_numpy(logits), dtype="float32")
    if x.ndim != 2 or x.shape[1] < 2 or x.shape[0] < 1:
        raise ValueError(
            f"{name} must have shape (N, num_classes) with N, C >= 1, 2; got {x.shape}."
        )
    if num_classes is not None and x.shape[1] != num_classes:
        raise ValueError(f"{name} must have {num_classes} classes; got {x.shape[1]}.")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} must be finite; found NaN or inf.")
    return x


def as_labels(labels, num_samples: int | None = None, num_classes: int | None = None):
    """Integer labels as an int64 array `(N,)`, or `None` when `labels` is `None`.

    Raises:
        ValueError: for float or one-hot labels, a length other than `num_samples`, or a value
            outside `[0, num_classes)`.
    """
    if labels is None:
        return None
    y = np.asarray(keras.ops.convert_to_numpy(labels))
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"labels must be integer class indices of shape (N,); got dtype {y.dtype} and shape "
            f"{y.shape}."
        )
    if num_samples is not None and len(y) != num_samples:
        raise ValueError(f"labels must have shape ({num_samples},); got {y.shape}.")
    if num_classes is not None and len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}); got values in [{y.min()}, {y.max()}]."
        )
    return y.astype("int64")


def as_pair(student_logits, teacher_logits, labels=None) -> tuple:
    """Check a student/teacher pair (same shape) and optional labels; NumPy out."""
    t = as_logits(teacher_logits, "teacher_logits")
    s = as_logits(student_logits, "student_logits", t.shape[1])
    if s.shape != t.shape:
        raise ValueError(f"student_logits {s.shape} and teacher_logits {t.shape} must match.")
    return s, t, as_labels(labels, t.shape[0], t.shape[1])


def check_batch_size(batch_size: int) -> int:
    """A positive integer number of rows per chunk."""
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, numbers.Integral)
        or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
    return int(batch_size)


def row_chunks(num_rows: int, batch_size: int) -> Iterator[slice]:
    """Slices of at most `batch_size` consecutive rows covering `range(num_rows)`."""
    batch_size = check_batch_size(batch_size)
    for start in range(0, num_rows, batch_size):
        yield slice(start, min(start + batch_size, num_rows))


def map_chunks(fn, arrays, batch_size: int, post=None) -> dict[str, np.ndarray]:
    """Apply a per-row kernel to row chunks of NumPy arrays and join the per-row results.

    Each chunk is zero-padded to a power-of-two number of rows (at least 64, at most
    `batch_size`) before `fn` sees it, and the padding is cut from the results: the kernels then
    meet only a few shapes, so a backend that compiles each operation per shape (JAX, also when
    eager) compiles them a few times rather than once per distinct chunk length.

    Args:
        fn: takes one tensor per entry of `arrays` (`None` stays `None`) and returns a dict of
            tensors whose first axis is the row.
        arrays: NumPy arrays with the same number of rows, or `None`.
        batch_size: the largest chunk.
        post: optional `post(results, rows)` applied to each chunk's NumPy results (already
            cut to the chunk's rows) before they are kept, to reduce `(rows, C)` values to
            per-row ones.

    Returns:
        `{name: array}` with the chunks' results concatenated along the rows.
    """
    num_rows = len(next(a for a in arrays if a is not None))
    out: dict[str, list] = {}
    for rows in row_chunks(num_rows, batch_size):
        m = rows.stop - rows.start
        size = min(check_batch_size(batch_size), max(_MIN_ROWS, 1 << (m - 1).bit_length()))
        tensors = [
            None if a is None else keras.ops.convert_to_tensor(_pad(a[rows], size)) for a in arrays
        ]
        results = {name: to_numpy(v)[:m] for name, v in fn(*tensors).items()}
        if post is not None:
            results = post(results, rows)
        for name, v in results.items():
            out.setdefault(name, []).append(v)
    return {name: np.concatenate(parts) for name, parts in out.items()}


def _pad(a: np.ndarray, size: int) -> np.ndarray:
    if len(a) == size:
        return a
    return np.concatenate([a, np.zeros((size - len(a), *a.shape[1:]), a.dtype)])


def to_numpy(x) -> np.ndarray:
    """A backend tensor as a NumPy array."""
    return np.asarray(keras.ops.convert_to_numpy(x))


def temperature_key(temperature: float) -> str:
    """The key of a temperature in the results: `4.0 -> "T=4"`, `0.5 -> "T=0.5"`."""
    return f"T={float(temperature):g}"


def summarize(values) -> dict:
    """`{"mean", "std", "q10", "median", "q90"}` of the finite entries, as Python floats.

    Non-finite entries (an undefined per-sample ratio) are left out; with none left every
    field is NaN.
    """
    x = np.asarray(values, dtype="float64").reshape(-1)
    x = x[np.isfinite(x)]
    if not x.size:
        return dict.fromkeys(("mean", "std", "q10", "median", "q90"), math.nan)
    q10, q50, q90 = np.quantile(x, (0.1, 0.5, 0.9))
    return {
        "mean": float(x.mean()),
        "std": float(x.std()),
        "q10": float(q10),
        "median": float(q50),
        "q90": float(q90),
    }


def histogram(values, num_bins: int) -> list[int]:
    """Counts of each integer value in `[0, num_bins)`, as a list of Python ints."""
    return [int(c) for c in np.bincount(np.asarray(values, dtype="int64"), minlength=num_bins)]


def safe_mean(values) -> float:
    """Mean in float64 as a Python float; NaN for an empty selection."""
    x = np.asarray(values, dtype="float64")
    return float(x.mean()) if x.size else math.nan
