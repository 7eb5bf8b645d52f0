"""Zoo models as plain Keras models: ``.keras`` files that load without ``keras_gdkd``."""

from __future__ import annotations

from collections.abc import Iterator

import keras

from .blocks import TorchBatchNormalization, draw_on_host


def _custom_objects(config, path: str = "model") -> Iterator[str]:
    """Where a serialized config names a class that is not part of Keras."""
    if isinstance(config, dict):
        module = config.get("module")
        if "class_name" in config and isinstance(module, str):
            if module != "keras" and not module.startswith("keras."):
                name = config.get("registered_name") or f"{module}.{config['class_name']}"
                yield f"{path}: {name}"
        for key, value in config.items():
            yield from _custom_objects(value, f"{path}.{key}")
    elif isinstance(config, list | tuple):
        for i, value in enumerate(config):
            yield from _custom_objects(value, f"{path}[{i}]")


def export_model(model: keras.Model) -> keras.Model:
    """An equivalent model built only from core Keras objects, for saving and sharing.

    The zoo's layers are core Keras layers except :class:`TorchBatchNormalization` (PyTorch's
    moving-variance update, a training-time difference only); it becomes a plain
    ``keras.layers.BatchNormalization`` with ``synchronized=False`` (Keras accepts
    ``synchronized=True`` on TensorFlow only). Every layer keeps its name, weights (moving
    statistics included) and dtype policy, so the outputs are the same and the PyTorch importer
    still maps the result by name. A ``.keras`` file of the result loads with
    ``keras.saving.load_model`` on any backend without importing ``keras_gdkd``.

    Args:
        model: a functional or ``Sequential`` model, typically from
            :func:`keras_gdkd.models.get_model` (trained or not).

    Returns:
        A new ``keras.Model``; ``model`` is left unchanged.

    Raises:
        ValueError: if ``model`` is subclassed (it cannot be cloned layer by layer) or holds a
            layer or object that has no core Keras equivalent (its path in the config is named).

    Example:

    >>> student = keras_gdkd.models.get_model("resnet8x4")
    >>> keras_gdkd.models.export_model(student).save("student.keras")
    >>> keras.saving.load_model("student.keras")  # plain Keras, any backend
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"export_model needs a keras.Model, got {type(model).__name__}")
    undos = []

    def clone_layer(layer: keras.Layer) -> keras.Layer:
        config = layer.get_config()  # keeps the name and the dtype policy
        if isinstance(layer, TorchBatchNormalization):
            config["synchronized"] = False
            clone = keras.layers.BatchNormalization.from_config(config)
        elif isinstance(layer, keras.layers.BatchNormalization):
            config["synchronized"] = False
            clone = layer.__class__.from_config(config)
        else:
            clone = layer.__class__.from_config(config)
        # The weights are copied below; drawing them with Keras's RandomNormal would compile one
        # random kernel per shape on JAX.
        undos.append(draw_on_host(clone))
        return clone

    try:
        exported = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    except ValueError as error:
        raise ValueError(
            f"export_model needs a functional or Sequential model, got {type(model).__name__} "
            f"({error})"
        ) from error
    finally:
        for undo in undos:
            undo()
    source, target = model.weights, exported.weights
    if [tuple(w.shape) for w in source] != [tuple(w.shape) for w in target]:
        raise ValueError(f"the export of {model.name!r} does not hold the same weights")
    # Host copies: on JAX, a training step may later donate (delete) the source buffers.
    for src, dst in zip(source, target, strict=True):
        dst.assign(keras.ops.convert_to_numpy(src.value))
    custom = list(_custom_objects(keras.saving.serialize_keras_object(exported)))
    if custom:
        raise ValueError(
            f"{model.name!r} holds objects that are not core Keras, so its export would need "
            "them to load: " + "; ".join(custom)
        )
    return exported
