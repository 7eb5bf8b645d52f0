"""The Distiller: a `keras.Model` that trains a student against a frozen teacher.

The teacher pass and the loss live in `compute_loss`, the one hook that Keras's own
`train_step` calls on every backend (TensorFlow's GradientTape step, JAX's stateless step and
PyTorch's backward step), so a single code path serves all three and the step stays compiled
where the backend compiles. See `docs/design.md`.

Data errors that only the values reveal (a label outside `[0, C)`, a model that outputs
probabilities) cannot raise inside a compiled step. The step counts them in a non-trainable
variable with `keras.ops` instead, and gives samples with a bad label zero weight, so the step
itself is well defined and identical on every backend; the callback that `fit` adds reads the
counts once at the start of the second step and at the end of every epoch, and raises or warns
there. `evaluate` reads them when it returns.
"""

from __future__ import annotations

import numbers
import warnings

import keras
from keras import ops

from keras_gdkd.compat import keras_mask, scale_loss_for_distribution
from keras_gdkd.losses import objects as loss_objects
from keras_gdkd.losses import validation as V

_TRAIN_ONLY = ("ce_loss", "distill_loss")
# Order of the entries of Distiller._data_checks.
_BAD_LABELS, _TEACHER_PROBS, _STUDENT_PROBS = range(3)
# A row of model outputs "sums to 1" within this tolerance (bfloat16 softmax rows are off by
# up to ~1e-2); logits essentially never satisfy it on every row of a batch.
_PROBABILITY_TOLERANCE = 2e-2


