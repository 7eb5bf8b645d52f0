"""Forward + backward time of the distillation losses alone (kd, dkd, gdkd, gdkd3).

For each (batch, classes) the value and the gradient with respect to the student logits are
computed by the backend's compiled path and timed, interleaved round-robin over repeats:

  jax:        jax.jit(jax.value_and_grad(loss))
  tensorflow: tf.function(jit_compile=True) around a GradientTape (--tf-mode graph: no XLA)
  torch:      eager autograd (--torch-compile: torch.compile of the forward, default mode)

    python benchmarks/loss.py                 # the active Keras backend (KERAS_BACKEND)
    python benchmarks/loss.py --backend torch --torch-compile
    python benchmarks/loss.py --smoke --json out.json        # seconds-long CI mode
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import step as step_bench  # noqa: E402  (benchmarks/step.py: backend selection, environment)

LOSSES = ("kd", "dkd", "gdkd", "gdkd3")
DEFAULT_SHAPES = ("64x100", "512x1000", "256x21843")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--backend",
        choices=step_bench.BACKENDS,
        help="Keras backend (default: the active one, from KERAS_BACKEND or keras.json)",
    )
    p.add_argument(
        "--shapes", nargs="+", default=list(DEFAULT_SHAPES), help="BATCHxCLASSES, e.g. 64x100"
    )
    p.add_argument("--losses", nargs="+", choices=LOSSES, default=list(LOSSES))
    p.add_argument("--iters", type=int, default=20, help="calls per timing sample")
    p.add_argument("--repeats", type=int, default=5, help="timing samples per loss and shape")
    p.add_argument("--tf-mode", choices=("xla", "graph"), default="xla")
    p.add_argument("--torch-compile", action="store_true", help="torch.compile the loss")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: default)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (CI)")
    args = p.parse_args(argv)
    args.backend = args.backend or step_bench.active_backend()
    if args.smoke:
        args.shapes, args.iters, args.repeats = ["8x10"], 2, 1
    try:
        args.shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes]
    except ValueError:
        p.error("--shapes must look like 64x100")
    return args


def _inputs(batch: int, classes: int, seed: int = 0) -> tuple:
    import numpy as np

    rng = np.random.default_rng(seed)
    teacher = (3.0 * rng.standard_normal((batch, classes))).astype("float32")
    student = (2.0 * rng.standard_normal((batch, classes))).astype("float32")
    labels = rng.integers(0, classes, size=(batch,)).astype("int32")
    return student, teacher, labels


def _loss_fn(name: str):
    """The functional loss with the hyper-parameters of the res32x4 -> res8x4 preset."""
    import keras_gdkd as kg

    if name == "kd":
        return lambda s, t, y: kg.kd(s, t, temperature=4.0)
    if name == "dkd":
        return lambda s, t, y: kg.dkd(s, t, y, alpha=1.0, beta=8.0, temperature=4.0)
    if name == "gdkd":
        return lambda s, t, y: kg.gdkd(s, t, k=5, w0=1.0, w1=2.0, w2=8.0, temperature=4.0)
    if name == "gdkd3":
        return lambda s, t, y: kg.gdkd3(s, t, k=4, w0=1.0, w1=2.0, w2=8.0, temperature=4.0)
    raise ValueError(name)


def compiled_value_and_grad(name: str, args: argparse.Namespace, s, t, y):
    """Returns ``call()`` running one compiled forward+backward and ``sync(out)``."""
    import keras

    loss = _loss_fn(name)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        fn = jax.jit(jax.value_and_grad(loss))
        s, t, y = (jax.device_put(v) for v in (s, t, y))
        return (lambda: fn(s, t, y)), (lambda out: jax.block_until_ready(out))
    if backend == "tensorflow":
        import tensorflow as tf

        s, t, y = (tf.constant(v) for v in (s, t, y))

        @tf.function(jit_compile=args.tf_mode == "xla")
        def fn(s, t, y):
            with tf.GradientTape() as tape:
                tape.watch(s)
                value = loss(s, t, y)
            return value, tape.gradient(value, s)

        return (lambda: fn(s, t, y)), (lambda out: out[0].numpy())
    if backend == "torch":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        s, t, y = (torch.as_tensor(v, device=device) for v in (s, t, y))
        forward = torch.compile(loss) if args.torch_compile else loss

        def fn():
            leaf = s.detach().requires_grad_(True)
            value = forward(leaf, t, y)
            (grad,) = torch.autograd.grad(value, leaf)
            return value, grad

        def sync(out):
            if device == "cuda":
                torch.cuda.synchronize()
            return out[0].item()

        return fn, sync
    raise NotImplementedError(backend)


def measure(args: argparse.Namespace) -> dict:
    """Run the loss benchmark in this process (the backend must already be selected)."""
    import keras

    step_bench.set_threads(args.threads)
    results = []
    for batch, classes in args.shapes:
        s, t, y = _inputs(batch, classes)
        calls, compile_s = {}, {}
        for name in args.losses:
            call, sync = compiled_value_and_grad(name, args, s, t, y)
            start = time.perf_counter()
            sync(call())  # trace + compile
            sync(call())
            compile_s[name] = time.perf_counter() - start
            calls[name] = (call, sync)
        samples = {name: [] for name in args.losses}
        for _ in range(args.repeats):
            for name, (call, sync) in calls.items():
                start = time.perf_counter()
                for _ in range(args.iters):
                    out = call()
                sync(out)
                samples[name].append((time.perf_counter() - start) / args.iters)
        row = {"batch": batch, "classes": classes, "ms": {}, "samples_ms": {}, "compile_s": {}}
        for name in args.losses:
            row["ms"][name] = round(1000 * statistics.median(samples[name]), 4)
            row["samples_ms"][name] = [round(1000 * v, 4) for v in samples[name]]
            row["compile_s"][name] = round(compile_s[name], 2)
        if "kd" in row["ms"]:
            row["ratio_to_kd"] = {
                n: round(v / row["ms"]["kd"], 3) for n, v in row["ms"].items() if n != "kd"
            }
        results.append(row)
    backend = keras.backend.backend()
    mode = {
        "jax": "jax.jit(value_and_grad)",
        "tensorflow": f"tf.function(jit_compile={args.tf_mode == 'xla'}) + GradientTape",
        "torch": "torch.compile + autograd" if args.torch_compile else "eager autograd",
    }[backend]
    return {
        "config": {
            "backend": backend,
            "mode": mode,
            "iters": args.iters,
            "repeats": args.repeats,
            "threads": args.threads,
            "smoke": args.smoke,
        },
        "environment": step_bench.environment(),
        "results": results,
    }


def print_table(report: dict) -> None:
    """Print one report as a table."""
    c = report["config"]
    names = list(report["results"][0]["ms"]) if report["results"] else []
    print(
        f"backend {c['backend']} ({c['mode']}), median of {c['repeats']} x {c['iters']} calls; "
        f"load {report['environment']['loadavg']}"
    )
    header = f"{'batch x classes':>16s} " + " ".join(f"{n + ' ms':>10s}" for n in names)
    header += f" {'gdkd/kd':>8s}"
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        cells = " ".join(f"{r['ms'][n]:10.3f}" for n in names)
        ratio = r.get("ratio_to_kd", {}).get("gdkd")
        ratio = f"{ratio:8.2f}" if ratio is not None else f"{'-':>8s}"
        print(f"{r['batch']:>7d} x {r['classes']:<6d} {cells} {ratio}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    code = step_bench._ensure_backend(args.backend, argv, args.threads, __file__)
    if code is not None:
        return code
    report = measure(args)
    print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
