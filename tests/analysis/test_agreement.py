"""Teacher-student agreement and the GDKD decomposition of their KL."""

import importlib.util
import json

import keras
import numpy as np
import pytest

import keras_gdkd
from keras_gdkd.analysis import agreement
from tests.analysis import np_ref as R

W = {"w0": 1.0, "w1": 2.0, "w2": 8.0}


def _data(n=64, c=100, scale=4.0, seed=0):
    rng = np.random.default_rng(seed)
    s, t = (rng.normal(size=(2, n, c)) * scale).astype("float32")
    return s, t, rng.integers(0, c, size=n)


def _stats(s, t, y, **kwargs):
    return agreement.agreement_stats(s, t, y, **{"k": 5, **W, **kwargs})


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_top1_and_topk_agreement_match_numpy():
    s, t, y = _data(c=10, scale=3.0)
    s[:20] = t[:20] + 0.3 * s[:20]  # some rows that agree
    r = _stats(s, t, y, k=3)
    assert r["top1_agreement"] == pytest.approx(np.mean(s.argmax(1) == t.argmax(1)))
    assert r["student_top1"] == pytest.approx(np.mean(s.argmax(1) == y))
    assert r["teacher_top1"] == pytest.approx(np.mean(t.argmax(1) == y))
    overlap = (R.topk_mask(s, 3) & R.topk_mask(t, 3)).sum(1) / 3
    assert r["topk_overlap"] == pytest.approx(overlap.mean())
    assert 0 < r["top1_agreement"] < 1


def test_a_shifted_copy_of_the_teacher_agrees_exactly():
    _, t, y = _data(c=100, scale=3.0)
    shift = np.random.default_rng(1).normal(size=(len(t), 1)) * 5
    s = (t + shift).astype("float32")
    r = _stats(s, t, y)
    assert r["top1_agreement"] == 1.0 and r["topk_overlap"] == 1.0
    for block in r["per_temperature"].values():
        for name in ("kl", "kl_high", "kl_top", "kl_other"):
            assert abs(block[name]) < 1e-6, (name, block[name])
    # The loss terms carry T^2 = 16 and the loss the weights too: 1e-6 per unscaled KL.
    for value in (*r["gdkd_terms"].values(), *r["dkd_terms"].values()):
        assert abs(value) < 16e-6
    assert abs(r["gdkd_loss"]) < 16e-6 * sum(W.values())


@pytest.mark.parametrize("c", [10, 100])
def test_kl_and_its_terms_match_the_float64_reference(c):
    s, t, y = _data(c=c, scale=5.0)
    r = _stats(s, t, y, k=3, temperatures=(1.0, 4.0))
    top = R.topk_mask(t, 3)
    for temperature in (1.0, 4.0):
        ref = R.partition_terms(s, t, top, temperature)
        block = r["per_temperature"][f"T={temperature:g}"]
        assert block["kl"] == pytest.approx(ref["kl"].mean(), rel=2e-5)
        assert block["kl_high"] == pytest.approx(ref["high"].mean(), rel=2e-5)
        assert block["kl_top"] == pytest.approx(ref["low_top"].mean(), rel=2e-5)
        assert block["kl_other"] == pytest.approx(ref["low_other"].mean(), rel=2e-5)
        np.testing.assert_allclose(
            r["per_sample"]["kl"][f"T={temperature:g}"], ref["kl"], rtol=2e-5, atol=1e-6
        )
        # kl = high + b_t top + b_o other, per sample, up to float32 round-off.
        assert block["decomposition_residual"] <= 1e-5 * (1 + ref["kl"].max())
        identity = (
            ref["high"] + ref["b_t"][:, 0] * ref["low_top"] + ref["b_t"][:, 1] * ref["low_other"]
        )
        np.testing.assert_allclose(identity, ref["kl"], rtol=1e-10)


