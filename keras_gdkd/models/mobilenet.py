"""MobileNets of the DKD/CRD code base.

* ``mobilenetv2``: mdistiller ``cifar/mobilenetv2.py`` ``mobile_half`` (width 0.5, expansion 6) for
  32x32 inputs: 3x3 stride-2 stem (``conv1.0/1``), seven groups of inverted residuals
  (``blocks.i.j``, each ``conv.0..7`` = 1x1 expand -> BN -> ReLU -> 3x3 depthwise -> BN -> ReLU ->
  1x1 project -> BN; the expand conv exists even at expansion 1), 1x1 conv to 1280 (``conv2.0/1``),
  average pool, ``classifier.0``.
* ``mobilenetv1``: mdistiller ``imagenet/mobilenetv1.py`` (``model.0`` stem, ``model.1..13``
  depthwise-separable blocks, 7x7 average pool at 224x224, ``fc``).
"""

from __future__ import annotations

import keras
from keras import layers

from .blocks import classifier_head, conv_bn

# (expansion t, channels c, blocks n, first stride s) before the width multiplier.
_V2_SETTINGS = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)


def inverted_residual(x, out_channels: int, *, stride: int, expansion: int, name: str):
    """mdistiller ``InvertedResidual`` (torch module path ``name``)."""
    in_channels = x.shape[-1]
    hidden = in_channels * expansion
    out = conv_bn(x, hidden, 1, conv_name=f"{name}_conv_0", bn_name=f"{name}_conv_1")
    out = conv_bn(
        out, None, 3, stride=stride, padding=1, conv_name=f"{name}_conv_3",
        bn_name=f"{name}_conv_4",
    )  # fmt: skip
    out = conv_bn(
        out, out_channels, 1, conv_name=f"{name}_conv_6", bn_name=f"{name}_conv_7",
        activation=False,
    )  # fmt: skip
    if stride == 1 and in_channels == out_channels:
        out = layers.Add(name=f"{name}_add")([x, out])
    return out


def mobilenet_v2(
    *,
    expansion: int = 6,
    width_mult: float = 0.5,
    num_classes: int = 100,
    input_shape: tuple = (32, 32, 3),
    name: str = "mobilenetv2",
) -> keras.Model:
    """mdistiller ``MobileNetV2(T=expansion, feature_dim=num_classes, width_mult=width_mult)``."""
    inputs = keras.Input(input_shape, name="images")
    channels = int(32 * width_mult)
    x = conv_bn(inputs, channels, 3, stride=2, padding=1, conv_name="conv1_0", bn_name="conv1_1")
    for group, (t, c, n, s) in enumerate(_V2_SETTINGS):
        for i in range(n):
            x = inverted_residual(
                x,
                int(c * width_mult),
                stride=s if i == 0 else 1,
                expansion=expansion if t is None else t,
                name=f"blocks_{group}_{i}",
            )
    last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
    x = conv_bn(x, last_channels, 1, conv_name="conv2_0", bn_name="conv2_1")
    outputs = classifier_head(x, num_classes, name="classifier_0")
    return keras.Model(inputs, outputs, name=name)


# (output channels, stride) of the 13 depthwise-separable blocks model.1 .. model.13.
_V1_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1),
    (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)  # fmt: skip


def mobilenet_v1(
    *,
    num_classes: int = 1000,
    input_shape: tuple = (224, 224, 3),
    name: str = "mobilenetv1",
) -> keras.Model:
    """mdistiller ImageNet ``MobileNetV1`` (width 1.0)."""
    inputs = keras.Input(input_shape, name="images")
    x = conv_bn(inputs, 32, 3, stride=2, padding=1, conv_name="model_0_0", bn_name="model_0_1")
    for i, (channels, stride) in enumerate(_V1_BLOCKS, start=1):
        x = conv_bn(
            x, None, 3, stride=stride, padding=1, conv_name=f"model_{i}_0",
            bn_name=f"model_{i}_1",
        )  # fmt: skip
        x = conv_bn(x, channels, 1, conv_name=f"model_{i}_3", bn_name=f"model_{i}_4")
    outputs = classifier_head(x, num_classes, name="fc")
    return keras.Model(inputs, outputs, name=name)


def mobilenetv2(num_classes: int = 100, input_shape: tuple = (32, 32, 3)) -> keras.Model:
    """CIFAR MobileNetV2, width 0.5, expansion 6 (mdistiller ``mobile_half``)."""
    return mobilenet_v2(num_classes=num_classes, input_shape=input_shape)


def mobilenetv1(num_classes: int = 1000, input_shape: tuple = (224, 224, 3)) -> keras.Model:
    """ImageNet MobileNetV1."""
    return mobilenet_v1(num_classes=num_classes, input_shape=input_shape)


CIFAR_BUILDERS = {"mobilenetv2": mobilenetv2}
IMAGENET_BUILDERS = {"mobilenetv1": mobilenetv1}
