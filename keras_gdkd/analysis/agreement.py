"""How closely a student follows its teacher: top-1 agreement, KL and its GDKD decomposition.

Notation: `p = softmax(s/T)`, `q = softmax(t/T)`; the GDKD partition is the teacher's top-k `U1`
(from the raw teacher logits) and the rest `U2`, with teacher masses `b_t`, `b_o` and
within-set distributions `p_hat`, `q_hat`. Every KL is `KL(teacher || student)` and comes from
`keras_gdkd.losses.partition`, the loss's own log-space arithmetic, in float32 chunks of
`batch_size` rows; dataset means are float64.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_gdkd.analysis import logits as L
from keras_gdkd.losses import partition as P

PARTITIONS = ("target", "top1", "topk")
_STRUCTURE_FIELDS = ("teacher_dominance", "teacher_entropy", "student_kl_other")
_NEG = -1e30  # a finite stand-in for -inf: exp() of it is exactly 0


def _kl(s_z, t_z):
    """Per-row `KL(softmax(t_z) || softmax(s_z))` from log-softmax, independent of any partition."""
    log_q = ops.log_softmax(t_z, axis=-1)
    return ops.sum(ops.exp(log_q) * (log_q - ops.log_softmax(s_z, axis=-1)), axis=-1)


def _temperature_terms(s, t, topk, temperature: float) -> dict:
    s_z, t_z = s / temperature, t / temperature
    high, (top, other), b_t = P.kl_terms(s_z, t_z, topk)
    kl = _kl(s_z, t_z)
    residual = ops.abs(kl - (high + b_t[:, 0] * top + b_t[:, 1] * other))
    return {"kl": kl, "kl_high": high, "kl_top": top, "kl_other": other, "residual": residual}


def _structure_terms(s_z, t_z, masks) -> dict:
    """Per-row structure of the teacher (and the student's fit) within the rest set `U2`.

    `teacher_entropy` is the unnormalised `H(q_hat_U2)` here; the caller divides by
    `log(rest_size)`.
    """
    rest = masks[1]
    _, log_within = P.log_partition(t_z, masks)
    _, (_, kl_other), _ = P.kl_terms(s_z, t_z, masks)
    return {
        "teacher_dominance": ops.exp(ops.max(ops.where(rest, log_within, _NEG), axis=-1)),
        "teacher_entropy": -ops.sum(ops.where(rest, ops.exp(log_within) * log_within, 0.0), -1),
        "rest_size": ops.sum(ops.cast(rest, "int32"), axis=-1),
        "student_kl_other": kl_other,
    }


def agreement_stats(
    student_logits,
    teacher_logits,
    labels=None,
    *,
    k: int = 5,
    w0: float = 1.0,
    w1: float = 1.0,
    w2: float = 8.0,
    temperature: float = 4.0,
    temperatures=(1.0, 4.0),
    batch_size: int = L.DEFAULT_BATCH_SIZE,
) -> dict:
    """Agreement of a student with its teacher, and the GDKD decomposition of their KL.

    - `student_top1 = mean[argmax s = y]`, `teacher_top1 = mean[argmax t = y]` (`None` without
      labels); `top1_agreement = mean[argmax s = argmax t]` (Stanton et al. 2021's "top-1
      agreement"); `topk_overlap = mean |top_k(s) & top_k(t)| / k`.
    - `per_temperature[temperature_key(T)]` for each T in `temperatures`: `kl = mean KL(q || p)`
      (nats, no `T^2`; Stanton et al.'s "predictive KL" at T = 1); `kl_high = mean KL(b_t || b_s)`,
      `kl_top = mean KL(q_hat_U1 || p_hat_U1)`, `kl_other = mean KL(q_hat_U2 || p_hat_U2)`; and
      `decomposition_residual = max_n |kl - (high + b_t top + b_o other)|`, a self-check of the
      exact identity (float32 round-off only, about 1e-6 (1 + kl)).
    - At the loss temperature: `gdkd_terms = {high_loss, low_top_loss, low_other_loss}`, the
      `T^2`-scaled means the Distiller logs, `gdkd_loss = w0 high + w1 low_top + w2 low_other`,
      and with labels `dkd_terms = {tckd_loss, nckd_loss}` (partition `{y}` / rest; else `None`).
    - `non_top_structure[partition][subset]` at the loss temperature, for the partitions
      `target` (`{y}` / rest; `None` without labels), `top1` and `topk`, on the subsets `all`
      and `argmax_ne_label` (samples with `argmax t != y`; `None` without labels):
      `teacher_dominance = mean max_{U2} q_hat`, `teacher_entropy = mean H(q_hat_U2) / log|U2|`
      (NaN when `|U2| = 1`), `student_kl_other = mean KL(q_hat_U2 || p_hat_U2)`, and
      `num_samples`. A dominant teacher class left inside the rest set (DKD's partition when the
      teacher is wrong) shows as a high dominance. An empty subset gives NaN means.

    Args:
        student_logits: shape `(N, C)`.
        teacher_logits: shape `(N, C)`.
        labels: integer class indices `(N,)`, or `None`.
        k: the loss's top-k size, `1 <= k < C`.
        w0, w1, w2: the GDKD weights, finite and >= 0.
        temperature: the loss temperature.
        temperatures: the temperatures of `per_temperature`.
        batch_size: rows per chunk.

    Returns:
        A JSON-ready dict with the keys `num_samples`, `num_classes`, `k`, `temperature`,
        `weights` (`{w0, w1, w2}`), `student_top1`, `teacher_top1`, `top1_agreement`,
        `topk_overlap`, `per_temperature`, `gdkd_terms`, `gdkd_loss`, `dkd_terms`,
        `non_top_structure` and `per_sample` (`kl`: `{temperature_key(T): (N,)}`, `gdkd_loss`:
        `(N,)` weighted and `T^2`-scaled).
    """
    s, t, y = L.as_pair(student_logits, teacher_logits, labels)
    n, num_classes = t.shape
    k = P.validate_k(k, num_classes)
    w0, w1, w2 = (P.validate_weight(name, v) for name, v in (("w0", w0), ("w1", w1), ("w2", w2)))
    temperature = P.validate_temperature(temperature)
    temperatures = [P.validate_temperature(v) for v in temperatures]
    t2 = temperature**2

    def kernel(s_c, t_c, y_c):
        topk_t, topk_s = P.topk_masks(t_c, (k,)), P.topk_masks(s_c, (k,))
        both = ops.logical_and(topk_t[0], topk_s[0])
        out = {
            "s_argmax": ops.argmax(s_c, axis=-1),
            "t_argmax": ops.argmax(t_c, axis=-1),
            "overlap": ops.sum(ops.cast(both, "int32"), axis=-1),
        }
        for temp in dict.fromkeys([*temperatures, temperature]):
            for name, v in _temperature_terms(s_c, t_c, topk_t, temp).items():
                out[f"{name}@{temp!r}"] = v
        s_z, t_z = s_c / temperature, t_c / temperature
        partitions = {"top1": P.topk_masks(t_c, (1,)), "topk": topk_t}
        if y_c is not None:
            partitions["target"] = P.label_masks(y_c, num_classes)
            high, (_, nckd), _ = P.kl_terms(s_z, t_z, partitions["target"])
            out["tckd"], out["nckd"] = high, nckd
        for part, masks in partitions.items():
            for name, v in _structure_terms(s_z, t_z, masks).items():
                out[f"{part}:{name}"] = v
        return out

    col = L.map_chunks(kernel, [s, t, y], batch_size)
    col["overlap"] = col["overlap"] / k
    for part in PARTITIONS:
        if f"{part}:rest_size" in col:
            # log|U2| is 0 for a one-class rest set: the normalised entropy is then NaN.
            with np.errstate(invalid="ignore", divide="ignore"):
                col[f"{part}:teacher_entropy"] = col[f"{part}:teacher_entropy"].astype(
                    "float64"
                ) / np.log(col.pop(f"{part}:rest_size").astype("float64"))

    agree = col["s_argmax"] == col["t_argmax"]
    terms = {
        "high_loss": t2 * col[f"kl_high@{temperature!r}"].astype("float64"),
        "low_top_loss": t2 * col[f"kl_top@{temperature!r}"].astype("float64"),
        "low_other_loss": t2 * col[f"kl_other@{temperature!r}"].astype("float64"),
    }
    gdkd_loss = w0 * terms["high_loss"] + w1 * terms["low_top_loss"] + w2 * terms["low_other_loss"]
    result = {
        "num_samples": int(n),
        "num_classes": int(num_classes),
        "k": k,
        "temperature": temperature,
        "weights": {"w0": w0, "w1": w1, "w2": w2},
        "student_top1": None if y is None else L.safe_mean(col["s_argmax"] == y),
        "teacher_top1": None if y is None else L.safe_mean(col["t_argmax"] == y),
        "top1_agreement": L.safe_mean(agree),
        "topk_overlap": L.safe_mean(col["overlap"]),
        "per_temperature": {
            L.temperature_key(temp): {
                "temperature": temp,
                "kl": L.safe_mean(col[f"kl@{temp!r}"]),
                "kl_high": L.safe_mean(col[f"kl_high@{temp!r}"]),
                "kl_top": L.safe_mean(col[f"kl_top@{temp!r}"]),
                "kl_other": L.safe_mean(col[f"kl_other@{temp!r}"]),
                "decomposition_residual": float(col[f"residual@{temp!r}"].max()),
            }
            for temp in temperatures
        },
        "gdkd_terms": {name: L.safe_mean(v) for name, v in terms.items()},
        "gdkd_loss": L.safe_mean(gdkd_loss),
        "dkd_terms": None
        if y is None
        else {
            "tckd_loss": L.safe_mean(t2 * col["tckd"].astype("float64")),
            "nckd_loss": L.safe_mean(t2 * col["nckd"].astype("float64")),
        },
        "non_top_structure": _structure_summary(col, y),
        "per_sample": {
            "kl": {L.temperature_key(temp): col[f"kl@{temp!r}"] for temp in temperatures},
            "gdkd_loss": gdkd_loss.astype("float32"),
        },
    }
    return result


def _structure_summary(col: dict, y) -> dict:
    subsets = {"all": slice(None)}
    if y is not None:
        subsets["argmax_ne_label"] = col["t_argmax"] != y
    out = {}
    for part in PARTITIONS:
        if part == "target" and y is None:
            out[part] = None
            continue
        out[part] = {"all": None, "argmax_ne_label": None}
        for subset, rows in subsets.items():
            stats = {name: L.safe_mean(col[f"{part}:{name}"][rows]) for name in _STRUCTURE_FIELDS}
            stats["num_samples"] = int(np.ones_like(col["t_argmax"])[rows].sum())
            out[part][subset] = stats
    return out
