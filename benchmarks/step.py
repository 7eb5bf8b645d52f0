"""Training-step cost of distillation against the student's and the teacher's own steps.

Times in one process, interleaved round-robin over repeats:

  (a) student: the student's plain compiled training step (cross-entropy only);
  (b) teacher: the teacher's compiled inference on one batch (``predict``);
  (c) kd:      a ``keras_gdkd.Distiller`` training step with KD;
  (d) gdkd:    a ``keras_gdkd.Distiller`` training step with GDKD;

and reports ms/step, images/s and the ratios d/(a+b) and d/c. Every step is Keras's own compiled
step as ``fit``/``predict`` run it (``jit_compile="auto"``: XLA on JAX, plain graph mode on a
CPU-only TensorFlow and XLA on a TensorFlow GPU, eager on PyTorch) over an in-memory array of
identical batches; a callback times steps 1..K of each run (step 0, which includes the iterator
start-up, is excluded) by blocking on the logs only at the first and last step, so JAX's
asynchronous dispatch is kept.

    python benchmarks/step.py                 # the active Keras backend (KERAS_BACKEND)
    python benchmarks/step.py --backend tensorflow --teacher resnet56 --student resnet20
    python benchmarks/step.py --backend jax --mixed-precision bfloat16 --batch 256
    python benchmarks/step.py --smoke --json out.json      # seconds-long CI mode
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("tensorflow", "jax", "torch")
KINDS = ("student", "teacher", "kd", "gdkd")
LABELS = {
    "student": "(a) student CE step",
    "teacher": "(b) teacher inference",
    "kd": "(c) Distiller KD step",
    "gdkd": "(d) Distiller GDKD step",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend (default: the active one, from KERAS_BACKEND or keras.json)",
    )
    p.add_argument("--teacher", default="resnet32x4")
    p.add_argument("--student", default="resnet8x4")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat (K)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs of K steps per variant")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs of K steps per variant")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument(
        "--mixed-precision",
        choices=("none", "bfloat16", "float16"),
        default="none",
        help="Keras dtype policy mixed_<dtype> for both models (losses stay float32)",
    )
    p.add_argument(
        "--method",
        choices=("fit", "train_on_batch"),
        default="fit",
        help="fit/predict over K identical batches (default) or a Python loop of *_on_batch",
    )
    p.add_argument(
        "--jit-compile",
        choices=("auto", "true", "false"),
        default="auto",
        help='compile(jit_compile=...); Keras "auto" is XLA on JAX, no XLA on a CPU-only '
        "TensorFlow, eager on PyTorch",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="intra-op threads (0: the backend's default; JAX honours only 1)",
    )
    p.add_argument("--only", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--smoke", action="store_true", help="tiny models and sizes (CI)")
    p.add_argument("--quiet", action="store_true", help="no table")
    args = p.parse_args(argv)
    args.backend = args.backend or active_backend()
    if args.smoke:
        args.teacher, args.student = "tiny", "tiny"
        args.batch, args.steps, args.repeats, args.warmup = 4, 2, 1, 1
        args.image_size, args.classes = 16, 10
    if args.steps < 1 or args.repeats < 1 or args.batch < 1:
        p.error("--steps, --repeats and --batch must be >= 1")
    return args


def active_backend() -> str:
    """The backend Keras runs on when nothing selects another: ``KERAS_BACKEND``, else the
    ``backend`` of ``~/.keras/keras.json``, else Keras's default."""
    import keras

    return keras.config.backend()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and Keras's initializers.

    ``keras.utils.set_random_seed`` also seeds TensorFlow, importing it whenever it is installed
    (seconds) even where the benchmark runs on JAX or PyTorch; the Keras initializers draw their
    default seeds from Python's ``random``, so seeding it is enough off TensorFlow.
    """
    import keras

    if "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(seed)


def _ensure_backend(
    backend: str, argv: list[str], threads: int = 0, script: str = __file__
) -> int | None:
    """Select the Keras backend; re-run ``script`` in a subprocess if keras is already loaded
    with another one. Returns the subprocess's exit code in that case, else None."""
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != backend:
            env = dict(os.environ, KERAS_BACKEND=backend)
            cmd = [sys.executable, str(Path(script).resolve()), *argv]
            return subprocess.call(cmd, env=env)
    os.environ["KERAS_BACKEND"] = backend
    if threads == 1 and backend == "jax":
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return None


def set_threads(threads: int) -> None:
    """Limit the backend's intra-op threads (0: leave the default)."""
    if not threads:
        return
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def get_model(name: str, classes: int, shape: tuple):
    """A zoo model, or ``"tiny"``: a two-layer CNN that compiles in a second (smoke tests)."""
    import keras

    from keras_gdkd.models import get_model as zoo_model

    if name != "tiny":
        return zoo_model(name, classes, shape)
    inputs = keras.Input(shape)
    h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(classes)(h), name="tiny")


