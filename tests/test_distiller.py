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


# --- bad input: the same outcome on every backend --------------------------------------------


def _bad_labels(n=64, position=3, value=CLASSES):
    x, y = _data(n)
    y = y.copy()
    y[position] = value
    return x, y


@pytest.mark.parametrize("value", [CLASSES, -1])
@pytest.mark.parametrize("loss", [kg.GDKD(k=3), kg.DKD()], ids=["gdkd", "dkd"])
def test_out_of_range_label_stops_fit_after_the_first_step(loss, value):
    teacher, student = _pair()
    x, y = _bad_labels(value=value)
    distiller = kg.Distiller(teacher, student, loss=loss)
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    seen = []

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)

    with pytest.raises(ValueError, match=rf"1 label\(s\) lay outside \[0, {CLASSES}\)"):
        distiller.fit(x, y, batch_size=16, epochs=3, callbacks=[Count()], shuffle=False, verbose=0)
    assert seen == [0]  # raised before the second step
    assert all(np.all(np.isfinite(_np(w))) for w in student.weights)


def test_out_of_range_label_in_a_later_batch_raises_at_the_end_of_the_epoch():
    teacher, student = _pair()
    x, y = _bad_labels(position=60)  # the last of four batches
    distiller = kg.Distiller(teacher, student, loss=kg.GDKD(k=3))
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"1 label\(s\) lay outside"):
        distiller.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert float(_np(distiller.epoch)) == 1.0  # the second epoch never began


def test_out_of_range_labels_in_validation_or_evaluate_raise():
    teacher, student = _pair()
    x, y = _data()
    x_bad, y_bad = _bad_labels(value=-1)
    distiller = kg.Distiller(teacher, student, loss=kg.GDKD(k=3))
    distiller.compile(optimizer="sgd", metrics=["accuracy"])
    with pytest.raises(ValueError, match=r"1 label\(s\) lay outside"):
        distiller.fit(x, y, batch_size=16, epochs=1, validation_data=(x_bad, y_bad), verbose=0)
    with pytest.raises(ValueError, match=r"1 label\(s\) lay outside"):
        distiller.evaluate(x_bad, y_bad, verbose=0)
    distiller.evaluate(x, y, verbose=0)  # the count starts afresh


def test_a_sample_with_an_out_of_range_label_gets_zero_weight_in_the_step():
    teacher, student = _pair()
    x, y = _bad_labels(n=16, position=5)
    distiller = kg.Distiller(teacher, student, loss=kg.DKD(beta=4.0), ce_weight=0.5)
    logits = student(x, training=False)
    total = distiller.compute_loss(x, y, logits, training=True)
    weights = np.ones(16, "float32")
    weights[5] = 0.0
    y_ok = np.where(weights > 0, y, 0)
    want = distiller.compute_loss(x, y_ok, logits, sample_weight=weights, training=True)
    assert np.isfinite(_np(total))
    np.testing.assert_allclose(_np(total), _np(want), rtol=1e-6)
    np.testing.assert_array_equal(_np(distiller._data_checks)[0], 1.0 + 0.0)


@pytest.mark.parametrize(
    "head",
    [
        lambda: [keras.layers.Dense(CLASSES, activation="softmax")],
        lambda: [keras.layers.Dense(CLASSES), keras.layers.Softmax()],
        lambda: [keras.layers.Dense(CLASSES), keras.layers.Activation("softmax")],
        lambda: [keras.Sequential([keras.layers.Dense(CLASSES, activation="softmax")])],
    ],
    ids=["dense", "softmax-layer", "activation-layer", "nested"],
)
def test_a_teacher_ending_in_softmax_is_named_at_construction(head):
    teacher = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), *head()])
    _, student = _pair()
    with pytest.warns(UserWarning, match="The teacher's outputs look like probabilities"):
        kg.Distiller(teacher, student)