def test_gdkd_and_dkd_terms_equal_the_library_losses(shared_dir_or_none):
    s, t, y = _data(c=100, scale=4.0)
    r = _stats(s, t, y, temperature=4.0)
    loss, terms = keras_gdkd.losses.gdkd(
        s, t, k=5, **W, temperature=4.0, reduction=None, return_terms=True
    )
    for name, value in terms.items():
        assert r["gdkd_terms"][name] == pytest.approx(float(np.mean(_np(value))), rel=1e-5)
    assert r["gdkd_loss"] == pytest.approx(float(np.mean(_np(loss))), rel=1e-5)
    _, terms = keras_gdkd.losses.dkd(
        s, t, y, alpha=1.0, beta=8.0, temperature=4.0, reduction=None, return_terms=True
    )
    for name, value in terms.items():
        assert r["dkd_terms"][name] == pytest.approx(float(np.mean(_np(value))), rel=1e-5)
    assert set(r["gdkd_terms"]) == {"high_loss", "low_top_loss", "low_other_loss"}
    assert set(r["dkd_terms"]) == {"tckd_loss", "nckd_loss"}
    if shared_dir_or_none is not None:
        path = shared_dir_or_none / "reference" / "losses_reference.py"
        spec = importlib.util.spec_from_file_location("losses_reference", path)
        ref = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(ref)
        total, parts = ref.gdkd(s, t, k=5, **W, T=4.0)
        assert r["gdkd_loss"] == pytest.approx(total, rel=1e-5)
        assert r["gdkd_terms"]["high_loss"] == pytest.approx(parts["high"], rel=1e-5)
        assert r["gdkd_terms"]["low_top_loss"] == pytest.approx(parts["low0"], rel=1e-5)
        assert r["gdkd_terms"]["low_other_loss"] == pytest.approx(parts["low1"], rel=1e-5)
        _, parts = ref.dkd(s, t, y, 1.0, 8.0, T=4.0)
        assert r["dkd_terms"]["tckd_loss"] == pytest.approx(parts["high"], rel=1e-5)
        assert r["dkd_terms"]["nckd_loss"] == pytest.approx(parts["low1"], rel=1e-5)


@pytest.fixture
def shared_dir_or_none(request):
    from tests.conftest import SHARED_DIR

    return SHARED_DIR if SHARED_DIR.is_dir() else None


def test_non_top_structure_matches_reference_and_subsets():
    s, t, y = _data(c=10, scale=3.0)
    y[:30] = t[:30].argmax(1)
    r = _stats(s, t, y, k=3, temperature=4.0)
    wrong = t.argmax(1) != y
    for part, top in (
        ("target", R.label_mask(y, 10)),
        ("top1", R.topk_mask(t, 1)),
        ("topk", R.topk_mask(t, 3)),
    ):
        ref = R.rest_structure(s, t, top, 4.0)
        for subset, rows in (("all", slice(None)), ("argmax_ne_label", wrong)):
            got = r["non_top_structure"][part][subset]
            assert got["num_samples"] == len(y[rows])
            for name, values in ref.items():
                assert got[name] == pytest.approx(values[rows].mean(), rel=2e-5), (part, name)


def test_target_and_top1_structure_agree_when_the_teacher_is_always_right():
    s, t, _ = _data(c=10, scale=3.0)
    r = _stats(s, t, t.argmax(1), k=2)
    structure = r["non_top_structure"]
    assert structure["target"]["all"] == structure["top1"]["all"]
    assert structure["target"]["argmax_ne_label"]["num_samples"] == 0
    assert np.isnan(structure["target"]["argmax_ne_label"]["teacher_dominance"])


def _close(a, b, path=""):
    if path.endswith("decomposition_residual"):  # float32 round-off itself: only bounded
        assert max(a, b) < 1e-4, path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _close(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, (list, tuple, np.ndarray)) or isinstance(a, float):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-6, err_msg=path)
    else:
        assert a == b, path


def test_chunk_size_and_class_permutation_do_not_change_the_results():
    s, t, y = _data(n=40, c=100, scale=4.0)
    base = _stats(s, t, y, batch_size=4096)
    _close(_stats(s, t, y, batch_size=7), base)
    perm = np.random.default_rng(3).permutation(100)
    inverse = np.argsort(perm)
    permuted = _stats(s[:, perm], t[:, perm], inverse[y])
    _close(permuted, base)


def test_without_labels_and_json_ready():
    s, t, _ = _data(n=48, c=10)
    r = _stats(s, t, None, k=2)
    assert r["student_top1"] is None and r["dkd_terms"] is None
    assert r["non_top_structure"]["target"] is None
    assert r["non_top_structure"]["topk"]["argmax_ne_label"] is None
    json.dumps({key: v for key, v in r.items() if key != "per_sample"}, allow_nan=False)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # the NaN comes without a numpy warning
def test_one_class_rest_set_has_nan_normalised_entropy():
    s, t, y = _data(n=8, c=2)
    r = _stats(s, t, y, k=1)
    assert np.isnan(r["non_top_structure"]["topk"]["all"]["teacher_entropy"])
    assert r["non_top_structure"]["topk"]["all"]["teacher_dominance"] == pytest.approx(1.0)


def test_bad_inputs_raise():
    s, t, y = _data(n=8, c=10)
    with pytest.raises(ValueError, match="must match|classes"):
        agreement.agreement_stats(s[:, :5], t)
    with pytest.raises(ValueError, match="k must satisfy"):
        agreement.agreement_stats(s, t, k=10)
    with pytest.raises(ValueError, match="w2"):
        agreement.agreement_stats(s, t, w2=-1.0)
    with pytest.raises(ValueError, match="labels"):
        agreement.agreement_stats(s, t, y[:3])
