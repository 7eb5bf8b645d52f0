"""PyTorch-style SGD and the step learning-rate schedule of the authors' recipes.

The reference numbers were produced with ``torch.optim.SGD(lr, momentum=0.9, weight_decay=wd)``
and a learning rate divided by 10 at fixed epochs. Keras's built-in pieces differ from that in two
ways that matter over 240 epochs (see ``TorchSGD``), so this module provides exact equivalents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
from keras import ops

if TYPE_CHECKING:
    from keras_gdkd import presets

__all__ = ["TorchSGD", "make_optimizer", "scale_lr", "step_decay_schedule"]


@keras.saving.register_keras_serializable(package="keras_gdkd")
class TorchSGD(keras.optimizers.Optimizer):
    """SGD with momentum and coupled L2 weight decay, step for step as ``torch.optim.SGD``.

    For each variable ``w`` with gradient ``grad`` (torch's ``nesterov=False, dampening=0``)::

        g   = grad + weight_decay * w          # coupled L2, part of the gradient
        buf = momentum * buf + g               # buf starts at 0, so step 1 gives buf = g
        w   = w - learning_rate * buf

    Why not ``keras.optimizers.SGD``:

    * Keras's ``weight_decay`` argument is *decoupled* (AdamW-style ``w -= lr * wd * w``, applied
      outside the momentum buffer). Torch adds ``wd * w`` to the gradient, so the decay is
      accumulated by the momentum (about ``1 / (1 - momentum)`` = 10x stronger at steady state).
    * Keras's SGD momentum accumulates learning-rate-scaled steps (``m = mu * m - lr * g``); torch
      accumulates raw gradients and scales by the *current* rate. The two agree for a constant
      rate but differ after each decay of the step schedule.

    The decay applies to every trainable variable, BatchNorm gamma/beta and biases included, as
    in the authors' code. ``exclude_from_weight_decay()`` still works to opt variables out.
    The ``weight_decay`` argument is stored as ``coupled_weight_decay``; the base class's
    ``weight_decay`` stays ``None`` so that Keras adds no decoupled decay on top.

    Args:
        learning_rate: a float or a ``LearningRateSchedule`` (called with the 0-based step).
        momentum: momentum factor, ``>= 0``.
        weight_decay: coupled L2 coefficient, ``>= 0``.
        name: optimizer name.
        **kwargs: other base-optimizer arguments (``clipnorm``, ``global_clipnorm``,
            ``use_ema``, ``loss_scale_factor``, ``gradient_accumulation_steps`` ...).
    """

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        name: str = "torch_sgd",
        **kwargs: Any,
    ):
        # weight_decay deliberately not forwarded: the base class would apply it decoupled.
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        momentum = float(momentum)
        weight_decay = float(weight_decay or 0.0)
        if momentum < 0.0:
            raise ValueError(f"`momentum` must be >= 0, received {momentum}.")
        if weight_decay < 0.0:
            raise ValueError(f"`weight_decay` must be >= 0, received {weight_decay}.")
        self.momentum = momentum
        self.coupled_weight_decay = weight_decay

    def build(self, variables: Sequence[keras.Variable]) -> None:
        """Create one momentum buffer per variable (zeros: equivalent to torch's buf = g)."""
        if self.built:
            return
        super().build(variables)
        self.momentums = []
        if self.momentum != 0.0:
            self.momentums = [
                self.add_variable_from_reference(reference_variable=v, name="momentum")
                for v in variables
            ]

    def update_step(self, gradient, variable, learning_rate) -> None:
        """One torch-style SGD update of ``variable``."""
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.coupled_weight_decay != 0.0 and self._use_weight_decay(variable):
            wd = ops.cast(self.coupled_weight_decay, variable.dtype)
            gradient = ops.add(gradient, ops.multiply(variable, wd))
        if self.momentum != 0.0:
            buf = self.momentums[self._get_variable_index(variable)]
            momentum = ops.cast(self.momentum, variable.dtype)
            # Keep the new buffer as a tensor: reading `buf` back after assign is not
            # guaranteed to see the new value inside JAX's stateless scope.
            new_buf = ops.add(ops.multiply(buf, momentum), gradient)
            self.assign(buf, new_buf)
            gradient = new_buf
        self.assign_sub(variable, ops.multiply(gradient, learning_rate))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"momentum": self.momentum, "weight_decay": self.coupled_weight_decay})
        return config


