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
from collections.abc import Callable

import keras
import numpy as np
from keras import layers, ops

# PyTorch BatchNorm2d defaults (eps 1e-5, momentum 0.1 == Keras momentum 0.9).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="keras_gdkd")
class TorchBatchNormalization(layers.BatchNormalization):
    """``BatchNormalization`` whose moving variance follows ``torch.nn.BatchNorm2d``.

    Both frameworks normalize a training batch with its biased variance (sum of squares / N), but
    PyTorch updates ``running_var`` with the unbiased one (sum / (N - 1)) while Keras uses the
    biased one. This layer multiplies the batch variance by ``N / (N - 1)`` in the moving-variance
    update only, ``N`` being the number of values per channel (batch x height x width). Inference,
    the normalization itself, the weights and the config are those of
    ``keras.layers.BatchNormalization`` (``synchronized`` and mixed precision included);
    :func:`keras_gdkd.models.export_model` turns it back into the core layer.

    With ``synchronized=True`` under ``tf.distribute``, ``N`` is the per-replica count while the
    variance is global (Keras exposes no replica count to layers), so the correction is
    ``n / (n - 1)`` rather than ``R n / (R n - 1)``; it matters only for very small per-replica
    batches. A mask falls back to Keras's own (biased) update. Batch renormalization is not
    supported.

    Example:

    >>> bn = TorchBatchNormalization(epsilon=1e-5, momentum=0.9)
    >>> y = bn(np.random.normal(size=(8, 4, 4, 3)).astype("float32"), training=True)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if getattr(self, "renorm", False):  # not an attribute in the oldest supported Keras
            raise ValueError(
                "TorchBatchNormalization does not support renorm=True (PyTorch's BatchNorm has "
                "no batch renormalization); use keras.layers.BatchNormalization instead."
            )

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        # Statistics in float32 even under mixed precision, as the parent layer does.
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        rank = len(x.shape)
        axes = [a for a in range(rank) if a != self.axis % rank]
        mean, variance = ops.moments(x, axes=axes, synchronized=self.synchronized)
        shape = ops.shape(x)
        count = 1
        for a in axes:  # static ints where known, a scalar tensor for a dynamic batch axis
            count = count * shape[a]
        if isinstance(count, int):  # no extra ops in the step when the shape is static
            unbiased = variance * (count / max(count - 1, 1))
        else:
            count = ops.cast(count, variance.dtype)
            unbiased = variance * (count / ops.maximum(count - 1.0, 1.0))
        momentum = self.momentum
        self.moving_mean.assign(
            ops.cast(self.moving_mean, mean.dtype) * momentum + mean * (1.0 - momentum)
        )
        self.moving_variance.assign(
            ops.cast(self.moving_variance, variance.dtype) * momentum + unbiased * (1.0 - momentum)
        )
        outputs = ops.batch_normalization(
            x,
            mean=mean,
            variance=variance,
            axis=self.axis,
            offset=None if self.beta is None else ops.cast(self.beta, x.dtype),
            scale=None if self.gamma is None else ops.cast(self.gamma, x.dtype),
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)


class _HostDraw(keras.initializers.Initializer):
    """Draws a core ``RandomNormal`` / ``RandomUniform`` distribution with NumPy, at build time.

    Why: on the JAX backend every new kernel shape compiles its own random kernel (about a second
    each on a small CPU), so a MobileNetV2 would spend most of a minute in XLA while being built.
    NumPy's global generator is seeded by ``keras.utils.set_random_seed`` as well. The layer keeps
    the core initializer in its config; this object is never serialized.
    """

    def __init__(self, core: keras.initializers.Initializer):
        self.core = core

    def __call__(self, shape, dtype=None):
        config = self.core.get_config()
        if isinstance(self.core, keras.initializers.RandomNormal):
            value = np.random.normal(config["mean"], config["stddev"], size=shape)
        elif isinstance(self.core, keras.initializers.RandomUniform):
            value = np.random.uniform(config["minval"], config["maxval"], size=shape)
        else:
            return self.core(shape, dtype=dtype)
        return ops.convert_to_tensor(value, dtype=dtype or "float32")


_INITIALIZER_ATTRIBUTES = ("kernel_initializer", "depthwise_initializer")


def draw_on_host(layer: keras.Layer) -> Callable[[], None]:
    """Makes ``layer``'s random initializers draw with NumPy until the returned undo is called.

    Call it before the layer is built and the undo after; the config, before and after, names
    only the core initializers.
    """
    originals = {}
    for attribute in _INITIALIZER_ATTRIBUTES:
        core = getattr(layer, attribute, None)
        if isinstance(core, keras.initializers.RandomNormal | keras.initializers.RandomUniform):
            originals[attribute] = core
            setattr(layer, attribute, _HostDraw(core))

    def undo() -> None:
        for attribute, core in originals.items():
            setattr(layer, attribute, core)

    return undo


def _build_on_host(layer: keras.Layer, x):
    """``layer(x)`` with the weights drawn by NumPy (see :class:`_HostDraw`)."""
    undo = draw_on_host(layer)
    try:
        return layer(x)
    finally:
        undo()


def conv_initializer(kernel_size: int, out_channels: int) -> keras.initializers.Initializer:
    """He-normal with fan-out ``k * k * out_channels``, the reference models' conv init.

    A plain ``RandomNormal``: Keras's ``VarianceScaling`` would count a depthwise kernel's fan-out
    as ``k * k`` instead of the reference's ``k * k * channels``.
    """
    return keras.initializers.RandomNormal(stddev=math.sqrt(2.0 / (kernel_size**2 * out_channels)))


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
    conv = layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding=pad,
        groups=groups,
        use_bias=use_bias,
        kernel_initializer=conv_initializer(kernel_size, filters),
        name=name,
    )
    return _build_on_host(conv, x)


def depthwise_conv2d(x, kernel_size: int, *, name: str, stride: int = 1, padding: int = 0):
    """``nn.Conv2d(C, C, kernel_size, stride, padding, groups=C, bias=False)``."""
    channels = x.shape[-1]
    x, pad = _torch_padding(x, kernel_size, stride, padding, name)
    conv = layers.DepthwiseConv2D(
        kernel_size,
        strides=stride,
        padding=pad,
        use_bias=False,
        depthwise_initializer=conv_initializer(kernel_size, channels),
        name=name,
    )
    return _build_on_host(conv, x)


def batch_norm(x, *, name: str):
    """``nn.BatchNorm2d`` (or ``BatchNorm1d``) with PyTorch's epsilon, momentum and update."""
    return TorchBatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)(x)


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