class SubclassedSoftmax(keras.Model):
    """A subclassed teacher: its layers are not inspectable, only its outputs."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(CLASSES)

    def call(self, inputs):
        return keras.ops.softmax(self.dense(inputs))


def test_a_subclassed_teacher_returning_probabilities_is_caught_from_the_first_batch():
    teacher, student = SubclassedSoftmax(), _pair()[1]
    x, y = _data()
    teacher(x[:1])
    distiller = kg.Distiller(teacher, student, loss=kg.KD())
    distiller.compile(optimizer="sgd")
    with pytest.warns(UserWarning, match=r"teacher's outputs look like probabilities.*sums to 1"):
        distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)


def test_a_logit_teacher_gives_no_warning(recwarn):
    teacher, student = _pair()
    x, y = _data()
    distiller = kg.Distiller(teacher, student, loss=kg.GDKD(k=3))
    distiller.compile(optimizer="sgd")
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert not [w for w in recwarn if "probabilities" in str(w.message)]


def _multi_output(kind, name):
    inputs = keras.Input((8,))
    features = keras.layers.Dense(16, activation="relu")(inputs)
    logits = keras.layers.Dense(CLASSES)(features)
    outputs = {"list": [features, logits], "dict": {"features": features, "logits": logits}}
    return keras.Model(inputs, outputs[kind], name=name)


@pytest.mark.parametrize("kind, selector", [("list", 1), ("list", -1), ("dict", "logits")])
def test_models_returning_features_train_with_an_output_selector(tmp_path, kind, selector):
    keras.utils.set_random_seed(0)
    teacher, student = _multi_output(kind, "teacher"), _multi_output(kind, "student")
    x, y = _data()
    distiller = kg.Distiller(
        teacher, student, loss=kg.GDKD(k=3), student_output=selector, teacher_output=selector
    )
    distiller.compile(optimizer="sgd", metrics=["accuracy"])
    h = distiller.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    assert np.isfinite(h["loss"][0]) and "accuracy" in h
    logits = distiller.predict(x, verbose=0)
    assert logits.shape == (64, CLASSES)
    distiller.save(tmp_path / "d.keras")
    restored = keras.saving.load_model(tmp_path / "d.keras")
    assert (restored.student_output, restored.teacher_output) == (selector, selector)
    np.testing.assert_allclose(restored.predict(x, verbose=0), logits, atol=1e-6)


@pytest.mark.parametrize(
    "kind, selector, message",
    [
        ("list", None, r"teacher returns a list of 2 outputs .*pass teacher_output=<index"),
        ("dict", None, r"teacher returns a dict with keys \['features', 'logits'\].*'logits'"),
        ("dict", "probs", r"teacher_output='probs' does not select one of them"),
        ("list", 2, r"teacher_output=2 does not select one of them"),
        ("plain", 0, r"teacher_output=0 selects one of several outputs, but the teacher"),
    ],
)
def test_unselected_or_wrong_outputs_say_what_was_found(kind, selector, message):
    teacher = _pair()[0] if kind == "plain" else _multi_output(kind, "teacher")
    with pytest.raises(ValueError, match=message):
        kg.Distiller(teacher, _pair()[1], teacher_output=selector)


class SubclassedDict(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.features = keras.layers.Dense(16)
        self.head = keras.layers.Dense(CLASSES)

    def call(self, inputs):
        features = self.features(inputs)
        return {"logits": self.head(features), "features": features}


def test_a_subclassed_model_returning_a_dict_is_checked_when_the_step_is_traced():
    teacher, student = _pair()[0], SubclassedDict()
    x, y = _data()
    student(x[:1])
    distiller = kg.Distiller(teacher, student)
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"student returns a dict .*student_output='logits'"):
        distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    # Fresh models: on JAX an exception inside the first traced step leaves the variables of
    # the models that Keras had handed to the step without values.
    teacher, student = _pair()[0], SubclassedDict()
    student(x[:1])
    distiller = kg.Distiller(teacher, student, student_output="logits")
    distiller.compile(optimizer="sgd")
    assert np.isfinite(distiller.fit(x, y, batch_size=16, verbose=0).history["loss"][0])


def test_one_hot_integer_labels_get_the_one_hot_message():
    teacher, student = _pair()
    x, y = _data()
    distiller = kg.Distiller(teacher, student)
    distiller.compile(optimizer="sgd")
    one_hot = keras.utils.to_categorical(y, CLASSES).astype("int32")
    with pytest.raises(ValueError, match=r"shape \(16, 10\)\. Convert one-hot labels with argmax"):
        distiller.fit(x, one_hot, batch_size=16, epochs=1, verbose=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"ce_weight": float("nan")}, "ce_weight must be a finite number >= 0; got nan"),
        ({"ce_weight": -0.5}, "ce_weight must be"),
        ({"distill_weight": float("inf")}, "distill_weight must be"),
        ({"distill_weight": -1.0}, "distill_weight must be"),
        ({"warmup_epochs": 2.5}, "warmup_epochs must be an integer >= 0; got 2.5"),
        ({"warmup_epochs": -1}, "warmup_epochs must be an integer >= 0"),
        ({"warmup_epochs": True}, "warmup_epochs must be an integer"),
        ({"student_output": 1.5}, "student_output must be None, an integer index or a dict key"),
    ],
)
def test_bad_distiller_arguments(kwargs, message):
    teacher, student = _pair()
    with pytest.raises(ValueError, match=message):
        kg.Distiller(teacher, student, **kwargs)


def test_numpy_scalars_are_accepted_and_saved_as_python_numbers():
    teacher, student = _multi_output("list", "teacher"), _multi_output("list", "student")
    distiller = kg.Distiller(
        teacher,
        student,
        loss=kg.GDKD(k=np.int64(3), temperature=np.float32(4)),
        ce_weight=np.float32(0.5),
        warmup_epochs=np.int64(5),
        student_output=np.int64(1),
        teacher_output=1,
    )
    config = distiller.get_config()
    assert (config["ce_weight"], config["warmup_epochs"], config["student_output"]) == (0.5, 5, 1)
    assert type(config["warmup_epochs"]) is int and type(config["student_output"]) is int


@pytest.mark.parametrize("jit_compile", [True, False])
def test_the_step_compiles_with_the_checks(jit_compile):
    if jit_compile and keras.backend.backend() == "torch":
        pytest.skip("jit_compile=True means torch.compile (dynamo), out of scope of a unit test")
    teacher, student = _pair()
    x, y = _data()
    distiller = kg.Distiller(teacher, student, loss=kg.DKD(), warmup_epochs=2)
    distiller.compile(optimizer="sgd", jit_compile=jit_compile)
    h = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0).history
    assert np.all(np.isfinite(h["loss"])) and h["distill_loss"][0] > 0
    x_bad, y_bad = _bad_labels()
    with pytest.raises(ValueError, match=r"1 label\(s\) lay outside"):
        distiller.fit(x_bad, y_bad, batch_size=16, epochs=1, verbose=0)
