"""VGG with batch norm for CIFAR from the DKD/CRD code base (mdistiller ``cifar/vgg.py``, ``*_bn``).

Five conv groups (torch ``block0`` .. ``block4``; each conv has a bias and is followed by BN and
ReLU) separated by 2x2 max-pools; the pool between ``block3`` and ``block4`` is applied only to
64x64 inputs, as in the reference, so 32x32 inputs reach ``block4`` at 4x4. Then global average pool
-> ``classifier`` (512 -> classes).
"""

from __future__ import annotations

import keras
from keras import layers

from .blocks import batch_norm, conv2d, linear, relu

CONFIGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": (
        (64, 64),
        (128, 128),
        (256, 256, 256, 256),
        (512, 512, 512, 512),
        (512, 512, 512, 512),
    ),
}


def vgg(
    config: tuple,
    *,
    num_classes: int = 100,
    input_shape: tuple = (32, 32, 3),
    name: str = "vgg",
) -> keras.Model:
    """mdistiller ``VGG(cfg, batch_norm=True)``; ``config`` lists each group's conv widths."""
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for group, widths in enumerate(config):
        for i, width in enumerate(widths):
            # torch Sequential indices: conv 3i, BN 3i + 1, ReLU 3i + 2.
            x = conv2d(x, width, 3, padding=1, use_bias=True, name=f"block{group}_{3 * i}")
            x = batch_norm(x, name=f"block{group}_{3 * i + 1}")
            x = relu(x, name=f"block{group}_relu{i}")
        if group < 3 or (group == 3 and input_shape[0] == 64):
            x = layers.MaxPooling2D(2, strides=2, name=f"pool{group}")(x)
    x = layers.GlobalAveragePooling2D(name="pool4")(x)
    outputs = linear(x, num_classes, name="classifier", dtype="float32")
    return keras.Model(inputs, outputs, name=name)


def _builder(name: str):
    def build(num_classes: int = 100, input_shape: tuple = (32, 32, 3)) -> keras.Model:
        return vgg(CONFIGS[name], num_classes=num_classes, input_shape=input_shape, name=name)

    build.__doc__ = f"CIFAR ``{name}`` with batch norm (mdistiller ``{name}_bn``)."
    return build


BUILDERS = {name: _builder(name) for name in CONFIGS}
