"""Serializable loss objects: a loss function of `functional.py` plus its keyword arguments.

`loss(student_logits, teacher_logits, labels=None)` returns the batch mean and
`loss.terms(...)` the per-position loss and its named parts, which the `keras_gdkd.Distiller`
logs. The label-free losses are also `keras.distillation.DistillationLoss` objects, so they plug
into Keras's own `keras.distillation.Distiller`; DKD needs the labels, which that Distiller does
not pass to its losses, so DKD works with `keras_gdkd.Distiller` only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import keras

from keras_gdkd.losses import functional as F
from keras_gdkd.losses import validation as V

_register = keras.saving.register_keras_serializable(package="keras_gdkd")


class LogitLoss:
    """Base class: a logit-distillation loss function with fixed hyper-parameters.

    A subclass names its function (`name`, a key of `validation.HYPERPARAMETERS`) and passes
    its constructor arguments to `__init__`, which validates them once; they are the config
    and are readable as attributes (`loss.temperature`, `loss.k`, ...).
    """

    name: ClassVar[str]
    function: ClassVar[Callable]
    needs_labels: ClassVar[bool] = False

    def __init__(self, **hyperparameters: Any):
        self._config = V.check_hyperparameters(self.name, hyperparameters)

    @property
    def term_names(self) -> tuple[str, ...]:
        """The names of the parts that `terms` returns."""
        return F.TERM_NAMES[self.name]

    def __getattr__(self, item: str):
        config = self.__dict__.get("_config", {})
        if item in config:
            return config[item]
        raise AttributeError(f"{type(self).__name__} has no attribute {item!r}")

    def _call(self, student_logits, teacher_logits, labels, mask, check_label_values, **kwargs):
        if not self.needs_labels:
            return self.function(
                student_logits, teacher_logits, **self._config, mask=mask, **kwargs
            )
        if labels is None:
            raise ValueError(
                f"{type(self).__name__} needs the ground-truth labels: call "
                "loss(student_logits, teacher_logits, labels)."
            )
        return self.function(
            student_logits, teacher_logits, labels, **self._config, mask=mask,
            check_label_values=check_label_values, **kwargs,
        )  # fmt: skip

    def terms(
        self,
        student_logits,
        teacher_logits,
        labels=None,
        *,
        mask=None,
        check_label_values: bool = True,
    ) -> tuple:
        """The per-position loss and its named parts.

        Args:
            student_logits: student logits, shape `(..., num_classes)`.
            teacher_logits: teacher logits, same shape; no gradient flows into them.
            labels: integer class indices of the leading shape; used only when `needs_labels`.
            mask: optional boolean of the leading shape; False drops a position (value 0).
            check_label_values: see `keras_gdkd.losses.dkd`; ignored by the losses that do not
                use labels.

        Returns:
            `(per_position_loss, {term_name: per_position_value})`.
        """
        return self._call(
            student_logits, teacher_logits, labels, mask, check_label_values,
            reduction=None, return_terms=True,
        )  # fmt: skip

    def __call__(self, student_logits, teacher_logits, labels=None, *, mask=None):
        """The loss averaged over the (unmasked) positions, a float32 scalar."""
        return self._call(student_logits, teacher_logits, labels, mask, True)

    def get_config(self) -> dict:
        """The hyper-parameters, for `keras.saving` (and `from_config`)."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict):
        """Rebuild the loss from `get_config()`."""
        return cls(**config)

    def replace(self, **changes: Any) -> LogitLoss:
        """A copy with some hyper-parameters changed, validated like the constructor's.

        Raises:
            ValueError: for a name that is not a hyper-parameter of this loss, or a bad value.
        """
        V.check_hyperparameters(self.name, changes)
        return type(self)(**{**self._config, **changes})

    def check_num_classes(self, num_classes: int) -> None:
        """Raise `ValueError` if the hyper-parameters do not fit `num_classes` classes."""
        V.check_hyperparameters(self.name, self._config, num_classes=num_classes)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self._config == other._config

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self._config.items()))))


class _LabelFree(LogitLoss, keras.distillation.DistillationLoss):
    """A loss that needs no labels, usable as a `keras.distillation.DistillationLoss`."""

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        """The batch-mean loss, teacher first as `keras.distillation.Distiller` calls it."""
        return self(student_outputs, teacher_outputs)


@_register
class KD(_LabelFree):
    """Hinton's knowledge distillation; see `keras_gdkd.losses.kd` for the arguments.

    Example:

    ```python
    loss = keras_gdkd.KD(temperature=4.0)
    value = loss(student_logits, teacher_logits)  # batch mean
    per_sample, parts = loss.terms(student_logits, teacher_logits)  # parts["kd_loss"]
    ```
    """

    name, function = "kd", staticmethod(F.kd)

    def __init__(self, temperature: float = 4.0, standardize: bool = False):
        super().__init__(temperature=temperature, standardize=standardize)


