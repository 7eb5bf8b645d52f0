"""`keras-gdkd analyze`: a teacher's and students' logits on a dataset, measured and plotted.

    keras-gdkd analyze --teacher runs/teacher/model.keras \\
        --student kd=runs/kd/model.keras --student gdkd=runs/gdkd/model.keras \\
        --student init=@resnet8x4 --preset res32x4_res8x4 --method gdkd \\
        --data-dir ~/data --output runs/analysis

writes ``OUT/analysis.json``, ``OUT/arrays.npz``, ``OUT/figures/*.png`` and the logits of every
model in ``OUT/logits/{teacher,LABEL}.npz`` (npz keys ``logits`` and ``labels``). With
``--logits-dir DIR`` the logits found there are reused (a model whose file is missing is run
and its logits are written there), so a second analysis of the same models needs no inference.

Arguments are parsed without importing Keras (``--help`` is instant); Keras starts in
:func:`main`.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keras_gdkd.arguments import non_negative_float, positive_float, positive_int
from keras_gdkd.runs.errors import RunError

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
TEACHER = "teacher"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the options of `keras-gdkd analyze` to ``parser`` (imports no Keras).

    Args:
        parser: the (sub)parser of the ``analyze`` command.
    """
    models = parser.add_argument_group("models")
    models.add_argument(
        "--teacher",
        metavar="PATH[@ARCH]",
        help="the teacher: a .keras file, or a PyTorch checkpoint (.pth/.pt) or .npz followed "
        "by @ARCH, its architecture (default: the preset's teacher). Optional when "
        "--logits-dir holds teacher.npz",
    )
    models.add_argument(
        "--student",
        action="append",
        default=[],
        metavar="LABEL=PATH[@ARCH]",
        help="a student, repeatable: LABEL=model.keras, LABEL=ckpt.pth@ARCH, or LABEL=@ARCH for "
        "a randomly initialised ARCH (seeded by --seed: the untrained, 'epoch 0' state). "
        "A bare LABEL reads LABEL.npz from --logits-dir. Without any --student, every npz "
        "in --logits-dir except teacher.npz is a student",
    )
    models.add_argument("--seed", type=int, default=0, help="seed of randomly initialised students")

    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=("cifar100", "imagenet"),
        help="default: the preset's dataset, else cifar100",
    )
    data.add_argument(
        "--data-dir",
        help="folder holding the data (cifar-100-python.tar.gz or its folder; ImageNet "
        "train/ and val/ class folders) or a tensorflow-datasets data_dir",
    )
    data.add_argument("--manual-dir", help="tfds manual download folder for imagenet2012")
    data.add_argument(
        "--split",
        choices=("test", "train"),
        default="test",
        help="test: the evaluation set (ImageNet: validation); train: CIFAR-100's training "
        "images, without augmentation",
    )
    data.add_argument("--max-examples", type=positive_int, help="analyse the first N images only")
    data.add_argument(
        "--batch-size", type=positive_int, default=256, help="inference batch size (default 256)"
    )

    loss = parser.add_argument_group(
        "loss",
        "The GDKD parameters the analysis measures with (top-k set, weights, loss "
        "temperature). Default: GDKD's k=5, w0=1, w1=1, w2=8, T=4; --preset/--method take "
        "them from a recipe, and the explicit options below override single values.",
    )
    loss.add_argument("--preset", help="a preset name (`keras-gdkd presets`)")
    loss.add_argument("--method", help="the preset's method (default gdkd)")
    loss.add_argument("--k", type=positive_int, help="size of the teacher's top-k set")
    loss.add_argument("--w0", type=non_negative_float, help="weight of the top-k/rest term")
    loss.add_argument("--w1", type=non_negative_float, help="weight of the within-top-k term")
    loss.add_argument("--w2", type=non_negative_float, help="weight of the within-rest term")
    loss.add_argument("--temperature", type=positive_float, help="the loss temperature")

    analysis = parser.add_argument_group("analysis")
    analysis.add_argument(
        "--temperatures",
        nargs="+",
        type=positive_float,
        default=[1.0, 4.0],
        metavar="T",
        help="temperatures of the teacher statistics and KL values (default: 1 4)",
    )
    analysis.add_argument(
        "--ratio-threshold",
        type=positive_float,
        default=2.0,
        help="the autok rule's ratio threshold and n_within's ratio (default 2)",
    )
    analysis.add_argument(
        "--figure-style",
        choices=("dkd", "gdkd"),
        default="dkd",
        help="class-mean heatmaps: dkd = raw-logit class means on one colour scale shared by "
        "the students (comparable); gdkd = softmax class means at T=1, each panel scaled by "
        "its own maximum times 4, as the GDKD authors plot them",
    )
    analysis.add_argument(
        "--logits-dir",
        help="reuse the npz logits in this folder ({teacher,LABEL}.npz, keys logits and "
        "labels); missing ones are computed and written there",
    )
    parser.add_argument(
        "--output", required=True, help="folder for analysis.json, arrays.npz and figures/"
    )


