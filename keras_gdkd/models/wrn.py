"""Wide ResNets WRN-d-k of the DKD/CRD code base (mdistiller ``cifar/wrn.py``), dropout 0.

Pre-activation blocks: BN -> ReLU -> 3x3 conv(stride) -> BN -> ReLU -> 3x3 conv, added to the input,
or, when the width changes, to a 1x1 conv (``convShortcut``) of the *pre-activated* input. After the
three groups (16k, 32k, 64k channels): BN -> ReLU -> global average pool -> ``fc``.
"""

from __future__ import annotations

import keras
from keras import layers

from .blocks import batch_norm, classifier_head, conv2d, conv_bn, relu


def wrn_block(x, out_planes: int, *, stride: int, name: str):
    """mdistiller ``wrn.BasicBlock`` (torch module path ``name``)."""
    equal_in_out = x.shape[-1] == out_planes
    pre = relu(batch_norm(x, name=f"{name}_bn1"), name=f"{name}_relu1")
    out = conv_bn(
        pre, out_planes, 3, stride=stride, padding=1, conv_name=f"{name}_conv1",
        bn_name=f"{name}_bn2",
    )  # fmt: skip
    out = conv2d(out, out_planes, 3, padding=1, name=f"{name}_conv2")
    if equal_in_out:
        shortcut = x
    else:
        shortcut = conv2d(pre, out_planes, 1, stride=stride, name=f"{name}_convShortcut")
    return layers.Add(name=f"{name}_add")([shortcut, out])


def wide_resnet(
    depth: int,
    widen_factor: int,
    *,
    num_classes: int = 100,
    input_shape: tuple = (32, 32, 3),
    name: str = "wrn",
) -> keras.Model:
    """mdistiller ``WideResNet(depth, num_classes, widen_factor)``; depth must be ``6n + 4``."""
    if (depth - 4) % 6:
        raise ValueError(f"depth must be 6n + 4, got {depth}")
    n = (depth - 4) // 6
    inputs = keras.Input(input_shape, name="images")
    x = conv2d(inputs, 16, 3, padding=1, name="conv1")
    for group, width in enumerate((16, 32, 64)):
        for i in range(n):
            stride = 2 if group > 0 and i == 0 else 1
            x = wrn_block(
                x, width * widen_factor, stride=stride, name=f"block{group + 1}_layer_{i}"
            )
    x = relu(batch_norm(x, name="bn1"), name="bn1_relu")
    outputs = classifier_head(x, num_classes, name="fc")
    return keras.Model(inputs, outputs, name=name)


def _builder(depth: int, widen_factor: int):
    name = f"wrn_{depth}_{widen_factor}"

    def build(num_classes: int = 100, input_shape: tuple = (32, 32, 3)) -> keras.Model:
        return wide_resnet(
            depth, widen_factor, num_classes=num_classes, input_shape=input_shape, name=name
        )

    build.__doc__ = f"WRN-{depth}-{widen_factor} for CIFAR."
    return name, build


BUILDERS = dict(_builder(d, k) for d, k in ((16, 1), (16, 2), (40, 1), (40, 2)))
