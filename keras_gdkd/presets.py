"""The authors' training recipes as typed, frozen records.

Every teacher/student pair of the paper's CIFAR-100 and ImageNet tables is available for four
methods (``gdkd``, ``gdkd3``, ``dkd``, ``kd``)::

    from keras_gdkd import presets

    p = presets.get("res32x4_res8x4", method="gdkd")
    loss = keras_gdkd.gdkd(s, t, **p.loss_kwargs())
    print(p)  # a readable table
    json.dumps(p.to_dict())

Values follow the released configs (a fork of ``mdistiller``); see ``docs`` / the method spec,
section 5. The ImageNet ``gdkd3`` presets are not in the authors' configs: they reuse the ImageNet
GDKD values with k = 4, and say so in ``Preset.notes``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DKDParams",
    "GDKD3Params",
    "GDKDParams",
    "KDParams",
    "METHODS",
    "Preset",
    "Reference",
    "available",
    "get",
]

METHODS: tuple[str, ...] = ("gdkd", "gdkd3", "dkd", "kd")


# --------------------------------------------------------------------------------------------
# Loss hyper-parameter records. Field names are the keyword arguments of the functional losses
# (``keras_gdkd.gdkd(..., k=, w0=, w1=, w2=, temperature=)`` etc.), so ``asdict`` is the kwargs.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GDKDParams:
    """Keyword arguments of ``gdkd``: teacher top-k partition, weights of its three terms."""

    k: int
    w0: float
    w1: float
    w2: float
    temperature: float


@dataclass(frozen=True)
class GDKD3Params:
    """Keyword arguments of ``gdkd3`` (top-1 / top-2..k / rest)."""

    k: int
    w0: float
    w1: float
    w2: float
    temperature: float


@dataclass(frozen=True)
class DKDParams:
    """Keyword arguments of ``dkd``: alpha weighs TCKD, beta weighs NCKD."""

    alpha: float
    beta: float
    temperature: float


@dataclass(frozen=True)
class KDParams:
    """Keyword arguments of ``kd``."""

    temperature: float


LossParams = GDKDParams | GDKD3Params | DKDParams | KDParams

_PARAM_TYPES: dict[str, type] = {
    "gdkd": GDKDParams,
    "gdkd3": GDKD3Params,
    "dkd": DKDParams,
    "kd": KDParams,
}


@dataclass(frozen=True)
class Reference:
    """Published top-1 accuracies (%) for context; not from the GDKD paper (spec section 8).

    ``None`` where the source gives no number (CIFAR student baselines).
    """

    teacher_top1: float | None = None
    student_top1: float | None = None
    kd_top1: float | None = None
    dkd_top1: float | None = None
    source: str = ""


@dataclass(frozen=True)
class Preset:
    """One training recipe: a teacher/student pair, a distillation method and its optimizer.

    The total loss is ``ce_weight * CE + distill_weight * warmup(epoch) * L_method`` where
    ``warmup(epoch) = min(epoch / warmup_epochs, 1)`` (1-based epochs; no ramp when 0).
    The learning rate is multiplied by ``lr_decay_factor`` after each epoch in
    ``lr_decay_epochs`` (the new rate applies from the following epoch).
    ``weight_decay`` is coupled L2 as in ``torch.optim.SGD`` (see ``keras_gdkd.optimizers``).
    """

    name: str
    dataset: str
    method: str
    teacher: str
    student: str
    num_classes: int
    loss: LossParams
    ce_weight: float
    distill_weight: float
    warmup_epochs: int
    learning_rate: float
    lr_decay_epochs: tuple[int, ...]
    lr_decay_factor: float
    epochs: int
    batch_size: int
    weight_decay: float
    momentum: float
    reference: Reference = field(default_factory=Reference)
    notes: str = ""

    def loss_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the functional loss / loss class of ``self.method``."""
        return dataclasses.asdict(self.loss)

    def replace(self, **changes: Any) -> Preset:
        """A copy with some fields changed (records are frozen)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists); inverse of ``from_dict``."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        """Rebuild a preset from ``to_dict()`` output (e.g. read back from JSON)."""
        data = dict(data)
        method = data["method"]
        if method not in _PARAM_TYPES:
            raise ValueError(f"Unknown method {method!r}; expected one of {list(METHODS)}.")
        data["loss"] = _PARAM_TYPES[method](**data["loss"])
        data["lr_decay_epochs"] = tuple(data["lr_decay_epochs"])
        data["reference"] = Reference(**data.get("reference", {}))
        return cls(**data)

    def __str__(self) -> str:
        loss = ", ".join(f"{k}={v}" for k, v in self.loss_kwargs().items())
        decay = ", ".join(str(e) for e in self.lr_decay_epochs)
        ref = self.reference
        ref_parts = [
            f"{label} {value}"
            for label, value in (
                ("teacher", ref.teacher_top1),
                ("student", ref.student_top1),
                ("KD", ref.kd_top1),
                ("DKD", ref.dkd_top1),
            )
            if value is not None
        ]
        rows = [
            ("dataset", f"{self.dataset} ({self.num_classes} classes)"),
            ("teacher", self.teacher),
            ("student", self.student),
            ("method", self.method),
            ("loss", loss),
            ("ce_weight", self.ce_weight),
            ("distill_weight", self.distill_weight),
            ("warmup_epochs", self.warmup_epochs),
            ("learning_rate", self.learning_rate),
            ("lr_decay", f"x{self.lr_decay_factor} after epochs {decay}"),
            ("epochs", self.epochs),
            ("batch_size", self.batch_size),
            ("weight_decay", f"{self.weight_decay} (coupled L2)"),
            ("momentum", self.momentum),
            ("reference top-1", ", ".join(ref_parts) or "-"),
        ]
        if self.notes:
            rows.append(("notes", self.notes))
        width = max(len(key) for key, _ in rows)
        lines = [f"Preset {self.name!r} / {self.method}"]
        lines += [f"  {key:<{width}}  {value}" for key, value in rows]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The tables (spec section 5 and 8).
# --------------------------------------------------------------------------------------------

_CIFAR_SOURCE = "CRD/DKD releases, CIFAR-100 standard teachers"
_IMAGENET_SOURCE = "DKD release, ImageNet (torchvision teachers)"

# name: (teacher, student, lr, gdkd w1, gdkd w2, dkd beta, teacher top-1, KD top-1, DKD top-1)
_CIFAR_PAIRS: dict[str, tuple[str, str, float, float, float, float, float, float, float]] = {
    "res56_res20": ("resnet56", "resnet20", 0.05, 1.0, 1.0, 2.0, 72.34, 70.66, 71.97),
    "res110_res32": ("resnet110", "resnet32", 0.05, 1.0, 1.0, 2.0, 74.31, 73.08, 74.11),
    "res32x4_res8x4": ("resnet32x4", "resnet8x4", 0.05, 2.0, 8.0, 8.0, 79.42, 73.33, 76.32),
    "wrn40_2_wrn16_2": ("wrn_40_2", "wrn_16_2", 0.05, 2.0, 6.0, 6.0, 75.61, 74.92, 76.24),
    "wrn40_2_wrn40_1": ("wrn_40_2", "wrn_40_1", 0.05, 2.0, 6.0, 6.0, 75.61, 73.54, 74.81),
    "vgg13_vgg8": ("vgg13", "vgg8", 0.05, 1.0, 6.0, 6.0, 74.64, 72.98, 74.68),
    "res32x4_shuv1": ("resnet32x4", "shufflenetv1", 0.01, 1.0, 8.0, 8.0, 79.42, 74.07, 76.45),
    "res32x4_shuv2": ("resnet32x4", "shufflenetv2", 0.01, 1.0, 8.0, 8.0, 79.42, 74.45, 77.07),
    "wrn40_2_shuv1": ("wrn_40_2", "shufflenetv1", 0.01, 2.0, 6.0, 8.0, 75.61, 74.83, 76.70),
    "vgg13_mv2": ("vgg13", "mobilenetv2", 0.01, 1.0, 6.0, 6.0, 74.64, 67.37, 69.71),
    "res50_mv2": ("resnet50_cifar", "mobilenetv2", 0.01, 1.0, 8.0, 8.0, 79.34, 67.35, 70.35),
}

# name: (teacher, student, gdkd w1 = w2, dkd beta, teacher, student, KD, DKD top-1)
_IMAGENET_PAIRS: dict[str, tuple[str, str, float, float, float, float, float, float]] = {
    "res34_res18": ("resnet34", "resnet18", 1.0, 0.5, 73.31, 69.76, 71.03, 71.70),
    "res50_mv1": ("resnet50", "mobilenetv1", 2.0, 2.0, 76.16, 70.13, 70.50, 72.05),
}

_CIFAR_OPTIM = dict(
    lr_decay_epochs=(150, 180, 210),
    lr_decay_factor=0.1,
    epochs=240,
    batch_size=64,
    weight_decay=5e-4,
    momentum=0.9,
)
_IMAGENET_OPTIM = dict(
    learning_rate=0.2,  # for a global batch of 512; see optimizers.scale_lr
    lr_decay_epochs=(30, 60, 90),
    lr_decay_factor=0.1,
    epochs=100,
    batch_size=512,
    weight_decay=1e-4,
    momentum=0.9,
)


def _cifar_presets() -> dict[tuple[str, str], Preset]:
    out = {}
    for name, row in _CIFAR_PAIRS.items():
        teacher, student, lr, w1, w2, beta, t_top1, kd_top1, dkd_top1 = row
        common = dict(
            name=name,
            dataset="cifar100",
            teacher=teacher,
            student=student,
            num_classes=100,
            learning_rate=lr,
            reference=Reference(
                teacher_top1=t_top1, kd_top1=kd_top1, dkd_top1=dkd_top1, source=_CIFAR_SOURCE
            ),
            **_CIFAR_OPTIM,
        )
        distill = dict(ce_weight=1.0, distill_weight=1.0, warmup_epochs=20)
        out[name, "gdkd"] = Preset(
            method="gdkd",
            loss=GDKDParams(k=5, w0=1.0, w1=w1, w2=w2, temperature=4.0),
            **distill,
            **common,
        )
        out[name, "gdkd3"] = Preset(
            method="gdkd3",
            loss=GDKD3Params(k=4, w0=1.0, w1=w1, w2=w2, temperature=4.0),
            **distill,
            **common,
        )
        out[name, "dkd"] = Preset(
            method="dkd",
            loss=DKDParams(alpha=1.0, beta=beta, temperature=4.0),
            **distill,
            **common,
        )
        out[name, "kd"] = Preset(
            method="kd",
            loss=KDParams(temperature=4.0),
            ce_weight=0.1,
            distill_weight=0.9,
            warmup_epochs=0,
            **common,
        )
    return out


def _imagenet_presets() -> dict[tuple[str, str], Preset]:
    out = {}
    for name, row in _IMAGENET_PAIRS.items():
        teacher, student, w, beta, t_top1, s_top1, kd_top1, dkd_top1 = row
        common = dict(
            name=name,
            dataset="imagenet",
            teacher=teacher,
            student=student,
            num_classes=1000,
            reference=Reference(
                teacher_top1=t_top1,
                student_top1=s_top1,
                kd_top1=kd_top1,
                dkd_top1=dkd_top1,
                source=_IMAGENET_SOURCE,
            ),
            **_IMAGENET_OPTIM,
        )
        distill = dict(ce_weight=1.0, distill_weight=1.0, warmup_epochs=1)
        out[name, "gdkd"] = Preset(
            method="gdkd",
            loss=GDKDParams(k=5, w0=0.5, w1=w, w2=w, temperature=1.0),
            **distill,
            **common,
        )
        out[name, "gdkd3"] = Preset(
            method="gdkd3",
            loss=GDKD3Params(k=4, w0=0.5, w1=w, w2=w, temperature=1.0),
            notes="not in the authors' configs: ImageNet GDKD values with k=4 (CIFAR GDKD3 k)",
            **distill,
            **common,
        )
        out[name, "dkd"] = Preset(
            method="dkd",
            loss=DKDParams(alpha=1.0, beta=beta, temperature=1.0),
            **distill,
            **common,
        )
        out[name, "kd"] = Preset(
            method="kd",
            loss=KDParams(temperature=1.0),
            ce_weight=0.5,
            distill_weight=0.5,
            warmup_epochs=0,
            **common,
        )
    return out


_PRESETS: dict[tuple[str, str], Preset] = {**_cifar_presets(), **_imagenet_presets()}


def available(dataset: str | None = None) -> list[str]:
    """Names of the teacher/student pairs, optionally only those of ``dataset``.

    Every name is available for each method in ``METHODS``.
    """
    if dataset is not None and dataset not in ("cifar100", "imagenet"):
        raise ValueError(f"Unknown dataset {dataset!r}; expected 'cifar100' or 'imagenet'.")
    names: list[str] = []
    for (name, _), preset in _PRESETS.items():
        if name not in names and (dataset is None or preset.dataset == dataset):
            names.append(name)
    return names


def get(name: str, method: str = "gdkd") -> Preset:
    """The preset for pair ``name`` trained with ``method`` (``gdkd``, ``gdkd3``, ``dkd``, ``kd``).

    Raises:
        ValueError: for an unknown name or method; the message lists what exists.
    """
    key_name, key_method = str(name).strip().lower(), str(method).strip().lower()
    if key_method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; available methods: {', '.join(METHODS)}.")
    if (key_name, key_method) not in _PRESETS:
        raise ValueError(f"Unknown preset {name!r}; available presets: {', '.join(available())}.")
    return _PRESETS[key_name, key_method]


# The teachers' cross-entropy recipes: the CRD/DKD CIFAR teachers, torchvision's ImageNet one.
_TEACHER_RECIPES: dict[str, dict[str, Any]] = {
    "cifar100": dict(epochs=240, batch_size=64, learning_rate=0.05,
                     lr_decay_epochs=(150, 180, 210), weight_decay=5e-4, momentum=0.9),
    "imagenet": dict(epochs=90, batch_size=256, learning_rate=0.1, lr_decay_epochs=(30, 60),
                     weight_decay=1e-4, momentum=0.9),
}  # fmt: skip


def teacher_recipe(dataset: str) -> dict[str, Any]:
    """Keyword arguments of ``keras_gdkd.train.train_teacher`` for ``dataset``'s teachers.

    Example:
        >>> teacher_recipe("imagenet")["learning_rate"]
        0.1
    """
    if dataset not in _TEACHER_RECIPES:
        raise ValueError(f"Unknown dataset {dataset!r}; expected 'cifar100' or 'imagenet'.")
    return dict(_TEACHER_RECIPES[dataset])
