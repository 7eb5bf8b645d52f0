"""Hyper-parameter sweeps: one distillation per (method, value, seed), summarised over seeds.

A sweep trains every method of a preset at every value of one loss hyper-parameter, over a
few seeds, on a shortened schedule, and records best and last top-1 per run::

    keras-gdkd sweep --preset res56_res20 --methods gdkd dkd --param temperature \\
        --values 1 2 4 8 --epochs 30 --seeds 0 1 2 --teacher-weights W --data-dir D --output OUT

The preset's learning-rate decays and warm-up are rescaled to the shorter run with Python's
``round`` (240 -> 30 epochs: decays (150, 180, 210) -> (19, 22, 26), warm-up 20 -> 2); decays
that land on or after the last epoch are dropped, since they would never take effect. Runs go
to ``OUT/{method}/{param}={value}/seed{seed}/`` (ordinary run folders: running the same
command again resumes an interrupted run and skips finished ones). ``OUT/sweep.json`` is
rewritten after every run, so a killed sweep keeps what it has measured, and
``OUT/sweep_{param}.png`` plots best top-1 against the value.

``param="method"`` sweeps over methods instead (``--values gdkd gdkd_v1 gdkd_v2 gdkd_v3``
compares fixed and dynamic weights).

This module imports no Keras at import time: the command line parses its arguments first.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from keras_gdkd import presets
from keras_gdkd.arguments import positive_float, positive_int
from keras_gdkd.runs.errors import RunError
from keras_gdkd.runs.files import atomic_path, atomic_write_json, read_json
from keras_gdkd.runs.lock import RunLock

__all__ = [
    "SWEEP_FILE",
    "add_arguments",
    "format_summary",
    "main",
    "plot_sweep",
    "rescale_schedule",
    "run_sweep",
    "summarize",
]

SWEEP_FILE = "sweep.json"
# Parameters whose values are spaced by factors of two: plotted on a log2 axis.
LOG2_PARAMS = ("temperature", "k")
# Keyword arguments run_sweep passes on to keras_gdkd.train.distill.
DISTILL_OPTIONS = ("batch_size", "learning_rate", "mixed_precision", "devices", "verbose", "force")

Runner = Callable[[str, "presets.Preset", int, Path], Mapping[str, Any]]


# --- the schedule --------------------------------------------------------------------------


def rescale_schedule(
    lr_decay_epochs: Sequence[int], warmup_epochs: int, base_epochs: int, epochs: int
) -> tuple[tuple[int, ...], int]:
    """A schedule of ``base_epochs`` epochs shrunk (or stretched) to ``epochs``.

    Each decay epoch ``e`` becomes ``round(e * epochs / base_epochs)`` (Python's ``round``,
    halves to even); those at or after ``epochs`` are dropped, since a decay after the last
    epoch never takes effect. A non-zero warm-up becomes ``max(1, round(w * epochs /
    base_epochs))``; no warm-up stays none.

    Args:
        lr_decay_epochs: the preset's decay epochs (1-based; the rate falls after each).
        warmup_epochs: the preset's warm-up of the distillation weight.
        base_epochs: the preset's length.
        epochs: the sweep's length.

    Returns:
        ``(decay_epochs, warmup_epochs)`` for ``epochs`` epochs.

    Raises:
        ValueError: the decays before the last epoch do not stay distinct epochs >= 1 (a
            length a little below the decays' spacing times 8 for the CIFAR schedule); the
            message names the next length that works.

    Example:
        >>> rescale_schedule((150, 180, 210), 20, 240, 30)
        ((19, 22, 26), 2)
    """
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1; got {epochs}.")
    if int(base_epochs) != base_epochs or base_epochs < 1:
        raise ValueError(f"the preset's epochs must be an integer >= 1; got {base_epochs}.")
    decays = _scaled_decays(lr_decay_epochs, base_epochs, epochs)
    if decays is None:
        shortest = next(
            (
                n
                for n in range(epochs + 1, 10 * base_epochs + 1)
                if _scaled_decays(lr_decay_epochs, base_epochs, n) is not None
            ),
            None,
        )
        scaled = [round(e * epochs / base_epochs) for e in lr_decay_epochs]
        raise ValueError(
            f"{epochs} epochs are too few to rescale the decay epochs {tuple(lr_decay_epochs)} "
            f"of a {base_epochs}-epoch schedule: they become {tuple(scaled)}, which are not "
            "distinct epochs >= 1"
            + (f"; the next length that works is {shortest} epochs." if shortest else ".")
        )
    warmup = max(1, round(warmup_epochs * epochs / base_epochs)) if warmup_epochs else 0
    return decays, warmup


def _scaled_decays(decays: Sequence[int], base: int, epochs: int) -> tuple[int, ...] | None:
    scaled = [round(e * epochs / base) for e in decays]
    kept = [e for e in scaled if e < epochs]
    if any(e < 1 for e in kept) or any(a >= b for a, b in zip(kept, kept[1:])):
        return None
    return tuple(kept)


# --- the sweep -----------------------------------------------------------------------------


def run_sweep(
    preset: presets.Preset | Mapping[str, presets.Preset],
    param: str,
    values: Sequence[Any],
    *,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    epochs: int,
    data: Any = None,
    teacher_weights: str | None = None,
    output: str | Path,
    runner: Runner | None = None,
    loss_overrides: Mapping[str, Any] | None = None,
    **distill_kwargs: Any,
) -> dict[str, Any]:
    """Trains every (method, value, seed) of a grid and summarises top-1 over seeds.

    The whole grid is checked before the first run: ``param`` must be a hyper-parameter of
    every method's loss, and every value valid for it (``k`` within the classes, ``T > 0``,
    ...). Each run uses the method's preset with ``param`` set, ``epochs`` epochs and the
    schedule rescaled by :func:`rescale_schedule`; it goes to
    ``output/{method}/{param}={value}/seed{seed}/``. A run whose ``results.json`` says
    ``complete`` with ``epochs`` epochs is skipped, an interrupted one resumes (as
    :func:`keras_gdkd.train.distill` does). ``output/sweep.json`` is rewritten atomically after
    every run.

    Args:
        preset: the recipe (``keras_gdkd.presets.get(name, method)``, possibly with overrides
            such as another student). For each other method, that method's preset of the same
            name gets the same overrides. A mapping ``{method: Preset}`` gives every method's
            recipe explicitly (for a recipe that is not in the registry).
        param: the loss hyper-parameter to vary (``"temperature"``, ``"k"``, ``"w0"``,
            ``"w1"``, ``"w2"``, ``"alpha"``, ``"beta"``, ...), or ``"method"`` to run the
            methods named in ``values`` with their presets unchanged.
        values: the values of ``param`` (numbers, or strings such as the command line gives;
            they are converted to the parameter's type).
        methods: the methods to run (default: ``preset.method``, or the mapping's keys). Not
            allowed with ``param="method"``.
        seeds: one run per seed (the data order, augmentation and initial weights).
        epochs: epochs of every run.
        data: a :class:`keras_gdkd.train.DataSpec` (its seed is replaced by each run's);
            needed by the default runner only.
        teacher_weights: the teacher file, as for ``distill``; default runner only.
        output: the sweep folder.
        runner: ``runner(method, preset, seed, out) -> {"best_top1", "last_top1"}`` trains one
            run into folder ``out`` (top-1 in %). Default: ``keras_gdkd.train.distill``. A
            runner that writes no ``results.json`` gets a small one written for it, so that
            finished runs are skipped on the next call.
        loss_overrides: other loss hyper-parameters fixed for every run, e.g. ``{"k": 10}``
            while sweeping the temperature; every method must have them.
        **distill_kwargs: passed to ``distill`` (``batch_size``, ``learning_rate``,
            ``mixed_precision``, ``devices``, ``verbose``, ``force``); default runner only.

    Returns:
        The contents of ``sweep.json``: ``param``, ``values``, ``epochs``, ``methods``,
        ``seeds``, ``preset``, ``schedule``, ``teacher_top1`` (the preset's published value or
        ``None``), ``runs`` (``[{method, value, seed, best_top1, last_top1, wall_time_s}]``)
        and ``summary`` (``{method: {value: {mean, std, n, last_mean, last_std}}}``: best
        top-1 mean and sample standard deviation over seeds, the same for the last epoch; the
        value keys are the folder labels, e.g. ``"4"`` for ``temperature=4.0``).

    Raises:
        ValueError: an invalid grid (unknown method or parameter, a value out of range,
            repeated values or seeds, too few epochs to rescale the schedule), before any run.
        RunError: a run failed (see ``distill``), or the folder holds a sweep of another
            parameter or length.

    Example:
        >>> from keras_gdkd import presets, train   # doctest: +SKIP
        >>> run_sweep(presets.get("res56_res20", "gdkd"), "temperature", [1, 2, 4, 8],
        ...           methods=["gdkd", "dkd"], seeds=[0, 1], epochs=30,
        ...           data=train.DataSpec("cifar100", "~/data"),
        ...           teacher_weights="resnet56.pth", output="runs/sweep_t")
    """
    output = Path(output)
    grid = _plan(preset, param, values, methods, seeds, epochs, loss_overrides)
    runner = _resolve_runner(runner, grid, data, teacher_weights, distill_kwargs)
    _say(_describe_schedule(grid))

    output.mkdir(parents=True, exist_ok=True)
    with RunLock(output):
        _check_previous(output / SWEEP_FILE, param, epochs)
        sweep = {
            "param": param,
            "values": [v for v, _ in grid.values],
            "epochs": epochs,
            "methods": list(grid.methods),
            "seeds": list(grid.seeds),
            "preset": grid.name,
            "schedule": grid.schedule,
            "teacher_top1": grid.teacher_top1,
            "runs": [],
            "summary": {},
        }
        total = len(grid.runs)
        for index, (method, value, label, seed, run_preset) in enumerate(grid.runs, 1):
            out = output / method / f"{param}={label}" / f"seed{seed}"
            where = f"[{index}/{total}] {method} {param}={label} seed {seed}"
            done = _finished(out, epochs)
            if done is not None:
                result, seconds, verb = done, float(done.get("wall_time_s") or 0.0), "finished"
            else:
                out.mkdir(parents=True, exist_ok=True)
                start = time.perf_counter()
                result = _check_result(runner(method, run_preset, seed, out), where)
                seconds = float(result.get("wall_time_s") or time.perf_counter() - start)
                if not (out / "results.json").exists():
                    atomic_write_json(
                        out / "results.json",
                        {
                            "status": "complete",
                            "epochs": epochs,
                            "epochs_completed": epochs,
                            "method": method,
                            param: value,
                            "seed": seed,
                            "best_top1": result["best_top1"],
                            "last_top1": result["last_top1"],
                            "wall_time_s": seconds,
                        },
                    )
                verb = "done"
            sweep["runs"].append(
                {
                    "method": method,
                    "value": value,
                    "seed": seed,
                    "best_top1": _number(result.get("best_top1")),
                    "last_top1": _number(result.get("last_top1")),
                    "wall_time_s": seconds,
                }
            )
            sweep["summary"] = summarize(sweep["runs"], grid.values)
            atomic_write_json(output / SWEEP_FILE, sweep)
            _say(
                f"{where}: {verb}, best top-1 {_percent(result.get('best_top1'))}, last "
                f"{_percent(result.get('last_top1'))} ({seconds:.0f} s)"
            )
    return sweep


def summarize(runs: Sequence[Mapping[str, Any]], values=None) -> dict[str, dict[str, dict]]:
    """``{method: {value label: {mean, std, n, last_mean, last_std}}}`` of best/last top-1.

    ``std`` is the sample standard deviation over seeds (0 for one seed). Runs without a
    top-1 (``None``) are left out of ``n``.

    Args:
        runs: the ``runs`` list of a sweep.
        values: ``[(value, label)]`` in the order to list them (default: as the runs come).
    """
    order = {v: label for v, label in values} if values else {}
    out: dict[str, dict[str, dict]] = {}
    for run in runs:
        label = order.get(run["value"], _label(run["value"]))
        out.setdefault(run["method"], {}).setdefault(label, {"best": [], "last": []})
        cell = out[run["method"]][label]
        for key in ("best", "last"):
            if run.get(f"{key}_top1") is not None:
                cell[key].append(float(run[f"{key}_top1"]))
    for per_value in out.values():
        for label, cell in per_value.items():
            best, last = cell["best"], cell["last"]
            per_value[label] = {
                "mean": statistics.fmean(best) if best else None,
                "std": statistics.stdev(best) if len(best) > 1 else 0.0 if best else None,
                "n": len(best),
                "last_mean": statistics.fmean(last) if last else None,
                "last_std": statistics.stdev(last) if len(last) > 1 else 0.0 if last else None,
            }
    return out


@dataclasses.dataclass
class _Grid:
    name: str
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    values: list[tuple[Any, str]]  # (value, folder label)
    runs: list[tuple[str, Any, str, int, Any]]  # (method, value, label, seed, preset)
    schedule: dict[str, Any]
    teacher_top1: float | None
    num_classes: int
    dataset: str


def _plan(preset, param, values, methods, seeds, epochs, loss_overrides=None) -> _Grid:
    """Every run's preset, or ValueError for the first thing wrong with the grid."""
    if not isinstance(param, str) or not param:
        raise ValueError(f"param must be a loss hyper-parameter name or 'method'; got {param!r}.")
    values = list(values) if not isinstance(values, str) else [values]
    if not values:
        raise ValueError(f"no values given for {param}.")
    seeds = _check_seeds(seeds)
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1; got {epochs}.")
    epochs = int(epochs)
    explicit = dict(preset) if isinstance(preset, Mapping) else None
    base = next(iter(explicit.values())) if explicit else preset
    if explicit is not None and not explicit:
        raise ValueError("the mapping of presets is empty.")

    if param == "method":
        if methods is not None:
            raise ValueError(
                "with param='method' the methods are the values; do not pass methods as well."
            )
        methods = [str(v).strip().lower() for v in values]
    elif methods is None:
        methods = list(explicit) if explicit else [preset.method]
    else:
        methods = [
            str(m).strip().lower() for m in ([methods] if isinstance(methods, str) else methods)
        ]
    if not methods:
        raise ValueError("no methods given.")
    _check_unique("methods", methods)
    stock = {m: _method_preset(preset, explicit, m) for m in methods}

    schedule: dict[str, Any] = {
        "base_epochs": base.epochs,
        "epochs": epochs,
        "base_lr_decay_epochs": list(base.lr_decay_epochs),
        "lr_decay_epochs": None,
        "warmup_epochs": {},
    }
    runs, labelled = [], []
    if param == "method":
        labelled = [(m, m) for m in methods]
    for m in methods:
        p = stock[m]
        if loss_overrides:
            if param in loss_overrides:
                raise ValueError(f"{param} is the swept parameter; do not also fix it.")
            try:
                p = p.replace(loss_config={**p.loss_config, **loss_overrides})
            except ValueError as error:
                raise ValueError(f"the fixed loss parameters do not fit {m}: {error}") from None
        decays, warmup = rescale_schedule(p.lr_decay_epochs, p.warmup_epochs, p.epochs, epochs)
        schedule["lr_decay_epochs"] = list(decays)
        schedule["warmup_epochs"][m] = {"base": p.warmup_epochs, "rescaled": warmup}
        p = p.replace(epochs=epochs, lr_decay_epochs=decays, warmup_epochs=warmup)
        p.loss.check_num_classes(p.num_classes)
        if param == "method":
            runs += [(m, m, m, s, p) for s in seeds]
            continue
        converted = []
        for v in values:
            loss = _with_value(p.loss, m, param, v, p.num_classes)
            converted.append((loss.get_config()[param], loss))
        if not labelled:
            labelled = [(v, _label(v)) for v, _ in converted]
            _check_unique(param, [label for _, label in labelled])
        for (value, label), (_, loss) in zip(labelled, converted):
            runs += [(m, value, label, s, p.replace(loss=loss)) for s in seeds]
    # Method-major, then value, then seed: a stopped sweep has whole curves, not scattered dots.
    return _Grid(
        name=base.name,
        methods=tuple(methods),
        seeds=seeds,
        values=labelled,
        runs=runs,
        schedule=schedule,
        teacher_top1=base.reference.teacher_top1,
        num_classes=base.num_classes,
        dataset=base.dataset,
    )


def _method_preset(preset, explicit, method: str):
    """The preset of ``method``: given, from the mapping, or the registry's with the overrides
    that ``preset`` carries (student, learning rate, batch size, ...)."""
    if explicit is not None:
        if method not in explicit:
            raise ValueError(
                f"no preset for method {method!r}; the mapping has {', '.join(explicit)}."
            )
        return explicit[method]
    if method == preset.method:
        return preset
    if method not in presets.METHODS:
        raise ValueError(
            f"unknown method {method!r}; expected one of {', '.join(presets.METHODS)}."
        )
    own = presets.get(preset.name, preset.method)
    other = presets.get(preset.name, method)
    # The loss, its weights and the warm-up belong to the method; everything else (student,
    # optimizer, data) is the pair's and follows the given preset.
    per_method = {"method", "loss_config", "ce_weight", "distill_weight", "warmup_epochs", "notes"}
    overrides = {
        f.name: getattr(preset, f.name)
        for f in dataclasses.fields(preset)
        if f.name not in per_method and getattr(preset, f.name) != getattr(own, f.name)
    }
    return other.replace(**overrides)


def _with_value(loss, method: str, param: str, value, num_classes: int):
    config = loss.get_config()
    if param not in config:
        raise ValueError(
            f"{param!r} is not a hyper-parameter of {method}'s loss; it has "
            f"{', '.join(config)}. Choose methods that all have {param!r}, or sweep one method."
        )
    try:
        changed = loss.replace(**{param: _coerce(value, config[param], param)})
        changed.check_num_classes(num_classes)
    except ValueError as error:
        raise ValueError(f"{param}={value!r} is not valid for {method}: {error}") from error
    return changed


def _coerce(value, like, param: str):
    """``value`` (a number or the command line's string) as the type of ``like``."""
    if isinstance(like, bool):
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        if isinstance(value, bool):
            return value
        raise ValueError(f"{param} takes true or false; got {value!r}.")
    if isinstance(like, int):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{param} takes integers; got {value!r}.") from None
        if not number.is_integer():
            raise ValueError(f"{param} takes integers; got {value!r}.")
        return int(number)
    if isinstance(like, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{param} takes numbers; got {value!r}.") from None
    return value


def _label(value) -> str:
    """The folder and summary name of a value: ``4.0`` -> ``"4"``, ``0.5`` -> ``"0.5"``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def _check_seeds(seeds) -> tuple[int, ...]:
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if not seeds:
        raise ValueError("no seeds given.")
    for s in seeds:
        if isinstance(s, bool) or int(s) != s or s < 0:
            raise ValueError(f"seeds must be integers >= 0; got {s!r}.")
    seeds = [int(s) for s in seeds]
    _check_unique("seeds", seeds)
    return tuple(seeds)


def _check_unique(what: str, items) -> None:
    repeated = sorted({str(i) for i in items if list(items).count(i) > 1})
    if repeated:
        raise ValueError(f"{what} repeat {', '.join(repeated)}; give each once.")


def _resolve_runner(runner, grid: _Grid, data, teacher_weights, distill_kwargs) -> Runner:
    unknown = sorted(set(distill_kwargs) - set(DISTILL_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)}; run_sweep passes on "
            f"{', '.join(DISTILL_OPTIONS)} to distill."
        )
    if runner is not None:
        if distill_kwargs:
            raise ValueError(
                f"{', '.join(distill_kwargs)} are options of the default runner (distill); "
                "a custom runner takes its own."
            )
        if not callable(runner):
            raise ValueError(f"runner must be callable; got {runner!r}.")
        return runner

    from keras_gdkd import train

    if not isinstance(data, train.DataSpec):
        raise ValueError(f"data must be a keras_gdkd.train.DataSpec; got {data!r}.")
    if data.dataset != grid.dataset:
        raise ValueError(f"preset {grid.name} is for {grid.dataset}, not {data.dataset}.")
    if teacher_weights is None or not Path(teacher_weights).is_file():
        raise RunError(
            f"teacher weights file not found: {teacher_weights}",
            hint="pass --teacher-weights with a .keras, .pth, .pt or .npz file",
        )
    # The batch size and learning rate are checked now rather than at the first run.
    first = grid.runs[0][4]
    train.resolve_preset(
        first,
        batch_size=distill_kwargs.get("batch_size"),
        learning_rate=distill_kwargs.get("learning_rate"),
    )

    def distill_runner(method, preset, seed, out):
        return train.distill(
            preset,
            data=dataclasses.replace(data, seed=seed),
            teacher_weights=str(teacher_weights),
            output=out,
            **distill_kwargs,
        )

    return distill_runner


def _describe_schedule(grid: _Grid) -> str:
    s = grid.schedule
    warmups = {m: w for m, w in s["warmup_epochs"].items()}
    groups: dict[tuple[int, int], list[str]] = {}
    for m, w in warmups.items():
        groups.setdefault((w["base"], w["rescaled"]), []).append(m)
    warm = "; ".join(f"{', '.join(ms)}: {b} -> {r}" for (b, r), ms in groups.items())
    decays = tuple(s["lr_decay_epochs"] or ())
    return (
        f"sweep schedule: {s['epochs']} of {s['base_epochs']} epochs; learning-rate decays "
        f"{tuple(s['base_lr_decay_epochs'])} -> {decays}; warm-up epochs {warm}"
    )


def _check_previous(path: Path, param: str, epochs: int) -> None:
    if not path.exists():
        return
    try:
        previous = read_json(path)
    except ValueError:
        return  # rebuilt from the run folders below
    if previous.get("param") != param or previous.get("epochs") != epochs:
        raise RunError(
            f"{path.parent} holds a sweep of {previous.get('param')} over "
            f"{previous.get('epochs')} epochs, not of {param} over {epochs}.",
            hint="choose another --output for another parameter or length",
        )


def _finished(out: Path, epochs: int) -> dict | None:
    path = out / "results.json"
    if not path.is_file():
        return None
    try:
        results = read_json(path)
    except ValueError:
        return None
    complete = results.get("status") == "complete" and results.get("epochs") == epochs
    if complete and results.get("epochs_completed", epochs) == epochs:
        return results
    return None


def _check_result(result, where: str) -> Mapping[str, Any]:
    if not isinstance(result, Mapping) or not {"best_top1", "last_top1"} <= set(result):
        raise ValueError(
            f"{where}: the runner must return a mapping with best_top1 and last_top1; "
            f"got {result!r}."
        )
    for key in ("best_top1", "last_top1"):
        if result[key] is not None and not math.isfinite(float(result[key])):
            raise ValueError(f"{where}: {key} is {result[key]}, not a finite number.")
    return result


def _number(value) -> float | None:
    return None if value is None else float(value)


def _percent(value) -> str:
    return "-" if value is None else f"{float(value):.2f}%"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the figure ----------------------------------------------------------------------------


def plot_sweep(sweep: Mapping[str, Any], path: str | Path, teacher_top1: float | None = None):
    """Best top-1 against the swept value, one line per method (written atomically).

    Each method's solid line is the mean best top-1 over seeds, with the sample standard
    deviation as error bars; the dotted line of its colour is the last epoch's mean top-1.
    Temperature and k use a log2 axis, as do other positive values spanning a factor of 8 or
    more. ``teacher_top1`` (%), when known, is a dashed horizontal line. With
    ``param="method"`` the methods are categories on the x axis.

    Args:
        sweep: the contents of ``sweep.json`` (:func:`run_sweep`'s result).
        path: the PNG to write.
        teacher_top1: the teacher's top-1 in %; default ``sweep["teacher_top1"]``.

    Returns:
        ``path`` as a ``Path``.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    path = Path(path)
    param, summary = sweep["param"], sweep.get("summary") or {}
    teacher_top1 = sweep.get("teacher_top1") if teacher_top1 is None else teacher_top1
    values, labels = list(sweep["values"]), [_label(v) for v in sweep["values"]]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    categorical = param == "method" or not numeric
    # Temperature and k, and any positive values spanning a factor of 8 or more, are usually
    # spaced by factors of two: a log2 axis shows them evenly.
    positive = not categorical and all(v > 0 for v in values)
    log2 = positive and (param in LOG2_PARAMS or max(values) >= 8 * min(values))
    methods = list(sweep.get("methods") or summary)
    # A method sweep has one point per method: one series over the categories.
    series = (
        [("top-1", methods)] if param == "method" else [(m, [m] * len(values)) for m in methods]
    )

    fig, ax = plt.subplots(figsize=(7.6, 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles = []
    span = (max(values) - min(values)) or 1.0 if numeric else 1.0
    for i, (name, owners) in enumerate(series):
        # Methods are moved a little apart along x so that their error bars do not overlap.
        shift = (i - (len(series) - 1) / 2) * 0.06
        xs, best, err, last = [], [], [], []
        for position, (value, label, owner) in enumerate(zip(values, labels, owners)):
            cell = summary.get(owner, {}).get(label)
            if not cell or cell.get("mean") is None:
                continue
            if categorical:
                xs.append(position + shift)
            else:
                xs.append(value * 2 ** (shift / 2) if log2 else value + shift * span / 4)
            best.append(cell["mean"])
            err.append(cell.get("std") or 0.0)
            last.append(math.nan if cell.get("last_mean") is None else cell["last_mean"])
        if not xs:
            continue
        color = colors[i % len(colors)] if param != "method" else "C0"
        join = "none" if categorical else "-"
        ax.errorbar(xs, best, yerr=err, color=color, marker="o", capsize=3, linestyle=join)
        ax.plot(xs, last, color=color, marker="x", linestyle="none" if categorical else ":")
        if param != "method":
            handles.append(Line2D([], [], color=color, marker="o", label=name))
    style = "-" if not categorical else "none"
    handles += [
        Line2D([], [], color="0.2", marker="o", linestyle=style, label="best epoch, mean ± std"),
        Line2D(
            [],
            [],
            color="0.2",
            marker="x",
            linestyle=":" if not categorical else "none",
            label="last epoch, mean",
        ),
    ]
    if teacher_top1 is not None:
        ax.axhline(teacher_top1, color="0.3", linestyle="--", linewidth=1)
        handles.append(
            Line2D([], [], color="0.3", linestyle="--", label=f"teacher ({teacher_top1:.2f}%)")
        )
    if categorical:
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlim(-0.5, len(labels) - 0.5)
    else:
        if log2:
            ax.set_xscale("log", base=2)
        ax.set_xticks(values, labels)
        ax.minorticks_off()
    xlabel = {"temperature": "temperature T", "method": "method"}.get(param, param)
    seeds = sweep.get("seeds") or sorted({r["seed"] for r in sweep.get("runs", [])})
    ax.set(
        xlabel=f"{xlabel} (log2 scale)" if log2 else xlabel,
        ylabel="test top-1 accuracy (%)",
        title=f"{sweep.get('preset') or 'sweep'}: top-1 vs {param}, {sweep['epochs']} epochs, "
        f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}",
    )
    ax.grid(alpha=0.3)
    ax.legend(
        handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


# --- the command line ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``keras-gdkd sweep`` options to ``parser`` (no Keras import)."""
    parser.add_argument("--preset", required=True, help="one of `keras-gdkd presets`")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=presets.METHODS,
        metavar="METHOD",
        help=f"methods to run ({', '.join(presets.METHODS)}; default gdkd). Not with "
        "--param method",
    )
    parser.add_argument(
        "--param",
        required=True,
        help="the loss hyper-parameter to vary (temperature, k, w0, w1, w2, alpha, beta, ...), "
        "which every method must have; or `method` to compare the methods given as --values",
    )
    parser.add_argument("--values", nargs="+", required=True, help="values of --param")
    parser.add_argument(
        "--epochs",
        type=positive_int,
        help="epochs of every run; the preset's learning-rate decays and warm-up are rescaled "
        "to it (required unless --plot-only)",
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="one run per seed")
    parser.add_argument(
        "--teacher-weights",
        help="the teacher: a .keras file, or a PyTorch checkpoint (.pth/.pt) or .npz of the "
        "preset's teacher architecture (required unless --plot-only)",
    )
    parser.add_argument("--student", help="override the preset's student architecture")
    parser.add_argument(
        "--dataset", choices=("cifar100", "imagenet"), help="must match the preset (default: its)"
    )
    parser.add_argument(
        "--data-dir",
        help="folder holding the data files (cifar-100-python.tar.gz or its folder; ImageNet "
        "train/ and val/), or a tensorflow-datasets data_dir (default: tfds's folder)",
    )
    parser.add_argument("--manual-dir", help="tfds manual download folder for imagenet2012")
    parser.add_argument("--output", required=True, help="sweep folder (resumes if it exists)")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        help="override the batch size; the learning rate scales linearly unless --lr is given",
    )
    parser.add_argument("--lr", type=positive_float, help="override the base learning rate")
    parser.add_argument("--mixed-precision", choices=("bfloat16", "float16"))
    parser.add_argument("--devices", nargs="+", help="devices for data-parallel training")
    parser.add_argument(
        "--force", action="store_true", help="resume runs whose configuration changed"
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=2,
        help="Keras progress output of each run: 0 silent, 1 bar, 2 one line per epoch",
    )
    parser.add_argument(
        "--plot-only",
        action="store_true",
        help=f"only redraw sweep_<param>.png from OUTPUT/{SWEEP_FILE}; trains nothing",
    )


def main(args: argparse.Namespace) -> int:
    """Runs ``keras-gdkd sweep`` from parsed arguments; returns the exit status.

    Prints ``sweep.json``'s summary as a table and the figure's path. Expected problems raise
    :class:`keras_gdkd.runs.errors.RunError` (or ``ValueError``) with a hint.
    """
    output = Path(args.output)
    figure = output / f"sweep_{args.param}.png"
    if args.plot_only:
        try:
            sweep = read_json(output / SWEEP_FILE)
        except ValueError as error:
            raise RunError(str(error), hint="run the sweep first (without --plot-only)") from None
        if sweep.get("param") != args.param:
            raise RunError(
                f"{output / SWEEP_FILE} is a sweep of {sweep.get('param')}, not {args.param}",
                hint=f"use --param {sweep.get('param')}",
            )
        print(format_summary(sweep))
        print(f"figure: {plot_sweep(sweep, figure)}")
        return 0

    missing = [
        flag
        for flag, value in (("--epochs", args.epochs), ("--teacher-weights", args.teacher_weights))
        if not value
    ]
    if missing:
        raise RunError(
            f"{' and '.join(missing)} required to run a sweep",
            hint="or pass --plot-only to redraw the figure of a finished sweep",
        )
    if args.param == "method" and args.methods:
        raise RunError(
            "--methods cannot be combined with --param method", hint="list the methods as --values"
        )
    first = args.values[0] if args.param == "method" else (args.methods or ["gdkd"])[0]
    try:
        preset = presets.get(args.preset, first)
    except ValueError as error:
        raise RunError(str(error), hint="`keras-gdkd presets` lists them") from None
    if args.dataset and args.dataset != preset.dataset:
        raise RunError(
            f"preset {preset.name} is for {preset.dataset}, not {args.dataset}",
            hint=f"drop --dataset or choose a {args.dataset} preset",
        )

    from keras_gdkd import train  # starts Keras

    if args.student:
        preset = train.resolve_preset(preset, student=args.student)
    data = train.DataSpec(preset.dataset, args.data_dir, args.manual_dir)
    options = dict(
        batch_size=args.batch_size,
        learning_rate=args.lr,
        mixed_precision=args.mixed_precision,
        devices=args.devices,
        verbose=args.verbose,
        force=args.force,
    )
    methods = None if args.param == "method" else (args.methods or [preset.method])
    try:
        sweep = run_sweep(
            preset,
            args.param,
            args.values,
            methods=methods,
            seeds=args.seeds,
            epochs=args.epochs,
            data=data,
            teacher_weights=args.teacher_weights,
            output=output,
            loss_overrides=getattr(args, "loss_overrides", None),
            **options,
        )
    except RunError:
        raise
    except ValueError as error:
        raise RunError(str(error), hint="fix the sweep's options; nothing was trained") from None
    print(format_summary(sweep))
    if _has_matplotlib():
        print(f"figure: {plot_sweep(sweep, figure)}")
    else:
        print("matplotlib is not installed: no figure (pip install matplotlib, then --plot-only)")
    return 0


def format_summary(sweep: Mapping[str, Any]) -> str:
    """A sweep's summary as a text table: per method and value, the best top-1's mean ± std
    over seeds and, in brackets, the last epoch's mean top-1 (all in %).

    Example:
        >>> print(format_summary(read_json("runs/sweep_t/sweep.json")))  # doctest: +SKIP
    """
    summary = sweep.get("summary") or {}

    def cell_text(cell) -> str:
        if not cell or cell.get("mean") is None:
            return "-"
        last = "" if cell.get("last_mean") is None else f" ({cell['last_mean']:.2f})"
        return f"{cell['mean']:.2f} ± {cell['std']:.2f}{last}"

    title = "best top-1 % mean ± std over seeds (last epoch's mean)"
    if sweep["param"] == "method":
        rows = [(m, [cell_text(summary.get(m, {}).get(m))]) for m in sweep["values"]]
        head = ["method", "top-1"]
    else:
        labels = [_label(v) for v in sweep["values"]]
        rows = [
            (m, [cell_text(cells.get(label)) for label in labels]) for m, cells in summary.items()
        ]
        head = ["method", *(f"{sweep['param']}={label}" for label in labels)]
        title += f", {sweep['epochs']} epochs"
    widths = [max(len(head[0]), *(len(m) for m, _ in rows))] if rows else [len(head[0])]
    widths += [
        max(len(h), *(len(r[i]) for _, r in rows)) if rows else len(h)
        for i, h in enumerate(head[1:])
    ]
    lines = [
        title + ":",
        "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths))),
    ]
    for method, texts in rows:
        lines.append(
            "  ".join([method.ljust(widths[0])] + [t.rjust(w) for t, w in zip(texts, widths[1:])])
        )
    return "\n".join(lines)


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None
