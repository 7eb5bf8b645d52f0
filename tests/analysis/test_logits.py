"""Collecting logits in one pass, and the npz dumps in the authors' format."""

import os

import keras
import numpy as np
import pytest

import keras_gdkd
from keras_gdkd.analysis import logits as L


def _model(seed, classes=5, features=4):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((features,)), keras.layers.Dense(classes)])


def _batches(n=23, batch=8, features=4, classes=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, classes, size=n)
    return x, y, [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_one_pass_over_all_models_keeps_rows_aligned():
    teacher, student = _model(0), _model(1)
    x, y, batches = _batches()
    out, labels = L.collect_logits({"teacher": teacher, "student": student}, batches)
    np.testing.assert_array_equal(labels, y)
    assert labels.dtype == np.int64 and set(out) == {"teacher", "student"}
    for name, model in (("teacher", teacher), ("student", student)):
        assert out[name].dtype == np.float32 and out[name].shape == (23, 5)
        np.testing.assert_allclose(out[name], _np(model(x)), rtol=1e-6, atol=1e-6)

    cut, labels = L.collect_logits({"teacher": teacher}, iter(batches), max_examples=10)
    np.testing.assert_array_equal(labels, y[:10])
    np.testing.assert_allclose(cut["teacher"], out["teacher"][:10], rtol=1e-6, atol=1e-6)


def test_a_distiller_is_replaced_by_its_student_and_weights_and_column_labels_are_accepted():
    teacher, student = _model(0), _model(1)
    distiller = keras_gdkd.Distiller(teacher, student, loss=keras_gdkd.KD())
    x, y, batches = _batches()
    triples = [(bx, by[:, None], np.ones(len(by))) for bx, by in batches]
    out, labels = L.collect_logits({"kd": distiller}, triples)
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_allclose(out["kd"], _np(student(x)), rtol=1e-6, atol=1e-6)


def test_tf_data_pipelines_work_on_every_backend():
    tf = pytest.importorskip("tensorflow")
    teacher = _model(0)
    x, y, _ = _batches()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(6)
    out, labels = L.collect_logits({"teacher": teacher}, ds, max_examples=20)
    np.testing.assert_array_equal(labels, y[:20])
    np.testing.assert_allclose(out["teacher"], _np(teacher(x[:20])), rtol=1e-6, atol=1e-6)


def test_bad_inputs_raise():
    teacher = _model(0)
    _, _, batches = _batches()
    with pytest.raises(ValueError, match="non-empty mapping"):
        L.collect_logits({}, batches)
    with pytest.raises(ValueError, match="keras.Model"):
        L.collect_logits({"t": lambda x: x}, batches)
    with pytest.raises(ValueError, match=r"\(x, y\)"):
        L.collect_logits({"t": teacher}, [batches[0][0]])
    with pytest.raises(ValueError, match="integer class indices"):
        L.collect_logits({"t": teacher}, [(batches[0][0], batches[0][1].astype("float32"))])
    with pytest.raises(ValueError, match="no examples"):
        L.collect_logits({"t": teacher}, [])
    with pytest.raises(ValueError, match="max_examples"):
        L.collect_logits({"t": teacher}, batches, max_examples=0)
    inputs = keras.Input((4,))
    two = keras.Model(inputs, [keras.layers.Dense(5)(inputs), keras.layers.Dense(2)(inputs)])
    with pytest.raises(ValueError, match="returns 2 outputs"):
        L.collect_logits({"t": two}, batches)


def test_save_and_load_round_trip_atomically(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(7, 5)).astype("float64")
    y = rng.integers(0, 5, size=7).astype("int32")
    path = tmp_path / "sub" / "teacher.dump"  # no .npz suffix is added
    L.save_logits(path, z, y)
    L.save_logits(path, z * 2, y)  # replaces the first file
    assert sorted(os.listdir(tmp_path / "sub")) == ["teacher.dump"]
    logits, labels = L.load_logits(path)
    assert logits.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_allclose(logits, (z * 2).astype("float32"))
    np.testing.assert_array_equal(labels, y)
    with np.load(path) as data:  # the authors' keys, readable without keras_gdkd
        assert sorted(data.files) == ["labels", "logits"]


def test_a_kill_while_writing_keeps_the_old_file_and_a_truncated_one_is_named(
    tmp_path, monkeypatch
):
    z, y = np.ones((4, 3), "float32"), np.arange(4) % 3
    path = tmp_path / "teacher.npz"
    L.save_logits(path, z, y)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed inside np.savez")

    monkeypatch.setattr(np, "savez", killed)
    with pytest.raises(KeyboardInterrupt):
        L.save_logits(path, z * 2, y)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["teacher.npz"]  # no temporary file left
    np.testing.assert_array_equal(L.load_logits(path)[0], z)  # the old file, whole

    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"teacher.npz is not a readable npz file"):
        L.load_logits(path)


def test_load_reads_the_authors_dumps_and_rejects_others(tmp_path):
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(6, 4)).astype("float32"), rng.integers(0, 4, size=6)
    np.savez(tmp_path / "authors.npz", logits=z, labels=y, feats=np.zeros((6, 8)))
    logits, labels = L.load_logits(tmp_path / "authors.npz")
    np.testing.assert_array_equal(logits, z)
    np.testing.assert_array_equal(labels, y)
    np.savez(tmp_path / "bad.npz", logits=z)
    with pytest.raises(ValueError, match="expected 'logits' and 'labels'"):
        L.load_logits(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="labels must have shape"):
        L.save_logits(tmp_path / "x.npz", z, y[:3])
    with pytest.raises(ValueError, match="finite"):
        L.save_logits(tmp_path / "x.npz", np.full((2, 3), np.nan), [0, 1])
    assert not (tmp_path / "x.npz").exists()


def test_map_chunks_pads_to_few_shapes_and_cuts_the_padding():
    seen = []

    def kernel(a, b):
        assert b is None  # an absent input (labels) stays absent
        seen.append(tuple(a.shape))
        return {"sum": keras.ops.sum(a, axis=-1)}

    a = np.arange(30, dtype="float32").reshape(10, 3)
    out = L.map_chunks(kernel, [a, None], batch_size=4)
    np.testing.assert_array_equal(out["sum"], a.sum(-1))
    assert seen == [(4, 3), (4, 3), (4, 3)]  # the last chunk of 2 rows is padded to 4
    seen.clear()
    L.map_chunks(kernel, [a[:5], None], batch_size=4096)
    assert seen == [(64, 3)]  # at least 64 rows, powers of two
    seen.clear()
    L.map_chunks(kernel, [np.zeros((100, 3), "float32"), None], batch_size=4096)
    assert seen == [(128, 3)]


def test_summaries_are_python_floats():
    s = L.summarize([1.0, 2.0, np.nan, 3.0, np.inf])
    expected = {"mean": 2.0, "std": np.std([1, 2, 3]), "q10": 1.2, "median": 2.0, "q90": 2.8}
    assert s == pytest.approx(expected)
    assert all(type(v) is float for v in s.values())
    assert all(np.isnan(v) for v in L.summarize([np.nan]).values())
    assert L.temperature_key(4.0) == "T=4" and L.temperature_key(0.5) == "T=0.5"
