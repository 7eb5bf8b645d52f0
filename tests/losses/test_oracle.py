"""The losses against the float64 NumPy oracle in ../shared/reference (values, parts, gradients)."""

import importlib.util

import keras
import numpy as np
import pytest

import keras_gdkd as kg
from keras_gdkd.losses import functional as F
from tests.backend_utils import value_and_grad

RTOL = 2e-5


@pytest.fixture(scope="module")
def ref(shared_dir):
    path = shared_dir / "reference" / "losses_reference.py"
    spec = importlib.util.spec_from_file_location("losses_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _logits(batch, classes, scale, seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(2, batch, classes)) * scale).astype("float32")


def _np(x):
    return keras.ops.convert_to_numpy(x)


CASES = [  # (name, ours(s, t, y), oracle(ref, s, t, y), our terms, oracle part names)
    (
        "kd",
        lambda s, t, y, T: F.kd_terms(s, t, T),
        lambda r, s, t, y, T: r.kd(s, t, T),
        {"kd_loss": "kd"},
    ),
    (
        "dkd",
        lambda s, t, y, T: F.dkd_terms(s, t, y, 1.0, 8.0, T),
        lambda r, s, t, y, T: r.dkd(s, t, y, 1.0, 8.0, T),
        {"tckd_loss": "high", "nckd_loss": "low1"},
    ),
    (
        "gdkd",
        lambda s, t, y, T: F.gdkd_terms(s, t, 5, 1.0, 2.0, 8.0, T),
        lambda r, s, t, y, T: r.gdkd(s, t, 5, 1.0, 2.0, 8.0, T),
        {"high_loss": "high", "low_top_loss": "low0", "low_other_loss": "low1"},
    ),
    (
        "gdkd_worst",
        lambda s, t, y, T: F.gdkd_terms(s, t, 3, 0.5, 1.0, 6.0, T, "worst"),
        lambda r, s, t, y, T: r.gdkd(s, t, 3, 0.5, 1.0, 6.0, T, "worst"),
        {"high_loss": "high", "low_top_loss": "low0", "low_other_loss": "low1"},
    ),
    (
        "gdkd_k1",
        lambda s, t, y, T: F.gdkd_terms(s, t, 1, 1.0, 1.0, 2.0, T),
        lambda r, s, t, y, T: r.gdkd(s, t, 1, 1.0, 1.0, 2.0, T),
        {"low_other_loss": "low1"},
    ),
    (
        "gdkd3",
        lambda s, t, y, T: F.gdkd3_terms(s, t, 4, 1.0, 2.0, 6.0, T),
        lambda r, s, t, y, T: r.gdkd3(s, t, 4, 1.0, 2.0, 6.0, T),
        {"high_loss": "high", "low_top_loss": "low1", "low_other_loss": "low2"},
    ),
]


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_values_and_parts_match_oracle(ref, case, temperature):
    _, ours, oracle, parts = case
    s, t = _logits(32, 100, 3.0, seed=1)
    y = np.random.default_rng(2).integers(0, 100, 32)
    loss, terms = ours(s, t, y, temperature)
    want, want_parts = oracle(ref, s, t, y, temperature)
    np.testing.assert_allclose(_np(keras.ops.mean(loss)), want, rtol=RTOL)
    for name, ref_name in parts.items():
        np.testing.assert_allclose(
            _np(keras.ops.mean(terms[name])), want_parts[ref_name], rtol=RTOL, atol=1e-6
        )


def test_public_functions_match_oracle(ref):
    s, t = _logits(16, 10, 2.0, seed=3)
    y = np.arange(16) % 10
    pairs = [
        (kg.kd(s, t, temperature=2.0), ref.kd(s, t, 2.0)[0]),
        (kg.dkd(s, t, y, alpha=0.5, beta=2.0, temperature=2.0), ref.dkd(s, t, y, 0.5, 2.0, 2.0)[0]),
        (
            kg.gdkd(s, t, k=2, w0=1.0, w1=2.0, w2=6.0, temperature=2.0),
            ref.gdkd(s, t, 2, 1.0, 2.0, 6.0, 2.0)[0],
        ),
        (
            kg.gdkd3(s, t, k=3, w1=2.0, w2=6.0, temperature=2.0),
            ref.gdkd3(s, t, 3, 1.0, 2.0, 6.0, 2.0)[0],
        ),
    ]
    for got, want in pairs:
        np.testing.assert_allclose(_np(got), want, rtol=RTOL)


def _numeric_grad(f, s, eps=1e-6):
    s = s.astype(np.float64)
    grad = np.zeros_like(s)
    for idx in np.ndindex(*s.shape):
        up, down = s.copy(), s.copy()
        up[idx] += eps
        down[idx] -= eps
        grad[idx] = (f(up) - f(down)) / (2 * eps)
    return grad


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gradients_match_oracle(ref, case):
    _, ours, oracle, _ = case
    s, t = _logits(4, 12, 2.0, seed=4)
    y = np.array([0, 3, 7, 11])
    temperature = 2.0
    _, grad = value_and_grad(lambda v: keras.ops.mean(ours(v, t, y, temperature)[0]), s)
    want = _numeric_grad(lambda v: oracle(ref, v, t, y, temperature)[0], s)
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=2e-6)


