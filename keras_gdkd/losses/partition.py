"""The one mechanism behind every decoupled loss: KL divergences over a partition of the classes.

A partition splits the C classes of each sample into disjoint sets U_1..U_m, given as boolean
masks of shape (batch, C). For logits z (already divided by T) this module computes, in log space,

- the log-mass of each set, `log b[j] = logsumexp(z over U_j) - logsumexp(z)`;
- the within-set log-probabilities, `log p^(j)_i = z_i - logsumexp(z over U_j)` for i in U_j;

and from teacher/student pairs of those the top-level KL and one within-set KL per set, each per
sample. Everything stays finite for arbitrarily large logit gaps: each set is shifted by its own
maximum before `exp` (so its sum is >= 1 and never underflows), and no `0 * inf` is formed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

# Finite stand-in for -inf when masking: exp() of it is exactly 0, and it never meets another
# infinity, so neither values nor gradients can become NaN.
_NEG = -1e30


def validate_logits(student_logits, teacher_logits) -> tuple:
    """Check that the two logit tensors have matching shapes and return them as float32.

    Args:
        student_logits: student logits, shape `(batch, num_classes)`.
        teacher_logits: teacher logits, same shape.

    Returns:
        `(student_logits, teacher_logits)` as float32 tensors, also under a mixed-precision
        policy: the masses of small sets underflow in half precision.

    Raises:
        ValueError: if either is not 2-D, or the class counts or batch sizes differ.
    """
    s_shape, t_shape = tuple(student_logits.shape), tuple(teacher_logits.shape)
    if len(s_shape) != 2 or len(t_shape) != 2:
        raise ValueError(
            "Expected student and teacher logits of shape (batch, num_classes); "
            f"got student {s_shape} and teacher {t_shape}."
        )
    if s_shape[-1] != t_shape[-1]:
        raise ValueError(
            f"Student and teacher must have the same number of classes; got student {s_shape[-1]} "
            f"and teacher {t_shape[-1]}."
        )
    if None not in (s_shape[0], t_shape[0]) and s_shape[0] != t_shape[0]:
        raise ValueError(f"Student and teacher batch sizes differ: {s_shape[0]} vs {t_shape[0]}.")
    return ops.cast(student_logits, "float32"), ops.cast(teacher_logits, "float32")


def _is_real(value) -> bool:
    # NumPy scalars register as numbers.Real / numbers.Integral; bool is an Integral but a
    # True/False weight is almost always a mistake.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def validate_temperature(temperature: float) -> float:
    """Return `temperature` as a Python float after checking that it is finite and > 0.

    Args:
        temperature: a real number (Python or NumPy scalar).

    Returns:
        The temperature as a float.

    Raises:
        ValueError: if it is not a real number, not finite, or not positive.
    """
    if not _is_real(temperature) or not math.isfinite(temperature) or not temperature > 0:
        raise ValueError(f"temperature must be a finite positive number; got {temperature!r}.")
    return float(temperature)


def validate_weight(name: str, value: float) -> float:
    """Return a loss weight as a Python float after checking that it is finite and >= 0.

    Args:
        name: the argument's name, for the error message.
        value: a real number (Python or NumPy scalar).

    Returns:
        The weight as a float.

    Raises:
        ValueError: if it is not a real number, not finite, or negative.
    """
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
    return float(value)


def validate_k(k: int, num_classes: int | None, minimum: int = 1) -> int:
    """Return `k` as a Python int after checking `minimum <= k < num_classes`.

    Both the teacher's top set and the rest must be non-empty.

    Args:
        k: an integer (Python or NumPy).
        num_classes: the number of classes, or `None` when not known yet.
        minimum: the smallest valid `k` (2 for GDKD3, whose top-2..k set must not be empty).

    Returns:
        `k` as an int.

    Raises:
        ValueError: if `k` is not an integer or out of range.
    """
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k must be an integer; got {k!r}.")
    k = int(k)
    if k < minimum or (num_classes is not None and k >= num_classes):
        upper = f"{num_classes - 1}" if num_classes is not None else "num_classes - 1"
        raise ValueError(
            f"k must satisfy {minimum} <= k < num_classes, i.e. lie in [{minimum}, {upper}]; "
            f"got k={k}."
        )
    return k


def check_labels(labels, batch_size: int | None, num_classes: int, check_values: bool = True):
    """Check integer class labels and return them as an int32 tensor of shape `(batch,)`.

    The dtype and shape are checked always (they are known while tracing). The values are
    checked only when they exist in Python, i.e. for NumPy data and eager tensors; inside a
    compiled function they do not, and `label_masks` gives an out-of-range label an empty
    set instead.

    Args:
        labels: class indices, shape `(batch,)` or `(batch, 1)`.
        batch_size: the logits' batch size, or `None` when unknown.
        num_classes: the number of classes `C`; valid labels lie in `[0, C)`.
        check_values: whether to read concrete values to check their range. Callers that
            already guarantee the range (the Distiller) pass `False`, so that no value is
            copied from the device on every step.

    Returns:
        The labels as an int32 tensor of shape `(batch,)`.

    Raises:
        ValueError: for float or complex labels, one-hot labels, a wrong shape, or (when the
            values are concrete) a label outside `[0, num_classes)`.
    """
    if not hasattr(labels, "dtype"):  # Python lists
        labels = np.asarray(labels)
    dtype = keras.backend.standardize_dtype(labels.dtype)
    shape = tuple(labels.shape)
    one_hot = len(shape) == 2 and shape[-1] not in (1, None)
    if "float" in dtype or "complex" in dtype or "bool" in dtype or one_hot:
        raise ValueError(
            "labels must be integer class indices of shape (batch,); got dtype "
            f"{dtype} and shape {shape}. Convert one-hot labels with argmax(labels, axis=-1)."
        )
    squeezed = shape[:-1] if len(shape) == 2 else shape
    if len(squeezed) != 1 or None not in (squeezed[0], batch_size) and squeezed[0] != batch_size:
        raise ValueError(f"labels must have shape (batch,) = ({batch_size},); got {shape}.")
    if check_values:
        values = concrete_values(labels)
        if values is not None:
            bad = np.flatnonzero((values < 0) | (values >= num_classes))
            if bad.size:
                raise ValueError(
                    f"labels must lie in [0, {num_classes}) (integer class indices for "
                    f"{num_classes} classes); got {values.reshape(-1)[bad[:5]].tolist()} at "
                    f"positions {bad[:5].tolist()}{' ...' if bad.size > 5 else ''}."
                )
    return ops.reshape(ops.cast(labels, "int32"), (-1,))


def concrete_values(x) -> np.ndarray | None:
    """The values of `x` as a NumPy array if they exist now, `None` while tracing.

    NumPy data and eager tensors have values; the symbolic tensors of a `tf.function`, JAX
    tracers and Keras symbolic tensors do not, and converting them raises (NotImplementedError,
    TypeError and ValueError respectively) - which is how a trace is told apart from eager
    execution without asking the backend.
    """
    if isinstance(x, (np.ndarray, np.generic, numbers.Number, list, tuple)):
        return np.asarray(x)
    try:
        return np.asarray(ops.convert_to_numpy(x))
    except (NotImplementedError, TypeError, ValueError):
        return None


def standardize(logits, eps: float = 1e-7):
    """Logit standardization (Sun et al. 2024): z-score each row over the classes.

    Args:
        logits: shape `(batch, C)` with `C >= 2`.
        eps: added to the (unbiased) standard deviation, so a constant row stays finite.

    Returns:
        `(logits - mean) / (std + eps)`, row-wise.
    """
    num_classes = logits.shape[-1]
    mean = ops.mean(logits, axis=-1, keepdims=True)
    centered = logits - mean
    var = ops.sum(ops.square(centered), axis=-1, keepdims=True) / (num_classes - 1)
    return centered / (ops.sqrt(var) + eps)


def topk_masks(teacher_logits, ks: Sequence[int], strategy: str = "best") -> list:
    """Nested partition masks by the rank of the teacher's logits.

    Set `j` holds the classes of rank `ks[j-1] + 1 .. ks[j]` (1-based, `ks[-1] = 0`), and a
    last set holds the rest. Exactly `ks[-1]` classes are chosen even when logits tie; which
    tied class enters is the backend's `top_k` choice, as with `torch.topk` in the authors'
    code.

    Args:
        teacher_logits: shape `(batch, C)`; no gradient flows through the ranking.
        ks: increasing rank bounds, e.g. `(5,)` for `[top-5, rest]` or `(1, 4)` for
            `[top-1, top-2..4, rest]`.
        strategy: `"best"` ranks from the largest logit, `"worst"` from the smallest.

    Returns:
        A list of `len(ks) + 1` boolean masks of shape `(batch, C)` that partition the classes.
    """
    if strategy not in ("best", "worst"):
        raise ValueError(f"strategy must be 'best' or 'worst'; got {strategy!r}.")
    teacher_logits = ops.convert_to_tensor(teacher_logits)
    ranked = ops.stop_gradient(teacher_logits if strategy == "best" else -teacher_logits)
    rank = _top_ranks(ranked, ks[-1])
    masks, low = [], 0
    for high in ks:
        masks.append(ops.logical_and(rank > low, rank <= high))
        low = high
    masks.append(rank == 0)
    return masks


def _top_ranks(z, k: int):
    """(batch, C): the 1-based rank of each of the k largest entries of a row, 0 elsewhere.

    One scatter of `top_k`'s indices, and every mask a comparison with it: XLA on CPU turns
    top_k into a full sort of each row when its result has several consumers (one one-hot per
    rank was ~30x slower than this at 1000 classes), and the memory stays O(batch * C).
    """
    _, order = ops.top_k(z, k, sorted=True)
    order = ops.cast(order, "int32")
    zeros = ops.zeros_like(order)
    # Row indices without reading the batch size, which is symbolic in a TF graph.
    rows = zeros + (ops.cumsum(ops.ones_like(order[:, :1]), axis=0) - 1)
    indices = ops.stack([ops.reshape(rows, (-1,)), ops.reshape(order, (-1,))], axis=1)
    ranks = ops.cast(zeros + ops.arange(1, k + 1, dtype="int32")[None, :], z.dtype)
    return ops.scatter_update(ops.zeros_like(z), indices, ops.reshape(ranks, (-1,)))


def label_masks(labels, num_classes: int) -> list:
    """The DKD partition `[{label}, rest]` as two boolean masks of shape `(batch, C)`.

    Built by comparison rather than `one_hot`, so a label outside `[0, C)` gives an empty
    `{label}` set on every backend (`one_hot` zero-fills on TensorFlow and JAX but raises on
    PyTorch).

    Args:
        labels: integer class indices, shape `(batch,)`.
        num_classes: the number of classes `C`.

    Returns:
        `[ground_truth_mask, rest_mask]`.
    """
    labels = ops.reshape(ops.cast(labels, "int32"), (-1, 1))
    gt = labels == ops.arange(num_classes, dtype="int32")[None, :]
    return [gt, ops.logical_not(gt)]


def log_partition(z, masks: Sequence) -> tuple:
    """Log-masses and within-set log-probabilities of `softmax(z)` over a partition.

    Args:
        z: logits already divided by the temperature, shape `(batch, C)`.
        masks: `m` boolean masks of shape `(batch, C)` that partition the classes.

    Returns:
        `(log_mass, log_within)`: `log_mass[:, j] = log b[j]`, shape `(batch, m)`, and
        `log_within[:, i] = log p^(j)_i` for the set `j` that holds class `i`, shape `(batch, C)`.
    """
    set_max = [
        ops.stop_gradient(ops.max(ops.where(m, z, _NEG), axis=-1, keepdims=True)) for m in masks
    ]
    # Every class is shifted by the maximum of its own set: exp never overflows, and each set's
    # sum is >= 1 so its log never meets log(0). The shift cancels exactly, hence stop_gradient.
    shift = z - _gather_by_set(masks, set_max)
    e = ops.exp(shift)
    log_sums = [ops.log(ops.sum(ops.where(m, e, 0.0), axis=-1, keepdims=True)) for m in masks]
    log_within = shift - _gather_by_set(masks, log_sums)
    set_lse = ops.concatenate([mx + ls for mx, ls in zip(set_max, log_sums)], axis=-1)
    log_mass = set_lse - ops.logsumexp(set_lse, axis=-1, keepdims=True)
    return log_mass, log_within


def _gather_by_set(masks: Sequence, per_set: Sequence):
    """Broadcast a per-set column (batch, 1) onto the classes of that set.

    The masks cover every class, so the last set needs no mask of its own.
    """
    out = per_set[-1]
    for m, v in zip(masks[:-1], per_set[:-1]):
        out = ops.where(m, v, out)
    return out


def kl_terms(student_z, teacher_z, masks: Sequence) -> tuple:
    """Per-sample KL(teacher || student) over a partition: top level and one per set.

    Args:
        student_z: student logits divided by the temperature, shape `(batch, C)`.
        teacher_z: teacher logits divided by the temperature (no gradient flows into them).
        masks: `m` boolean masks of shape `(batch, C)` that partition the classes.

    Returns:
        `(high, [low_1, ..., low_m], teacher_mass)`: `high` is `KL(b_t || b_s)` and `low_j` is
        `KL(q^(j) || p^(j))`, each of shape `(batch,)` without the `T**2` factor (a single-class
        set gives exactly 0); `teacher_mass` of shape `(batch, m)` holds `b_t`.
    """
    student_z, teacher_z = ops.convert_to_tensor(student_z), ops.convert_to_tensor(teacher_z)
    log_bs, log_ws = log_partition(student_z, masks)
    log_bt, log_wt = log_partition(ops.stop_gradient(teacher_z), masks)
    high = ops.sum(ops.exp(log_bt) * (log_bt - log_bs), axis=-1)
    pointwise = ops.exp(log_wt) * (log_wt - log_ws)
    lows = [ops.sum(ops.where(m, pointwise, 0.0), axis=-1) for m in masks]
    return high, lows, ops.exp(log_bt)
