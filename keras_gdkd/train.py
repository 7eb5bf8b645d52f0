"""Run orchestration: teacher training, distillation and evaluation into an output folder.

A run folder holds:

- ``run.json``: the configuration of the first start (preset, method, every override, seed,
  data source, backend, package versions). A resume whose configuration differs is refused
  with the differences listed, unless ``force=True``.
- ``run.lock``: held while a process trains into the folder; a second run is refused.
- ``backup/epoch-NNNN/``: the two newest checkpoints (weights, optimizer, epoch, history), each
  committed by one rename (see :mod:`keras_gdkd.runs.checkpoint`). Running the same command
  again resumes from the newest good one; because every shuffle and augmentation draw follows
  from (seed, epoch, example), a resumed run sees exactly the batches of an uninterrupted one.
- ``log.csv``: one row per finished epoch; ``tensorboard/`` when TensorBoard is installed.
- ``results.json``: status, best and last top-1, which file holds which, wall time summed over
  every start, images/s after compilation, compile time.
- ``curves.png``: losses, distillation terms and top-1 per epoch.
- ``model.keras`` (the last epoch) and ``best.keras`` (the epoch of ``best_top1``): for a
  distillation the student alone, made of core Keras layers only.

Every file is written to a temporary name and renamed. Under several processes only process 0
writes these files; every process keeps its own checkpoints (``backup/`` on process 0,
``backup/process-<i>/`` on the others).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

from keras_gdkd import models, optimizers, parallel, presets
from keras_gdkd.distiller import Distiller
from keras_gdkd.runs import (
    CheckpointStore,
    RunError,
    RunLock,
    atomic_path,
    atomic_write_json,
    config_differences,
    read_json,
)
from keras_gdkd.runs.checkpoint import CheckpointError
from keras_gdkd.runs.report import plot_curves, write_log

TEACHER_SUFFIXES = (".keras", ".pth", ".pt", ".npz")


@dataclass(frozen=True)
class DataSpec:
    """Where the data comes from.

    Args:
        dataset: ``"cifar100"`` or ``"imagenet"``.
        data_dir: a folder holding the files (CIFAR-100: ``cifar-100-python.tar.gz`` or its
            extracted folder; ImageNet: ``train/<class>/`` and ``val/<class>/``) or a
            tensorflow-datasets ``data_dir`` holding the prepared dataset (``None``: tfds's
            default folder).
        manual_dir: tfds's manual download folder for ``imagenet2012``.
        seed: data order and augmentation seed (also the initial weights' seed).
        strong_augment: CIFAR-100 only: RandAugment and random erasing.
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
        """(source for ``keras_gdkd.data``: ``"tfds"`` or a path, tfds ``data_dir``).

        Raises ``ValueError`` naming the files looked for when the data is not there.
        """
        from keras_gdkd import data

        return data.resolve_source(self.dataset, self.data_dir, self.manual_dir)

    def check_files(self) -> None:
        """Reads a CIFAR-100 archive through once (ImageNet: the folder layout was checked by
        :meth:`source`; scan the images with ``keras_gdkd.data.check_data``).

        Raises ``ValueError`` naming the file and the damage.
        """
        source, _ = self.source()
        if self.dataset == "cifar100" and source != "tfds":
            from keras_gdkd import data

            data.check_data("cifar100", self.data_dir).raise_if_bad()

    def class_names(self) -> list[str] | None:
        """ImageNet from folders: the train class folder names (labels are their indices)."""
        source, _ = self.source()
        if self.dataset != "imagenet" or source == "tfds":
            return None
        from keras_gdkd import data

        return data.imagenet_class_names(source)

    def describe(self) -> dict[str, Any]:
        """The data part of a run's configuration."""
        source, tfds_dir = self.source()
        where = "tfds" if source == "tfds" else str(Path(source).resolve())
        return {"dataset": self.dataset, "source": where,
                "tfds_data_dir": tfds_dir and str(Path(tfds_dir).resolve()),
                "manual_dir": self.manual_dir, "seed": self.seed,
                "strong_augment": self.strong_augment}  # fmt: skip

    def train(self, batch_size: int, epochs: int, initial_epoch: int, class_names=None):
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
            class_names=class_names,
        )  # fmt: skip

    def validation(self, batch_size: int = 256, class_names: list[str] | None = None):
        from keras_gdkd import data

        source, data_dir = self.source()
        if self.dataset == "cifar100":
            return data.cifar100_test(source, batch_size=batch_size, data_dir=data_dir)
        kwargs = {"class_names": class_names} if class_names is not None else {}
        return data.imagenet_val(source, batch_size=batch_size, data_dir=data_dir,
                                 manual_dir=self.manual_dir, **kwargs)  # fmt: skip

    @property
    def num_classes(self) -> int:
        return 100 if self.dataset == "cifar100" else 1000


