"""The losses against float64 references: values, every term, gradients, huge logit gaps.

The first reference, `tests/reference/losses_np.py`, is part of the repository (written from
docs/method.md, independent of keras_gdkd), so these tests run in a plain clone on every
backend. The oracle in `../shared/reference` is a second, independent check when present.
"""

import importlib.util

import keras
import numpy as np
import pytest

import keras_gdkd as kg
from keras_gdkd.losses import functional as F
from tests.backend_utils import value_and_grad
from tests.reference import losses_np as R

# float32 round-off: the batch-mean loss to 1e-5 relative; a per-sample term to 2e-5 of the
# largest per-sample loss of its batch (measured: 2.2e-6 and 8.4e-6 at most on all backends).
RTOL = 1e-5
PART_TOL = 2e-5


def _logits(batch, classes, scale, seed):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(2, batch, classes)) * scale).astype("float32")


PS = dict(reduction=None, return_terms=True)  # per-sample values and named terms


def _np(x):
    return keras.ops.convert_to_numpy(x)


# name -> (ours(s, t, y, T, standardize), reference(s, t, y, T, standardize)); both return
# (per-sample loss, {term name: per-sample term}) with the same term names.
CASES = {
    "kd": (
        lambda s, t, y, T, ls: F.kd(s, t, T, ls, **PS),
        lambda s, t, y, T, ls: R.kd(s, t, T, ls),
    ),
    "dkd": (
        lambda s, t, y, T, ls: F.dkd(s, t, y, 1.0, 8.0, T, ls, **PS),
        lambda s, t, y, T, ls: R.dkd(s, t, y, 1.0, 8.0, T, ls),
    ),
    "gdkd": (
        lambda s, t, y, T, ls: F.gdkd(s, t, 5, 1.0, 2.0, 8.0, T, "best", ls, **PS),
        lambda s, t, y, T, ls: R.gdkd(s, t, 5, 1.0, 2.0, 8.0, T, "best", ls),
    ),
    "gdkd_worst": (
        lambda s, t, y, T, ls: F.gdkd(s, t, 3, 0.5, 1.0, 6.0, T, "worst", ls, **PS),
        lambda s, t, y, T, ls: R.gdkd(s, t, 3, 0.5, 1.0, 6.0, T, "worst", ls),
    ),
    "gdkd_k1": (
        lambda s, t, y, T, ls: F.gdkd(s, t, 1, 1.0, 1.0, 2.0, T, "best", ls, **PS),
        lambda s, t, y, T, ls: R.gdkd(s, t, 1, 1.0, 1.0, 2.0, T, "best", ls),
    ),
    "gdkd3": (
        lambda s, t, y, T, ls: F.gdkd3(s, t, 4, 1.0, 2.0, 6.0, T, ls, **PS),
        lambda s, t, y, T, ls: R.gdkd3(s, t, 4, 1.0, 2.0, 6.0, T, ls),
    ),
    "gdkd_v1": (
        lambda s, t, y, T, ls: F.gdkd_v1(s, t, 5, 2.0, 3.0, 1.0, T, ls, **PS),
        lambda s, t, y, T, ls: R.gdkd_v1(s, t, 5, 2.0, 3.0, 1.0, T, ls),
    ),
    "gdkd_v2": (
        lambda s, t, y, T, ls: F.gdkd_v2(s, t, 5, 2.0, 3.0, 0.5, T, ls, **PS),
        lambda s, t, y, T, ls: R.gdkd_v2(s, t, 5, 2.0, 3.0, 0.5, T, ls),
    ),
    "gdkd_v3": (
        lambda s, t, y, T, ls: F.gdkd_v3(s, t, 5, 2.0, 3.0, 1.0, T, ls, **PS),
        lambda s, t, y, T, ls: R.gdkd_v3(s, t, 5, 2.0, 3.0, 1.0, T, ls),
    ),
}


