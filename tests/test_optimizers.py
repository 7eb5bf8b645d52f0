"""TorchSGD against the torch.optim.SGD formula (NumPy, and torch itself when importable)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_gdkd import presets
from keras_gdkd.optimizers import TorchSGD, make_optimizer, scale_lr, step_decay_schedule

# Keras's convert_to_numpy calls np.array(x) on backend tensors whose __array__ lacks NumPy 2's
# copy= keyword (torch, tf.Variable, keras.Variable); harmless noise, not ours to fix here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

RTOL, ATOL = 1e-5, 1e-7


def numpy_torch_sgd(weights, grads_per_step, lrs, momentum, weight_decay):
    """torch.optim.SGD (nesterov=False, dampening=0) in float64 NumPy."""
    ws = [np.asarray(w, np.float64).copy() for w in weights]
    bufs = [None] * len(ws)
    for grads, lr in zip(grads_per_step, lrs, strict=True):
        for i, g in enumerate(grads):
            d = np.asarray(g, np.float64) + weight_decay * ws[i]
            bufs[i] = d if bufs[i] is None else momentum * bufs[i] + d
            ws[i] = ws[i] - lr * bufs[i]
    return ws


def _problem(seed=0, steps=2):
    rng = np.random.default_rng(seed)
    shapes = [(3,), (2, 4), (1,)]
    weights = [rng.normal(size=s).astype("float32") for s in shapes]
    grads = [[rng.normal(size=s).astype("float32") for s in shapes] for _ in range(steps)]
    return weights, grads


def _run_keras(opt, weights, grads_per_step):
    variables = [keras.Variable(w) for w in weights]
    for grads in grads_per_step:
        opt.apply_gradients(zip([ops.convert_to_tensor(g) for g in grads], variables, strict=True))
    return [_np(v) for v in variables]


def _np(variable):
    return ops.convert_to_numpy(ops.convert_to_tensor(variable))


def _lr_at(schedule, step):
    return float(ops.convert_to_numpy(schedule(step)))


def test_one_step_is_coupled_weight_decay():
    weights, grads = _problem(steps=1)
    lr, wd = 0.1, 0.05
    got = _run_keras(TorchSGD(lr, momentum=0.9, weight_decay=wd), weights, grads)
    for w, g, new in zip(weights, grads[0], got, strict=True):
        # First step: buf = g + wd * w (torch's buf = clone(d_p)).
        np.testing.assert_allclose(new, w - lr * (g + wd * w), rtol=RTOL, atol=ATOL)


def test_two_steps_use_momentum_buffer():
    weights, grads = _problem(steps=2)
    lr, mu, wd = 0.1, 0.9, 0.05
    got = _run_keras(TorchSGD(lr, momentum=mu, weight_decay=wd), weights, grads)
    for i, new in enumerate(got):
        w0, g0, g1 = weights[i].astype(np.float64), grads[0][i], grads[1][i]
        buf0 = g0 + wd * w0
        w1 = w0 - lr * buf0
        buf1 = mu * buf0 + (g1 + wd * w1)
        np.testing.assert_allclose(new, w1 - lr * buf1, rtol=RTOL, atol=ATOL)


def test_zero_momentum_and_zero_decay():
    weights, grads = _problem(steps=2)
    opt = TorchSGD(0.5, momentum=0.0, weight_decay=0.0)
    got = _run_keras(opt, weights, grads)
    assert opt.momentums == []
    want = numpy_torch_sgd(weights, grads, [0.5, 0.5], 0.0, 0.0)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


def test_no_decoupled_decay_from_base_class():
    opt = TorchSGD(0.1, weight_decay=5e-4)
    assert opt.weight_decay is None  # Keras's decoupled decay stays off
    assert opt.coupled_weight_decay == 5e-4


def _tiny_bn_model():
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2),
        ]
    )
    return model


def test_weight_decay_applies_to_every_trainable_weight_including_batchnorm():
    model = _tiny_bn_model()
    variables = model.trainable_weights
    names = [v.path for v in variables]
    assert any("gamma" in n for n in names) and any("beta" in n for n in names)
    assert any("bias" in n for n in names)
    # Give beta and biases non-zero values so the decay is visible on them too.
    rng = np.random.default_rng(1)
    for v in variables:
        v.assign(rng.normal(size=v.shape).astype("float32") + _np(v))
    before = [_np(v).astype(np.float64) for v in variables]
    grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
    lr, wd = 0.1, 0.2
    opt = TorchSGD(lr, momentum=0.9, weight_decay=wd)
    opt.apply_gradients(zip([ops.convert_to_tensor(g) for g in grads], variables, strict=True))
    for name, w, g, v in zip(names, before, grads, variables, strict=True):
        np.testing.assert_allclose(
            _np(v), w - lr * (g + wd * w), rtol=RTOL, atol=ATOL, err_msg=name
        )


def test_zero_gradient_still_decays_gamma():
    model = _tiny_bn_model()
    gamma = next(v for v in model.trainable_weights if "gamma" in v.path)
    opt = TorchSGD(0.1, momentum=0.9, weight_decay=0.5)
    opt.apply_gradients([(ops.zeros(gamma.shape), gamma)])
    np.testing.assert_allclose(_np(gamma), np.full(gamma.shape, 1 - 0.1 * 0.5))


def test_exclude_from_weight_decay_is_honoured():
    model = _tiny_bn_model()
    opt = TorchSGD(0.1, momentum=0.9, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_names=["gamma"])
    before = {v.path: _np(v) for v in model.trainable_weights}
    opt.apply_gradients([(ops.zeros(v.shape), v) for v in model.trainable_weights])
    for v in model.trainable_weights:
        w = before[v.path]
        want = w if "gamma" in v.path else w - 0.1 * 0.5 * w
        np.testing.assert_allclose(_np(v), want, rtol=RTOL, atol=ATOL)


def test_changing_lr_matches_numpy_reference():
    weights, grads = _problem(seed=3, steps=6)
    schedule = step_decay_schedule(0.1, [1, 2], steps_per_epoch=2)
    lrs = [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    got = _run_keras(TorchSGD(schedule, momentum=0.9, weight_decay=1e-2), weights, grads)
    want = numpy_torch_sgd(weights, grads, lrs, 0.9, 1e-2)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


def test_changing_lr_matches_torch_optim_sgd():
    torch = pytest.importorskip("torch")
    weights, grads = _problem(seed=4, steps=7)
    lrs = [0.2, 0.2, 0.2, 0.02, 0.02, 0.02, 0.002]
    params = [torch.nn.Parameter(torch.tensor(w)) for w in weights]
    topt = torch.optim.SGD(params, lr=lrs[0], momentum=0.9, weight_decay=5e-2)
    for step_grads, lr in zip(grads, lrs, strict=True):
        for group in topt.param_groups:
            group["lr"] = lr
        for p, g in zip(params, step_grads, strict=True):
            p.grad = torch.tensor(g)
        topt.step()
    schedule = step_decay_schedule(0.2, [1, 2], steps_per_epoch=3)
    got = _run_keras(TorchSGD(schedule, momentum=0.9, weight_decay=5e-2), weights, grads)
    for g, p in zip(got, params, strict=True):
        np.testing.assert_allclose(g, p.detach().numpy(), rtol=RTOL, atol=1e-6)


def test_fit_runs_torch_sgd_in_the_compiled_train_step():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32")
    w0 = rng.normal(size=(3, 1)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(
                1, use_bias=False, kernel_initializer=keras.initializers.Constant(w0)
            ),
        ]
    )
    schedule = step_decay_schedule(0.1, [1, 2], steps_per_epoch=1)
    model.compile(optimizer=TorchSGD(schedule, momentum=0.9, weight_decay=0.1), loss="mse")
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    # Reference: mse gradient 2/N x^T (x w - y), three steps at lr 0.1, 0.01, 0.001.
    w, buf = w0.astype(np.float64), None
    for lr in (0.1, 0.01, 0.001):
        d = 2.0 / len(x) * x.T @ (x @ w - y) + 0.1 * w
        buf = d if buf is None else 0.9 * buf + d
        w = w - lr * buf
    np.testing.assert_allclose(_np(model.weights[0]), w, rtol=1e-5, atol=1e-6)


def test_config_round_trip():
    opt = make_optimizer(presets.get("res32x4_res8x4"), steps_per_epoch=10)
    config = opt.get_config()
    assert config["momentum"] == 0.9 and config["weight_decay"] == 5e-4
    clone = TorchSGD.from_config(config)
    assert isinstance(clone, TorchSGD)
    assert clone.momentum == 0.9 and clone.coupled_weight_decay == 5e-4
    assert clone.weight_decay is None
    for step in (0, 1499, 1500, 2100):
        assert _lr_at(clone._learning_rate, step) == pytest.approx(
            _lr_at(opt._learning_rate, step), rel=1e-7
        )
    serialized = keras.saving.serialize_keras_object(opt)
    assert "keras_gdkd" in str(serialized)
    restored = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(restored, TorchSGD)
    assert restored.get_config()["weight_decay"] == 5e-4


@pytest.mark.parametrize("spe", [391, 782])
def test_schedule_boundaries(spe):
    base = 0.05
    s = step_decay_schedule(base, [150, 180, 210], steps_per_epoch=spe)
    assert isinstance(s, keras.optimizers.schedules.LearningRateSchedule)
    checks = {
        0: base,
        150 * spe - 1: base,  # last step of epoch 150 (1-based)
        150 * spe: 0.1 * base,  # first step of epoch 151
        180 * spe - 1: 0.1 * base,
        180 * spe: 0.01 * base,
        210 * spe - 1: 0.01 * base,
        210 * spe: 0.001 * base,
        240 * spe - 1: 0.001 * base,
    }
    for step, want in checks.items():
        assert _lr_at(s, step) == pytest.approx(want, rel=1e-6), step


def test_schedule_matches_epoch_formula_everywhere():
    # The authors' rule: lr = base * 0.1 ** (number of decay epochs e with epoch > e), 1-based.
    spe, decay = 3, [2, 4]
    s = step_decay_schedule(1.0, decay, steps_per_epoch=spe)
    for step in range(6 * spe):
        epoch = step // spe + 1
        want = 0.1 ** sum(epoch > e for e in decay)
        assert _lr_at(s, step) == pytest.approx(want, rel=1e-6), step


def test_optimizer_sees_schedule_at_its_iteration():
    opt = make_optimizer(presets.get("res56_res20"), steps_per_epoch=100)
    opt.iterations.assign(150 * 100 - 1)
    assert float(ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(0.05, rel=1e-6)
    opt.iterations.assign(150 * 100)
    assert float(ops.convert_to_numpy(opt.learning_rate)) == pytest.approx(0.005, rel=1e-6)


def test_schedule_without_decay_and_bad_arguments():
    assert _lr_at(step_decay_schedule(0.3, [], steps_per_epoch=5), 10**6) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        step_decay_schedule(0.1, [180, 150], steps_per_epoch=5)
    with pytest.raises(ValueError):
        step_decay_schedule(0.1, [0, 150], steps_per_epoch=5)
    with pytest.raises(ValueError):
        step_decay_schedule(0.1, [150], steps_per_epoch=0)
    with pytest.raises(ValueError):
        TorchSGD(0.1, momentum=-0.1)
    with pytest.raises(ValueError):
        TorchSGD(0.1, weight_decay=-1.0)


def test_scale_lr_and_make_optimizer_batch_scaling():
    assert scale_lr(0.2, 512, 256) == pytest.approx(0.1)
    assert scale_lr(0.05, 64, 128) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        scale_lr(0.1, 0, 64)
    p = presets.get("res34_res18")
    opt = make_optimizer(p, steps_per_epoch=5005, batch_size=256)
    assert _lr_at(opt._learning_rate, 0) == pytest.approx(0.1, rel=1e-6)
    assert _lr_at(opt._learning_rate, 30 * 5005) == pytest.approx(0.01, rel=1e-6)
    assert opt.coupled_weight_decay == 1e-4 and opt.momentum == 0.9
    same = make_optimizer(p, steps_per_epoch=2503, batch_size=512)
    assert _lr_at(same._learning_rate, 0) == pytest.approx(0.2, rel=1e-6)
