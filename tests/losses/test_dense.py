"""Dense and sequence logits `(..., C)`: position by position against the float64 reference."""

import keras
import numpy as np
import pytest

import keras_gdkd as kg
from tests.backend_utils import value_and_grad
from tests.reference import losses_np as R


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _dense(shape=(2, 3, 4), classes=7, scale=4.0, seed=0):
    rng = np.random.default_rng(seed)
    s, t = (rng.normal(size=(2, *shape, classes)) * scale).astype("float32")
    labels = rng.integers(0, classes, shape)
    return s, t, labels


# name -> (ours(s, t, y, **kw), reference on (N, C) rows)
CASES = {
    "kd": (lambda s, t, y, **kw: kg.kd(s, t, 2.0, **kw), lambda s, t, y: R.kd(s, t, 2.0)),
    "dkd": (
        lambda s, t, y, **kw: kg.dkd(s, t, y, 1.0, 4.0, 2.0, **kw),
        lambda s, t, y: R.dkd(s, t, y, 1.0, 4.0, 2.0),
    ),
    "gdkd": (
        lambda s, t, y, **kw: kg.gdkd(s, t, 3, 1.0, 2.0, 6.0, 1.0, **kw),
        lambda s, t, y: R.gdkd(s, t, 3, 1.0, 2.0, 6.0, 1.0),
    ),
    "gdkd3": (
        lambda s, t, y, **kw: kg.gdkd3(s, t, 3, 1.0, 2.0, 6.0, 4.0, **kw),
        lambda s, t, y: R.gdkd3(s, t, 3, 1.0, 2.0, 6.0, 4.0),
    ),
    "gdkd_v1": (
        lambda s, t, y, **kw: kg.gdkd_v1(s, t, 2, 2.0, 3.0, **kw),
        lambda s, t, y: R.gdkd_v1(s, t, 2, 2.0, 3.0),
    ),
}


@pytest.mark.parametrize("shape", [(2, 3, 4), (3, 5)], ids=["segmentation", "sequence"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_dense_values_equal_the_reference_per_position(name, shape):
    s, t, y = _dense(shape)
    ours, reference = CASES[name]
    loss, terms = ours(s, t, y, reduction=None, return_terms=True)
    assert tuple(loss.shape) == shape
    want, want_terms = reference(s.reshape(-1, 7), t.reshape(-1, 7), y.reshape(-1))
    np.testing.assert_allclose(_np(loss).reshape(-1), want, rtol=2e-5, atol=2e-6)
    for term, value in terms.items():
        np.testing.assert_allclose(_np(value).reshape(-1), want_terms[term], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(_np(ours(s, t, y)), want.mean(), rtol=2e-5, atol=2e-6)


def test_dist_on_sequences_treats_every_position_as_a_sample():
    s, t, _ = _dense((3, 5))
    loss = kg.dist(s, t, reduction=None)
    want, _ = R.dist(s.reshape(-1, 7), t.reshape(-1, 7))
    np.testing.assert_allclose(_np(loss).reshape(-1), want, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", sorted(CASES))
def test_masked_positions_have_zero_value_and_exactly_zero_gradient(name):
    s, t, y = _dense((3, 5))
    mask = np.random.default_rng(1).random((3, 5)) > 0.4
    s_bad = s.copy()
    s_bad[~mask] = np.nan  # padding may hold anything
    ours, reference = CASES[name]
    value, grad = value_and_grad(lambda x: ours(x, t, y, mask=mask), s_bad)
    assert np.all(grad[~mask] == 0.0) and np.isfinite(grad).all()
    want, _ = reference(s[mask], t[mask], y[mask])
    np.testing.assert_allclose(value, want.mean(), rtol=2e-5, atol=2e-6)
    per_position = _np(ours(s_bad, t, y, mask=mask, reduction=None))
    assert np.all(per_position[~mask] == 0.0)


@pytest.mark.parametrize("name", [*sorted(CASES), "dist"])
def test_a_fully_masked_batch_gives_zero_not_nan(name):
    s, t, y = _dense((2, 4))
    mask = np.zeros((2, 4), bool)
    fn = CASES[name][0] if name in CASES else (lambda s, t, y, **kw: kg.dist(s, t, **kw))
    value, grad = value_and_grad(lambda x: fn(x, t, y, mask=mask), s)
    assert value == 0.0 and np.all(grad == 0.0)


def test_dkd_ignore_index_drops_those_positions_like_a_mask():
    s, t, y = _dense((2, 3, 4))
    y = y.copy()
    y[0, 0, :] = 255
    keep = y != 255
    value, grad = value_and_grad(lambda x: kg.dkd(x, t, y, ignore_index=255), s)
    want, _ = R.dkd(s[keep], t[keep], y[keep])
    np.testing.assert_allclose(value, want.mean(), rtol=2e-5, atol=2e-6)
    assert np.all(grad[~keep] == 0.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 7\).*got \[255"):
        kg.dkd(s, t, y)


def test_permuting_positions_permutes_the_values():
    s, t, y = _dense((4, 6))
    order = np.random.default_rng(2).permutation(6)
    a = _np(kg.gdkd(s, t, k=3, reduction=None))
    b = _np(kg.gdkd(s[:, order], t[:, order], k=3, reduction=None))
    np.testing.assert_array_equal(a[:, order], b)


def test_dense_shape_errors_say_what_was_expected():
    s, t, y = _dense((2, 3))
    with pytest.raises(ValueError, match=r"different shapes: \(2, 3, 7\) vs \(2, 4, 7\)"):
        kg.kd(s, np.concatenate([t, t[:, :1]], axis=1))
    with pytest.raises(ValueError, match=r"labels must have shape \(2, 3\); got \(2,\)"):
        kg.dkd(s, t, y[:, 0])
    with pytest.raises(ValueError, match=r"mask must have the logits' shape without the class"):
        kg.kd(s, t, mask=np.ones((2,), bool))
