"""The `keras-gdkd` command: distil, train a teacher, evaluate, check data, list presets, demo.

    keras-gdkd demo --output runs/demo          # offline: synthetic data, teacher, student
    keras-gdkd presets
    keras-gdkd distill --preset res32x4_res8x4 --method gdkd \\
        --teacher-weights resnet32x4_vanilla/ckpt_epoch_240.pth --data-dir ~/data --output runs/r8x4
    keras-gdkd train-teacher --model resnet32x4 --data-dir ~/data --output runs/teacher
    keras-gdkd evaluate runs/r8x4/model.keras --data-dir ~/data
    keras-gdkd check-data --dataset imagenet --data-dir ~/data/imagenet

The backend is Keras's: set `KERAS_BACKEND` (tensorflow, jax or torch). Running the same
command again resumes an interrupted run from its last good checkpoint. Expected errors print one
line and a hint and exit with status 2; `--debug` (or `KERAS_GDKD_DEBUG=1`) shows tracebacks.
Arguments are parsed before Keras is imported, so `--help` and argument errors are instant.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from keras_gdkd import __version__, presets
from keras_gdkd.analysis import command as analyze_command
from keras_gdkd.analysis import sweeps
from keras_gdkd.arguments import positive_float, positive_int

EXIT_ERROR = 2


def _add_data_args(parser: argparse.ArgumentParser, dataset_choice: bool = True) -> None:
    if dataset_choice:
        parser.add_argument("--dataset", choices=("cifar100", "imagenet"), default="cifar100")
    parser.add_argument(
        "--data-dir",
        help="folder holding the data files (cifar-100-python.tar.gz or its folder; ImageNet "
        "train/ and val/ class folders), or a tensorflow-datasets data_dir holding the prepared "
        "dataset (default: tfds's folder). No download happens: see `keras-gdkd demo` to try "
        "the tool on generated data",
    )
    parser.add_argument("--manual-dir", help="tfds manual download folder for imagenet2012")
    parser.add_argument("--seed", type=int, default=0, help="data order and augmentation seed")


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="run folder (resumes if it exists)")
    parser.add_argument("--epochs", type=positive_int, help="override the number of epochs")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help="override the (global) batch size; the learning rate scales linearly with it "
        "unless --lr is given",
    )
    parser.add_argument("--lr", type=positive_float, help="override the base learning rate")
    parser.add_argument(
        "--mixed-precision",
        choices=("bfloat16", "float16"),
        help="run the models under mixed_<dtype> (losses and logits stay float32)",
    )
    parser.add_argument(
        "--devices", nargs="+", help="devices for data-parallel training (default: all)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="resume even though the configuration differs from the run's first start",
    )
    parser.add_argument(
        "--check-data",
        action="store_true",
        help="scan every image/archive for damage before training (see `check-data`)",
    )
    _add_multi_host_args(parser)
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="0 silent, 1 progress bar, 2 one line per epoch",
    )


def _add_multi_host_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "several hosts (JAX)",
        "One process per host, each with the same command and its own --process-id. The "
        "values may instead come from KERAS_DISTRIBUTION_JOB_ADDRESSES, "
        "KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID with --multi-host.",
    )
    group.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0")
    group.add_argument("--num-processes", type=positive_int, help="number of processes")
    group.add_argument("--process-id", type=int, help="this process's index, 0 to N-1")
    group.add_argument(
        "--multi-host",
        action="store_true",
        help="join a cluster described by the KERAS_DISTRIBUTION_* variables",
    )


# Loss hyper-parameters settable from the command line: flag -> (type, help).
LOSS_FLAGS: dict[str, tuple[Any, str]] = {
    "temperature": (float, "softmax temperature T (every method)"),
    "k": (int, "size of the teacher's top set (gdkd, gdkd_v*; gdkd3: last rank of top-2..k)"),
    "w0": (float, "weight of the top-level term (gdkd, gdkd3, gdkd_v*)"),
    "w1": (float, "weight of the KL within the top set (gdkd, gdkd3, gdkd_v2)"),
    "w2": (float, "weight of the KL within the other classes (gdkd, gdkd3, gdkd_v3)"),
    "m1": (float, "factor of the teacher's top mass (gdkd_v1, gdkd_v3)"),
    "m2": (float, "factor of the teacher's other mass (gdkd_v1, gdkd_v2)"),
    "alpha": (float, "weight of TCKD (dkd)"),
    "beta": (float, "weight of NCKD (dkd) or of the inter-class relation (dist)"),
    "gamma": (float, "weight of the intra-class relation (dist)"),
}


def _add_loss_args(parser: argparse.ArgumentParser, description: str | None = None) -> None:
    group = parser.add_argument_group(
        "loss hyper-parameters",
        description
        or "Override the preset's value for the chosen --method; a parameter the method does "
        "not have is an error.",
    )
    for name, (kind, text) in LOSS_FLAGS.items():
        group.add_argument(f"--{name}", type=kind, metavar="N" if kind is int else "X", help=text)
    group.add_argument(
        "--strategy",
        choices=("best", "worst"),
        help="gdkd: the teacher's k largest (best) or smallest (worst) logits",
    )
    group.add_argument(
        "--standardize",
        action="store_true",
        default=None,
        help="z-score each sample's logits before the temperature (not dist)",
    )


def loss_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The loss hyper-parameters given on the command line (`--temperature 1` etc.)."""
    names = (*LOSS_FLAGS, "strategy", "standardize")
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keras-gdkd` (no Keras import)."""
    parser = argparse.ArgumentParser(
        prog="keras-gdkd",
        description="Knowledge distillation (GDKD, DKD, DIST, KD) with Keras 3 on TensorFlow, JAX "
        "or PyTorch (KERAS_BACKEND).",
    )
    parser.add_argument("--version", action="version", version=f"keras-gdkd {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show tracebacks and the backend's start-up logging",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("presets", help="list the presets or print one")
    p.add_argument("name", nargs="?", help="preset name, e.g. res32x4_res8x4")
    p.add_argument("--method", default="gdkd", choices=presets.METHODS)

    p = sub.add_parser("distill", help="distil a student from a trained teacher")
    p.add_argument("--preset", required=True, help="one of `keras-gdkd presets`")
    p.add_argument("--method", default="gdkd", choices=presets.METHODS)
    p.add_argument(
        "--teacher-weights",
        required=True,
        help="the teacher: a .keras file, or a PyTorch checkpoint (.pth/.pt) or .npz "
        "of the preset's teacher architecture",
    )
    p.add_argument("--student", help="override the preset's student architecture")
    _add_loss_args(p)
    _add_data_args(p, dataset_choice=False)
    _add_run_args(p)

    p = sub.add_parser("train-teacher", help="train a teacher with cross-entropy")
    p.add_argument("--model", required=True, help="architecture, e.g. resnet32x4")
    p.add_argument(
        "--strong-augment",
        action="store_true",
        help="CIFAR: RandAugment + random erasing (the authors' _aug teachers)",
    )
    _add_data_args(p)
    _add_run_args(p)

    p = sub.add_parser("evaluate", help="top-1 of a saved model on the validation set")
    p.add_argument("model", help="a .keras file (a model or a saved Distiller)")
    _add_data_args(p)
    p.add_argument("--batch-size", type=positive_int, default=256)

    p = sub.add_parser("check-data", help="scan a data folder for missing or damaged files")
    _add_data_args(p)
    p.add_argument("--full", action="store_true", help="decode every image (slow but thorough)")

    p = sub.add_parser(
        "analyze",
        help="measure and plot a teacher's and students' logits (the paper's analyses)",
        description=analyze_command.__doc__.split("\n")[0],
    )
    analyze_command.add_arguments(p)

    p = sub.add_parser(
        "sweep",
        help="short distillations over one loss hyper-parameter (or the method) and seeds",
    )
    sweeps.add_arguments(p)
    _add_loss_args(p, "Fix other hyper-parameters of every method's loss for all runs.")

    p = sub.add_parser(
        "demo",
        help="try everything offline: generated CIFAR-format data, a teacher, a GDKD student",
    )
    p.add_argument("--output", required=True, help="folder for the data and the two runs")
    p.add_argument("--epochs", type=positive_int, default=2, help="epochs of each run")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=2)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (0 ok, 2 expected error)."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("KERAS_GDKD_DEBUG", "") not in ("", "0")
    if not debug:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read when TensorFlow starts
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print("keras-gdkd: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, NotImplementedError) as error:
        if debug:
            raise
        print(f"keras-gdkd: error: {error}", file=sys.stderr)
        hint = getattr(error, "hint", None)
        print(f"hint: {hint}" if hint else "hint: rerun with --debug for the traceback",
              file=sys.stderr)  # fmt: skip
        return EXIT_ERROR


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "presets":
        if args.name:
            print(presets.get(args.name, args.method))
        else:
            for name in presets.available():
                p = presets.get(name)
                print(f"{name:<18} {p.dataset:<9} {p.teacher} -> {p.student}")
            print(f"\nEach preset exists for the methods {', '.join(presets.METHODS)}; "
                  "print one with `keras-gdkd presets NAME --method METHOD`.")  # fmt: skip
        return 0
    if args.command == "check-data":
        _start_quietly(not args.debug)
        return _check_data(args.dataset, args.data_dir, args.manual_dir, full=args.full)
    if args.command == "demo":
        _start_quietly(not args.debug)
        return _demo(Path(args.output), args.epochs, args.verbose)
    if args.command == "analyze":
        _start_quietly(not args.debug)
        return analyze_command.main(args)
    if args.command == "sweep":
        args.loss_overrides = loss_overrides(args)
        if not args.plot_only:
            _start_quietly(not args.debug)
        return sweeps.main(args)

    if args.command == "distill":
        # Checked before anything starts or is written: a loss parameter the method lacks, or
        # a value it cannot use, is an argument error.
        preset = presets.get(args.preset, args.method)
        preset = preset.replace(loss_config={**preset.loss_config, **loss_overrides(args)})
    if args.command in ("distill", "train-teacher"):
        _join_cluster(args)
    _start_quietly(not args.debug)
    from keras_gdkd import train

    if args.command == "evaluate":
        data = train.DataSpec(args.dataset, args.data_dir, args.manual_dir, args.seed)
        print(json.dumps(train.evaluate(args.model, data=data, batch_size=args.batch_size)))
        return 0

    common = dict(output=args.output, epochs=args.epochs, batch_size=args.batch_size,
                  learning_rate=args.lr, mixed_precision=args.mixed_precision,
                  devices=args.devices, verbose=args.verbose, force=args.force)  # fmt: skip
    if args.command == "distill":
        data = train.DataSpec(preset.dataset, args.data_dir, args.manual_dir, args.seed)
        if args.check_data and _check_data(preset.dataset, args.data_dir, args.manual_dir):
            return EXIT_ERROR
        if args.verbose:
            used = train.resolve_preset(preset, epochs=args.epochs, batch_size=args.batch_size,
                                        learning_rate=args.lr, student=args.student)  # fmt: skip
            print(used, file=sys.stderr)
        if args.student:
            preset = train.resolve_preset(preset, student=args.student)
        results = train.distill(preset, data=data, teacher_weights=args.teacher_weights, **common)
    else:
        data = train.DataSpec(args.dataset, args.data_dir, args.manual_dir, args.seed,
                              args.strong_augment)  # fmt: skip
        if args.check_data and _check_data(args.dataset, args.data_dir, args.manual_dir):
            return EXIT_ERROR
        given = {k: v for k, v in common.items() if v is not None}
        recipe = presets.teacher_recipe(data.dataset)
        if args.verbose:
            shown = {**recipe, **{k: v for k, v in given.items() if k in recipe}}
            print(f"Teacher {args.model} on {data.dataset}: "
                  + ", ".join(f"{k}={v}" for k, v in shown.items()), file=sys.stderr)  # fmt: skip
        results = train.train_teacher(args.model, data=data, **{**recipe, **given})
    print(json.dumps(results, indent=2))
    return 0


@contextlib.contextmanager
def _quiet_native_logging(quiet: bool):
    """Silences what native libraries print to stderr while they load (TensorFlow's start-up
    lines ignore TF_CPP_MIN_LOG_LEVEL). Python errors still surface as exceptions, and a crash
    of a native library (a segmentation fault) still prints its traceback to the real stderr."""
    if not quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    real_stderr = os.fdopen(os.dup(saved), "w")
    was_enabled = faulthandler.is_enabled()
    faulthandler.enable(file=real_stderr)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        faulthandler.disable()
        if was_enabled:  # as before, on the process's own stderr (sys.stderr may be a capture)
            with contextlib.suppress(ValueError, OSError):
                faulthandler.enable(file=sys.__stderr__)
        real_stderr.close()


def _start_quietly(quiet: bool) -> None:
    """Starts Keras, its backend and tf.data with their native start-up lines silenced.

    TensorFlow prints them when it loads and again when it runs its first op, whatever
    TF_CPP_MIN_LOG_LEVEL says, so both happen here (the one TensorFlow call of this module).
    """
    with _quiet_native_logging(quiet):
        import tensorflow as tf  # the data pipelines' engine on every backend

        import keras_gdkd.train  # noqa: F401  (Keras and the backend)

        tf.zeros(())


def _join_cluster(args: argparse.Namespace) -> None:
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if not args.multi_host and all(v is None for v in explicit):
        return
    from keras_gdkd import parallel

    parallel.initialize_multi_host(args.coordinator, args.num_processes, args.process_id)


def _check_data(dataset: str, data_dir: str | None, manual_dir: str | None, full=False) -> int:
    from keras_gdkd import data

    start = time.perf_counter()
    report = data.check_data(dataset, data_dir, full_decode=full, manual_dir=manual_dir)
    print(report, file=sys.stderr)
    print(f"checked in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0 if report.ok else EXIT_ERROR


def _demo(output: Path, epochs: int, verbose: int) -> int:
    """Generated CIFAR-format data, a small teacher, then a GDKD student, all in ``output``."""
    from keras_gdkd import train
    from keras_gdkd.data import testing

    start = time.perf_counter()
    data_dir = output / "data"
    if not (data_dir / "cifar-100-python.tar.gz").exists():
        testing.write_demo_cifar100(data_dir, num_train=1024, num_test=256, seed=0)
    data = train.DataSpec("cifar100", str(data_dir))
    teacher = train.train_teacher("resnet14", data=data, output=output / "teacher",
                                  epochs=epochs, batch_size=64, learning_rate=0.05,
                                  verbose=verbose)  # fmt: skip
    preset = train.resolve_preset(presets.get("res56_res20", "gdkd"), student="resnet8")
    student = train.distill(preset, data=data,
                            teacher_weights=str(output / "teacher" / "model.keras"),
                            output=output / "student", epochs=epochs, batch_size=64,
                            verbose=verbose)  # fmt: skip
    print(f"demo finished in {time.perf_counter() - start:.0f} s on generated data "
          f"({data_dir}): teacher resnet14 top-1 {teacher['best_top1']:.1f}%, "
          f"GDKD student resnet8 top-1 {student['best_top1']:.1f}%. Outputs: "
          f"{output / 'teacher'}, {output / 'student'} (results.json, curves.png, "
          "model.keras, best.keras).")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
