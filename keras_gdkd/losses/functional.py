"""Logit-distillation losses as pure `keras.ops` functions, one per loss.

Conventions (as in the authors' code): student logits first; every KL is KL(teacher || student),
summed over the classes and multiplied by `T**2`. Logits have shape `(..., C)` with the classes
last: `(batch, C)` for a classifier, `(batch, H, W, C)` for segmentation, `(batch, L, C)` for a
language model. Each position is one sample.

Every function returns the batch mean by default. `reduction=None` gives the per-position values
(shape `logits.shape[:-1]`), `reduction="sum"` their sum, and `return_terms=True` returns
`(value, {term_name: value})`, the terms reduced the same way. A boolean `mask` of the leading
shape drops positions (padding): they get value 0 and exactly zero gradient, the mean runs over
the positions left, and a fully masked batch gives 0.

Every function takes `standardize=False` (except DIST): logit standardization (Sun et al. 2024)
of both models' logits before the division by `T`. Hyper-parameters are checked on every call by
`validation.check_hyperparameters`; anything invalid raises `ValueError`.
"""

from __future__ import annotations

from keras import ops

from keras_gdkd.losses import partition as P
from keras_gdkd.losses import validation as V

GDKD_TERMS = ("high_loss", "low_top_loss", "low_other_loss")
TERM_NAMES: dict[str, tuple[str, ...]] = {
    "kd": ("kd_loss",),
    "dkd": ("tckd_loss", "nckd_loss"),
    "gdkd": GDKD_TERMS,
    "gdkd3": GDKD_TERMS,
    "gdkd_v1": GDKD_TERMS,
    "gdkd_v2": GDKD_TERMS,
    "gdkd_v3": GDKD_TERMS,
    "dist": ("inter_loss", "intra_loss"),
}
_REDUCTIONS = ("mean", "sum", None)


