"""Building blocks shared by every architecture of the zoo.

Every weight-bearing layer is named after the PyTorch module path of the reference model with "."
replaced by "_" (``layer1.0.conv1`` -> ``layer1_0_conv1``): Keras forbids "." in layer names on the
torch backend, and the rule lets :mod:`keras_gdkd.models.torch_import` map state-dict keys without a
table per model. Layers without weights (padding, activations, pooling) get names that cannot be
mistaken for a torch module (``..._pad``, ``..._relu``).

Padding follows PyTorch: a convolution with ``padding=p`` pads ``p`` pixels on *both* sides.
At stride 1 with ``p = (k - 1) // 2`` that equals Keras "same"; at stride 2 it does not (Keras
pads only the far side of an even input), so those convolutions get an explicit ``ZeroPadding2D``.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers, ops

# PyTorch BatchNorm2d defaults (eps 1e-5, momentum 0.1 == Keras momentum 0.9).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="keras_gdkd")
class HostRandom(keras.initializers.Initializer):
    """Zero-mean normal (``stddev=scale``) or uniform (``+-scale``) init drawn with NumPy.

    Why not ``keras.initializers.RandomNormal``: on the JAX backend every new kernel shape compiles
    its own random kernel (~0.4 s each), so a MobileNetV2 spent most of a minute in XLA while being
    built. NumPy's global generator is seeded by ``keras.utils.set_random_seed`` as well.
    """

    def __init__(self, scale: float, distribution: str = "normal"):
        if distribution not in ("normal", "uniform"):
            raise ValueError(f"distribution must be 'normal' or 'uniform', got {distribution!r}")
        self.scale = float(scale)
        self.distribution = distribution

    def __call__(self, shape, dtype=None):
        if self.distribution == "normal":
            value = np.random.normal(0.0, self.scale, size=shape)
        else:
            value = np.random.uniform(-self.scale, self.scale, size=shape)
        return ops.convert_to_tensor(value, dtype=dtype or "float32")

    def get_config(self):
        return {"scale": self.scale, "distribution": self.distribution}


def conv_initializer(kernel_size: int, out_channels: int) -> keras.initializers.Initializer:
    """He-normal with fan-out ``k * k * out_channels``, the reference models' conv init."""
    return HostRandom(math.sqrt(2.0 / (kernel_size**2 * out_channels)))


def _torch_padding(x, kernel_size: int, stride: int, padding: int, name: str) -> tuple:
    """Returns ``(x, keras_padding)``: "same" when equivalent, else explicit zero padding."""
    if padding == 0:
        return x, "valid"
    if stride == 1 and 2 * padding == kernel_size - 1:
        return x, "same"
    return layers.ZeroPadding2D(padding, name=f"{name}_pad")(x), "valid"


def conv2d(
    x,
    filters: int,
    kernel_size: int,
    *,
    name: str,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    use_bias: bool = False,
):
    """``nn.Conv2d(in, filters, kernel_size, stride, padding, groups=groups, bias=use_bias)``."""
    x, pad = _torch_padding(x, kernel_size, stride, padding, name)
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding=pad,
        groups=groups,
        use_bias=use_bias,
        kernel_initializer=conv_initializer(kernel_size, filters),
        name=name,
    )(x)


def depthwise_conv2d(x, kernel_size: int, *, name: str, stride: int = 1, padding: int = 0):
    """``nn.Conv2d(C, C, kernel_size, stride, padding, groups=C, bias=False)``."""
    channels = x.shape[-1]
    x, pad = _torch_padding(x, kernel_size, stride, padding, name)
    return layers.DepthwiseConv2D(
        kernel_size,
        strides=stride,
        padding=pad,
        use_bias=False,
        depthwise_initializer=conv_initializer(kernel_size, channels),
        name=name,
    )(x)


def batch_norm(x, *, name: str):
    """``nn.BatchNorm2d`` (or ``BatchNorm1d``) with PyTorch's epsilon and momentum."""
    return layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


def relu(x, *, name: str):
    return layers.ReLU(name=name)(x)


def conv_bn(
    x,
    filters: int,
    kernel_size: int,
    *,
    conv_name: str,
    bn_name: str,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    activation: bool = True,
):
    """Conv (no bias) -> BatchNorm -> optional ReLU; ``filters=None`` means depthwise."""
    if filters is None:
        x = depthwise_conv2d(x, kernel_size, stride=stride, padding=padding, name=conv_name)
    else:
        x = conv2d(
            x, filters, kernel_size, stride=stride, padding=padding, groups=groups, name=conv_name
        )
    x = batch_norm(x, name=bn_name)
    return relu(x, name=f"{bn_name}_relu") if activation else x