def step_decay_schedule(
    base_lr: float,
    decay_epochs: Sequence[int],
    steps_per_epoch: int,
    factor: float = 0.1,
    name: str = "StepDecay",
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Learning rate ``base_lr * factor**n`` after ``n`` of the ``decay_epochs`` have ended.

    Equivalent to torch's ``MultiStepLR(milestones=decay_epochs, gamma=factor)`` stepped once per
    epoch: with ``decay_epochs=[150, 180, 210]`` epochs 1..150 (1-based) use ``base_lr`` and
    epoch 151 is the first with ``0.1 * base_lr``, i.e. zero-based optimizer steps
    ``0 .. 150 * steps_per_epoch - 1`` use ``base_lr`` and step ``150 * steps_per_epoch`` the
    decayed rate. Keras optimizers call the schedule with ``optimizer.iterations`` before it is
    incremented, so the first update is step 0.

    ``PiecewiseConstantDecay`` returns ``values[i]`` for ``boundaries[i-1] < step <=
    boundaries[i]`` (the boundary step itself still belongs to the earlier value), hence the
    boundaries are the *last* step of each decay epoch: ``e * steps_per_epoch - 1``.
    """
    steps_per_epoch = int(steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError(f"`steps_per_epoch` must be >= 1, received {steps_per_epoch}.")
    epochs = [int(e) for e in decay_epochs]
    increasing = all(a < b for a, b in zip(epochs[:-1], epochs[1:], strict=True))
    if not increasing or any(e < 1 for e in epochs):
        raise ValueError(
            f"`decay_epochs` must be strictly increasing epochs >= 1, received {list(epochs)}."
        )
    values = [float(base_lr)]
    for _ in epochs:
        # Chained products, as MultiStepLR computes them.
        values.append(values[-1] * float(factor))
    boundaries = [e * steps_per_epoch - 1 for e in epochs]
    if not boundaries:
        # PiecewiseConstantDecay needs one boundary; this one is never reached (int32 max).
        boundaries, values = [2**31 - 1], [values[0], values[0]]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values, name=name)


def scale_lr(base_lr: float, base_batch: int, batch: int) -> float:
    """Linear scaling rule: the rate for global batch ``batch`` given ``base_lr`` at
    ``base_batch`` (e.g. ImageNet 0.2 at 512 -> 0.1 at 256)."""
    if base_batch <= 0 or batch <= 0:
        raise ValueError(f"Batch sizes must be positive, received {base_batch} and {batch}.")
    return float(base_lr) * float(batch) / float(base_batch)


def make_optimizer(
    preset: presets.Preset, steps_per_epoch: int, batch_size: int | None = None
) -> TorchSGD:
    """The ``TorchSGD`` + step schedule of a ``keras_gdkd.presets.Preset``.

    Args:
        preset: the recipe; its learning rate, batch size, decay epochs and factor, momentum
            and weight decay are used.
        steps_per_epoch: optimizer steps per epoch at the batch size actually used.
        batch_size: global batch size actually used; when it differs from the preset's, the
            learning rate is scaled linearly (``scale_lr``).
    """
    lr = float(preset.learning_rate)
    if batch_size is not None and int(batch_size) != int(preset.batch_size):
        lr = scale_lr(lr, preset.batch_size, batch_size)
    schedule = step_decay_schedule(
        lr, preset.lr_decay_epochs, steps_per_epoch, factor=preset.lr_decay_factor
    )
    return TorchSGD(
        learning_rate=schedule, momentum=preset.momentum, weight_decay=preset.weight_decay
    )
