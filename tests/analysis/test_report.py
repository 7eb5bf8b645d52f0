"""The analysis report: analysis.json (strict JSON, every key), arrays.npz, the seven figures."""

import json
import sys

import keras
import numpy as np
import pytest

import keras_gdkd
from keras_gdkd.analysis import plots, report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _logits(n=64, c=10, seed=0):
    """A teacher that is right most of the time, a close and a loose student."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c  # every class present
    t = rng.normal(0.0, 2.0, (n, c))
    t[np.arange(n), y] += 4.0
    close = 0.9 * t + rng.normal(0.0, 0.5, (n, c))
    loose = 0.5 * t + rng.normal(0.0, 2.0, (n, c))
    as32 = lambda a: a.astype("float32")  # noqa: E731
    return as32(t), {"close": as32(close), "loose": as32(loose)}, y


def _strict(path):
    """Parses JSON that must not hold NaN or Infinity."""

    def refuse(name):
        raise AssertionError(f"{path} holds {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_every_key_the_arrays_and_the_seven_figures(tmp_path):
    t, students, y = _logits()
    doc = report.analyze_logits(t, students, y, output=tmp_path, meta={"dataset": "synthetic"})
    saved = _strict(tmp_path / "analysis.json")
    assert saved == json.loads(json.dumps(doc))
    assert list(saved) == ["meta", "teacher", "students"]
    meta = saved["meta"]
    assert (meta["num_examples"], meta["num_classes"], meta["dataset"]) == (64, 10, "synthetic")
    assert meta["classes_without_examples"] == 0 and meta["warnings"] == []
    assert {k: meta["loss"][k] for k in ("k", "w0", "w1", "w2", "temperature")} == {
        "k": 5,
        "w0": 1.0,
        "w1": 1.0,
        "w2": 8.0,
        "temperature": 4.0,
    }
    assert meta["students"] == ["close", "loose"] and meta["temperatures"] == [1.0, 4.0]
    assert meta["figures"] == list(plots.FIGURES)
    for name in plots.FIGURES:
        data = (tmp_path / "figures" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name

    teacher = saved["teacher"]
    assert set(teacher["per_temperature"]) == {"T=1", "T=4"} and "per_sample" not in teacher
    assert teacher["teacher_top1"] == pytest.approx(np.mean(t.argmax(1) == y))
    for label, s in students.items():
        student = saved["students"][label]
        assert set(student) == {"agreement", "gradients", "class_mean"}
        agreement, gradients = student["agreement"], student["gradients"]
        assert agreement["top1_agreement"] == pytest.approx(np.mean(s.argmax(1) == t.argmax(1)))
        assert agreement["student_top1"] == pytest.approx(np.mean(s.argmax(1) == y))
        assert set(agreement["per_temperature"]) == {"T=1", "T=4"}
        assert set(agreement["gdkd_terms"]) == {"high_loss", "low_top_loss", "low_other_loss"}
        assert set(agreement["dkd_terms"]) == {"tckd_loss", "nckd_loss"}
        assert set(agreement["non_top_structure"]) == {"target", "top1", "topk"}
        assert gradients["weights"] == {"w0": 1.0, "w1": 1.0, "w2": 8.0}
        assert 0 <= gradients["kd"]["share_other"]["median"] <= 1
        assert set(student["class_mean"]) == {"logits", "probs"}
        for mode, block in student["class_mean"].items():
            assert block["mode"] == mode and "diff" not in block
            assert block["offdiag_max"] <= block["max"]

    with np.load(tmp_path / "arrays.npz") as arrays:
        keys = set(arrays.files)
        assert set(meta["arrays"]) == keys
        np.testing.assert_array_equal(arrays["labels"], y)
        for key in (
            "teacher/per_sample/autok/T=4",
            "teacher/per_sample/entropy/T=1",
            "students/close/agreement/per_sample/kl/T=1",
            "students/close/gradients/per_sample/gdkd/share_other",
            "students/loose/gradients/per_sample/amplification_other",
        ):
            assert arrays[key].shape == (64,), key
        diff = arrays["students/loose/class_mean/logits/diff"]
        assert diff.shape == (10, 10)
        assert saved["students"]["loose"]["class_mean"]["logits"]["max"] == pytest.approx(
            diff.max()
        )


def test_empty_classes_give_null_not_nan_and_one_warning(tmp_path):
    t, students, _ = _logits(n=12, c=10)
    y = np.arange(12) % 3  # classes 3..9 have no example
    with pytest.warns(UserWarning, match="no sample") as caught:
        report.analyze_logits(t, students, y, output=tmp_path)
    assert sum("no sample" in str(w.message) for w in caught) == 1
    saved = _strict(tmp_path / "analysis.json")
    json.dumps(saved, allow_nan=False)
    assert saved["meta"]["classes_without_examples"] == 7
    assert any("no sample" in w for w in saved["meta"]["warnings"])
    per_class_k = saved["teacher"]["per_temperature"]["T=4"]["per_class_k"]
    assert per_class_k[3:] == [-1] * 7
    block = saved["students"]["close"]["class_mean"]["probs"]
    assert block["empty_classes"] == list(range(3, 10))
    with np.load(tmp_path / "arrays.npz") as arrays:
        diff = arrays["students/close/class_mean/probs/diff"]
    assert np.isnan(diff[3:]).all() and np.isfinite(diff[:3]).all()
    assert (tmp_path / "figures" / "class_mean_diff.png").read_bytes().startswith(PNG_MAGIC)


def test_a_saved_analysis_is_drawn_again_in_the_other_style(tmp_path):
    t, students, y = _logits()
    report.analyze_logits(t, students, y, output=tmp_path)
    loaded = report.load_report(tmp_path)
    np.testing.assert_array_equal(loaded["labels"], y)
    diff = loaded["students"]["close"]["class_mean"]["probs"]["diff"]
    assert diff.shape == (10, 10) and loaded["teacher"]["per_sample"]["autok"]["T=4"].shape == (64,)
    written = plots.plot_all(loaded, tmp_path / "again", figure_style="gdkd")
    assert [p.name for p in written] == list(plots.FIGURES)
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in written)
    with pytest.raises(ValueError, match="does not exist"):
        report.load_report(tmp_path / "nothing")


def test_to_json_writes_nan_and_infinity_as_null():
    text = report.to_json(
        {
            "a": np.float32("nan"),
            "b": [np.inf, 1],
            "c": np.arange(2),
            "d": {"e": np.bool_(True), "f": -np.inf},
        }
    )
    assert json.loads(text) == {"a": None, "b": [None, 1], "c": [0, 1], "d": {"e": True, "f": None}}


def test_the_loss_object_sets_k_weights_and_temperature():
    t, students, y = _logits()
    loss = keras_gdkd.losses.get("gdkd", k=3, w1=2.0, w2=2.0, temperature=2.0)
    doc = report.analyze_logits(t, students, y, loss=loss, temperatures=(2.0,))
    params = doc["meta"]["loss"]
    assert (params["k"], params["w1"], params["w2"], params["temperature"]) == (3, 2.0, 2.0, 2.0)
    assert set(params["from_loss"]) == {"k", "w0", "w1", "w2", "temperature"}
    gradients = doc["students"]["close"]["gradients"]
    assert (gradients["k"], gradients["temperature"]) == (3, 2.0)
    assert gradients["weights"] == {"w0": 1.0, "w1": 2.0, "w2": 2.0}
    agreement = doc["students"]["close"]["agreement"]
    terms = agreement["gdkd_terms"]
    weighted = terms["high_loss"] + 2.0 * terms["low_top_loss"] + 2.0 * terms["low_other_loss"]
    assert agreement["gdkd_loss"] == pytest.approx(weighted, rel=1e-6)
    # The terms are those the loss itself computes (T^2-scaled batch means).
    _, loss_terms = loss.terms(students["close"], t)
    for name, value in loss_terms.items():
        expected = float(np.mean(keras.ops.convert_to_numpy(value)))
        assert terms[name] == pytest.approx(expected, rel=1e-4, abs=1e-6)

    dkd = report.loss_parameters(keras_gdkd.losses.get("dkd", temperature=1.0), 10)
    assert (dkd["name"], dkd["k"], dkd["temperature"], dkd["from_loss"]) == (
        "dkd",
        5,
        1.0,
        ["temperature"],
    )
    assert report.loss_parameters(None, 4)["k"] == 3  # a default k leaves one class out
    with pytest.raises(ValueError, match="k=10 leaves no class"):
        report.loss_parameters(keras_gdkd.losses.get("gdkd", k=10), 10)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t, s, y: (t[:, :1], s, y), "shape"),
        (lambda t, s, y: (t, {"a": s["close"][:10]}, y), "student 'a'"),
        (lambda t, s, y: (t, {}, y), "non-empty mapping"),
        (lambda t, s, y: (t, s, y + 10), r"labels must lie in \[0, 10\)"),
        (lambda t, s, y: (t, s, y[:5]), "labels must have shape"),
        (lambda t, s, y: (np.where(t > 3, np.nan, t), s, y), "NaN"),
    ],
)
def test_bad_inputs_are_refused(change, message):
    t, s, y = change(*_logits())
    with pytest.raises(ValueError, match=message):
        report.analyze_logits(t, s, y)


def test_bad_options_are_refused():
    t, s, y = _logits()
    with pytest.raises(ValueError, match="figure_style"):
        report.analyze_logits(t, s, y, figure_style="seaborn")
    with pytest.raises(ValueError, match="temperatures"):
        report.analyze_logits(t, s, y, temperatures=(1.0, 0.0))
    with pytest.raises(ValueError, match="num_classes"):
        report.analyze_logits(t, s, y, num_classes=12)


def test_without_matplotlib_the_analysis_is_written_with_a_note(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    t, s, y = _logits()
    with pytest.warns(UserWarning, match="matplotlib is not installed"):
        doc = report.analyze_logits(t, s, y, output=tmp_path)
    assert doc["meta"]["figures"] == [] and "pip install" in doc["meta"]["figures_note"]
    assert _strict(tmp_path / "analysis.json")["meta"]["figures"] == []
    assert (tmp_path / "arrays.npz").is_file() and not (tmp_path / "figures").exists()


def test_the_gdkd_figure_style_and_returned_arrays(tmp_path):
    t, s, y = _logits()
    doc, arrays = report.analyze_logits(
        t, s, y, figure_style="gdkd", output=tmp_path, return_arrays=True
    )
    assert doc["meta"]["figure_style"] == "gdkd"
    assert (tmp_path / "figures" / "class_mean_diff.png").read_bytes().startswith(PNG_MAGIC)
    with np.load(tmp_path / "arrays.npz") as saved:
        assert set(saved.files) == set(arrays)
        for key in saved.files:
            np.testing.assert_array_equal(saved[key], arrays[key])


def _tiny_model(weights, name):
    inputs = keras.Input((4,))
    layer = keras.layers.Dense(weights.shape[1], use_bias=False, name=f"{name}_dense")
    model = keras.Model(inputs, layer(inputs), name=name)
    layer.set_weights([weights])
    return model


def test_analyze_models_collects_in_one_pass_and_saves_the_logits(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 4)).astype("float32")
    y = np.arange(20) % 5
    w_t, w_s = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    teacher, student = _tiny_model(w_t, "teacher"), _tiny_model(w_s, "student")
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 20, 8)]
    doc = report.analyze_models(
        teacher, {"s": student}, batches, max_examples=18, output=tmp_path, temperatures=(4.0,)
    )
    assert doc["meta"]["num_examples"] == 18
    from keras_gdkd.analysis import logits as logits_io

    t_logits, labels = logits_io.load_logits(tmp_path / "logits" / "teacher.npz")
    s_logits, _ = logits_io.load_logits(tmp_path / "logits" / "s.npz")
    np.testing.assert_allclose(t_logits, x[:18] @ w_t, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels, y[:18])
    again = report.analyze_logits(t_logits, {"s": s_logits}, labels, temperatures=(4.0,))
    assert again["students"] == doc["students"] and again["teacher"] == doc["teacher"]
    with pytest.raises(ValueError, match="'teacher' names"):
        report.analyze_models(teacher, {"teacher": student}, batches)


def test_bar_labels_share_one_format_per_panel():
    fmt = plots._label_format([0.0316, 0.0145, 0.00911, 0.01])
    assert [fmt.format(v) for v in (0.0316, 0.01, 0.00911)] == ["0.0316", "0.0100", "0.0091"]
    fmt = plots._label_format([1.7, 0.0327, 1e-9])  # round-off next to 0 does not count
    assert [fmt.format(v) for v in (1.7, 0.0327)] == ["1.700", "0.033"]
    assert plots._label_format([3e-5, 1e-5]) == "{:.2e}"


def test_bar_labels_clear_the_line_the_legend_and_each_other():
    pytest.importorskip("matplotlib")
    fig, (ax,) = plots._figure(1, width=2.6, height=3.0)
    series = {name: [97.0, 95.5, 96.8, 99.1] for name in ("a", "b", "c")}
    texts = plots._grouped_bars(ax, list("wxyz"), series, plots._colors(3), fmt="{:.1f}")
    ax.axhline(97.5, label="line")
    ax.set_ylim(0, 110)
    ax.legend(loc="upper center", ncols=2)
    plots._fit_bar_labels(fig, [(ax, texts, 97.5)])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    y_line = ax.transData.transform((0.0, 97.5))[1]
    legend = ax.get_legend().get_window_extent(renderer)
    assert not any(b.y0 <= y_line <= b.y1 for b in boxes)
    assert not any(plots._overlap(b, legend, gap=0.0) for b in boxes)
    spans = sorted((b.x0, b.x1) for b in boxes)
    assert all(left[1] <= right[0] for left, right in zip(spans, spans[1:]))
    assert all(t.get_rotation() == 90 for t in texts)  # 12 labels in 2.6 inches: vertical
