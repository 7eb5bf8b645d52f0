"""Distil a character-level causal transformer LM on real English text (offline, no download).

The text is Python's own documentation shipped with every CPython (`pydoc_data.topics`, about
465,000 characters of English prose and code); the last 10 % is the validation split. A teacher
transformer is trained with plain cross-entropy, then the same smaller student is trained
several ways: cross-entropy alone, KD, DKD and GDKD at T=1 and T=4, each distillation through
`keras_gdkd.Distiller` with labels of shape (batch, length) (one next-character label per
position). The script prints a line per run, then a table of validation bits per character,
perplexity and wall time per method.

    KERAS_BACKEND=jax python examples/distill_lm.py            # a few minutes on 2 idle CPU cores
    KERAS_BACKEND=torch python examples/distill_lm.py --fast   # CI: tiny models, < 1 min

Bits per character are the mean next-character cross-entropy over every position of the
validation windows (whole batches of 256 windows: 512 windows of 64 characters; `--fast` 256 of
32), divided by ln 2; perplexity is 2 to that power (per character). One seed per method:
differences of a few hundredths of a bit are within run-to-run noise.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import keras
import numpy as np
from keras import ops

import keras_gdkd as kg

METHODS = ("CE alone", "KD T=1", "DKD T=1", "GDKD T=1", "GDKD T=4")
VALIDATION_FRACTION = 0.1


def load_text() -> str:
    """Python's pydoc topics, concatenated in sorted key order (deterministic per Python)."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def encode(text: str) -> tuple[np.ndarray, list[str]]:
    """Character ids (int32) and the vocabulary (every character of the text, sorted)."""
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    return np.fromiter((index[c] for c in text), dtype=np.int32, count=len(text)), vocab


def windows(ids: np.ndarray, length: int, limit: int | None = None) -> tuple:
    """Non-overlapping `(inputs, next-character labels)` windows, shape (n, length) each."""
    n = (len(ids) - 1) // length
    if limit is not None:
        n = min(n, limit)
    x = ids[: n * length].reshape(n, length)
    y = ids[1 : n * length + 1].reshape(n, length)
    return x, y


def limit_cpu_threads() -> str:
    """One PyTorch CPU thread unless ``OMP_NUM_THREADS`` is set (see examples/quickstart.py)."""
    if keras.backend.backend() != "torch":
        return ""
    import torch

    if torch.cuda.is_available() or "OMP_NUM_THREADS" in os.environ:
        return ""
    torch.set_num_threads(1)
    return "; torch threads 1 (set OMP_NUM_THREADS to change)"


@keras.saving.register_keras_serializable(package="distill_lm")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position (0..length-1) to its input."""

    def __init__(self, length: int, **kwargs):
        super().__init__(**kwargs)
        self.length = length

    def build(self, input_shape):
        self.table = self.add_weight(
            shape=(self.length, input_shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="table",
        )

    def call(self, x):
        return x + ops.cast(self.table[None, : ops.shape(x)[1]], x.dtype)

    def get_config(self):
        return {**super().get_config(), "length": self.length}


def transformer(vocab: int, length: int, width: int, heads: int, depth: int, name: str):
    """A pre-LayerNorm causal transformer returning next-character logits (batch, length, vocab)."""
    tokens = keras.Input((length,), dtype="int32")
    x = keras.layers.Embedding(vocab, width)(tokens)
    x = PositionEmbedding(length)(x)
    for _ in range(depth):
        h = keras.layers.LayerNormalization(epsilon=1e-5)(x)
        h = keras.layers.MultiHeadAttention(heads, width // heads)(h, h, use_causal_mask=True)
        x = x + h
        h = keras.layers.LayerNormalization(epsilon=1e-5)(x)
        h = keras.layers.Dense(4 * width, activation="gelu")(h)
        x = x + keras.layers.Dense(width)(h)
    x = keras.layers.LayerNormalization(epsilon=1e-5)(x)
    return keras.Model(tokens, keras.layers.Dense(vocab)(x), name=name)


def predict(model: keras.Model, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The model's outputs by direct calls of one batch shape (`len(x)` a multiple of `batch`).

    Unlike `Model.predict`, nothing is compiled per model: on JAX each operation is compiled
    once per shape, and every student shares the shapes of the first.
    """
    chunks = [model(x[i : i + batch], training=False) for i in range(0, len(x), batch)]
    return np.concatenate([ops.convert_to_numpy(c) for c in chunks])