def _block(value) -> None:
    """Wait until ``value`` (a tensor, array or nested structure of them) is computed."""
    import keras

    leaves = keras.tree.flatten(value)
    if leaves:
        keras.ops.convert_to_numpy(keras.ops.sum(leaves[0]))


class StepTimer:
    """Keras callback timing steps 1..n-1 of each ``fit``/``predict`` call.

    It blocks on the step's outputs only after step 0 and after the last step, so the steps in
    between run exactly as in an untimed ``fit`` (asynchronously dispatched on JAX).
    """

    def __init__(self, steps: int):
        import keras

        class _Callback(keras.callbacks.Callback):
            def __init__(cb):
                super().__init__()
                cb.reset()

            def reset(cb):
                cb.count, cb.t0, cb.t_first, cb.t_last = 0, None, None, None

            def _begin(cb, *_):
                cb.reset()
                cb.t0 = time.perf_counter()

            def _batch_end(cb, batch, logs=None):
                cb.count += 1
                if cb.count == 1 or cb.count == steps:
                    _block(logs)
                    now = time.perf_counter()
                    if cb.count == 1:
                        cb.t_first = now
                    if cb.count == steps:
                        cb.t_last = now

            on_train_begin = on_predict_begin = _begin
            on_train_batch_end = on_predict_batch_end = _batch_end

        self.callback = _Callback()

    def result(self) -> tuple[float, float]:
        """(seconds per step over steps 1..n-1, seconds from the call's start to step 0's end)."""
        cb = self.callback
        per_step = (cb.t_last - cb.t_first) / max(cb.count - 1, 1)
        return per_step, cb.t_first - cb.t0


