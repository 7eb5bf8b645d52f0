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
        (lambda s, t: kg.gdkd(s, t, k=True), "k must be an integer"),
        (lambda s, t: kg.gdkd3(s, t, k=1), "k must satisfy 2 <= k"),
        (lambda s, t: kg.gdkd(s, t, temperature=0.0), "temperature must be a finite positive"),
        (lambda s, t: kg.kd(s, t, temperature=-1.0), "temperature must be a finite positive"),
        (lambda s, t: kg.kd(s, t, temperature=float("inf")), "got inf"),
        (lambda s, t: kg.kd(s, t, temperature=float("nan")), "got nan"),
        (lambda s, t: kg.kd(s, t, temperature="4"), "temperature must be"),
        (lambda s, t: kg.gdkd(s, t, w2=-1.0), "w2 must be a finite number >= 0"),
        (lambda s, t: kg.gdkd(s, t, w0=float("nan")), "w0 must be a finite number >= 0"),
        (lambda s, t: kg.gdkd3(s, t, w1=float("inf")), "w1 must be"),
        (lambda s, t: kg.dkd(s, t, np.arange(8), beta=-8.0), "beta must be"),
        (lambda s, t: kg.gdkd_v1(s, t, m1=-1.0), "m1 must be"),
        (lambda s, t: kg.gdkd_v2(s, t, m2=float("nan")), "m2 must be"),
        (lambda s, t: kg.gdkd_v3(s, t, w2=True), "w2 must be"),
        (lambda s, t: kg.gdkd(s, t, strategy="middle"), "strategy must be"),
        (lambda s, t: kg.kd(s, t[:, :9]), "same number of classes"),
        (lambda s, t: kg.kd(s, t[:4]), "batch sizes differ"),
        (lambda s, t: kg.kd(s[0], t[0]), r"shape \(batch, num_classes\)"),
        (lambda s, t: kg.dkd(s, t, np.zeros(8, "float32")), "integer class indices"),
        (lambda s, t: kg.dkd(s, t, np.zeros(5, "int32")), r"labels must have shape"),
        (
            lambda s, t: kg.dkd(s, t, np.eye(10, dtype="int32")[np.arange(8)]),
            r"got dtype int32 and shape \(8, 10\). Convert one-hot",
        ),
        (lambda s, t: kg.dkd(s, t, np.ones(8, bool)), "integer class indices"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    s, t = _logits()
    with pytest.raises(ValueError, match=message):
        call(s, t)


@pytest.mark.parametrize("bad", [10, -1, 99])
@pytest.mark.parametrize("form", ["numpy", "tensor", "list"])
@pytest.mark.parametrize(
    "call",
    [
        lambda s, t, y: kg.dkd(s, t, y),
        lambda s, t, y: kg.DKD(beta=2.0)(s, t, y),
        lambda s, t, y: kg.losses.dkd(s, t, y, reduction=None, return_terms=True),
        lambda s, t, y: kg.DKD().terms(s, t, y),
    ],
    ids=["dkd", "DKD", "dkd_terms", "DKD.terms"],
)
def test_eager_out_of_range_labels_raise_on_every_backend(call, form, bad):
    s, t = _logits()
    labels = np.arange(8) % 10
    labels[3] = bad
    y = {"numpy": labels, "tensor": keras.ops.convert_to_tensor(labels), "list": labels.tolist()}
    with pytest.raises(ValueError, match=rf"labels must lie in \[0, 10\).*got \[{bad}\]"):
        call(s, t, y[form])


def test_unchecked_out_of_range_labels_give_nan_for_that_sample_only():
    # What a compiled function (where label values cannot be read) computes, on every backend.
    s, t = _logits()
    labels = np.arange(8) % 10
    labels[[2, 5]] = [10, -1]
    loss, terms = kg.losses.dkd(
        s, t, labels, check_label_values=False, reduction=None, return_terms=True
    )
    valid = np.ones(8, bool)
    valid[[2, 5]] = False
    for value in (loss, terms["tckd_loss"], terms["nckd_loss"]):
        value = _np(value)
        assert np.all(np.isnan(value[~valid])) and np.all(np.isfinite(value[valid]))
    good, _ = kg.losses.dkd(s[valid], t[valid], labels[valid], reduction=None, return_terms=True)
    np.testing.assert_allclose(_np(loss)[valid], _np(good), rtol=1e-6)


def test_out_of_range_labels_inside_a_compiled_function_give_nan():
    s, t = _logits()
    labels = np.arange(8) % 10
    labels[0] = 10
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        result = jax.jit(kg.dkd)(s, t, labels)
    elif backend == "tensorflow":
        import tensorflow as tf

        result = tf.function(kg.dkd)(s, t, labels)
    else:  # PyTorch runs eagerly: the values are concrete and checked
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
            kg.dkd(s, t, keras.ops.convert_to_tensor(labels))
        return
    assert np.isnan(_np(result))


def test_numpy_scalars_are_accepted_as_hyper_parameters():
    s, t = _logits()
    want = _np(kg.gdkd(s, t, k=5, w1=2.0, temperature=4.0))
    got = kg.gdkd(s, t, k=np.int64(5), w1=np.float32(2.0), temperature=np.float32(4))
    np.testing.assert_allclose(_np(got), want, rtol=1e-6)
    loss = kg.GDKD(k=np.int32(5), w1=np.float64(2.0), temperature=np.float32(4))
    assert loss == kg.GDKD(k=5, w1=2.0, temperature=4.0)
    assert type(loss.k) is int and type(loss.temperature) is float
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert restored == loss


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: kg.GDKD(temperature=0), "temperature"),
        (lambda: kg.KD(temperature=float("inf")), "temperature must be a finite positive"),
        (lambda: kg.GDKD(k=0), "k must satisfy"),
        (lambda: kg.GDKD(k=2.5), "k must be an integer"),
        (lambda: kg.GDKD3(k=1), "k must satisfy 2 <= k"),
        (lambda: kg.GDKD(strategy="top"), "strategy"),
        (lambda: kg.GDKD(w2=-1.0), "w2 must be a finite number >= 0"),
        (lambda: kg.GDKD3(w0=float("nan")), "w0 must be"),
        (lambda: kg.DKD(beta=-8.0), "beta must be"),
        (lambda: kg.DKD(alpha=float("inf")), "alpha must be"),
        (lambda: kg.GDKDV1(m1=-1.0), "m1 must be"),
        (lambda: kg.GDKDV2(w1=-1.0), "w1 must be"),
        (lambda: kg.GDKDV3(w2=float("nan")), "w2 must be"),
        (lambda: kg.losses.get("cekd"), "Unknown distillation loss 'cekd'"),
    ],
)
def test_bad_hyper_parameters_raise_at_construction(build, message):
    with pytest.raises(ValueError, match=message):
        build()


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