def resolve_preset(
    preset: presets.Preset,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    student: str | None = None,
    loss: dict[str, Any] | None = None,
) -> presets.Preset:
    """The preset a run actually uses: overrides applied and checked.

    A ``batch_size`` override without a ``learning_rate`` override scales the preset's rate
    linearly (:func:`keras_gdkd.optimizers.scale_lr`): ImageNet's 0.2 at 512 becomes 0.1 at 256.
    ``loss`` overrides hyper-parameters of the preset's loss (``{"temperature": 1.0}``).

    Raises:
        ValueError: ``epochs < 1``, ``batch_size < 1``, a learning rate that is not a positive
            finite number, an unknown student architecture, or a loss hyper-parameter that the
            method does not have or a value it cannot use.
    """
    _check_recipe(epochs, batch_size, learning_rate)
    changes: dict[str, Any] = {}
    if loss:
        changes["loss_config"] = {**preset.loss_config, **loss}
    if epochs is not None:
        changes["epochs"] = int(epochs)
    if batch_size is not None:
        changes["batch_size"] = int(batch_size)
        if learning_rate is None:
            changes["learning_rate"] = optimizers.scale_lr(
                preset.learning_rate, preset.batch_size, int(batch_size)
            )
    if learning_rate is not None:
        changes["learning_rate"] = float(learning_rate)
    if student is not None:
        if student not in models.available():
            raise ValueError(
                f"unknown student {student!r}; expected one of {', '.join(models.available())}."
            )
        changes["student"] = student
    return preset.replace(**changes)


def _check_recipe(epochs, batch_size, learning_rate) -> None:
    """Raises ``ValueError`` for a value of these (each may be ``None``) no run can use."""
    if epochs is not None and (int(epochs) != epochs or epochs < 1):
        raise ValueError(f"epochs must be an integer >= 1; got {epochs}.")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch size must be an integer >= 1; got {batch_size}.")
    if learning_rate is not None and not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning rate must be a positive number; got {learning_rate}.")


