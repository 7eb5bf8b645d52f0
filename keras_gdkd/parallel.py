"""Data-parallel training over several accelerators (the library's one backend-specific module).

Build the models, the :class:`~keras_gdkd.Distiller` and ``compile`` inside :func:`data_parallel`
and call ``fit`` there too::

    with keras_gdkd.parallel.data_parallel() as setup:
        teacher = sync_batchnorm(get_model("resnet32x4"))
        student = sync_batchnorm(get_model("resnet8x4"))
        distiller = keras_gdkd.Distiller(teacher, student, loss=keras_gdkd.GDKD())
        distiller.compile(optimizer=...)
        distiller.fit(dataset, epochs=...)  # dataset batches are *global* batches

* **JAX**: ``keras.distribution.DataParallel`` over all accelerators (``XLA`` sees every local
  GPU/TPU). Variables are replicated, each global batch is split along its first axis and the
  compiled step is one SPMD program, so means over the batch (the losses, BatchNorm's batch
  statistics) are means over the *global* batch: BatchNorm is synchronized with no extra work.
  Several hosts: launch one process per host, call :func:`initialize_multi_host` (i.e.
  ``keras.distribution.initialize()``, which starts ``jax.distributed``) before anything else
  touches JAX; the distribution then spans all global devices and Keras gives each process its
  shard of every global ``tf.data`` batch.
* **TensorFlow**: ``tf.distribute.MirroredStrategy`` over all GPUs, or
  ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set. Keras splits each global batch
  across the replicas and sums their gradients; the Distiller divides its loss by the replica
  count as Keras's compiled losses do. BatchNorm must be made synchronized with
  :func:`sync_batchnorm` to use global batch statistics (the authors trained with SyncBN).
* **PyTorch**: single device only (Keras's torch backend has no data-parallel ``fit``); the
  context manager changes nothing.

TensorFlow and PyTorch are imported lazily, and only under their own backend.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras

__all__ = ["ParallelSetup", "data_parallel", "initialize_multi_host", "sync_batchnorm"]

_log = logging.getLogger(__name__)

# One tf.distribute strategy per device set and process: a second MirroredStrategy over the same
# devices reuses the first one's collective keys, and its all-reduces then fail with "Shape
# mismatch in the collective instance" (tensorflow/tensorflow#62790).
_TF_STRATEGIES: dict[tuple[str, ...] | None, Any] = {}


@dataclass(frozen=True)
class ParallelSetup:
    """What :func:`data_parallel` set up.

    Attributes:
        backend: the Keras backend name.
        kind: ``"single"``, ``"jax-data-parallel"``, ``"tf-mirrored"`` or ``"tf-multi-worker"``.
        num_replicas: number of model replicas (devices) one global batch is split over.
        devices: the devices used (empty when the backend picks its default device).
        strategy: the ``tf.distribute.Strategy`` in use (TensorFlow only, else ``None``).
        distribution: the ``keras.distribution.DataParallel`` in use (JAX only, else ``None``).
    """

    backend: str
    kind: str
    num_replicas: int
    devices: tuple[str, ...] = ()
    strategy: Any = None
    distribution: Any = None


@contextlib.contextmanager
def data_parallel(devices: Sequence[str] | None = None) -> Iterator[ParallelSetup]:
    """Context for data-parallel training: build, compile and ``fit`` inside it.

    Args:
        devices: device names (JAX: ``"gpu:0"``; TensorFlow: ``"/gpu:0"``). Default: every
            accelerator (JAX: ``keras.distribution.list_devices()``, global devices under
            ``jax.distributed``; TensorFlow: all logical GPUs). Fewer than two devices means
            single-device training; a single named device is used through ``keras.device``.
            Under ``TF_CONFIG`` (multi-worker) TensorFlow picks the devices itself and
            ``devices`` must be ``None``.

    Yields:
        A :class:`ParallelSetup`. The batch size of the data given to ``fit`` is the *global*
        batch (split over ``num_replicas`` devices), so the learning rate of a preset needs no
        change; scale it with ``keras_gdkd.optimizers.scale_lr`` when changing the batch.

    BatchNorm: on JAX the SPMD step computes batch statistics over the global batch by itself;
    on TensorFlow wrap the models in :func:`sync_batchnorm` (inside this context).

    On PyTorch this always yields a single-device setup (with a warning when several CUDA
    devices are visible or requested): Keras's torch backend trains on one device.
    """
    devices = None if devices is None else [str(d) for d in devices]
    backend = keras.backend.backend()
    if backend == "jax":
        context = _jax_data_parallel(devices)
    elif backend == "tensorflow":
        context = _tf_data_parallel(devices)
    else:
        context = _single_device(backend, devices)
    with context as setup:
        yield setup


def initialize_multi_host(
    job_addresses: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Join a multi-host cluster; call it first thing in every process (CLI ``--multi-host``).

    JAX: ``keras.distribution.initialize`` (``jax.distributed.initialize``); the arguments may
    instead come from ``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``KERAS_DISTRIBUTION_NUM_PROCESSES``
    and ``KERAS_DISTRIBUTION_PROCESS_ID``, or be found by JAX itself (Cloud TPU, SLURM).
    :func:`data_parallel` then spans the devices of all hosts.

    TensorFlow: multi-worker training is configured by the ``TF_CONFIG`` environment variable;
    this checks that it is set and creates the ``MultiWorkerMirroredStrategy`` (which must exist
    before TensorFlow runs any op) that :func:`data_parallel` then enters. PyTorch: not
    supported.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        keras.distribution.initialize(
            job_addresses=job_addresses, num_processes=num_processes, process_id=process_id
        )
    elif backend == "tensorflow":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError(
                "Multi-host training with TensorFlow is configured by the TF_CONFIG environment "
                "variable (MultiWorkerMirroredStrategy), which is not set."
            )
        _tf_multi_worker_strategy()  # must exist before TensorFlow runs any op
    else:
        raise NotImplementedError(
            f"Multi-host training is not supported on the {backend} backend; use JAX or TensorFlow."
        )


def sync_batchnorm(model: keras.Model, synchronized: bool | None = None) -> keras.Model:
    """A clone of ``model`` whose BatchNorm layers use global batch statistics on TensorFlow.

    Under ``tf.distribute`` each replica normalizes with the statistics of its own slice of the
    batch unless the layer is ``BatchNormalization(synchronized=True)``, which all-reduces the
    sums across replicas (like PyTorch's SyncBatchNorm in the authors' runs). The clone keeps
    every layer name (the PyTorch weight importer maps by name) and all weights, moving
    statistics included; inference outputs are unchanged.

    Args:
        model: a functional or ``Sequential`` model (nested ones are cloned recursively).
        synchronized: ``None`` (default): synchronize when the current ``tf.distribute``
            strategy has more than one replica, so call it inside :func:`data_parallel`, after
            building the model; otherwise the model is returned unchanged. ``True``: always
            synchronize. ``False``: undo (e.g. before saving a ``.keras`` file that other
            backends should load: Keras refuses ``synchronized=True`` outside TensorFlow).

    On JAX and PyTorch the model is returned unchanged: JAX's SPMD step already computes batch
    statistics over the global batch, and PyTorch trains on a single device.
    ``synchronized`` is part of the layer config, so a ``.keras`` file keeps it (on TensorFlow).
    """
    if keras.backend.backend() != "tensorflow":
        return model
    if synchronized is None:
        import tensorflow as tf

        synchronized = tf.distribute.get_strategy().num_replicas_in_sync > 1
        if not synchronized:
            return model
    target = bool(synchronized)
    if not any(
        isinstance(layer, keras.layers.BatchNormalization) and layer.synchronized != target
        for layer in _all_layers(model)
    ):
        return model

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()  # keeps the layer name
        if isinstance(layer, keras.layers.BatchNormalization):
            config["synchronized"] = target
        return layer.__class__.from_config(config)

    try:
        clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    except ValueError as error:  # subclassed models cannot be cloned layer by layer
        raise ValueError(
            "sync_batchnorm needs a functional or Sequential model; for a subclassed model "
            f"({type(model).__name__}) build its BatchNormalization layers with "
            f"synchronized=True. ({error})"
        ) from error
    _copy_weights(model, clone)
    return clone


# --- backends ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _jax_data_parallel(devices: list[str] | None) -> Iterator[ParallelSetup]:
    named = devices is not None
    if devices is None:
        devices = list(keras.distribution.list_devices())  # global devices, accelerators first
    if len(devices) < 2:
        with _single_device("jax", devices if named else None) as setup:
            yield setup
        return
    distribution = keras.distribution.DataParallel(devices=devices)
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(distribution)
    try:
        yield ParallelSetup(
            backend="jax",
            kind="jax-data-parallel",
            num_replicas=int(distribution.num_model_replicas),
            devices=tuple(devices),
            distribution=distribution,
        )
    finally:
        keras.distribution.set_distribution(previous)


@contextlib.contextmanager
def _tf_data_parallel(devices: list[str] | None) -> Iterator[ParallelSetup]:
    import tensorflow as tf

    if os.environ.get("TF_CONFIG"):
        if devices is not None:
            raise ValueError(
                "With TF_CONFIG set (multi-worker training), TensorFlow uses all local GPUs of "
                f"every worker; `devices` must be None, got {devices}."
            )
        strategy = _tf_multi_worker_strategy()
        kind = "tf-multi-worker"
    else:
        named = devices is not None
        if devices is None:
            devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if len(devices) < 2:
            with _single_device("tensorflow", devices if named else None) as setup:
                yield setup
            return
        key = tuple(devices)
        strategy = _TF_STRATEGIES.get(key)
        if strategy is None:
            strategy = _TF_STRATEGIES[key] = tf.distribute.MirroredStrategy(devices)
        kind = "tf-mirrored"
    with strategy.scope():
        yield ParallelSetup(
            backend="tensorflow",
            kind=kind,
            num_replicas=int(strategy.num_replicas_in_sync),
            devices=tuple(devices or ()),
            strategy=strategy,
        )


def _tf_multi_worker_strategy() -> Any:
    import tensorflow as tf

    if None not in _TF_STRATEGIES:
        _TF_STRATEGIES[None] = tf.distribute.MultiWorkerMirroredStrategy()
    return _TF_STRATEGIES[None]


@contextlib.contextmanager
def _single_device(backend: str, devices: list[str] | None) -> Iterator[ParallelSetup]:
    if backend == "torch":
        import torch

        available = len(devices) if devices is not None else torch.cuda.device_count()
        if available > 1:
            _log.warning(
                "The torch backend trains on a single device (%d devices %s); use JAX or "
                "TensorFlow for data-parallel training.",
                available,
                "requested" if devices is not None else "visible",
            )
            devices = devices[:1] if devices is not None else None
    if devices:
        # One named device: honour it on every backend.
        with keras.device(devices[0]):
            yield ParallelSetup(
                backend=backend, kind="single", num_replicas=1, devices=(devices[0],)
            )
    else:
        yield ParallelSetup(backend=backend, kind="single", num_replicas=1)


# --- helpers ----------------------------------------------------------------------------------


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    layers: list[keras.layers.Layer] = []
    for layer in model.layers:
        layers.append(layer)
        if isinstance(layer, keras.Model):
            layers.extend(_all_layers(layer))
    return layers


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    """Copies weights layer by layer, matched by name (the clone keeps every name)."""
    for layer in source.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())
