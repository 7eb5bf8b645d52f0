"""Forward + backward time of the distillation losses alone (kd, dkd, gdkd, gdkd3).

For each (batch, classes) the value and the gradient with respect to the student logits are
computed by the backend's compiled path and timed, interleaved round-robin over repeats:

  jax:        jax.jit(jax.value_and_grad(loss))
  tensorflow: tf.function(jit_compile=True) around a GradientTape (--tf-mode graph: no XLA)
  torch:      eager autograd (--torch-compile: torch.compile of the forward, default mode)

    python benchmarks/loss.py                 # the active Keras backend (KERAS_BACKEND)
    python benchmarks/loss.py --backend torch --torch-compile
    python benchmarks/loss.py --smoke --json out.json        # seconds-long CI mode

``--memory`` measures peak memory of one value + gradient instead of time, for dense logits of
shape (batch, positions, classes) (default 2 x 128 positions, classes 1k, 8k, 32k and 128k):

  jax:              XLA's compiled memory analysis of jax.jit(value_and_grad) (output + temporary
                    buffers: everything beyond the inputs), on any device
  torch, CUDA:      torch.cuda.max_memory_allocated over one call, minus the memory before it
  torch, CPU:       peak resident memory (VmHWM, reset through /proc/self/clear_refs) over one
                    call minus the resident memory before it, in a fresh subprocess per case
                    after one warm-up call, with glibc mmap-ing every block over 64 KiB so that
                    freed memory leaves the process at once (Linux with glibc only)
  tensorflow:       tf.config.experimental.get_memory_info's peak over one call minus the
                    memory before it (TensorFlow's own allocator, CPU or GPU; the resident
                    memory says nothing there: TensorFlow keeps freed blocks)

    python benchmarks/loss.py --memory                       # the active backend
    python benchmarks/loss.py --memory --backend torch --classes 1000 8000 --json mem.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import step as step_bench  # noqa: E402  (benchmarks/step.py: backend selection, environment)

LOSSES = ("kd", "dkd", "gdkd", "gdkd3")
DEFAULT_SHAPES = ("64x100", "512x1000", "256x21843")
MEMORY_CLASSES = (1000, 8000, 32000, 128000)
MEMORY_LOSSES = ("kd", "dkd", "gdkd")
MIB = 2**20


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
    p.add_argument(
        "--memory", action="store_true", help="peak memory of value + gradient instead of time"
    )
    p.add_argument(
        "--classes",
        nargs="+",
        type=int,
        default=list(MEMORY_CLASSES),
        help="--memory: class counts (vocabulary sizes)",
    )
    p.add_argument("--batch", type=int, default=2, help="--memory: batch size")
    p.add_argument("--positions", type=int, default=128, help="--memory: positions per sample")
    # Internal: one --memory case in this (fresh) process; prints its result as JSON.
    p.add_argument("--memory-case", nargs=2, metavar=("LOSS", "CLASSES"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.backend = args.backend or step_bench.active_backend()
    if args.memory and args.losses == list(LOSSES):
        args.losses = list(MEMORY_LOSSES)
    if args.smoke:
        args.shapes, args.iters, args.repeats = ["8x10"], 2, 1
        args.classes, args.batch, args.positions = [50], 2, 4
    if min(args.classes) < 6 or args.batch < 1 or args.positions < 1:
        p.error("--classes must be >= 6 (GDKD's k=5 needs more), --batch and --positions >= 1")
    try:
        args.shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes]
    except ValueError:
        p.error("--shapes must look like 64x100")
    return args


def _inputs(batch: int, classes: int, seed: int = 0, positions: int | None = None) -> tuple:
    """Student, teacher logits (N(0, 2^2), N(0, 3^2)) and labels; `positions` adds an axis."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lead = (batch,) if positions is None else (batch, positions)
    teacher = (3.0 * rng.standard_normal((*lead, classes), dtype=np.float32)).astype("float32")
    student = (2.0 * rng.standard_normal((*lead, classes), dtype=np.float32)).astype("float32")
    labels = rng.integers(0, classes, size=lead).astype("int32")
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


# --- memory ----------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: resident now, VmHWM: peak resident)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _rss_peak_of(call, sync) -> int:
    """Bytes by which one call raised the peak resident memory above the memory before it."""
    import gc

    gc.collect()
    # Writing 5 to clear_refs resets VmHWM to the current VmRSS (Linux >= 4.0): the peak
    # measured is then that of this call alone, not of the imports or of the warm-up.
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    sync(call())
    return 1024 * (_status_kib("VmHWM") - before)


