"""Logit-distillation losses as pure `keras.ops` functions.

Conventions (as in the authors' code): student logits first; every KL is KL(teacher || student),
summed over classes, multiplied by `T**2` and averaged over the batch. The public functions
(`kd`, `dkd`, `gdkd`, `gdkd3`, `gdkd_v1/v2/v3`) return that batch-mean scalar. The `*_terms`
functions return per-sample values, `(loss, {term_name: value})` each of shape `(batch,)`, for
callers that weight samples (the Distiller) or log the parts.

Every function takes `standardize=False`: logit standardization (Sun et al. 2024) of both
models' logits before the division by `T`. Hyper-parameters are checked on every call: `T` must
be finite and > 0, loss weights finite and >= 0, `k` an integer with `1 <= k < C`; anything else
raises `ValueError`.
"""

from __future__ import annotations

from keras import ops

from keras_gdkd.losses import partition as P


def _scaled(student_logits, teacher_logits, temperature: float, standardize: bool) -> tuple:
    s, t = P.validate_logits(student_logits, teacher_logits)
    temperature = P.validate_temperature(temperature)
    if standardize:
        s, t = P.standardize(s), P.standardize(t)
    return s / temperature, t / temperature, t, temperature**2


def _weights(**weights: float) -> list:
    return [P.validate_weight(name, value) for name, value in weights.items()]


def _mean(terms: tuple):
    return ops.mean(terms[0])


# --- KD --------------------------------------------------------------------------------------


def kd_terms(
    student_logits, teacher_logits, temperature: float = 4.0, standardize: bool = False
) -> tuple:
    """Per-sample Hinton KD, `T^2 KL(softmax(t/T) || softmax(s/T))`.

    Args:
        student_logits: student logits, shape `(batch, num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.

    Returns:
        `(loss, {"kd_loss": loss})`, with `loss` of shape `(batch,)`.
    """
    s, t, _, t2 = _scaled(student_logits, teacher_logits, temperature, standardize)
    log_q = ops.log_softmax(ops.stop_gradient(t), axis=-1)
    log_p = ops.log_softmax(s, axis=-1)
    loss = t2 * ops.sum(ops.exp(log_q) * (log_q - log_p), axis=-1)
    return loss, {"kd_loss": loss}


def kd(student_logits, teacher_logits, temperature: float = 4.0, standardize: bool = False):
    """Hinton's knowledge distillation loss, averaged over the batch.

    `T^2 KL(softmax(t/T) || softmax(s/T))`.

    Args:
        student_logits: student logits, shape `(batch, num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.

    Returns:
        A float32 scalar.

    Example:

    ```python
    s = np.array([[2.0, 0.0, -1.0]], "float32")
    float(keras_gdkd.kd(s, s, temperature=4.0))  # 0.0
    ```
    """
    return _mean(kd_terms(student_logits, teacher_logits, temperature, standardize))


# --- DKD -------------------------------------------------------------------------------------


def dkd_terms(
    student_logits,
    teacher_logits,
    labels,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    standardize: bool = False,
    *,
    check_label_values: bool = True,
) -> tuple:
    """Per-sample DKD over the partition `{label} / rest`.

    Args:
        student_logits: student logits, shape `(batch, num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        labels: integer class indices in `[0, num_classes)`, shape `(batch,)` or `(batch, 1)`.
        alpha: weight of TCKD, the KL of the two-set masses (label vs. rest); >= 0.
        beta: weight of NCKD, the KL within the non-label classes; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.
        check_label_values: read the labels' values, when they are concrete (NumPy data,
            eager tensors), to raise on one outside `[0, num_classes)`. Inside a compiled
            function the values are unknown: such a sample's loss and terms are NaN instead,
            on every backend. Pass `False` only when the range is already guaranteed.

    Returns:
        `(loss, {"tckd_loss": ..., "nckd_loss": ...})`, each of shape `(batch,)`, every term
        times `T^2` and unweighted; `loss = alpha * tckd + beta * nckd`.

    Raises:
        ValueError: for float or one-hot labels, a shape mismatch, or (concrete values) a label
            out of range.
    """
    alpha, beta = _weights(alpha=alpha, beta=beta)
    s, t, _, t2 = _scaled(student_logits, teacher_logits, temperature, standardize)
    num_classes = s.shape[-1]
    if num_classes is None or num_classes < 2:
        raise ValueError(f"DKD needs a known number of classes >= 2; got {num_classes}.")
    labels = P.check_labels(labels, s.shape[0], num_classes, check_label_values)
    valid = ops.logical_and(labels >= 0, labels < num_classes)
    # The KLs are computed for an in-range stand-in label, so that values and gradients stay
    # finite; the invalid sample is then marked NaN explicitly rather than by accident.
    safe = ops.where(valid, labels, 0)
    high, (_, low_other), _ = P.kl_terms(s, t, P.label_masks(safe, num_classes))
    tckd, nckd = t2 * high, t2 * low_other
    loss = alpha * tckd + beta * nckd
    tckd, nckd, loss = (ops.where(valid, v, float("nan")) for v in (tckd, nckd, loss))
    return loss, {"tckd_loss": tckd, "nckd_loss": nckd}