@keras.saving.register_keras_serializable(package="keras_gdkd")
class Distiller(keras.Model):
    """Trains `student` on `ce_weight * CE + warmup(epoch) * distill_weight * loss`.

    The teacher is frozen and runs in inference mode inside Keras's own training step, on
    every backend; `fit`, `evaluate`, `predict`, callbacks, mixed precision, distribution and
    saving work as for any `keras.Model`. `evaluate` and `predict` run the student only; there
    `loss` is the student's cross-entropy (plus its regularization losses), and `predict`
    returns the student's logits.

    Labels are integer class indices in `[0, num_classes)`, shape `(batch,)` or `(batch, 1)`
    for classifiers. Dense and sequence models work the same way: logits `(batch, H, W, C)`
    with labels `(batch, H, W)` (segmentation), or `(batch, L, C)` with `(batch, L)` (token
    prediction). Positions whose label is `ignore_index`, positions that Keras's masking marks
    as padding (`Embedding(mask_zero=True)` and the like), and, for dense labels, positions
    with a `sample_weight` of 0 are dropped from both the cross-entropy and the distillation
    loss: they leave the count that the means divide by, so the losses average over the
    positions left (a batch with none left gives 0). For `(batch,)` labels a `sample_weight`
    keeps Keras's meaning: the weighted sum divided by the batch size.
    Float or one-hot labels raise `ValueError` when the step is traced. A label outside the
    range cannot raise inside a compiled step, so on every backend the sample gets zero weight
    (the step stays finite) and `fit` raises `ValueError` at the start of its second step, or
    at the end of the epoch, naming how many labels were out of range; `evaluate` raises when
    it returns.

    A teacher or student whose outputs are probabilities (a final softmax) rather than logits
    gets a warning: at construction when its last layer is a `Softmax` layer or has
    `activation="softmax"`, otherwise after the first training step when every output row lies
    in `[0, 1]` and sums to 1.

    Args:
        teacher: a trained `keras.Model` returning logits. It is frozen (`trainable=False`)
            and always runs in inference mode, so its BatchNorm statistics never change.
        student: the `keras.Model` to train, returning logits of the same width.
        loss: a distillation loss object (`keras_gdkd.GDKD(...)`, `KD`, `DKD`, ...) or its
            name (`"gdkd"`: default hyper-parameters).
        ce_weight: weight of the student's cross-entropy with the labels, finite and >= 0
            (0 disables it).
        distill_weight: constant weight of the distillation loss, finite and >= 0 (the KD
            baseline uses 0.9).
        warmup_epochs: an integer >= 0; the distillation loss is scaled by
            `min(epoch / warmup_epochs, 1)` with epochs counted from 1, and 0 means no
            warm-up. `fit` tracks the epoch itself, resumed runs (`initial_epoch`) included.
        student_output: which output of the student holds the logits, when it returns several
            (a list or tuple: an index; a dict: a key). `None` for a model returning one
            tensor (or a one-element list or dict).
        teacher_output: the same for the teacher.
        ignore_index: a label value marking positions to skip (255 in segmentation data), or
            `None`.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Example:

    ```python
    distiller = keras_gdkd.Distiller(
        teacher=teacher,
        student=student,
        loss=keras_gdkd.GDKD(k=5, w1=2.0, w2=8.0, temperature=4.0),
        ce_weight=1.0,
        warmup_epochs=20,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"])
    distiller.fit(train_ds, validation_data=test_ds, epochs=240)
    distiller.student.save("student.keras")

    # A model returning [logits, features] or {"logits": ..., "features": ...}:
    keras_gdkd.Distiller(teacher, student, student_output="logits", teacher_output=0)
    ```
    """

    def __init__(
        self,
        teacher: keras.Model,
        student: keras.Model,
        loss: loss_objects.LogitLoss | str = "gdkd",
        ce_weight: float = 1.0,
        distill_weight: float = 1.0,
        warmup_epochs: int = 0,
        student_output: int | str | None = None,
        teacher_output: int | str | None = None,
        ignore_index: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for role, model in (("teacher", teacher), ("student", student)):
            if not isinstance(model, keras.Model):
                raise ValueError(
                    f"The {role} must be a keras.Model (got {type(model).__name__}). Convert "
                    "a PyTorch network with keras_gdkd.models.load_torch_weights."
                )
        self.student_output = _validate_selector(student_output, "student_output")
        self.teacher_output = _validate_selector(teacher_output, "teacher_output")
        static = {
            "teacher": _static_output(teacher, self.teacher_output, "teacher"),
            "student": _static_output(student, self.student_output, "student"),
        }
        _check_widths(static["teacher"], static["student"])
        self.ce_weight = V.validate_weight("ce_weight", ce_weight)
        self.distill_weight = V.validate_weight("distill_weight", distill_weight)
        if ignore_index is not None and (
            isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral)
        ):
            raise ValueError(f"ignore_index must be an integer or None; got {ignore_index!r}.")
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        if (
            isinstance(warmup_epochs, bool)
            or not isinstance(warmup_epochs, numbers.Integral)
            or warmup_epochs < 0
        ):
            raise ValueError(f"warmup_epochs must be an integer >= 0; got {warmup_epochs!r}.")
        self.warmup_epochs = int(warmup_epochs)
        self.teacher = teacher
        self.teacher.trainable = False
        self.student = student
        self.distillation_loss = loss_objects.get(loss)
        # 1-based epoch, set by the callback that `fit` adds; a variable so that the compiled
        # step reads the new value without retracing.
        self.epoch = self.add_weight(
            shape=(), initializer="ones", trainable=False, name="epoch", dtype="float32"
        )
        # Counts, since `fit` (or `evaluate`) began, of out-of-range labels and of batches whose
        # teacher / student outputs look like probabilities. Summed over replicas under
        # tf.distribute (each replica adds its own counts).
        self._data_checks = self.add_weight(
            shape=(3,),
            initializer="zeros",
            trainable=False,
            name="data_checks",
            dtype="float32",
            aggregation="sum",
        )
        self._num_classes = None if static["student"] is None else static["student"].shape[-1]
        models = {"teacher": teacher, "student": student}
        # Roles already warned about probability outputs: warn once, not again from the data.
        self._warned = [r for r in models if _warn_if_softmax_output(r, models[r], static[r])]
        # Both models hold their variables already; marking the Distiller built lets callbacks
        # that load state before the first batch (BackupAndRestore) work.
        self.built = teacher.built and student.built
        names = _TRAIN_ONLY + tuple(self.distillation_loss.term_names)
        self._trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self._training_logs = True

    # --- forward ------------------------------------------------------------------------------

    def call(self, inputs, training=None):
        """The student's logits (its output selected by `student_output`)."""
        outputs = self.student(inputs, training=training)
        return _select(outputs, self.student_output, "student")

    def compile(self, optimizer="sgd", loss=None, metrics=None, **kwargs):
        """Configure training as `keras.Model.compile`, without `loss`.

        Args:
            optimizer: the optimizer (instance or name).
            loss: must be `None`: the cross-entropy is built in (weighted by `ce_weight`) and
                the distillation loss is given to the constructor.
            metrics: metrics of the student's logits against the labels, e.g. `["accuracy"]`.
            **kwargs: the other arguments of `keras.Model.compile` (`jit_compile`,
                `steps_per_execution`, ...).
        """
        if loss is not None:
            raise ValueError(
                "Distiller.compile takes no `loss`: the cross-entropy is built in (weighted by "
                "ce_weight) and the distillation loss is given to the constructor."
            )
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        # Keras does not recompile a loaded model whose `compile` is overridden unless asked to.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)  # so the saved optimizer state loads

    def fit(self, *args, callbacks=None, **kwargs):
        """`keras.Model.fit`, plus the callback that sets the epoch and reports data checks."""
        callbacks = list(callbacks or []) + [_DistillerCallback(self)]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def evaluate(self, *args, callbacks=None, **kwargs):
        """`keras.Model.evaluate`; raises `ValueError` afterwards if a label was out of range."""
        if isinstance(callbacks, keras.callbacks.CallbackList):
            # Validation inside `fit`: fit's own callback reports at the end of the epoch.
            return super().evaluate(*args, callbacks=callbacks, **kwargs)
        self._data_checks.assign(ops.zeros((3,)))
        result = super().evaluate(*args, callbacks=callbacks, **kwargs)
        self._report_data_checks()
        return result

    # --- loss ---------------------------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The training loss (or, with `training=False`, the student's cross-entropy).

        Called by Keras's `train_step` / `test_step` inside the compiled step.

        Args:
            x: the input batch (the teacher's input).
            y: integer class labels, shape `(batch,)` or `(batch, 1)`, or the logits' leading
                shape for dense and sequence models.
            y_pred: the student's logits for `x` (computed when `None`).
            sample_weight: optional weights, shape `(batch,)` or the labels' shape.
            training: whether this is a training step (runs the teacher and the distillation
                loss) or an evaluation step (cross-entropy only).

        Returns:
            The scalar loss, divided by the number of replicas under `tf.distribute`.
        """
        if y is None:
            raise ValueError("The Distiller needs labels: give the dataset (images, labels) pairs.")
        if y_pred is None:
            y_pred = self(x, training=training)
        padding = keras_mask(y_pred)
        logits = ops.cast(y_pred, "float32")
        num_classes = logits.shape[-1]
        if self._num_classes != num_classes:  # for the error message; known once traced
            self._num_classes = num_classes
        leading = tuple(logits.shape[:-1])
        labels = V.check_labels(y, leading, num_classes, False, self.ignore_index)
        weights = None if sample_weight is None else _weights_like(sample_weight, labels)
        # `kept`: the positions that count (None: all). The means divide by their number, so
        # the classifier case with no ignore_index keeps Keras's "sum over batch size".
        kept = None if padding is None else ops.cast(padding, "bool")
        if self.ignore_index is not None:
            kept = _and(kept, labels != self.ignore_index)
        if weights is not None and len(leading) > 1:
            kept = _and(kept, weights > 0)
        valid = ops.logical_and(labels >= 0, labels < num_classes)
        # Out-of-range labels are replaced by class 0 and the position gets zero weight, so
        # that every backend computes the same finite step; the callback reports the count.
        labels = ops.where(valid, labels, 0)
        counted = valid if kept is None else ops.logical_and(valid, kept)
        bad = (
            ops.logical_not(valid)
            if kept is None
            else ops.logical_and(ops.logical_not(valid), kept)
        )
        bad_labels = ops.sum(ops.cast(bad, "float32"))
        weights = ops.cast(counted, "float32") * (1.0 if weights is None else weights)
        positions = (
            ops.cast(ops.size(labels), "float32")
            if kept is None
            else ops.sum(ops.cast(kept, "float32"))
        )
        student_probs = _looks_like_probabilities(logits)

        regularization = _sum_or_zero(self.losses)
        ce = _weighted_mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True),
            weights,
            positions,
        )
        self._training_logs = bool(training)
        self._trackers["ce_loss"].update_state(ce)
        if not training:
            self._data_checks.assign_add(ops.stack([bad_labels, ops.zeros(()), student_probs]))
            return scale_loss_for_distribution(ce + regularization)

        teacher_logits = _select(self.teacher(x, training=False), self.teacher_output, "teacher")
        teacher_logits = ops.stop_gradient(ops.cast(teacher_logits, "float32"))
        self._data_checks.assign_add(
            ops.stack([bad_labels, _looks_like_probabilities(teacher_logits), student_probs])
        )
        per_sample, terms = self.distillation_loss.terms(
            logits, teacher_logits, labels, mask=kept, check_label_values=False
        )
        distill = _weighted_mean(per_sample, weights, positions)
        self._trackers["distill_loss"].update_state(distill)
        for name, value in terms.items():
            self._trackers[name].update_state(_weighted_mean(value, weights, positions))

        total = self.ce_weight * ce + self.warmup_factor() * self.distill_weight * distill
        return scale_loss_for_distribution(total + regularization)

    def warmup_factor(self):
        """The warm-up factor `min(epoch / warmup_epochs, 1)` for the current (1-based) epoch.

        Returns:
            `1.0` without warm-up, else a float32 scalar tensor.
        """
        if self.warmup_epochs == 0:
            return 1.0
        return ops.minimum(self.epoch / float(self.warmup_epochs), 1.0)

    def get_metrics_result(self):
        result = super().get_metrics_result()
        if not self._training_logs:  # evaluate runs no teacher: drop the terms it never set
            for name in self._trackers:
                if name != "ce_loss":
                    result.pop(name, None)
        return result

    def _report_data_checks(self) -> None:
        """Raise or warn about what the compiled steps counted (reads one small variable)."""
        counts = ops.convert_to_numpy(self._data_checks)
        bad = int(counts[_BAD_LABELS])
        if bad:
            classes = self._num_classes
            raise ValueError(
                f"{bad} label(s) lay outside [0, {classes}): labels must be integer class "
                f"indices for the {classes} outputs of the models. Those samples were given "
                "zero weight in the steps that saw them; fix the labels (e.g. 1-based labels "
                "need `y - 1`) or the models' number of classes."
            )
        for role, index in (("teacher", _TEACHER_PROBS), ("student", _STUDENT_PROBS)):
            if counts[index] and role not in self._warned:
                self._warned.append(role)
                warnings.warn(_probabilities_message(role, None), stacklevel=2)

    # --- config -------------------------------------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "student": keras.saving.serialize_keras_object(self.student),
            "loss": keras.saving.serialize_keras_object(self.distillation_loss),
            "ce_weight": self.ce_weight,
            "distill_weight": self.distill_weight,
            "warmup_epochs": self.warmup_epochs,
            "student_output": self.student_output,
            "teacher_output": self.teacher_output,
            "ignore_index": self.ignore_index,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("teacher", "student", "loss"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


class _DistillerCallback(keras.callbacks.Callback):
    """Sets `Distiller.epoch` to the 1-based epoch (resumes included) and reports data checks.

    It reads the check counts at the start of the second step of `fit` (so a bad first batch
    stops training at once) and at the end of every epoch: two small reads per epoch. It has no
    `on_train_batch_end`, so Keras keeps dispatching batch-end callbacks asynchronously.
    """

    def __init__(self, distiller: Distiller):
        super().__init__()
        self._distiller = distiller
        self._steps = 0

    def on_train_begin(self, logs=None):
        self._distiller._data_checks.assign(ops.zeros((3,)))
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._distiller.epoch.assign(float(epoch + 1))

    def on_train_batch_begin(self, batch, logs=None):
        self._steps += 1
        if self._steps == 2:
            self._report()

    def on_epoch_end(self, epoch, logs=None):
        self._report()

    def _report(self):
        _ = self.model  # on JAX, reading `model` writes the step's state back to the variables
        self._distiller._report_data_checks()


def _validate_selector(selector, name: str):
    if selector is None or isinstance(selector, str):
        return selector
    if isinstance(selector, numbers.Integral) and not isinstance(selector, bool):
        return int(selector)
    raise ValueError(
        f"{name} must be None, an integer index or a dict key (str) selecting the logits; "
        f"got {selector!r}."
    )


def _describe(outputs) -> str:
    if isinstance(outputs, dict):
        return f"a dict with keys {sorted(outputs)}"
    shapes = [tuple(getattr(o, "shape", ())) for o in outputs]
    return f"a {type(outputs).__name__} of {len(outputs)} outputs with shapes {shapes}"


def _select(outputs, selector, role: str):
    """The logits among a model's outputs: `outputs[selector]`, or the single output."""
    name = f"{role}_output"
    if isinstance(outputs, dict):
        if selector is None and len(outputs) == 1:
            return next(iter(outputs.values()))
        if isinstance(selector, str) and selector in outputs:
            return outputs[selector]
        keys = sorted(outputs, key=lambda k: "logit" not in str(k).lower())  # logits first
        hint = f"pass {name}=<key of the logits>, e.g. {name}={keys[0]!r}"
    elif isinstance(outputs, (list, tuple)):
        if selector is None and len(outputs) == 1:
            return outputs[0]
        if isinstance(selector, int) and -len(outputs) <= selector < len(outputs):
            return outputs[selector]
        hint = f"pass {name}=<index of the logits>, e.g. {name}=0"
    else:
        if selector is None:
            return outputs
        raise ValueError(
            f"{name}={selector!r} selects one of several outputs, but the {role} returns a "
            f"single tensor of shape {tuple(outputs.shape)}; leave {name}=None."
        )
    got = "" if selector is None else f" ({name}={selector!r} does not select one of them)"
    raise ValueError(f"The {role} returns {_describe(outputs)}{got}; {hint}.")


def _static_output(model: keras.Model, selector, role: str):
    """The symbolic logits of a functional/Sequential model, `None` for a subclassed one."""
    outputs = getattr(model, "outputs", None)
    if outputs is None:
        return None  # subclassed: the structure is checked when the step is traced
    try:
        structure = model.output  # keeps a dict's keys; Sequential raises and has one output
    except (AttributeError, ValueError):
        structure = outputs
    return _select(structure, selector, role)


def _is_softmax(layer) -> bool:
    return isinstance(layer, keras.layers.Softmax) or (
        getattr(layer, "activation", None) is keras.activations.softmax
    )


def _softmax_layer(model: keras.Model, tensor):
    """The layer that produces `tensor` in `model` if it applies a softmax, else `None`."""
    for layer in reversed(model.layers):
        try:
            produced = keras.tree.flatten(layer.output)
        except (AttributeError, ValueError):  # a layer called several times has no one output
            continue
        for index, output in enumerate(produced):
            if output is tensor:
                inner = getattr(layer, "outputs", None)
                if isinstance(layer, keras.Model) and inner is not None:
                    return _softmax_layer(layer, inner[index])
                return layer if _is_softmax(layer) else None
    return None


def _probabilities_message(role: str, layer) -> str:
    source = (
        f"its output layer {layer.name!r} applies softmax"
        if layer is not None
        else "every row of a training batch lies in [0, 1] and sums to 1"
    )
    effect = (
        "the distillation loss then softens probabilities instead of logits and the teacher's "
        "signal becomes nearly uniform"
        if role == "teacher"
        else "the cross-entropy and the distillation loss treat them as logits"
    )
    return (
        f"The {role}'s outputs look like probabilities, not logits ({source}): {effect}. "
        f"Give the Distiller a {role} that returns logits, e.g. the same model with "
        "activation=None in its last layer (or without its final Softmax layer)."
    )


def _warn_if_softmax_output(role: str, model: keras.Model, static_output) -> bool:
    if static_output is None:
        return False
    layer = _softmax_layer(model, static_output)
    if layer is not None:
        warnings.warn(_probabilities_message(role, layer), stacklevel=3)
    return layer is not None


def _looks_like_probabilities(z):
    """1.0 if every row of `z` lies in [0, 1] and sums to 1, else 0.0 (a float32 scalar)."""
    z = ops.stop_gradient(z)
    in_unit = ops.logical_and(ops.all(z >= 0.0), ops.all(z <= 1.0))
    sums_to_one = ops.all(ops.abs(ops.sum(z, axis=-1) - 1.0) <= _PROBABILITY_TOLERANCE)
    return ops.cast(ops.logical_and(in_unit, sums_to_one), "float32")


def _sum_or_zero(losses):
    """Sum of the student's regularization losses in float32 (0.0 when there are none)."""
    total = 0.0
    for loss in losses:
        total = total + ops.cast(loss, "float32")
    return total


def _weighted_mean(values, weights, positions):
    """`sum(w * v) / positions`: Keras's "sum over batch size" over the positions that count.

    A batch with no position left gives 0, not NaN.
    """
    return ops.sum(values * weights) / ops.maximum(positions, 1.0)


def _and(mask, other):
    return other if mask is None else ops.logical_and(mask, other)


def _weights_like(sample_weight, labels):
    """Sample weights as float32 broadcastable to the labels: `(batch,)` or the labels' shape."""
    weights = ops.cast(sample_weight, "float32")
    rank, label_rank = len(weights.shape), len(labels.shape)
    if rank == label_rank + 1 and weights.shape[-1] == 1:
        weights = ops.squeeze(weights, axis=-1)
        rank -= 1
    if rank > label_rank:
        raise ValueError(
            f"sample_weight must have shape (batch,) or the labels' shape {tuple(labels.shape)}; "
            f"got {tuple(sample_weight.shape)}."
        )
    for _ in range(label_rank - rank):
        weights = ops.expand_dims(weights, -1)
    return weights


def _check_widths(teacher_logits, student_logits) -> None:
    if teacher_logits is None or student_logits is None:
        return  # subclassed models: the loss checks widths on the first batch
    widths = (teacher_logits.shape[-1], student_logits.shape[-1])
    if widths[0] != widths[1]:
        raise ValueError(
            f"Teacher and student must output the same number of classes; got teacher "
            f"{widths[0]} and student {widths[1]}."
        )
