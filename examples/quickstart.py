"""Offline quickstart: distil a small student on scikit-learn's digits (real data, no download).

Trains a teacher MLP, then the same small student four ways (alone, KD, DKD, GDKD) over a few
seeds. It prints a line per run as it goes, then a table of test accuracy and time per method and
one line that reads the table. ``--fast`` is a shorter run (one seed, fewer epochs) that CI runs.

    KERAS_BACKEND=jax python examples/quickstart.py
    KERAS_BACKEND=torch python examples/quickstart.py --fast

On PyTorch's CPU backend the script runs on one thread unless ``OMP_NUM_THREADS`` is set: these
models are far too small for several threads to help, and on a busy machine the threads' waits
for each other cost several times the whole run.
"""

from __future__ import annotations

import argparse
import os
import time

import keras
import numpy as np

import keras_gdkd as kg

# 10 classes instead of CIFAR's 100: a top set of 2 classes plays the role of the paper's top-5.
GDKD_PARAMS = dict(k=2, w0=1.0, w1=1.0, w2=2.0, temperature=4.0)
DKD_PARAMS = dict(alpha=1.0, beta=2.0, temperature=4.0)
KD_PARAMS = dict(temperature=4.0)
METHODS = ("student alone", "KD", "DKD", "GDKD")
# Differences below this many accuracy points are not read as a ranking (1 point is 7 of the
# 719 test digits), nor below twice the largest seed-to-seed standard deviation.
MIN_GAP_POINTS = 1.0