def dkd(
    student_logits,
    teacher_logits,
    labels,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    standardize: bool = False,
):
    """Decoupled KD (Zhao et al. 2022), `alpha * TCKD + beta * NCKD`, averaged over the batch.

    TCKD is the KL of the masses of `{label}` and the rest; NCKD the KL of the distributions
    within the non-label classes.

    Args:
        student_logits: student logits, shape `(batch, num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        labels: integer class indices in `[0, num_classes)`, shape `(batch,)` or `(batch, 1)`.
        alpha: weight of TCKD; >= 0.
        beta: weight of NCKD; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.

    Returns:
        A float32 scalar. A label out of range raises `ValueError` when the labels are concrete
        and makes the result NaN inside a compiled function (see `dkd_terms`).

    Example:

    ```python
    s = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], "float32")
    t = np.array([[3.0, 0.0, -2.0], [0.0, 2.0, 1.0]], "float32")
    loss = keras_gdkd.dkd(s, t, labels=np.array([0, 1]), alpha=1.0, beta=8.0)
    ```
    """
    return _mean(
        dkd_terms(student_logits, teacher_logits, labels, alpha, beta, temperature, standardize)
    )


# --- GDKD ------------------------------------------------------------------------------------

GDKD_TERMS = ("high_loss", "low_top_loss", "low_other_loss")


def _weighted_terms(t2, high, low_top, low_other, w0, w1, w2) -> tuple:
    """`(w0 L_high + w1 L_low_top + w2 L_low_other, named terms)`, every term times T^2.

    `w1`/`w2` may be per-sample (the dynamic variants).
    """
    terms = dict(zip(GDKD_TERMS, (t2 * high, t2 * low_top, t2 * low_other)))
    loss = w0 * terms["high_loss"] + w1 * terms["low_top_loss"] + w2 * terms["low_other_loss"]
    return loss, terms


def _gdkd_parts(s, t_scaled, t_raw, ks: tuple, strategy: str = "best"):
    """KL terms (T^2 not applied) over the teacher's rank partition; top-k from raw logits."""
    num_classes = s.shape[-1]
    ks = (*ks[:-1], P.validate_k(ks[-1], num_classes, minimum=len(ks)))
    return P.kl_terms(s, t_scaled, P.topk_masks(t_raw, ks, strategy))