SETTINGS = {  # (batch, classes, logit scale, temperature, standardize)
    "c100-T1": (32, 100, 3.0, 1.0, False),
    "c100-T4-standardized": (32, 100, 3.0, 4.0, True),
    "c1000-T4": (16, 1000, 5.0, 4.0, False),
    "c1000-T1-standardized": (16, 1000, 5.0, 1.0, True),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("name", list(CASES))
def test_every_loss_and_term_matches_the_float64_reference(name, setting):
    ours, reference = CASES[name]
    batch, classes, scale, temperature, standardize = SETTINGS[setting]
    s, t = _logits(batch, classes, scale, seed=classes)
    y = np.random.default_rng(2).integers(0, classes, batch)
    loss, terms = ours(s, t, y, temperature, standardize)
    want, want_terms = reference(s, t, y, temperature, standardize)
    assert set(terms) == set(want_terms)
    np.testing.assert_allclose(_np(keras.ops.mean(loss)), want.mean(), rtol=RTOL)
    atol = PART_TOL * np.abs(want).max()
    np.testing.assert_allclose(_np(loss), want, rtol=0, atol=atol)
    for term, value in want_terms.items():
        np.testing.assert_allclose(_np(terms[term]), value, rtol=0, atol=atol, err_msg=term)


def test_public_functions_and_objects_match_the_reference():
    s, t = _logits(16, 10, 2.0, seed=3)
    y = np.arange(16) % 10
    pairs = [
        (kg.kd(s, t, temperature=2.0), R.kd(s, t, 2.0)),
        (kg.KD(temperature=2.0, standardize=True)(s, t), R.kd(s, t, 2.0, True)),
        (kg.dkd(s, t, y, alpha=0.5, beta=2.0, temperature=2.0), R.dkd(s, t, y, 0.5, 2.0, 2.0)),
        (kg.DKD(alpha=0.5, beta=2.0, temperature=2.0)(s, t, y), R.dkd(s, t, y, 0.5, 2.0, 2.0)),
        (kg.gdkd(s, t, k=2, w1=2.0, w2=6.0, temperature=2.0), R.gdkd(s, t, 2, 1.0, 2.0, 6.0, 2.0)),
        (
            kg.GDKD(k=2, w0=0.5, w1=2.0, w2=6.0, temperature=2.0, strategy="worst")(s, t),
            R.gdkd(s, t, 2, 0.5, 2.0, 6.0, 2.0, "worst"),
        ),
        (
            kg.gdkd3(s, t, k=3, w1=2.0, w2=6.0, temperature=2.0),
            R.gdkd3(s, t, 3, 1.0, 2.0, 6.0, 2.0),
        ),
        (kg.GDKD3(k=3, w2=6.0, temperature=2.0)(s, t), R.gdkd3(s, t, 3, 1.0, 1.0, 6.0, 2.0)),
        (kg.gdkd_v1(s, t, k=3, m1=2.0, m2=0.5), R.gdkd_v1(s, t, 3, 2.0, 0.5)),
        (kg.GDKDV1(k=3, m1=2.0, m2=0.5)(s, t), R.gdkd_v1(s, t, 3, 2.0, 0.5)),
        (kg.gdkd_v2(s, t, k=3, w1=2.0, m2=4.0), R.gdkd_v2(s, t, 3, 2.0, 4.0)),
        (kg.GDKDV2(k=3, w1=2.0, m2=4.0)(s, t), R.gdkd_v2(s, t, 3, 2.0, 4.0)),
        (kg.gdkd_v3(s, t, k=3, m1=2.0, w2=5.0), R.gdkd_v3(s, t, 3, 2.0, 5.0)),
        (
            kg.GDKDV3(k=3, m1=2.0, w2=5.0, standardize=True)(s, t),
            R.gdkd_v3(s, t, 3, 2.0, 5.0, 1.0, 4.0, True),
        ),
    ]
    for index, (got, (want, _)) in enumerate(pairs):
        np.testing.assert_allclose(_np(got), want.mean(), rtol=RTOL, err_msg=str(index))


def _numeric_grad(f, s, eps=1e-6):
    s = s.astype(np.float64)
    grad = np.zeros_like(s)
    for idx in np.ndindex(*s.shape):
        up, down = s.copy(), s.copy()
        up[idx] += eps
        down[idx] -= eps
        grad[idx] = (f(up) - f(down)) / (2 * eps)
    return grad


@pytest.mark.parametrize("standardize", [False, True], ids=["raw", "standardized"])
@pytest.mark.parametrize("name", list(CASES))
def test_gradients_match_central_differences_of_the_reference(name, standardize):
    ours, reference = CASES[name]
    s, t = _logits(4, 12, 2.0, seed=4)
    y = np.array([0, 3, 7, 11])
    temperature = 2.0
    _, grad = value_and_grad(
        lambda v: keras.ops.mean(ours(v, t, y, temperature, standardize)[0]), s
    )
    want = _numeric_grad(lambda v: reference(v, t, y, temperature, standardize)[0].mean(), s)
    np.testing.assert_allclose(grad, want, rtol=1e-4, atol=2e-6)


def _gt(t, y):
    gt = np.eye(t.shape[1], dtype=bool)[y]
    return [gt, ~gt]


def _three_sets(t, y):
    top1, top4 = R.rank_mask(t, 1), R.rank_mask(t, 4)
    return [top1, top4 & ~top1, ~top4]


@pytest.mark.parametrize(
    "name, masks, weights",
    [
        ("gdkd", lambda t, y: [R.rank_mask(t, 5), ~R.rank_mask(t, 5)], (0.5, 2.0, 8.0)),
        ("dkd", _gt, (1.0, 0.0, 8.0)),
        ("gdkd3", _three_sets, (1.0, 0.0, 2.0, 6.0)),
    ],
)
def test_gradients_match_the_closed_form(name, masks, weights):
    s, t = _logits(16, 100, 3.0, seed=8)
    y = np.random.default_rng(9).integers(0, 100, 16)
    losses = {
        "gdkd": lambda v: kg.gdkd(v, t, k=5, w0=0.5, w1=2.0, w2=8.0, temperature=4.0),
        "dkd": lambda v: kg.dkd(v, t, y, alpha=1.0, beta=8.0, temperature=4.0),
        "gdkd3": lambda v: kg.gdkd3(v, t, k=4, w1=2.0, w2=6.0, temperature=4.0),
    }
    _, grad = value_and_grad(losses[name], s)
    want = R.gradient_wrt_student(s, t, masks(t, y), weights, 4.0)
    np.testing.assert_allclose(grad, want, rtol=0, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("scale", [1e3, 1e4])
def test_huge_logit_gaps_are_finite_and_exact(scale, temperature):
    s, t = _logits(8, 50, 1.0, seed=6) * np.float32(scale)
    y = np.arange(8)
    for fn, (want, _) in [
        (
            lambda v: kg.gdkd(v, t, k=5, w1=2.0, w2=8.0, temperature=temperature),
            R.gdkd(s, t, 5, 1.0, 2.0, 8.0, temperature),
        ),
        (
            lambda v: kg.gdkd3(v, t, k=4, temperature=temperature),
            R.gdkd3(s, t, 4, 1.0, 1.0, 8.0, temperature),
        ),
        (lambda v: kg.dkd(v, t, y, temperature=temperature), R.dkd(s, t, y, 1.0, 8.0, temperature)),
        (lambda v: kg.kd(v, t, temperature=temperature), R.kd(s, t, temperature)),
        (
            lambda v: kg.gdkd_v1(v, t, k=5, m2=3.0, temperature=temperature),
            R.gdkd_v1(s, t, 5, 1.0, 3.0, 1.0, temperature),
        ),
    ]:
        value, grad = value_and_grad(fn, s)
        assert np.isfinite(value) and np.all(np.isfinite(grad))
        np.testing.assert_allclose(value, want.mean(), rtol=RTOL)


def test_the_reference_satisfies_the_exact_identities():
    # Checks of the reference itself, so that a plain clone trusts it without ../shared.
    s, t = _logits(16, 20, 3.0, seed=10)
    rng = np.random.default_rng(11)
    assign = np.stack([rng.permutation(np.arange(20) % 3) for _ in range(16)])
    masks = [assign == j for j in range(3)]
    terms = R.partition_terms(s, t, masks, 2.0)
    recomposed = terms["high"] + sum(terms["mass_t"][:, j] * terms["low"][j] for j in range(3))
    np.testing.assert_allclose(recomposed, R.kd(s, t, 2.0)[0], rtol=1e-12)
    np.testing.assert_allclose(R.gdkd_v1(s, t, 5, 1.0, 1.0)[0], R.kd(s, t)[0], rtol=1e-12)
    labels = t.argmax(axis=1)
    np.testing.assert_allclose(
        R.gdkd(s, t, 1, 0.7, 3.0, 5.0, 3.0)[0], R.dkd(s, t, labels, 0.7, 5.0, 3.0)[0], rtol=1e-12
    )
    s4, t4 = s[:4], t[:4]
    top = R.rank_mask(t4, 5)
    closed = R.gradient_wrt_student(s4, t4, [top, ~top], (0.5, 2.0, 8.0), 4.0)
    numeric = _numeric_grad(lambda v: R.gdkd(v, t4, 5, 0.5, 2.0, 8.0, 4.0)[0].mean(), s4)
    np.testing.assert_allclose(closed, numeric, rtol=1e-6, atol=1e-9)


def test_standardize_is_a_row_wise_z_score():
    z = _logits(4, 10, 3.0, seed=12)[0].astype(np.float64)
    got = R.standardize(z)
    np.testing.assert_allclose(got.mean(axis=1), 0.0, atol=1e-12)
    np.testing.assert_allclose(got.std(axis=1, ddof=1), 1.0, rtol=1e-6)


# --- the second, independent oracle in ../shared (skipped when the folder is absent) ----------


@pytest.fixture(scope="module")
def shared_ref(shared_dir):
    path = shared_dir / "reference" / "losses_reference.py"
    spec = importlib.util.spec_from_file_location("losses_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SHARED_CASES = [  # (name, ours(s, t, y, T), shared oracle(ref, s, t, y, T), our term -> theirs)
    ("kd", lambda s, t, y, T: F.kd(s, t, T, **PS), lambda r, s, t, y, T: r.kd(s, t, T),
     {"kd_loss": "kd"}),
    ("dkd", lambda s, t, y, T: F.dkd(s, t, y, 1.0, 8.0, T, **PS),
     lambda r, s, t, y, T: r.dkd(s, t, y, 1.0, 8.0, T),
     {"tckd_loss": "high", "nckd_loss": "low1"}),
    ("gdkd", lambda s, t, y, T: F.gdkd(s, t, 5, 1.0, 2.0, 8.0, T, **PS),
     lambda r, s, t, y, T: r.gdkd(s, t, 5, 1.0, 2.0, 8.0, T),
     {"high_loss": "high", "low_top_loss": "low0", "low_other_loss": "low1"}),
    ("gdkd_worst", lambda s, t, y, T: F.gdkd(s, t, 3, 0.5, 1.0, 6.0, T, "worst", **PS),
     lambda r, s, t, y, T: r.gdkd(s, t, 3, 0.5, 1.0, 6.0, T, "worst"),
     {"high_loss": "high", "low_top_loss": "low0", "low_other_loss": "low1"}),
    ("gdkd3", lambda s, t, y, T: F.gdkd3(s, t, 4, 1.0, 2.0, 6.0, T, **PS),
     lambda r, s, t, y, T: r.gdkd3(s, t, 4, 1.0, 2.0, 6.0, T),
     {"high_loss": "high", "low_top_loss": "low1", "low_other_loss": "low2"}),
]  # fmt: skip


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the shared oracle's inf - inf
@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("case", SHARED_CASES, ids=[c[0] for c in SHARED_CASES])
def test_library_matches_the_shared_oracle(shared_ref, case, temperature):
    _, ours, oracle, parts = case
    s, t = _logits(32, 100, 3.0, seed=1)
    y = np.random.default_rng(2).integers(0, 100, 32)
    loss, terms = ours(s, t, y, temperature)
    want, want_parts = oracle(shared_ref, s, t, y, temperature)
    np.testing.assert_allclose(_np(keras.ops.mean(loss)), want, rtol=RTOL)
    for name, ref_name in parts.items():
        np.testing.assert_allclose(
            _np(keras.ops.mean(terms[name])), want_parts[ref_name], rtol=RTOL, atol=1e-6
        )


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the shared oracle's inf - inf
@pytest.mark.parametrize("scale", [3.0, 1e4])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_repository_reference_matches_the_shared_oracle(shared_ref, temperature, scale):
    s, t = _logits(32, 100, scale, seed=13).astype(np.float64)
    y = np.random.default_rng(14).integers(0, 100, 32)
    T = temperature
    pairs = [
        (R.kd(s, t, T), shared_ref.kd(s, t, T), {"kd_loss": "kd"}),
        (R.dkd(s, t, y, 1.0, 8.0, T), shared_ref.dkd(s, t, y, 1.0, 8.0, T),
         {"tckd_loss": "high", "nckd_loss": "low1"}),
        (R.gdkd(s, t, 5, 1.0, 2.0, 8.0, T), shared_ref.gdkd(s, t, 5, 1.0, 2.0, 8.0, T),
         {"high_loss": "high", "low_top_loss": "low0", "low_other_loss": "low1"}),
        (R.gdkd(s, t, 3, 0.5, 1.0, 6.0, T, "worst"),
         shared_ref.gdkd(s, t, 3, 0.5, 1.0, 6.0, T, "worst"),
         {"high_loss": "high", "low_top_loss": "low0", "low_other_loss": "low1"}),
        (R.gdkd3(s, t, 4, 1.0, 2.0, 6.0, T), shared_ref.gdkd3(s, t, 4, 1.0, 2.0, 6.0, T),
         {"high_loss": "high", "low_top_loss": "low1", "low_other_loss": "low2"}),
    ]  # fmt: skip
    for (mine, my_parts), (theirs, their_parts), names in pairs:
        np.testing.assert_allclose(mine.mean(), theirs, rtol=1e-12)
        for my_name, their_name in names.items():
            np.testing.assert_allclose(
                my_parts[my_name].mean(), their_parts[their_name], rtol=1e-12, atol=1e-12
            )


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