def _prepare(name: str, student_logits, teacher_logits, mask, reduction, **hyperparameters):
    """Validated `(student, teacher, hyper-parameters, mask)`, logits as float32."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or None; got {reduction!r}.")
    hp = V.check_hyperparameters(name, hyperparameters)
    s, t = V.validate_logits(student_logits, teacher_logits)
    if "k" in hp:
        V.validate_k(hp["k"], s.shape[-1], V.k_minimum(name))
    mask = V.check_mask(mask, tuple(s.shape[:-1]))
    if mask is not None:
        # Padding positions may hold anything; zeros keep their (discarded) values finite, so
        # the zero weight they get below also gives them exactly zero gradient.
        s = ops.where(mask[..., None], s, 0.0)
        t = ops.where(mask[..., None], t, 0.0)
    return s, t, hp, mask


def _scaled(s, t, hp: dict) -> tuple:
    """`(s / T, t / T, raw teacher logits, T**2)`, standardized first when asked."""
    temperature = hp["temperature"]
    raw_t = t
    if hp.get("standardize"):
        s, t = P.standardize(s), P.standardize(t)
    return s / temperature, t / temperature, raw_t, temperature**2


def _reduce(values, mask, reduction):
    if mask is not None:
        values = ops.where(mask, values, 0.0)
    if reduction is None:
        return values
    if reduction == "sum":
        return ops.sum(values)
    if mask is None:
        return ops.mean(values)
    return ops.sum(values) / ops.maximum(ops.sum(ops.cast(mask, "float32")), 1.0)


def _finish(loss, terms: dict, mask, reduction, return_terms: bool):
    value = _reduce(loss, mask, reduction)
    if not return_terms:
        return value
    return value, {name: _reduce(v, mask, reduction) for name, v in terms.items()}


# --- KD --------------------------------------------------------------------------------------


def kd(
    student_logits,
    teacher_logits,
    temperature: float = 4.0,
    standardize: bool = False,
    *,
    mask=None,
    reduction: str | None = "mean",
    return_terms: bool = False,
):
    """Hinton's knowledge distillation, `T^2 KL(softmax(t/T) || softmax(s/T))`.

    Args:
        student_logits: student logits, shape `(..., num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.
        mask: optional boolean of shape `student_logits.shape[:-1]`; False drops a position.
        reduction: `"mean"` over the (unmasked) positions, `"sum"`, or `None` for the values
            per position.
        return_terms: also return `{"kd_loss": value}`.

    Returns:
        A float32 tensor (a scalar unless `reduction=None`), or `(value, terms)`.

    Example:

    ```python
    s = np.array([[2.0, 0.0, -1.0]], "float32")
    float(keras_gdkd.kd(s, s, temperature=4.0))  # 0.0
    ```
    """
    s, t, hp, mask = _prepare(
        "kd", student_logits, teacher_logits, mask, reduction,
        temperature=temperature, standardize=standardize,
    )  # fmt: skip
    s, t, _, t2 = _scaled(s, t, hp)
    log_q = ops.log_softmax(ops.stop_gradient(t), axis=-1)
    log_p = ops.log_softmax(s, axis=-1)
    loss = t2 * ops.sum(ops.exp(log_q) * (log_q - log_p), axis=-1)
    return _finish(loss, {"kd_loss": loss}, mask, reduction, return_terms)


# --- DKD -------------------------------------------------------------------------------------


def dkd(
    student_logits,
    teacher_logits,
    labels,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    standardize: bool = False,
    *,
    mask=None,
    ignore_index: int | None = None,
    reduction: str | None = "mean",
    return_terms: bool = False,
    check_label_values: bool = True,
):
    """Decoupled KD (Zhao et al. 2022), `alpha * TCKD + beta * NCKD` over `{label} / rest`.

    TCKD is the KL of the masses of `{label}` and the rest; NCKD the KL of the distributions
    within the non-label classes.

    Args:
        student_logits: student logits, shape `(..., num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        labels: integer class indices of shape `student_logits.shape[:-1]` (or with a
            trailing axis of 1), in `[0, num_classes)` or equal to `ignore_index`.
        alpha: weight of TCKD; >= 0.
        beta: weight of NCKD; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.
        mask: optional boolean of the labels' shape; False drops a position.
        ignore_index: a label value whose positions are dropped like masked ones (255 in
            segmentation data); `None` for none.
        reduction: `"mean"` over the kept positions, `"sum"`, or `None` (per position).
        return_terms: also return `{"tckd_loss": ..., "nckd_loss": ...}` (times `T^2`,
            unweighted).
        check_label_values: read the labels' values, when they are concrete (NumPy data,
            eager tensors), to raise on one outside `[0, num_classes)`. Inside a compiled
            function they are unknown: such a position's values are NaN instead, on every
            backend. Pass `False` only when the range is already guaranteed.

    Returns:
        A float32 tensor (a scalar unless `reduction=None`), or `(value, terms)`.

    Raises:
        ValueError: for float or one-hot labels, a shape mismatch, or (concrete values) a label
            out of range.

    Example:

    ```python
    s = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], "float32")
    t = np.array([[3.0, 0.0, -2.0], [0.0, 2.0, 1.0]], "float32")
    loss = keras_gdkd.dkd(s, t, labels=np.array([0, 1]), alpha=1.0, beta=8.0)
    ```
    """
    s, t, hp, mask = _prepare(
        "dkd", student_logits, teacher_logits, mask, reduction,
        alpha=alpha, beta=beta, temperature=temperature, standardize=standardize,
    )  # fmt: skip
    num_classes = s.shape[-1]
    if num_classes is None or num_classes < 2:
        raise ValueError(f"DKD needs a known number of classes >= 2; got {num_classes}.")
    if ignore_index is not None and not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an integer or None; got {ignore_index!r}.")
    labels = V.check_labels(
        labels, tuple(s.shape[:-1]), num_classes, check_label_values, ignore_index
    )
    in_range = ops.logical_and(labels >= 0, labels < num_classes)
    invalid = ops.logical_not(in_range)
    if ignore_index is not None:
        kept = labels != ignore_index
        invalid = ops.logical_and(invalid, kept)
        mask = kept if mask is None else ops.logical_and(mask, kept)
    s, t, _, t2 = _scaled(s, t, hp)
    # The KLs are computed for an in-range stand-in label, so that values and gradients stay
    # finite; an invalid position is then marked NaN explicitly rather than by accident.
    safe = ops.where(in_range, labels, 0)
    high, (_, low_other), _ = P.kl_terms(s, t, P.label_masks(safe, num_classes))
    tckd, nckd = t2 * high, t2 * low_other
    loss = hp["alpha"] * tckd + hp["beta"] * nckd
    tckd, nckd, loss = (ops.where(invalid, float("nan"), v) for v in (tckd, nckd, loss))
    terms = {"tckd_loss": tckd, "nckd_loss": nckd}
    return _finish(loss, terms, mask, reduction, return_terms)


# --- GDKD ------------------------------------------------------------------------------------


def _gdkd_parts(s, t, hp: dict, ks: tuple, strategy: str = "best"):
    """KL terms (T^2 not applied) over the teacher's rank partition; top-k from raw logits."""
    s, t, raw_t, t2 = _scaled(s, t, hp)
    high, lows, mass = P.kl_terms(s, t, P.topk_masks(raw_t, ks, strategy))
    return t2 * high, [t2 * low for low in lows], mass


