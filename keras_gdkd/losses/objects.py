"""Serializable loss objects: hyper-parameters plus the functions of ``functional.py``.

Every object is called as ``loss(student_logits, teacher_logits, labels=None)`` and returns the
batch-mean scalar; ``loss.terms(...)`` gives the per-sample loss and its named parts, which the
:class:`keras_gdkd.Distiller` logs. The label-free losses (KD, GDKD, GDKD3 and the variants) are
also ``keras.distillation.DistillationLoss`` objects, so they plug into Keras's own Distiller.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_gdkd.losses import functional as F
from keras_gdkd.losses import partition as P

_register = keras.saving.register_keras_serializable(package="keras_gdkd")


class LogitLoss:
    """Base class: a logit-distillation loss with fixed hyper-parameters.

    Subclasses set ``term_names`` and implement ``terms``; the constructor arguments are the
    config.
    """

    term_names: tuple[str, ...] = ()
    needs_labels: bool = False

    def __init__(self, temperature: float = 4.0, standardize: bool = False):
        self.temperature = P.validate_temperature(temperature)
        self.standardize = bool(standardize)

    def terms(self, student_logits, teacher_logits, labels=None) -> tuple:
        """Return ``(per_sample_loss, {term: per_sample_value})``, each of shape (batch,)."""
        raise NotImplementedError

    def __call__(self, student_logits, teacher_logits, labels=None):
        loss, _ = self.terms(student_logits, teacher_logits, labels)
        return ops.mean(loss)

    def get_config(self) -> dict:
        return {"temperature": self.temperature, "standardize": self.standardize}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = None


class _LabelFree(LogitLoss, keras.distillation.DistillationLoss):
    """A loss that needs no labels, usable as a ``keras.distillation.DistillationLoss``."""

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        # Keras's Distiller passes the teacher first; our convention is student first.
        return self(student_outputs, teacher_outputs)


@_register
class KD(_LabelFree):
    """Hinton's KD: ``T^2 KL(softmax(t/T) || softmax(s/T))``."""

    term_names = ("kd_loss",)

    def terms(self, student_logits, teacher_logits, labels=None):
        return F.kd_terms(student_logits, teacher_logits, self.temperature, self.standardize)


@_register
class DKD(LogitLoss):
    """Decoupled KD: ``alpha * TCKD + beta * NCKD`` over {label} / rest. Needs labels."""

    term_names = ("tckd_loss", "nckd_loss")
    needs_labels = True

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        standardize: bool = False,
    ):
        super().__init__(temperature, standardize)
        self.alpha, self.beta = float(alpha), float(beta)

    def terms(self, student_logits, teacher_logits, labels=None):
        if labels is None:
            raise ValueError("DKD needs the ground-truth labels: call dkd_loss(s, t, labels).")
        return F.dkd_terms(
            student_logits,
            teacher_logits,
            labels,
            self.alpha,
            self.beta,
            self.temperature,
            self.standardize,
        )

    def get_config(self):
        return {"alpha": self.alpha, "beta": self.beta, **super().get_config()}


@_register
class GDKD(_LabelFree):
    """GDKD over the teacher's top-k: ``w0 L_high + w1 L_low_top + w2 L_low_other``."""

    term_names = F.GDKD_TERMS

    def __init__(
        self,
        k: int = 5,
        w0: float = 1.0,
        w1: float = 1.0,
        w2: float = 8.0,
        temperature: float = 4.0,
        strategy: str = "best",
        standardize: bool = False,
    ):
        super().__init__(temperature, standardize)
        if strategy not in ("best", "worst"):
            raise ValueError(f"strategy must be 'best' or 'worst'; got {strategy!r}.")
        self.k = P.validate_k(k, None)
        self.w0, self.w1, self.w2 = float(w0), float(w1), float(w2)
        self.strategy = strategy

    def terms(self, student_logits, teacher_logits, labels=None):
        return F.gdkd_terms(
            student_logits,
            teacher_logits,
            self.k,
            self.w0,
            self.w1,
            self.w2,
            self.temperature,
            self.strategy,
            self.standardize,
        )

    def get_config(self):
        return {
            "k": self.k,
            "w0": self.w0,
            "w1": self.w1,
            "w2": self.w2,
            "strategy": self.strategy,
            **super().get_config(),
        }


