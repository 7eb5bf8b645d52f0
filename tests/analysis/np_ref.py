"""Float64 NumPy references for the analyses, written independently of keras_gdkd.

Besides the plain formulas, three functions restate the authors' loops: `calc_topk` (GDKD's
automatic top-k rule, `GDKDAutok.calc_topk`), `corr_output_metric` (GDKD's
`tools/visualizations/corr.py::get_output_metric`: class means of softmax(z/T)) and
`mdistiller_output_metric` (DKD's correlation notebook: class means of the raw logits).
"""

from __future__ import annotations

import numpy as np


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype="float64")
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(z: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(z))


def logsumexp(z: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    z = np.asarray(z, dtype="float64")
    if mask is not None:
        z = np.where(mask, z, -np.inf)
    top = z.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(z - top).sum(axis=-1, keepdims=True)))[..., 0]


def topk_mask(t: np.ndarray, k: int) -> np.ndarray:
    """Boolean (N, C): the k largest entries of each row."""
    order = np.argsort(-np.asarray(t, dtype="float64"), axis=-1, kind="stable")[:, :k]
    mask = np.zeros(t.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask


def label_mask(labels: np.ndarray, num_classes: int) -> np.ndarray:
    return np.arange(num_classes)[None, :] == np.asarray(labels)[:, None]


# --- teacher ----------------------------------------------------------------------------------


def topk_mass(t: np.ndarray, temperature: float) -> np.ndarray:
    """(N, C): column k-1 is the mass of the top-k probabilities (sort, then cumsum)."""
    q = softmax(np.asarray(t, dtype="float64") / temperature)
    return np.cumsum(-np.sort(-q, axis=-1), axis=-1)


def entropy(t: np.ndarray, temperature: float) -> np.ndarray:
    log_q = log_softmax(np.asarray(t, dtype="float64") / temperature)
    return -(np.exp(log_q) * log_q).sum(axis=-1)


def log10_other_mass(t: np.ndarray, temperature: float, k: int) -> np.ndarray:
    z = np.asarray(t, dtype="float64") / temperature
    rest = ~topk_mask(t, k)
    return (logsumexp(z, rest) - logsumexp(z)) / np.log(10.0)


def calc_topk(probs: np.ndarray, topk_th: int, ratio_th: float) -> np.ndarray:
    """The authors' loop, with the class count read from the data instead of a literal 100."""
    num_classes = probs.shape[1]
    x = np.arange(1, num_classes + 1)
    probs = np.sort(probs, axis=1)
    cumavg = np.cumsum(probs, axis=1) / x
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = probs / cumavg
    topk_arr = []
    for r in ratio:
        idx = np.nonzero(r >= ratio_th)[0]
        topk = num_classes - idx[0] if len(idx) else 1
        topk_arr.append(min(topk, topk_th))
    return np.asarray(topk_arr)


def prebuild_topk(t, labels, num_classes, temperature, topk_th, ratio_th) -> np.ndarray:
    """Per-class k as the authors' per-class GDKD builds it: calc_topk of each class mean.

    A class without samples gets -1 (the authors' code would divide by zero there).
    """
    q = softmax(np.asarray(t, dtype="float64") / temperature)
    present = [c for c in range(num_classes) if (labels == c).any()]
    means = np.stack([q[labels == c].mean(axis=0) for c in present])
    out = np.full(num_classes, -1)
    out[present] = calc_topk(means, topk_th, ratio_th)
    return out


def n_within(t: np.ndarray, temperature: float, ratio: float) -> np.ndarray:
    q = softmax(np.asarray(t, dtype="float64") / temperature)
    return (q >= q.max(axis=-1, keepdims=True) / ratio).sum(axis=-1)


# --- partitions -------------------------------------------------------------------------------


def partition_terms(s, t, top, temperature: float) -> dict:
    """Per-sample masses, within-set distributions and KLs for the partition [top, ~top]."""
    p = softmax(np.asarray(s, dtype="float64") / temperature)
    q = softmax(np.asarray(t, dtype="float64") / temperature)
    out = {"p": p, "q": q, "kl": (q * (np.log(q) - np.log(p))).sum(axis=-1)}
    b_s = np.stack([(p * top).sum(-1), (p * ~top).sum(-1)], axis=-1)
    b_t = np.stack([(q * top).sum(-1), (q * ~top).sum(-1)], axis=-1)
    set_s = np.where(top, b_s[:, :1], b_s[:, 1:])
    set_t = np.where(top, b_t[:, :1], b_t[:, 1:])
    p_hat, q_hat = p / set_s, q / set_t
    within = q_hat * (np.log(q_hat) - np.log(p_hat))
    out.update(
        b_s=b_s,
        b_t=b_t,
        p_hat=p_hat,
        q_hat=q_hat,
        high=(b_t * (np.log(b_t) - np.log(b_s))).sum(-1),
        low_top=np.where(top, within, 0.0).sum(-1),
        low_other=np.where(~top, within, 0.0).sum(-1),
    )
    return out


def gradients(s, t, top, temperature: float) -> dict:
    """Gradients w.r.t. the raw student logits of the T^2-scaled per-sample terms.

    From method.md: for class i in set j, `d/ds_i T^2 KL(b_t||b_s) = T p_hat_i (b_s[j] - b_t[j])`,
    the within-set terms give `T (p_hat_i - q_hat_i)` on their own set, and KD `T (p_i - q_i)`.
    """
    r = partition_terms(s, t, top, temperature)
    gap = r["b_s"] - r["b_t"]
    set_gap = np.where(top, gap[:, :1], gap[:, 1:])
    low = temperature * (r["p_hat"] - r["q_hat"])
    return {
        "high": temperature * r["p_hat"] * set_gap,
        "low_top": np.where(top, low, 0.0),
        "low_other": np.where(~top, low, 0.0),
        "kd": temperature * (r["p"] - r["q"]),
        "b_t": r["b_t"],
        "b_s": r["b_s"],
    }


def rest_structure(s, t, top, temperature: float) -> dict:
    """Per-sample dominance, normalised entropy and student KL of the teacher within ~top."""
    r = partition_terms(s, t, top, temperature)
    rest = ~top
    q_hat = np.where(rest, r["q_hat"], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(rest, q_hat * np.log(q_hat), 0.0).sum(-1)
    return {
        "teacher_dominance": q_hat.max(-1),
        "teacher_entropy": h / np.log(rest.sum(-1)),
        "student_kl_other": r["low_other"],
    }


# --- class means ------------------------------------------------------------------------------


def corr_output_metric(logits, labels, T, num_classes):
    """GDKD corr.py's get_output_metric on arrays already loaded from the npz dump."""
    preds = softmax(np.asarray(logits, dtype="float64") / T)
    matrix = np.zeros((num_classes, num_classes))
    cnt = np.zeros((num_classes, 1))
    for p, lab in zip(preds, labels):
        cnt[lab, 0] += 1
        matrix[lab] += p
    matrix /= cnt
    return matrix


def mdistiller_output_metric(logits, labels, num_classes):
    """mdistiller's correlation notebook: the same loop over the raw logits."""
    matrix = np.zeros((num_classes, num_classes))
    cnt = np.zeros((num_classes, 1))
    for p, lab in zip(np.asarray(logits, dtype="float64"), labels):
        cnt[lab, 0] += 1
        matrix[lab] += p
    matrix /= cnt
    return matrix