def linear(x, units: int, *, name: str, dtype=None):
    """``nn.Linear`` with PyTorch's default init (uniform +-1/sqrt(fan_in)); bias zero.

    The zoo passes ``dtype="float32"`` for classifiers: under a mixed-precision policy the logits
    then stay float32 (float16 overflows above 65504, bfloat16 ties close logits), as in
    keras-hub; the layer casts its low-precision input up.
    """
    bound = 1.0 / math.sqrt(x.shape[-1])
    dense = layers.Dense(
        units,
        kernel_initializer=keras.initializers.RandomUniform(-bound, bound),
        dtype=dtype,
        name=name,
    )
    return _build_on_host(dense, x)


def classifier_head(x, num_classes: int, *, name: str):
    """Global average pooling (the reference's full-size average pool) -> flatten -> linear.

    The linear layer computes in float32 whatever the dtype policy (see :func:`linear`).
    """
    x = layers.GlobalAveragePooling2D(name=f"{name}_avgpool")(x)
    return linear(x, num_classes, name=name, dtype="float32")


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


def channel_shuffle(x, groups: int, *, name: str):
    """ShuffleNet channel shuffle: NHWC twin of torch's ``view(N, g, C/g, H, W).transpose(1, 2)``.

    Output channel ``j * g + i`` is input channel ``i * (C / g) + j``: splitting the last axis as
    ``(g, C/g)`` and swapping the two factors permutes exactly the channels the NCHW version does.
    Built from core ``Reshape`` / ``Permute`` layers so saved models need no custom objects;
    ``Reshape`` takes one unknown axis, so at least one of height and width must be static.
    """
    height, width, channels = x.shape[1:]
    if height is None and width is None:
        raise ValueError(
            f"channel shuffle {name!r} needs a static height or width, got input shape {x.shape}"
        )
    if channels % groups:
        raise ValueError(f"{channels} channels do not split into {groups} groups ({name!r})")
    spatial = (-1 if height is None else height, -1 if width is None else width)
    x = layers.Reshape((*spatial, groups, channels // groups), name=f"{name}_groups")(x)
    x = layers.Permute((1, 2, 4, 3), name=name)(x)
    return layers.Reshape((*spatial, channels), name=f"{name}_merge")(x)


def channel_slice(x, start: int, stop: int | None = None, *, name: str):
    """Channels ``[start:stop]`` of an NHWC tensor (ShuffleNetV2's channel split).

    A core ``Cropping2D`` told the data is channels-first crops the last two axes, i.e. width
    (not at all) and channels here: a core-layer slice that accepts any spatial size.
    """
    channels = x.shape[-1]
    begin, end, _ = slice(start, stop).indices(channels)
    if end <= begin:
        raise ValueError(f"empty channel slice [{start}:{stop}] of {channels} channels ({name!r})")
    return layers.Cropping2D(
        ((0, 0), (begin, channels - end)), data_format="channels_first", name=name
    )(x)
