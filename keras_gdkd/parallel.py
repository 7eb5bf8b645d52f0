"""Data-parallel training over several accelerators and processes (the one backend-specific module).

Build the models, the :class:`~keras_gdkd.Distiller` and ``compile`` inside :func:`data_parallel`
and call ``fit`` there too::

    with keras_gdkd.parallel.data_parallel() as setup:
        teacher = sync_batchnorm(get_model("resnet32x4"))
        student = sync_batchnorm(get_model("resnet8x4"))
        distiller = keras_gdkd.Distiller(teacher, student, loss=keras_gdkd.GDKD())
        distiller.compile(optimizer=..., weighted_metrics=["accuracy"])
        distiller.fit(dataset, epochs=...)  # dataset batches are *global* batches
        distiller.evaluate(pad_for_evaluation(test_ds, batch_size, num_examples=10_000))

* **JAX**: ``keras.distribution.DataParallel`` over all accelerators (``XLA`` sees every local
  GPU/TPU). Variables are replicated, each global batch is split along its first axis and the
  compiled step is one SPMD program, so means over the batch (the losses, BatchNorm's batch
  statistics) are means over the *global* batch: BatchNorm is synchronized with no extra work.
* **TensorFlow**: ``tf.distribute.MirroredStrategy`` over all GPUs, or
  ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set. Keras splits each global batch
  across the replicas and sums their gradients; the Distiller divides its loss by the replica
  count as Keras's compiled losses do. BatchNorm must be made synchronized with
  :func:`sync_batchnorm` to use global batch statistics (the authors trained with SyncBN).
* **PyTorch**: single device only (Keras's torch backend has no data-parallel ``fit``); the
  context manager changes nothing.

Several processes (hosts): every process runs the same program; it calls
:func:`initialize_multi_host` before anything else touches the backend, then builds and fits on
the same global ``tf.data`` stream, of which Keras gives each process its share. Evaluation needs
batches of one static size on every process: :func:`pad_for_evaluation`. Every process takes
part in each collective step. In Keras 3 ``save_weights`` and ``save`` inside
:func:`data_parallel` are such steps (they build a throw-away optimizer, whose variables are
created on all devices), on JAX and on TensorFlow multi-worker alike: every process must call
them, each with its own file (one file written by two processes fails), e.g.
``BackupAndRestore`` with one directory per :func:`process_index`. After leaving the context
(checked on JAX) only the :func:`is_primary` process needs to save.

TensorFlow and PyTorch are imported lazily, and only under their own backend.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras

__all__ = [
    "ParallelSetup",
    "data_parallel",
    "initialize_multi_host",
    "is_primary",
    "pad_for_evaluation",
    "process_count",
    "process_index",
    "sync_batchnorm",
]

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
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Join a multi-process (multi-host) cluster; call it first thing in every process.

    Every process of the cluster runs the same program with its own ``process_id``; each then
    builds, compiles and fits inside :func:`data_parallel` on the *same* global ``tf.data``
    stream (same order, same global batch size): Keras gives every process its shard of each
    global batch. Evaluation datasets must yield the same number of equally sized batches on
    every process: see :func:`pad_for_evaluation`. Use :func:`is_primary` to let one process
    write files.

    **JAX**: ``keras.distribution.initialize`` (i.e. ``jax.distributed.initialize``) before
    anything touches JAX. Arguments left ``None`` come from ``KERAS_DISTRIBUTION_JOB_ADDRESSES``,
    ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and ``KERAS_DISTRIBUTION_PROCESS_ID``; when none is set
    at all JAX looks for a cluster itself (Cloud TPU, SLURM, Open MPI). On CPU the processes
    exchange data through Gloo collectives (the default of recent JAX, e.g. 0.10; set here
    when an older JAX has none). Calling it again with the same values is a no-op.

    **TensorFlow**: the cluster is described by the ``TF_CONFIG`` environment variable
    (``MultiWorkerMirroredStrategy``), so the three arguments must be ``None``. This creates
    the strategy, which must exist before TensorFlow runs any op, and installs
    :func:`keras_gdkd.compat.patch_tf_multi_worker_fit`, without which Keras 3's ``fit`` fails
    under that strategy (keras-team/keras#20585).

    **PyTorch**: not supported (Keras's torch backend trains on one device).

    Args:
        coordinator: ``"host:port"`` of process 0, which every process can reach (a
            comma-separated list of all processes' addresses is accepted; its first entry is
            the coordinator).
        num_processes: number of processes in the cluster.
        process_id: this process's index, ``0 <= process_id < num_processes``; process 0 is
            the coordinator.

    Raises:
        ValueError: for missing, inconsistent or malformed values, for arguments given on
            TensorFlow or without ``TF_CONFIG``, or on the torch backend.

    Example:

    ```python
    # On host 0 (host 1 runs the same with process_id=1):
    keras_gdkd.parallel.initialize_multi_host("10.0.0.1:1234", num_processes=2, process_id=0)
    with keras_gdkd.parallel.data_parallel():
        ...  # build, compile, fit on the global batches
    ```
    """
    backend = keras.backend.backend()
    if backend == "jax":
        _jax_initialize(coordinator, num_processes, process_id)
    elif backend == "tensorflow":
        given = {
            "coordinator": coordinator,
            "num_processes": num_processes,
            "process_id": process_id,
        }
        given = {k: v for k, v in given.items() if v is not None}
        if given:
            raise ValueError(
                "On TensorFlow the cluster is described by the TF_CONFIG environment variable; "
                f"coordinator/num_processes/process_id are for JAX, got {given}. Set TF_CONFIG, "
                "or use KERAS_BACKEND=jax with these values."
            )
        _tf_cluster()  # validates TF_CONFIG
        _tf_multi_worker_strategy()
    else:
        raise ValueError(
            f"Multi-host training is not supported on the {backend} backend (Keras's torch "
            "backend trains on a single device). Use KERAS_BACKEND=jax with "
            "coordinator/num_processes/process_id (CLI: --coordinator, --num-processes, "
            "--process-id), or TensorFlow with TF_CONFIG."
        )


