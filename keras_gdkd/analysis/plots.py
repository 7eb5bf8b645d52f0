"""The analysis figures, as PNG files (matplotlib, imported only when a figure is drawn).

Figures are built with ``matplotlib.figure.Figure`` and written through the Agg canvas, never
through ``pyplot``: drawing them neither changes the backend of a notebook or GUI session nor
keeps figures alive. Every file is written to a temporary name and renamed.

=========================  ===============================================================
file                       what it shows
=========================  ===============================================================
teacher_topk_mass.png      mean mass of the teacher's top-k classes against k, per T
teacher_entropy.png        normalised entropy and log10 of the non-top-k mass, per T
teacher_autok.png          the authors' autok k, the top-down n_within count, per-class k
agreement.png              top-1 and agreement, KL per T, T^2-scaled GDKD terms
gradient_share.png         share of the gradient on non-top-k classes (KD vs GDKD)
non_top_structure.png      how dominant / spread the teacher is inside the non-top set
class_mean_diff.png        |class-mean student - class-mean teacher| heatmaps, per student
=========================  ===============================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keras_gdkd.runs.files import atomic_path

FIGURES = (
    "teacher_topk_mass.png",
    "teacher_entropy.png",
    "teacher_autok.png",
    "agreement.png",
    "gradient_share.png",
    "non_top_structure.png",
    "class_mean_diff.png",
)
DPI = 110
PARTITIONS = ("target", "top1", "topk")
_PARTITION_NAMES = {"target": "target {y} (DKD)", "top1": "teacher top-1", "topk": "teacher top-k"}


class MatplotlibMissing(ImportError):
    """matplotlib is not installed: the analysis is written without its figures."""


def _figure(ncols: int, width: float = 4.6, height: float = 3.8, **kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise MatplotlibMissing(
            "matplotlib is not installed, so no figures were drawn (analysis.json and "
            "arrays.npz are complete); install it with `pip install matplotlib` or "
            "`pip install keras-gdkd[data]` and rerun to get the PNGs."
        ) from error
    fig = Figure(figsize=(width * ncols, height), layout="constrained", **kwargs)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    return path


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _temperature_colors(keys: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["plasma"]
    n = max(len(keys) - 1, 1)
    return {key: cmap(0.1 + 0.75 * i / n) for i, key in enumerate(keys)}


def _number(value) -> float:
    """A float, NaN for ``None`` (a value that was NaN in the JSON)."""
    return math.nan if value is None else float(value)


def _fmt(value, digits: int = 3) -> str:
    value = _number(value)
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}g}"


def _decimals(value: float, significant: int) -> int:
    """The number of decimals that shows ``significant`` digits of ``value`` (not 0)."""
    return max(0, significant - 1 - math.floor(math.log10(abs(value))))


def _label_format(values: Sequence[float]) -> str:
    """One format for all the value labels of a panel, so that they read alike.

    Fixed-point with the same number of decimals for every label: three significant digits of
    the largest value and at least two of the smallest one (``0.0316`` next to ``0.0100``, not
    ``0.01``); scientific notation when that would need more than 4 decimals or the values are
    1e5 or larger. Values below 1e-3 of the largest do not count: next to 1.7, a KL of 1e-8 is
    shown as ``0.000``, not as a reason to write every label in scientific notation.
    """
    finite = [abs(v) for v in values if math.isfinite(v) and v != 0]
    if not finite:
        return "{:.1f}"
    largest = max(finite)
    smallest = min(v for v in finite if v >= 1e-3 * largest)
    if largest >= 1e5:
        return "{:.2e}"
    decimals = max(_decimals(largest, 3), _decimals(smallest, 2))
    return "{:.2e}" if decimals > 4 else f"{{:.{decimals}f}}"


def _rounds_to_zero(value: float, fmt: str) -> bool:
    return math.isfinite(value) and float(fmt.format(value)) == 0.0


def _no_data(ax, text: str) -> None:
    ax.text(
        0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True, color="0.35"
    )
    ax.set_xticks([])
    ax.set_yticks([])


# --- teacher --------------------------------------------------------------------------------


def plot_teacher_topk_mass(teacher: Mapping, path: Path, *, loss_k: int) -> Path:
    """Mean top-k mass ``b_t(k)`` against k (up to 50), a q10-q90 band, one curve per T."""
    fig, (ax,) = _figure(1, width=8.4, height=4.4)
    per_t = teacher["per_temperature"]
    colors = _temperature_colors(list(per_t))
    num_classes = int(teacher["num_classes"])
    k_max = min(num_classes, 50)
    ks = np.arange(1, k_max + 1)
    for key, stats in per_t.items():
        mean = np.array([_number(v) for v in stats["topk_mass_mean"][:k_max]])
        ax.plot(ks, mean, color=colors[key], lw=2, label=f"{_tlabel(key)}: mean")
        quantiles = {int(k): v for k, v in stats["topk_mass_quantiles"].items() if int(k) <= k_max}
        if quantiles and k_max == num_classes and num_classes not in quantiles:
            # Every sample's top-C mass is 1: the band closes on the mean curve's last point.
            quantiles[num_classes] = [mean[-1]] * 3
        if quantiles:
            qk = np.array(sorted(quantiles))
            q = np.array([[_number(v) for v in quantiles[k]] for k in qk])
            ax.fill_between(
                qk,
                q[:, 0],
                q[:, 2],
                color=colors[key],
                alpha=0.18,
                lw=0,
                label=f"{_tlabel(key)}: q10-q90 of samples",
            )
            ax.plot(
                qk,
                q[:, 1],
                ls="none",
                marker="o",
                ms=3,
                color=colors[key],
                label=f"{_tlabel(key)}: median of samples",
            )
    ax.axvline(loss_k, color="0.3", ls="--", lw=1, label=f"loss k = {loss_k}")
    ax.set(
        xlabel="k (number of the teacher's largest probabilities)",
        ylabel="top-k mass  b_t(k) = sum of top-k q",
        ylim=(0, 1.02),
        xlim=(1, k_max),
        title=f"Teacher: mass of its top-k classes (C={num_classes})",
    )
    if k_max >= 20:
        ax.set_xscale("log")
        ax.set_xticks([v for v in (1, 2, 5, 10, 20, 50) if v <= k_max])
        ax.xaxis.set_major_formatter("{x:g}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no overlap
    return _save(fig, path)


def plot_teacher_entropy(teacher: Mapping, path: Path, *, loss_k: int) -> Path:
    """Histograms of ``H/log C`` and of ``log10 b_o`` per temperature."""
    fig, (left, right) = _figure(2)
    per_sample = teacher.get("per_sample") or {}
    num_classes = int(teacher["num_classes"])
    keys = list(teacher["per_temperature"])
    colors = _temperature_colors(keys)
    entropy = per_sample.get("entropy") or {}
    other = per_sample.get("log10_other_mass") or {}
    if entropy:
        bins = np.linspace(0.0, 1.0, 41)
        for key in keys:
            h = np.asarray(entropy[key], dtype=np.float64) / math.log(num_classes)
            left.hist(
                h,
                bins=bins,
                weights=np.full(h.shape, 1.0 / h.size),
                histtype="step",
                lw=1.8,
                color=colors[key],
                label=f"{_tlabel(key)} (median {np.median(h):.2f})",
            )
        left.legend(fontsize=8)
    else:
        _no_data(left, "no per-sample entropy")
    left.set(
        xlabel="normalised entropy  H(q) / log C",
        ylabel="fraction of samples",
        title="Teacher entropy",
    )
    if other:
        values = {key: np.asarray(other[key], dtype=np.float64) for key in keys}
        finite = np.concatenate([v[np.isfinite(v)] for v in values.values()])
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 0.0)
        bins = np.linspace(lo - 1e-3, max(hi, lo + 1e-2) + 1e-3, 41)
        for key, v in values.items():
            v = v[np.isfinite(v)]
            right.hist(
                v,
                bins=bins,
                weights=np.full(v.shape, 1.0 / max(v.size, 1)),
                histtype="step",
                lw=1.8,
                color=colors[key],
                label=f"{_tlabel(key)} (median {np.median(v):.2f})",
            )
        right.legend(fontsize=8)
    else:
        _no_data(right, "no per-sample non-top mass")
    right.set(
        xlabel=f"log10 b_o  (teacher mass outside its top-{loss_k})",
        ylabel="fraction of samples",
        title="b_o, KD's weight on the within-rest term",
    )
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return _save(fig, path)


def _hist_fraction(hist) -> tuple[np.ndarray, np.ndarray]:
    counts = np.asarray(hist, dtype=np.float64)
    total = counts.sum()
    ks = np.arange(counts.size)
    return ks[1:], counts[1:] / (total if total else 1.0)


def plot_teacher_autok(
    teacher: Mapping, path: Path, *, loss_temperature: float, loss_k: int | None = None
) -> Path:
    """The autok k and n_within distributions per T, and the per-class k sorted."""
    fig, (left, middle, right) = _figure(3, width=4.4)
    per_t = teacher["per_temperature"]
    num_classes = int(teacher["num_classes"])
    colors = _temperature_colors(list(per_t))
    ratio = _fmt(teacher.get("ratio_threshold"))
    for ax, name, title in (
        (left, "autok", f"autok k (authors' calc_topk rule, ratio {ratio})"),
        (middle, "n_within", f"n_within: classes with q >= max q / {ratio}"),
    ):
        for key, stats in per_t.items():
            ks, frac = _hist_fraction(stats[name]["hist"])
            ax.step(
                ks,
                frac,
                where="mid",
                color=colors[key],
                lw=1.6,
                label=f"{_tlabel(key)} (mean {_fmt(stats[name]['mean'])})",
            )
        if num_classes >= 100:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter("{x:g}")
        if loss_k is not None and name == "autok":
            ax.axvline(loss_k, color="0.3", ls="--", lw=1, label=f"loss k = {loss_k}")
        ax.set(
            xlabel="k" if name == "autok" else "number of classes",
            ylabel="fraction of samples",
            title=title,
            xlim=(0.8, num_classes * 1.1),
        )
        if num_classes < 100:
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    key = _closest_key(per_t, loss_temperature)
    per_class = per_t[key].get("per_class_k")
    if per_class is None:
        _no_data(right, "per-class k needs labels")
    else:
        per_class = np.asarray([_number(v) for v in per_class])
        present = per_class[per_class >= 1]
        if present.size:
            values = np.sort(present)[::-1]
            right.bar(np.arange(values.size), values, width=1.0, color=colors[key], lw=0)
            right.axhline(
                float(np.median(values)),
                color="0.3",
                ls="--",
                lw=1,
                label=f"median {np.median(values):g}",
            )
            right.legend(fontsize=8)
            right.set_xlim(-0.5, values.size - 0.5)
        else:
            _no_data(right, "no class has an example")
        shown = f"{present.size} of {num_classes} classes"
        right.set(
            xlabel="class, sorted by its k",
            ylabel="k of the class-mean q",
            title=f"Per-class k at {_tlabel(key)} ({shown})",
            ylim=(0, max(float(present.max()) if present.size else 1.0, 1.0) * 1.1),
        )
        right.yaxis.get_major_locator().set_params(integer=True)
        right.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def _closest_key(per_t: Mapping, temperature: float) -> str:
    """The key of ``per_t`` whose temperature is nearest to ``temperature``."""
    return min(per_t, key=lambda k: abs(_number(per_t[k].get("temperature")) - temperature))


def _tlabel(key: str) -> str:
    return key if key.startswith("T=") else f"T={key}"


# --- students -------------------------------------------------------------------------------


def _grouped_bars(
    ax,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    colors,
    fmt: str | None = None,
) -> list:
    """Bars of each series side by side per group, with a value label above each bar.

    ``fmt`` is one format for every label of the panel; ``None`` chooses it from the values
    (:func:`_label_format`). Returns the label texts (none past 16 bars), for
    :func:`_fit_bar_labels`.
    """
    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(groups))
    all_values = {name: np.array([_number(v) for v in values]) for name, values in series.items()}
    if fmt is None:
        fmt = _label_format([v for values in all_values.values() for v in values])
    texts = []
    for i, (name, values) in enumerate(all_values.items()):
        # A value that rounds to 0 in the labels' format (a KL of -1e-9 from round-off) is
        # drawn as 0: as a negative bar its label would sit below the axis, on the tick labels.
        values = np.array([0.0 if _rounds_to_zero(v, fmt) else v for v in values])
        bars = ax.bar(
            x - 0.4 + width * (i + 0.5), np.nan_to_num(values), width, label=name, color=colors[i]
        )
        if len(groups) * n <= 16:
            labels = ["n/a" if not math.isfinite(v) else fmt.format(v) for v in values]
            texts += ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
    ax.set_xticks(
        x,
        groups,
        rotation=30 if len(groups) > 4 else 0,
        ha="right" if len(groups) > 4 else "center",
    )
    return texts


def _overlap(a, b, gap: float = 3.0) -> bool:
    """Whether two display boxes come closer than ``gap`` pixels."""
    return a.x0 < b.x1 + gap and b.x0 < a.x1 + gap and a.y0 < b.y1 + gap and b.y0 < a.y1 + gap


def _fit_bar_labels(fig, panels: Sequence[tuple[Any, list, float | None]]) -> None:
    """Places bar value labels where they cross and touch nothing, on the laid-out figure.

    For each ``(ax, texts, line_y)``: a label that a horizontal line at ``line_y`` (data
    units) would cross moves to just above the line; before that, if two labels of the panel
    touch, all of its labels turn vertical (labels side by side that come within 3 pixels
    touch, whatever their heights); then the y range grows until no label reaches the top of
    the axes or the legend inside it. Text sizes are only known once the figure is drawn,
    hence the draws here (a few tenths of a second).
    """
    panels = [(ax, texts, line) for ax, texts, line in panels if texts]
    if not panels:
        return
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for _ax, texts, _ in panels:
        # Side by side counts even at different heights: a staircase of numbers that touch
        # at the corners reads as one.
        spans = sorted((b.x0, b.x1) for b in (t.get_window_extent(renderer) for t in texts))
        if any(left[1] + 3.0 > right[0] for left, right in zip(spans, spans[1:])):
            for text in texts:
                text.set_rotation(90)
    canvas.draw()
    for ax, texts, line in panels:
        if line is None or not math.isfinite(line):
            continue
        y_line = ax.transData.transform((0.0, line))[1]
        for text in texts:
            box = text.get_window_extent(renderer)
            if box.y0 - 2 <= y_line <= box.y1 + 2:
                text.xy = (text.xy[0], line)
    for _ in range(8):
        canvas.draw()
        crowded = []
        for ax, texts, _ in panels:
            frame = ax.get_window_extent(renderer)
            legend, legend_box = ax.get_legend(), None
            if legend is not None:
                box = legend.get_window_extent(renderer)
                inside = frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1
                if inside and frame.y0 - 1 <= box.y0 and box.y1 <= frame.y1 + 1:
                    legend_box = box  # a legend outside the axes is out of the labels' reach
            for text in texts:
                box = text.get_window_extent(renderer)
                if box.y1 + 2 > frame.y1 or (legend_box is not None and _overlap(box, legend_box)):
                    crowded.append(ax)
                    break
        if not crowded:
            return
        for ax in crowded:
            low, high = ax.get_ylim()
            ax.set_ylim(low, low + (high - low) * 1.12)


def plot_agreement(
    students: Mapping[str, Mapping], teacher: Mapping, path: Path, *, params: Mapping
) -> Path:
    """Top-1 and agreement, KL per temperature, and the T^2-scaled GDKD terms per student."""
    fig, (left, middle, right) = _figure(3, width=4.6, height=4.0)
    labels = list(students)
    agreement = {label: students[label]["agreement"] for label in labels}
    pct = lambda v: 100.0 * _number(v)  # noqa: E731
    left_texts = _grouped_bars(
        left,
        labels,
        {
            "student top-1": [pct(agreement[s].get("student_top1")) for s in labels],
            "top-1 agreement with teacher": [
                pct(agreement[s].get("top1_agreement")) for s in labels
            ],
            f"top-{params['k']} overlap": [pct(agreement[s].get("topk_overlap")) for s in labels],
        },
        _colors(3),
        fmt="{:.1f}",
    )
    teacher_top1 = teacher.get("teacher_top1")
    if teacher_top1 is not None:
        left.axhline(
            pct(teacher_top1),
            color="0.3",
            ls="--",
            lw=1,
            label=f"teacher top-1 {pct(teacher_top1):.1f}%",
        )
    left.set(ylabel="%", ylim=(0, 135), yticks=range(0, 101, 20), title="Accuracy and agreement")
    left.legend(fontsize=7, loc="upper center", ncols=2)

    keys = list(agreement[labels[0]]["per_temperature"])
    middle_texts = _grouped_bars(
        middle,
        labels,
        {
            f"{_tlabel(key)}": [agreement[s]["per_temperature"][key].get("kl") for s in labels]
            for key in keys
        },
        [_temperature_colors(keys)[key] for key in keys],
    )
    middle.set(ylabel="KL(q || p)  (nats, no T^2)", title="Teacher-to-student KL divergence")
    middle.legend(fontsize=8, loc="upper center", ncols=len(keys))
    middle.margins(y=0.25)

    terms = ("high_loss", "low_top_loss", "low_other_loss")
    names = {
        "high_loss": "high: top-k vs rest",
        "low_top_loss": "low_top: within top-k",
        "low_other_loss": "low_other: within rest",
    }
    bottom = np.zeros(len(labels))
    x = np.arange(len(labels))
    for term, color in zip(terms, _colors(3)):
        values = np.array([_number(agreement[s]["gdkd_terms"].get(term)) for s in labels])
        right.bar(x, np.nan_to_num(values), 0.6, bottom=bottom, label=names[term], color=color)
        bottom += np.nan_to_num(values)
    total = [_number(agreement[s].get("gdkd_loss")) for s in labels]
    right.plot(
        x,
        total,
        ls="none",
        marker="D",
        color="black",
        ms=6,
        label=f"weighted GDKD loss (w = {params['w0']:g}, {params['w1']:g}, {params['w2']:g})",
    )
    right.set_xticks(
        x,
        labels,
        rotation=30 if len(labels) > 4 else 0,
        ha="right" if len(labels) > 4 else "center",
    )
    right.set(
        ylabel=f"T^2 x term  (T={params['temperature']:g}, batch mean)",
        title="GDKD terms, unweighted (stacked)",
    )
    # Beside the axes: inside, a legend of four entries covers a bar or a marker sooner or later.
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    right.margins(y=0.1)
    for ax in (left, middle, right):
        ax.grid(alpha=0.3, axis="y")
    line = pct(teacher_top1) if teacher_top1 is not None else None
    _fit_bar_labels(fig, [(left, left_texts, line), (middle, middle_texts, None)])
    return _save(fig, path)


def plot_gradient_share(students: Mapping[str, Mapping], path: Path, *, params: Mapping) -> Path:
    """Share of the squared logit gradient on the non-top-k classes, KD vs GDKD; w2/b_o."""
    fig, (left, right) = _figure(2, width=5.0, height=4.0)
    labels = list(students)
    colors = _colors(2)
    positions, data, box_colors = [], [], []
    for i, label in enumerate(labels):
        per_sample = students[label]["gradients"].get("per_sample") or {}
        for j, method in enumerate(("kd", "gdkd")):
            values = per_sample.get(method, {}).get("share_other")
            if values is None:
                continue
            values = np.asarray(values, dtype=np.float64)
            data.append(values[np.isfinite(values)])
            positions.append(i + (j - 0.5) * 0.36)
            box_colors.append(colors[j])
    if data:
        boxes = left.boxplot(
            data,
            positions=positions,
            widths=0.3,
            patch_artist=True,
            showfliers=False,
            medianprops={"color": "black"},
        )
        for patch, color in zip(boxes["boxes"], box_colors):
            patch.set_facecolor(color)
            patch.set_alpha(0.75)
        from matplotlib.patches import Patch

        left.legend(
            handles=[
                Patch(color=colors[0], label="KD"),
                Patch(color=colors[1], label=f"GDKD (w2={params['w2']:g})"),
            ],
            fontsize=8,
            loc="upper center",
            ncols=2,
        )
        left.set_xticks(np.arange(len(labels)), labels)
    else:
        _no_data(left, "no per-sample gradient shares")
    left.set(
        ylim=(-0.02, 1.15),
        yticks=np.linspace(0, 1, 6),
        ylabel="share_other = |g on rest|^2 / |g|^2",
        xlabel="student",
        title=f"Gradient on the classes outside the top-{params['k']}",
    )
    left.grid(alpha=0.3, axis="y")

    per_sample = students[labels[0]]["gradients"].get("per_sample") or {}
    amplification = per_sample.get("amplification_other")
    if amplification is not None:
        values = np.log10(np.asarray(amplification, dtype=np.float64))
        values = values[np.isfinite(values)]
    if amplification is None or not values.size:
        _no_data(right, "no finite w2/b_o (w2 = 0?)")
    else:
        right.hist(
            values,
            bins=40,
            weights=np.full(values.shape, 1.0 / values.size),
            color=colors[1],
            alpha=0.8,
        )
        median = float(np.median(values))
        right.axvline(
            median, color="black", ls="--", lw=1.2, label=f"median {median:.2f} (x{10**median:.3g})"
        )
        if values.min() - 0.5 <= 0.0 <= values.max() + 0.5:  # only when it keeps the scale
            right.axvline(0.0, color="0.5", ls=":", lw=1, label="x1 (as KD)")
        right.legend(fontsize=8)
    right.set(
        xlabel="log10(w2 / b_o): GDKD's non-top gradient / KD's",
        ylabel="fraction of samples",
        title=f"w2 / b_o per sample (teacher only; T={params['temperature']:g})",
    )
    right.grid(alpha=0.3)
    return _save(fig, path)


def plot_non_top_structure(students: Mapping[str, Mapping], path: Path, *, params: Mapping) -> Path:
    """Teacher dominance and entropy inside the non-top set, per partition; student KL there."""
    fig, axes = _figure(3, width=4.6, height=4.0)
    labels = list(students)
    structure = students[labels[0]]["agreement"].get("non_top_structure") or {}
    partitions = [p for p in PARTITIONS if structure.get(p)]
    subsets = ("all", "argmax_ne_label")
    subset_names = {"all": "all samples", "argmax_ne_label": "teacher argmax != label"}
    groups = [_PARTITION_NAMES[p].replace(" (", "\n(") for p in partitions]
    panels = []
    for ax, quantity, ylabel, title in (
        (
            axes[0],
            "teacher_dominance",
            "mean max of q-hat over the rest",
            "Teacher dominance in the rest",
        ),
        (
            axes[1],
            "teacher_entropy",
            "mean H(q-hat on rest) / log|rest|",
            "Teacher spread in the rest",
        ),
    ):
        if not partitions:
            _no_data(ax, "no non-top structure")
            continue
        series = {
            subset_names[s]: [_get(structure, p, s, quantity) for p in partitions] for s in subsets
        }
        panels.append((ax, _grouped_bars(ax, groups, series, _colors(2)), None))
        ax.set(ylabel=ylabel, title=title, ylim=(0, 1.3), yticks=np.linspace(0, 1, 6))
        ax.legend(fontsize=7, loc="upper center", ncols=2)
        ax.grid(alpha=0.3, axis="y")
    ax = axes[2]
    if partitions:
        series = {
            label: [
                _get(
                    students[label]["agreement"].get("non_top_structure") or {},
                    p,
                    "all",
                    "student_kl_other",
                )
                for p in partitions
            ]
            for label in labels
        }
        panels.append((ax, _grouped_bars(ax, groups, series, _colors(len(labels))), None))
        ax.legend(
            fontsize=7,
            title="student",
            title_fontsize=7,
            loc="upper center",
            ncols=min(len(labels), 4),
        )
        ax.margins(y=0.3)
    else:
        _no_data(ax, "no non-top structure")
    ax.set(
        ylabel=f"mean KL(q-hat || p-hat) on the rest (T={params['temperature']:g})",
        title="Student mismatch in the rest",
    )
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle(
        f"Inside the 'rest' set of each partition (T={params['temperature']:g}, "
        f"k={params['k']}): does it hold a dominant teacher class?",
        fontsize=10,
    )
    _fit_bar_labels(fig, panels)
    return _save(fig, path)


def _get(structure: Mapping, partition: str, subset: str, quantity: str) -> float:
    node = structure.get(partition) or {}
    node = node.get(subset) or {}
    return _number(node.get(quantity))


def plot_class_mean_diff(
    students: Mapping[str, Mapping], path: Path, *, figure_style: str = "dkd", scale: float = 4.0
) -> Path:
    """One ``|M_s - M_t|`` heatmap per student, rows = true class, columns = class.

    ``figure_style="dkd"``: class means of raw logits on one colour scale, the largest
    off-diagonal value over the students; ``"gdkd"``: class means of ``softmax(z)``, each panel
    ``clip(scale * diff / max(diff), 0, 1)`` as the GDKD authors draw it.
    """
    from keras_gdkd.analysis import class_mean

    mode = "logits" if figure_style == "dkd" else "probs"
    labels = list(students)
    diffs = {}
    for label in labels:
        diffs[label] = np.array(students[label]["class_mean"][mode]["diff"], dtype=np.float64)
    num_classes = next(iter(diffs.values())).shape[0]
    off_diagonal = ~np.eye(num_classes, dtype=bool)
    peaks = [d[off_diagonal & np.isfinite(d)] for d in diffs.values()]
    shared = max((float(p.max()) for p in peaks if p.size), default=0.0)
    shared = shared if shared > 0 else 1.0
    side = 3.6 if len(labels) > 1 else 5.2
    fig, axes = _figure(len(labels), width=side, height=side + 0.6)
    from matplotlib import colormaps

    cmap = colormaps["PuBuGn"].with_extremes(bad="0.85")
    image = None
    for ax, label in zip(axes, labels):
        diff = diffs[label]
        stats = students[label]["class_mean"][mode]
        if figure_style == "dkd":
            values = class_mean.heatmap_values(diff, style="dkd", max_diff=shared)
        else:
            values = class_mean.heatmap_values(diff, style="gdkd", scale=scale)
        values = np.where(np.isnan(diff), np.nan, values)
        image = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(
            f"{label} (max {_fmt(stats.get('offdiag_max'))}, "
            f"mean {_fmt(stats.get('offdiag_mean'))})",
            fontsize=9,
        )
        if num_classes > 20:
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax.set_xticks(range(num_classes))
            ax.set_yticks(range(num_classes))
            ax.tick_params(labelsize=7)
        ax.set(xlabel="class j", ylabel="true class c")
    if figure_style == "dkd":
        bar_label = f"|M_s - M_t| / {shared:.3g}  (one scale for all panels)"
        what = "class-mean logits"
        scaling = f"colour: |difference| / {shared:.3g}, the largest off-diagonal value"
    else:
        bar_label = f"clip({scale:g} |M_s - M_t| / max, 0, 1)"
        what = "class-mean softmax (T=1)"
        scaling = "each panel scaled by its own max: colours do not compare"
    fig.colorbar(image, ax=axes, shrink=0.85, label=bar_label)
    grey = "; grey rows: no examples" if any(np.isnan(d).any() for d in diffs.values()) else ""
    fig.suptitle(
        f"|student - teacher| of {what}, diagonal set to 0\n{scaling}\n"
        f"titles: off-diagonal max and mean{grey}",
        fontsize=9,
    )
    return _save(fig, path)


# --- all ------------------------------------------------------------------------------------


def plot_all(
    results: Mapping[str, Any], folder: str | Path, *, figure_style: str = "dkd"
) -> list[Path]:
    """Draws the seven figures of an analysis into ``folder``.

    Args:
        results: the analysis with its arrays in place: ``teacher`` (with ``per_sample``),
            ``students.{LABEL}.{agreement, gradients (with per_sample), class_mean.{logits,
            probs}.diff}`` and ``meta.loss`` (as :func:`keras_gdkd.analysis.report.analyze_logits`
            builds it; :func:`keras_gdkd.analysis.report.load_report` reads one back).
        folder: where the PNGs go (created if needed).
        figure_style: ``"dkd"`` or ``"gdkd"``, for the class-mean heatmaps.

    Returns:
        The paths written, in the order of :data:`FIGURES`.

    Raises:
        MatplotlibMissing: matplotlib is not installed.
    """
    folder = Path(folder)
    params = results["meta"]["loss"]
    teacher, students = results["teacher"], results["students"]
    paths = [
        plot_teacher_topk_mass(teacher, folder / FIGURES[0], loss_k=params["k"]),
        plot_teacher_entropy(teacher, folder / FIGURES[1], loss_k=params["k"]),
        plot_teacher_autok(
            teacher, folder / FIGURES[2], loss_temperature=params["temperature"], loss_k=params["k"]
        ),
        plot_agreement(students, teacher, folder / FIGURES[3], params=params),
        plot_gradient_share(students, folder / FIGURES[4], params=params),
        plot_non_top_structure(students, folder / FIGURES[5], params=params),
        plot_class_mean_diff(students, folder / FIGURES[6], figure_style=figure_style),
    ]
    return paths
