"""Logit-distillation losses: pure functions and serializable loss objects."""

from keras_gdkd.losses.functional import (
    dkd,
    dkd_terms,
    gdkd,
    gdkd3,
    gdkd3_terms,
    gdkd_dynamic_terms,
    gdkd_terms,
    gdkd_v1,
    gdkd_v2,
    gdkd_v3,
    kd,
    kd_terms,
)
from keras_gdkd.losses.objects import DKD, GDKD, GDKD3, GDKDV1, GDKDV2, GDKDV3, KD, LogitLoss, get

__all__ = [
    "DKD",
    "GDKD",
    "GDKD3",
    "GDKDV1",
    "GDKDV2",
    "GDKDV3",
    "KD",
    "LogitLoss",
    "dkd",
    "dkd_terms",
    "gdkd",
    "gdkd3",
    "gdkd3_terms",
    "gdkd_dynamic_terms",
    "gdkd_terms",
    "gdkd_v1",
    "gdkd_v2",
    "gdkd_v3",
    "get",
    "kd",
    "kd_terms",
]
