"""The Distiller: training step, warm-up, logs, evaluate/predict, saving, errors."""

import keras
import numpy as np
import pytest

import keras_gdkd as kg

CLASSES = 10


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(0, CLASSES, n).astype("int32")


def _model(width, name, regularizer=None):
    inputs = keras.Input((8,))
    h = keras.layers.Dense(width, activation="relu", kernel_regularizer=regularizer)(inputs)
    h = keras.layers.BatchNormalization()(h)
    return keras.Model(inputs, keras.layers.Dense(CLASSES)(h), name=name)


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _pair(regularizer=None):
    keras.utils.set_random_seed(0)
    return _model(32, "teacher"), _model(16, "student", regularizer)


def test_fit_trains_the_student_and_leaves_the_teacher_untouched():
    teacher, student = _pair()
    x, y = _data()
    teacher_before = [_np(w).copy() for w in teacher.weights]  # BN moving stats included
    student_before = [_np(w).copy() for w in student.trainable_weights]
    distiller = kg.Distiller(teacher, student, loss=kg.GDKD(k=3, w1=2.0, w2=6.0))
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), metrics=["accuracy"])
    history = distiller.fit(x, y, batch_size=16, epochs=2, validation_data=(x, y), verbose=0)

    logged = set(history.history)
    for name in (
        "loss",
        "ce_loss",
        "distill_loss",
        "high_loss",
        "low_top_loss",
        "low_other_loss",
        "accuracy",
        "val_loss",
        "val_ce_loss",
        "val_accuracy",
    ):
        assert name in logged, name
    assert "val_distill_loss" not in logged  # evaluate never runs the teacher
    for before, after in zip(teacher_before, teacher.weights):
        np.testing.assert_array_equal(before, _np(after))
    assert any(
        not np.allclose(b, _np(a)) for b, a in zip(student_before, student.trainable_weights)
    )
    assert not teacher.trainable and len(distiller.trainable_weights) == len(
        student.trainable_weights
    )


@pytest.mark.parametrize("warmup", [0, 3])
def test_warmup_follows_the_epoch(warmup):
    teacher, student = _pair()
    x, y = _data()
    distiller = kg.Distiller(teacher, student, loss=kg.KD(), ce_weight=0.5, warmup_epochs=warmup)
    distiller.compile(optimizer=keras.optimizers.SGD(0.05))
    h = distiller.fit(x, y, batch_size=16, epochs=4, verbose=0).history
    for epoch in range(4):
        factor = min((epoch + 1) / warmup, 1.0) if warmup else 1.0
        want = 0.5 * h["ce_loss"][epoch] + factor * h["distill_loss"][epoch]
        np.testing.assert_allclose(h["loss"][epoch], want, rtol=1e-5)
    assert float(_np(distiller.epoch)) == 4.0
    # a resumed run (initial_epoch) continues the schedule from the right epoch
    distiller.fit(x, y, batch_size=16, epochs=6, initial_epoch=4, verbose=0)
    assert float(_np(distiller.epoch)) == 6.0


def test_loss_is_exactly_the_formula_with_sample_weights_and_regularization():
    teacher, student = _pair(regularizer=keras.regularizers.L2(0.01))
    x, y = _data(16)
    weights = np.linspace(0.0, 2.0, 16).astype("float32")
    loss = kg.GDKD(k=2, w2=4.0)
    distiller = kg.Distiller(
        teacher, student, loss=loss, ce_weight=0.7, distill_weight=0.9, warmup_epochs=4
    )
    distiller.epoch.assign(2.0)
    logits = student(x, training=True)
    total = distiller.compute_loss(x, y, logits, sample_weight=weights, training=True)

    teacher_logits = teacher(x, training=False)
    ce = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
    per_sample, _ = loss.terms(logits, teacher_logits)
    want = (
        0.7 * np.mean(_np(ce) * weights)
        + 0.5 * 0.9 * np.mean(_np(per_sample) * weights)
        + float(_np(keras.ops.sum(student.losses)))
    )
    assert float(_np(keras.ops.sum(student.losses))) > 0
    np.testing.assert_allclose(_np(total), want, rtol=1e-5)