def process_index() -> int:
    """Index of this process in a multi-process run: ``0`` when there is only one.

    JAX: ``jax.process_index()`` once :func:`initialize_multi_host` (``jax.distributed``) has
    run, else ``0``. TensorFlow: the task's position in ``TF_CONFIG`` (the ``chief``, if any,
    is 0, then the ``worker`` tasks in order), else ``0``. PyTorch: ``0``.

    It initialises nothing (no JAX backend, no TensorFlow runtime), so it can be called anywhere,
    e.g. before :func:`initialize_multi_host` (which then may change the answer on JAX).
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return int(jax.process_index()) if jax.distributed.is_initialized() else 0
    if backend == "tensorflow" and os.environ.get("TF_CONFIG"):
        return _tf_cluster()[0]
    return 0


def process_count() -> int:
    """Number of processes in a multi-process run: ``1`` when there is only one.

    The same sources as :func:`process_index`: ``jax.process_count()`` after
    :func:`initialize_multi_host` on JAX, the ``chief`` and ``worker`` tasks of ``TF_CONFIG``
    on TensorFlow, else ``1``.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return int(jax.process_count()) if jax.distributed.is_initialized() else 1
    if backend == "tensorflow" and os.environ.get("TF_CONFIG"):
        return _tf_cluster()[1]
    return 1


def is_primary() -> bool:
    """Whether this process should write the run's files (logs, exports): process 0.

    Example:

    ```python
    if keras_gdkd.parallel.is_primary():
        model.save("student.keras")
    ```
    """
    return process_index() == 0


