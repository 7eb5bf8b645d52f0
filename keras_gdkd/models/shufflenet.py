"""CIFAR ShuffleNets of the DKD/CRD code base (mdistiller ``cifar/ShuffleNetv{1,2}.py``).

Both start with a 1x1 conv to 24 channels (``conv1``/``bn1``, no down-sampling, no max-pool) and end
with a global average pool (the reference's 4x4 pool at 32x32) and ``linear``.

* ``shufflenetv1``: groups 3, stages 240/480/960 with 4/8/4 bottlenecks; each stage's first block
  has stride 2 and concatenates a 3x3 average-pooled shortcut (padding 1, zeros counted) to its
  output.
* ``shufflenetv2``: net size 1 (stages 116/232/464, 1x1 head conv to 1024); each stage is a
  down-sampling block (``layerK.0``) followed by 3/7/3 split blocks.
"""

from __future__ import annotations

import keras
from keras import layers

from .blocks import channel_shuffle, channel_slice, classifier_head, conv_bn, relu


def shufflev1_block(x, out_planes: int, *, stride: int, groups: int, name: str):
    """mdistiller ``ShuffleNetv1.Bottleneck``; ``out_planes`` excludes the concatenated shortcut."""
    in_planes = x.shape[-1]
    mid = out_planes // 4
    g = 1 if in_planes == 24 else groups  # the stem output is not grouped
    out = conv_bn(x, mid, 1, groups=g, conv_name=f"{name}_conv1", bn_name=f"{name}_bn1")
    if g > 1:
        out = channel_shuffle(out, g, name=f"{name}_shuffle1")
    out = conv_bn(
        out, None, 3, stride=stride, padding=1, conv_name=f"{name}_conv2",
        bn_name=f"{name}_bn2",
    )  # fmt: skip
    out = conv_bn(
        out, out_planes, 1, groups=groups, conv_name=f"{name}_conv3", bn_name=f"{name}_bn3",
        activation=False,
    )  # fmt: skip
    if stride == 2:
        # nn.AvgPool2d(3, 2, padding=1) counts the padded zeros (count_include_pad=True).
        res = layers.ZeroPadding2D(1, name=f"{name}_shortcut_pad")(x)
        res = layers.AveragePooling2D(3, strides=2, name=f"{name}_shortcut")(res)
        out = layers.Concatenate(name=f"{name}_cat")([out, res])
    else:
        out = layers.Add(name=f"{name}_add")([out, x])
    return relu(out, name=f"{name}_out")


def shufflenet_v1(
    *,
    stages: tuple = (240, 480, 960),
    num_blocks: tuple = (4, 8, 4),
    groups: int = 3,
    num_classes: int = 100,
    input_shape: tuple = (32, 32, 3),
    name: str = "shufflenetv1",
) -> keras.Model:
    """mdistiller ``ShuffleV1``."""
    inputs = keras.Input(input_shape, name="images")
    x = conv_bn(inputs, 24, 1, conv_name="conv1", bn_name="bn1")
    for stage, (planes, blocks) in enumerate(zip(stages, num_blocks, strict=True)):
        for i in range(blocks):
            cat_planes = x.shape[-1] if i == 0 else 0
            x = shufflev1_block(
                x,
                planes - cat_planes,
                stride=2 if i == 0 else 1,
                groups=groups,
                name=f"layer{stage + 1}_{i}",
            )
    outputs = classifier_head(x, num_classes, name="linear")
    return keras.Model(inputs, outputs, name=name)


def shufflev2_down_block(x, out_channels: int, *, name: str):
    """mdistiller ``ShuffleNetv2.DownBlock``: two stride-2 branches, concatenated and shuffled."""
    mid = out_channels // 2
    left = conv_bn(
        x, None, 3, stride=2, padding=1, conv_name=f"{name}_conv1", bn_name=f"{name}_bn1",
        activation=False,
    )  # fmt: skip
    left = conv_bn(left, mid, 1, conv_name=f"{name}_conv2", bn_name=f"{name}_bn2")
    right = conv_bn(x, mid, 1, conv_name=f"{name}_conv3", bn_name=f"{name}_bn3")
    right = conv_bn(
        right, None, 3, stride=2, padding=1, conv_name=f"{name}_conv4", bn_name=f"{name}_bn4",
        activation=False,
    )  # fmt: skip
    right = conv_bn(right, mid, 1, conv_name=f"{name}_conv5", bn_name=f"{name}_bn5")
    out = layers.Concatenate(name=f"{name}_cat")([left, right])
    return channel_shuffle(out, 2, name=f"{name}_shuffle")


def shufflev2_basic_block(x, *, name: str):
    """mdistiller ``ShuffleNetv2.BasicBlock``: split in half, transform the second half, shuffle."""
    channels = x.shape[-1]
    half = channels // 2
    x1 = channel_slice(x, 0, half, name=f"{name}_split0")
    x2 = channel_slice(x, half, None, name=f"{name}_split1")
    out = conv_bn(x2, channels - half, 1, conv_name=f"{name}_conv1", bn_name=f"{name}_bn1")
    out = conv_bn(
        out, None, 3, padding=1, conv_name=f"{name}_conv2", bn_name=f"{name}_bn2",
        activation=False,
    )  # fmt: skip
    out = conv_bn(out, channels - half, 1, conv_name=f"{name}_conv3", bn_name=f"{name}_bn3")
    out = layers.Concatenate(name=f"{name}_cat")([x1, out])
    return channel_shuffle(out, 2, name=f"{name}_shuffle")


def shufflenet_v2(
    *,
    stages: tuple = (116, 232, 464),
    num_blocks: tuple = (3, 7, 3),
    head_channels: int = 1024,
    num_classes: int = 100,
    input_shape: tuple = (32, 32, 3),
    name: str = "shufflenetv2",
) -> keras.Model:
    """mdistiller ``ShuffleV2`` (net size 1)."""
    inputs = keras.Input(input_shape, name="images")
    x = conv_bn(inputs, 24, 1, conv_name="conv1", bn_name="bn1")
    for stage, (channels, blocks) in enumerate(zip(stages, num_blocks, strict=True)):
        x = shufflev2_down_block(x, channels, name=f"layer{stage + 1}_0")
        for i in range(1, blocks + 1):
            x = shufflev2_basic_block(x, name=f"layer{stage + 1}_{i}")
    x = conv_bn(x, head_channels, 1, conv_name="conv2", bn_name="bn2")
    outputs = classifier_head(x, num_classes, name="linear")
    return keras.Model(inputs, outputs, name=name)


def shufflenetv1(num_classes: int = 100, input_shape: tuple = (32, 32, 3)) -> keras.Model:
    """CIFAR ShuffleNetV1 (groups 3)."""
    return shufflenet_v1(num_classes=num_classes, input_shape=input_shape)


def shufflenetv2(num_classes: int = 100, input_shape: tuple = (32, 32, 3)) -> keras.Model:
    """CIFAR ShuffleNetV2 (net size 1)."""
    return shufflenet_v2(num_classes=num_classes, input_shape=input_shape)


BUILDERS = {"shufflenetv1": shufflenetv1, "shufflenetv2": shufflenetv2}
