"""Counter-based randomness: every draw is a pure function of (seed, epoch, example index).

No op here keeps state, so a pipeline rebuilt at any epoch reproduces the draws of an
uninterrupted run, whatever the batch size, parallelism or prefetch depth.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_GOLDEN = 0x9E3779B9
# Distinct salts so the shuffle and the augmentation streams never share draws.
SALT_SHUFFLE = 0x5BD1E995
SALT_AUGMENT = 0x27D4EB2F
SALT_STRONG = 0x165667B1


def _u32(x) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.uint32:
        # int64 -> uint32 keeps the low 32 bits, which is all we need.
        x = tf.cast(tf.cast(x, tf.int64), tf.uint32)
    return x


def _hash32(x: tf.Tensor) -> tf.Tensor:
    """`lowbias32` integer hash (C. Wellons): a bijection on uint32 with good avalanche."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def _epoch_key(seed: int, epoch, salt: int) -> tf.Tensor:
    key = _hash32(tf.constant((int(seed) ^ salt) & 0xFFFFFFFF, tf.uint32))
    key = _hash32(key + _u32(epoch))
    return _hash32(key ^ tf.constant((int(seed) >> 32) & 0xFFFFFFFF, tf.uint32))


def example_bits(seed: int, epoch, index, num: int, salt: int = SALT_AUGMENT) -> tf.Tensor:
    """`num` independent uint32 words per example, shape `index.shape + (num,)`."""
    h = _hash32(_epoch_key(seed, epoch, salt) ^ _hash32(_u32(index)))
    streams = tf.constant((np.arange(num, dtype=np.uint64) * _GOLDEN) & 0xFFFFFFFF, tf.uint32)
    return _hash32(h[..., None] + streams)


def example_uniform(seed: int, epoch, index, num: int, salt: int = SALT_AUGMENT) -> tf.Tensor:
    """`num` float32 uniforms in [0, 1) per example (24-bit resolution)."""
    bits = example_bits(seed, epoch, index, num, salt)
    return tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) * (
        1.0 / (1 << 24)
    )


def example_seed(seed: int, epoch, index, salt: int = SALT_AUGMENT) -> tf.Tensor:
    """A shape-[2] int64 seed for `tf.random.stateless_*` ops, unique per example."""
    return tf.cast(example_bits(seed, epoch, index, 2, salt), tf.int64)


def epoch_permutation(num_examples: int, seed: int, epoch) -> tf.Tensor:
    """The shuffle order of one epoch: a permutation of `range(num_examples)` (int64)."""
    key = tf.cast(tf.stack([_epoch_key(seed, epoch, SALT_SHUFFLE), _u32(epoch)]), tf.int64)
    return tf.random.experimental.stateless_shuffle(tf.range(num_examples, dtype=tf.int64), key)


def epoch_seed(seed: int, epoch) -> tf.Tensor:
    """A scalar int64 seed for per-epoch `tf.data` ops (e.g. a shuffle buffer)."""
    return tf.cast(_epoch_key(seed, epoch, SALT_SHUFFLE), tf.int64)