def bits_per_character(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Mean next-character cross-entropy over every validation position, in bits."""
    logits = predict(model, x).astype("float64")
    logits -= logits.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(logits).sum(axis=-1))
    picked = np.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
    return float(np.mean(log_z - picked) / math.log(2))


def losses(vocab: int) -> dict:
    """The distillation loss and CE weight per method (GDKD's top set: the 5 likeliest chars)."""
    del vocab  # k=5 is valid for any vocabulary of more than 5 characters
    return {
        "KD T=1": (kg.KD(temperature=1.0), 0.5),
        "DKD T=1": (kg.DKD(alpha=1.0, beta=2.0, temperature=1.0), 1.0),
        "GDKD T=1": (kg.GDKD(k=5, w0=1.0, w1=1.0, w2=2.0, temperature=1.0), 1.0),
        "GDKD T=4": (kg.GDKD(k=5, w0=1.0, w1=1.0, w2=2.0, temperature=4.0), 1.0),
    }


def train(model, x, y, args, epochs: int) -> float:
    """Fit with the shared schedule; returns the seconds it took."""
    start = time.perf_counter()
    model.fit(x, y, batch_size=args.batch, epochs=epochs, shuffle=True, verbose=0)
    return time.perf_counter() - start


def optimizer(args, steps: int):
    # Cosine decay to 0 over the run: short runs still end at a settled point.
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=max(steps, 1))
    return keras.optimizers.Adam(schedule)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--fast",
        action="store_true",
        help="tiny models, short runs, 256 validation windows (CI, < 1 min)",
    )
    parser.add_argument("--length", type=int, help="characters per window (64; --fast 32)")
    parser.add_argument("--epochs", type=int, help="student epochs (2; --fast 1)")
    parser.add_argument("--teacher-epochs", type=int, help="teacher epochs (3; --fast 1)")
    parser.add_argument(
        "--train-windows", type=int, help="training windows used (3200; --fast 800; 0: all)"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    fast = dict(length=32, epochs=1, teacher_epochs=1, train_windows=800)
    full = dict(length=64, epochs=2, teacher_epochs=3, train_windows=3200)
    for name, value in (fast if args.fast else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    for name in ("length", "epochs", "teacher_epochs", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    teacher_shape = (64, 4, 1) if args.fast else (96, 4, 2)  # width, heads, depth
    student_shape = (32, 2, 1) if args.fast else (48, 2, 1)

    threads = limit_cpu_threads()
    ids, vocab = encode(load_text())
    split = int(len(ids) * (1 - VALIDATION_FRACTION))
    x_train, y_train = windows(ids[:split], args.length, args.train_windows or None)
    x_val, y_val = windows(ids[split:], args.length)
    # Whole validation batches of 256 windows (the last partial one is dropped): one shape.
    keep = 256 if args.fast else 256 * (len(x_val) // 256)
    x_val, y_val = x_val[:keep], y_val[:keep]
    print(
        f"backend: {keras.backend.backend()}{threads}; python {sys.version.split()[0]}; "
        f"text: {len(ids)} characters, vocabulary {len(vocab)}; train {x_train.size} / "
        f"validation {x_val.size} positions in windows of {args.length}",
        flush=True,
    )
    start_all = time.perf_counter()
    steps = lambda epochs: epochs * math.ceil(len(x_train) / args.batch)  # noqa: E731

    keras.utils.set_random_seed(args.seed)
    teacher = transformer(len(vocab), args.length, *teacher_shape, name="teacher")
    teacher.compile(
        optimizer=optimizer(args, steps(args.teacher_epochs)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    seconds = train(teacher, x_train, y_train, args, args.teacher_epochs)
    teacher_bpc = bits_per_character(teacher, x_val, y_val)
    print(
        f"teacher width/heads/depth {teacher_shape} ({teacher.count_params()} parameters), "
        f"{args.teacher_epochs} epochs: {teacher_bpc:.3f} bits/char ({seconds:.1f} s)",
        flush=True,
    )
    print(
        f"student width/heads/depth {student_shape}, Adam {args.lr} cosine, batch {args.batch}, "
        f"{args.epochs} epochs; losses:"
    )
    configured = losses(len(vocab))
    for method, (loss, ce_weight) in configured.items():
        print(f"  {method}: {type(loss).__name__} {loss.get_config()} ce_weight {ce_weight}")

    rows = [("teacher", teacher_bpc, seconds)]
    for method in METHODS:
        keras.utils.set_random_seed(args.seed + 1)  # the same initial student for every method
        student = transformer(len(vocab), args.length, *student_shape, name="student")
        if method == "CE alone":
            model = student
            model.compile(
                optimizer=optimizer(args, steps(args.epochs)),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        else:
            loss, ce_weight = configured[method]
            model = kg.Distiller(teacher, student, loss=loss, ce_weight=ce_weight)
            model.compile(optimizer=optimizer(args, steps(args.epochs)))
        seconds = train(model, x_train, y_train, args, args.epochs)
        bpc = bits_per_character(student, x_val, y_val)
        print(f"  {method:<9} {bpc:.3f} bits/char ({seconds:.1f} s)", flush=True)
        rows.append((method, bpc, seconds))

    print(f"\n{'method':<10} {'val bits/char':>13} {'perplexity':>10} {'time':>8}")
    for method, bpc, seconds in rows:
        print(f"{method:<10} {bpc:13.3f} {2.0**bpc:10.3f} {seconds:7.1f}s")
    print(f"total {time.perf_counter() - start_all:.0f} s (training and validation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