def load_model_weights(source: str, name: str, num_classes: int) -> keras.Model:
    """A ``.keras`` file as saved, or architecture ``name`` filled from a PyTorch checkpoint
    (``.pth``/``.pt``) or ``.npz`` through :func:`keras_gdkd.models.load_torch_weights`."""
    path = _check_weights_file(source)
    if path.suffix == ".keras":
        try:
            return keras.saving.load_model(path, compile=False)
        except Exception as error:  # keras raises many types for a damaged archive
            raise RunError(f"cannot load the Keras model {path}: {error}") from error
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
    force: bool = False,
) -> dict[str, Any]:
    """Distils ``preset.student`` from a trained teacher into ``output``.

    Args:
        preset: the recipe (``keras_gdkd.presets.get(name, method)``).
        data: where the data is.
        teacher_weights: a ``.keras`` model, or a PyTorch checkpoint (``.pth``/``.pt``/
            ``.npz``) of the preset's teacher architecture.
        output: the run folder; running again resumes from its last good checkpoint.
        epochs, batch_size, learning_rate: overrides (see :func:`resolve_preset`).
        mixed_precision: ``"bfloat16"`` or ``"float16"`` to train under ``mixed_<dtype>``.
        devices: devices for data-parallel training (default: all accelerators).
        verbose: Keras's ``fit`` verbosity (the run's own few messages go to stderr).
        force: resume even if the configuration differs from the first start.

    Returns:
        The contents of ``results.json``.

    Raises:
        RunError: bad input, a locked folder, a changed configuration, a diverged loss.
    """
    run = resolve_preset(preset, epochs=epochs, batch_size=batch_size,
                         learning_rate=learning_rate)  # fmt: skip
    if data.dataset != run.dataset:
        raise RunError(f"preset {run.name} is for {run.dataset}, not {data.dataset}.")
    _check_weights_file(teacher_weights)

    def build(steps_per_epoch: int) -> keras.Model:
        teacher = load_model_weights(teacher_weights, run.teacher, run.num_classes)
        student = models.get_model(run.student, num_classes=run.num_classes)
        distiller = Distiller(
            parallel.sync_batchnorm(teacher),
            parallel.sync_batchnorm(student),
            loss=run.loss,
            ce_weight=run.ce_weight,
            distill_weight=run.distill_weight,
            warmup_epochs=run.warmup_epochs,
        )
        optimizer = optimizers.make_optimizer(run, steps_per_epoch, batch_size=run.batch_size)
        distiller.compile(optimizer=optimizer, weighted_metrics=["accuracy"])
        return distiller

    job = _Job(
        build=build,
        export=lambda model: model.student,
        batch_size=run.batch_size,
        epochs=run.epochs,
        meta={"preset": run.name, "method": run.method, "loss": dict(run.loss_config),
              "teacher": run.teacher,
              "teacher_weights": str(Path(teacher_weights).resolve()), "student": run.student},
        config={"command": "distill", "preset": run.to_dict(), "mixed_precision": mixed_precision,
                "teacher_weights": _file_identity(teacher_weights)},
    )  # fmt: skip
    return _run(job, data, Path(output), mixed_precision, devices, verbose, force)


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
    force: bool = False,
) -> dict[str, Any]:
    """Trains ``model_name`` with cross-entropy into ``output`` (default: the CIFAR recipe).

    Args:
        model_name: a zoo architecture (``keras_gdkd.models.available()``).
        data: where the data is.
        output: the run folder; running again resumes.
        epochs, batch_size, learning_rate, lr_decay_epochs, weight_decay, momentum: the
            recipe: SGD with momentum and coupled weight decay, the rate times 0.1 after each
            epoch in ``lr_decay_epochs``.
        mixed_precision, devices, verbose, force: as for :func:`distill`.

    Returns:
        The contents of ``results.json``.
    """
    if model_name not in models.available():
        raise RunError(
            f"unknown model {model_name!r}; expected one of {', '.join(models.available())}."
        )
    _check_recipe(epochs, batch_size, learning_rate)

    def build(steps_per_epoch: int) -> keras.Model:
        model = parallel.sync_batchnorm(models.get_model(model_name, data.num_classes))
        schedule = optimizers.step_decay_schedule(learning_rate, lr_decay_epochs, steps_per_epoch)
        model.compile(
            optimizer=optimizers.TorchSGD(schedule, momentum=momentum, weight_decay=weight_decay),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=["accuracy"],
        )
        return model

    recipe = {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
              "lr_decay_epochs": list(lr_decay_epochs), "weight_decay": weight_decay,
              "momentum": momentum}  # fmt: skip
    job = _Job(
        build=build,
        export=lambda model: model,
        batch_size=batch_size,
        epochs=epochs,
        meta={"preset": None, "method": "teacher", "model": model_name},
        config={"command": "train-teacher", "model": model_name, "recipe": recipe,
                "mixed_precision": mixed_precision},
    )  # fmt: skip
    return _run(job, data, Path(output), mixed_precision, devices, verbose, force)


