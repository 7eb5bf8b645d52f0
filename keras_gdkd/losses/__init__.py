"""Logit-distillation losses: one function and one serializable object per loss."""

from keras_gdkd.losses.deprecated import (
    dkd_terms,
    gdkd3_terms,
    gdkd_dynamic_terms,
    gdkd_terms,
    kd_terms,
)
from keras_gdkd.losses.functional import dist, dkd, gdkd, gdkd3, gdkd_v1, gdkd_v2, gdkd_v3, kd
from keras_gdkd.losses.objects import (
    DIST,
    DKD,
    GDKD,
    GDKD3,
    GDKDV1,
    GDKDV2,
    GDKDV3,
    KD,
    LogitLoss,
    get,
)

__all__ = [
    "DIST",
    "DKD",
    "GDKD",
    "GDKD3",
    "GDKDV1",
    "GDKDV2",
    "GDKDV3",
    "KD",
    "LogitLoss",
    "dist",
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
