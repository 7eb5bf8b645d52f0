"""The teacher's predictive distribution: how much mass its top-k holds, its entropy, and k rules.

Notation: `q = softmax(t / T)` for teacher logits `t`; `U1` is the teacher's top-k set taken from
the raw logits (as the GDKD loss does) and `U2` the rest, with masses `b_t = sum_{U1} q` and
`b_o = sum_{U2} q`. Per-row work runs in `keras.ops` float32 in chunks of `batch_size` rows and
in log space (`b_o` is exact even where `1 - b_t` rounds to 0); dataset means and quantiles are
taken in NumPy float64.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from keras import ops

from keras_gdkd.analysis import logits as L
from keras_gdkd.losses import partition as P

_LN10 = math.log(10.0)
# Up to this many classes every k gets top-k mass quantiles: the top-k mass figure draws
# k = 1..min(C, 50), and its q10-q90 band should cover the whole curve.
DENSE_QUANTILE_MAX_CLASSES = 50


def _check_ratio(name: str, value: float, minimum: float) -> float:
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not real or not math.isfinite(value) or value < minimum or value <= 0:
        raise ValueError(f"{name} must be a finite number >= {minimum} and > 0; got {value!r}.")
    return float(value)


def _check_cap(k_cap, num_classes: int) -> int:
    if k_cap is None:
        return num_classes
    if isinstance(k_cap, bool) or not isinstance(k_cap, numbers.Integral) or k_cap < 1:
        raise ValueError(f"k_cap must be a positive integer or None; got {k_cap!r}.")
    return min(int(k_cap), num_classes)


def _autok_from_probs(probs, ratio_threshold: float, cap: int):
    """The `calc_topk` rule on probability rows (batch, C); a tensor of int32 k."""
    num_classes = probs.shape[-1]
    ascending = ops.sort(probs, axis=-1)
    running_mean = ops.cumsum(ascending, axis=-1) / ops.arange(1, num_classes + 1, dtype="float32")
    # 0/0 (underflowed probabilities) is NaN, and NaN >= threshold is False, as in the authors'
    # PyTorch code.
    hit = ascending / running_mean >= ratio_threshold
    first = ops.argmax(ops.cast(hit, "int32"), axis=-1)
    k = ops.where(ops.any(hit, axis=-1), num_classes - ops.cast(first, "int32"), 1)
    return ops.minimum(k, cap)


def autok(
    teacher_logits,
    temperature: float = 4.0,
    ratio_threshold: float = 2.0,
    k_cap: int | None = None,
    *,
    batch_size: int = L.DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """Per-sample k by the authors' automatic top-k rule (GDKD's `calc_topk`).

    Sort `q = softmax(t/T)` ascending, `q_(1) <= ... <= q_(C)`, and form the ratio of each value
    to the mean of those up to it, `r_i = q_(i) / ((1/i) sum_{j<=i} q_(j))`. With `idx` the
    0-based position of the first `r_i >= ratio_threshold`, `k = C - idx`, or 1 when there is
    none; then `k = min(k, k_cap)`. The scan starts at the *smallest* probability, so k counts
    every class above the first jump of the sorted tail: it is not a count of modes (see
    `n_within` for a top-down count).

    Args:
        teacher_logits: shape `(N, C)`.
        temperature: `T`, finite and > 0 (the authors use the loss temperature).
        ratio_threshold: `rho` (the authors use 2.0).
        k_cap: an upper bound for k (the authors' `TOPK_TH`); `None` for `C`.
        batch_size: rows per chunk.

    Returns:
        int32 array `(N,)` with values in `[1, min(C, k_cap)]`.

    Example:

    ```python
    autok(np.log([[0.5, 0.3, 0.1, 0.05, 0.05]]), temperature=1.0)  # array([2])
    ```
    """
    t = L.as_logits(teacher_logits, "teacher_logits")
    temperature = P.validate_temperature(temperature)
    ratio_threshold = _check_ratio("ratio_threshold", ratio_threshold, 0.0)
    cap = _check_cap(k_cap, t.shape[1])

    def kernel(t_c):
        return {"k": _autok_from_probs(ops.softmax(t_c / temperature), ratio_threshold, cap)}

    return L.map_chunks(kernel, [t], batch_size)["k"].astype("int32")


def _per_class_k_from_sums(sums, counts, ratio_threshold: float, cap: int) -> np.ndarray:
    num_classes = len(counts)
    out = np.full(num_classes, -1, dtype="int32")
    present = counts > 0
    if present.any():
        means = (sums[present] / counts[present, None]).astype("float32")
        out[present] = L.to_numpy(
            _autok_from_probs(ops.convert_to_tensor(means), ratio_threshold, cap)
        )
    return out


def per_class_k(
    teacher_logits,
    labels,
    num_classes: int,
    temperature: float = 4.0,
    ratio_threshold: float = 2.0,
    k_cap: int | None = None,
    *,
    batch_size: int = L.DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """One k per class: the `autok` rule applied to the class mean of `q = softmax(t/T)`.

    `k[c] = autok-rule(mean_{n: y_n = c} q_n)`, as the authors' per-class-k GDKD builds it
    before training. A class with no sample gets -1.

    Args:
        teacher_logits: shape `(N, C)`.
        labels: integer class indices `(N,)`.
        num_classes: `C`.
        temperature, ratio_threshold, k_cap, batch_size: as for `autok`.

    Returns:
        int32 array `(C,)`.
    """
    t = L.as_logits(teacher_logits, "teacher_logits", num_classes)
    y = L.as_labels(labels, len(t), num_classes)
    if y is None:
        raise ValueError("per_class_k needs labels; got None.")
    temperature = P.validate_temperature(temperature)
    ratio_threshold = _check_ratio("ratio_threshold", ratio_threshold, 0.0)
    cap = _check_cap(k_cap, num_classes)
    probs = L.map_chunks(lambda t_c: {"q": ops.softmax(t_c / temperature)}, [t], batch_size)["q"]
    sums = np.zeros((num_classes, num_classes), dtype="float64")
    np.add.at(sums, y, probs.astype("float64"))
    counts = np.bincount(y, minlength=num_classes)
    return _per_class_k_from_sums(sums, counts, ratio_threshold, cap)


def _n_within(z, ratio: float):
    """`#{i : q_i >= max(q) / ratio}` for logits `z = t/T`, compared in log space."""
    gap = z - ops.max(z, axis=-1, keepdims=True)
    return ops.sum(ops.cast(gap >= -math.log(ratio), "int32"), axis=-1)


def n_within(
    teacher_logits,
    temperature: float,
    ratio: float = 2.0,
    *,
    batch_size: int = L.DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """Per-sample number of classes within a factor `ratio` of the teacher's top probability.

    `n = #{i : q_i >= max(q) / ratio}`, i.e. `(t_i - max t) / T >= -ln(ratio)`: a top-down count
    of the classes that compete with the top-1 (1 for a confident teacher).

    Args:
        teacher_logits: shape `(N, C)`.
        temperature: `T`, finite and > 0.
        ratio: a finite number >= 1.
        batch_size: rows per chunk.

    Returns:
        int32 array `(N,)` with values in `[1, C]`.
    """
    t = L.as_logits(teacher_logits, "teacher_logits")
    temperature = P.validate_temperature(temperature)
    ratio = _check_ratio("ratio", ratio, 1.0)
    kernel = lambda t_c: {"n": _n_within(t_c / temperature, ratio)}  # noqa: E731
    return L.map_chunks(kernel, [t], batch_size)["n"].astype("int32")


def _temperature_kernel(temperature, k, ratio_threshold, cap, quantile_ks):
    """Per-row statistics at one temperature, of a chunk of raw teacher logits."""

    def kernel(t_raw):
        z = t_raw / temperature
        log_q = ops.log_softmax(z, axis=-1)
        q = ops.exp(log_q)
        mass = ops.cumsum(ops.flip(ops.sort(q, axis=-1), axis=-1), axis=-1)
        log_mass, _ = P.log_partition(z, P.topk_masks(t_raw, (k,)))
        return {
            "probs": q,
            "topk_mass": mass,
            "topk_mass_at": ops.take(mass, [kq - 1 for kq in quantile_ks], axis=-1),
            "log10_other_mass": log_mass[:, 1] / _LN10,
            # exp(log q) * log q is exactly 0 where q underflows: no 0 * inf.
            "entropy": -ops.sum(q * log_q, axis=-1),
            "autok": _autok_from_probs(q, ratio_threshold, cap),
            "n_within": _n_within(z, ratio_threshold),
        }

    return kernel


def _mass_quantiles(mass_at, quantile_ks) -> dict[str, list[float]]:
    """`{str(k): [q10, q50, q90]}` from the `(N, len(quantile_ks))` top-k masses, in one call."""
    if not quantile_ks:
        return {}
    q = np.quantile(np.asarray(mass_at, dtype="float64"), (0.1, 0.5, 0.9), axis=0)
    return {str(kq): [float(v) for v in q[:, i]] for i, kq in enumerate(quantile_ks)}


def _label_kernel(k):
    def kernel(t_raw, labels):
        top = P.topk_masks(t_raw, (k,))[0]
        gt = P.label_masks(labels, t_raw.shape[-1])[0]
        return {
            "argmax": ops.argmax(t_raw, axis=-1),
            "in_topk": ops.any(ops.logical_and(top, gt), axis=-1),
        }

    return kernel


def teacher_distribution_stats(
    teacher_logits,
    labels=None,
    *,
    k: int = 5,
    temperatures=(1.0, 4.0),
    ratio_threshold: float = 2.0,
    k_cap: int | None = None,
    quantile_ks=(1, 2, 3, 5, 10, 20, 50),
    batch_size: int = L.DEFAULT_BATCH_SIZE,
) -> dict:
    """Summaries of the teacher's predictive distribution at each temperature.

    For each `T` in `temperatures`, under `result["per_temperature"][temperature_key(T)]`:

    - `topk_mass_mean`: list of C floats, `[k-1] = mean_n sum_{top-k} q` for k = 1..C;
    - `topk_mass_quantiles`: `{str(k): [q10, q50, q90]}` of that mass, for the `quantile_ks`
      below C and, when `C <= DENSE_QUANTILE_MAX_CLASSES` (50), for every k in `1..C-1`
      (k = C is left out: its mass is 1 for every sample); keys in increasing k;
    - `log10_other_mass`: summary of `log10 b_o = (logsumexp_{U2}(t/T) - logsumexp(t/T)) / ln 10`
      at the loss `k`;
    - `entropy`: summary of `H = -sum q log q` (nats), and `normalized`: of `H / log C`;
    - `autok`: `hist` (C+1 counts, index = k), `mean`, `median`, `frac_k1 = mean[k = 1]` and
      `frac_le_k = mean[k <= loss k]` of the `autok` rule with `ratio_threshold` and `k_cap`;
    - `n_within`: `hist` (C+1 counts) and `mean` of `n_within` with `ratio = ratio_threshold`;
    - `per_class_k`: list of C ints (`per_class_k`, -1 for an empty class), `None` without labels.

    A summary is `{"mean", "std", "q10", "median", "q90"}`. Independent of T (`None` without
    labels): `teacher_top1 = mean[argmax t = y]`, `label_in_topk = mean[y in top_k(t)]` and
    `argmax_ne_label = mean[argmax t != y]`, the share of samples whose DKD partition `{y}`
    differs from the top-1 partition.

    Args:
        teacher_logits: shape `(N, C)`.
        labels: integer class indices `(N,)`, or `None`.
        k: the loss's top-k size, `1 <= k < C`.
        temperatures: the temperatures to summarise at.
        ratio_threshold: `rho` of `autok`, also the `ratio` of `n_within`.
        k_cap: `autok`'s cap, `None` for C.
        quantile_ks: the k whose top-k mass gets quantiles (with at most 50 classes, every
            k does).
        batch_size: rows per chunk.

    Returns:
        A JSON-ready dict with the keys `num_samples`, `num_classes`, `k`, `temperatures`,
        `ratio_threshold`, `k_cap`, `teacher_top1`, `label_in_topk`, `argmax_ne_label`,
        `per_temperature` (above) and `per_sample`: `{"autok", "n_within", "log10_other_mass",
        "entropy"}`, each `{temperature_key(T): array (N,)}`.
    """
    t = L.as_logits(teacher_logits, "teacher_logits")
    n, num_classes = t.shape
    y = L.as_labels(labels, n, num_classes)
    k = P.validate_k(k, num_classes)
    temperatures = [P.validate_temperature(v) for v in temperatures]
    ratio_threshold = _check_ratio("ratio_threshold", ratio_threshold, 1.0)
    cap = _check_cap(k_cap, num_classes)
    for kq in quantile_ks:
        P.validate_k(kq, None)
    quantile_ks = {int(kq) for kq in quantile_ks if kq < num_classes}
    if num_classes <= DENSE_QUANTILE_MAX_CLASSES:
        quantile_ks.update(range(1, num_classes))
    quantile_ks = sorted(quantile_ks)

    result = {
        "num_samples": int(n),
        "num_classes": int(num_classes),
        "k": k,
        "temperatures": temperatures,
        "ratio_threshold": ratio_threshold,
        "k_cap": None if k_cap is None else int(k_cap),
        "teacher_top1": None,
        "label_in_topk": None,
        "argmax_ne_label": None,
    }
    if y is not None:
        cols = L.map_chunks(_label_kernel(k), [t, y], batch_size)
        result["teacher_top1"] = L.safe_mean(cols["argmax"] == y)
        result["label_in_topk"] = L.safe_mean(cols["in_topk"])
        result["argmax_ne_label"] = L.safe_mean(cols["argmax"] != y)

    per_t, per_sample = {}, {"autok": {}, "n_within": {}, "log10_other_mass": {}, "entropy": {}}
    for temperature in temperatures:
        mass_sum = np.zeros(num_classes, dtype="float64")
        sums = np.zeros((num_classes, num_classes), dtype="float64")

        def reduce_rows(res, rows, mass_sum=mass_sum, sums=sums):
            # The (rows, C) values become dataset sums here, chunk by chunk, in float64.
            mass_sum += res.pop("topk_mass").sum(axis=0, dtype="float64")
            probs = res.pop("probs")
            if y is not None:
                np.add.at(sums, y[rows], probs.astype("float64"))
            return res

        kernel = _temperature_kernel(temperature, k, ratio_threshold, cap, quantile_ks)
        cols = L.map_chunks(kernel, [t], batch_size, post=reduce_rows)
        key = L.temperature_key(temperature)
        ks, within = cols["autok"].astype("int32"), cols["n_within"].astype("int32")
        entropy = cols["entropy"]
        per_t[key] = {
            "temperature": temperature,
            "topk_mass_mean": [float(v) for v in mass_sum / n],
            "topk_mass_quantiles": _mass_quantiles(cols.get("topk_mass_at"), quantile_ks),
            "log10_other_mass": L.summarize(cols["log10_other_mass"]),
            "entropy": {
                **L.summarize(entropy),
                "normalized": L.summarize(entropy / math.log(num_classes)),
            },
            "autok": {
                "hist": L.histogram(ks, num_classes + 1),
                "mean": L.safe_mean(ks),
                "median": float(np.median(ks)),
                "frac_k1": L.safe_mean(ks == 1),
                "frac_le_k": L.safe_mean(ks <= k),
            },
            "n_within": {"hist": L.histogram(within, num_classes + 1), "mean": L.safe_mean(within)},
            "per_class_k": None
            if y is None
            else _per_class_k_from_sums(
                sums, np.bincount(y, minlength=num_classes), ratio_threshold, cap
            ).tolist(),
        }
        per_sample["autok"][key] = ks
        per_sample["n_within"][key] = within
        per_sample["log10_other_mass"][key] = cols["log10_other_mass"].astype("float32")
        per_sample["entropy"][key] = entropy.astype("float32")
    result["per_temperature"] = per_t
    result["per_sample"] = per_sample
    return result
