"""Float64 NumPy reference of every loss in keras_gdkd, written from docs/method.md.

Independent of the library: plain NumPy, float64, no keras. Everything is per sample and in
log space (log-sum-exp over each set), so the reference stays exact for logit gaps of 10^4 at
T = 1, where float64 probabilities would underflow to 0.

Every loss returns `(loss, parts)`: `loss` of shape (batch,) and `parts` a dict of per-sample
terms, each already multiplied by T**2 and not weighted. Take `.mean()` for the batch loss.

Definitions (p = softmax(s/T), q = softmax(t/T); U_1..U_m a partition of the classes):

    b_s[j] = sum_{i in U_j} p_i,  b_t[j] likewise       (set masses)
    p^(j)_i = p_i / b_s[j],  q^(j)_i = q_i / b_t[j]      (within-set distributions, i in U_j)
    high  = T^2 sum_j b_t[j] log(b_t[j] / b_s[j])
    low_j = T^2 sum_{i in U_j} q^(j)_i log(q^(j)_i / p^(j)_i)
"""

from __future__ import annotations

import numpy as np

_EPS_LS = 1e-7  # logit standardization: std + 1e-7 in the denominator


def _lse(z: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """log(sum(exp(z))) over the last axis, restricted to `mask`; -inf for an empty set."""
    if mask is not None:
        z = np.where(mask, z, -np.inf)
    top = z.max(axis=-1, keepdims=True)
    safe_top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        return (safe_top + np.log(np.exp(z - safe_top).sum(axis=-1, keepdims=True)))[..., 0]


def _xlogy_ratio(log_a: np.ndarray, log_b: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """sum over mask of a * (log a - log b), with a = exp(log_a); 0 where a == 0."""
    with np.errstate(invalid="ignore"):
        term = np.exp(log_a) * (log_a - log_b)
    return np.where(mask & np.isfinite(log_a), term, 0.0).sum(axis=-1)


def standardize(z: np.ndarray) -> np.ndarray:
    """Logit standardization: z-score each row over the classes (unbiased std, +1e-7)."""
    z = np.asarray(z, np.float64)
    mean = z.mean(axis=-1, keepdims=True)
    std = z.std(axis=-1, ddof=1, keepdims=True)
    return (z - mean) / (std + _EPS_LS)


def _prepare(s, t, temperature: float, do_standardize: bool):
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    if do_standardize:
        s, t = standardize(s), standardize(t)
    return s / temperature, t / temperature


def partition_terms(s, t, masks, temperature: float, do_standardize: bool = False) -> dict:
    """Per-sample top-level and within-set KL(teacher || student) over `masks`, times T^2.

    Returns a dict with `high` (batch,), `low` (a list, one (batch,) array per set) and
    `mass_t` (batch, m), the teacher's set masses b_t.
    """
    zs, zt = _prepare(s, t, temperature, do_standardize)
    t2 = temperature**2
    lse_s, lse_t = _lse(zs), _lse(zt)
    log_bs = np.stack([_lse(zs, m) - lse_s for m in masks], axis=-1)
    log_bt = np.stack([_lse(zt, m) - lse_t for m in masks], axis=-1)
    everywhere = np.ones_like(log_bt, dtype=bool)
    high = t2 * _xlogy_ratio(log_bt, log_bs, everywhere)
    lows = []
    for m in masks:
        log_pj = np.where(m, zs - _lse(zs, m)[:, None], -np.inf)
        log_qj = np.where(m, zt - _lse(zt, m)[:, None], -np.inf)
        lows.append(t2 * _xlogy_ratio(log_qj, log_pj, m))
    return {"high": high, "low": lows, "mass_t": np.exp(log_bt)}


def rank_mask(t, k: int, strategy: str = "best") -> np.ndarray:
    """Boolean mask of the teacher's k largest (`best`) or k smallest (`worst`) logits."""
    t = np.asarray(t, np.float64)
    order = np.argsort(-t if strategy == "best" else t, axis=-1, kind="stable")
    mask = np.zeros(t.shape, dtype=bool)
    np.put_along_axis(mask, order[:, :k], True, axis=-1)
    return mask


def kd(s, t, temperature: float = 4.0, do_standardize: bool = False):
    """Hinton KD: T^2 KL(q || p) per sample."""
    zs, zt = _prepare(s, t, temperature, do_standardize)
    log_p = zs - _lse(zs)[:, None]
    log_q = zt - _lse(zt)[:, None]
    loss = temperature**2 * _xlogy_ratio(log_q, log_p, np.ones_like(zt, dtype=bool))
    return loss, {"kd_loss": loss}


def dkd(s, t, labels, alpha=1.0, beta=8.0, temperature=4.0, do_standardize=False):
    """DKD: alpha * TCKD + beta * NCKD over {label} / rest."""
    t = np.asarray(t, np.float64)
    gt = np.arange(t.shape[-1])[None, :] == np.asarray(labels).reshape(-1, 1)
    terms = partition_terms(s, t, [gt, ~gt], temperature, do_standardize)
    tckd, nckd = terms["high"], terms["low"][1]
    return alpha * tckd + beta * nckd, {"tckd_loss": tckd, "nckd_loss": nckd}


def _gdkd_parts(s, t, masks, temperature, do_standardize):
    terms = partition_terms(s, t, masks, temperature, do_standardize)
    parts = {
        "high_loss": terms["high"],
        "low_top_loss": terms["low"][-2],
        "low_other_loss": terms["low"][-1],
    }
    return parts, terms["mass_t"]


def gdkd(s, t, k=5, w0=1.0, w1=1.0, w2=8.0, temperature=4.0, strategy="best",
         do_standardize=False):  # fmt: skip
    """GDKD: w0 high + w1 low(top-k) + w2 low(rest); top-k from the raw teacher logits."""
    top = rank_mask(t, k, strategy)
    parts, _ = _gdkd_parts(s, t, [top, ~top], temperature, do_standardize)
    loss = w0 * parts["high_loss"] + w1 * parts["low_top_loss"] + w2 * parts["low_other_loss"]
    return loss, parts


def gdkd3(s, t, k=4, w0=1.0, w1=1.0, w2=8.0, temperature=4.0, do_standardize=False):
    """GDKD3: sets {top-1}, {top-2..k}, rest; three-way high term, no within-top-1 term."""
    top1, topk = rank_mask(t, 1), rank_mask(t, k)
    parts, _ = _gdkd_parts(s, t, [top1, topk & ~top1, ~topk], temperature, do_standardize)
    loss = w0 * parts["high_loss"] + w1 * parts["low_top_loss"] + w2 * parts["low_other_loss"]
    return loss, parts


def _dynamic(s, t, k, w0, top, other, scale_top, scale_other, temperature, do_standardize):
    mask = rank_mask(t, k)
    parts, mass = _gdkd_parts(s, t, [mask, ~mask], temperature, do_standardize)
    top_w = top * mass[:, 0] if scale_top else top
    other_w = other * mass[:, 1] if scale_other else other
    loss = w0 * parts["high_loss"] + top_w * parts["low_top_loss"]
    return loss + other_w * parts["low_other_loss"], parts


def gdkd_v1(s, t, k=5, m1=1.0, m2=1.0, w0=1.0, temperature=4.0, do_standardize=False):
    """V1: w0 high + m1 b_t[top] low_top + m2 b_t[other] low_other (per sample)."""
    return _dynamic(s, t, k, w0, m1, m2, True, True, temperature, do_standardize)


def gdkd_v2(s, t, k=5, w1=1.0, m2=1.0, w0=1.0, temperature=4.0, do_standardize=False):
    """V2: w0 high + w1 low_top + m2 b_t[other] low_other."""
    return _dynamic(s, t, k, w0, w1, m2, False, True, temperature, do_standardize)


def gdkd_v3(s, t, k=5, m1=1.0, w2=8.0, w0=1.0, temperature=4.0, do_standardize=False):
    """V3: w0 high + m1 b_t[top] low_top + w2 low_other."""
    return _dynamic(s, t, k, w0, m1, w2, True, False, temperature, do_standardize)


def gradient_wrt_student(s, t, masks, weights, temperature: float) -> np.ndarray:
    """Closed-form gradient of the batch-mean partition loss with respect to `s`.

    For class i in set j: T * (w0 p^(j)_i (b_s[j] - b_t[j]) + w_j (p^(j)_i - q^(j)_i)) / batch,
    with `weights = (w0, w_1, ..., w_m)` constants (no standardization).
    """
    zs, zt = _prepare(s, t, temperature, False)
    p = np.exp(zs - _lse(zs)[:, None])
    q = np.exp(zt - _lse(zt)[:, None])
    grad = np.zeros_like(zs)
    for m, w in zip(masks, weights[1:]):
        bs = np.where(m, p, 0.0).sum(-1, keepdims=True)
        bt = np.where(m, q, 0.0).sum(-1, keepdims=True)
        pj = np.exp(zs - _lse(zs, m)[:, None])
        qj = np.exp(zt - _lse(zt, m)[:, None])
        grad += np.where(m, temperature * (weights[0] * pj * (bs - bt) + w * (pj - qj)), 0.0)
    return grad / zs.shape[0]


def _pearson(a: np.ndarray, b: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Pearson correlation of matching rows: the cosine of the centred rows, eps in the norms."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + eps)


def dist(s, t, beta=2.0, gamma=2.0, temperature=4.0):
    """DIST (Huang et al. 2022): beta * T^2 * inter + gamma * T^2 * intra.

    inter = 1 - mean over samples of pearson(p_i, q_i); intra = the same over the columns (the
    classes across the batch). The batch-level intra term is given to every sample, so the
    per-sample mean is the loss.
    """
    s, t = _prepare(s, t, temperature, False)
    p = np.exp(s - _lse(s)[:, None])
    q = np.exp(t - _lse(t)[:, None])
    inter = temperature**2 * (1.0 - _pearson(p, q))
    intra = temperature**2 * (1.0 - _pearson(p.T, q.T).mean()) * np.ones(len(s))
    return beta * inter + gamma * intra, {"inter_loss": inter, "intra_loss": intra}
