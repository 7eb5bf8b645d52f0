"""The class-mean ("correlation") discrepancy between a student and its teacher.

DKD's and GDKD's papers plot, for every true class `c`, how far the student's average output over
the samples of class `c` is from the teacher's: `M[c] = mean_{n: y_n = c} f(z_n)` and
`diff = |M_s - M_t|`, a `(C, C)` matrix whose row is the true class and column the output class.
DKD averages the raw logits (`f = identity`), GDKD the probabilities `softmax(z / T)` at T = 1.
Despite the figures' name this is not a correlation; `logit_correlation_discrepancy` is a true
Pearson variant (not from either paper).
"""

from __future__ import annotations

import warnings

import numpy as np
from keras import ops

from keras_gdkd.analysis import logits as L
from keras_gdkd.losses import partition as P

MODES = ("logits", "probs")
STYLES = ("dkd", "gdkd")


def class_mean_matrix(
    logits,
    labels,
    num_classes: int,
    *,
    mode: str = "logits",
    temperature: float = 1.0,
    batch_size: int = L.DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """Per-class mean output, `M[c] = mean_{n: y_n = c} f(z_n)`.

    `f` is the identity for `mode="logits"` (mdistiller's correlation notebook) and
    `softmax(z / T)` for `mode="probs"` (GDKD's `corr.py`). Probabilities do not change when a
    constant is added to a row of logits; raw logits do, so logits mode compares the models'
    logit offsets too.

    Args:
        logits: shape `(N, C)`.
        labels: integer class indices `(N,)` in `[0, num_classes)`.
        num_classes: `C`.
        mode: `"logits"` or `"probs"`.
        temperature: `T` for `mode="probs"`, finite and > 0.
        batch_size: rows per chunk.

    Returns:
        float64 array `(C, C)`. A class with no sample has a NaN row (and a warning).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}.")
    z = L.as_logits(logits, "logits", num_classes)
    y = L.as_labels(labels, len(z), num_classes)
    if y is None:
        raise ValueError("class_mean_matrix needs labels; got None.")
    temperature = P.validate_temperature(temperature)
    L.check_batch_size(batch_size)
    if mode == "probs":
        kernel = lambda z_c: {"q": ops.softmax(z_c / temperature, axis=-1)}  # noqa: E731
        z = L.map_chunks(kernel, [z], batch_size)["q"]
    sums = np.zeros((num_classes, num_classes), dtype="float64")
    np.add.at(sums, y, z.astype("float64"))
    counts = np.bincount(y, minlength=num_classes)
    _warn_empty(counts, stacklevel=3)
    with np.errstate(invalid="ignore"):
        return sums / counts[:, None]


def _warn_empty(counts: np.ndarray, stacklevel: int) -> None:
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        warnings.warn(
            f"{empty.size} of {len(counts)} classes have no sample (e.g. class "
            f"{empty[:5].tolist()}); their class-mean rows are NaN.",
            stacklevel=stacklevel,
        )


def class_mean_discrepancy(
    student_logits,
    teacher_logits,
    labels,
    num_classes: int,
    *,
    mode: str = "logits",
    temperature: float = 1.0,
    batch_size: int = L.DEFAULT_BATCH_SIZE,
) -> dict:
    """`diff = |M_s - M_t|` of the class means, and its summary.

    Args:
        student_logits: shape `(N, C)`.
        teacher_logits: shape `(N, C)`.
        labels: integer class indices `(N,)`.
        num_classes: `C`.
        mode: `"logits"` (DKD's figure) or `"probs"` (GDKD's figure, at `temperature=1`).
        temperature: `T` for `mode="probs"`.
        batch_size: rows per chunk.

    Returns:
        `{"mode", "temperature", "diff", "max", "mean", "offdiag_max", "offdiag_mean",
        "empty_classes"}`: `diff` is a float64 array `(C, C)` (NaN rows for empty classes);
        `max` and `mean` include the diagonal, as the authors print them, and `offdiag_*` leave
        it out; all four skip the NaN rows (NaN if every class is empty). `empty_classes`
        lists the classes without a sample.
    """
    s, t, y = L.as_pair(student_logits, teacher_logits, labels)
    if y is None:
        raise ValueError("class_mean_discrepancy needs labels; got None.")
    kwargs = {"mode": mode, "temperature": temperature, "batch_size": batch_size}
    with warnings.catch_warnings():
        # One warning about empty classes, from here, rather than one per model.
        warnings.simplefilter("ignore")
        m_t = class_mean_matrix(t, y, num_classes, **kwargs)
        m_s = class_mean_matrix(s, y, num_classes, **kwargs)
    _warn_empty(np.bincount(y, minlength=num_classes), stacklevel=3)
    diff = np.abs(m_s - m_t)
    present = ~np.isnan(diff).any(axis=1)
    off = ~np.eye(num_classes, dtype=bool) & present[:, None]
    return {
        "mode": mode,
        "temperature": float(temperature),
        "diff": diff,
        "max": _reduce(np.max, diff[present]),
        "mean": _reduce(np.mean, diff[present]),
        "offdiag_max": _reduce(np.max, diff[off]),
        "offdiag_mean": _reduce(np.mean, diff[off]),
        "empty_classes": np.flatnonzero(~present).tolist(),
    }


def _reduce(fn, values: np.ndarray) -> float:
    return float(fn(values)) if values.size else float("nan")


def heatmap_values(
    diff, style: str = "dkd", max_diff: float = 3.0, scale: float = 4.0
) -> np.ndarray:
    """The colour values the authors plot for a class-mean difference, in `[0, 1]`.

    - `style="dkd"` (mdistiller): `clip(diff / max_diff, 0, 1)`, one `max_diff` shared by all
      students, so colours compare across panels.
    - `style="gdkd"` (GDKD's `corr.py`): `clip(diff / max(diff) * scale, 0, 1)`, each panel by
      its own maximum (diagonal included), so colours do not compare across panels.

    Either way the diagonal is set to 0 afterwards. NaN rows (empty classes) stay NaN.

    Args:
        diff: a `(C, C)` array with entries >= 0.
        style: `"dkd"` or `"gdkd"`.
        max_diff: the `dkd` divisor, finite and > 0.
        scale: the `gdkd` multiplier, finite and > 0.

    Returns:
        float64 array `(C, C)`.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}; got {style!r}.")
    d = np.array(diff, dtype="float64")
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"diff must be a square (C, C) array; got shape {d.shape}.")
    for name, value in (("max_diff", max_diff), ("scale", scale)):
        _check_positive(name, value)
    if style == "dkd":
        d = d / max_diff
    else:
        peak = np.nanmax(d) if np.isfinite(d).any() else np.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            d = d / peak * scale if peak > 0 else np.where(np.isnan(d), np.nan, 0.0)
    d = np.clip(d, 0.0, 1.0)
    np.fill_diagonal(d, 0.0)
    return d


def _check_positive(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}.")
    return value


def logit_correlation_discrepancy(student_logits, teacher_logits) -> np.ndarray:
    """`|corr(S) - corr(T)|`: Pearson correlations between classes across samples (new).

    `corr(Z)[i, j]` is the Pearson correlation of columns `i` and `j` of the logits over all
    samples, so the result says whether the student's logits of two classes rise and fall
    together as the teacher's do. This is an addition, not what the papers plot (see
    `class_mean_discrepancy`). A class whose logit is constant over the samples has NaN rows
    and columns.

    Args:
        student_logits: shape `(N, C)` with `N >= 2`.
        teacher_logits: shape `(N, C)`.

    Returns:
        float64 array `(C, C)`.
    """
    s, t, _ = L.as_pair(student_logits, teacher_logits)
    if len(t) < 2:
        raise ValueError(f"A correlation needs at least 2 samples; got {len(t)}.")
    with np.errstate(invalid="ignore", divide="ignore"):
        corr_s = np.corrcoef(s.astype("float64"), rowvar=False)
        corr_t = np.corrcoef(t.astype("float64"), rowvar=False)
    return np.abs(corr_s - corr_t)
