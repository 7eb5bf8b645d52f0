"""keras-gdkd: Generalized Decoupled Knowledge Distillation for Keras 3.

Losses (``kd``, ``dkd``, ``gdkd``, ``gdkd3`` and objects ``KD``, ``DKD``, ``GDKD``, ``GDKD3``,
``GDKDV1..3``), the :class:`Distiller`, and the sub-packages ``models``, ``data`` (needs
TensorFlow), ``presets``, ``optimizers``, ``parallel`` and ``train`` (loaded on first use).
"""

from keras_gdkd import losses
from keras_gdkd.distiller import Distiller
from keras_gdkd.losses import (
    DKD,
    GDKD,
    GDKD3,
    GDKDV1,
    GDKDV2,
    GDKDV3,
    KD,
    dkd,
    gdkd,
    gdkd3,
    gdkd_v1,
    gdkd_v2,
    gdkd_v3,
    kd,
)

__version__ = "0.1.0"

__all__ = [
    "DKD",
    "GDKD",
    "GDKD3",
    "GDKDV1",
    "GDKDV2",
    "GDKDV3",
    "KD",
    "Distiller",
    "dkd",
    "gdkd",
    "gdkd3",
    "gdkd_v1",
    "gdkd_v2",
    "gdkd_v3",
    "kd",
    "losses",
]


def __getattr__(name):
    # Sub-packages load on first use: `data` needs TensorFlow, which a JAX- or PyTorch-only
    # install may not have.
    if name in ("models", "data", "presets", "optimizers", "parallel", "train"):
        import importlib

        return importlib.import_module(f"keras_gdkd.{name}")
    raise AttributeError(f"module 'keras_gdkd' has no attribute {name!r}")