def _weighted(high, low_top, low_other, w0, w1, w2) -> tuple:
    """`w0 L_high + w1 L_low_top + w2 L_low_other` and the named terms (each times T^2).

    `w1`/`w2` may be per position (the dynamic variants).
    """
    loss = w0 * high + w1 * low_top + w2 * low_other
    return loss, dict(zip(GDKD_TERMS, (high, low_top, low_other)))


def gdkd(
    student_logits,
    teacher_logits,
    k: int = 5,
    w0: float = 1.0,
    w1: float = 1.0,
    w2: float = 8.0,
    temperature: float = 4.0,
    strategy: str = "best",
    standardize: bool = False,
    *,
    mask=None,
    reduction: str | None = "mean",
    return_terms: bool = False,
):
    """Generalized decoupled KD: `w0 L_high + w1 L_low_top + w2 L_low_other`.

    The partition is {teacher's top-k} / rest, taken from the raw teacher logits: `L_high` is
    the KL of the two masses, the others the KLs within each set. Labels are not used.

    Args:
        student_logits: student logits, shape `(..., num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        k: size of the teacher's top set, `1 <= k < num_classes`.
        w0: weight of `L_high`; >= 0.
        w1: weight of `L_low_top`; >= 0.
        w2: weight of `L_low_other`; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        strategy: `"best"` (the k largest teacher logits) or `"worst"` (the k smallest, an
            ablation).
        standardize: z-score each sample's logits (both models) before dividing by `T`; the
            top-k set is still taken from the raw teacher logits.
        mask: optional boolean of shape `student_logits.shape[:-1]`; False drops a position.
        reduction: `"mean"` over the (unmasked) positions, `"sum"`, or `None` (per position).
        return_terms: also return `{"high_loss", "low_top_loss", "low_other_loss"}` (each
            times `T^2`, unweighted).

    Returns:
        A float32 tensor (a scalar unless `reduction=None`), or `(value, terms)`.

    Example:

    ```python
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(2, 8, 100)).astype("float32")
    loss = keras_gdkd.gdkd(s, t, k=5, w0=1.0, w1=2.0, w2=8.0, temperature=4.0)
    per_sample, terms = keras_gdkd.gdkd(s, t, k=5, reduction=None, return_terms=True)
    ```
    """
    s, t, hp, mask = _prepare(
        "gdkd", student_logits, teacher_logits, mask, reduction, k=k, w0=w0, w1=w1, w2=w2,
        temperature=temperature, strategy=strategy, standardize=standardize,
    )  # fmt: skip
    high, (low_top, low_other), _ = _gdkd_parts(s, t, hp, (hp["k"],), hp["strategy"])
    loss, terms = _weighted(high, low_top, low_other, hp["w0"], hp["w1"], hp["w2"])
    return _finish(loss, terms, mask, reduction, return_terms)


def gdkd3(
    student_logits,
    teacher_logits,
    k: int = 4,
    w0: float = 1.0,
    w1: float = 1.0,
    w2: float = 8.0,
    temperature: float = 4.0,
    standardize: bool = False,
    *,
    mask=None,
    reduction: str | None = "mean",
    return_terms: bool = False,
):
    """GDKD with three sets: the teacher's top-1, its top-2..k, and the rest.

    `w0 L_high + w1 L_low_top + w2 L_low_other`, where `L_high` is the three-way KL of the set
    masses, `L_low_top` the KL within top-2..k (the top-1 set, a single class, has none) and
    `L_low_other` the KL within the rest.

    Args:
        student_logits: student logits, shape `(..., num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        k: the last rank of the middle set, `2 <= k < num_classes`.
        w0: weight of the three-way top-level term; >= 0.
        w1: weight of the KL within the teacher's top-2..k; >= 0.
        w2: weight of the KL within the rest; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.
        mask: optional boolean of shape `student_logits.shape[:-1]`; False drops a position.
        reduction: `"mean"` over the (unmasked) positions, `"sum"`, or `None` (per position).
        return_terms: also return the three terms, named as GDKD's.

    Returns:
        A float32 tensor (a scalar unless `reduction=None`), or `(value, terms)`.
    """
    s, t, hp, mask = _prepare(
        "gdkd3", student_logits, teacher_logits, mask, reduction, k=k, w0=w0, w1=w1, w2=w2,
        temperature=temperature, standardize=standardize,
    )  # fmt: skip
    high, (_, low_top, low_other), _ = _gdkd_parts(s, t, hp, (1, hp["k"]))
    loss, terms = _weighted(high, low_top, low_other, hp["w0"], hp["w1"], hp["w2"])
    return _finish(loss, terms, mask, reduction, return_terms)