@dataclass(frozen=True)
class ModelSpec:
    """Where one model of the analysis comes from.

    Attributes:
        label: ``"teacher"`` or the student's label.
        path: a weights file, or ``None`` for a random initialisation or logits only.
        arch: the architecture, needed for ``.pth``/``.pt``/``.npz`` files and random inits.
    """

    label: str
    path: str | None
    arch: str | None

    @property
    def random_init(self) -> bool:
        return self.path is None and self.arch is not None

    def describe(self) -> str:
        if self.random_init:
            return f"random init {self.arch}"
        if self.path is None:
            return "logits file"
        return self.path + (f"@{self.arch}" if self.arch else "")


def parse_model(text: str, label: str | None = None) -> ModelSpec:
    """Parses ``PATH[@ARCH]`` (with ``label``) or ``LABEL=PATH[@ARCH]`` / ``LABEL=@ARCH`` /
    ``LABEL``.

    Raises:
        RunError: an empty or unusable label, or nothing after ``=``.
    """
    if label is None:
        label, sep, rest = text.partition("=")
        if not sep:
            rest = ""
        elif not rest:
            raise RunError(
                f"--student {text}: nothing after '='",
                hint="write LABEL=PATH, LABEL=PATH@ARCH or LABEL=@ARCH",
            )
        if not _LABEL.match(label) or label == TEACHER:
            raise RunError(
                f"--student {text}: the label {label!r} cannot name a file",
                hint="use letters, digits and _ . + - (not 'teacher'), e.g. --student "
                "gdkd=runs/gdkd/model.keras",
            )
    else:
        rest = text
    if not rest:
        return ModelSpec(label, None, None)
    path, sep, arch = rest.rpartition("@")
    if not sep:
        path, arch = rest, ""
    if sep and not arch:
        raise RunError(f"{text}: no architecture after '@'", hint="e.g. ckpt.pth@resnet8x4")
    return ModelSpec(label, path or None, arch or None)


def _loss_from_args(args: argparse.Namespace):
    """The loss object the analysis measures with, or ``None`` for GDKD's defaults."""
    from keras_gdkd import presets
    from keras_gdkd.losses import objects

    overrides = {
        name: getattr(args, name)
        for name in ("k", "w0", "w1", "w2", "temperature")
        if getattr(args, name) is not None
    }
    if args.preset is None and args.method is None and not overrides:
        return None
    try:
        if args.preset is not None:
            preset = presets.get(args.preset, args.method or "gdkd")
            base = (
                preset.loss
                if hasattr(preset.loss, "get_config")
                else objects.get(preset.method, **preset.loss_kwargs())
            )
        else:
            base = objects.get(args.method or "gdkd")
        if not overrides:
            return base
        if hasattr(base, "replace"):
            return base.replace(**overrides)
        return objects.get(_loss_name(base), **{**base.get_config(), **overrides})
    except (TypeError, ValueError, KeyError) as error:
        raise RunError(
            f"invalid loss settings: {error}",
            hint="see `keras-gdkd presets`; --k/--w0/--w1/--w2 apply to the GDKD methods",
        ) from error


def _loss_name(loss) -> str:
    return getattr(loss, "name", None) or type(loss).__name__.lower()


def _dataset_name(args: argparse.Namespace) -> str:
    if args.dataset is not None:
        return args.dataset
    if args.preset is not None:
        from keras_gdkd import presets

        return presets.get(args.preset, args.method or "gdkd").dataset
    return "cifar100"


def _teacher_arch(args: argparse.Namespace) -> str | None:
    if args.preset is None:
        return None
    from keras_gdkd import presets

    return presets.get(args.preset, args.method or "gdkd").teacher


