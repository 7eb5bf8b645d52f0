"""Run orchestration: teacher training, distillation and evaluation into an output folder.

Every run writes to ``output/``:

- ``backup/``: Keras's ``BackupAndRestore`` state (weights, optimizer, epoch), saved every epoch;
  running the same command again resumes from the last finished epoch. The data stream is
  rebuilt from that epoch, and because every shuffle and augmentation draw follows from
  (seed, epoch, example), a resumed run sees exactly the batches an uninterrupted one would.
- ``log.csv`` (``CSVLogger``) and ``tensorboard/`` (``TensorBoard``);
- ``results.json`` (preset, method, backend, best and last top-1, wall time, images/s);
- ``curves.png``: loss and accuracy per epoch;
- ``model.keras``: the trained model (for distillation: the student alone).
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from keras_gdkd import models, optimizers, parallel, presets
from keras_gdkd.distiller import Distiller
from keras_gdkd.losses import objects as loss_objects


@dataclass(frozen=True)
class DataSpec:
    """Where the data comes from.

    ``data_dir`` is either a folder holding the files (CIFAR-100: ``cifar-100-python.tar.gz``
    or its extracted folder; ImageNet: ``train/<class>/`` and ``val/<class>/``) or a
    tensorflow-datasets ``data_dir`` (``None``: tfds's default). ``manual_dir`` is tfds's
    manual download folder for ``imagenet2012``.
    """

    dataset: str = "cifar100"
    data_dir: str | None = None
    manual_dir: str | None = None
    seed: int = 0
    strong_augment: bool = False

    def __post_init__(self):
        if self.dataset not in ("cifar100", "imagenet"):
            raise ValueError(f"dataset must be 'cifar100' or 'imagenet'; got {self.dataset!r}.")

    def source(self) -> tuple[str, str | None]:
        """(source for keras_gdkd.data: "tfds" or a path, tfds data_dir)."""
        if self.data_dir is None:
            return "tfds", None
        root = Path(self.data_dir)
        if self.dataset == "cifar100":
            files = [root / "cifar-100-python", root / "cifar-100-python.tar.gz", root / "train"]
            holds_files = root.is_file() or any(p.exists() for p in files)
        else:
            holds_files = (root / "train").is_dir() or (root / "val").is_dir()
        return (str(root), None) if holds_files else ("tfds", str(root))

    def train(self, batch_size: int, epochs: int, initial_epoch: int):
        from keras_gdkd import data

        source, data_dir = self.source()
        if self.dataset == "cifar100":
            return data.cifar100_train(
                source, batch_size=batch_size, epochs=epochs, initial_epoch=initial_epoch,
                seed=self.seed, data_dir=data_dir, strong_augment=self.strong_augment,
            )  # fmt: skip
        if self.strong_augment:
            raise ValueError("strong augmentation is available for CIFAR-100 only.")
        return data.imagenet_train(
            source, batch_size=batch_size, epochs=epochs, initial_epoch=initial_epoch,
            seed=self.seed, data_dir=data_dir, manual_dir=self.manual_dir,
        )  # fmt: skip

    def validation(self, batch_size: int = 256):
        from keras_gdkd import data

        source, data_dir = self.source()
        if self.dataset == "cifar100":
            return data.cifar100_test(source, batch_size=batch_size, data_dir=data_dir)
        return data.imagenet_val(
            source, batch_size=batch_size, data_dir=data_dir, manual_dir=self.manual_dir
        )

    @property
    def num_classes(self) -> int:
        return 100 if self.dataset == "cifar100" else 1000


def load_model_weights(source: str, name: str, num_classes: int) -> keras.Model:
    """A ``.keras`` file as saved, or architecture ``name`` filled from a PyTorch checkpoint
    (``.pth``/``.pt``) or ``.npz`` through :func:`keras_gdkd.models.load_torch_weights`."""
    path = Path(source)
    if not path.exists():
        raise ValueError(f"Weights file not found: {path}.")
    if path.suffix == ".keras":
        return keras.saving.load_model(path, compile=False)
    if path.suffix not in (".pth", ".pt", ".npz"):
        raise ValueError(
            f"Unsupported weights file {path.name}: expected a .keras model, a PyTorch "
            "checkpoint (.pth/.pt) or a .npz of PyTorch-keyed arrays."
        )
    model = models.get_model(name, num_classes=num_classes)
    models.load_torch_weights(model, str(path))
    return model


def distill(
    preset: presets.Preset,
    *,
    data: DataSpec,
    teacher_weights: str,
    output: str | Path,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    mixed_precision: str | None = None,
    devices: list[str] | None = None,
    verbose: str | int = "auto",
) -> dict[str, Any]:
    """Distil ``preset.student`` from a trained teacher; returns the results dict."""
    overrides = {
        k: v
        for k, v in (("epochs", epochs), ("batch_size", batch_size),
                     ("learning_rate", learning_rate))
        if v is not None
    }  # fmt: skip
    run = preset.replace(**overrides)
    if data.dataset != run.dataset:
        raise ValueError(f"Preset {run.name} is for {run.dataset}, not {data.dataset}.")
    if run.method not in ("gdkd", "gdkd3", "dkd", "kd"):
        raise ValueError(f"Unknown method {run.method!r}.")

    def build(steps_per_epoch: int) -> keras.Model:
        teacher = load_model_weights(teacher_weights, run.teacher, run.num_classes)
        student = models.get_model(run.student, num_classes=run.num_classes)
        distiller = Distiller(
            parallel.sync_batchnorm(teacher),
            parallel.sync_batchnorm(student),
            loss=loss_objects.get(run.method, **run.loss_kwargs()),
            ce_weight=run.ce_weight,
            distill_weight=run.distill_weight,
            warmup_epochs=run.warmup_epochs,
        )
        # The learning rate is the preset's for the preset's batch, scaled linearly otherwise.
        optimizer = optimizers.make_optimizer(run, steps_per_epoch, batch_size=run.batch_size)
        distiller.compile(optimizer=optimizer, metrics=["accuracy"])
        return distiller

    meta = {"preset": run.name, "method": run.method, "teacher": run.teacher,
            "teacher_weights": str(teacher_weights), "student": run.student,
            "config": run.to_dict()}  # fmt: skip
    return _run(build, data, run.batch_size, run.epochs, Path(output), meta, mixed_precision,
                devices, verbose, export=lambda m: m.student)  # fmt: skip


def train_teacher(
    model_name: str,
    *,
    data: DataSpec,
    output: str | Path,
    epochs: int = 240,
    batch_size: int = 64,
    learning_rate: float = 0.05,
    lr_decay_epochs: tuple[int, ...] = (150, 180, 210),
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    mixed_precision: str | None = None,
    devices: list[str] | None = None,
    verbose: str | int = "auto",
) -> dict[str, Any]:
    """Train ``model_name`` with cross-entropy (default: the CIFAR teachers' recipe)."""

    def build(steps_per_epoch: int) -> keras.Model:
        model = parallel.sync_batchnorm(models.get_model(model_name, data.num_classes))
        schedule = optimizers.step_decay_schedule(learning_rate, lr_decay_epochs, steps_per_epoch)
        model.compile(
            optimizer=optimizers.TorchSGD(schedule, momentum=momentum, weight_decay=weight_decay),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    meta = {"preset": None, "method": "teacher", "model": model_name,
            "config": {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                       "lr_decay_epochs": list(lr_decay_epochs), "weight_decay": weight_decay,
                       "momentum": momentum, "strong_augment": data.strong_augment}}  # fmt: skip
    return _run(build, data, batch_size, epochs, Path(output), meta, mixed_precision, devices,
                verbose, export=lambda m: m)  # fmt: skip


def evaluate(model_path: str, *, data: DataSpec, batch_size: int = 256) -> dict[str, float]:
    """Top-1 accuracy and cross-entropy of a saved model (``.keras``) on the validation set."""
    model = keras.saving.load_model(model_path, compile=False)
    if isinstance(model, Distiller):
        model = model.student
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    result = model.evaluate(data.validation(batch_size), verbose=0, return_dict=True)
    return {"top1": 100.0 * result["accuracy"], "loss": result["loss"]}


# --- the run loop ---------------------------------------------------------------------------


def _run(build, data: DataSpec, batch_size, epochs, output: Path, meta, mixed_precision,
         devices, verbose, export) -> dict[str, Any]:  # fmt: skip
    output.mkdir(parents=True, exist_ok=True)
    if mixed_precision:
        keras.config.set_dtype_policy(f"mixed_{mixed_precision}")
    initial_epoch = _resume_epoch(output / "backup")
    if initial_epoch >= epochs:
        return _write_results(output, meta, epochs, initial_epoch, None, None, 1)
    train = data.train(batch_size, epochs, initial_epoch)
    keras.utils.set_random_seed(data.seed)  # the same initial weights on every (re)start
    timer = _Throughput(train.steps_per_epoch * batch_size)
    start = time.perf_counter()
    with parallel.data_parallel(devices) as setup:
        model = build(train.steps_per_epoch)
        model.fit(
            validation_data=data.validation(),
            callbacks=[
                keras.callbacks.BackupAndRestore(str(output / "backup"), delete_checkpoint=False),
                keras.callbacks.CSVLogger(str(output / "log.csv"), append=True),
                keras.callbacks.TensorBoard(str(output / "tensorboard")),
                timer,
            ],
            verbose=verbose,
            shuffle=False,  # the stream is already shuffled per (seed, epoch)
            **train.fit_kwargs(),
        )
    # A plain BatchNorm again: a .keras file with synchronized=True loads only on TensorFlow.
    parallel.sync_batchnorm(export(model), synchronized=False).save(output / "model.keras")
    return _write_results(output, meta, epochs, initial_epoch, time.perf_counter() - start,
                          timer.images_per_second(), setup.num_replicas)  # fmt: skip


def _resume_epoch(backup_dir: Path) -> int:
    """The epoch BackupAndRestore will resume from (0 for a new run).

    The data stream must start at that epoch too, so it is read before ``fit`` builds it; the
    file is the callback's own record of the last finished epoch.
    """
    path = backup_dir / "training_metadata.json"
    if not path.exists():
        return 0
    return int(json.loads(path.read_text())["epoch"])


class _Throughput(keras.callbacks.Callback):
    """Training images/s per epoch, validation excluded."""

    def __init__(self, images_per_epoch: int):
        super().__init__()
        self.images_per_epoch = images_per_epoch
        self.seconds: list[float] = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_test_begin(self, logs=None):
        self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._stop()

    def _stop(self):
        if self._start is not None:
            self.seconds.append(time.perf_counter() - self._start)
            self._start = None

    def images_per_second(self) -> float | None:
        # The first epoch includes compilation; leave it out when there are others.
        timed = self.seconds[1:] or self.seconds
        return self.images_per_epoch * len(timed) / sum(timed) if timed else None


def _read_log(path: Path) -> list[dict[str, float]]:
    """Rows of log.csv, one per epoch (a row repeated by an interrupted run keeps its last)."""
    if not path.exists():
        return []
    rows: dict[int, dict[str, float]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            rows[int(row["epoch"])] = {k: float(v) for k, v in row.items() if v not in ("", None)}
    return [rows[e] for e in sorted(rows)]


def _write_results(output: Path, meta, epochs, initial_epoch, seconds, images_per_second,
                   num_replicas) -> dict[str, Any]:  # fmt: skip
    rows = _read_log(output / "log.csv")
    top1 = [100.0 * r["val_accuracy"] for r in rows if "val_accuracy" in r]
    previous = {}
    if (output / "results.json").exists():
        previous = json.loads((output / "results.json").read_text())
    wall = (previous.get("wall_time_s") or 0.0) + (seconds or 0.0)
    results = {
        **meta,
        "backend": keras.backend.backend(),
        "epochs": epochs,
        "epochs_completed": len(rows),
        "resumed_from_epoch": initial_epoch,
        "best_top1": max(top1) if top1 else None,
        "best_epoch": 1 + max(range(len(top1)), key=top1.__getitem__) if top1 else None,
        "last_top1": top1[-1] if top1 else None,
        "wall_time_s": wall,
        "images_per_s": images_per_second or previous.get("images_per_s"),
        "num_replicas": num_replicas,
        "dtype_policy": keras.config.dtype_policy().name,
    }
    (output / "results.json").write_text(json.dumps(results, indent=2, allow_nan=False))
    if rows:
        plot_curves(rows, output / "curves.png", title=_title(meta))
    return results


def _title(meta) -> str:
    if meta.get("preset"):
        return f"{meta['preset']} ({meta['method']}) on {keras.backend.backend()}"
    return f"{meta.get('model')} teacher on {keras.backend.backend()}"


def plot_curves(rows: list[dict[str, float]], path: Path, title: str = "") -> None:
    """Loss (train and validation) and top-1 (train and validation) per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for key, style in (("loss", "-"), ("val_loss", "--"), ("ce_loss", ":"),
                       ("distill_loss", "-.")):  # fmt: skip
        values = [r.get(key, math.nan) for r in rows]
        if not all(math.isnan(v) for v in values):
            ax_loss.plot(epochs, values, style, label=key)
    for key, style in (("accuracy", "-"), ("val_accuracy", "--")):
        values = [100.0 * r.get(key, math.nan) for r in rows]
        if not all(math.isnan(v) for v in values):
            ax_acc.plot(epochs, values, style, label=key.replace("accuracy", "top-1"))
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
