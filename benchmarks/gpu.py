"""GPU throughput of the distillation step, each run in a subprocess.

Runs ``benchmarks/step.py`` for the flagship pair resnet32x4 -> resnet8x4 (32x32, 100 classes)
at batch 64 and 256 in float32 and mixed_bfloat16, and resnet34 -> resnet18 at 224x224 (1000
classes, batch 64), on each chosen backend that sees a GPU (default: the active Keras backend),
within a time budget (default 280 s), and writes one JSON. Without a GPU it says so and exits 0.

    python benchmarks/gpu.py --json gpu.json                        # the active backend
    python benchmarks/gpu.py --backends jax tensorflow --json gpu.json
    python benchmarks/gpu.py --smoke           # tiny runs (exits 0 at once without a GPU)
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GPU_BACKENDS = ("jax", "tensorflow", "torch")
_PROBES = {
    "jax": "import jax\ntry:\n    print(len(jax.devices('gpu')))\nexcept RuntimeError:\n"
    "    print(0)",
    "tensorflow": "import tensorflow as tf\nprint(len(tf.config.list_physical_devices('GPU')))",
    "torch": "import torch\nprint(torch.cuda.device_count())",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--backends",
        nargs="+",
        choices=GPU_BACKENDS,
        help="backends to measure (default: the active Keras backend, from KERAS_BACKEND)",
    )
    p.add_argument("--budget-s", type=float, default=280.0, help="stop starting runs after this")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--smoke", action="store_true", help="tiny runs (CI)")
    return p.parse_args(argv)


def nvidia_device_present() -> bool:
    """Cheap check (no framework import) for an NVIDIA driver and device."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None


def active_backend(timeout: float = 120.0) -> str:
    """The active Keras backend, asked of Keras in a subprocess so that this process stays free
    of any framework (each run gets a fresh one)."""
    out = subprocess.run(
        [sys.executable, "-c", "import keras\nprint(keras.config.backend())"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise SystemExit(f"cannot import keras to find the active backend:\n{out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


def gpus_per_backend(backends, timeout: float = 120.0) -> dict:
    """{backend: number of GPUs it sees}, each probed in a fresh subprocess."""
    found = {}
    for backend in backends:
        try:
            out = subprocess.run(
                [sys.executable, "-c", _PROBES[backend]],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=dict(os.environ, KERAS_BACKEND=backend),
            )
            found[backend] = int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else 0
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            found[backend] = 0
    return found


def planned_runs(args: argparse.Namespace, backends) -> list[dict]:
    """The step.py configurations to run, most important first."""
    if args.smoke:
        return [{"backend": b, "smoke": True} for b in backends]
    runs = []
    flagship = {"teacher": "resnet32x4", "student": "resnet8x4", "image_size": 32, "classes": 100}
    for backend in backends:
        for batch in (64, 256):
            for precision in ("none", "bfloat16"):
                only = ["student", "teacher", "kd", "gdkd"]
                if (batch, precision) != (64, "none"):
                    only = ["student", "teacher", "gdkd"]
                runs.append(
                    dict(flagship, backend=backend, batch=batch, precision=precision, only=only)
                )
    for backend in backends:
        runs.append(
            {
                "backend": backend,
                "teacher": "resnet34",
                "student": "resnet18",
                "image_size": 224,
                "classes": 1000,
                "batch": 64,
                "precision": "none",
                "only": ["student", "teacher", "gdkd"],
            }
        )
    return runs


def _command(run: dict, args: argparse.Namespace, out: Path) -> list[str]:
    cmd = [sys.executable, str(HERE / "step.py"), "--backend", run["backend"], "--quiet"]
    cmd += ["--json", str(out)]
    if run.get("smoke"):
        return cmd + ["--smoke"]
    cmd += ["--teacher", run["teacher"], "--student", run["student"]]
    cmd += ["--batch", str(run["batch"]), "--image-size", str(run["image_size"])]
    cmd += ["--classes", str(run["classes"]), "--mixed-precision", run["precision"]]
    cmd += ["--steps", str(args.steps), "--repeats", str(args.repeats), "--only", *run["only"]]
    return cmd


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict = {"gpu": False, "smoke": args.smoke, "runs": []}
    if not nvidia_device_present():
        print("No GPU: no NVIDIA device or driver on this machine; nothing to measure.")
        report["reason"] = "no NVIDIA device"
        _write(args.json, report)
        return 0
    args.backends = args.backends or [active_backend()]
    found = gpus_per_backend(args.backends)
    report["gpus_per_backend"] = found
    backends = [b for b in args.backends if found.get(b)]
    if not backends:
        print(f"No GPU visible to {', '.join(args.backends)} ({found}); nothing to measure.")
        report["reason"] = "no backend sees a GPU"
        _write(args.json, report)
        return 0
    report["gpu"] = True
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, run in enumerate(planned_runs(args, backends)):
            left = args.budget_s - (time.perf_counter() - start)
            if left < 20:
                run["skipped"] = "time budget spent"
                report["runs"].append(run)
                continue
            out = Path(tmp) / f"run{i}.json"
            t0 = time.perf_counter()
            try:
                proc = subprocess.run(
                    _command(run, args, out),
                    capture_output=True,
                    text=True,
                    timeout=left,
                    env=dict(os.environ, KERAS_BACKEND=run["backend"]),
                    cwd=ROOT,
                )
                run["returncode"] = proc.returncode
                if proc.returncode != 0:
                    run["error"] = proc.stderr[-2000:]
            except subprocess.TimeoutExpired:
                run["error"] = "timed out (time budget)"
            run["wall_s"] = round(time.perf_counter() - t0, 1)
            if out.exists():
                run["report"] = json.loads(out.read_text())
            report["runs"].append(run)
            _print_run(run)
    report["elapsed_s"] = round(time.perf_counter() - start, 1)
    _write(args.json, report)
    return 0 if all("error" not in r for r in report["runs"]) else 1


def _print_run(run: dict) -> None:
    rep = run.get("report")
    if rep is None:
        print(f"{run['backend']}: {run.get('error') or run.get('skipped')}")
        return
    c, res = rep["config"], rep["results"]
    cells = ", ".join(f"{k} {v['images_per_s']:.0f} img/s" for k, v in res.items())
    ratios = ", ".join(f"{k} {v:.3f}" for k, v in rep["ratios"].items())
    print(
        f"{c['backend']:10s} {c['teacher']}->{c['student']} {c['image_size']}px batch "
        f"{c['batch']} {c['mixed_precision']}: {cells}; {ratios} ({run['wall_s']} s)"
    )


def _write(path: Path | None, report: dict) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