def build(args: argparse.Namespace) -> dict:
    """Build the models and compiled variants; returns {kind: run(n_steps) -> (s/step, s_0)}."""
    import keras
    import numpy as np

    import keras_gdkd

    set_threads(args.threads)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    if args.mixed_precision != "none":
        keras.config.set_dtype_policy(f"mixed_{args.mixed_precision}")
    shape = (args.image_size, args.image_size, 3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, *shape), dtype=np.float32)
    y = rng.integers(0, args.classes, size=(args.batch,)).astype("int32")
    n = args.steps + 1  # step 0 is not timed
    xs = np.ascontiguousarray(np.broadcast_to(x, (n, *x.shape)).reshape(-1, *shape))
    ys = np.tile(y, n)

    seed_everything(0)
    teacher = get_model(args.teacher, args.classes, shape)
    teacher.compile(jit_compile=jit)

    def sgd():
        return keras.optimizers.SGD(learning_rate=0.05, momentum=0.9)

    variants = {}
    if "student" in args.only:
        student = get_model(args.student, args.classes, shape)
        student.compile(
            optimizer=sgd(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )
        variants["student"] = student
    if "teacher" in args.only:
        variants["teacher"] = teacher
    losses = {
        "kd": (keras_gdkd.KD(temperature=4.0), 0.1, 0.9, 0),
        "gdkd": (keras_gdkd.GDKD(k=5, w0=1.0, w1=2.0, w2=8.0, temperature=4.0), 1.0, 1.0, 20),
    }
    for kind, (loss, ce_weight, distill_weight, warmup) in losses.items():
        if kind not in args.only:
            continue
        distiller = keras_gdkd.Distiller(
            teacher,
            get_model(args.student, args.classes, shape),
            loss=loss,
            ce_weight=ce_weight,
            distill_weight=distill_weight,
            warmup_epochs=warmup,
        )
        distiller.compile(optimizer=sgd(), jit_compile=jit)
        variants[kind] = distiller

    def runner(kind, model):
        timer = StepTimer(n)
        cb = timer.callback
        if args.method == "fit":
            if kind == "teacher":

                def run():
                    model.predict(xs, batch_size=args.batch, verbose=0, callbacks=[cb])
                    return timer.result()
            else:

                def run():
                    model.fit(
                        xs, ys, batch_size=args.batch, epochs=1, shuffle=False, verbose=0,
                        callbacks=[cb],
                    )  # fmt: skip
                    return timer.result()
        else:

            def run():
                start = time.perf_counter()
                for i in range(n):
                    if kind == "teacher":
                        out = model.predict_on_batch(x)
                    else:
                        out = model.train_on_batch(x, y)
                    if i == 0:
                        _block(out)
                        t_first = time.perf_counter()
                _block(out)
                return (time.perf_counter() - t_first) / max(n - 1, 1), t_first - start

        return run

    return {kind: (runner(kind, model), model) for kind, model in variants.items()}


def measure(args: argparse.Namespace) -> dict:
    """Run the benchmark in this process (the backend must already be selected)."""
    import keras

    t_build = time.perf_counter()
    variants = build(args)
    build_s = time.perf_counter() - t_build
    first_call = {}
    for kind, (run, _) in variants.items():  # compile + warm-up
        start = time.perf_counter()
        run()
        first_call[kind] = time.perf_counter() - start
        for _ in range(args.warmup - 1):
            run()
        _progress(args, f"{kind}: compiled and warmed up in {first_call[kind]:.1f} s")
    samples = {kind: [] for kind in variants}
    first_step = {kind: [] for kind in variants}
    for r in range(args.repeats):  # round-robin: load changes hit every variant alike
        for kind, (run, _) in variants.items():
            per_step, first = run()
            samples[kind].append(per_step)
            first_step[kind].append(first)
            _progress(args, f"repeat {r + 1}/{args.repeats} {kind}: {1000 * per_step:.1f} ms/step")
    results = {}
    for kind, (_, model) in variants.items():
        ms = 1000 * statistics.median(samples[kind])
        results[kind] = {
            "ms_per_step": round(ms, 3),
            "images_per_s": round(args.batch / ms * 1000, 1),
            "samples_ms": [round(1000 * s, 3) for s in samples[kind]],
            "first_step_ms": round(1000 * statistics.median(first_step[kind]), 3),
            "compile_and_warmup_s": round(first_call[kind], 2),
            "jit_compile": bool(getattr(model, "jit_compile", False)),
        }
    ratios = {}
    if {"student", "teacher", "gdkd"} <= set(results):
        base = results["student"]["ms_per_step"] + results["teacher"]["ms_per_step"]
        ratios["gdkd_over_student_plus_teacher"] = round(results["gdkd"]["ms_per_step"] / base, 3)
    if {"kd", "gdkd"} <= set(results):
        ratios["gdkd_over_kd"] = round(
            results["gdkd"]["ms_per_step"] / results["kd"]["ms_per_step"], 3
        )
    if {"student", "teacher", "kd"} <= set(results):
        base = results["student"]["ms_per_step"] + results["teacher"]["ms_per_step"]
        ratios["kd_over_student_plus_teacher"] = round(results["kd"]["ms_per_step"] / base, 3)
    return {
        "config": {
            "backend": keras.backend.backend(),
            "teacher": args.teacher,
            "student": args.student,
            "batch": args.batch,
            "steps": args.steps,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "image_size": args.image_size,
            "classes": args.classes,
            "mixed_precision": args.mixed_precision,
            "method": args.method,
            "jit_compile_option": args.jit_compile,
            "threads": args.threads,
            "smoke": args.smoke,
        },
        "environment": environment(),
        "build_s": round(build_s, 2),
        "results": results,
        "ratios": ratios,
    }


def _progress(args: argparse.Namespace, message: str) -> None:
    if not (args.quiet or args.smoke):
        print(message, file=sys.stderr, flush=True)


def environment() -> dict:
    """Versions, cores and the load average (the machine may be shared)."""
    import keras

    env = {
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        env["jax"] = jax.__version__
        env["devices"] = [str(d) for d in jax.devices()]
    elif backend == "tensorflow":
        import tensorflow as tf

        env["tensorflow"] = tf.__version__
        env["devices"] = [d.name for d in tf.config.list_logical_devices()]
    elif backend == "torch":
        import torch

        env["torch"] = torch.__version__
        env["devices"] = ["cuda"] if torch.cuda.is_available() else ["cpu"]
    return env


def print_table(report: dict) -> None:
    """Print one report as a table."""
    c = report["config"]
    print(
        f"backend {c['backend']}, {c['teacher']} -> {c['student']}, batch {c['batch']}, "
        f"{c['image_size']}x{c['image_size']}, {c['classes']} classes, precision "
        f"{c['mixed_precision']}, method {c['method']}, threads {c['threads'] or 'default'}, "
        f"median of {c['repeats']} x {c['steps']} steps; load {report['environment']['loadavg']}"
    )
    header = f"{'variant':26s} {'ms/step':>9s} {'img/s':>9s} {'jit':>5s} {'1st step ms':>11s}"
    print(header)
    print("-" * len(header))
    for kind, r in report["results"].items():
        print(
            f"{LABELS[kind]:26s} {r['ms_per_step']:9.1f} {r['images_per_s']:9.1f} "
            f"{str(r['jit_compile']):>5s} {r['first_step_ms']:11.1f}"
        )
    for name, value in report["ratios"].items():
        print(f"{name}: {value:.3f}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    code = _ensure_backend(args.backend, argv, args.threads)
    if code is not None:
        return code
    report = measure(args)
    if not args.quiet:
        print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
