"""TorchBatchNormalization: PyTorch's running-variance update on every backend."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_gdkd.models import TorchBatchNormalization, get_model
from keras_gdkd.models.blocks import BN_EPSILON, BN_MOMENTUM

STEPS = 4
SHAPE = (4, 3, 3, 5)  # N = 4 * 3 * 3 = 36 values per channel: N / (N - 1) is visible


def _batches(steps: int = STEPS, shape: tuple = SHAPE) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 2.0, size=shape[-1])
    return [(rng.normal(size=shape) * scale + 0.3).astype("float32") for _ in range(steps)]


def _closed_form(batches: list[np.ndarray], momentum: float = 0.1) -> list[tuple]:
    """PyTorch's update in float64: running stats after each step."""
    channels = batches[0].shape[-1]
    mean, var = np.zeros(channels), np.ones(channels)
    out = []
    for x in batches:
        x = x.astype("float64").reshape(-1, channels)
        n = x.shape[0]
        mean = (1 - momentum) * mean + momentum * x.mean(0)
        var = (1 - momentum) * var + momentum * x.var(0) * n / (n - 1)
        out.append((mean, var))
    return out


def _np(variable) -> np.ndarray:
    return keras.ops.convert_to_numpy(variable.value).astype("float64")


def _eager_steps(layer, batches):
    """Moving statistics and outputs after each training-mode call."""
    stats, outputs = [], []
    for x in batches:
        outputs.append(keras.ops.convert_to_numpy(layer(x, training=True)))
        stats.append((_np(layer.moving_mean), _np(layer.moving_variance)))
    return stats, outputs


def _new_layer(cls=TorchBatchNormalization):
    layer = cls(epsilon=BN_EPSILON, momentum=BN_MOMENTUM)
    layer.build(SHAPE)
    rng = np.random.default_rng(1)
    layer.gamma.assign(rng.uniform(0.5, 1.5, SHAPE[-1]).astype("float32"))
    layer.beta.assign(rng.normal(size=SHAPE[-1]).astype("float32"))
    return layer


def test_moving_statistics_match_closed_form():
    batches = _batches()
    stats, outputs = _eager_steps(_new_layer(), batches)
    for (mean, var), (ref_mean, ref_var) in zip(stats, _closed_form(batches), strict=True):
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(var, ref_var, rtol=1e-6)
    # The batch itself is normalized with the biased variance, as in both frameworks.
    x = batches[-1].astype("float64")
    layer_ref = (x - x.mean((0, 1, 2))) / np.sqrt(x.var((0, 1, 2)) + BN_EPSILON)
    rng = np.random.default_rng(1)
    gamma, beta = rng.uniform(0.5, 1.5, SHAPE[-1]), rng.normal(size=SHAPE[-1])
    np.testing.assert_allclose(outputs[-1], layer_ref * gamma + beta, atol=2e-5)


def test_keras_batchnorm_differs_by_the_bias_factor():
    # The same steps through keras.layers.BatchNormalization use N instead of N - 1.
    batches = _batches()
    torch_like, _ = _eager_steps(_new_layer(), batches)
    plain, _ = _eager_steps(_new_layer(keras.layers.BatchNormalization), batches)
    gap = np.max(np.abs(torch_like[-1][1] - plain[-1][1]))
    assert gap > 1e-3, gap  # the difference this layer exists to remove


def test_matches_torch_batchnorm2d():
    torch = pytest.importorskip("torch")
    batches = _batches()
    layer = _new_layer()
    ref = torch.nn.BatchNorm2d(SHAPE[-1], eps=1e-5, momentum=0.1)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(_np(layer.gamma).astype("float32")))
        ref.bias.copy_(torch.from_numpy(_np(layer.beta).astype("float32")))
    ref.train()
    stats, outputs = _eager_steps(layer, batches)
    worst = 0.0
    for x, (mean, var), out in zip(batches, stats, outputs, strict=True):
        with torch.no_grad():
            y = ref(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(out, y, atol=2e-5)
        np.testing.assert_allclose(mean, ref.running_mean.numpy(), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(var, ref.running_var.numpy(), rtol=1e-6)
        worst = max(worst, float(np.max(np.abs(var - ref.running_var.numpy()))))
    print(f"[{keras.backend.backend()}] max |moving_var - torch running_var| = {worst:.3g}")


def _train_bn_model(policy: str = "float32"):
    """Moving statistics after each compiled training step of Input -> BN -> pool -> Dense."""
    keras.config.set_dtype_policy(policy)
    inputs = keras.Input(SHAPE[1:])
    h = TorchBatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="bn")(inputs)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(3, dtype="float32")(h))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    bn = model.get_layer("bn")
    labels = np.array([0, 1, 2, 0])
    stats = []
    for x in _batches():
        model.train_on_batch(x, labels)
        stats.append((_np(bn.moving_mean), _np(bn.moving_variance), bn.moving_variance.dtype))
    return stats


def test_compiled_training_step_uses_the_torch_update():
    # train_on_batch runs the backend's compiled step (tf.function with a dynamic batch axis,
    # jax.jit with stateless variables, torch); the BN layer is first, so its input is fixed.
    for (mean, var, _), (ref_mean, ref_var) in zip(
        _train_bn_model(), _closed_form(_batches()), strict=True
    ):
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(var, ref_var, rtol=1e-6)


def test_mixed_precision_keeps_float32_statistics():
    stats = _train_bn_model("mixed_float16")
    for (mean, var, dtype), (ref_mean, ref_var) in zip(stats, _closed_form(
        [x.astype("float16").astype("float32") for x in _batches()]), strict=True):  # fmt: skip
        assert dtype == "float32"
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var, ref_var, rtol=1e-5)


def test_inference_and_config_are_keras_batchnorm():
    layer = _new_layer()
    plain = keras.layers.BatchNormalization.from_config(layer.get_config())
    plain.build(SHAPE)
    plain.set_weights(layer.get_weights())
    x = _batches(1)[0]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer(x, training=False)),
        keras.ops.convert_to_numpy(plain(x, training=False)),
    )
    config = layer.get_config()
    assert config == plain.get_config() and not config["synchronized"]
    with pytest.raises(ValueError, match="renorm"):
        TorchBatchNormalization(renorm=True)


def test_zoo_uses_it_and_sync_batchnorm_keeps_it():
    model = get_model("resnet8", num_classes=10)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(type(layer) is TorchBatchNormalization for layer in bns)
    assert {(layer.epsilon, layer.momentum) for layer in bns} == {(1e-5, 0.9)}
    if keras.backend.backend() != "tensorflow":
        return
    from keras_gdkd.parallel import sync_batchnorm

    synced = sync_batchnorm(model, synchronized=True)
    bns = [layer for layer in synced.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert all(type(layer) is TorchBatchNormalization and layer.synchronized for layer in bns)
    # Outside tf.distribute the synchronized moments are the local ones.
    layer = TorchBatchNormalization.from_config({**_new_layer().get_config(), "synchronized": True})
    stats, _ = _eager_steps(layer, _batches())
    np.testing.assert_allclose(stats[-1][1], _closed_form(_batches())[-1][1], rtol=1e-6)
