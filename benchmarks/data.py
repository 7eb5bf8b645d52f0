"""Throughput of the keras_gdkd.data training pipelines on data in the real on-disk formats.

Writes a fake `cifar-100-python.tar.gz` and a small class-per-folder JPEG tree to a temp
dir, then times the CIFAR-100 and ImageNet pipelines (images/s and images/s per core), and
`check_image_folder` (fast and full-decode) on a folder of small fake JPEGs.

    python benchmarks/data.py                 # full run, all cores
    python benchmarks/data.py --threads 1     # one tf.data thread: per-core throughput
    python benchmarks/data.py --smoke --json out.json   # seconds-long CI mode
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def _time_pipeline(dataset, batch_size: int, max_batches: int, max_seconds: float, threads):
    import tensorflow as tf

    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        dataset = dataset.with_options(options)
    it = iter(dataset)
    start = time.perf_counter()
    next(it)  # tracing, graph optimisation and the first fill of the prefetch buffer
    first = time.perf_counter() - start
    count, start = 0, time.perf_counter()
    for _ in range(max_batches):
        try:
            next(it)
        except StopIteration:
            break
        count += 1
        if time.perf_counter() - start > max_seconds:
            break
    elapsed = time.perf_counter() - start
    return {
        "batches": count,
        "seconds": round(elapsed, 3),
        "first_batch_s": round(first, 3),
        "images_per_s": round(count * batch_size / elapsed, 1) if count else 0.0,
    }


def _time_checks(folder: Path, num_images: int) -> list[dict]:
    """Seconds of `check_image_folder` on `num_images` small JPEGs (files in the page cache)."""
    from keras_gdkd import data as kd
    from keras_gdkd.data import testing

    classes = 10
    testing.write_fake_image_folder(
        folder, num_classes=classes, per_class=max(num_images // classes, 1), size=(96, 128)
    )
    rows = []
    for mode, full, workers in (
        ("fast", False, None),
        ("fast", False, 1),
        ("full_decode", True, None),
    ):
        start = time.perf_counter()
        report = kd.check_image_folder(folder, full_decode=full, workers=workers)
        seconds = time.perf_counter() - start
        if not report.ok:
            raise RuntimeError(f"fake images reported bad:\n{report}")
        rows.append(
            {
                "mode": mode,
                "workers": workers or "auto",
                "files": report.checked,
                "seconds": round(seconds, 4),
                "files_per_s": round(report.checked / seconds, 1),
            }
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--smoke", action="store_true", help="tiny data, seconds-long (CI)")
    parser.add_argument(
        "--threads", type=int, default=0, help="tf.data threads (0: all cores, the default)"
    )
    parser.add_argument("--cifar-images", type=int, default=10_000)
    parser.add_argument("--imagenet-images", type=int, default=200)
    parser.add_argument("--image-size", type=int, nargs=2, default=(300, 400), metavar=("H", "W"))
    parser.add_argument("--cifar-batch", type=int, default=128)
    parser.add_argument("--imagenet-batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0, help="time budget per pipeline")
    parser.add_argument(
        "--strong", action="store_true", help="also time CIFAR with StrongAugment (slow)"
    )
    parser.add_argument(
        "--check-images",
        type=int,
        default=2000,
        help="small JPEGs (96x128) for timing check_image_folder (0: skip)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.cifar_images, args.imagenet_images, args.seconds = 1024, 16, 1.0
        args.imagenet_batch = 8
        args.check_images = min(args.check_images, 64)

    from keras_gdkd import data as kd
    from keras_gdkd.data import testing

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    used = args.threads or cores
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cifar = testing.write_fake_cifar100_python(tmp, args.cifar_images, 16)
        classes = 4
        testing.write_fake_image_folder(
            tmp / "imagenet" / "train",
            num_classes=classes,
            per_class=max(args.imagenet_images // classes, 1),
            size=tuple(args.image_size),
        )
        testing.write_fake_image_folder(
            tmp / "imagenet" / "val",
            num_classes=classes,
            per_class=max(args.imagenet_images // classes, 1),
            size=tuple(args.image_size),
            seed=1,
        )
        epochs = 1000  # long enough that the time budget, not the data, ends each run
        runs = [
            (
                "cifar100 train (archive)",
                kd.cifar100_train(
                    cifar["archive"], batch_size=args.cifar_batch, epochs=epochs
                ).dataset,
                args.cifar_batch,
            ),
            (
                "cifar100 test",
                kd.cifar100_test(cifar["archive"], batch_size=args.cifar_batch).repeat(),
                args.cifar_batch,
            ),
            (
                f"imagenet train (JPEG {args.image_size[0]}x{args.image_size[1]})",
                kd.imagenet_train(
                    tmp / "imagenet", batch_size=args.imagenet_batch, epochs=epochs
                ).dataset,
                args.imagenet_batch,
            ),
            (
                f"imagenet val (JPEG {args.image_size[0]}x{args.image_size[1]})",
                kd.imagenet_val(tmp / "imagenet", batch_size=args.imagenet_batch).repeat(),
                args.imagenet_batch,
            ),
        ]
        if args.strong:
            runs.append(
                (
                    "cifar100 train + StrongAugment",
                    kd.cifar100_train(
                        cifar["archive"],
                        batch_size=args.cifar_batch,
                        epochs=epochs,
                        strong_augment=True,
                    ).dataset,
                    args.cifar_batch,
                )
            )
        for name, dataset, batch in runs:
            stats = _time_pipeline(dataset, batch, 10**9, args.seconds, args.threads)
            stats.update(
                pipeline=name,
                batch_size=batch,
                images_per_s_per_core=round(stats["images_per_s"] / used, 1),
            )
            results.append(stats)
        checks = _time_checks(tmp / "check", args.check_images) if args.check_images else []

    print(f"threads: {used} of {cores} cores available to this process")
    header = (
        f"{'pipeline':38s} {'batch':>5s} {'img/s':>10s} {'img/s/core':>10s} {'1st batch s':>11s}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['pipeline']:38s} {r['batch_size']:5d} {r['images_per_s']:10.0f} "
            f"{r['images_per_s_per_core']:10.0f} {r['first_batch_s']:11.2f}"
        )
    for c in checks:
        print(
            f"check_image_folder {c['mode']:12s} workers={c['workers']!s:4s} {c['files']} files: "
            f"{c['seconds']:.3f} s ({c['files_per_s']:.0f} files/s)"
        )
    if args.json:
        import tensorflow as tf

        report = {
            "threads": used,
            "cores": cores,
            "smoke": args.smoke,
            "tensorflow": tf.__version__,
            "python": platform.python_version(),
            "results": results,
            "checks": checks,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
