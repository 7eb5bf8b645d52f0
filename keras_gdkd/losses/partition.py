"""The one mechanism behind every decoupled loss: KL divergences over a partition of the classes.

A partition splits the C classes of each sample into disjoint sets U_1..U_m, given as boolean
masks of shape (batch, C). For logits z (already divided by T) this module computes, in log space,

- the log-mass of each set, ``log b[j] = logsumexp(z over U_j) - logsumexp(z)``;
- the within-set log-probabilities, ``log p^(j)_i = z_i - logsumexp(z over U_j)`` for i in U_j;

and from teacher/student pairs of those the top-level KL and one within-set KL per set, each per
sample. Everything stays finite for arbitrarily large logit gaps: each set is shifted by its own
maximum before ``exp`` (so its sum is >= 1 and never underflows), and no ``0 * inf`` is formed.
"""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops

# Finite stand-in for -inf when masking: exp() of it is exactly 0, and it never meets another
# infinity, so neither values nor gradients can become NaN.
_NEG = -1e30


def validate_logits(student_logits, teacher_logits) -> tuple:
    """Return both logit tensors as float32 after checking that their shapes agree."""
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
    # float32 even under a mixed_float16/bfloat16 policy: the masses of small sets underflow
    # in half precision.
    return ops.cast(student_logits, "float32"), ops.cast(teacher_logits, "float32")


def validate_temperature(temperature: float) -> float:
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number; got {temperature!r}.")
    return float(temperature)


def validate_k(k: int, num_classes: int | None, minimum: int = 1) -> int:
    """Check 1 <= k < C (the top set and the rest must both be non-empty)."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be an integer; got {k!r}.")
    if k < minimum or (num_classes is not None and k >= num_classes):
        upper = f"{num_classes - 1}" if num_classes is not None else "num_classes - 1"
        raise ValueError(
            f"k must satisfy {minimum} <= k < num_classes, i.e. lie in [{minimum}, {upper}]; "
            f"got k={k}."
        )
    return k


def standardize(logits, eps: float = 1e-7):
    """Logit standardization (Sun et al. 2024): z-score over classes, unbiased std."""
    num_classes = logits.shape[-1]
    mean = ops.mean(logits, axis=-1, keepdims=True)
    centered = logits - mean
    var = ops.sum(ops.square(centered), axis=-1, keepdims=True) / (num_classes - 1)
    return centered / (ops.sqrt(var) + eps)


def topk_masks(teacher_logits, ks: Sequence[int], strategy: str = "best") -> list:
    """Nested rank masks from the teacher: set j holds ranks ks[j-1]..ks[j]-1, the last the rest.

    ``ks=(5,)`` gives [top-5, rest]; ``ks=(1, 4)`` gives [top-1, top-2..4, rest]. With
    ``strategy="worst"`` ranks count from the smallest logit instead. Exactly k classes are
    chosen even when logits tie; which tied class enters is the backend's ``top_k`` choice, as
    with ``torch.topk`` in the authors' code.
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

    One scatter of ``top_k``'s indices, and every mask a comparison with it: XLA on CPU turns
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
    """[ground-truth class, the rest]: the DKD partition."""
    gt = ops.one_hot(ops.reshape(ops.cast(labels, "int32"), (-1,)), num_classes) > 0
    return [gt, ops.logical_not(gt)]


def log_partition(z, masks: Sequence) -> tuple:
    """Return (log-mass per set (batch, m), within-set log-probabilities (batch, C)).

    Each class's within-set log-probability is relative to the set that holds it.
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
    """Per-sample KL(teacher || student): the top-level term and one within-set term per set.

    Returns ``(high, [low_1, ..., low_m], teacher_mass)``: the KLs have shape (batch,) and carry
    no T**2 factor; a single-class set gives exactly 0. ``teacher_mass`` (batch, m) holds b_t.
    """
    student_z, teacher_z = ops.convert_to_tensor(student_z), ops.convert_to_tensor(teacher_z)
    log_bs, log_ws = log_partition(student_z, masks)
    log_bt, log_wt = log_partition(ops.stop_gradient(teacher_z), masks)
    high = ops.sum(ops.exp(log_bt) * (log_bt - log_bs), axis=-1)
    pointwise = ops.exp(log_wt) * (log_wt - log_ws)
    lows = [ops.sum(ops.where(m, pointwise, 0.0), axis=-1) for m in masks]
    return high, lows, ops.exp(log_bt)
