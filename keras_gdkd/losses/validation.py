"""Every check of the losses' inputs and hyper-parameters, in one place.

The functions, the loss objects, the presets and the command line all validate through
`check_hyperparameters`, so a bad value gives the same `ValueError` wherever it is set.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

# Keras is imported inside the tensor checks only: the presets validate their hyper-parameters
# here, and `keras-gdkd --help` must answer before Keras starts.

# Each loss's hyper-parameters, in signature order (after the logits and labels).
HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "kd": ("temperature", "standardize"),
    "dkd": ("alpha", "beta", "temperature", "standardize"),
    "gdkd": ("k", "w0", "w1", "w2", "temperature", "strategy", "standardize"),
    "gdkd3": ("k", "w0", "w1", "w2", "temperature", "standardize"),
    "gdkd_v1": ("k", "m1", "m2", "w0", "temperature", "standardize"),
    "gdkd_v2": ("k", "w1", "m2", "w0", "temperature", "standardize"),
    "gdkd_v3": ("k", "m1", "w2", "w0", "temperature", "standardize"),
    "dist": ("beta", "gamma", "temperature"),
}
WEIGHTS = ("w0", "w1", "w2", "alpha", "beta", "gamma", "m1", "m2")
STRATEGIES = ("best", "worst")


def _is_real(value) -> bool:
    # NumPy scalars register as numbers.Real / numbers.Integral; bool is an Integral but a
    # True/False weight is almost always a mistake.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def validate_temperature(temperature: float) -> float:
    """Return `temperature` as a Python float after checking that it is finite and > 0.

    Raises:
        ValueError: if it is not a real number, not finite, or not positive.
    """
    if not _is_real(temperature) or not math.isfinite(temperature) or not temperature > 0:
        raise ValueError(f"temperature must be a finite positive number; got {temperature!r}.")
    return float(temperature)


def validate_weight(name: str, value: float) -> float:
    """Return a loss weight as a Python float after checking that it is finite and >= 0.

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


def k_minimum(loss_name: str) -> int:
    """The smallest valid `k` of a loss: 2 for GDKD3 (its middle set is top-2..k), else 1."""
    return 2 if loss_name == "gdkd3" else 1


def check_hyperparameters(loss_name: str, hyperparameters: dict, num_classes: int | None = None):
    """Validate and normalize the hyper-parameters of loss `loss_name`.

    Args:
        loss_name: a key of `HYPERPARAMETERS` (`"gdkd"`, `"dkd"`, ...).
        hyperparameters: name -> value; every name must belong to the loss, missing ones are
            left out of the result.
        num_classes: when known, `k` is also checked against it.

    Returns:
        A new dict with Python floats, ints, bools and strings.

    Raises:
        ValueError: for an unknown loss or parameter name, or an invalid value.
    """
    if loss_name not in HYPERPARAMETERS:
        raise ValueError(
            f"Unknown distillation loss {loss_name!r}; expected one of {sorted(HYPERPARAMETERS)}."
        )
    allowed = HYPERPARAMETERS[loss_name]
    unknown = sorted(set(hyperparameters) - set(allowed))
    if unknown:
        raise ValueError(
            f"{loss_name} has no hyper-parameter {', '.join(unknown)}; its hyper-parameters are "
            f"{', '.join(allowed)}."
        )
    out = {}
    for name in allowed:
        if name not in hyperparameters:
            continue
        value = hyperparameters[name]
        if name == "temperature":
            value = validate_temperature(value)
        elif name == "k":
            value = validate_k(value, num_classes, k_minimum(loss_name))
        elif name == "strategy":
            if value not in STRATEGIES:
                raise ValueError(f"strategy must be 'best' or 'worst'; got {value!r}.")
        elif name == "standardize":
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"standardize must be True or False; got {value!r}.")
            value = bool(value)
        else:
            value = validate_weight(name, value)
        out[name] = value
    return out


def validate_logits(student_logits, teacher_logits) -> tuple:
    """Check that the two logit tensors have matching shapes `(..., C)`; return them as float32.

    Args:
        student_logits: student logits, shape `(..., num_classes)` with at least one leading
            axis (`(batch, num_classes)` for classifiers).
        teacher_logits: teacher logits, the same shape.

    Returns:
        `(student_logits, teacher_logits)` as float32 tensors, also under a mixed-precision
        policy: the masses of small sets underflow in half precision.

    Raises:
        ValueError: if either has fewer than 2 axes, or the shapes differ.
    """
    from keras import ops

    s_shape, t_shape = tuple(student_logits.shape), tuple(teacher_logits.shape)
    if len(s_shape) < 2 or len(t_shape) < 2:
        raise ValueError(
            "Expected student and teacher logits of shape (batch, num_classes) (or "
            f"(batch, ..., num_classes)); got student {s_shape} and teacher {t_shape}."
        )
    if s_shape[-1] != t_shape[-1]:
        raise ValueError(
            f"Student and teacher must have the same number of classes; got student {s_shape[-1]} "
            f"and teacher {t_shape[-1]}."
        )
    if len(s_shape) != len(t_shape) or any(
        None not in (a, b) and a != b for a, b in zip(s_shape[:-1], t_shape[:-1])
    ):
        raise ValueError(
            f"Student and teacher batch sizes differ: {s_shape[0]} vs {t_shape[0]}."
            if len(s_shape) == len(t_shape) == 2
            else f"Student and teacher logits have different shapes: {s_shape} vs {t_shape}."
        )
    return ops.cast(student_logits, "float32"), ops.cast(teacher_logits, "float32")


