"""The one mechanism behind every decoupled loss: KL divergences over a partition of the classes.

A partition splits the C classes of each sample into disjoint sets U_1..U_m, given as boolean
masks of shape (..., C). For logits z (already divided by T) this module computes, in log space,

- the log-mass of each set, `log b[j] = logsumexp(z over U_j) - logsumexp(z)`;
- the within-set log-probabilities, `log p^(j)_i = z_i - logsumexp(z over U_j)` for i in U_j;

and from teacher/student pairs of those the top-level KL and one within-set KL per set, each per
sample. Everything stays finite for arbitrarily large logit gaps: each set is shifted by its own
maximum before `exp` (so its sum is >= 1 and never underflows), and no `0 * inf` is formed.
"""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops

# The checks live in validation.py; re-exported because callers know them from here.
from keras_gdkd.losses.validation import (  # noqa: F401
    check_labels,
    concrete_values,
    validate_k,
    validate_logits,
    validate_temperature,
    validate_weight,
)

# Finite stand-in for -inf when masking: exp() of it is exactly 0, and it never meets another
# infinity, so neither values nor gradients can become NaN.
_NEG = -1e30


def standardize(logits, eps: float = 1e-7):
    """Logit standardization (Sun et al. 2024): z-score each row over the classes.

    Args:
        logits: shape `(..., C)` with `C >= 2`.
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
        teacher_logits: shape `(..., C)`; no gradient flows through the ranking.
        ks: increasing rank bounds, e.g. `(5,)` for `[top-5, rest]` or `(1, 4)` for
            `[top-1, top-2..4, rest]`.
        strategy: `"best"` ranks from the largest logit, `"worst"` from the smallest.

    Returns:
        A list of `len(ks) + 1` boolean masks of the logits' shape that partition the classes.
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
    """The 1-based rank of each of the k largest entries along the last axis, 0 elsewhere.

    One scatter of `top_k`'s indices, and every mask a comparison with it: XLA on CPU turns
    top_k into a full sort of each row when its result has several consumers (one one-hot per
    rank was ~30x slower than this at 1000 classes), and the memory stays O(positions * C).
    """
    if len(z.shape) != 2:  # dense or sequence logits: rank the rows of a (positions, C) view
        ranks = _top_ranks(ops.reshape(z, (-1, z.shape[-1])), k)
        return ops.reshape(ranks, ops.shape(z))
    _, order = ops.top_k(z, k, sorted=True)
    order = ops.cast(order, "int32")
    zeros = ops.zeros_like(order)
    # Row indices without reading the batch size, which is symbolic in a TF graph.
    rows = zeros + (ops.cumsum(ops.ones_like(order[:, :1]), axis=0) - 1)
    indices = ops.stack([ops.reshape(rows, (-1,)), ops.reshape(order, (-1,))], axis=1)
    # The narrowest integer that holds k: at vocabulary scale this (N, C) array is one of the
    # loss's largest, and int8 is a quarter of float32.
    dtype = "int8" if k < 2**7 else "int16" if k < 2**15 else "int32"
    ranks = ops.cast(zeros + ops.arange(1, k + 1, dtype="int32")[None, :], dtype)
    return ops.scatter_update(ops.zeros(ops.shape(z), dtype), indices, ops.reshape(ranks, (-1,)))


def label_masks(labels, num_classes: int) -> list:
    """The DKD partition `[{label}, rest]` as two boolean masks of shape `labels.shape + (C,)`.

    Built by comparison rather than `one_hot`, so a label outside `[0, C)` gives an empty
    `{label}` set on every backend (`one_hot` zero-fills on TensorFlow and JAX but raises on
    PyTorch).

    Args:
        labels: integer class indices, shape `(batch,)` (or any leading shape).
        num_classes: the number of classes `C`.

    Returns:
        `[ground_truth_mask, rest_mask]`.
    """
    labels = ops.expand_dims(ops.cast(labels, "int32"), -1)
    gt = labels == ops.arange(num_classes, dtype="int32")
    return [gt, ops.logical_not(gt)]


def log_partition(z, masks: Sequence) -> tuple:
    """Log-masses and within-set log-probabilities of `softmax(z)` over a partition.

    Args:
        z: logits already divided by the temperature, shape `(..., C)`.
        masks: `m` boolean masks of the same shape that partition the classes.

    Returns:
        `(log_mass, log_within)`: `log_mass[..., j] = log b[j]`, shape `(..., m)`, and
        `log_within[..., i] = log p^(j)_i` for the set `j` that holds class `i`, shape `(..., C)`.
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
    """Broadcast a per-set column (..., 1) onto the classes of that set.

    The masks cover every class, so the last set needs no mask of its own.
    """
    out = per_set[-1]
    for m, v in zip(masks[:-1], per_set[:-1]):
        out = ops.where(m, v, out)
    return out


def kl_terms(student_z, teacher_z, masks: Sequence) -> tuple:
    """Per-sample KL(teacher || student) over a partition: top level and one per set.

    Args:
        student_z: student logits divided by the temperature, shape `(..., C)`.
        teacher_z: teacher logits divided by the temperature (no gradient flows into them).
        masks: `m` boolean masks of the same shape that partition the classes.

    Returns:
        `(high, [low_1, ..., low_m], teacher_mass)`: `high` is `KL(b_t || b_s)` and `low_j` is
        `KL(q^(j) || p^(j))`, each of shape `(...)` (the leading axes) without the `T**2` factor
        (a single-class set gives exactly 0); `teacher_mass` of shape `(..., m)` holds `b_t`.
    """
    student_z, teacher_z = ops.convert_to_tensor(student_z), ops.convert_to_tensor(teacher_z)
    log_bs, log_ws = log_partition(student_z, masks)
    log_bt, log_wt = log_partition(ops.stop_gradient(teacher_z), masks)
    high = ops.sum(ops.exp(log_bt) * (log_bt - log_bs), axis=-1)
    pointwise = ops.exp(log_wt) * (log_wt - log_ws)
    lows = [ops.sum(ops.where(m, pointwise, 0.0), axis=-1) for m in masks]
    return high, lows, ops.exp(log_bt)
