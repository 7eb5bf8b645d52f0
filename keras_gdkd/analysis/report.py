"""The whole analysis of a teacher and its students: ``analysis.json``, ``arrays.npz``, figures.

:func:`analyze_logits` works on logits already computed (numpy arrays or npz dumps);
:func:`analyze_models` first runs the models over a dataset in one pass. Both write, into
``output``:

- ``analysis.json``: ``meta`` (sizes, loss parameters, sources, versions), ``teacher`` (the
  teacher's predictive distribution), and ``students.{LABEL}.{agreement, gradients,
  class_mean}``. Strict JSON: a value that is NaN or infinite is written as ``null``.
- ``arrays.npz``: the per-sample arrays and the class-mean matrices, keyed by their place in
  the JSON tree joined with ``/`` (e.g. ``teacher/per_sample/autok/T=4``); ``labels`` too.
- ``figures/*.png``: see :mod:`keras_gdkd.analysis.plots`.

Every file is written to a temporary name and renamed, so an interrupted analysis leaves no
half-written file.
"""

from __future__ import annotations

import importlib.metadata
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from keras_gdkd.runs.files import atomic_path, atomic_write_text

GDKD_DEFAULTS = {"k": 5, "w0": 1.0, "w1": 1.0, "w2": 8.0, "temperature": 4.0}
FIGURE_STYLES = ("dkd", "gdkd")
CLASS_MEAN_MODES = {"logits": 1.0, "probs": 1.0}  # mode -> temperature (the authors' T=1)


def loss_parameters(loss: Any = None, num_classes: int | None = None) -> dict[str, Any]:
    """The GDKD parameters the analysis measures with, taken from a loss object.

    Args:
        loss: a ``keras_gdkd`` loss object (``keras_gdkd.losses.get(...)``, a preset's
            ``loss``) or ``None`` for GDKD's defaults (k=5, w0=1, w1=1, w2=8, T=4). Values the
            loss does not have (DKD has no k, KD no weights) keep GDKD's defaults.
        num_classes: when given, k must be below it (a default k is lowered to ``C - 1``).

    Returns:
        ``{"name", "config", "k", "w0", "w1", "w2", "temperature", "from_loss": [...]}``,
        ``from_loss`` naming the values that came from the loss.

    Raises:
        ValueError: k is not in ``[1, C - 1]`` or the temperature is not positive.
    """
    config = dict(loss.get_config()) if loss is not None else {}
    params = dict(GDKD_DEFAULTS)
    taken = []
    for name in GDKD_DEFAULTS:
        value = config.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            params[name] = value
            taken.append(name)
    params["k"] = int(params["k"])
    for name in ("w0", "w1", "w2", "temperature"):
        params[name] = float(params[name])
    if num_classes is not None and params["k"] >= num_classes:
        if "k" in taken:
            raise ValueError(
                f"k={params['k']} leaves no class outside the teacher's top-k with "
                f"{num_classes} classes; expected 1 <= k <= {num_classes - 1}."
            )
        params["k"] = max(1, num_classes - 1)
    if params["k"] < 1:
        raise ValueError(f"k must be >= 1; got {params['k']}.")
    if not (math.isfinite(params["temperature"]) and params["temperature"] > 0):
        raise ValueError(f"the temperature must be positive; got {params['temperature']}.")
    name = None
    if loss is not None:
        name = getattr(loss, "name", None) or type(loss).__name__.lower()
    return {
        "name": name or "gdkd (defaults)",
        "config": _jsonable(config),
        **params,
        "from_loss": taken,
    }