def _specs(args: argparse.Namespace, logits_dir: Path | None) -> tuple[ModelSpec, list[ModelSpec]]:
    teacher = (
        parse_model(args.teacher, label=TEACHER) if args.teacher else ModelSpec(TEACHER, None, None)
    )
    if teacher.path is not None and teacher.arch is None:
        teacher = ModelSpec(TEACHER, teacher.path, _teacher_arch(args))
    if teacher.random_init:
        raise RunError(
            "--teacher @ARCH would be an untrained teacher",
            hint="give the teacher's weights: --teacher PATH[@ARCH]",
        )
    students = [parse_model(text) for text in args.student]
    if not students and logits_dir is not None and logits_dir.is_dir():
        students = [
            ModelSpec(p.stem, None, None)
            for p in sorted(logits_dir.glob("*.npz"))
            if p.stem != TEACHER and _LABEL.match(p.stem)
        ]
    if not students:
        raise RunError(
            "no student to analyse",
            hint="add --student LABEL=PATH (repeatable), or --logits-dir with LABEL.npz files",
        )
    labels = [s.label for s in students]
    repeated = sorted({x for x in labels if labels.count(x) > 1})
    if repeated:
        raise RunError(
            f"student label(s) given twice: {', '.join(repeated)}",
            hint="give every --student its own LABEL",
        )
    return teacher, students


def _check_spec(spec: ModelSpec, logits_dir: Path | None) -> None:
    """Raises ``RunError`` before Keras starts when a model cannot be found or built."""
    cached = logits_dir is not None and (logits_dir / f"{spec.label}.npz").is_file()
    if cached:
        return
    what = "--teacher" if spec.label == TEACHER else f"--student {spec.label}"
    if spec.path is None and spec.arch is None:
        where = f"{logits_dir}/{spec.label}.npz" if logits_dir else "--logits-dir"
        raise RunError(
            f"{what}: no model given and no logits in {where}",
            hint="give the model file, e.g. --student LABEL=model.keras, or --teacher T.keras",
        )
    if spec.path is None:
        return
    path = Path(spec.path)
    if not path.is_file():
        raise RunError(
            f"{what}: weights file not found: {path}",
            hint="check the path (relative paths start in the current folder)",
        )
    if path.suffix not in (".keras", ".pth", ".pt", ".npz"):
        raise RunError(
            f"{what}: unsupported weights file {path.name}",
            hint="expected a .keras model, or a .pth/.pt/.npz checkpoint with @ARCH",
        )
    if path.suffix != ".keras" and spec.arch is None:
        raise RunError(
            f"{what}: {path.name} holds weights only; its architecture is needed",
            hint=f"write {spec.path}@ARCH, e.g. {spec.path}@resnet8x4",
        )


def _build_model(spec: ModelSpec, num_classes: int, dataset: str, seed: int):
    import keras

    from keras_gdkd import models, train

    if spec.arch is not None and spec.arch not in models.available():
        raise RunError(
            f"unknown architecture {spec.arch!r} for {spec.label}",
            hint=f"expected one of {', '.join(models.available())}",
        )
    if spec.random_init:
        keras.utils.set_random_seed(seed)
        shape = (224, 224, 3) if dataset == "imagenet" else (32, 32, 3)
        return models.get_model(spec.arch, num_classes=num_classes, input_shape=shape)
    return train.load_model_weights(spec.path, spec.arch or "", num_classes)


def _dataset(args: argparse.Namespace, dataset: str):
    from keras_gdkd import data, train

    spec = train.DataSpec(dataset, args.data_dir, args.manual_dir)
    try:
        if args.split == "test":
            return spec.validation(args.batch_size, spec.class_names())
        source, tfds_dir = spec.source()
        return data.cifar100_test(
            source, batch_size=args.batch_size, split="train", data_dir=tfds_dir
        )
    except RunError:
        raise
    except ValueError as error:
        raise RunError(str(error), hint="check --dataset, --data-dir and --manual-dir") from error