def gdkd_terms(
    student_logits,
    teacher_logits,
    k: int = 5,
    w0: float = 1.0,
    w1: float = 1.0,
    w2: float = 8.0,
    temperature: float = 4.0,
    strategy: str = "best",
    standardize: bool = False,
) -> tuple:
    """Per-sample GDKD over the partition {teacher's top-k} / rest.

    Args:
        student_logits: student logits, shape `(batch, num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        k: size of the teacher's top set, `1 <= k < num_classes`.
        w0: weight of the top-level term (KL of the two masses); >= 0.
        w1: weight of the KL within the top-k classes; >= 0.
        w2: weight of the KL within the other classes; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        strategy: `"best"` (the k largest teacher logits) or `"worst"` (the k smallest, an
            ablation).
        standardize: z-score each sample's logits (both models) before dividing by `T`; the
            top-k set is still taken from the raw teacher logits.

    Returns:
        `(loss, {"high_loss": ..., "low_top_loss": ..., "low_other_loss": ...})`, each of
        shape `(batch,)`, every term times `T^2` and unweighted.
    """
    if strategy not in ("best", "worst"):
        raise ValueError(f"strategy must be 'best' or 'worst'; got {strategy!r}.")
    w0, w1, w2 = _weights(w0=w0, w1=w1, w2=w2)
    s, t, t_raw, t2 = _scaled(student_logits, teacher_logits, temperature, standardize)
    high, (low_top, low_other), _ = _gdkd_parts(s, t, t_raw, (k,), strategy)
    return _weighted_terms(t2, high, low_top, low_other, w0, w1, w2)


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
):
    """Generalized decoupled KD, averaged over the batch.

    `w0 L_high + w1 L_low_top + w2 L_low_other` over the partition {teacher's top-k} / rest:
    `L_high` is the KL of the two masses, the others the KLs within each set. Labels are not
    used.

    Args:
        student_logits: student logits, shape `(batch, num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        k: size of the teacher's top set, `1 <= k < num_classes`.
        w0: weight of `L_high`; >= 0.
        w1: weight of `L_low_top`; >= 0.
        w2: weight of `L_low_other`; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        strategy: `"best"` (the k largest teacher logits) or `"worst"` (the k smallest).
        standardize: z-score each sample's logits (both models) before dividing by `T`.

    Returns:
        A float32 scalar.

    Example:

    ```python
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(2, 8, 100)).astype("float32")
    loss = keras_gdkd.gdkd(s, t, k=5, w0=1.0, w1=2.0, w2=8.0, temperature=4.0)
    ```
    """
    return _mean(
        gdkd_terms(
            student_logits, teacher_logits, k, w0, w1, w2, temperature, strategy, standardize
        )
    )


def gdkd3_terms(
    student_logits,
    teacher_logits,
    k: int = 4,
    w0: float = 1.0,
    w1: float = 1.0,
    w2: float = 8.0,
    temperature: float = 4.0,
    standardize: bool = False,
) -> tuple:
    """Per-sample GDKD3 over {teacher top-1} / {top-2..k} / rest.

    Args:
        student_logits: student logits, shape `(batch, num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        k: the last rank of the middle set, `2 <= k < num_classes`.
        w0: weight of the three-way top-level term; >= 0.
        w1: weight of the KL within the teacher's top-2..k; >= 0.
        w2: weight of the KL within the rest; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.

    Returns:
        `(loss, {"high_loss": ..., "low_top_loss": ..., "low_other_loss": ...})`, each of
        shape `(batch,)`, every term times `T^2` and unweighted; `low_top_loss` is the term
        within top-2..k (the top-1 set, a single class, has none).
    """
    w0, w1, w2 = _weights(w0=w0, w1=w1, w2=w2)
    s, t, t_raw, t2 = _scaled(student_logits, teacher_logits, temperature, standardize)
    high, (_, low_top, low_other), _ = _gdkd_parts(s, t, t_raw, (1, k))
    return _weighted_terms(t2, high, low_top, low_other, w0, w1, w2)


def gdkd3(
    student_logits,
    teacher_logits,
    k: int = 4,
    w0: float = 1.0,
    w1: float = 1.0,
    w2: float = 8.0,
    temperature: float = 4.0,
    standardize: bool = False,
):
    """GDKD with three sets (teacher top-1, top-2..k, rest), averaged over the batch.

    Args:
        student_logits: student logits, shape `(batch, num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        k: the last rank of the middle set, `2 <= k < num_classes`.
        w0: weight of the three-way top-level term; >= 0.
        w1: weight of the KL within the teacher's top-2..k; >= 0.
        w2: weight of the KL within the rest; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.

    Returns:
        A float32 scalar.
    """
    return _mean(
        gdkd3_terms(student_logits, teacher_logits, k, w0, w1, w2, temperature, standardize)
    )


# --- Dynamic-weight variants (the paper's V1/V2/V3 ablation) ---------------------------------


