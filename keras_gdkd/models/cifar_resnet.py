"""CIFAR ResNets of the DKD/CRD code base (mdistiller ``cifar/resnet.py``, ``cifar/resnetv2.py``).

* ``resnet{8,14,20,32,44,56,110}``: depth ``6n + 2``, basic blocks, 3x3 stem of 16 channels, stages
  16/32/64; ``resnet8x4`` / ``resnet32x4``: stem 32, stages 64/128/256. The shortcut is a 1x1 conv +
  BN whenever the shape changes (torch ``layerK.0.downsample``), never the zero-padding "option A".
* ``resnet18_cifar`` / ``resnet50_cifar``: the ImageNet block layout (64..512 channels, four stages)
  with a 3x3 stride-1 stem and no max-pool; torch names ``shortcut`` and ``linear``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from .blocks import classifier_head, conv_bn, resnet_stage


def cifar_resnet(
    depth: int,
    widths: Sequence[int] = (16, 16, 32, 64),
    *,
    num_classes: int = 100,
    input_shape: tuple = (32, 32, 3),
    name: str = "resnet",
) -> keras.Model:
    """mdistiller ``ResNet(depth, num_filters=widths, "basicblock")``."""
    if (depth - 2) % 6:
        raise ValueError(f"depth must be 6n + 2, got {depth}")
    n = (depth - 2) // 6
    inputs = keras.Input(input_shape, name="images")
    x = conv_bn(inputs, widths[0], 3, padding=1, conv_name="conv1", bn_name="bn1")
    for stage, planes in enumerate(widths[1:]):
        x = resnet_stage(x, planes, n, stride=1 if stage == 0 else 2, name=f"layer{stage + 1}")
    outputs = classifier_head(x, num_classes, name="fc")
    return keras.Model(inputs, outputs, name=name)


def cifar_resnet_v2(
    num_blocks: Sequence[int],
    *,
    bottleneck: bool = False,
    num_classes: int = 100,
    input_shape: tuple = (32, 32, 3),
    name: str = "resnet_cifar",
) -> keras.Model:
    """mdistiller ``resnetv2.ResNet``: ImageNet-style stages on a 3x3 stride-1 stem."""
    inputs = keras.Input(input_shape, name="images")
    x = conv_bn(inputs, 64, 3, padding=1, conv_name="conv1", bn_name="bn1")
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), num_blocks, strict=True)):
        x = resnet_stage(
            x,
            planes,
            blocks,
            stride=1 if stage == 0 else 2,
            bottleneck=bottleneck,
            shortcut_name="shortcut",
            name=f"layer{stage + 1}",
        )
    outputs = classifier_head(x, num_classes, name="linear")
    return keras.Model(inputs, outputs, name=name)


def _depth_builder(depth: int, widths: Sequence[int], name: str):
    def build(num_classes: int = 100, input_shape: tuple = (32, 32, 3)) -> keras.Model:
        return cifar_resnet(
            depth, widths, num_classes=num_classes, input_shape=input_shape, name=name
        )

    build.__doc__ = f"CIFAR ``{name}`` (depth {depth}, widths {tuple(widths)})."
    return build


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)

BUILDERS = {
    f"resnet{depth}": _depth_builder(depth, _NARROW, f"resnet{depth}")
    for depth in (8, 14, 20, 32, 44, 56, 110)
}
BUILDERS["resnet8x4"] = _depth_builder(8, _WIDE, "resnet8x4")
BUILDERS["resnet32x4"] = _depth_builder(32, _WIDE, "resnet32x4")


def resnet18_cifar(num_classes: int = 100, input_shape: tuple = (32, 32, 3)) -> keras.Model:
    """mdistiller ``ResNet18`` for CIFAR (basic blocks 2-2-2-2)."""
    return cifar_resnet_v2(
        (2, 2, 2, 2), num_classes=num_classes, input_shape=input_shape, name="resnet18_cifar"
    )


def resnet50_cifar(num_classes: int = 100, input_shape: tuple = (32, 32, 3)) -> keras.Model:
    """mdistiller ``ResNet50`` for CIFAR (bottleneck blocks 3-4-6-3)."""
    return cifar_resnet_v2(
        (3, 4, 6, 3),
        bottleneck=True,
        num_classes=num_classes,
        input_shape=input_shape,
        name="resnet50_cifar",
    )


BUILDERS["resnet18_cifar"] = resnet18_cifar
BUILDERS["resnet50_cifar"] = resnet50_cifar
