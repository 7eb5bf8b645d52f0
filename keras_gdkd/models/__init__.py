"""Model zoo: the CIFAR and ImageNet architectures of the DKD/CRD papers as Keras models.

``get_model(name)`` builds a channels-last model that returns logits; ``load_torch_weights`` fills
it from a PyTorch checkpoint of the reference implementation (mdistiller / torchvision keys);
``export_model`` turns a zoo model into plain Keras layers for ``.keras`` files that load without
this package.
"""

from __future__ import annotations

from collections.abc import Callable

import keras

from . import cifar_resnet, imagenet_resnet, mobilenet, shufflenet, vgg, wrn
from .blocks import TorchBatchNormalization
from .export import export_model
from .torch_import import LoadReport, load_torch_weights, read_state_dict, torch_key_table

CIFAR_INPUT_SHAPE = (32, 32, 3)
IMAGENET_INPUT_SHAPE = (224, 224, 3)

_CIFAR: dict[str, Callable[..., keras.Model]] = {
    **cifar_resnet.BUILDERS,
    **wrn.BUILDERS,
    **vgg.BUILDERS,
    **mobilenet.CIFAR_BUILDERS,
    **shufflenet.BUILDERS,
}
_IMAGENET: dict[str, Callable[..., keras.Model]] = {
    **imagenet_resnet.BUILDERS,
    **mobilenet.IMAGENET_BUILDERS,
}
_ORDER = (
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "mobilenetv2", "shufflenetv1", "shufflenetv2",
    "resnet18_cifar", "resnet50_cifar", "resnet18", "resnet34", "resnet50", "mobilenetv1",
)  # fmt: skip
assert set(_ORDER) == set(_CIFAR) | set(_IMAGENET)


def available() -> list[str]:
    """Names accepted by :func:`get_model` (CIFAR models first, then ImageNet models)."""
    return list(_ORDER)


def is_imagenet(name: str) -> bool:
    """True for the ImageNet architectures (default 1000 classes, 224x224 input)."""
    return name in _IMAGENET


def get_model(
    name: str, num_classes: int | None = None, input_shape: tuple | None = None
) -> keras.Model:
    """Builds architecture ``name`` (see :func:`available`) as a Keras model returning logits.

    Args:
        name: architecture name, e.g. ``"resnet32x4"``, ``"wrn_40_2"``, ``"resnet34"``.
        num_classes: classifier size; default 100 for CIFAR models, 1000 for ImageNet models.
        input_shape: NHWC input shape without the batch axis; default ``(32, 32, 3)`` for CIFAR
            models, ``(224, 224, 3)`` for ImageNet models.
    """
    if name in _CIFAR:
        builder, classes, shape = _CIFAR[name], 100, CIFAR_INPUT_SHAPE
    elif name in _IMAGENET:
        builder, classes, shape = _IMAGENET[name], 1000, IMAGENET_INPUT_SHAPE
    else:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}")
    return builder(
        num_classes=classes if num_classes is None else num_classes,
        input_shape=shape if input_shape is None else tuple(input_shape),
    )


__all__ = [
    "LoadReport",
    "TorchBatchNormalization",
    "available",
    "export_model",
    "get_model",
    "is_imagenet",
    "load_torch_weights",
    "read_state_dict",
    "torch_key_table",
]
