"""The model zoo: names, parameter counts, golden logits of the reference PyTorch models.

The golden cases live in ``tests/fixtures/models`` (seeded weights, a few kilobytes; see its
README), so they run in a plain clone; the larger stored fixtures of ``../shared`` are a second
check when that folder is present.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_gdkd.models import available, get_model, is_imagenet, load_torch_weights
from keras_gdkd.models.blocks import channel_shuffle, channel_slice
from tests.fixtures.models.golden import GOLDEN_JSON, golden_case, load_golden

NAMES = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "mobilenetv2", "shufflenetv1", "shufflenetv2",
    "resnet18_cifar", "resnet50_cifar", "resnet18", "resnet34", "resnet50", "mobilenetv1",
]  # fmt: skip
GOLDEN = sorted(load_golden()["models"])
SHARED_FIXTURES = [
    "resnet8", "resnet8x4", "wrn_16_2", "vgg8", "mobilenetv2", "shufflenetv1", "shufflenetv2",
    "resnet18", "mobilenetv1",
]  # fmt: skip
PARAM_COUNTS = GOLDEN_JSON.with_name("param_counts.json")


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
def test_param_count_and_defaults(name):
    expected = json.loads(PARAM_COUNTS.read_text())["params"]
    model = get_model(name)
    assert _trainable_count(model) == expected[name]
    side, classes = (224, 1000) if is_imagenet(name) else (32, 100)
    assert tuple(model.input_shape) == (None, side, side, 3)
    assert tuple(model.output_shape) == (None, classes)
    # Keras forbids "." in layer names on the torch backend.
    assert not [layer.name for layer in model.layers if "." in layer.name]


def test_param_counts_are_the_shared_ones(shared_dir):
    shared = json.loads((shared_dir / "fixtures/models/param_counts.json").read_text())
    assert json.loads(PARAM_COUNTS.read_text()) == shared


def test_golden_cases_cover_every_family():
    assert set(SHARED_FIXTURES) <= set(GOLDEN)
    assert {"resnet32x4", "wrn_40_2", "vgg13"} <= set(GOLDEN)  # teachers of the paper


@pytest.mark.parametrize("name", GOLDEN)
def test_golden_logits(name):
    state, x, expected = golden_case(name)
    model = get_model(name, num_classes=expected.shape[1], input_shape=x.shape[1:])
    report = load_torch_weights(model, state)  # strict: the key sets are equal
    assert len(report.loaded) == len(state)
    deviation = float(np.max(np.abs(infer(model, x) - expected)))
    print(f"[{keras.backend.backend()}] {name}: max |logits - reference| = {deviation:.3g}")
    assert deviation < 1e-4


@pytest.mark.parametrize("name", SHARED_FIXTURES)
def test_shared_golden_logits(name, shared_dir):
    path = shared_dir / "fixtures/models" / f"{name}.npz"
    with np.load(path) as data:
        x, expected = data["__input__"], data["__logits__"]
    model = get_model(name, num_classes=expected.shape[1], input_shape=x.shape[1:])
    report = load_torch_weights(model, path)
    assert not (report.missing or report.unexpected or report.mismatched)
    deviation = float(np.max(np.abs(infer(model, x) - expected)))
    print(f"[{keras.backend.backend()}] shared {name}: max |logits - reference| = {deviation:.3g}")
    assert deviation < 1e-4


def _functional(fn, x: np.ndarray) -> np.ndarray:
    inputs = keras.Input(x.shape[1:])
    return infer(keras.Model(inputs, fn(inputs)), x)


@pytest.mark.parametrize("spatial", [(3, 4), (None, 4), (3, None)])
def test_channel_shuffle_matches_torch_nchw_shuffle(spatial):
    # torch: x.reshape(N, g, C // g, H, W).permute(0, 2, 1, 3, 4).reshape(N, C, H, W), in NCHW.
    n, h, w, c, g = 2, 3, 4, 12, 3
    x = np.random.default_rng(0).normal(size=(n, h, w, c)).astype("float32")
    nchw = x.transpose(0, 3, 1, 2)
    ref = nchw.reshape(n, g, c // g, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w)
    inputs = keras.Input((*spatial, c))
    model = keras.Model(inputs, channel_shuffle(inputs, g, name="shuffle"))
    np.testing.assert_array_equal(infer(model, x), ref.transpose(0, 2, 3, 1))


def test_channel_slice_and_shuffle_errors():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 12)).astype("float32")
    halves = [_functional(lambda t, s=s: channel_slice(t, *s, name="split"), x)
              for s in ((0, 5), (5, None))]  # fmt: skip
    np.testing.assert_array_equal(np.concatenate(halves, axis=-1), x)
    with pytest.raises(ValueError, match="static height or width"):
        channel_shuffle(keras.Input((None, None, 12)), 3, name="shuffle")
    with pytest.raises(ValueError, match="do not split into 5 groups"):
        channel_shuffle(keras.Input((3, 4, 12)), 5, name="shuffle")
    with pytest.raises(ValueError, match="empty channel slice"):
        channel_slice(keras.Input((3, 4, 12)), 6, 6, name="split")


def test_vgg_pools_before_block4_only_at_64px():
    shapes = {
        side: get_model("vgg8", input_shape=(side, side, 3)).get_layer("block4_0").input.shape
        for side in (32, 64)
    }
    assert shapes[32][1:3] == (4, 4) and shapes[64][1:3] == (4, 4)
