"""ImageNet ResNets in the torchvision layout (the keys of torchvision's published weights).

7x7 stride-2 stem (padding 3) -> BN -> ReLU -> 3x3 stride-2 max-pool (padding 1) -> four stages of
basic (resnet18/34) or bottleneck (resnet50, stride on the 3x3 conv, "ResNet v1.5") blocks ->
global average pool -> ``fc``. mdistiller's ImageNet ResNet moves each ReLU to the start of the next
block, which computes the same function.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from .blocks import classifier_head, conv_bn, resnet_stage


def imagenet_resnet(
    num_blocks: Sequence[int],
    *,
    bottleneck: bool = False,
    num_classes: int = 1000,
    input_shape: tuple = (224, 224, 3),
    name: str = "resnet",
) -> keras.Model:
    """torchvision ``ResNet(block, layers)``."""
    inputs = keras.Input(input_shape, name="images")
    x = conv_bn(inputs, 64, 7, stride=2, padding=3, conv_name="conv1", bn_name="bn1")
    # Zero padding equals torch's -inf padding here: the input is post-ReLU (>= 0).
    x = layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), num_blocks, strict=True)):
        x = resnet_stage(
            x,
            planes,
            blocks,
            stride=1 if stage == 0 else 2,
            bottleneck=bottleneck,
            name=f"layer{stage + 1}",
        )
    outputs = classifier_head(x, num_classes, name="fc")
    return keras.Model(inputs, outputs, name=name)


def resnet18(num_classes: int = 1000, input_shape: tuple = (224, 224, 3)) -> keras.Model:
    """torchvision ``resnet18``."""
    return imagenet_resnet(
        (2, 2, 2, 2), num_classes=num_classes, input_shape=input_shape, name="resnet18"
    )


def resnet34(num_classes: int = 1000, input_shape: tuple = (224, 224, 3)) -> keras.Model:
    """torchvision ``resnet34``."""
    return imagenet_resnet(
        (3, 4, 6, 3), num_classes=num_classes, input_shape=input_shape, name="resnet34"
    )


def resnet50(num_classes: int = 1000, input_shape: tuple = (224, 224, 3)) -> keras.Model:
    """torchvision ``resnet50`` (v1.5)."""
    return imagenet_resnet(
        (3, 4, 6, 3),
        bottleneck=True,
        num_classes=num_classes,
        input_shape=input_shape,
        name="resnet50",
    )


BUILDERS = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}