def evaluate(model_path: str, *, data: DataSpec, batch_size: int = 256) -> dict[str, float]:
    """Top-1 accuracy (%) and cross-entropy of a saved model on the validation set.

    Args:
        model_path: a ``.keras`` file (a model, or a saved ``Distiller``: its student is used).
        data: where the data is.
        batch_size: evaluation batch size (global).

    For ImageNet folders, the class list saved with the run (``classes.json`` beside the
    model) must equal the data's, or the labels would not mean the same classes.
    """
    path = _check_weights_file(model_path, suffixes=(".keras",))
    class_names = data.class_names()
    saved = path.parent / "classes.json"
    if class_names is not None and saved.exists():
        expected = read_json(saved)
        if expected != class_names:
            raise RunError(
                f"the classes of {data.data_dir} differ from those the model was trained on "
                f"({saved}): {_list_difference(class_names, expected)}."
            )
    model = load_model_weights(str(path), "", data.num_classes)
    if isinstance(model, Distiller):
        model = model.student
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=["accuracy"],
    )
    result = model.evaluate(_validation(data, batch_size, class_names), verbose=0,
                            return_dict=True)  # fmt: skip
    return {"top1": 100.0 * result["accuracy"], "loss": result["loss"]}


# --- the run loop ---------------------------------------------------------------------------


@dataclass
class _Job:
    build: Callable[[int], keras.Model]
    export: Callable[[keras.Model], keras.Model]
    batch_size: int
    epochs: int
    meta: dict[str, Any]
    config: dict[str, Any]


@dataclass
class _Outputs:
    """The paths of a run folder, and whether this process writes the shared ones."""

    root: Path
    primary: bool = True
    process_index: int = 0
    backup: Path = field(init=False)
    config: Path = field(init=False)
    results: Path = field(init=False)
    log: Path = field(init=False)
    curves: Path = field(init=False)
    model: Path = field(init=False)
    best: Path = field(init=False)
    classes: Path = field(init=False)
    tensorboard: Path = field(init=False)

    def __post_init__(self):
        self.backup = self.root / "backup"
        if self.process_index:
            self.backup = self.backup / f"process-{self.process_index}"
        for name, file in (("config", "run.json"), ("results", "results.json"),
                           ("log", "log.csv"), ("curves", "curves.png"), ("model", "model.keras"),
                           ("best", "best.keras"), ("classes", "classes.json"),
                           ("tensorboard", "tensorboard")):  # fmt: skip
            setattr(self, name, self.root / file)


def _run(job: _Job, data: DataSpec, output: Path, mixed_precision, devices, verbose,
         force) -> dict[str, Any]:  # fmt: skip
    say = _say
    # Everything that can be checked without training is checked before the folder exists.
    data_config = data.describe()
    data.check_files()
    class_names = data.class_names()
    optional = _optional_features(say)
    out = _Outputs(output, parallel.is_primary(), parallel.process_index())
    config = _normalise({**job.config, "data": data_config, "backend": keras.backend.backend(),
                         "num_processes": parallel.process_count(),
                         "versions": _versions()})  # fmt: skip

    out.root.mkdir(parents=True, exist_ok=True)
    out.backup.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out.root if out.primary else out.backup)
    with lock:
        if lock.took_over:
            say(f"Took over the lock of a run that ended without releasing it "
                f"(pid {lock.took_over.get('pid')} on {lock.took_over.get('host')}).")  # fmt: skip
        if out.primary:
            _check_config(out, config, force, say)
            if class_names is not None:
                _check_classes(out, class_names, force)
        store = CheckpointStore(out.backup)
        store.clean_temporaries()
        try:
            checkpoint = store.latest()
        except CheckpointError as error:
            raise RunError(str(error), hint=f"delete {out.backup} to start over") from error
        state = checkpoint.state if checkpoint else _new_state()
        initial_epoch = checkpoint.epoch if checkpoint else 0
        if mixed_precision:
            keras.config.set_dtype_policy(f"mixed_{mixed_precision}")
        if initial_epoch >= job.epochs:
            say(f"{out.root}: already complete ({initial_epoch} epochs); checking its exports.")
            if out.primary:
                _repair_exports(job, data, out, checkpoint, devices, say)
            return _write_results(job, out, state, optional, status="complete")
        say(f"{out.root}: resuming from epoch {initial_epoch + 1} of {job.epochs}"
            if checkpoint else f"{out.root}: starting epoch 1 of {job.epochs}")  # fmt: skip

        recorder = _EpochRecorder(job, out, store, state, checkpoint, optional)
        train = data.train(job.batch_size, job.epochs, initial_epoch, class_names)
        keras.utils.set_random_seed(data.seed)  # the same initial weights on every (re)start
        with parallel.data_parallel(devices) as setup:
            model = job.build(train.steps_per_epoch)
            recorder.images_per_epoch = train.steps_per_epoch * job.batch_size
            callbacks = [recorder]
            if optional["tensorboard"] and out.primary:
                callbacks.append(keras.callbacks.TensorBoard(str(out.tensorboard)))
            try:
                model.fit(
                    validation_data=_validation(data, 256, class_names, setup.num_replicas),
                    callbacks=callbacks,
                    verbose=verbose,
                    shuffle=False,  # the stream is already shuffled per (seed, epoch)
                    **train.fit_kwargs(),
                )
            except _Diverged as error:
                _write_results(job, out, recorder.state, optional, status="diverged")
                raise RunError(str(error), hint=error.hint) from None
            _export(job.export(model), out.model, out.primary)
        state = {**recorder.state, "num_replicas": setup.num_replicas}
        return _write_results(job, out, state, optional, status="complete")


