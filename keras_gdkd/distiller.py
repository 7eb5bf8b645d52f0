"""The Distiller: a ``keras.Model`` that trains a student against a frozen teacher.

The teacher pass and the loss live in ``compute_loss``, the one hook that Keras's own
``train_step`` calls on every backend (TensorFlow's GradientTape step, JAX's stateless step and
PyTorch's backward step), so a single code path serves all three and the step stays compiled
where the backend compiles. See ``docs/design.md``.
"""

from __future__ import annotations

import keras
from keras import ops

# Keras's own compiled losses divide by the replica count under tf.distribute (gradients are
# summed across replicas); a custom compute_loss must do the same. A no-op on JAX and PyTorch.
from keras.src.losses.loss import scale_loss_for_distribution

from keras_gdkd.losses import objects as loss_objects

_TRAIN_ONLY = ("ce_loss", "distill_loss")


@keras.saving.register_keras_serializable(package="keras_gdkd")
class Distiller(keras.Model):
    """Train ``student`` with ``ce_weight * CE + warmup(epoch) * distill_weight * loss``.

    Args:
        teacher: a trained ``keras.Model`` returning logits. It is frozen (``trainable=False``)
            and always runs in inference mode, so its BatchNorm statistics never change.
        student: the ``keras.Model`` to train, returning logits of the same width.
        loss: a distillation loss object (``keras_gdkd.GDKD(...)``, ``KD``, ``DKD``, ...) or its
            name (``"gdkd"``: default hyper-parameters).
        ce_weight: weight of the student's cross-entropy with the labels (0 disables it).
        distill_weight: constant weight of the distillation loss (the KD baseline uses 0.9).
        warmup_epochs: the distillation loss is scaled by ``min(epoch / warmup_epochs, 1)``
            with epochs counted from 1; 0 means no warm-up. ``fit`` tracks the epoch itself.

    ``evaluate`` and ``predict`` run the student only; there ``loss`` is the student's
    cross-entropy (plus its regularization losses). Labels are integer class indices.
    """

    def __init__(
        self,
        teacher: keras.Model,
        student: keras.Model,
        loss: loss_objects.LogitLoss | str = "gdkd",
        ce_weight: float = 1.0,
        distill_weight: float = 1.0,
        warmup_epochs: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for role, model in (("teacher", teacher), ("student", student)):
            if not isinstance(model, keras.Model):
                raise ValueError(
                    f"The {role} must be a keras.Model (got {type(model).__name__}). Convert "
                    "a PyTorch network with keras_gdkd.models.load_torch_weights."
                )
        _check_widths(teacher, student)
        if warmup_epochs < 0 or ce_weight < 0 or distill_weight < 0:
            raise ValueError(
                "ce_weight, distill_weight and warmup_epochs must be >= 0; got "
                f"{ce_weight}, {distill_weight}, {warmup_epochs}."
            )
        self.teacher = teacher
        self.teacher.trainable = False
        self.student = student
        self.distillation_loss = loss_objects.get(loss)
        self.ce_weight = float(ce_weight)
        self.distill_weight = float(distill_weight)
        self.warmup_epochs = int(warmup_epochs)
        # 1-based epoch, set by the callback that `fit` adds; a variable so that the compiled
        # step reads the new value without retracing.
        self.epoch = self.add_weight(
            shape=(), initializer="ones", trainable=False, name="epoch", dtype="float32"
        )
        # Both models hold their variables already; marking the Distiller built lets callbacks
        # that load state before the first batch (BackupAndRestore) work.
        self.built = teacher.built and student.built
        names = _TRAIN_ONLY + tuple(self.distillation_loss.term_names)
        self._trackers = {n: keras.metrics.Mean(name=n) for n in names}
        self._training_logs = True

    # --- forward ------------------------------------------------------------------------------

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    def compile(self, optimizer="sgd", loss=None, metrics=None, **kwargs):
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
        callbacks = list(callbacks or []) + [_EpochTracker(self)]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    # --- loss ---------------------------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y is None:
            raise ValueError("The Distiller needs labels: give the dataset (images, labels) pairs.")
        if y_pred is None:
            y_pred = self(x, training=training)
        dtype = str(y.dtype)
        if "int" not in dtype:
            raise ValueError(
                f"Labels must be integer class indices of shape (batch,); got dtype {dtype}. "
                "Convert one-hot labels with argmax."
            )
        labels = ops.reshape(y, (-1,))
        logits = ops.cast(y_pred, "float32")
        regularization = _sum_or_zero(self.losses)
        ce = _weighted_mean(
            keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True),
            sample_weight,
        )
        self._training_logs = bool(training)
        self._trackers["ce_loss"].update_state(ce)
        if not training:
            return scale_loss_for_distribution(ce + regularization)

        teacher_logits = ops.stop_gradient(self.teacher(x, training=False))
        per_sample, terms = self.distillation_loss.terms(logits, teacher_logits, labels)
        distill = _weighted_mean(per_sample, sample_weight)
        self._trackers["distill_loss"].update_state(distill)
        for name, value in terms.items():
            self._trackers[name].update_state(_weighted_mean(value, sample_weight))

        total = self.ce_weight * ce + self.warmup_factor() * self.distill_weight * distill
        return scale_loss_for_distribution(total + regularization)

    def warmup_factor(self):
        """``min(epoch / warmup_epochs, 1)`` for the current (1-based) epoch."""
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
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("teacher", "student", "loss"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)


class _EpochTracker(keras.callbacks.Callback):
    """Keeps ``Distiller.epoch`` equal to the 1-based epoch being trained (resumes included)."""

    def __init__(self, distiller: Distiller):
        super().__init__()
        self._distiller = distiller

    def on_epoch_begin(self, epoch, logs=None):
        self._distiller.epoch.assign(float(epoch + 1))


def _sum_or_zero(losses):
    """Sum of the student's regularization losses in float32 (0.0 when there are none)."""
    total = 0.0
    for loss in losses:
        total = total + ops.cast(loss, "float32")
    return total


def _weighted_mean(values, sample_weight):
    """Keras's "sum over batch size" reduction: sum(w * v) / batch."""
    if sample_weight is None:
        return ops.mean(values)
    weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
    return ops.mean(values * weights)


def _check_widths(teacher: keras.Model, student: keras.Model) -> None:
    widths = []
    for model in (teacher, student):
        outputs = getattr(model, "outputs", None)
        if outputs is None or len(outputs) != 1:
            return  # subclassed models: the loss checks widths on the first batch
        widths.append(outputs[0].shape[-1])
    if widths[0] != widths[1]:
        raise ValueError(
            f"Teacher and student must output the same number of classes; got teacher "
            f"{widths[0]} and student {widths[1]}."
        )
