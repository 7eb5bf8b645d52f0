"""Logit-distillation losses as pure ``keras.ops`` functions.

Conventions (as in the authors' code): student logits first; every KL is KL(teacher || student),
summed over classes, multiplied by ``T**2`` and averaged over the batch. The public functions
(``kd``, ``dkd``, ``gdkd``, ``gdkd3``, ``gdkd_v1/v2/v3``) return that batch-mean scalar. The
``*_terms`` functions return per-sample values, ``(loss, {term_name: value})`` each of shape
(batch,), for callers that weight samples (the Distiller) or log the parts.

Every function takes ``standardize=False``: logit standardization (Sun et al. 2024) of both
models' logits before the division by ``T``.
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


def _mean(terms: tuple):
    return ops.mean(terms[0])


# --- KD --------------------------------------------------------------------------------------


def kd_terms(student_logits, teacher_logits, temperature: float = 4.0, standardize: bool = False):
    """Per-sample KD: ``T^2 KL(q || p)``. Terms: ``kd_loss``."""
    s, t, _, t2 = _scaled(student_logits, teacher_logits, temperature, standardize)
    log_q = ops.log_softmax(ops.stop_gradient(t), axis=-1)
    log_p = ops.log_softmax(s, axis=-1)
    loss = t2 * ops.sum(ops.exp(log_q) * (log_q - log_p), axis=-1)
    return loss, {"kd_loss": loss}


def kd(student_logits, teacher_logits, temperature: float = 4.0, standardize: bool = False):
    """Hinton's KD, ``T^2 KL(softmax(t/T) || softmax(s/T))``, batch mean."""
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
):
    """Per-sample DKD over the partition {label} / rest. Terms: ``tckd_loss``, ``nckd_loss``."""
    s, t, _, t2 = _scaled(student_logits, teacher_logits, temperature, standardize)
    num_classes = s.shape[-1]
    if num_classes is not None and num_classes < 2:
        raise ValueError(f"DKD needs at least 2 classes; got {num_classes}.")
    _check_labels(labels, s)
    high, (_, low_other), _ = P.kl_terms(s, t, P.label_masks(labels, num_classes))
    tckd, nckd = t2 * high, t2 * low_other
    return alpha * tckd + beta * nckd, {"tckd_loss": tckd, "nckd_loss": nckd}


def dkd(
    student_logits,
    teacher_logits,
    labels,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    standardize: bool = False,
):
    """Decoupled KD (Zhao et al. 2022): ``alpha * TCKD + beta * NCKD``, batch mean."""
    return _mean(
        dkd_terms(student_logits, teacher_logits, labels, alpha, beta, temperature, standardize)
    )


def _check_labels(labels, logits) -> None:
    dtype = str(getattr(labels, "dtype", "int"))
    if "float" in dtype or "complex" in dtype:
        raise ValueError(
            f"labels must be integer class indices of shape (batch,); got dtype {dtype}. "
            "Convert one-hot targets with argmax."
        )
    shape = tuple(getattr(labels, "shape", ()))
    squeezed = shape[:-1] if len(shape) == 2 and shape[-1] == 1 else shape
    if (
        len(squeezed) != 1
        or None not in (squeezed[0], logits.shape[0])
        and (squeezed[0] != logits.shape[0])
    ):
        raise ValueError(f"labels must have shape (batch,) = ({logits.shape[0]},); got {shape}.")


# --- GDKD ------------------------------------------------------------------------------------

GDKD_TERMS = ("high_loss", "low_top_loss", "low_other_loss")


def _weighted_terms(t2, high, low_top, low_other, w0, w1, w2) -> tuple:
    """``(w0 L_high + w1 L_low_top + w2 L_low_other, named terms)``, every term times T^2.

    ``w1``/``w2`` may be per-sample (the dynamic variants).
    """
    terms = dict(zip(GDKD_TERMS, (t2 * high, t2 * low_top, t2 * low_other)))
    loss = w0 * terms["high_loss"] + w1 * terms["low_top_loss"] + w2 * terms["low_other_loss"]
    return loss, terms


def _gdkd_parts(s, t_scaled, t_raw, ks: tuple, strategy: str = "best"):
    """KL terms (T^2 not applied) over the teacher's rank partition; top-k from raw logits."""
    num_classes = s.shape[-1]
    P.validate_k(ks[-1], num_classes, minimum=len(ks))
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
):
    """Per-sample GDKD over {teacher top-k} / rest.

    Terms: ``high_loss`` (KL of the two masses), ``low_top_loss`` (within top-k),
    ``low_other_loss`` (within the rest), each times ``T^2`` and unweighted.
    """
    if strategy not in ("best", "worst"):
        raise ValueError(f"strategy must be 'best' or 'worst'; got {strategy!r}.")
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
    """GDKD: ``w0 L_high + w1 L_low_top + w2 L_low_other`` over the teacher's top-k, batch mean."""
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
):
    """Per-sample GDKD3 over {teacher top-1} / {top-2..k} / rest (needs 2 <= k < C).

    Terms: ``high_loss`` (three-way masses), ``low_top_loss`` (within top-2..k),
    ``low_other_loss`` (within the rest); the top-1 set has no within-set term.
    """
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
    """GDKD with three sets (teacher top-1, top-2..k, rest), batch mean."""
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
):
    """GDKD with per-sample leaf weights: a leaf's weight is multiplied by the teacher's mass on
    that set when its ``scale_*`` flag is set (V1: both, V2: other only, V3: top only)."""
    s, t, t_raw, t2 = _scaled(student_logits, teacher_logits, temperature, standardize)
    high, (low_top, low_other), mass = _gdkd_parts(s, t, t_raw, (k,))
    top_w = top_weight * mass[:, 0] if scale_top else top_weight
    other_w = other_weight * mass[:, 1] if scale_other else other_weight
    return _weighted_terms(t2, high, low_top, low_other, w0, top_w, other_w)


def gdkd_v1(
    student_logits, teacher_logits, k=5, m1=1.0, m2=1.0, w0=1.0, temperature=4.0, standardize=False
):
    """V1: ``w0 L_high + m1 b_t[top] KL_top + m2 b_t[other] KL_other``; V1(1, 1) equals KD."""
    return _mean(
        gdkd_dynamic_terms(
            student_logits, teacher_logits, k, w0, m1, m2, True, True, temperature, standardize
        )
    )


def gdkd_v2(
    student_logits, teacher_logits, k=5, w1=1.0, m2=1.0, w0=1.0, temperature=4.0, standardize=False
):
    """V2: fixed ``w1`` on the top term, ``m2 b_t[other]`` on the other term."""
    return _mean(
        gdkd_dynamic_terms(
            student_logits, teacher_logits, k, w0, w1, m2, False, True, temperature, standardize
        )
    )


def gdkd_v3(
    student_logits, teacher_logits, k=5, m1=1.0, w2=8.0, w0=1.0, temperature=4.0, standardize=False
):
    """V3: ``m1 b_t[top]`` on the top term, fixed ``w2`` on the other term."""
    return _mean(
        gdkd_dynamic_terms(
            student_logits, teacher_logits, k, w0, m1, w2, True, False, temperature, standardize
        )
    )
