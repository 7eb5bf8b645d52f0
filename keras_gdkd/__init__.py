"""keras-gdkd: Generalized Decoupled Knowledge Distillation for Keras 3.

Losses (`kd`, `dkd`, `gdkd`, `gdkd3`, `gdkd_v1..3`, `dist` and the objects `KD`, `DKD`, `GDKD`,
`GDKD3`, `GDKDV1..3`, `DIST`), the `Distiller`, and the sub-packages `models`, `data` (needs
TensorFlow), `presets`, `optimizers`, `parallel`, `runs`, `train` and `analysis`.

Importing the package is cheap: names load on first use, so `keras-gdkd --help` answers before
Keras and its backend start. When Keras is already imported, the losses and the `Distiller`
load at once, so `import keras, keras_gdkd` registers them with `keras.saving` as usual.
"""

from __future__ import annotations

import importlib
import sys

__version__ = "0.1.0"

_LOSS_NAMES = (
    "DIST", "DKD", "GDKD", "GDKD3", "GDKDV1", "GDKDV2", "GDKDV3", "KD",
    "dist", "dkd", "gdkd", "gdkd3", "gdkd_v1", "gdkd_v2", "gdkd_v3", "kd",
)  # fmt: skip
_SUBPACKAGES = (
    "losses",
    "models",
    "data",
    "presets",
    "optimizers",
    "parallel",
    "runs",
    "train",
    "analysis",
)

__all__ = ["Distiller", *_LOSS_NAMES, *_SUBPACKAGES, "__version__"]


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        return importlib.import_module(f"keras_gdkd.{name}")
    if name in _LOSS_NAMES:
        return getattr(importlib.import_module("keras_gdkd.losses"), name)
    if name == "Distiller":
        return importlib.import_module("keras_gdkd.distiller").Distiller
    raise AttributeError(f"module 'keras_gdkd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if "keras" in sys.modules:
    # Keras is loaded already, so this costs little: register the serializable classes now.
    importlib.import_module("keras_gdkd.distiller")