def check_mask(mask, leading_shape: tuple):
    """A padding mask as a bool tensor of the logits' leading shape (`None` stays `None`).

    Raises:
        ValueError: if its shape is not `leading_shape` (with `None` matching any size).
    """
    from keras import ops

    if mask is None:
        return None
    if not hasattr(mask, "shape"):
        mask = np.asarray(mask)
    shape = tuple(mask.shape)
    if len(shape) == len(leading_shape) + 1 and shape[-1] == 1:
        mask = ops.squeeze(mask, axis=-1)
        shape = shape[:-1]
    if len(shape) != len(leading_shape) or any(
        None not in (a, b) and a != b for a, b in zip(shape, leading_shape)
    ):
        raise ValueError(
            f"mask must have the logits' shape without the class axis, {leading_shape}; "
            f"got {shape}."
        )
    return ops.cast(mask, "bool")


def check_labels(
    labels,
    leading_shape: tuple,
    num_classes: int,
    check_values: bool = True,
    ignore_index: int | None = None,
):
    """Check integer class labels against logits of shape `leading_shape + (C,)`.

    The dtype and shape are checked always (they are known while tracing). The values are
    checked only when they exist in Python, i.e. for NumPy data and eager tensors; inside a
    compiled function they do not.

    Args:
        labels: class indices of shape `leading_shape` (or with a trailing axis of 1).
        leading_shape: the logits' shape without the class axis, e.g. `(batch,)` or
            `(batch, height, width)`; `None` entries match any size.
        num_classes: the number of classes `C`; valid labels lie in `[0, C)`.
        check_values: whether to read concrete values to check their range. Callers that
            already guarantee the range (the Distiller) pass `False`, so that no value is
            copied from the device on every step.
        ignore_index: a label value that marks positions to skip; exempt from the range check.

    Returns:
        The labels as an int32 tensor of shape `leading_shape`.

    Raises:
        ValueError: for float or complex labels, one-hot labels, a wrong shape, or (when the
            values are concrete) a label outside `[0, num_classes)`.
    """
    import keras
    from keras import ops

    if not hasattr(labels, "dtype"):  # Python lists
        labels = np.asarray(labels)
    dtype = keras.backend.standardize_dtype(labels.dtype)
    shape = tuple(labels.shape)
    rank = len(leading_shape)
    one_hot = len(shape) == rank + 1 and shape[-1] not in (1, None)
    expected = "(batch,)" if rank == 1 else str(tuple(leading_shape))
    if "float" in dtype or "complex" in dtype or "bool" in dtype or one_hot:
        raise ValueError(
            f"labels must be integer class indices of shape {expected}; got dtype "
            f"{dtype} and shape {shape}. Convert one-hot labels with argmax(labels, axis=-1)."
        )
    squeezed = shape[:-1] if len(shape) == rank + 1 else shape
    if len(squeezed) != rank or any(
        None not in (a, b) and a != b for a, b in zip(squeezed, leading_shape)
    ):
        if rank == 1:
            expected = f"(batch,) = ({leading_shape[0]},)"
        raise ValueError(f"labels must have shape {expected}; got {shape}.")
    if check_values:
        values = concrete_values(labels)
        if values is not None:
            values = values.reshape(-1)
            bad_mask = (values < 0) | (values >= num_classes)
            if ignore_index is not None:
                bad_mask &= values != ignore_index
            bad = np.flatnonzero(bad_mask)
            if bad.size:
                raise ValueError(
                    f"labels must lie in [0, {num_classes}) (integer class indices for "
                    f"{num_classes} classes); got {values[bad[:5]].tolist()} at "
                    f"positions {bad[:5].tolist()}{' ...' if bad.size > 5 else ''}."
                )
    labels = ops.cast(labels, "int32")
    if len(shape) == rank + 1:
        labels = ops.squeeze(labels, axis=-1)
    return labels


def concrete_values(x) -> np.ndarray | None:
    """The values of `x` as a NumPy array if they exist now, `None` while tracing.

    NumPy data and eager tensors have values; the symbolic tensors of a `tf.function`, JAX
    tracers and Keras symbolic tensors do not, and converting them raises (NotImplementedError,
    TypeError and ValueError respectively) - which is how a trace is told apart from eager
    execution without asking the backend.
    """
    from keras import ops

    if isinstance(x, (np.ndarray, np.generic, numbers.Number, list, tuple)):
        return np.asarray(x)
    try:
        return np.asarray(ops.convert_to_numpy(x))
    except (NotImplementedError, TypeError, ValueError):
        return None
