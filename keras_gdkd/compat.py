"""Work-arounds that reach into private Keras internals, kept in one place.

Each one names the Keras code it touches and records a hash of it; a test
(``tests/test_multihost.py``) fails loudly when that code changes, so that a Keras upgrade is
re-checked rather than silently mis-patched.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from typing import Any

import keras

__all__ = [
    "PATCHED_TF_SOURCES",
    "keras_mask",
    "patch_tf_multi_worker_fit",
    "scale_loss_for_distribution",
    "tf_multi_worker_sources",
]

_log = logging.getLogger(__name__)


def scale_loss_for_distribution(value: Any) -> Any:
    """Divides a loss by the replica count under ``tf.distribute``, as Keras's compiled losses do.

    Keras sums the replicas' gradients, so a loss computed in a custom ``compute_loss`` must be
    divided by the number of replicas to mean the same as on one device. A no-op on JAX, PyTorch
    and outside a ``tf.distribute`` strategy. Keras keeps this helper private
    (``keras.src.losses.loss``); ``tests/test_compat.py`` fails if it moves or changes meaning.
    """
    from keras.src.losses.loss import scale_loss_for_distribution as keras_scale

    return keras_scale(value)


def keras_mask(tensor: Any) -> Any:
    """The padding mask Keras attached to ``tensor`` (e.g. after ``Embedding(mask_zero=True)``).

    Returns ``None`` when there is none. Keras keeps the accessor private
    (``keras.src.backend.common.masking``); it stores the mask in a side table on JAX, whose
    arrays take no attributes, so ``getattr(tensor, "_keras_mask")`` alone would miss it there.
    ``tests/test_compat.py`` fails if the accessor moves or stops finding the mask.
    """
    from keras.src.backend.common.masking import get_keras_mask

    return get_keras_mask(tensor)


# sha256 of the source of the two Keras functions the multi-worker shim wraps, as in the Keras
# versions it was checked with. The shim wraps them only while they are unchanged.
PATCHED_TF_SOURCES: dict[str, str] = {
    # Keras 3.15.1
    "TensorFlowTrainer._maybe_symbolic_build": (
        "92a504f5eba9b29f81f1bf26180bdd5bf5186b06b7bda426534b90d2d02bc1c2"
    ),
    "reduce_per_replica": "2e7d54b1e6edc29a8c6a7e6b66cd4c8be3ba7842412c93753ac3afe169fa7fb8",
}

_PATCHED_FLAG = "_keras_gdkd_multi_worker_patch"


def tf_multi_worker_sources() -> dict[str, str]:
    """sha256 of the current source of the Keras functions that the multi-worker shim wraps.

    Returns:
        ``{name: hexdigest}`` with the same keys as :data:`PATCHED_TF_SOURCES`.
    """
    trainer = _tf_trainer_module()
    functions = {
        "TensorFlowTrainer._maybe_symbolic_build": _original(
            trainer.TensorFlowTrainer._maybe_symbolic_build
        ),
        "reduce_per_replica": _original(trainer.reduce_per_replica),
    }
    return {
        name: hashlib.sha256(inspect.getsource(fn).encode()).hexdigest()
        for name, fn in functions.items()
    }


def patch_tf_multi_worker_fit() -> bool:
    """Lets ``Model.fit``/``evaluate`` run under ``MultiWorkerMirroredStrategy`` (Keras 3).

    With the TensorFlow backend, Keras 3 fails in ``fit`` as soon as a
    ``tf.distribute.MultiWorkerMirroredStrategy`` spans more than one worker, for any model
    (keras-team/keras#20585, tensorflow/tensorflow#72388). Two functions of
    ``keras/src/backend/tensorflow/trainer.py`` are at fault, and this wraps both; other
    strategies (``MirroredStrategy``, none) still run the Keras code unchanged:

    1. ``TensorFlowTrainer._maybe_symbolic_build`` builds the model from one sample batch, which
       it gets with ``strategy.reduce("MEAN", batch)``: an all-reduce of *input data* that the
       collective ops reject ("Attempt to convert a value (PerReplica...) to a Tensor"). Only the
       shapes of that batch are used, so the first local replica's slice is given instead.
    2. ``reduce_per_replica`` averages each log over the workers with
       ``strategy.reduce("MEAN", value, axis=0)``, which fails for the scalar logs ("Invalid
       reduction dimension 0 for input with 0 dimensions"). Scalars are reduced with
       ``axis=None`` (the mean over replicas); other values as before.

    The wrappers are installed once per process, only while the wrapped Keras sources are the
    ones they were written for (:data:`PATCHED_TF_SOURCES`); otherwise a warning is logged and
    Keras is left alone.

    Returns:
        ``True`` when the wrappers are installed (now or before), ``False`` when Keras's code
        has changed and nothing was patched.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "patch_tf_multi_worker_fit applies to the tensorflow backend only; the backend is "
            f"{keras.backend.backend()!r}."
        )
    trainer = _tf_trainer_module()
    if getattr(trainer.reduce_per_replica, _PATCHED_FLAG, False):
        return True
    current = tf_multi_worker_sources()
    changed = [name for name, digest in PATCHED_TF_SOURCES.items() if current[name] != digest]
    if changed:
        _log.warning(
            "Keras %s changed %s; the MultiWorkerMirroredStrategy work-around in "
            "keras_gdkd.compat was not applied (fit may fail if Keras still has the bug).",
            keras.__version__,
            ", ".join(changed),
        )
        return False

    import tensorflow as tf
    from keras import tree

    multi_worker = trainer._collective_all_reduce_multi_worker
    original_build = trainer.TensorFlowTrainer._maybe_symbolic_build
    original_reduce = trainer.reduce_per_replica

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or strategy is None or not multi_worker(strategy):
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            data_batch = tree.map_structure(
                lambda value: (
                    strategy.experimental_local_results(value)[0]
                    if isinstance(value, tf.distribute.DistributedValues)
                    else value
                ),
                batch,
            )
            break
        return original_build(self, iterator=None, data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not multi_worker(strategy):
            return original_reduce(values, strategy, reduction)

        def reduce(value):
            if getattr(value, "shape", None) is not None and value.shape.rank == 0:
                return strategy.reduce("MEAN", value, axis=None)
            return original_reduce(value, strategy, reduction)

        return tree.map_structure(reduce, values)

    for wrapper, original in (
        (_maybe_symbolic_build, original_build),
        (reduce_per_replica, original_reduce),
    ):
        wrapper.__wrapped__ = original
        setattr(wrapper, _PATCHED_FLAG, True)
    trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    # Looked up as a module global at call time by the compiled train/test steps.
    trainer.reduce_per_replica = reduce_per_replica
    return True


def _tf_trainer_module() -> Any:
    from keras.src.backend.tensorflow import trainer

    return trainer


def _original(function: Any) -> Any:
    return getattr(function, "__wrapped__", function)
