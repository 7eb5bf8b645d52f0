"""Closed-form gradients of KD and of the GDKD terms w.r.t. the student's raw logits.

For a two-set partition `U1` / `U2` of the classes (the teacher's top-k and the rest, or `{y}` and
the rest as in DKD), with `p = softmax(s/T)`, `q = softmax(t/T)`, set masses `b_s`, `b_t` and
within-set distributions `p_hat`, `q_hat`, the gradients of the per-sample (`reduction="sum"`),
`T^2`-scaled, unweighted terms for a class `i` in set `j(i)` are

    high_i      = T * p_hat_i * (b_s[j(i)] - b_t[j(i)])       (T^2 KL(b_t || b_s))
    low_top_i   = T * (p_hat_i - q_hat_i) * [i in U1]         (T^2 KL(q_hat_U1 || p_hat_U1))
    low_other_i = T * (p_hat_i - q_hat_i) * [i in U2]         (T^2 KL(q_hat_U2 || p_hat_U2))
    kd_i        = T * (p_i - q_i)                             (T^2 KL(q || p))

and `kd = high + b_t[1] * low_top + b_t[2] * low_other` exactly: KD is the partition loss whose
leaf weights are the teacher's own masses. GDKD's fixed `w2` therefore scales KD's non-top leaf
gradient by `w2 / b_o` (`b_o = b_t[2]`), which is large where the teacher is confident. A
batch-mean loss divides every gradient by N; the shares below do not change.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

from keras_gdkd.analysis import logits as L
from keras_gdkd.losses import partition as P

PARTITIONS = ("topk", "top1", "target")
GRADIENT_NAMES = ("high", "low_top", "low_other", "kd")


def _masks(partition: str, t, y, k: int, num_classes: int) -> list:
    if partition == "topk":
        return P.topk_masks(t, (k,))
    if partition == "top1":
        return P.topk_masks(t, (1,))
    return P.label_masks(y, num_classes)


def _check(partition, student_logits, teacher_logits, labels, k, temperature) -> tuple:
    if partition not in PARTITIONS:
        raise ValueError(f"partition must be one of {PARTITIONS}; got {partition!r}.")
    s, t, y = L.as_pair(student_logits, teacher_logits, labels)
    if partition == "target" and y is None:
        raise ValueError("partition='target' (the DKD partition {label} / rest) needs labels.")
    k = P.validate_k(k, t.shape[1]) if partition == "topk" else 1
    return s, t, y, k, P.validate_temperature(temperature)


def _gradient_kernel(partition: str, k: int, temperature: float):
    """A chunk kernel: the four gradients (rows, C), the log-masses (rows, 2), the top mask."""

    def kernel(s, t, y):
        return _gradients(s, t, _masks(partition, t, y, k, t.shape[-1]), temperature)

    return kernel


def _gradients(s, t, masks, temperature: float) -> dict:
    s_z, t_z = s / temperature, t / temperature
    log_bs, log_ws = P.log_partition(s_z, masks)
    log_bt, log_wt = P.log_partition(t_z, masks)
    mass_gap = ops.exp(log_bs) - ops.exp(log_bt)
    set_gap = ops.where(masks[0], mass_gap[:, :1], mass_gap[:, 1:])
    p_hat = ops.exp(log_ws)
    low = temperature * (p_hat - ops.exp(log_wt))
    out = {
        "high": temperature * p_hat * set_gap,
        "low_top": ops.where(masks[0], low, 0.0),
        "low_other": ops.where(masks[1], low, 0.0),
        "kd": temperature * (ops.softmax(s_z, axis=-1) - ops.softmax(t_z, axis=-1)),
        "log_student_mass": log_bs,
        "log_teacher_mass": log_bt,
        "top_mask": masks[0],
    }
    return out


def logit_gradients(
    student_logits,
    teacher_logits,
    labels=None,
    *,
    partition: str = "topk",
    k: int = 5,
    temperature: float = 4.0,
    batch_size: int = L.DEFAULT_BATCH_SIZE,
) -> dict:
    """Per-sample gradients of KD and of the decoupled terms w.r.t. the raw student logits.

    The closed forms of the module docstring: per-sample sums (`reduction="sum"`), `T^2`
    included, unweighted; the same quantities as the authors' gradient dumps (GDKD_debug /
    DKDMod_debug).

    Args:
        student_logits: shape `(N, C)`.
        teacher_logits: shape `(N, C)`.
        labels: integer class indices `(N,)`; needed for `partition="target"`.
        partition: `"topk"` (the teacher's top-k / rest, GDKD), `"top1"` (`k = 1`) or
            `"target"` (`{y}` / rest, DKD: `high` is TCKD's gradient and `low_other` NCKD's;
            `low_top` is 0, a one-class set has no within-set term).
        k: the top-k size for `"topk"`, `1 <= k < C`.
        temperature: `T`, finite and > 0.
        batch_size: rows per chunk.

    Returns:
        `{"high", "low_top", "low_other", "kd"}`: float32 arrays `(N, C)`; `masks`: the two
        boolean masks `[U1, U2]`, each `(N, C)`; `teacher_mass` and `student_mass`: float32
        `(N, 2)` holding `[b(U1), b(U2)]`.
    """
    s, t, y, k, temperature = _check(
        partition, student_logits, teacher_logits, labels, k, temperature
    )
    col = L.map_chunks(_gradient_kernel(partition, k, temperature), [s, t, y], batch_size)
    top = col["top_mask"].astype(bool)
    out = {name: col[name].astype("float32") for name in GRADIENT_NAMES}
    out["masks"] = [top, ~top]
    out["teacher_mass"] = np.exp(col["log_teacher_mass"]).astype("float32")
    out["student_mass"] = np.exp(col["log_student_mass"]).astype("float32")
    return out


def _leaf_weight(name: str, value, log_mass: np.ndarray) -> tuple:
    """`(per-sample weight (N, 1) float64, log10 of weight / teacher mass (N,))`."""
    if isinstance(value, str):
        if value != "teacher":
            raise ValueError(f"{name} must be a number >= 0 or 'teacher'; got {value!r}.")
        return np.exp(log_mass)[:, None], np.zeros(len(log_mass))
    value = P.validate_weight(name, value)
    with np.errstate(divide="ignore"):  # a zero weight has log10 -inf: no amplification at all
        log10_amp = (math.log(value) - log_mass) / math.log(10.0) if value else -np.inf
    return np.full((len(log_mass), 1), value), np.broadcast_to(log10_amp, log_mass.shape).copy()


def _share_stats(g, other, leaf) -> dict:
    """Per-sample shares of one gradient `g` (N, C) with the rest mask `other`."""
    sq = g * g
    total = sq.sum(axis=1)
    other_sq = np.where(other, sq, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):  # g = 0 (s = t + c): the share is NaN
        return {
            "share_other": other_sq / total,
            "leaf_other_share": (leaf * leaf).sum(axis=1) / total,
            "net_other": np.where(other, g, 0.0).sum(axis=1),
            "_other_sq": other_sq,
            "_leaf_sq": (leaf * leaf).sum(axis=1),
            "_total_sq": total,
        }


def gradient_shares(
    student_logits,
    teacher_logits,
    labels=None,
    *,
    k: int = 5,
    w0: float = 1.0,
    w1: float | str = 1.0,
    w2: float | str = 8.0,
    temperature: float = 4.0,
    partition: str = "topk",
    batch_size: int = L.DEFAULT_BATCH_SIZE,
) -> dict:
    """How much of the distillation gradient lands on the non-top classes, KD vs GDKD.

    Compares `g_kd = kd` with `g_gdkd = w0 high + w1 low_top + w2 low_other` (the gradients of
    `logit_gradients`). `w1="teacher"` / `w2="teacher"` use the teacher's masses `b_t` / `b_o`
    per sample, so `w0=1, w1="teacher", w2="teacher"` is exactly KD. Per sample, for each g:

    - `share_other = sum_{U2} g^2 / sum g^2`;
    - `leaf_other_share = ||c low_other||^2 / ||g||^2`, with `c = b_o` for KD and `w2` for GDKD;
    - `net_other = sum_{U2} g` (`= T w0 (b_s[U2] - b_t[U2])`: the leaves sum to 0).

    and `amplification_other = w2 / b_o`, `amplification_top = w1 / b_t`: how much GDKD scales
    KD's leaf gradients (1 for a `"teacher"` weight). The ratios are NaN for a sample whose
    gradient is exactly 0 (`s = t + c`); summaries leave those out.

    Args:
        student_logits: shape `(N, C)`.
        teacher_logits: shape `(N, C)`.
        labels: integer class indices `(N,)`; needed for `partition="target"`.
        k: the top-k size, `1 <= k < C` (used by `partition="topk"`).
        w0: weight of the top-level term, >= 0.
        w1: weight of the within-U1 term, >= 0, or `"teacher"`.
        w2: weight of the within-U2 term, >= 0, or `"teacher"`.
        temperature: `T`, finite and > 0.
        partition: `"topk"`, `"top1"` or `"target"`, as for `logit_gradients`.
        batch_size: rows per chunk.

    Returns:
        A JSON-ready dict with the keys `num_samples`, `partition`, `k`, `temperature`,
        `weights` (`{w0, w1, w2}`, a weight may be `"teacher"`), `kd` and `gdkd` (each
        `{"share_other", "leaf_other_share", "net_other"}`: a summary `{mean, std, q10, median,
        q90}`, the two shares with `pooled = sum_n num / sum_n den` too), `amplification_other`,
        `amplification_top`, `log10_amplification_other` (summaries) and `per_sample`:
        `{"kd": {...}, "gdkd": {...}}` (the three per-sample arrays each),
        `amplification_other`, `amplification_top`, all `(N,)` float64.

    Example:

    ```python
    shares = gradient_shares(s, t, k=5, w0=1.0, w1=2.0, w2=8.0, temperature=4.0)
    shares["gdkd"]["share_other"]["median"], shares["kd"]["share_other"]["median"]
    ```
    """
    s, t, y, k, temperature = _check(
        partition, student_logits, teacher_logits, labels, k, temperature
    )
    w0 = P.validate_weight("w0", w0)
    for name, value in (("w1", w1), ("w2", w2)):
        _leaf_weight(name, value, np.zeros(0))  # validate before any work

    def reduce_rows(g, rows):
        # Squares and sums in float64: the squares of tiny gradients would underflow in float32.
        g = {name: v.astype("float64") for name, v in g.items()}
        other = ~g["top_mask"].astype(bool)
        log_bt = g["log_teacher_mass"]
        c1, amp_top = _leaf_weight("w1", w1, log_bt[:, 0])
        c2, amp_other = _leaf_weight("w2", w2, log_bt[:, 1])
        b_o = np.exp(log_bt[:, 1:])
        gdkd = w0 * g["high"] + c1 * g["low_top"] + c2 * g["low_other"]
        out = {"log10_amplification_other": amp_other, "log10_amplification_top": amp_top}
        for method, grad, leaf in (
            ("kd", g["kd"], b_o * g["low_other"]),
            ("gdkd", gdkd, c2 * g["low_other"]),
        ):
            for name, v in _share_stats(grad, other, leaf).items():
                out[f"{method}/{name}"] = v
        return out

    acc = L.map_chunks(
        _gradient_kernel(partition, k, temperature), [s, t, y], batch_size, post=reduce_rows
    )

    result = {
        "num_samples": int(len(t)),
        "partition": partition,
        "k": k,
        "temperature": temperature,
        "weights": {
            "w0": w0,
            "w1": w1 if isinstance(w1, str) else float(w1),
            "w2": w2 if isinstance(w2, str) else float(w2),
        },
    }
    per_sample: dict = {}
    for method in ("kd", "gdkd"):
        arrays = {
            name: acc[f"{method}/{name}"]
            for name in ("share_other", "leaf_other_share", "net_other")
        }
        total = acc[f"{method}/_total_sq"].sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            pooled_other = acc[f"{method}/_other_sq"].sum() / total
            pooled_leaf = acc[f"{method}/_leaf_sq"].sum() / total
        result[method] = {
            "share_other": {**L.summarize(arrays["share_other"]), "pooled": float(pooled_other)},
            "leaf_other_share": {
                **L.summarize(arrays["leaf_other_share"]),
                "pooled": float(pooled_leaf),
            },
            "net_other": L.summarize(arrays["net_other"]),
        }
        per_sample[method] = arrays
    log10_other = acc["log10_amplification_other"]
    log10_top = acc["log10_amplification_top"]
    with np.errstate(over="ignore"):  # b_o below 1e-308: an infinite amplification
        per_sample["amplification_other"] = 10.0**log10_other
        per_sample["amplification_top"] = 10.0**log10_top
    result["amplification_other"] = L.summarize(per_sample["amplification_other"])
    result["amplification_top"] = L.summarize(per_sample["amplification_top"])
    result["log10_amplification_other"] = L.summarize(log10_other)
    result["per_sample"] = per_sample
    return result
