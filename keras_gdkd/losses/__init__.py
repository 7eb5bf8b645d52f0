"""Logit-distillation losses: one function and one serializable object per loss.

Names load on first use, so that `keras_gdkd.losses.validation` (which the Keras-free presets
use) can be imported without starting Keras.
"""

from __future__ import annotations

import importlib

_MODULE_OF = {
    **dict.fromkeys(("dist", "dkd", "gdkd", "gdkd3", "gdkd_v1", "gdkd_v2", "gdkd_v3", "kd"),
                    "functional"),
    **dict.fromkeys(("DIST", "DKD", "GDKD", "GDKD3", "GDKDV1", "GDKDV2", "GDKDV3", "KD",
                     "LogitLoss", "get"), "objects"),
    **dict.fromkeys(("dkd_terms", "gdkd3_terms", "gdkd_dynamic_terms", "gdkd_terms", "kd_terms"),
                    "deprecated"),
}  # fmt: skip

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"keras_gdkd.losses.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module 'keras_gdkd.losses' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