def memory_case(name: str, classes: int, args: argparse.Namespace) -> dict:
    """Peak memory of one value + gradient of loss `name` at `classes`, beyond its inputs."""
    import keras

    s, t, y = _inputs(args.batch, classes, positions=args.positions)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        fn = jax.jit(jax.value_and_grad(_loss_fn(name)))
        analysis = fn.lower(s, t, y).compile().memory_analysis()
        if analysis is None:
            raise RuntimeError("this JAX backend gives no compiled memory analysis")
        extra = analysis.output_size_in_bytes + analysis.temp_size_in_bytes
        return {
            "bytes": int(extra),
            "method": "XLA compiled memory analysis (output + temp)",
            "temp_bytes": int(analysis.temp_size_in_bytes),
        }
    call, sync = compiled_value_and_grad(name, args, s, t, y)
    sync(call())  # warm-up: one-time allocations (kernels, caches, XLA compilation)
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            sync(call())
            extra = torch.cuda.max_memory_allocated() - before
            return {"bytes": int(extra), "method": "torch.cuda.max_memory_allocated"}
    if backend == "tensorflow":
        import tensorflow as tf

        device = "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"
        tf.config.experimental.reset_memory_stats(device)
        before = tf.config.experimental.get_memory_info(device)["current"]
        sync(call())
        extra = tf.config.experimental.get_memory_info(device)["peak"] - before
        return {"bytes": int(extra), "method": f"TensorFlow allocator peak ({device})"}
    return {"bytes": _rss_peak_of(call, sync), "method": "peak RSS delta (fresh process)"}


def _memory_case_in_subprocess(name: str, classes: int, args: argparse.Namespace) -> dict:
    """Run one case in a fresh interpreter: the peak RSS must not see other cases' memory."""
    import subprocess

    cmd = [sys.executable, str(Path(__file__).resolve()), "--backend", args.backend]
    cmd += ["--batch", str(args.batch), "--positions", str(args.positions)]
    cmd += ["--threads", str(args.threads), "--tf-mode", args.tf_mode]
    cmd += ["--torch-compile"] if args.torch_compile else []
    cmd += ["--memory-case", name, str(classes)]
    # A fixed mmap threshold makes glibc serve every allocation above 64 KiB with its own
    # mmap and return it to the system when freed (the default threshold grows up to 32 MiB
    # after the first free, and freed heap memory then stays resident): the resident memory
    # then follows the live tensors, and the warm-up call leaves nothing to reuse.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"memory case {name} C={classes} failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def measure_memory(args: argparse.Namespace) -> dict:
    """The --memory table: one row per class count, peak MiB per loss and ratios to KD."""
    import keras

    backend = keras.backend.backend()
    in_process = backend in ("jax", "tensorflow")
    if backend == "torch":
        import torch

        in_process = torch.cuda.is_available()
    results = []
    for classes in args.classes:
        row = {"classes": classes, "mib": {}, "x_logits": {}}
        logits_mib = args.batch * args.positions * classes * 4 / MIB
        row["logits_mib"] = round(logits_mib, 3)
        for name in args.losses:
            if in_process:
                case = memory_case(name, classes, args)
            else:
                case = _memory_case_in_subprocess(name, classes, args)
            row["method"] = case["method"]
            row["mib"][name] = round(case["bytes"] / MIB, 3)
            row["x_logits"][name] = round(case["bytes"] / MIB / logits_mib, 2)
            if "temp_bytes" in case:
                row.setdefault("temp_mib", {})[name] = round(case["temp_bytes"] / MIB, 3)
        if "kd" in row["mib"] and row["mib"]["kd"] > 0:
            row["ratio_to_kd"] = {
                n: round(v / row["mib"]["kd"], 3) for n, v in row["mib"].items() if n != "kd"
            }
        results.append(row)
    return {
        "config": {
            "backend": backend,
            "memory": True,
            "shape": [args.batch, args.positions],
            "losses": args.losses,
            "smoke": args.smoke,
            "mode": results[0]["method"] if results else "",
        },
        "environment": step_bench.environment(),
        "results": results,
    }


def print_memory_table(report: dict) -> None:
    """Print a --memory report as a table (MiB beyond the inputs, and ratios to KD)."""
    c = report["config"]
    batch, positions = c["shape"]
    print(
        f"backend {c['backend']}: peak memory of value + gradient beyond the inputs, logits "
        f"({batch}, {positions}, C) float32; {c['mode']}"
    )
    names = c["losses"]
    header = f"{'C':>7s} {'logits MiB':>10s} " + " ".join(f"{n + ' MiB':>10s}" for n in names)
    header += " " + " ".join(f"{n + '/kd':>8s}" for n in names if n != "kd")
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        cells = " ".join(f"{r['mib'][n]:10.2f}" for n in names)
        ratios = " ".join(
            f"{r.get('ratio_to_kd', {}).get(n, float('nan')):8.2f}" for n in names if n != "kd"
        )
        print(f"{r['classes']:>7d} {r['logits_mib']:10.2f} {cells} {ratios}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    code = step_bench._ensure_backend(args.backend, argv, args.threads, __file__)
    if code is not None:
        return code
    if args.memory_case:
        step_bench.set_threads(args.threads)
        name, classes = args.memory_case
        print(json.dumps(memory_case(name, int(classes), args)))
        return 0
    if args.memory:
        step_bench.set_threads(args.threads)
        report = measure_memory(args)
        print_memory_table(report)
    else:
        report = measure(args)
        print_table(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