def main(args: argparse.Namespace) -> int:
    """Runs `keras-gdkd analyze` with parsed ``args``; returns the exit status (0).

    Raises:
        RunError: bad arguments, missing files, logits that do not belong together.
    """
    output = Path(args.output)
    logits_dir = Path(args.logits_dir) if args.logits_dir else None
    if logits_dir is not None and logits_dir.exists() and not logits_dir.is_dir():
        raise RunError(f"--logits-dir {logits_dir} is a file", hint="give a folder")
    teacher, students = _specs(args, logits_dir)
    for spec in (teacher, *students):
        _check_spec(spec, logits_dir)
    dataset = _dataset_name(args)
    if args.split == "train" and dataset != "cifar100":
        raise RunError(
            "--split train is available for CIFAR-100 only",
            hint="analyse ImageNet on its validation set (--split test)",
        )

    import keras
    import numpy as np

    from keras_gdkd.analysis import logits as logits_io
    from keras_gdkd.analysis import report

    loss = _loss_from_args(args)
    store = logits_dir if logits_dir is not None else output / "logits"
    split = "validation" if dataset == "imagenet" and args.split == "test" else args.split
    specs = [teacher, *students]
    found: dict[str, Any] = {}
    labels = None
    for spec in specs:
        path = store / f"{spec.label}.npz"
        if logits_dir is not None and path.is_file():
            try:
                found[spec.label], file_labels = logits_io.load_logits(path)
            except (OSError, KeyError, ValueError) as error:
                raise RunError(
                    f"cannot read logits {path}: {error}",
                    hint="delete the file to compute it again",
                ) from error
            labels = _same_labels(labels, file_labels, path)
    missing = [spec for spec in specs if spec.label not in found]
    if missing:
        batches = _dataset(args, dataset)  # a missing data folder fails before any model loads
        num_classes = _num_classes(found, dataset)
        models = {
            spec.label: _build_model(spec, num_classes, dataset, args.seed) for spec in missing
        }
        print(
            f"analyze: running {', '.join(models)} on {dataset} {split}"
            + (f" (first {args.max_examples} images)" if args.max_examples else ""),
            file=sys.stderr,
            flush=True,
        )
        computed, new_labels = logits_io.collect_logits(
            models, batches, max_examples=args.max_examples
        )
        labels = _same_labels(labels, new_labels, f"{dataset} {split}")
        store.mkdir(parents=True, exist_ok=True)
        for label, values in computed.items():
            logits_io.save_logits(store / f"{label}.npz", values, new_labels)
            found[label] = values
    shapes = {label: np.shape(found[label]) for label in found}
    if len(set(shapes.values())) != 1:
        raise RunError(
            "the logits do not belong together: shapes "
            + ", ".join(f"{k} {v}" for k, v in shapes.items()),
            hint="compute them on the same data (delete the odd files from --logits-dir)",
        )
    meta = {
        "dataset": dataset,
        "split": split,
        "data_dir": args.data_dir,
        "max_examples": args.max_examples,
        "sources": {spec.label: spec.describe() for spec in specs},
        "logits_dir": str(store),
        "seed": args.seed,
        "backend": keras.backend.backend(),
    }
    try:
        results = report.analyze_logits(
            found[TEACHER],
            {s.label: found[s.label] for s in students},
            labels,
            loss=loss,
            temperatures=tuple(args.temperatures),
            ratio_threshold=args.ratio_threshold,
            figure_style=args.figure_style,
            output=output,
            meta=meta,
        )
    except RunError:
        raise
    except ValueError as error:
        raise RunError(
            str(error), hint="check --k and the loss options against the number of classes"
        ) from error
    _summary(results, output)
    return 0


def _num_classes(found: dict, dataset: str) -> int:
    for values in found.values():
        return int(values.shape[-1])
    return 100 if dataset == "cifar100" else 1000


def _same_labels(known, new, where):
    import numpy as np

    new = np.asarray(new)
    if known is not None and (known.shape != new.shape or not np.array_equal(known, new)):
        raise RunError(
            f"the labels of {where} differ from those of the other logits "
            f"({known.shape[0]} vs {new.shape[0]} examples)",
            hint="all logits must come from the same data, split and --max-examples; delete "
            "the stale files from --logits-dir",
        )
    return new


def _summary(results: dict, output: Path) -> None:
    meta = results["meta"]
    lines = [
        f"analyze: {meta['num_examples']} examples, {meta['num_classes']} classes; "
        f"wrote {output / 'analysis.json'}"
    ]
    for label, student in results["students"].items():
        agreement = student["agreement"]
        parts = [
            f"top-1 {_pct(agreement.get('student_top1'))}",
            f"agreement {_pct(agreement.get('top1_agreement'))}",
        ]
        lines.append(f"  {label}: " + ", ".join(parts))
    if meta.get("figures"):
        lines.append(f"  figures: {', '.join(meta['figures'])} in {output / 'figures'}")
    elif meta.get("figures_note"):
        lines.append(f"  {meta['figures_note']}")
    print("\n".join(lines), file=sys.stderr)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f}%"


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser for ``python -m keras_gdkd.analysis.command``."""
    parser = argparse.ArgumentParser(prog="keras-gdkd analyze", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return parser


if __name__ == "__main__":
    parsed = build_parser().parse_args()
    try:
        sys.exit(main(parsed))
    except ValueError as err:
        print(f"keras-gdkd: error: {err}", file=sys.stderr)
        hint = getattr(err, "hint", None)
        print(f"hint: {hint}" if hint else "hint: rerun with KERAS_GDKD_DEBUG=1", file=sys.stderr)
        sys.exit(2)