def test_standardized_logits_match_oracle_on_zscored_inputs(ref):
    s, t = _logits(8, 100, 3.0, seed=5)

    def zscore(z):
        z = z.astype(np.float64)
        return (z - z.mean(1, keepdims=True)) / (z.std(1, ddof=1, keepdims=True) + 1e-7)

    got = kg.gdkd(s, t, k=5, w1=2.0, w2=8.0, temperature=2.0, standardize=True)
    want = ref.gdkd(zscore(s), zscore(t), 5, 1.0, 2.0, 8.0, 2.0)[0]
    np.testing.assert_allclose(_np(got), want, rtol=RTOL)
    got = kg.kd(s, t, temperature=2.0, standardize=True)
    np.testing.assert_allclose(_np(got), ref.kd(zscore(s), zscore(t), 2.0)[0], rtol=RTOL)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("scale", [1e3, 1e4])
def test_huge_logit_gaps_are_finite_and_exact(ref, scale, temperature):
    s, t = _logits(8, 50, 1.0, seed=6)
    s, t = s * scale, t * scale
    y = np.arange(8)
    for fn, want in [
        (
            lambda v: kg.gdkd(v, t, k=5, w1=2.0, w2=8.0, temperature=temperature),
            ref.gdkd(s, t, 5, 1.0, 2.0, 8.0, temperature)[0],
        ),
        (
            lambda v: kg.gdkd3(v, t, k=4, temperature=temperature),
            ref.gdkd3(s, t, 4, 1.0, 1.0, 8.0, temperature)[0],
        ),
        (
            lambda v: kg.dkd(v, t, y, temperature=temperature),
            ref.dkd(s, t, y, 1.0, 8.0, temperature)[0],
        ),
        (lambda v: kg.kd(v, t, temperature=temperature), ref.kd(s, t, temperature)[0]),
    ]:
        value, grad = value_and_grad(fn, s)
        assert np.isfinite(value) and np.all(np.isfinite(grad))
        # float32 logits of size 1e4 carry ~1e-3 absolute round-off each
        np.testing.assert_allclose(value, want, rtol=1e-4)


def test_tied_teacher_logits_still_give_a_top_k_set_of_exactly_k_classes():
    # Which of several tied classes enters the set is the backend's top_k choice (TensorFlow
    # takes the lower index; JAX and PyTorch do not promise an order), as in the authors' code.
    from keras_gdkd.losses import partition

    t = np.round(np.random.default_rng(7).normal(size=(16, 12)), 0).astype("float32")
    for ks in ((1,), (3,), (5,), (1, 4)):
        masks = [_np(m) for m in partition.topk_masks(t, ks)]
        np.testing.assert_array_equal(sum(m.astype(int) for m in masks), 1)  # a partition
        chosen = np.logical_or.reduce(masks[:-1])
        np.testing.assert_array_equal(chosen.sum(axis=1), ks[-1])
        for row, mask in zip(t, chosen):
            assert row[mask].min() >= row[~mask].max()