class _Diverged(Exception):
    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


class _EpochRecorder(keras.callbacks.Callback):
    """Commits each finished epoch: NaN check, best export, checkpoint, log and results.

    Restores the resumed checkpoint in ``on_train_begin``, after ``fit`` has built the model and
    its optimizer (as Keras's ``BackupAndRestore`` does).
    """

    def __init__(self, job, out: _Outputs, store: CheckpointStore, state, checkpoint, optional):
        super().__init__()
        self.job, self.out, self.store, self.optional = job, out, store, optional
        self.state = dict(state)
        self.state["starts"] = self.state.get("starts", 0) + 1
        self.checkpoint = checkpoint
        self.images_per_epoch = 0
        self._wall_base = float(self.state.get("wall_time_s", 0.0))
        self._start = time.perf_counter()
        self._epoch_start = None
        self._first_step = None  # seconds of the first step of this start (compilation)
        self._train_seconds = None  # training part of the current epoch (validation excluded)
        self._initial_epoch = checkpoint.epoch if checkpoint else 0

    def on_train_begin(self, logs=None):
        if self.checkpoint is None:
            return
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        try:
            self.model.load_weights(self.checkpoint.weights_path)
        except Exception as error:
            raise RunError(
                f"{self.checkpoint.weights_path} does not fit this model ({error})",
                hint="the run folder belongs to another model; use another --output",
            ) from error

    # The batch hook only reads the clock: Keras may keep dispatching batch callbacks
    # asynchronously, so the training step does not wait for it.
    async_safe = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._train_seconds = None

    def on_train_batch_end(self, batch, logs=None):
        if self._first_step is None:
            self._first_step = time.perf_counter() - self._epoch_start

    def on_test_begin(self, logs=None):
        if self._epoch_start is not None:
            self._train_seconds = time.perf_counter() - self._epoch_start

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        seconds = self._train_seconds or time.perf_counter() - self._epoch_start
        bad = [k for k in ("loss", "val_loss") if k in logs and not math.isfinite(logs[k])]
        if bad or not _weights_finite(self.model):
            last = self.state["history"][-1]["epoch"] + 1 if self.state["history"] else 0
            what = f"{bad[0]} is {logs[bad[0]]}" if bad else "the weights are not finite"
            raise _Diverged(
                f"training diverged at epoch {epoch + 1}: {what}",
                hint=f"lower the learning rate; the last finite state (epoch {last}) is kept in "
                f"{self.out.backup}" + (" and best.keras" if self.state["best_epoch"] else ""),
            )
        row = {"epoch": epoch, **logs}
        history = [r for r in self.state["history"] if r["epoch"] < epoch] + [row]
        self.state["history"] = history
        if epoch == self._initial_epoch and self._first_step is not None:
            # The first step of a start includes compilation: timed apart and left out.
            self.state["compile_s"] = self._first_step
            images = self.images_per_epoch - self.images_per_epoch / max(self.params["steps"], 1)
            seconds -= self._first_step
        else:
            images = self.images_per_epoch
        if seconds > 0 and images > 0:
            self.state["rates"] = [*self.state.get("rates", []), images / seconds]
        top1 = 100.0 * logs["val_accuracy"] if "val_accuracy" in logs else None
        if top1 is not None and (self.state["best_top1"] is None or top1 > self.state["best_top1"]):
            self.state["best_top1"], self.state["best_epoch"] = top1, epoch + 1
            _export(self.job.export(self.model), self.out.best, self.out.primary)
        self.state["wall_time_s"] = self._wall_base + time.perf_counter() - self._start
        self.store.commit(self.model, epoch + 1, self.state)
        if self.out.primary:
            write_log(self.out.log, history)
            _write_results(self.job, self.out, self.state, self.optional, status="running")


