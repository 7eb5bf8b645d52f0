"""Mixed precision, bad input, and the loss objects (config, terms, keras.distillation)."""

import keras
import numpy as np
import pytest

import keras_gdkd as kg


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _logits(batch=8, classes=10, scale=3.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(2, batch, classes)) * scale).astype("float32")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    s, t = _logits()
    s_half = keras.ops.cast(s, dtype)
    t_half = keras.ops.cast(t * 30.0, dtype)  # masses far below float16's range
    loss = kg.gdkd(s_half, t_half, k=3, temperature=1.0)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    exact = kg.gdkd(
        keras.ops.cast(s_half, "float32"), keras.ops.cast(t_half, "float32"), k=3, temperature=1.0
    )
    np.testing.assert_allclose(_np(loss), _np(exact), rtol=1e-6)
    assert np.isfinite(_np(loss))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda s, t: kg.gdkd(s, t, k=0), "k must satisfy"),
        (lambda s, t: kg.gdkd(s, t, k=10), r"\[1, 9\]"),
        (lambda s, t: kg.gdkd(s, t, k=2.0), "k must be an integer"),
        (lambda s, t: kg.gdkd3(s, t, k=1), "k must satisfy 2 <= k"),
        (lambda s, t: kg.gdkd(s, t, temperature=0.0), "temperature must be a positive"),
        (lambda s, t: kg.kd(s, t, temperature=-1.0), "temperature must be a positive"),
        (lambda s, t: kg.gdkd(s, t, strategy="middle"), "strategy must be"),
        (lambda s, t: kg.kd(s, t[:, :9]), "same number of classes"),
        (lambda s, t: kg.kd(s, t[:4]), "batch sizes differ"),
        (lambda s, t: kg.kd(s[0], t[0]), r"shape \(batch, num_classes\)"),
        (lambda s, t: kg.dkd(s, t, np.zeros(8, "float32")), "integer class indices"),
        (lambda s, t: kg.dkd(s, t, np.zeros(5, "int32")), r"labels must have shape"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    s, t = _logits()
    with pytest.raises(ValueError, match=message):
        call(s, t)


def test_bad_hyper_parameters_raise_at_construction():
    with pytest.raises(ValueError, match="temperature"):
        kg.GDKD(temperature=0)
    with pytest.raises(ValueError, match="k must satisfy"):
        kg.GDKD(k=0)
    with pytest.raises(ValueError, match="strategy"):
        kg.GDKD(strategy="top")
    with pytest.raises(ValueError, match="Unknown distillation loss 'cekd'"):
        kg.losses.get("cekd")


OBJECTS = [
    (kg.KD(temperature=3.0), lambda s, t, y: kg.kd(s, t, 3.0)),
    (kg.DKD(alpha=1.0, beta=6.0), lambda s, t, y: kg.dkd(s, t, y, 1.0, 6.0)),
    (
        kg.GDKD(k=3, w1=2.0, w2=6.0, standardize=True),
        lambda s, t, y: kg.gdkd(s, t, 3, 1.0, 2.0, 6.0, standardize=True),
    ),
    (kg.GDKD3(k=4, w2=6.0), lambda s, t, y: kg.gdkd3(s, t, 4, 1.0, 1.0, 6.0)),
    (kg.GDKDV1(k=3, m1=2.0), lambda s, t, y: kg.gdkd_v1(s, t, 3, 2.0, 1.0)),
    (kg.GDKDV2(k=3, w1=2.0), lambda s, t, y: kg.gdkd_v2(s, t, 3, 2.0, 1.0)),
    (kg.GDKDV3(k=3, w2=5.0), lambda s, t, y: kg.gdkd_v3(s, t, 3, 1.0, 5.0)),
]


@pytest.mark.parametrize("obj, fn", OBJECTS, ids=[type(o).__name__ for o, _ in OBJECTS])
def test_loss_objects_call_serialize_and_report_terms(obj, fn):
    s, t = _logits()
    y = np.arange(8) % 10
    np.testing.assert_allclose(_np(obj(s, t, y)), _np(fn(s, t, y)), rtol=1e-6)
    per_sample, terms = obj.terms(s, t, y)
    assert tuple(terms) == obj.term_names and tuple(per_sample.shape) == (8,)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert restored == obj and restored is not obj
    assert isinstance(obj, keras.distillation.DistillationLoss) == (not obj.needs_labels)


def test_dkd_object_without_labels_says_what_it_needs():
    s, t = _logits()
    with pytest.raises(ValueError, match="needs the ground-truth labels"):
        kg.DKD()(s, t)


def test_plugs_into_keras_own_distiller():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 10, 32)
    teacher = keras.Sequential([keras.Input((6,)), keras.layers.Dense(10)])
    student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(10)])
    loss = kg.GDKD(k=3, w2=4.0)
    distiller = keras.distillation.Distiller(teacher, student, distillation_losses=loss)
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    history = distiller.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # Keras passes (teacher, student); the adapter swaps them back
    s, t = _logits()
    np.testing.assert_allclose(_np(loss.compute_loss(t, s)), _np(loss(s, t)), rtol=1e-6)
