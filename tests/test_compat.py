"""The private Keras helpers keras_gdkd relies on still exist and mean what they meant."""

import keras
import numpy as np

from keras_gdkd import compat


def test_scale_loss_for_distribution_is_a_no_op_on_one_replica():
    loss = keras.ops.convert_to_tensor(np.float32(3.5))
    assert float(keras.ops.convert_to_numpy(compat.scale_loss_for_distribution(loss))) == 3.5


def test_scale_loss_for_distribution_is_the_keras_helper():
    # Its division by the replica count is covered by the 2-device MirroredStrategy tests of
    # tests/test_parallel.py (the Distiller's loss equals the single-device loss there).
    from keras.src.losses import loss as keras_loss

    assert callable(keras_loss.scale_loss_for_distribution)


def test_keras_mask_finds_an_embedding_padding_mask():
    inputs = keras.Input((5,), dtype="int32")
    hidden = keras.layers.Embedding(10, 4, mask_zero=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    outputs = model(np.array([[1, 2, 0, 0, 0]]))
    mask = compat.keras_mask(outputs)
    assert mask is not None
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(mask), [[1, 1, 0, 0, 0]])
    assert compat.keras_mask(keras.ops.ones((2, 3))) is None
