"""The loss API: one function per loss (reductions, terms), thin objects, DIST against float64."""

import inspect
import warnings

import keras
import numpy as np
import pytest

import keras_gdkd as kg
from keras_gdkd.losses import functional as F
from keras_gdkd.losses import objects as O
from keras_gdkd.losses import validation as V
from tests.reference import losses_np as R


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _logits(batch=16, classes=10, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(2, batch, classes)) * scale).astype("float32")


FUNCTIONS = {name: getattr(F, name) for name in V.HYPERPARAMETERS}
CLASSES = O._BY_NAME


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_reductions_and_terms_agree(name):
    s, t = _logits()
    y = np.arange(16) % 10
    args = (s, t, y) if name == "dkd" else (s, t)
    per_sample, terms = FUNCTIONS[name](*args, reduction=None, return_terms=True)
    assert tuple(per_sample.shape) == (16,) and tuple(terms) == F.TERM_NAMES[name]
    mean, mean_terms = FUNCTIONS[name](*args, return_terms=True)
    np.testing.assert_allclose(_np(mean), _np(per_sample).mean(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(_np(FUNCTIONS[name](*args)), _np(mean), rtol=0, atol=0)
    total = _np(FUNCTIONS[name](*args, reduction="sum"))
    np.testing.assert_allclose(total, _np(per_sample).sum(), rtol=1e-5, atol=1e-6)
    for term, value in terms.items():
        np.testing.assert_allclose(_np(mean_terms[term]), _np(value).mean(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_each_object_has_its_functions_defaults_and_serializes(name):
    cls = CLASSES[name]
    function_defaults = {
        p.name: p.default
        for p in inspect.signature(FUNCTIONS[name]).parameters.values()
        if p.name in V.HYPERPARAMETERS[name]
    }
    assert tuple(function_defaults) == V.HYPERPARAMETERS[name]
    loss = cls()
    assert loss.get_config() == function_defaults
    assert loss.name == name and loss.term_names == F.TERM_NAMES[name]
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert restored == loss and restored is not loss and hash(restored) == hash(loss)
    assert kg.losses.get(name) == loss


def test_replace_validates_and_check_num_classes():
    loss = kg.GDKD(k=5, w2=8.0)
    assert loss.replace(temperature=1.0) == kg.GDKD(k=5, w2=8.0, temperature=1.0)
    assert loss.temperature == 4.0 and loss.k == 5
    with pytest.raises(ValueError, match="gdkd has no hyper-parameter beta; its hyper-param"):
        loss.replace(beta=1.0)
    with pytest.raises(ValueError, match="temperature must be a finite positive"):
        loss.replace(temperature=0.0)
    with pytest.raises(ValueError, match=r"\[1, 4\]"):
        loss.check_num_classes(5)
    loss.check_num_classes(6)
    with pytest.raises(ValueError, match=r"k must satisfy 2 <= k"):
        kg.GDKD3(k=3).replace(k=1)
    with pytest.raises(ValueError, match="reduction must be"):
        kg.kd(*_logits(), reduction="batch")
    with pytest.raises(AttributeError, match="no attribute 'alpha'"):
        _ = loss.alpha


def test_deprecated_terms_functions_warn_and_agree():
    s, t = _logits()
    with pytest.warns(DeprecationWarning, match=r"gdkd_terms is deprecated.*reduction=None"):
        old = kg.losses.gdkd_terms(s, t, 3, 1.0, 2.0, 6.0, 4.0)
    new = kg.losses.gdkd(s, t, 3, 1.0, 2.0, 6.0, 4.0, reduction=None, return_terms=True)
    np.testing.assert_array_equal(_np(old[0]), _np(new[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old_v2 = kg.losses.gdkd_dynamic_terms(s, t, 3, 0.5, 2.0, 3.0, False, True)
    new_v2 = kg.gdkd_v2(s, t, 3, 2.0, 3.0, 0.5, reduction=None)
    np.testing.assert_array_equal(_np(old_v2[0]), _np(new_v2))


# --- DIST ------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("classes, scale", [(10, 3.0), (100, 5.0)])
def test_dist_matches_the_float64_reference(temperature, classes, scale):
    s, t = _logits(batch=32, classes=classes, scale=scale, seed=classes)
    loss, terms = kg.dist(s, t, 2.0, 3.0, temperature, reduction=None, return_terms=True)
    want, want_terms = R.dist(s, t, 2.0, 3.0, temperature)
    np.testing.assert_allclose(_np(loss), want, rtol=2e-5, atol=2e-6)
    for name, value in want_terms.items():
        np.testing.assert_allclose(_np(terms[name]), value, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(_np(kg.DIST(2.0, 3.0, temperature)(s, t)), want.mean(), rtol=2e-5)


def test_dist_is_zero_for_a_shifted_student_and_stays_finite():
    s, t = _logits()
    shift = np.arange(16, dtype="float32")[:, None]
    # Zero up to the 1e-8 in the correlations' denominators, exactly as the reference.
    value = _np(kg.dist(t + shift, t))
    assert value < 1e-4
    np.testing.assert_allclose(value, R.dist(t + shift, t)[0].mean(), atol=5e-6)
    huge = np.zeros((4, 10), "float32")
    huge[:, 0] = 1e4  # one-hot probabilities; the teacher's columns are constant
    value, grad = _value_and_grad(lambda x: kg.dist(x, huge, temperature=1.0), s[:4])
    assert np.isfinite(value) and np.isfinite(grad).all()


def test_dist_computes_in_float32_under_half_precision():
    s, t = _logits()
    loss = kg.dist(keras.ops.cast(s, "bfloat16"), keras.ops.cast(t, "bfloat16"))
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"


def test_dist_gradient_matches_the_reference_by_finite_differences():
    s, t = _logits(batch=6, classes=5, seed=3)
    _, grad = _value_and_grad(lambda x: kg.dist(x, t), s)
    eps, numeric = 1e-4, np.zeros_like(s, dtype=np.float64)
    for index in np.ndindex(s.shape):
        up, down = s.astype(np.float64), s.astype(np.float64)
        up[index] += eps
        down[index] -= eps
        numeric[index] = (R.dist(up, t)[0].mean() - R.dist(down, t)[0].mean()) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-5)


def _value_and_grad(fn, x):
    from tests.backend_utils import value_and_grad

    return value_and_grad(fn, x)