def test_fit_honours_sample_weight():
    teacher, student = _pair()
    x, y = _data(32)
    distiller = kg.Distiller(teacher, student, loss=kg.KD())
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    zero = distiller.fit(x, y, sample_weight=np.zeros(32, "float32"), batch_size=32, verbose=0)
    assert zero.history["loss"][0] == 0.0
    full = distiller.fit(x, y, sample_weight=np.ones(32, "float32"), batch_size=32, verbose=0)
    assert full.history["loss"][0] > 0.0


def test_evaluate_and_predict_are_the_students():
    teacher, student = _pair()
    x, y = _data()
    distiller = kg.Distiller(teacher, student, loss="gdkd")
    distiller.compile(metrics=["accuracy"])
    result = distiller.evaluate(x, y, verbose=0, return_dict=True)
    student.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    alone = student.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["loss"], alone["loss"], rtol=1e-5)
    np.testing.assert_allclose(result["accuracy"], alone["accuracy"])
    assert set(result) == {"loss", "ce_loss", "accuracy"}
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6
    )


@pytest.mark.parametrize("loss, ce_weight", [(kg.DKD(beta=4.0), 1.0), (kg.GDKD3(k=3), 0.0)])
def test_dkd_with_labels_and_zero_ce_weight_train(loss, ce_weight):
    teacher, student = _pair()
    x, y = _data()
    distiller = kg.Distiller(teacher, student, loss=loss, ce_weight=ce_weight)
    distiller.compile(optimizer="sgd")
    h = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(h["loss"][0]) and h["distill_loss"][0] > 0
    if ce_weight == 0.0:
        np.testing.assert_allclose(h["loss"][0], h["distill_loss"][0], rtol=1e-5)


def test_save_and_load_round_trip(tmp_path):
    teacher, student = _pair()
    x, y = _data()
    distiller = kg.Distiller(
        teacher, student, loss=kg.GDKD(k=4, w2=6.0), ce_weight=0.5, warmup_epochs=5
    )
    distiller.compile(optimizer="sgd")
    distiller.fit(x, y, batch_size=16, epochs=2, verbose=0)
    distiller.save(tmp_path / "distiller.keras")
    restored = keras.saving.load_model(tmp_path / "distiller.keras")
    assert isinstance(restored, kg.Distiller)
    assert restored.distillation_loss == distiller.distillation_loss
    assert (restored.ce_weight, restored.warmup_epochs) == (0.5, 5)
    assert float(_np(restored.epoch)) == 2.0
    assert restored.compiled and isinstance(restored.optimizer, keras.optimizers.SGD)
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), distiller.predict(x, verbose=0), atol=1e-6
    )
    # the student exports on its own
    distiller.student.save(tmp_path / "student.keras")
    alone = keras.saving.load_model(tmp_path / "student.keras")
    np.testing.assert_allclose(
        alone.predict(x, verbose=0), distiller.predict(x, verbose=0), atol=1e-6
    )


def test_mixed_precision_trains_with_float32_losses():
    keras.config.set_dtype_policy("mixed_bfloat16")
    teacher, student = _pair()
    x, y = _data()
    distiller = kg.Distiller(teacher, student, loss=kg.GDKD(k=3))
    distiller.compile(optimizer="sgd")
    h = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(h["loss"][0]) and np.isfinite(h["distill_loss"][0])


def test_clear_errors():
    teacher, student = _pair()
    x, y = _data()
    wide = keras.Sequential([keras.Input((8,)), keras.layers.Dense(CLASSES + 1)])
    with pytest.raises(ValueError, match="same number of classes; got teacher 11 and student 10"):
        kg.Distiller(wide, student)
    with pytest.raises(ValueError, match="teacher must be a keras.Model"):
        kg.Distiller(lambda v: v, student)
    with pytest.raises(ValueError, match="Unknown distillation loss"):
        kg.Distiller(teacher, student, loss="fitnet")
    distiller = kg.Distiller(teacher, student)
    with pytest.raises(ValueError, match="takes no `loss`"):
        distiller.compile(optimizer="sgd", loss="mse")
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="integer class indices"):
        distiller.fit(x, keras.utils.to_categorical(y, CLASSES), epochs=1, verbose=0)
