"""The `*_terms` functions of keras-gdkd 0.1, kept for one release.

Each loss function now returns its per-sample values and named terms itself:
`gdkd_terms(s, t, ...)` is `gdkd(s, t, ..., reduction=None, return_terms=True)`.
"""

from __future__ import annotations

import functools
import warnings

from keras_gdkd.losses import functional as F


def _deprecated(new):
    def decorate(old):
        @functools.wraps(old)
        def wrapper(*args, **kwargs):
            warnings.warn(
                f"keras_gdkd.losses.{old.__name__} is deprecated and will be removed; use "
                f"keras_gdkd.losses.{new}(..., reduction=None, return_terms=True).",
                DeprecationWarning,
                stacklevel=2,
            )
            return old(*args, **kwargs)

        return wrapper

    return decorate


@_deprecated("kd")
def kd_terms(student_logits, teacher_logits, temperature=4.0, standardize=False):
    """Per-sample KD and `{"kd_loss"}`; deprecated, see `kd`."""
    return F.kd(
        student_logits, teacher_logits, temperature, standardize, reduction=None, return_terms=True
    )


@_deprecated("dkd")
def dkd_terms(
    student_logits,
    teacher_logits,
    labels,
    alpha=1.0,
    beta=8.0,
    temperature=4.0,
    standardize=False,
    *,
    check_label_values=True,
):
    """Per-sample DKD and `{"tckd_loss", "nckd_loss"}`; deprecated, see `dkd`."""
    return F.dkd(
        student_logits, teacher_logits, labels, alpha, beta, temperature, standardize,
        reduction=None, return_terms=True, check_label_values=check_label_values,
    )  # fmt: skip


@_deprecated("gdkd")
def gdkd_terms(
    student_logits,
    teacher_logits,
    k=5,
    w0=1.0,
    w1=1.0,
    w2=8.0,
    temperature=4.0,
    strategy="best",
    standardize=False,
):
    """Per-sample GDKD and its three terms; deprecated, see `gdkd`."""
    return F.gdkd(
        student_logits, teacher_logits, k, w0, w1, w2, temperature, strategy, standardize,
        reduction=None, return_terms=True,
    )  # fmt: skip


@_deprecated("gdkd3")
def gdkd3_terms(
    student_logits, teacher_logits, k=4, w0=1.0, w1=1.0, w2=8.0, temperature=4.0, standardize=False
):
    """Per-sample GDKD3 and its three terms; deprecated, see `gdkd3`."""
    return F.gdkd3(
        student_logits, teacher_logits, k, w0, w1, w2, temperature, standardize,
        reduction=None, return_terms=True,
    )  # fmt: skip


@_deprecated("gdkd_v1")
def gdkd_dynamic_terms(
    student_logits,
    teacher_logits,
    k=5,
    w0=1.0,
    top_weight=1.0,
    other_weight=1.0,
    scale_top=True,
    scale_other=True,
    temperature=4.0,
    standardize=False,
):
    """Per-sample V1/V2/V3 chosen by two flags (or plain GDKD); deprecated, see `gdkd_v1`."""
    name = {(True, True): "gdkd_v1", (False, True): "gdkd_v2", (True, False): "gdkd_v3"}
    if not (scale_top or scale_other):
        return F.gdkd(
            student_logits, teacher_logits, k, w0, top_weight, other_weight, temperature,
            standardize=standardize, reduction=None, return_terms=True,
        )  # fmt: skip
    top = "m1" if scale_top else "w1"
    other = "m2" if scale_other else "w2"
    fn = getattr(F, name[scale_top, scale_other])
    return fn(
        student_logits, teacher_logits, k=k, w0=w0, temperature=temperature,
        standardize=standardize, reduction=None, return_terms=True,
        **{top: top_weight, other: other_weight},
    )  # fmt: skip