@_register
class GDKD3(_LabelFree):
    """GDKD with three sets: teacher top-1, top-2..k, the rest."""

    term_names = F.GDKD_TERMS

    def __init__(
        self,
        k: int = 4,
        w0: float = 1.0,
        w1: float = 1.0,
        w2: float = 8.0,
        temperature: float = 4.0,
        standardize: bool = False,
    ):
        super().__init__(temperature, standardize)
        self.k = P.validate_k(k, None, minimum=2)
        self.w0, self.w1, self.w2 = float(w0), float(w1), float(w2)

    def terms(self, student_logits, teacher_logits, labels=None):
        return F.gdkd3_terms(
            student_logits,
            teacher_logits,
            self.k,
            self.w0,
            self.w1,
            self.w2,
            self.temperature,
            self.standardize,
        )

    def get_config(self):
        return {"k": self.k, "w0": self.w0, "w1": self.w1, "w2": self.w2, **super().get_config()}


class _DynamicGDKD(_LabelFree):
    """GDKD whose leaf weights are scaled per sample by the teacher's set masses."""

    term_names = F.GDKD_TERMS
    scale_top: bool
    scale_other: bool

    def __init__(
        self,
        k: int,
        w0: float,
        top_weight: float,
        other_weight: float,
        temperature: float,
        standardize: bool,
    ):
        super().__init__(temperature, standardize)
        self.k = P.validate_k(k, None)
        self.w0 = float(w0)
        self._top, self._other = float(top_weight), float(other_weight)

    def terms(self, student_logits, teacher_logits, labels=None):
        return F.gdkd_dynamic_terms(
            student_logits,
            teacher_logits,
            self.k,
            self.w0,
            self._top,
            self._other,
            self.scale_top,
            self.scale_other,
            self.temperature,
            self.standardize,
        )


@_register
class GDKDV1(_DynamicGDKD):
    """V1: ``w0 L_high + m1 b_t[top] KL_top + m2 b_t[other] KL_other``; V1(m1=m2=1) is KD."""

    scale_top, scale_other = True, True

    def __init__(self, k=5, m1=1.0, m2=1.0, w0=1.0, temperature=4.0, standardize=False):
        super().__init__(k, w0, m1, m2, temperature, standardize)

    def get_config(self):
        return {
            "k": self.k,
            "m1": self._top,
            "m2": self._other,
            "w0": self.w0,
            **super().get_config(),
        }


@_register
class GDKDV2(_DynamicGDKD):
    """V2: fixed ``w1`` on the top term, ``m2 b_t[other]`` on the other term."""

    scale_top, scale_other = False, True

    def __init__(self, k=5, w1=1.0, m2=1.0, w0=1.0, temperature=4.0, standardize=False):
        super().__init__(k, w0, w1, m2, temperature, standardize)

    def get_config(self):
        return {
            "k": self.k,
            "w1": self._top,
            "m2": self._other,
            "w0": self.w0,
            **super().get_config(),
        }


@_register
class GDKDV3(_DynamicGDKD):
    """V3: ``m1 b_t[top]`` on the top term, fixed ``w2`` on the other term."""

    scale_top, scale_other = True, False

    def __init__(self, k=5, m1=1.0, w2=8.0, w0=1.0, temperature=4.0, standardize=False):
        super().__init__(k, w0, m1, w2, temperature, standardize)

    def get_config(self):
        return {
            "k": self.k,
            "m1": self._top,
            "w2": self._other,
            "w0": self.w0,
            **super().get_config(),
        }


_BY_NAME = {
    "kd": KD,
    "dkd": DKD,
    "gdkd": GDKD,
    "gdkd3": GDKD3,
    "gdkd_v1": GDKDV1,
    "gdkd_v2": GDKDV2,
    "gdkd_v3": GDKDV3,
}


def get(identifier, **kwargs) -> LogitLoss:
    """A loss object from a name (``"gdkd"``, ``"dkd"``, ...) and hyper-parameters, or a config."""
    if isinstance(identifier, LogitLoss):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()](**kwargs)
    raise ValueError(
        f"Unknown distillation loss {identifier!r}; expected one of {sorted(_BY_NAME)} "
        "or a keras_gdkd loss object."
    )
