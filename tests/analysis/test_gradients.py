"""Closed-form logit gradients against autodiff, KD's decomposition, and the gradient shares."""

import json

import numpy as np
import pytest
from keras import ops

import keras_gdkd
from keras_gdkd.analysis import gradients
from keras_gdkd.losses import partition as P
from tests.analysis import np_ref as R
from tests.backend_utils import value_and_grad

TERMS = ("high", "low_top", "low_other", "kd")


def _data(n=48, c=100, scale=4.0, seed=0):
    rng = np.random.default_rng(seed)
    s, t = (rng.normal(size=(2, n, c)) * scale).astype("float32")
    return s, t, rng.integers(0, c, size=n)


def _autodiff(s, t, masks, temperature, term):
    """Gradient of the summed, T^2-scaled term built from partition.kl_terms."""
    t_z = ops.convert_to_tensor(t) / temperature

    def loss(x):
        if term == "kd":
            log_q = ops.log_softmax(t_z, axis=-1)
            kl = ops.sum(ops.exp(log_q) * (log_q - ops.log_softmax(x / temperature, axis=-1)), -1)
        else:
            high, (low_top, low_other), _ = P.kl_terms(x / temperature, t_z, masks)
            kl = {"high": high, "low_top": low_top, "low_other": low_other}[term]
        return temperature**2 * ops.sum(kl)

    return value_and_grad(loss, s)[1]


def _assert_grad_close(got, expected, name="", scale=None):
    # Relative to the largest gradient entry; a one-class set's term is 0 in closed form and
    # round-off (~1e-8) by autodiff, so its scale is KD's.
    scale = np.abs(expected).max() if scale is None else scale
    assert np.abs(got - expected).max() <= 1e-5 * scale, name