def pad_for_evaluation(
    dataset: Any,
    global_batch_size: int,
    num_examples: int | None = None,
    *,
    batched: bool | None = None,
) -> Any:
    """Batches of a static size whose padding has weight 0, for exact distributed evaluation.

    A multi-process evaluation needs every process to run the same number of steps on batches of
    the same, statically known size: Keras splits each global batch between the processes
    (``keras.distribution.DataParallel``) and refuses a batch dimension it cannot infer. A
    dataset whose size is not a multiple of the batch ends with a short batch, which one process
    receives and the other not, and the run hangs or returns wrong numbers. This rebatches the
    ``(x, y)`` pairs into batches of exactly ``global_batch_size`` examples (a static batch
    dimension), pads the last one with zeros, and adds a ``sample_weight`` that is ``1.0`` for
    real examples and ``0.0`` for padding.

    What is then exact in ``Model.evaluate`` (tested on TensorFlow, JAX and PyTorch):

    * **Metrics given as ``weighted_metrics``** in ``compile``: e.g. ``weighted_metrics=
      ["accuracy", keras.metrics.SparseCategoricalCrossentropy(from_logits=True)]`` give the
      accuracy and mean cross-entropy over the real examples only, equal to an unpadded
      evaluation. Metrics given as ``metrics=[...]`` are **not** weighted by Keras 3 and count
      the padding.
    * **The ``loss``** is not: Keras averages each batch's loss, ``sum(w * loss) / batch_size``
      for the default ``"sum_over_batch_size"`` reduction (the :class:`~keras_gdkd.Distiller`'s
      too), over the batches weighted by their size, so the reported loss is the exact mean times
      ``num_examples / padded_size`` (``padded_size`` = the number of batches times
      ``global_batch_size``). ``"mean_with_sample_weight"`` divides each batch by its weight
      sum but still averages the batches with equal weight, so it is not exact either. Use a
      weighted cross-entropy metric (above) or rescale the loss.

    Args:
        dataset: a ``tf.data.Dataset`` of ``(x, y)`` or ``(x, y, sample_weight)``, batched
            (any batch size, last batch partial or not) or not; ``x`` and ``y`` may be nested
            structures. Existing sample weights are kept for real examples.
        global_batch_size: examples per batch over all processes and devices (the same value on
            every process; divisible by the number of processes).
        num_examples: the number of examples in ``dataset``. The result then has a known
            cardinality of ``ceil(num_examples / global_batch_size)`` batches, and iterating it
            fails if the dataset yields another number of batches. Default: the size when
            ``tf.data`` knows it (an unbatched dataset, or batches of a static size), else
            unknown. Give it on TensorFlow: when the number of batches is unknown, Keras's
            TensorFlow ``evaluate`` runs one more step that finds no data, and its loss tracker
            still adds that step's (static) batch size to its count, so the ``loss`` log comes
            out too small (weighted metrics are not affected).
        batched: whether ``dataset`` is batched. Default: inferred from the element spec, batched
            when every component has a leading dimension and those dimensions agree (unknown or
            equal); pass it when an unbatched element looks like that.

    Returns:
        A ``tf.data.Dataset`` of ``(x, y, sample_weight)`` with batch dimension
        ``global_batch_size`` and ``sample_weight`` of dtype ``float32`` and shape
        ``(global_batch_size,)``.

    Raises:
        ValueError: if ``global_batch_size`` or ``num_examples`` is not a positive integer, or
            the elements are not ``(x, y)`` or ``(x, y, sample_weight)`` tuples.

    Example:

    ```python
    test = keras_gdkd.parallel.pad_for_evaluation(test_ds, 256, num_examples=10_000)
    model.compile(..., weighted_metrics=["accuracy"])
    logs = model.evaluate(test, return_dict=True)  # accuracy over the 10,000 examples
    ```
    """
    import tensorflow as tf

    if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, int):
        raise ValueError(f"global_batch_size must be an int, got {global_batch_size!r}.")
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}.")
    if num_examples is not None and (
        isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1
    ):
        raise ValueError(f"num_examples must be a positive int or None, got {num_examples!r}.")
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(f"Expected a tf.data.Dataset, got {type(dataset).__name__}.")
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) not in (2, 3):
        raise ValueError(
            "pad_for_evaluation expects a dataset of (x, y) or (x, y, sample_weight) tuples; "
            f"its elements are {spec}."
        )
    if batched is None:
        batched = _looks_batched(spec)
    if num_examples is None:
        num_examples = _known_size(dataset, batched)
    if batched:
        dataset = dataset.rebatch(global_batch_size)
    else:
        dataset = dataset.batch(global_batch_size)

    def pad(*element):
        x, y = element[0], element[1]
        size = tf.shape(tf.nest.flatten(x)[0])[0]
        if len(element) == 3:
            weight = tf.reshape(tf.cast(element[2], tf.float32), [-1])
        else:
            weight = tf.ones([size], tf.float32)
        missing = global_batch_size - size

        def pad_tensor(tensor):
            zeros = tf.zeros(tf.concat([[missing], tf.shape(tensor)[1:]], 0), tensor.dtype)
            padded = tf.concat([tensor, zeros], 0)
            if tensor.shape.rank is not None:
                padded = tf.ensure_shape(padded, [global_batch_size, *tensor.shape[1:]])
            return padded

        return (
            tf.nest.map_structure(pad_tensor, x),
            tf.nest.map_structure(pad_tensor, y),
            pad_tensor(weight),
        )

    dataset = dataset.map(pad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if num_examples is not None:
        dataset = dataset.apply(
            tf.data.experimental.assert_cardinality(-(-num_examples // global_batch_size))
        )
    return dataset


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

    from keras_gdkd import compat

    if None not in _TF_STRATEGIES:
        _tf_cluster()  # a clear error for a malformed TF_CONFIG
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as error:
            # "Collective ops must be configured at program startup": TensorFlow ran ops first.
            raise ValueError(
                "TF_CONFIG is set, so TensorFlow trains multi-worker, but its "
                "MultiWorkerMirroredStrategy must be created before TensorFlow runs any op: call "
                "keras_gdkd.parallel.initialize_multi_host() first thing in the program (CLI: "
                f"--multi-host), or unset TF_CONFIG. ({error})"
            ) from error
        compat.patch_tf_multi_worker_fit()
        _TF_STRATEGIES[None] = strategy
    return _TF_STRATEGIES[None]


def _tf_cluster() -> tuple[int, int]:
    """(process index, process count) of the ``chief`` + ``worker`` tasks in ``TF_CONFIG``."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        raise ValueError(
            "Multi-worker training with TensorFlow is configured by the TF_CONFIG environment "
            "variable (MultiWorkerMirroredStrategy), which is not set. Or use KERAS_BACKEND=jax "
            "with --coordinator/--num-processes/--process-id."
        )
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        kind, index = str(task["type"]), int(task["index"])
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host:port", ...]}, '
            f'"task": {{"type": "worker", "index": 0}}}}; got {raw!r} ({error}).'
        ) from error
    offsets = {"chief": (0, len(chiefs)), "worker": (len(chiefs), len(workers))}
    if kind not in offsets or not 0 <= index < offsets[kind][1]:
        raise ValueError(
            f"TF_CONFIG's task {task} is not one of its {len(chiefs)} chief and {len(workers)} "
            "worker tasks (data-parallel training runs chief and worker tasks only)."
        )
    return offsets[kind][0] + index, len(chiefs) + len(workers)


def _jax_initialize(
    coordinator: str | None, num_processes: int | None, process_id: int | None
) -> None:
    import jax

    coordinator = coordinator or os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES") or None
    num_processes = _int_setting(num_processes, "num_processes", "KERAS_DISTRIBUTION_NUM_PROCESSES")
    process_id = _int_setting(process_id, "process_id", "KERAS_DISTRIBUTION_PROCESS_ID")
    if coordinator is not None:
        addresses = [a.strip() for a in str(coordinator).split(",")]
        for address in addresses:
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(
                    f"The coordinator address must be 'host:port' (e.g. '10.0.0.1:1234'); got "
                    f"{address!r} in {coordinator!r}."
                )
        if len(addresses) > 1:
            if num_processes is not None and num_processes != len(addresses):
                raise ValueError(
                    f"{len(addresses)} job addresses ({coordinator!r}) but num_processes is "
                    f"{num_processes}."
                )
            num_processes = len(addresses)
        coordinator = addresses[0]
    values = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    missing = [name for name, value in values.items() if value is None]
    if missing and len(missing) < len(values):
        raise ValueError(
            f"Multi-host JAX needs coordinator, num_processes and process_id together; "
            f"{', '.join(missing)} missing (given: "
            f"{ {k: v for k, v in values.items() if v is not None} }). Pass them, or set "
            "KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES and "
            "KERAS_DISTRIBUTION_PROCESS_ID."
        )
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}.")
    if process_id is not None and not 0 <= process_id < num_processes:
        raise ValueError(
            f"process_id must be in [0, num_processes - 1] = [0, {num_processes - 1}], "
            f"got {process_id}."
        )
    if jax.distributed.is_initialized():
        current = (jax.process_count(), jax.process_index())
        if missing or (num_processes, process_id) == current:
            return
        raise ValueError(
            f"jax.distributed is already initialized as process {current[1]} of {current[0]}; "
            f"cannot re-initialize as process {process_id} of {num_processes}."
        )
    # Cross-process collectives on CPU: Gloo (recent JAX's default; older ones have none).
    if getattr(jax.config, "jax_cpu_collectives_implementation", "gloo") in (None, "none"):
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        keras.distribution.initialize(
            job_addresses=coordinator, num_processes=num_processes, process_id=process_id
        )
    except ValueError as error:
        if not missing:
            raise
        raise ValueError(
            "JAX found no cluster to join (no Cloud TPU, SLURM or Open MPI environment). Give "
            "coordinator ('host:port' of process 0), num_processes and process_id (CLI: "
            "--coordinator, --num-processes, --process-id) or the KERAS_DISTRIBUTION_* "
            f"environment variables. ({error})"
        ) from error


def _int_setting(value: int | None, name: str, variable: str) -> int | None:
    if value is None:
        raw = os.environ.get(variable, "").strip()
        if not raw:
            return None
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{variable} must be an integer, got {raw!r}.") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}.")
    return value


def _known_size(dataset: Any, batched: bool) -> int | None:
    """The number of examples when ``tf.data`` knows it without reading the data."""
    import tensorflow as tf

    count = int(dataset.cardinality())
    if count < 0:
        return None
    if not batched:
        return count or None
    shapes = [component.shape for component in tf.nest.flatten(dataset.element_spec)]
    leading = {shape[0] if shape.rank else None for shape in shapes}
    size = leading.pop() if len(leading) == 1 else None
    return count * size if size and count else None


def _looks_batched(spec: Any) -> bool:
    import tensorflow as tf

    leading = []
    for component in tf.nest.flatten(spec):
        shape = getattr(component, "shape", None)
        if shape is None or shape.rank is None or shape.rank == 0:
            return False
        leading.append(shape[0])
    known = {d for d in leading if d is not None}
    return len(known) <= 1 and (not known or None not in leading)


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
