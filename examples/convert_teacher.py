"""Convert a PyTorch teacher checkpoint into a Keras ``.keras`` model.

Examples::

    # A CIFAR-100 teacher of the DKD/CRD release (cifar_teachers.tar):
    python examples/convert_teacher.py resnet32x4_vanilla/ckpt_epoch_240.pth resnet32x4 \\
        resnet32x4.keras
    # torchvision's ImageNet ResNet-34:
    python examples/convert_teacher.py resnet34-b627a593.pth resnet34 resnet34.keras

``.pth`` files need PyTorch (the CPU build is enough); ``.npz`` files of torch-layout arrays do not.
"""

from __future__ import annotations

import argparse

from keras_gdkd.models import available, export_model, get_model, load_torch_weights


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Load a PyTorch checkpoint into a keras_gdkd model and save it as .keras."
    )
    parser.add_argument("source", help="checkpoint: .pth/.pt (needs torch) or .npz")
    parser.add_argument("name", choices=available(), metavar="NAME", help="architecture name")
    parser.add_argument("output", help="where to write the .keras file")
    parser.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classifier size (default: 100 for CIFAR models, 1000 for ImageNet models)",
    )
    parser.add_argument(
        "--non-strict",
        action="store_true",
        help="load the keys that match and report the rest instead of failing",
    )
    args = parser.parse_args(argv)

    model = get_model(args.name, num_classes=args.num_classes)
    report = load_torch_weights(model, args.source, strict=not args.non_strict)
    model.summary(line_length=100, show_trainable=False)
    print(f"{args.source}: {report}")
    for label, keys in (
        ("missing", report.missing),
        ("unexpected", report.unexpected),
        ("mismatched", report.mismatched),
    ):
        for key in keys:
            print(f"  {label}: {key}")
    # Core Keras layers only: the file loads with keras.saving.load_model, without keras_gdkd.
    export_model(model).save(args.output)
    print(f"saved {args.name} ({model.count_params():,} weights) to {args.output}")


if __name__ == "__main__":
    main()