def _weights_finite(model: keras.Model) -> bool:
    import numpy as np

    return all(np.isfinite(w).all() for w in model.get_weights())


def _new_state() -> dict[str, Any]:
    return {"history": [], "best_top1": None, "best_epoch": None, "wall_time_s": 0.0,
            "starts": 0, "compile_s": None, "rates": []}  # fmt: skip


def _validation(data: DataSpec, batch_size: int, class_names, num_replicas: int = 1):
    dataset = data.validation(batch_size, class_names)
    if parallel.process_count() > 1 or num_replicas > 1:
        # Every process and device must get the same number of equally shaped batches.
        dataset = parallel.pad_for_evaluation(dataset, batch_size)
    return dataset


def _export(model: keras.Model, path: Path, write: bool = True) -> None:
    """Saves ``model`` as core Keras layers, atomically, if ``write``.

    Every process of a multi-process run builds the export (creating its variables is a
    collective step under a distribution); only the primary one writes the file.
    """
    # The same graph without the training's compile state (its optimizer is keras_gdkd's).
    uncompiled = keras.Model(model.inputs, model.outputs, name=model.name)
    exported = models.export_model(uncompiled)
    if write:
        with atomic_path(path) as tmp:
            exported.save(tmp)


def _repair_exports(job, data, out: _Outputs, checkpoint, devices, say) -> None:
    """A finished run whose ``model.keras`` is missing or damaged exports it again."""
    if _loads(out.model):
        return
    say(f"{out.model} is missing or damaged; exporting it again from {checkpoint.path}.")
    train = data.train(job.batch_size, job.epochs, 0)
    with parallel.data_parallel(devices):
        model = job.build(train.steps_per_epoch)
        model.optimizer.build(model.trainable_variables)
        model.load_weights(checkpoint.weights_path)
        _export(job.export(model), out.model)
    if checkpoint.state.get("best_epoch") == checkpoint.epoch and not _loads(out.best):
        _export(job.export(model), out.best)


