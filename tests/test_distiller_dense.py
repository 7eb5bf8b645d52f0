"""The Distiller with dense (segmentation) and sequence (token) labels."""

import keras
import numpy as np
import pytest

import keras_gdkd as kg
from tests.reference import losses_np as R


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _segmenter(classes=5, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(classes, 1)(hidden))


def _language_model(vocab=9, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((7,), dtype="int32")
    hidden = keras.layers.Embedding(vocab, 8, mask_zero=True)(inputs)
    return keras.Model(inputs, keras.layers.Dense(vocab)(hidden))


def _segmentation_batch(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, 6, 6, 3)).astype("float32")
    y = rng.integers(0, 5, (4, 6, 6))
    y[:, 0, :] = 255  # an ignored border
    return x, y


def test_segmentation_loss_averages_over_the_pixels_that_are_not_ignored():
    x, y = _segmentation_batch()
    teacher, student = _segmenter(seed=1), _segmenter(seed=2)
    loss = kg.GDKD(k=3, w1=1.0, w2=2.0, temperature=1.0)
    distiller = kg.Distiller(teacher, student, loss=loss, ignore_index=255)
    distiller.compile(optimizer="sgd")
    total = _np(distiller.compute_loss(x, y, training=True))
    s, t = _np(student(x)), _np(teacher(x))
    keep = y != 255
    distill, _ = R.gdkd(s[keep], t[keep], 3, 1.0, 1.0, 2.0, 1.0)
    log_p = s[keep] - np.log(np.exp(s[keep]).sum(-1, keepdims=True))
    ce = -log_p[np.arange(keep.sum()), y[keep]].mean()
    np.testing.assert_allclose(total, ce + distill.mean(), rtol=1e-4)
    logs = distiller.get_metrics_result()
    np.testing.assert_allclose(_np(logs["distill_loss"]), distill.mean(), rtol=1e-4)


def test_segmentation_fit_runs_and_ignored_labels_are_not_counted_as_bad():
    x, y = _segmentation_batch()
    distiller = kg.Distiller(
        _segmenter(seed=1), _segmenter(seed=2), loss=kg.DKD(beta=2.0), ignore_index=255
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.1), weighted_metrics=["accuracy"])
    history = distiller.fit(x, y, batch_size=2, epochs=2, verbose=0)  # raises on bad labels
    assert np.isfinite(history.history["loss"]).all()
    assert {"tckd_loss", "nckd_loss"} <= set(history.history)
    result = distiller.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)
    assert np.isfinite(result["loss"])


def test_sequence_padding_from_keras_masking_is_left_out():
    tokens = np.array([[3, 4, 5, 0, 0, 0, 0], [1, 2, 3, 4, 5, 6, 0]], "int32")
    labels = np.roll(tokens, -1, axis=1)
    teacher, student = _language_model(seed=1), _language_model(seed=2)
    distiller = kg.Distiller(teacher, student, loss=kg.KD(temperature=2.0), ce_weight=0.0)
    distiller.compile(optimizer="sgd")
    total = _np(distiller.compute_loss(tokens, labels, training=True))
    keep = tokens != 0
    s, t = _np(student(tokens))[keep], _np(teacher(tokens))[keep]
    want, _ = R.kd(s, t, 2.0)
    np.testing.assert_allclose(total, want.mean(), rtol=1e-4, atol=2e-6)


def test_a_sample_weight_of_the_labels_shape_masks_positions():
    tokens = np.array([[3, 4, 5, 1, 2, 3, 4], [1, 2, 3, 4, 5, 6, 7]], "int32")
    labels = np.roll(tokens, -1, axis=1)
    weights = np.ones(tokens.shape, "float32")
    weights[0, 3:] = 0.0
    teacher, student = _language_model(seed=1), _language_model(seed=2)
    distiller = kg.Distiller(teacher, student, loss=kg.GDKD(k=2), ce_weight=0.0)
    distiller.compile(optimizer="sgd")
    total = _np(distiller.compute_loss(tokens, labels, sample_weight=weights, training=True))
    keep = weights > 0
    want, _ = R.gdkd(_np(student(tokens))[keep], _np(teacher(tokens))[keep], 2)
    # Small KLs of similar models: float32 cancellation, so an absolute tolerance.
    np.testing.assert_allclose(total, want.mean(), rtol=1e-4, atol=2e-5)
    history = distiller.fit(tokens, labels, sample_weight=weights, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_a_batch_with_every_position_ignored_gives_a_zero_loss():
    x, y = _segmentation_batch()
    distiller = kg.Distiller(
        _segmenter(seed=1), _segmenter(seed=2), loss=kg.GDKD(k=2), ignore_index=255
    )
    distiller.compile(optimizer="sgd")
    assert float(_np(distiller.compute_loss(x, np.full_like(y, 255), training=True))) == 0.0


def test_ignore_index_is_validated_and_serialized():
    with pytest.raises(ValueError, match="ignore_index must be an integer or None"):
        kg.Distiller(_segmenter(), _segmenter(), ignore_index=2.5)
    distiller = kg.Distiller(_segmenter(), _segmenter(), ignore_index=255)
    assert distiller.get_config()["ignore_index"] == 255
