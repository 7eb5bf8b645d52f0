"""Serializable loss objects: hyper-parameters plus the functions of `functional.py`.

Every object is called as `loss(student_logits, teacher_logits, labels=None)` and returns the
batch-mean scalar; `loss.terms(...)` gives the per-sample loss and its named parts, which the
`keras_gdkd.Distiller` logs. The label-free losses (KD, GDKD, GDKD3 and the variants) are also
`keras.distillation.DistillationLoss` objects, so they plug into Keras's own
`keras.distillation.Distiller`; DKD needs the labels, which that Distiller does not pass to its
losses, so DKD works with `keras_gdkd.Distiller` only.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_gdkd.losses import functional as F
from keras_gdkd.losses import partition as P

_register = keras.saving.register_keras_serializable(package="keras_gdkd")


def _weights(**weights: float) -> list:
    return [P.validate_weight(name, value) for name, value in weights.items()]


class LogitLoss:
    """Base class of the loss objects: a logit-distillation loss with fixed hyper-parameters.

    Subclasses set `term_names` (the names of the parts `terms` returns) and `needs_labels`,
    and implement `terms`; the constructor arguments are the config.

    Args:
        temperature: the softmax temperature `T`, a finite number > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.
    """

    term_names: tuple[str, ...] = ()
    needs_labels: bool = False

    def __init__(self, temperature: float = 4.0, standardize: bool = False):
        self.temperature = P.validate_temperature(temperature)
        self.standardize = bool(standardize)

    def terms(
        self, student_logits, teacher_logits, labels=None, *, check_label_values: bool = True
    ) -> tuple:
        """The per-sample loss and its named parts.

        Args:
            student_logits: student logits, shape `(batch, num_classes)`.
            teacher_logits: teacher logits, same shape; no gradient flows into them.
            labels: integer class indices, shape `(batch,)`; used only when `needs_labels`.
            check_label_values: see `keras_gdkd.losses.dkd_terms`; ignored by the losses that
                do not use labels.

        Returns:
            `(per_sample_loss, {term_name: per_sample_value})`, each of shape `(batch,)`, the
            names in `term_names`.
        """
        raise NotImplementedError

    def __call__(self, student_logits, teacher_logits, labels=None):
        """The loss averaged over the batch (a float32 scalar); arguments as in `terms`."""
        loss, _ = self.terms(student_logits, teacher_logits, labels)
        return ops.mean(loss)

    def get_config(self) -> dict:
        """The constructor arguments, for `keras.saving`."""
        return {"temperature": self.temperature, "standardize": self.standardize}

    @classmethod
    def from_config(cls, config: dict):
        """Rebuild the loss from `get_config()`."""
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = None


class _LabelFree(LogitLoss, keras.distillation.DistillationLoss):
    """A loss that needs no labels, usable as a `keras.distillation.DistillationLoss`."""

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """The batch-mean loss, teacher first as `keras.distillation.Distiller` calls it."""
        return self(student_outputs, teacher_outputs)


@_register
class KD(_LabelFree):
    """Hinton's knowledge distillation: `T^2 KL(softmax(t/T) || softmax(s/T))`.

    Args:
        temperature: the softmax temperature `T`, a finite number > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.

    Example:

    ```python
    loss = keras_gdkd.KD(temperature=4.0)
    value = loss(student_logits, teacher_logits)  # batch mean
    per_sample, parts = loss.terms(student_logits, teacher_logits)  # parts["kd_loss"]
    ```
    """

    term_names = ("kd_loss",)

    def terms(self, student_logits, teacher_logits, labels=None, *, check_label_values=True):
        return F.kd_terms(student_logits, teacher_logits, self.temperature, self.standardize)


@_register
class DKD(LogitLoss):
    """Decoupled KD (Zhao et al. 2022): `alpha * TCKD + beta * NCKD` over `{label} / rest`.

    Needs the labels, so it is not a `keras.distillation.DistillationLoss`; use it with
    `keras_gdkd.Distiller`, which passes them.

    Args:
        alpha: weight of TCKD (the KL of the masses of the label and the rest); >= 0.
        beta: weight of NCKD (the KL within the non-label classes); >= 0.
        temperature: the softmax temperature `T`, a finite number > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.

    Example:

    ```python
    loss = keras_gdkd.DKD(alpha=1.0, beta=8.0, temperature=4.0)
    value = loss(student_logits, teacher_logits, labels)
    ```
    """

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
        self.alpha = P.validate_weight("alpha", alpha)
        self.beta = P.validate_weight("beta", beta)

    def terms(self, student_logits, teacher_logits, labels=None, *, check_label_values=True):
        if labels is None:
            raise ValueError(
                "DKD needs the ground-truth labels: call loss(student_logits, teacher_logits, "
                "labels)."
            )
        return F.dkd_terms(
            student_logits,
            teacher_logits,
            labels,
            self.alpha,
            self.beta,
            self.temperature,
            self.standardize,
            check_label_values=check_label_values,
        )

    def get_config(self):
        return {"alpha": self.alpha, "beta": self.beta, **super().get_config()}


@_register
class GDKD(_LabelFree):
    """Generalized decoupled KD: `w0 L_high + w1 L_low_top + w2 L_low_other`.

    The partition is {teacher's top-k} / rest; labels are not used.

    Args:
        k: size of the teacher's top set, `1 <= k < num_classes` (the upper bound is checked
            at the first call).
        w0: weight of the KL of the masses of the top-k and the rest; >= 0.
        w1: weight of the KL within the top-k; >= 0.
        w2: weight of the KL within the other classes; >= 0.
        temperature: the softmax temperature `T`, a finite number > 0.
        strategy: `"best"` (the k largest teacher logits) or `"worst"` (the k smallest).
        standardize: z-score each sample's logits (both models) before dividing by `T`.

    Example:

    ```python
    loss = keras_gdkd.GDKD(k=5, w0=1.0, w1=2.0, w2=8.0, temperature=4.0)
    value = loss(student_logits, teacher_logits)
    distiller = keras_gdkd.Distiller(teacher, student, loss=loss)
    ```
    """

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
        self.w0, self.w1, self.w2 = _weights(w0=w0, w1=w1, w2=w2)
        self.strategy = strategy

    def terms(self, student_logits, teacher_logits, labels=None, *, check_label_values=True):
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
    """GDKD with three sets: the teacher's top-1, its top-2..k, and the rest.

    Args:
        k: the last rank of the middle set, `2 <= k < num_classes`.
        w0: weight of the three-way KL of the set masses; >= 0.
        w1: weight of the KL within top-2..k; >= 0.
        w2: weight of the KL within the rest; >= 0.
        temperature: the softmax temperature `T`, a finite number > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.
    """

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
        self.w0, self.w1, self.w2 = _weights(w0=w0, w1=w1, w2=w2)

    def terms(self, student_logits, teacher_logits, labels=None, *, check_label_values=True):
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
    _top_name: str
    _other_name: str

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
        self.w0 = P.validate_weight("w0", w0)
        self._top, self._other = _weights(
            **{self._top_name: top_weight, self._other_name: other_weight}
        )

    def terms(self, student_logits, teacher_logits, labels=None, *, check_label_values=True):
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
    """Dynamic-weight variant V1: `w0 L_high + m1 b_t[top] L_low_top + m2 b_t[other] L_low_other`.

    `b_t` is the teacher's mass on each set, per sample. `GDKDV1(m1=1, m2=1)` equals `KD`.

    Args:
        k: size of the teacher's top set, `1 <= k < num_classes`.
        m1: factor of `b_t[top]` on the KL within the top-k; >= 0.
        m2: factor of `b_t[other]` on the KL within the rest; >= 0.
        w0: weight of the top-level term; >= 0.
        temperature: the softmax temperature `T`, a finite number > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.
    """

    scale_top, scale_other = True, True
    _top_name, _other_name = "m1", "m2"

    def __init__(
        self,
        k: int = 5,
        m1: float = 1.0,
        m2: float = 1.0,
        w0: float = 1.0,
        temperature: float = 4.0,
        standardize: bool = False,
    ):
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
    """Dynamic-weight variant V2: `w0 L_high + w1 L_low_top + m2 b_t[other] L_low_other`.

    Args:
        k: size of the teacher's top set, `1 <= k < num_classes`.
        w1: fixed weight of the KL within the top-k; >= 0.
        m2: factor of `b_t[other]` on the KL within the rest; >= 0.
        w0: weight of the top-level term; >= 0.
        temperature: the softmax temperature `T`, a finite number > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.
    """

    scale_top, scale_other = False, True
    _top_name, _other_name = "w1", "m2"

    def __init__(
        self,
        k: int = 5,
        w1: float = 1.0,
        m2: float = 1.0,
        w0: float = 1.0,
        temperature: float = 4.0,
        standardize: bool = False,
    ):
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
    """Dynamic-weight variant V3: `w0 L_high + m1 b_t[top] L_low_top + w2 L_low_other`.

    Args:
        k: size of the teacher's top set, `1 <= k < num_classes`.
        m1: factor of `b_t[top]` on the KL within the top-k; >= 0.
        w2: fixed weight of the KL within the rest; >= 0.
        w0: weight of the top-level term; >= 0.
        temperature: the softmax temperature `T`, a finite number > 0.
        standardize: z-score each sample's logits (both models) before dividing by `T`.
    """

    scale_top, scale_other = True, False
    _top_name, _other_name = "m1", "w2"

    def __init__(
        self,
        k: int = 5,
        m1: float = 1.0,
        w2: float = 8.0,
        w0: float = 1.0,
        temperature: float = 4.0,
        standardize: bool = False,
    ):
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
    """Resolve a distillation loss object.

    Args:
        identifier: a `LogitLoss` (returned as is), a name (`"kd"`, `"dkd"`, `"gdkd"`,
            `"gdkd3"`, `"gdkd_v1"`, `"gdkd_v2"`, `"gdkd_v3"`; case-insensitive) or a config
            dict from `keras.saving.serialize_keras_object`.
        **kwargs: hyper-parameters for a loss given by name.

    Returns:
        The loss object.

    Raises:
        ValueError: for an unknown identifier.

    Example:

    ```python
    loss = keras_gdkd.losses.get("gdkd", k=4, w2=6.0)
    loss == keras_gdkd.GDKD(k=4, w2=6.0)  # True
    ```
    """
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
