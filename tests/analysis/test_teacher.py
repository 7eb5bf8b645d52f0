"""The teacher's predictive-distribution statistics against float64 references."""

import json
import math

import numpy as np
import pytest

from keras_gdkd.analysis import teacher
from tests.analysis import np_ref as R


def _data(n=48, c=100, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    t = (rng.normal(size=(n, c)) * scale).astype("float32")
    return t, rng.integers(0, c, size=n)


def _no_arrays(result):
    return {key: value for key, value in result.items() if key != "per_sample"}


@pytest.mark.parametrize("c", [10, 50, 100])
def test_topk_mass_matches_sort_and_cumsum(c):
    t, y = _data(c=c, scale=4.0)
    stats = teacher.teacher_distribution_stats(t, y, k=3, quantile_ks=(1, 2, 3, 5, 50))
    for temperature in (1.0, 4.0):
        block = stats["per_temperature"][f"T={temperature:g}"]
        ref = R.topk_mass(t, temperature)
        mean = np.asarray(block["topk_mass_mean"])
        np.testing.assert_allclose(mean, ref.mean(axis=0), rtol=1e-5)
        assert np.all(np.diff(mean) >= -1e-7)
        np.testing.assert_allclose(mean[0], R.softmax(t / temperature).max(-1).mean(), rtol=1e-5)
        np.testing.assert_allclose(mean[-1], 1.0, rtol=1e-5)
        # With at most 50 classes every k below C gets quantiles (the figure's whole range).
        expected_ks = sorted(
            {kq for kq in (1, 2, 3, 5, 50) if kq < c} | set(range(1, c) if c <= 50 else ())
        )
        assert list(block["topk_mass_quantiles"]) == [str(kq) for kq in expected_ks]
        for kq in expected_ks:
            np.testing.assert_allclose(
                block["topk_mass_quantiles"][str(kq)],
                np.quantile(ref[:, kq - 1], (0.1, 0.5, 0.9)),
                rtol=1e-5,
            )


def test_entropy_matches_numpy_and_edge_cases():
    t, y = _data(c=10, scale=5.0)
    stats = teacher.teacher_distribution_stats(t, y, k=2)
    for temperature in (1.0, 4.0):
        key = f"T={temperature:g}"
        ref = R.entropy(t, temperature)
        np.testing.assert_allclose(stats["per_sample"]["entropy"][key], ref, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(
            stats["per_temperature"][key]["entropy"]["mean"], ref.mean(), rtol=2e-5
        )
        np.testing.assert_allclose(
            stats["per_temperature"][key]["entropy"]["normalized"]["median"],
            np.median(ref / math.log(10)),
            rtol=2e-5,
        )
    uniform = np.zeros((4, 10), "float32")
    h = teacher.teacher_distribution_stats(uniform, k=2)["per_sample"]["entropy"]
    np.testing.assert_allclose(h["T=1"], math.log(10), rtol=1e-6)
    gap = np.zeros((3, 10), "float32")
    gap[:, 4] = 1e4
    h = teacher.teacher_distribution_stats(gap, k=2, temperatures=(1.0,))["per_sample"]["entropy"]
    assert np.all(np.isfinite(h["T=1"])) and np.all(h["T=1"] == 0.0)


@pytest.mark.parametrize("k", [1, 3])
def test_log10_other_mass_is_exact_where_one_minus_top_mass_rounds_to_zero(k):
    c = 10
    t = np.zeros((2, c), "float32")
    t[:, :k] = 50.0
    stats = teacher.teacher_distribution_stats(t, k=k, temperatures=(1.0,))
    got = stats["per_sample"]["log10_other_mass"]["T=1"]
    expected = -50.0 / math.log(10) + math.log10(c - k) - math.log10(k)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # The float32 complement of the top mass is exactly 0 here: only log space gets this right.
    q = np.exp(t[0] - t[0].max()).astype("float32")
    assert np.float32(1.0) - np.float32(q[:k].sum() / q.sum()) == 0.0


def test_log10_other_mass_matches_reference():
    t, y = _data(c=100, scale=5.0)
    stats = teacher.teacher_distribution_stats(t, y, k=5)
    for temperature in (1.0, 4.0):
        np.testing.assert_allclose(
            stats["per_sample"]["log10_other_mass"][f"T={temperature:g}"],
            R.log10_other_mass(t, temperature, 5),
            rtol=1e-5,
            atol=1e-5,
        )


def test_autok_hand_vectors():
    probs = np.array(
        [[0.5, 0.3, 0.1, 0.05, 0.05], [0.96, 0.01, 0.01, 0.01, 0.01], [0.2] * 5], "float64"
    )
    t = np.log(probs).astype("float32")
    np.testing.assert_array_equal(teacher.autok(t, temperature=1.0), [2, 1, 1])
    # Sorted ascending, [.1, .2, .3, .4] has ratios 1, 1.33, 1.5, 1.6 to the running mean: the
    # first >= 1.4 is at index 2, so k = 4 - 2 = 2; a cap of 1 clips it.
    spread = np.log([[0.4, 0.3, 0.2, 0.1]]).astype("float32")
    np.testing.assert_array_equal(teacher.autok(spread, 1.0, ratio_threshold=1.4), [2])
    np.testing.assert_array_equal(teacher.autok(spread, 1.0, ratio_threshold=1.4, k_cap=1), [1])
    np.testing.assert_array_equal(R.calc_topk(probs, 5, 2.0), [2, 1, 1])


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_autok_equals_calc_topk_and_is_permutation_invariant(temperature):
    t, _ = _data(n=64, c=100, scale=3.0, seed=1)
    got = teacher.autok(t, temperature, batch_size=13)
    expected = R.calc_topk(R.softmax(t / temperature), 100, 2.0)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(teacher.autok(t, temperature, k_cap=10), np.minimum(expected, 10))
    perm = np.random.default_rng(2).permutation(100)
    np.testing.assert_array_equal(teacher.autok(t[:, perm], temperature), got)


def test_per_class_k_is_autok_of_the_class_mean():
    t, y = _data(n=64, c=10, scale=3.0, seed=3)
    y[y == 7] = 6  # class 7 has no sample
    got = teacher.per_class_k(t, y, 10, temperature=4.0, batch_size=5)
    assert got[7] == -1
    present = np.arange(10) != 7
    np.testing.assert_array_equal(got, R.prebuild_topk(t, y, 10, 4.0, 10, 2.0))
    q = R.softmax(t / 4.0)
    for c in np.flatnonzero(present):
        mean_logits = np.log(q[y == c].mean(axis=0)).astype("float32")[None]
        assert got[c] == teacher.autok(mean_logits, temperature=1.0)[0]
    stats = teacher.teacher_distribution_stats(t, y, k=2, temperatures=(4.0,))
    assert stats["per_temperature"]["T=4"]["per_class_k"] == got.tolist()


def test_n_within_counts_classes_near_the_top():
    t, y = _data(c=100, scale=2.0, seed=4)
    for temperature in (1.0, 4.0):
        np.testing.assert_array_equal(
            teacher.n_within(t, temperature, ratio=2.0), R.n_within(t, temperature, 2.0)
        )
    np.testing.assert_array_equal(teacher.n_within(np.zeros((2, 10), "float32"), 1.0), [10, 10])


def test_summary_fields_histograms_and_label_statistics():
    t, y = _data(n=64, c=10, scale=3.0, seed=5)
    y[:20] = np.argmax(t[:20], axis=1)  # some samples where the teacher is right
    stats = teacher.teacher_distribution_stats(t, y, k=3, temperatures=(1.0, 4.0))
    argmax = t.argmax(axis=1)
    assert stats["teacher_top1"] == pytest.approx(np.mean(argmax == y))
    assert stats["argmax_ne_label"] == pytest.approx(np.mean(argmax != y))
    assert stats["label_in_topk"] == pytest.approx(R.topk_mask(t, 3)[np.arange(64), y].mean())
    for temperature in (1.0, 4.0):
        key = f"T={temperature:g}"
        block = stats["per_temperature"][key]
        ks = R.calc_topk(R.softmax(t / temperature), 10, 2.0)
        assert len(block["autok"]["hist"]) == 11 and sum(block["autok"]["hist"]) == 64
        assert sum(block["n_within"]["hist"]) == 64
        assert block["autok"]["hist"] == np.bincount(ks, minlength=11).tolist()
        assert block["autok"]["mean"] == pytest.approx(ks.mean())
        assert block["autok"]["median"] == pytest.approx(np.median(ks))
        assert block["autok"]["frac_k1"] == pytest.approx(np.mean(ks == 1))
        assert block["autok"]["frac_le_k"] == pytest.approx(np.mean(ks <= 3))
        assert block["n_within"]["mean"] == pytest.approx(R.n_within(t, temperature, 2.0).mean())
    json.dumps(_no_arrays(stats), allow_nan=False)


def test_chunking_and_missing_labels():
    t, y = _data(n=40, c=100, seed=6)
    a = teacher.teacher_distribution_stats(t, y, batch_size=7)
    b = teacher.teacher_distribution_stats(t, y, batch_size=4096)
    for key in ("teacher_top1", "label_in_topk"):
        assert a[key] == b[key]
    for key, block in a["per_temperature"].items():
        np.testing.assert_allclose(
            block["topk_mass_mean"], b["per_temperature"][key]["topk_mass_mean"], rtol=1e-6
        )
        assert block["autok"] == b["per_temperature"][key]["autok"]
    unlabeled = teacher.teacher_distribution_stats(t)
    assert unlabeled["teacher_top1"] is None and unlabeled["label_in_topk"] is None
    assert unlabeled["per_temperature"]["T=4"]["per_class_k"] is None


def test_bad_arguments_raise():
    t, y = _data(n=8, c=10)
    with pytest.raises(ValueError, match="k must satisfy"):
        teacher.teacher_distribution_stats(t, k=10)
    with pytest.raises(ValueError, match="temperature"):
        teacher.autok(t, temperature=0.0)
    with pytest.raises(ValueError, match="k_cap"):
        teacher.autok(t, k_cap=0)
    with pytest.raises(ValueError, match="ratio"):
        teacher.n_within(t, 1.0, ratio=0.5)
    with pytest.raises(ValueError, match="labels must lie"):
        teacher.per_class_k(t, y + 10, 10)
    with pytest.raises(ValueError, match="shape"):
        teacher.autok(t[0])
