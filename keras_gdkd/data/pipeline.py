"""The training-data contract shared by every source: epochs back to back, resumable."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE

# The map functions hold no Python control flow on tensors; skipping AutoGraph's source
# conversion saves seconds of tracing (tens of seconds with Keras' RandAugment inside).
no_autograph = tf.autograph.experimental.do_not_convert


@dataclasses.dataclass(frozen=True)
class TrainData:
    """A deterministic, resumable training stream.

    `dataset` yields the batches of epochs `initial_epoch, ..., epochs - 1` back to back,
    exactly `steps_per_epoch` batches each (the last partial batch of an epoch is dropped;
    each epoch reshuffles all examples, so every example is still seen about once per
    epoch). Epoch `e`'s batches depend only on (seed, e): a run restarted with
    `initial_epoch=e` sees the same batches as an uninterrupted run's epoch `e`.

    Use with Keras as `model.fit(**data.fit_kwargs())`, or pass `steps_per_epoch`,
    `epochs` and `initial_epoch` yourself; `steps_per_epoch` is needed because the stream
    spans several epochs.
    """

    dataset: tf.data.Dataset
    steps_per_epoch: int
    num_examples: int
    batch_size: int
    initial_epoch: int
    epochs: int
    epoch_dataset: Callable[[int], tf.data.Dataset]
    """`epoch_dataset(e)`: just epoch `e`'s `steps_per_epoch` batches."""

    @classmethod
    def from_builder(
        cls,
        build: Callable[[int, int], tf.data.Dataset],
        *,
        steps_per_epoch: int,
        num_examples: int,
        batch_size: int,
        initial_epoch: int,
        epochs: int,
    ) -> TrainData:
        """`build(first, stop)` yields epochs first..stop-1; the stream starts at initial_epoch."""
        return cls(
            dataset=build(initial_epoch, epochs),
            steps_per_epoch=steps_per_epoch,
            num_examples=num_examples,
            batch_size=batch_size,
            initial_epoch=initial_epoch,
            epochs=epochs,
            epoch_dataset=lambda e: build(e, e + 1),
        )

    def fit_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `model.fit` matching this stream."""
        return {
            "x": self.dataset,
            "epochs": self.epochs,
            "initial_epoch": self.initial_epoch,
            "steps_per_epoch": self.steps_per_epoch,
        }


def check_epochs(epochs: int, initial_epoch: int) -> None:
    if not 0 <= int(initial_epoch) < int(epochs):
        raise ValueError(f"need 0 <= initial_epoch < epochs, got {initial_epoch=} {epochs=}")


def check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def steps_for(num_examples: int, batch_size: int) -> int:
    check_batch_size(batch_size)
    steps = num_examples // batch_size
    if steps == 0:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} training examples")
    return steps


def with_options(ds: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    # Parallel maps must keep element order, or batches would depend on thread timing.
    options.deterministic = True
    return ds.with_options(options)


def epochs_range(first: int, stop: int) -> tf.data.Dataset:
    return tf.data.Dataset.range(int(first), int(stop))