def linear(x, units: int, *, name: str):
    """``nn.Linear`` with PyTorch's default init (uniform +-1/sqrt(fan_in)); bias zero."""
    bound = 1.0 / math.sqrt(x.shape[-1])
    return layers.Dense(
        units,
        kernel_initializer=HostRandom(bound, "uniform"),
        name=name,
    )(x)


def classifier_head(x, num_classes: int, *, name: str):
    """Global average pooling (the reference's full-size average pool) -> flatten -> linear."""
    x = layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x)
    return linear(x, num_classes, name=name)


def residual_block(
    x,
    planes: int,
    *,
    name: str,
    stride: int = 1,
    bottleneck: bool = False,
    shortcut_name: str = "downsample",
):
    """Post-activation ResNet block (basic or bottleneck) as in torchvision and mdistiller.

    Basic: 3x3(stride) -> BN -> ReLU -> 3x3 -> BN; bottleneck: 1x1 -> BN -> ReLU -> 3x3(stride)
    -> BN -> ReLU -> 1x1 (4 * planes) -> BN. The shortcut is a 1x1 conv + BN (torch modules
    ``{name}.{shortcut_name}.0/1``) when the shape changes, identity otherwise; ReLU after the sum.
    """
    in_channels = x.shape[-1]
    out_channels = planes * 4 if bottleneck else planes
    if bottleneck:
        out = conv_bn(x, planes, 1, conv_name=f"{name}_conv1", bn_name=f"{name}_bn1")
        out = conv_bn(
            out, planes, 3, stride=stride, padding=1, conv_name=f"{name}_conv2",
            bn_name=f"{name}_bn2",
        )  # fmt: skip
        out = conv_bn(
            out, out_channels, 1, conv_name=f"{name}_conv3", bn_name=f"{name}_bn3",
            activation=False,
        )  # fmt: skip
    else:
        out = conv_bn(
            x, planes, 3, stride=stride, padding=1, conv_name=f"{name}_conv1",
            bn_name=f"{name}_bn1",
        )  # fmt: skip
        out = conv_bn(
            out, planes, 3, padding=1, conv_name=f"{name}_conv2", bn_name=f"{name}_bn2",
            activation=False,
        )  # fmt: skip
    shortcut = x
    if stride != 1 or in_channels != out_channels:
        shortcut = conv_bn(
            x, out_channels, 1, stride=stride, conv_name=f"{name}_{shortcut_name}_0",
            bn_name=f"{name}_{shortcut_name}_1", activation=False,
        )  # fmt: skip
    out = layers.Add(name=f"{name}_add")([out, shortcut])
    return relu(out, name=f"{name}_out")


def resnet_stage(
    x,
    planes: int,
    num_blocks: int,
    *,
    name: str,
    stride: int = 1,
    bottleneck: bool = False,
    shortcut_name: str = "downsample",
):
    """``num_blocks`` residual blocks (torch ``{name}.0``, ``{name}.1``, ...); the first strides."""
    for i in range(num_blocks):
        x = residual_block(
            x,
            planes,
            stride=stride if i == 0 else 1,
            bottleneck=bottleneck,
            shortcut_name=shortcut_name,
            name=f"{name}_{i}",
        )
    return x


@keras.saving.register_keras_serializable(package="keras_gdkd")
class ChannelShuffle(layers.Layer):
    """ShuffleNet channel shuffle: NHWC twin of torch's ``view(N, g, C/g, H, W).transpose(1, 2)``.

    Output channel ``j * g + i`` is input channel ``i * (C / g) + j``: splitting the last axis as
    ``(g, C/g)`` and swapping the two factors permutes exactly the channels the NCHW version does.
    """

    def __init__(self, groups: int, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups

    def call(self, x):
        channels = x.shape[-1]
        per_group = channels // self.groups
        # A fixed gather keeps the layer free of dynamic reshapes (any batch and spatial size).
        perm = [i * per_group + j for j in range(per_group) for i in range(self.groups)]
        return ops.take(x, np.asarray(perm, dtype="int32"), axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package="keras_gdkd")
class ChannelSlice(layers.Layer):
    """Channels ``[start:stop]`` of an NHWC tensor (ShuffleNetV2's channel split)."""

    def __init__(self, start: int, stop: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.start = start
        self.stop = stop

    def call(self, x):
        return x[..., self.start : self.stop]

    def compute_output_shape(self, input_shape):
        channels = len(range(input_shape[-1])[self.start : self.stop])
        return (*input_shape[:-1], channels)

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}