# --- Dynamic-weight variants (the paper's V1/V2/V3 ablation) ---------------------------------


def _dynamic(name, student_logits, teacher_logits, mask, reduction, return_terms, **kwargs):
    """GDKD whose within-set weights `m1`/`m2` are scaled by the teacher's set masses."""
    s, t, hp, mask = _prepare(name, student_logits, teacher_logits, mask, reduction, **kwargs)
    high, (low_top, low_other), mass = _gdkd_parts(s, t, hp, (hp["k"],))
    w1 = hp["m1"] * mass[..., 0] if "m1" in hp else hp["w1"]
    w2 = hp["m2"] * mass[..., 1] if "m2" in hp else hp["w2"]
    loss, terms = _weighted(high, low_top, low_other, hp["w0"], w1, w2)
    return _finish(loss, terms, mask, reduction, return_terms)


def gdkd_v1(
    student_logits,
    teacher_logits,
    k: int = 5,
    m1: float = 1.0,
    m2: float = 1.0,
    w0: float = 1.0,
    temperature: float = 4.0,
    standardize: bool = False,
    *,
    mask=None,
    reduction: str | None = "mean",
    return_terms: bool = False,
):
    """Dynamic-weight variant V1: `w0 L_high + m1 b_t[top] L_low_top + m2 b_t[other] L_low_other`.

    `b_t` is the teacher's mass on each set, per position. `gdkd_v1(m1=1, m2=1)` equals `kd`.

    Args:
        student_logits: student logits, shape `(..., num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        k: size of the teacher's top set, `1 <= k < num_classes`.
        m1: factor of `b_t[top]` on the KL within the top-k; >= 0.
        m2: factor of `b_t[other]` on the KL within the rest; >= 0.
        w0: weight of the top-level term; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.
        mask, reduction, return_terms: as in `gdkd`.

    Returns:
        A float32 tensor (a scalar unless `reduction=None`), or `(value, terms)`.
    """
    return _dynamic(
        "gdkd_v1", student_logits, teacher_logits, mask, reduction, return_terms,
        k=k, m1=m1, m2=m2, w0=w0, temperature=temperature, standardize=standardize,
    )  # fmt: skip


def gdkd_v2(
    student_logits,
    teacher_logits,
    k: int = 5,
    w1: float = 1.0,
    m2: float = 1.0,
    w0: float = 1.0,
    temperature: float = 4.0,
    standardize: bool = False,
    *,
    mask=None,
    reduction: str | None = "mean",
    return_terms: bool = False,
):
    """Dynamic-weight variant V2: `w0 L_high + w1 L_low_top + m2 b_t[other] L_low_other`.

    Args:
        student_logits: student logits, shape `(..., num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        k: size of the teacher's top set, `1 <= k < num_classes`.
        w1: fixed weight of the KL within the top-k; >= 0.
        m2: factor of `b_t[other]` on the KL within the rest; >= 0.
        w0: weight of the top-level term; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.
        mask, reduction, return_terms: as in `gdkd`.

    Returns:
        A float32 tensor (a scalar unless `reduction=None`), or `(value, terms)`.
    """
    return _dynamic(
        "gdkd_v2", student_logits, teacher_logits, mask, reduction, return_terms,
        k=k, w1=w1, m2=m2, w0=w0, temperature=temperature, standardize=standardize,
    )  # fmt: skip