@pytest.mark.parametrize(
    "partition,k,c,temperature", [("topk", 5, 100, 4.0), ("top1", 5, 10, 1.0), ("topk", 3, 10, 2.0)]
)
def test_closed_forms_equal_autodiff(partition, k, c, temperature):
    s, t, _ = _data(c=c)
    g = gradients.logit_gradients(s, t, partition=partition, k=k, temperature=temperature)
    ks = (k,) if partition == "topk" else (1,)
    masks = P.topk_masks(ops.convert_to_tensor(t), ks)
    scale = np.abs(g["kd"]).max()
    for term in TERMS:
        expected = _autodiff(s, t, masks, temperature, term)
        _assert_grad_close(g[term], expected, term, scale)
    ref = R.gradients(s, t, R.topk_mask(t, ks[0]), temperature)
    for term in TERMS:
        _assert_grad_close(g[term], ref[term], term, scale)
    np.testing.assert_array_equal(g["masks"][0], R.topk_mask(t, ks[0]))
    np.testing.assert_allclose(g["teacher_mass"], ref["b_t"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(g["student_mass"], ref["b_s"], rtol=1e-5, atol=1e-7)


def test_target_partition_reproduces_dkd_autodiff():
    s, t, y = _data(c=100)
    g = gradients.logit_gradients(s, t, y, partition="target", temperature=4.0)

    def dkd_grad(alpha, beta):
        fn = lambda x: keras_gdkd.losses.dkd(  # noqa: E731
            x, t, y, alpha=alpha, beta=beta, temperature=4.0, reduction="sum"
        )
        return value_and_grad(fn, s)[1]

    _assert_grad_close(g["high"], dkd_grad(1.0, 0.0), "tckd")
    _assert_grad_close(g["low_other"], dkd_grad(0.0, 1.0), "nckd")
    assert not g["low_top"].any()
    np.testing.assert_array_equal(g["masks"][0], R.label_mask(y, 100))
    kd = value_and_grad(lambda x: keras_gdkd.losses.kd(x, t, temperature=4.0, reduction="sum"), s)[
        1
    ]
    _assert_grad_close(g["kd"], kd, "kd")


@pytest.mark.parametrize("partition", ["topk", "target"])
def test_kd_is_gdkd_with_the_teacher_masses_as_weights(partition):
    s, t, y = _data(c=100, scale=5.0)
    g = gradients.logit_gradients(s, t, y, partition=partition, k=5)
    b = g["teacher_mass"]
    combined = g["high"] + b[:, :1] * g["low_top"] + b[:, 1:] * g["low_other"]
    np.testing.assert_allclose(combined, g["kd"], atol=1e-6 * np.abs(g["kd"]).max())

    kwargs = {"k": 5, "temperature": 4.0, "partition": partition}
    shares = gradients.gradient_shares(s, t, y, w0=1.0, w1="teacher", w2="teacher", **kwargs)
    # Equal up to float32 round-off: net_other is a sum of entries that nearly cancel.
    for name, atol in (("share_other", 1e-6), ("leaf_other_share", 1e-6), ("net_other", 1e-5)):
        np.testing.assert_allclose(
            shares["per_sample"]["gdkd"][name], shares["per_sample"]["kd"][name], atol=atol
        )
        for stat, value in shares["kd"][name].items():
            assert shares["gdkd"][name][stat] == pytest.approx(value, abs=atol)
    np.testing.assert_array_equal(shares["per_sample"]["amplification_other"], 1.0)
    assert shares["weights"] == {"w0": 1.0, "w1": "teacher", "w2": "teacher"}


def test_terms_sum_to_zero_and_leaves_stay_on_their_set():
    s, t, _ = _data(c=100)
    g = gradients.logit_gradients(s, t, k=5, temperature=4.0)
    top, rest = g["masks"]
    scale = np.abs(g["kd"]).max()
    # float32 sums of 100 entries: zero to about 1e-6 of the largest entry.
    for term in TERMS:
        assert np.abs(g[term].sum(axis=1)).max() <= 2e-5 * scale, term
    assert not g["low_top"][rest].any() and not g["low_other"][top].any()
    assert np.abs(np.where(top, g["low_top"], 0).sum(1)).max() <= 2e-5 * scale
    assert np.abs(np.where(rest, g["low_other"], 0).sum(1)).max() <= 2e-5 * scale

    shares = gradients.gradient_shares(s, t, k=5, w0=0.5, w1=2.0, w2=8.0, temperature=4.0)
    ref = R.gradients(s, t, R.topk_mask(t, 5), 4.0)
    net = 4.0 * 0.5 * (ref["b_s"][:, 1] - ref["b_t"][:, 1])
    # The leaves' sums over U2 are 0 up to float32 round-off, which w2 = 8 amplifies.
    np.testing.assert_allclose(shares["per_sample"]["gdkd"]["net_other"], net, atol=2e-5)
    np.testing.assert_allclose(shares["per_sample"]["kd"]["net_other"], net / 0.5, atol=2e-6)


def test_the_non_top_leaf_is_amplified_by_w2_over_the_teacher_mass():
    s, t, _ = _data(c=100, scale=5.0)
    g = gradients.logit_gradients(s, t, k=5, temperature=4.0)
    b_o = R.gradients(s, t, R.topk_mask(t, 5), 4.0)["b_t"][:, 1]
    leaf = np.linalg.norm(g["low_other"].astype("float64"), axis=1)
    ratio = np.linalg.norm(8.0 * g["low_other"], axis=1) / np.linalg.norm(
        g["teacher_mass"][:, 1:].astype("float64") * g["low_other"], axis=1
    )
    assert leaf.min() > 0
    np.testing.assert_allclose(ratio, 8.0 / b_o, rtol=1e-5)
    shares = gradients.gradient_shares(s, t, k=5, w1=2.0, w2=8.0, temperature=4.0)
    np.testing.assert_allclose(shares["per_sample"]["amplification_other"], 8.0 / b_o, rtol=1e-5)
    b_t = 1.0 - b_o
    np.testing.assert_allclose(shares["per_sample"]["amplification_top"], 2.0 / b_t, rtol=1e-5)
    assert shares["log10_amplification_other"]["median"] == pytest.approx(
        np.median(np.log10(8.0 / b_o)), rel=1e-5
    )


def _share_ref(g, rest, leaf):
    sq = g**2
    return {
        "share_other": np.where(rest, sq, 0).sum(1) / sq.sum(1),
        "leaf_other_share": (leaf**2).sum(1) / sq.sum(1),
        "net_other": np.where(rest, g, 0).sum(1),
        "pooled": np.where(rest, sq, 0).sum() / sq.sum(),
    }


def test_shares_match_numpy_and_are_invariant_to_the_batch_mean_and_shifts():
    s, t, _ = _data(c=100, scale=4.0)
    w = {"w0": 1.0, "w1": 2.0, "w2": 8.0}
    shares = gradients.gradient_shares(s, t, k=5, temperature=4.0, **w)
    rest = ~R.topk_mask(t, 5)
    ref = R.gradients(s, t, ~rest, 4.0)
    g_gdkd = w["w0"] * ref["high"] + w["w1"] * ref["low_top"] + w["w2"] * ref["low_other"]
    for method, g, leaf in (
        ("kd", ref["kd"], ref["b_t"][:, 1:] * ref["low_other"]),
        ("gdkd", g_gdkd, w["w2"] * ref["low_other"]),
    ):
        expected = _share_ref(g, rest, leaf)
        for name in ("share_other", "leaf_other_share", "net_other"):
            np.testing.assert_allclose(
                shares["per_sample"][method][name], expected[name], rtol=1e-4, atol=1e-6
            )
        assert shares[method]["share_other"]["pooled"] == pytest.approx(
            expected["pooled"], rel=1e-4
        )
        assert shares[method]["share_other"]["median"] == pytest.approx(
            np.median(expected["share_other"]), rel=1e-4
        )

    # The gradient of the batch-mean loss (what training sees) is g / N: the same shares.
    mean_grad = value_and_grad(
        lambda x: keras_gdkd.losses.gdkd(x, t, k=5, temperature=4.0, **w), s
    )[1].astype("float64")
    np.testing.assert_allclose(
        shares["per_sample"]["gdkd"]["share_other"],
        _share_ref(mean_grad, rest, 0 * mean_grad)["share_other"],
        rtol=1e-4,
    )
    shift = np.random.default_rng(1).normal(size=(len(s), 1)).astype("float32") * 3
    shifted = gradients.gradient_shares(s + shift, t, k=5, temperature=4.0, **w)
    for method in ("kd", "gdkd"):
        np.testing.assert_allclose(
            shifted["per_sample"][method]["share_other"],
            shares["per_sample"][method]["share_other"],
            rtol=1e-4,
        )


def test_extreme_weights():
    s, t, _ = _data(c=100)
    big = gradients.gradient_shares(s, t, k=5, w2=1e6)
    assert big["per_sample"]["gdkd"]["share_other"].min() > 0.999
    none = gradients.gradient_shares(s, t, k=5, w0=0.0, w2=0.0)
    np.testing.assert_array_equal(none["per_sample"]["gdkd"]["share_other"], 0.0)
    assert none["log10_amplification_other"]["mean"] != none["log10_amplification_other"]["mean"]
    json.dumps({k: v for k, v in big.items() if k != "per_sample"}, allow_nan=False)


def test_a_shifted_copy_of_the_teacher_has_no_gradient_and_nan_shares():
    _, t, _ = _data(n=8, c=10)
    shares = gradients.gradient_shares(t + 2.0, t, k=2)
    g = gradients.logit_gradients(t + 2.0, t, k=2)
    for term in TERMS:
        assert np.abs(g[term]).max() < 1e-6
    # Where g is (numerically) 0 the shares are ratios of round-off; with g exactly 0, NaN.
    zero = gradients.gradient_shares(t, t, k=2)
    assert np.isnan(zero["per_sample"]["kd"]["share_other"]).all()
    assert np.isnan(zero["kd"]["share_other"]["mean"])
    assert shares["num_samples"] == 8


def test_bad_arguments_raise():
    s, t, y = _data(n=8, c=10)
    with pytest.raises(ValueError, match="partition"):
        gradients.logit_gradients(s, t, partition="dkd")
    with pytest.raises(ValueError, match="needs labels"):
        gradients.gradient_shares(s, t, partition="target")
    with pytest.raises(ValueError, match="'teacher'"):
        gradients.gradient_shares(s, t, w2="student")
    with pytest.raises(ValueError, match="w0"):
        gradients.gradient_shares(s, t, w0=-1.0)
    with pytest.raises(ValueError, match="k must satisfy"):
        gradients.logit_gradients(s, t, k=0)