def gdkd_dynamic_terms(
    student_logits,
    teacher_logits,
    k: int = 5,
    w0: float = 1.0,
    top_weight: float = 1.0,
    other_weight: float = 1.0,
    scale_top: bool = True,
    scale_other: bool = True,
    temperature: float = 4.0,
    standardize: bool = False,
) -> tuple:
    """Per-sample GDKD whose within-set weights may scale with the teacher's masses.

    A within-set term's weight is multiplied, per sample, by the teacher's mass on that set
    when its `scale_*` flag is set: V1 scales both, V2 the other set only, V3 the top set only.

    Args:
        student_logits: student logits, shape `(batch, num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        k: size of the teacher's top set, `1 <= k < num_classes`.
        w0: weight of the top-level term; >= 0.
        top_weight: weight (or factor of `b_t[top]`) of the KL within the top-k; >= 0.
        other_weight: weight (or factor of `b_t[other]`) of the KL within the rest; >= 0.
        scale_top: multiply `top_weight` by the teacher's mass on the top-k.
        scale_other: multiply `other_weight` by the teacher's mass on the rest.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.

    Returns:
        `(loss, {"high_loss": ..., "low_top_loss": ..., "low_other_loss": ...})`, each of
        shape `(batch,)`, every term times `T^2` and unweighted.
    """
    w0, top_weight, other_weight = _weights(w0=w0, top_weight=top_weight, other_weight=other_weight)
    s, t, t_raw, t2 = _scaled(student_logits, teacher_logits, temperature, standardize)
    high, (low_top, low_other), mass = _gdkd_parts(s, t, t_raw, (k,))
    top_w = top_weight * mass[:, 0] if scale_top else top_weight
    other_w = other_weight * mass[:, 1] if scale_other else other_weight
    return _weighted_terms(t2, high, low_top, low_other, w0, top_w, other_w)


def gdkd_v1(
    student_logits,
    teacher_logits,
    k: int = 5,
    m1: float = 1.0,
    m2: float = 1.0,
    w0: float = 1.0,
    temperature: float = 4.0,
    standardize: bool = False,
):
    """Dynamic-weight variant V1, averaged over the batch.

    `w0 L_high + m1 b_t[top] L_low_top + m2 b_t[other] L_low_other`, with `b_t` the teacher's
    mass on each set. `gdkd_v1(m1=1, m2=1)` equals `kd` exactly.

    Args:
        student_logits: student logits, shape `(batch, num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        k: size of the teacher's top set, `1 <= k < num_classes`.
        m1: factor of `b_t[top]` on the KL within the top-k; >= 0.
        m2: factor of `b_t[other]` on the KL within the rest; >= 0.
        w0: weight of the top-level term; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.

    Returns:
        A float32 scalar.
    """
    m1, m2 = _weights(m1=m1, m2=m2)
    return _mean(
        gdkd_dynamic_terms(
            student_logits, teacher_logits, k, w0, m1, m2, True, True, temperature, standardize
        )
    )


def gdkd_v2(
    student_logits,
    teacher_logits,
    k: int = 5,
    w1: float = 1.0,
    m2: float = 1.0,
    w0: float = 1.0,
    temperature: float = 4.0,
    standardize: bool = False,
):
    """Dynamic-weight variant V2, averaged over the batch.

    `w0 L_high + w1 L_low_top + m2 b_t[other] L_low_other`.

    Args:
        student_logits: student logits, shape `(batch, num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        k: size of the teacher's top set, `1 <= k < num_classes`.
        w1: fixed weight of the KL within the top-k; >= 0.
        m2: factor of `b_t[other]` on the KL within the rest; >= 0.
        w0: weight of the top-level term; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.

    Returns:
        A float32 scalar.
    """
    w1, m2 = _weights(w1=w1, m2=m2)
    return _mean(
        gdkd_dynamic_terms(
            student_logits, teacher_logits, k, w0, w1, m2, False, True, temperature, standardize
        )
    )


def gdkd_v3(
    student_logits,
    teacher_logits,
    k: int = 5,
    m1: float = 1.0,
    w2: float = 8.0,
    w0: float = 1.0,
    temperature: float = 4.0,
    standardize: bool = False,
):
    """Dynamic-weight variant V3, averaged over the batch.

    `w0 L_high + m1 b_t[top] L_low_top + w2 L_low_other`.

    Args:
        student_logits: student logits, shape `(batch, num_classes)`.
        teacher_logits: teacher logits, same shape; no gradient flows into them.
        k: size of the teacher's top set, `1 <= k < num_classes`.
        m1: factor of `b_t[top]` on the KL within the top-k; >= 0.
        w2: fixed weight of the KL within the rest; >= 0.
        w0: weight of the top-level term; >= 0.
        temperature: the softmax temperature `T`, finite and > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.

    Returns:
        A float32 scalar.
    """
    m1, w2 = _weights(m1=m1, w2=w2)
    return _mean(
        gdkd_dynamic_terms(
            student_logits, teacher_logits, k, w0, m1, w2, True, False, temperature, standardize
        )
    )
