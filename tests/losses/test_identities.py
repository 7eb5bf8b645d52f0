"""The exact identities of docs/method.md (KD over any partition, GDKD k=1 vs DKD, gradient)."""

import keras
import numpy as np
import pytest

import keras_gdkd as kg
from keras_gdkd.losses import partition as P
from tests.backend_utils import value_and_grad


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _logits(batch=16, classes=20, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(2, batch, classes)) * scale).astype("float32")


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("num_sets", [2, 3, 5])
def test_kd_decomposes_over_any_partition(num_sets):
    s, t = _logits(seed=num_sets)
    temperature = 2.0
    rng = np.random.default_rng(10 + num_sets)
    # a random partition per sample with every set non-empty
    assign = np.stack([rng.permutation(np.arange(20) % num_sets) for _ in range(16)])
    masks = [keras.ops.convert_to_tensor(assign == j) for j in range(num_sets)]
    high, lows, mass = P.kl_terms(s / temperature, t / temperature, masks)
    recomposed = _np(high) + sum(_np(mass)[:, j] * _np(low) for j, low in enumerate(lows))
    kd_per_sample = (
        _np(kg.losses.kd(s, t, temperature, reduction=None, return_terms=True)[0]) / temperature**2
    )
    np.testing.assert_allclose(recomposed, kd_per_sample, rtol=1e-5, atol=1e-6)


def test_dkd_equals_gdkd_k1_when_teacher_argmax_is_the_label():
    s, t = _logits(seed=1)
    labels = t.argmax(axis=1)
    dkd = kg.dkd(s, t, labels, alpha=0.7, beta=5.0, temperature=3.0)
    gdkd = kg.gdkd(s, t, k=1, w0=0.7, w1=123.0, w2=5.0, temperature=3.0)
    np.testing.assert_allclose(_np(dkd), _np(gdkd), rtol=1e-6)


@pytest.mark.parametrize("k", [1, 5])
def test_gradient_formula(k):
    s, t = _logits(batch=8, seed=2)
    temperature, w0, w1, w2 = 4.0, 0.5, 2.0, 8.0
    _, grad = value_and_grad(
        lambda v: kg.gdkd(v, t, k=k, w0=w0, w1=w1, w2=w2, temperature=temperature), s
    )
    p, q = (
        _softmax(s.astype(np.float64) / temperature),
        _softmax(t.astype(np.float64) / temperature),
    )
    top = np.zeros_like(p, dtype=bool)
    np.put_along_axis(top, np.argsort(-t, axis=1)[:, :k], True, axis=1)
    want = np.zeros_like(p)
    for mask, w in ((top, w1), (~top, w2)):
        bs = (p * mask).sum(1, keepdims=True)
        bt = (q * mask).sum(1, keepdims=True)
        pj, qj = p / bs, q / bt
        want += mask * temperature * (w0 * pj * (bs - bt) + w * (pj - qj))
    want /= len(s)
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-6)


@pytest.mark.parametrize(
    "loss",
    [
        lambda s, t: kg.kd(s, t),
        lambda s, t: kg.dkd(s, t, np.arange(16) % 20),
        lambda s, t: kg.gdkd(s, t, k=5, w1=2.0, w2=8.0),
        lambda s, t: kg.gdkd(s, t, k=5, strategy="worst"),
        lambda s, t: kg.gdkd3(s, t, k=4),
        lambda s, t: kg.gdkd_v2(s, t, k=3),
    ],
)
def test_zero_loss_and_gradient_when_student_is_teacher_plus_constant(loss):
    _, t = _logits(seed=3)
    s = t + np.linspace(-5, 5, 16, dtype="float32")[:, None]
    value, grad = value_and_grad(lambda v: loss(v, t), s)
    assert abs(value) < 1e-5
    np.testing.assert_allclose(grad, 0.0, atol=1e-6)


def test_v1_with_unit_weights_is_kd():
    s, t = _logits(seed=4)
    np.testing.assert_allclose(
        _np(kg.gdkd_v1(s, t, k=5, m1=1.0, m2=1.0, temperature=4.0)),
        _np(kg.kd(s, t, temperature=4.0)),
        rtol=1e-5,
    )


def test_v2_v3_interpolate_between_gdkd_and_v1():
    s, t = _logits(seed=5)
    mass_top = _softmax(t / 4.0)[np.arange(16)[:, None], np.argsort(-t, 1)[:, :5]].sum(1)
    _, parts = kg.losses.gdkd(s, t, k=5, temperature=4.0, reduction=None, return_terms=True)
    high, top, other = (_np(parts[n]) for n in ("high_loss", "low_top_loss", "low_other_loss"))
    want_v2 = np.mean(high + 2.0 * top + 3.0 * (1 - mass_top) * other)
    want_v3 = np.mean(high + 2.0 * mass_top * top + 3.0 * other)
    np.testing.assert_allclose(_np(kg.gdkd_v2(s, t, k=5, w1=2.0, m2=3.0)), want_v2, rtol=1e-5)
    np.testing.assert_allclose(_np(kg.gdkd_v3(s, t, k=5, m1=2.0, w2=3.0)), want_v3, rtol=1e-5)


def test_within_set_terms_only_touch_their_own_logits():
    s, t = _logits(batch=8, seed=6)
    top = np.zeros_like(t, dtype=bool)
    np.put_along_axis(top, np.argsort(-t, axis=1)[:, :5], True, axis=1)
    for name, outside in (("low_top_loss", ~top), ("low_other_loss", top)):
        _, grad = value_and_grad(
            lambda v, name=name: keras.ops.mean(
                kg.losses.gdkd(v, t, k=5, reduction=None, return_terms=True)[1][name]
            ),
            s,
        )
        assert np.all(grad[outside] == 0.0)
        assert np.any(grad[~outside] != 0.0)


def test_a_single_class_set_has_zero_within_kl():
    s, t = _logits(seed=7)
    _, parts = kg.losses.gdkd(s, t, k=1, reduction=None, return_terms=True)
    np.testing.assert_array_equal(_np(parts["low_top_loss"]), 0.0)