def load_digits(seed: int = 0):
    """Digits scaled to [0, 1], split 60/40 with a fixed seed."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    x, y = sk_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return train_test_split(x, y.astype("int32"), test_size=0.4, random_state=seed, stratify=y)


def limit_cpu_threads() -> str:
    """Run PyTorch on CPU with one intra-op thread unless ``OMP_NUM_THREADS`` is set.

    Returns a note for the header. Each step here is a few small matrix products: a second
    OpenMP thread gains nothing, and when the machine has more runnable threads than cores every
    step waits for the slowest thread (7 min instead of 1 min for this script on 2 busy cores).
    """
    if keras.backend.backend() != "torch":
        return ""
    import torch

    if torch.cuda.is_available():
        return ""
    if "OMP_NUM_THREADS" in os.environ:
        return f"; torch threads {torch.get_num_threads()} (OMP_NUM_THREADS)"
    torch.set_num_threads(1)
    return "; torch threads 1 (set OMP_NUM_THREADS to change)"


def mlp(hidden: list[int], name: str, dropout: float = 0.0) -> keras.Model:
    inputs = keras.Input((64,))
    h = inputs
    for width in hidden:
        h = keras.layers.Dense(width, activation="relu")(h)
        if dropout:
            h = keras.layers.Dropout(dropout)(h)
    return keras.Model(inputs, keras.layers.Dense(10)(h), name=name)


def train_teacher(x, y, epochs: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    teacher = mlp([256, 256], "teacher", dropout=0.2)
    teacher.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    teacher.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return teacher


def train_student(method: str, teacher, data, epochs: int, seed: int) -> tuple[float, float]:
    """Return (test accuracy, seconds) of one student run."""
    x_train, x_test, y_train, y_test = data
    keras.utils.set_random_seed(seed)
    student = mlp([16], "student_" + method.split()[0].lower())
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    start = time.perf_counter()
    if method == "student alone":
        student.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model = student
    else:
        loss = {
            "KD": kg.KD(**KD_PARAMS),
            "DKD": kg.DKD(**DKD_PARAMS),
            "GDKD": kg.GDKD(**GDKD_PARAMS),
        }[method]
        # The KD baseline weighs CE 0.1 and KD 0.9, as in the authors' configs.
        weights = dict(ce_weight=0.1, distill_weight=0.9) if method == "KD" else {}
        model = kg.Distiller(teacher, student, loss=loss, warmup_epochs=5, **weights)
        model.compile(optimizer=optimizer, metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    return accuracy(student, x_test, y_test), seconds


def accuracy(model: keras.Model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def read_results(rows: list[tuple[str, float, float, float]], seeds: int) -> str:
    """One sentence on what the table shows, computed from its numbers.

    Args:
        rows: ``(method, mean accuracy, std of accuracy, seconds)`` per method, accuracies in
            [0, 1]; the first row is the student trained alone.
        seeds: runs per method behind each mean.

    Returns:
        Whether the distillation methods beat the student alone and each other by more than the
        noise, ``max(2 x the largest seed-to-seed std, MIN_GAP_POINTS)`` accuracy points. With
        one seed there is no noise to measure, and no ranking is read.
    """
    points = {method: 100 * mean for method, mean, _, _ in rows}
    alone = points.pop(rows[0][0])
    best = max(points, key=points.get)
    worst = min(points, key=points.get)
    spread = points[best] - points[worst]
    gain = points[best] - alone
    if seeds < 2:
        return (
            f"Reading: one seed per method, too few to rank them ({best} {spread:.1f} points "
            f"above {worst}, {gain:+.1f} over the student alone); run with --seeds 3 or more."
        )
    noise = max(2 * 100 * max(std for _, _, std, _ in rows), MIN_GAP_POINTS)
    versus_alone = (
        f"the best distillation ({best}) is {gain:.1f} points above the student alone"
        if gain > noise
        else f"no distillation method is more than {noise:.1f} points above the student alone"
    )
    if spread <= noise:
        return (
            f"Reading: {', '.join(points)} are within {spread:.1f} points of each other (noise "
            f"{noise:.1f}): digits is too easy for the distillation methods to separate; "
            f"{versus_alone}. Their differences show on CIFAR-100 and ImageNet "
            "(docs/reproduce.md)."
        )
    return (
        f"Reading: {best} is best, {spread:.1f} points above {worst} (noise {noise:.1f}); "
        f"{versus_alone}."
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="student epochs (default 30; --fast: 8)")
    parser.add_argument("--teacher-epochs", type=int, help="default 40; --fast: 15")
    parser.add_argument("--seeds", type=int, help="student runs per method (default 3; --fast: 1)")
    parser.add_argument("--fast", action="store_true", help="a short run to check the install")
    args = parser.parse_args(argv)
    defaults = dict(epochs=8, teacher_epochs=15, seeds=1) if args.fast else {}
    defaults = {"epochs": 30, "teacher_epochs": 40, "seeds": 3, **defaults}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    threads = limit_cpu_threads()
    data = load_digits()
    x_train, x_test, y_train, y_test = data
    print(
        f"backend: {keras.backend.backend()}{threads}; "
        f"digits: {len(x_train)} train / {len(x_test)} test",
        flush=True,
    )
    start = time.perf_counter()
    print(f"teacher MLP 64-256-256-10: training {args.teacher_epochs} epochs ...", flush=True)
    teacher = train_teacher(x_train, y_train, args.teacher_epochs)
    teacher_acc = accuracy(teacher, x_test, y_test)
    print(
        f"teacher MLP 64-256-256-10: test accuracy {teacher_acc:.4f} "
        f"({time.perf_counter() - start:.1f} s)"
    )
    print(
        "student MLP 64-16-10, SGD 0.05 momentum 0.9, batch 64, "
        f"{args.epochs} epochs, warm-up 5 epochs; hyper-parameters:"
    )
    print(f"  KD {KD_PARAMS} (ce 0.1, kd 0.9)\n  DKD {DKD_PARAMS}\n  GDKD {GDKD_PARAMS}")

    rows = []
    for method in METHODS:
        runs = []
        for seed in range(args.seeds):
            acc, seconds = train_student(method, teacher, data, args.epochs, seed)
            print(f"  {method:<14} seed {seed}: {acc * 100:6.2f} % ({seconds:.1f} s)", flush=True)
            runs.append((acc, seconds))
        acc = np.array([a for a, _ in runs])
        rows.append((method, acc.mean(), acc.std(), np.mean([s for _, s in runs])))

    print(
        f"\n{'method':<14} {'test acc (mean ± std over ' + str(args.seeds) + ' seeds)':<38} "
        "time/run"
    )
    for method, mean, std, seconds in rows:
        print(f"{method:<14} {mean * 100:6.2f} ± {std * 100:4.2f} %{'':<24} {seconds:6.1f} s")
    print(read_results(rows, args.seeds))
    print(f"teacher and students trained in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