def gdkd_v3(
    student_logits,
    teacher_logits,
    k: int = 5,
    m1: float = 1.0,
    w2: float = 8.0,
    w0: float = 1.0,
    temperature: float = 4.0,
    standardize: bool = False,
    *,
    mask=None,
    reduction: str | None = "mean",
    return_terms: bool = False,
):
    """Dynamic-weight variant V3: `w0 L_high + m1 b_t[top] L_low_top + w2 L_low_other`.

    Args:
        student_logits: student logits, shape `(..., num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        k: size of the teacher's top set, `1 <= k < num_classes`.
        m1: factor of `b_t[top]` on the KL within the top-k; >= 0.
        w2: fixed weight of the KL within the rest; >= 0.
        w0: weight of the top-level term; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.
        mask, reduction, return_terms: as in `gdkd`.

    Returns:
        A float32 tensor (a scalar unless `reduction=None`), or `(value, terms)`.
    """
    return _dynamic(
        "gdkd_v3", student_logits, teacher_logits, mask, reduction, return_terms,
        k=k, m1=m1, w2=w2, w0=w0, temperature=temperature, standardize=standardize,
    )  # fmt: skip


# --- DIST (Huang et al. 2022), the correlation-based baseline --------------------------------

_DIST_EPS = 1e-8  # as the reference implementation


def _cosine(a, b, axis: int):
    norms = ops.sqrt(ops.sum(a * a, axis=axis)) * ops.sqrt(ops.sum(b * b, axis=axis))
    return ops.sum(a * b, axis=axis) / (norms + _DIST_EPS)


def dist(
    student_logits,
    teacher_logits,
    beta: float = 2.0,
    gamma: float = 2.0,
    temperature: float = 4.0,
    *,
    mask=None,
    reduction: str | None = "mean",
    return_terms: bool = False,
):
    """DIST: `beta * T^2 * inter + gamma * T^2 * intra` over probabilities `softmax(z/T)`.

    `inter = 1 - mean_i pearson(p_i, q_i)`, the Pearson correlation of each sample's student
    and teacher probability vectors over the classes; `intra = 1 - mean_c pearson(p[:, c],
    q[:, c])`, the same for each class over the samples of the batch (the transposed
    matrices). A Pearson correlation is a cosine of centred vectors with `1e-8` added to the
    norms' product, as in the reference code.

    The intra-class term is a statistic of the whole batch, not of one sample: the per-position
    values (`reduction=None`) carry it at every position, so that their mean is the loss.

    Args:
        student_logits: student logits, shape `(..., num_classes)`; every (unmasked) position
            is one sample of the batch.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        beta: weight of the inter-class relation; >= 0.
        gamma: weight of the intra-class relation; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        mask: optional boolean of shape `student_logits.shape[:-1]`; masked positions are left
            out of both relations.
        reduction: `"mean"` over the (unmasked) positions, `"sum"`, or `None` (per position).
        return_terms: also return `{"inter_loss": ..., "intra_loss": ...}` (times `T^2`,
            unweighted).

    Returns:
        A float32 tensor (a scalar unless `reduction=None`), or `(value, terms)`.

    Example:

    ```python
    loss = keras_gdkd.dist(student_logits, teacher_logits, beta=2.0, gamma=2.0, temperature=4.0)
    ```
    """
    s, t, hp, mask = _prepare(
        "dist", student_logits, teacher_logits, mask, reduction,
        beta=beta, gamma=gamma, temperature=temperature,
    )  # fmt: skip
    temperature = hp["temperature"]
    num_classes = s.shape[-1]
    leading = ops.shape(s)[:-1]
    p = ops.softmax(ops.reshape(s, (-1, num_classes)) / temperature, axis=-1)
    q = ops.softmax(ops.stop_gradient(ops.reshape(t, (-1, num_classes))) / temperature, axis=-1)
    inter = 1.0 - _cosine(p - ops.mean(p, -1, True), q - ops.mean(q, -1, True), axis=-1)
    if mask is None:
        p_c, q_c = p - ops.mean(p, 0, True), q - ops.mean(q, 0, True)
    else:
        weight = ops.reshape(ops.cast(mask, "float32"), (-1, 1))
        count = ops.maximum(ops.sum(weight), 1.0)
        p_c = (p - ops.sum(weight * p, 0, True) / count) * weight
        q_c = (q - ops.sum(weight * q, 0, True) / count) * weight
    intra = 1.0 - ops.mean(_cosine(p_c, q_c, axis=0))
    t2 = temperature**2
    inter = t2 * ops.reshape(inter, leading)
    intra = t2 * intra * ops.ones_like(inter)
    loss = hp["beta"] * inter + hp["gamma"] * intra
    return _finish(loss, {"inter_loss": inter, "intra_loss": intra}, mask, reduction, return_terms)