def _loads(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        keras.saving.load_model(path, compile=False)
        return True
    except Exception:  # any failure to load means the file must be written again
        return False


def _check_config(out: _Outputs, config: dict, force: bool, say) -> None:
    if not out.config.exists():
        atomic_write_json(out.config, config)
        return
    try:
        started = read_json(out.config)
    except ValueError as error:
        hint = f"restore {out.config} or start in another --output"
        raise RunError(str(error), hint=hint) from error
    differences = config_differences(started, config)
    if differences and not force:
        raise RunError(
            f"{out.root} was started with another configuration:\n  " + "\n  ".join(differences),
            hint="rerun with the original options, choose another --output, or pass --force "
            "to continue with the new ones",
        )
    if differences:
        say("--force: continuing with a changed configuration:\n  " + "\n  ".join(differences))
        atomic_write_json(out.config, {**config, "previous": started})
    elif started.get("versions") != config["versions"]:
        say(f"note: package versions differ from the first start ({started.get('versions')}).")


def _check_classes(out: _Outputs, class_names: list[str], force: bool) -> None:
    if out.classes.exists() and not force:
        saved = read_json(out.classes)
        if saved != class_names:
            raise RunError(
                "the data's classes differ from the run's classes.json: "
                + _list_difference(class_names, saved)
            )
    atomic_write_json(out.classes, class_names)


def _list_difference(found: list[str], expected: list[str]) -> str:
    missing = [c for c in expected if c not in set(found)]
    extra = [c for c in found if c not in set(expected)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({', '.join(missing[:5])})")
    if extra:
        parts.append(f"{len(extra)} unexpected ({', '.join(extra[:5])})")
    return "; ".join(parts) or "same classes in another order"


def _check_weights_file(source: str, suffixes=TEACHER_SUFFIXES) -> Path:
    path = Path(source)
    if not path.is_file():
        raise RunError(f"weights file not found: {path}")
    if path.suffix not in suffixes:
        raise RunError(
            f"unsupported weights file {path.name}: expected "
            + ("a .keras model" if suffixes == (".keras",) else
               "a .keras model, a PyTorch checkpoint (.pth/.pt) or a .npz of PyTorch-keyed arrays")
        )  # fmt: skip
    return path


def _file_identity(path: str) -> dict[str, Any]:
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "bytes": stat.st_size}


def _versions() -> dict[str, str]:
    names = ("keras", "keras-gdkd", {"tensorflow": "tensorflow", "jax": "jax",
                                      "torch": "torch"}[keras.backend.backend()])  # fmt: skip
    out = {}
    for name in names:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    if keras.backend.backend() == "tensorflow" and "tensorflow" not in out:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out["tensorflow"] = importlib.metadata.version("tensorflow-cpu")
    return out


def _normalise(config: dict) -> dict:
    """The form the configuration has once written to and read back from JSON."""
    import json

    return json.loads(json.dumps(config))


def _optional_features(say) -> dict[str, bool]:
    found = {name: importlib.util.find_spec(name) is not None
             for name in ("tensorboard", "matplotlib")}  # fmt: skip
    if not found["tensorboard"]:
        say("note: tensorboard is not installed; no TensorBoard log will be written.")
    if not found["matplotlib"]:
        say("note: matplotlib is not installed; curves.png will not be drawn.")
    return found


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- results, log and curves ---------------------------------------------------------------


def _write_results(job: _Job, out: _Outputs, state: dict, optional, status: str) -> dict:
    history = state["history"]
    top1 = [100.0 * r["val_accuracy"] for r in history if "val_accuracy" in r]
    rates = state.get("rates") or []
    results = {
        **job.meta,
        "status": status,
        "backend": keras.backend.backend(),
        "epochs": job.epochs,
        "epochs_completed": len(history),
        "starts": state.get("starts", 1),
        "best_top1": state.get("best_top1"),
        "best_epoch": state.get("best_epoch"),
        "last_top1": top1[-1] if top1 else None,
        "model": "model.keras: the last epoch" if status == "complete" else None,
        "best_model": (
            f"best.keras: epoch {state['best_epoch']}" if state.get("best_epoch") else None
        ),  # fmt: skip
        "wall_time_s": state.get("wall_time_s", 0.0),
        "compile_s": state.get("compile_s"),
        "images_per_s": sorted(rates)[len(rates) // 2] if rates else None,
        "num_replicas": state.get("num_replicas"),
        "num_processes": parallel.process_count(),
        "dtype_policy": keras.config.dtype_policy().name,
    }
    if not out.primary:
        return results
    config = read_json(out.config) if out.config.exists() else {}
    results["seed"] = config.get("data", {}).get("seed")
    results["data"] = config.get("data")
    atomic_write_json(out.results, results)
    if history and optional.get("matplotlib") and status != "running":
        plot_curves(history, out.curves, title=_title(job.meta))
    return results


def _title(meta) -> str:
    backend = keras.backend.backend()
    if meta.get("preset"):
        return (f"{meta['teacher']} -> {meta['student']}, {meta['method']} "
                f"(preset {meta['preset']}) on {backend}")  # fmt: skip
    return f"{meta.get('model')} teacher on {backend}"
