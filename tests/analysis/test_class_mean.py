"""Class-mean discrepancy against the authors' loops (GDKD corr.py, mdistiller's notebook)."""

import numpy as np
import pytest

from keras_gdkd.analysis import class_mean
from tests.analysis import np_ref as R


def _data(n=48, c=10, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    s, t = (rng.normal(size=(2, n, c)) * scale).astype("float32")
    y = np.concatenate([np.arange(c), rng.integers(0, c, size=n - c)])  # every class present
    return s, t, y


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_probs_mode_equals_corr_py(temperature):
    s, _, y = _data(c=10)
    got = class_mean.class_mean_matrix(s, y, 10, mode="probs", temperature=temperature)
    np.testing.assert_allclose(
        got, R.corr_output_metric(s, y, temperature, 10), rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)


def test_logits_mode_equals_mdistiller():
    s, _, y = _data(c=100, n=200)
    got = class_mean.class_mean_matrix(s, y, 100, mode="logits", batch_size=64)
    np.testing.assert_allclose(got, R.mdistiller_output_metric(s, y, 100), rtol=1e-6, atol=1e-6)


def test_discrepancy_summary_and_identical_models():
    s, t, y = _data(c=10)
    r = class_mean.class_mean_discrepancy(s, t, y, 10, mode="probs", temperature=1.0)
    diff = np.abs(R.corr_output_metric(s, y, 1.0, 10) - R.corr_output_metric(t, y, 1.0, 10))
    np.testing.assert_allclose(r["diff"], diff, rtol=1e-5, atol=1e-7)
    off = ~np.eye(10, dtype=bool)
    assert r["max"] == pytest.approx(diff.max(), rel=1e-5)
    assert r["mean"] == pytest.approx(diff.mean(), rel=1e-5)
    assert r["offdiag_max"] == pytest.approx(diff[off].max(), rel=1e-5)
    assert r["offdiag_mean"] == pytest.approx(diff[off].mean(), rel=1e-5)
    assert r["empty_classes"] == [] and r["mode"] == "probs" and r["temperature"] == 1.0
    for mode in ("probs", "logits"):
        same = class_mean.class_mean_discrepancy(t, t, y, 10, mode=mode)
        assert not same["diff"].any() and same["max"] == 0.0


def test_probs_mode_ignores_a_per_row_shift_and_logits_mode_does_not():
    s, t, y = _data(c=10)
    shifted = s + np.random.default_rng(1).normal(size=(len(s), 1)).astype("float32") * 4
    for mode, invariant in (("probs", True), ("logits", False)):
        base = class_mean.class_mean_discrepancy(s, t, y, 10, mode=mode)["diff"]
        moved = class_mean.class_mean_discrepancy(shifted, t, y, 10, mode=mode)["diff"]
        assert np.allclose(base, moved, atol=1e-6) == invariant, mode


def test_heatmap_styles_follow_the_authors():
    s, t, y = _data(c=10)
    diff = class_mean.class_mean_discrepancy(s, t, y, 10, mode="logits")["diff"]
    dkd = class_mean.heatmap_values(diff, style="dkd", max_diff=3.0)
    expected = np.clip(diff / 3.0, 0, 1)  # mdistiller: diff / MAX_DIFF, diagonal 0, vmax 1
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(dkd, expected)
    gdkd = class_mean.heatmap_values(diff, style="gdkd", scale=4.0)
    expected = diff / diff.max() * 4.0  # corr.py: max with the diagonal, then diagonal 0
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(gdkd, np.clip(expected, 0, 1))
    for values in (dkd, gdkd):
        assert values.min() >= 0 and values.max() <= 1 and not np.diag(values).any()
    assert gdkd.max() == 1.0  # scale 4 saturates the largest entries


def test_an_empty_class_gives_a_nan_row_and_a_warning():
    s, t, y = _data(c=10)
    y = np.where(y == 3, 4, y)
    with pytest.warns(UserWarning, match="1 of 10 classes have no sample"):
        m = class_mean.class_mean_matrix(s, y, 10, mode="probs")
    assert np.isnan(m[3]).all() and np.isfinite(np.delete(m, 3, axis=0)).all()
    with pytest.warns(UserWarning, match="no sample"):
        r = class_mean.class_mean_discrepancy(s, t, y, 10, mode="logits")
    assert r["empty_classes"] == [3] and np.isfinite(r["max"]) and np.isfinite(r["offdiag_mean"])
    for style in ("dkd", "gdkd"):
        values = class_mean.heatmap_values(r["diff"], style=style)
        assert np.isnan(values[3, np.arange(10) != 3]).all() and values[3, 3] == 0
        rest = np.delete(values, 3, axis=0)
        assert rest.min() >= 0 and rest.max() <= 1


def test_true_correlation_variant():
    s, t, _ = _data(n=64, c=10)
    affine = 2.0 * t + np.arange(10, dtype="float32")  # same column correlations
    assert np.abs(class_mean.logit_correlation_discrepancy(affine, t)).max() < 1e-6
    d = class_mean.logit_correlation_discrepancy(s, t)
    np.testing.assert_allclose(d, d.T, atol=1e-12)

    def pearson(z):
        z = z.astype("float64")
        z = (z - z.mean(axis=0)) / z.std(axis=0)
        return z.T @ z / len(z)

    np.testing.assert_allclose(d, np.abs(pearson(s) - pearson(t)), atol=1e-12)


def test_bad_arguments_raise():
    s, t, y = _data(c=10)
    with pytest.raises(ValueError, match="mode"):
        class_mean.class_mean_matrix(s, y, 10, mode="softmax")
    with pytest.raises(ValueError, match="style"):
        class_mean.heatmap_values(np.zeros((3, 3)), style="seaborn")
    with pytest.raises(ValueError, match="max_diff"):
        class_mean.heatmap_values(np.zeros((3, 3)), max_diff=0.0)
    with pytest.raises(ValueError, match="square"):
        class_mean.heatmap_values(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="labels must lie"):
        class_mean.class_mean_discrepancy(s, t, y + 1, 10)
    with pytest.raises(ValueError, match="needs labels"):
        class_mean.class_mean_discrepancy(s, t, None, 10)
