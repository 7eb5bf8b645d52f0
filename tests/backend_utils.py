"""Backend-specific helpers for tests only (the library itself never branches on the backend)."""

from __future__ import annotations

import keras
import numpy as np


def value_and_grad(fn, x: np.ndarray) -> tuple[float, np.ndarray]:
    """Value of scalar ``fn(x)`` and its gradient w.r.t. ``x`` by the active backend."""
    backend = keras.backend.backend()
    x = np.asarray(x, dtype="float32")
    if backend == "jax":
        import jax

        value, grad = jax.value_and_grad(fn)(jax.numpy.asarray(x))
        return float(value), np.asarray(grad)
    if backend == "tensorflow":
        import tensorflow as tf

        var = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = fn(var)
        return float(value), tape.gradient(value, var).numpy()
    if backend == "torch":
        import torch

        var = torch.tensor(x, requires_grad=True)
        value = fn(var)
        value.backward()
        return float(value.detach().cpu()), var.grad.detach().cpu().numpy()
    raise NotImplementedError(backend)
