"""The ``keras-gdkd`` command: distil, train a teacher, evaluate, list presets.

    keras-gdkd presets
    keras-gdkd distill --preset res32x4_res8x4 --method gdkd \\
        --teacher-weights resnet32x4_vanilla/ckpt_epoch_240.pth --data-dir ~/data --output runs/r8x4
    keras-gdkd train-teacher --model resnet32x4 --data-dir ~/data --output runs/teacher
    keras-gdkd evaluate runs/r8x4/model.keras --data-dir ~/data

The backend is Keras's: set ``KERAS_BACKEND`` (tensorflow, jax or torch). Re-running the same
command resumes an interrupted run from its last finished epoch.
"""

from __future__ import annotations

import argparse
import json
import sys

from keras_gdkd import presets


def _add_data_args(parser: argparse.ArgumentParser, dataset_choice: bool = True) -> None:
    if dataset_choice:
        parser.add_argument("--dataset", choices=("cifar100", "imagenet"), default="cifar100")
    parser.add_argument(
        "--data-dir",
        help="folder holding the data files (cifar-100-python.tar.gz or its folder; ImageNet "
        "train/ and val/ class folders), or a tensorflow-datasets data_dir (default: tfds's)",
    )
    parser.add_argument("--manual-dir", help="tfds manual download folder for imagenet2012")
    parser.add_argument("--seed", type=int, default=0, help="data order and augmentation seed")


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="run folder (resumes if it exists)")
    parser.add_argument("--epochs", type=int, help="override the number of epochs")
    parser.add_argument("--batch-size", type=int, help="override the (global) batch size")
    parser.add_argument("--lr", type=float, help="override the base learning rate")
    parser.add_argument(
        "--mixed-precision",
        choices=("bfloat16", "float16"),
        help="run the models under mixed_<dtype> (losses stay float32)",
    )
    parser.add_argument(
        "--devices",
        nargs="+",
        help="devices for data-parallel training (default: all accelerators)",
    )
    parser.add_argument(
        "--multi-host",
        action="store_true",
        help="JAX: initialise jax.distributed (keras.distribution.initialize)",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=1,
        help="0 silent, 1 progress bar, 2 one line per epoch",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-gdkd", description="Knowledge distillation (GDKD, DKD, KD) with Keras 3."
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
    p.add_argument("--batch-size", type=int, default=256)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "presets":
        if args.name:
            print(presets.get(args.name, args.method))
        else:
            for name in presets.available():
                p = presets.get(name)
                print(f"{name:<18} {p.dataset:<9} {p.teacher} -> {p.student}")
        return 0

    from keras_gdkd import parallel, train  # heavy imports only for real work

    if getattr(args, "multi_host", False):
        parallel.initialize_multi_host()
    if args.command == "evaluate":
        data = train.DataSpec(args.dataset, args.data_dir, args.manual_dir, args.seed)
        print(json.dumps(train.evaluate(args.model, data=data, batch_size=args.batch_size)))
        return 0

    common = dict(output=args.output, epochs=args.epochs, batch_size=args.batch_size,
                  learning_rate=args.lr, mixed_precision=args.mixed_precision,
                  devices=args.devices, verbose=args.verbose)  # fmt: skip
    if args.command == "distill":
        preset = presets.get(args.preset, args.method)
        if args.student:
            preset = preset.replace(student=args.student)
        data = train.DataSpec(preset.dataset, args.data_dir, args.manual_dir, args.seed)
        print(preset)
        results = train.distill(preset, data=data, teacher_weights=args.teacher_weights, **common)
    else:
        data = train.DataSpec(args.dataset, args.data_dir, args.manual_dir, args.seed,
                              args.strong_augment)  # fmt: skip
        given = {k: v for k, v in common.items() if v is not None}
        # torchvision's ImageNet recipe; the CIFAR recipe is train_teacher's default
        defaults = (dict(epochs=90, batch_size=256, learning_rate=0.1, lr_decay_epochs=(30, 60),
                         weight_decay=1e-4) if data.dataset == "imagenet" else {})  # fmt: skip
        results = train.train_teacher(args.model, data=data, **{**defaults, **given})
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
