"""The model zoo: names, parameter counts, golden logits of the reference PyTorch models."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_gdkd.models import available, get_model, is_imagenet, load_torch_weights
from keras_gdkd.models.blocks import ChannelShuffle, ChannelSlice

NAMES = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "mobilenetv2", "shufflenetv1", "shufflenetv2",
    "resnet18_cifar", "resnet50_cifar", "resnet18", "resnet34", "resnet50", "mobilenetv1",
]  # fmt: skip
FIXTURES = [
    "resnet8", "resnet8x4", "wrn_16_2", "vgg8", "mobilenetv2", "shufflenetv1", "shufflenetv2",
    "resnet18", "mobilenetv1",
]  # fmt: skip


def infer(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Eval-mode logits (``training=False``) as NumPy.

    On JAX, eager calls dispatch (and compile) every op separately, which costs seconds per model;
    ``predict_on_batch`` compiles the graph once and is also an inference-mode call.
    """
    if keras.backend.backend() == "jax":
        return keras.ops.convert_to_numpy(model.predict_on_batch(x))
    return keras.ops.convert_to_numpy(model(x, training=False))


def _trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_available_names():
    assert available() == NAMES


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="unknown model 'resnet9'.*resnet8x4.*mobilenetv1"):
        get_model("resnet9")


@pytest.mark.parametrize("name", NAMES)
def test_param_count_and_defaults(name, shared_dir):
    expected = json.loads((shared_dir / "fixtures/models/param_counts.json").read_text())["params"]
    model = get_model(name)
    assert _trainable_count(model) == expected[name]
    side, classes = (224, 1000) if is_imagenet(name) else (32, 100)
    assert tuple(model.input_shape) == (None, side, side, 3)
    assert tuple(model.output_shape) == (None, classes)
    # Keras forbids "." in layer names on the torch backend.
    assert not [layer.name for layer in model.layers if "." in layer.name]


@pytest.mark.parametrize("name", FIXTURES)
def test_golden_logits(name, shared_dir):
    path = shared_dir / "fixtures/models" / f"{name}.npz"
    with np.load(path) as data:
        x, expected = data["__input__"], data["__logits__"]
    model = get_model(name, num_classes=expected.shape[1], input_shape=x.shape[1:])
    report = load_torch_weights(model, path)
    assert not (report.missing or report.unexpected or report.mismatched)
    logits = infer(model, x)
    deviation = float(np.max(np.abs(logits - expected)))
    print(f"[{keras.backend.backend()}] {name}: max |logits - reference| = {deviation:.3g}")
    assert deviation < 1e-4


def test_channel_shuffle_matches_torch_nchw_shuffle():
    # torch: x.reshape(N, g, C // g, H, W).permute(0, 2, 1, 3, 4).reshape(N, C, H, W), in NCHW.
    n, h, w, c, g = 2, 3, 4, 12, 3
    x = np.random.default_rng(0).normal(size=(n, h, w, c)).astype("float32")
    nchw = x.transpose(0, 3, 1, 2)
    ref = nchw.reshape(n, g, c // g, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w)
    out = keras.ops.convert_to_numpy(ChannelShuffle(g)(x))
    np.testing.assert_array_equal(out, ref.transpose(0, 2, 3, 1))
    halves = [keras.ops.convert_to_numpy(ChannelSlice(*s)(x)) for s in ((0, 5), (5, None))]
    np.testing.assert_array_equal(np.concatenate(halves, axis=-1), x)


def test_vgg_pools_before_block4_only_at_64px():
    shapes = {
        side: get_model("vgg8", input_shape=(side, side, 3)).get_layer("block4_0").input.shape
        for side in (32, 64)
    }
    assert shapes[32][1:3] == (4, 4) and shapes[64][1:3] == (4, 4)