@_register
class DKD(LogitLoss):
    """Decoupled KD (Zhao et al. 2022); see `keras_gdkd.losses.dkd` for the arguments.

    Needs the labels, so it is not a `keras.distillation.DistillationLoss`; use it with
    `keras_gdkd.Distiller`, which passes them.

    Example:

    ```python
    loss = keras_gdkd.DKD(alpha=1.0, beta=8.0, temperature=4.0)
    value = loss(student_logits, teacher_logits, labels)
    ```
    """

    name, function, needs_labels = "dkd", staticmethod(F.dkd), True

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        standardize: bool = False,
    ):
        super().__init__(alpha=alpha, beta=beta, temperature=temperature, standardize=standardize)


@_register
class GDKD(_LabelFree):
    """Generalized decoupled KD; see `keras_gdkd.losses.gdkd` for the arguments.

    `k < num_classes` is checked at the first call (or by `check_num_classes`).

    Example:

    ```python
    loss = keras_gdkd.GDKD(k=5, w0=1.0, w1=2.0, w2=8.0, temperature=4.0)
    value = loss(student_logits, teacher_logits)
    distiller = keras_gdkd.Distiller(teacher, student, loss=loss)
    ```
    """

    name, function = "gdkd", staticmethod(F.gdkd)

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
        super().__init__(
            k=k, w0=w0, w1=w1, w2=w2, temperature=temperature, strategy=strategy,
            standardize=standardize,
        )  # fmt: skip


@_register
class GDKD3(_LabelFree):
    """GDKD over {top-1} / {top-2..k} / rest; see `keras_gdkd.losses.gdkd3` for the arguments."""

    name, function = "gdkd3", staticmethod(F.gdkd3)

    def __init__(
        self,
        k: int = 4,
        w0: float = 1.0,
        w1: float = 1.0,
        w2: float = 8.0,
        temperature: float = 4.0,
        standardize: bool = False,
    ):
        super().__init__(k=k, w0=w0, w1=w1, w2=w2, temperature=temperature, standardize=standardize)


@_register
class GDKDV1(_LabelFree):
    """Dynamic-weight variant V1 (equals KD at `m1 = m2 = 1`); see `keras_gdkd.losses.gdkd_v1`."""

    name, function = "gdkd_v1", staticmethod(F.gdkd_v1)

    def __init__(
        self,
        k: int = 5,
        m1: float = 1.0,
        m2: float = 1.0,
        w0: float = 1.0,
        temperature: float = 4.0,
        standardize: bool = False,
    ):
        super().__init__(k=k, m1=m1, m2=m2, w0=w0, temperature=temperature, standardize=standardize)


@_register
class GDKDV2(_LabelFree):
    """Dynamic-weight variant V2; see `keras_gdkd.losses.gdkd_v2` for the arguments."""

    name, function = "gdkd_v2", staticmethod(F.gdkd_v2)

    def __init__(
        self,
        k: int = 5,
        w1: float = 1.0,
        m2: float = 1.0,
        w0: float = 1.0,
        temperature: float = 4.0,
        standardize: bool = False,
    ):
        super().__init__(k=k, w1=w1, m2=m2, w0=w0, temperature=temperature, standardize=standardize)


@_register
class GDKDV3(_LabelFree):
    """Dynamic-weight variant V3; see `keras_gdkd.losses.gdkd_v3` for the arguments."""

    name, function = "gdkd_v3", staticmethod(F.gdkd_v3)

    def __init__(
        self,
        k: int = 5,
        m1: float = 1.0,
        w2: float = 8.0,
        w0: float = 1.0,
        temperature: float = 4.0,
        standardize: bool = False,
    ):
        super().__init__(k=k, m1=m1, w2=w2, w0=w0, temperature=temperature, standardize=standardize)


@_register
class DIST(_LabelFree):
    """DIST (Huang et al. 2022), inter- and intra-class Pearson relations of the probabilities.

    See `keras_gdkd.losses.dist` for the arguments.

    Example:

    ```python
    loss = keras_gdkd.DIST(beta=2.0, gamma=2.0, temperature=4.0)
    distiller = keras_gdkd.Distiller(teacher, student, loss=loss)  # logs inter_loss, intra_loss
    ```
    """

    name, function = "dist", staticmethod(F.dist)

    def __init__(self, beta: float = 2.0, gamma: float = 2.0, temperature: float = 4.0):
        super().__init__(beta=beta, gamma=gamma, temperature=temperature)


_BY_NAME: dict[str, type[LogitLoss]] = {
    cls.name: cls for cls in (KD, DKD, GDKD, GDKD3, GDKDV1, GDKDV2, GDKDV3, DIST)
}


def get(identifier, **kwargs) -> LogitLoss:
    """Resolve a distillation loss object.

    Args:
        identifier: a `LogitLoss` (returned as is), a name (`"kd"`, `"dkd"`, `"gdkd"`,
            `"gdkd3"`, `"gdkd_v1"`, `"gdkd_v2"`, `"gdkd_v3"`, `"dist"`; case-insensitive) or a
            config dict from `keras.saving.serialize_keras_object`.
        **kwargs: hyper-parameters for a loss given by name.

    Returns:
        The loss object.

    Raises:
        ValueError: for an unknown identifier or hyper-parameter.

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