def analyze_logits(
    teacher_logits: Any,
    student_logits: Mapping[str, Any],
    labels: Any,
    *,
    num_classes: int | None = None,
    loss: Any = None,
    temperatures: tuple[float, ...] = (1.0, 4.0),
    ratio_threshold: float = 2.0,
    figure_style: str = "dkd",
    output: str | Path | None = None,
    meta: Mapping[str, Any] | None = None,
    return_arrays: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Teacher statistics, teacher-student agreement, gradient shares and class-mean gaps.

    Args:
        teacher_logits: ``(N, C)`` teacher logits.
        student_logits: ``{label: (N, C) logits}``, rows aligned with the teacher's.
        labels: ``(N,)`` integer labels in ``[0, C)``.
        num_classes: C; default ``teacher_logits.shape[1]`` (must equal it when given).
        loss: the loss whose k, w0, w1, w2 and temperature the GDKD terms and gradient shares
            use (see :func:`loss_parameters`); ``None``: GDKD's defaults.
        temperatures: the temperatures of the teacher statistics and the KL values.
        ratio_threshold: the autok rule's threshold (and ``n_within``'s ratio).
        figure_style: ``"dkd"``: class means of raw logits, all students on one colour scale
            (the largest off-diagonal gap over the students), so panels compare;
            ``"gdkd"``: class means of ``softmax(z)``, each panel scaled by its own maximum
            times 4, as the GDKD authors draw them.
        output: a folder for ``analysis.json``, ``arrays.npz`` and ``figures/``; ``None``
            writes nothing.
        meta: extra entries for ``meta`` (dataset, split, model sources, ...).
        return_arrays: also return the per-sample arrays.

    Returns:
        The content of ``analysis.json`` (plain JSON types; NaN and infinity are ``None``),
        or ``(that, arrays)`` with ``return_arrays=True``, ``arrays`` as in ``arrays.npz``.

    Raises:
        ValueError: shapes that do not match, labels outside ``[0, C)``, a bad k, temperature,
            ratio or figure style.

    Example:
        >>> report = analyze_logits(t, {"kd": s_kd, "gdkd": s_gdkd}, y,
        ...                         output="runs/analysis")  # doctest: +SKIP
        >>> report["students"]["gdkd"]["gradients"]  # doctest: +SKIP
    """
    from keras_gdkd.analysis import agreement, class_mean, gradients, teacher

    t, students, y, num_classes = _check_inputs(teacher_logits, student_logits, labels, num_classes)
    temperatures = _check_temperatures(temperatures)
    if not (math.isfinite(ratio_threshold) and ratio_threshold > 1.0):
        raise ValueError(f"ratio_threshold must be a number above 1; got {ratio_threshold}.")
    if figure_style not in FIGURE_STYLES:
        raise ValueError(f"figure_style must be 'dkd' or 'gdkd'; got {figure_style!r}.")
    params = loss_parameters(loss, num_classes)
    k, temperature = params["k"], params["temperature"]
    weights = {name: params[name] for name in ("w0", "w1", "w2")}

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        full: dict[str, Any] = {
            "teacher": teacher.teacher_distribution_stats(
                t, y, k=k, temperatures=temperatures, ratio_threshold=ratio_threshold
            ),
            "students": {},
        }
        for label, s in students.items():
            full["students"][label] = {
                "agreement": agreement.agreement_stats(
                    s, t, y, k=k, temperature=temperature, temperatures=temperatures, **weights
                ),
                "gradients": gradients.gradient_shares(
                    s, t, y, k=k, temperature=temperature, partition="topk", **weights
                ),
                "class_mean": {
                    mode: class_mean.class_mean_discrepancy(
                        s, t, y, num_classes, mode=mode, temperature=mode_temperature
                    )
                    for mode, mode_temperature in CLASS_MEAN_MODES.items()
                },
            }
    # Each warning once, not once per student and mode. Only the notes meant for the user
    # (UserWarning: empty classes, ...) are recorded; numpy's floating-point notes (a 0/0 that
    # becomes null) and libraries' deprecations are passed on only.
    seen = {}
    for w in caught:
        seen.setdefault((str(w.message), w.category), None)
    for message, category in seen:
        warnings.warn(message, category, stacklevel=2)
    notes = [m for m, category in seen if issubclass(category, UserWarning)]

    counts = np.bincount(y, minlength=num_classes)
    full["meta"] = {
        "num_examples": int(t.shape[0]),
        "num_classes": num_classes,
        "classes_without_examples": int((counts == 0).sum()),
        "loss": params,
        "temperatures": list(temperatures),
        "ratio_threshold": float(ratio_threshold),
        "figure_style": figure_style,
        "students": list(students),
        "versions": _versions(),
        **dict(meta or {}),
        "warnings": notes,
    }
    arrays: dict[str, np.ndarray] = {"labels": y}
    tree = _jsonable(_split(full, arrays, ()))
    document = {"meta": tree.pop("meta"), **tree}

    if output is not None:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        figures, figures_note = _plot(full, out / "figures", figure_style)
        document["meta"]["figures"] = figures
        if figures_note:
            document["meta"]["figures_note"] = figures_note
        document["meta"]["arrays"] = {key: list(value.shape) for key, value in arrays.items()}
        with atomic_path(out / "arrays.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
        atomic_write_text(out / "analysis.json", to_json(document))
    return (document, arrays) if return_arrays else document


def analyze_models(
    teacher: Any,
    students: Mapping[str, Any],
    dataset: Any,
    *,
    max_examples: int | None = None,
    logits_dir: str | Path | None = None,
    **analyze_logits_kwargs: Any,
) -> dict[str, Any]:
    """Runs the teacher and the students over ``dataset`` in one pass, then analyses the logits.

    Args:
        teacher: the teacher ``keras.Model``.
        students: ``{label: keras.Model}`` (a saved ``Distiller`` counts as its student).
        dataset: batches of ``(images, labels)`` (a ``tf.data.Dataset`` or any iterable).
        max_examples: stop after this many examples.
        logits_dir: where to save ``{teacher,LABEL}.npz``; default ``output/logits`` when an
            ``output`` is given, else nowhere.
        **analyze_logits_kwargs: passed to :func:`analyze_logits` (``loss``, ``output``, ...).

    Returns:
        What :func:`analyze_logits` returns.

    Raises:
        ValueError: a student labelled ``"teacher"``, and what :func:`analyze_logits` raises.
    """
    from keras_gdkd.analysis import logits as logits_io

    if "teacher" in students:
        raise ValueError(
            "'teacher' names the teacher's logits file; give the student another label."
        )
    if not students:
        raise ValueError("no students given; expected {label: keras.Model}.")
    models = {"teacher": teacher, **students}
    logits, labels = logits_io.collect_logits(models, dataset, max_examples=max_examples)
    output = analyze_logits_kwargs.get("output")
    if logits_dir is None and output is not None:
        logits_dir = Path(output) / "logits"
    if logits_dir is not None:
        Path(logits_dir).mkdir(parents=True, exist_ok=True)
        for label, values in logits.items():
            logits_io.save_logits(Path(logits_dir) / f"{label}.npz", values, labels)
    student_logits = {label: logits[label] for label in students}
    return analyze_logits(logits["teacher"], student_logits, labels, **analyze_logits_kwargs)


def load_report(folder: str | Path) -> dict[str, Any]:
    """An analysis written by :func:`analyze_logits`, with its arrays back in place.

    The arrays of ``arrays.npz`` are put back at the places of the JSON tree their keys name,
    so the result can be drawn again, e.g. in the other figure style:
    ``plots.plot_all(load_report(out), out / "figures", figure_style="gdkd")``. Values that
    were NaN stay ``None``.

    Args:
        folder: the ``output`` folder of :func:`analyze_logits`.

    Returns:
        The analysis, with ``labels`` at the top level.

    Raises:
        ValueError: a missing or unreadable ``analysis.json`` or ``arrays.npz``.
    """
    from keras_gdkd.runs.files import read_json

    folder = Path(folder)
    document = read_json(folder / "analysis.json")
    try:
        arrays = np.load(folder / "arrays.npz", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder / 'arrays.npz'} is not a readable npz file ({error})") from error
    with arrays:
        for key in arrays.files:
            *parents, name = key.split("/")
            node = document
            for part in parents:
                node = node.setdefault(part, {})
            node[name] = arrays[key]
    return document


def to_json(document: Any) -> str:
    """``document`` as strict, indented JSON: NaN and infinity become ``null``, numpy values
    plain numbers and lists."""
    import json

    return json.dumps(_jsonable(document), indent=2, allow_nan=False) + "\n"


# --- helpers --------------------------------------------------------------------------------


def _check_inputs(teacher_logits, student_logits, labels, num_classes):
    t = np.asarray(teacher_logits, dtype=np.float32)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] < 2:
        raise ValueError(
            f"teacher logits must have shape (N, C) with N >= 1 and C >= 2; got {t.shape}."
        )
    if num_classes is None:
        num_classes = int(t.shape[1])
    elif int(num_classes) != t.shape[1]:
        raise ValueError(f"num_classes={num_classes} but the logits have {t.shape[1]} columns.")
    if not isinstance(student_logits, Mapping) or not student_logits:
        raise ValueError("student_logits must be a non-empty mapping {label: (N, C) logits}.")
    students = {}
    for label, values in student_logits.items():
        s = np.asarray(values, dtype=np.float32)
        if s.shape != t.shape:
            raise ValueError(
                f"student {label!r} logits have shape {s.shape}; expected the teacher's {t.shape}."
            )
        students[str(label)] = s
    for name, values in (("teacher", t), *students.items()):
        if not np.isfinite(values).all():
            raise ValueError(f"the {name} logits hold NaN or infinite values.")
    y = np.asarray(labels)
    if y.shape != (t.shape[0],):
        raise ValueError(f"labels must have shape ({t.shape[0]},); got {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.mod(y, 1) == 0):
            raise ValueError("labels must be integer class indices.")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}); got values from {y.min()} to {y.max()}."
        )
    return t, students, y, int(num_classes)


def _check_temperatures(temperatures) -> tuple[float, ...]:
    values = tuple(float(x) for x in np.atleast_1d(temperatures))
    if not values or not all(math.isfinite(x) and x > 0 for x in values):
        raise ValueError(f"temperatures must be positive numbers; got {temperatures}.")
    return tuple(dict.fromkeys(values))


def _is_array(value) -> bool:
    return isinstance(value, np.ndarray) or (
        hasattr(value, "shape") and hasattr(value, "dtype") and len(value.shape) > 0
    )


def _split(node: Any, arrays: dict[str, np.ndarray], path: tuple[str, ...]) -> Any:
    """``node`` without its per-sample arrays and matrices, which go to ``arrays``.

    Everything under a ``per_sample`` key, and every array of two or more axes, is moved;
    the remaining (short, per-class or per-k) vectors stay in the JSON as lists.
    """
    if isinstance(node, Mapping):
        kept = {}
        for key, value in node.items():
            sub = (*path, str(key))
            if str(key) == "per_sample" or (_is_array(value) and np.ndim(value) >= 2):
                _collect(value, arrays, sub)
            else:
                kept[str(key)] = _split(value, arrays, sub)
        return kept
    if isinstance(node, (list, tuple)) and not _is_array(node):
        return [_split(v, arrays, (*path, str(i))) for i, v in enumerate(node)]
    return node


def _collect(node: Any, arrays: dict[str, np.ndarray], path: tuple[str, ...]) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            _collect(value, arrays, (*path, str(key)))
    elif node is not None:
        arrays["/".join(path)] = np.asarray(node)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # a backend tensor
        return _jsonable(np.asarray(value))
    return str(value)


def _plot(full: dict, folder: Path, style: str) -> tuple[list[str], str | None]:
    from keras_gdkd.analysis import plots

    try:
        written = plots.plot_all(full, folder, figure_style=style)
    except plots.MatplotlibMissing as error:
        warnings.warn(str(error), stacklevel=3)
        return [], str(error)
    return [p.name for p in written], None


def _versions() -> dict[str, str]:
    found = {"numpy": np.__version__}
    for name in ("keras", "keras-gdkd", "matplotlib"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import keras

        found["backend"] = keras.backend.backend()
    except ImportError:
        pass
    return found
