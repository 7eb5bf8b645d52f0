"""What a run shows a person: the per-epoch CSV log and the curves PNG."""

from __future__ import annotations

import math
from pathlib import Path

from keras_gdkd.runs.files import atomic_path, atomic_write_text


def write_log(path: Path, history: list[dict[str, float]]) -> None:
    """Writes one CSV row per epoch (``epoch`` 0-based, then the logs), atomically."""
    keys = sorted({k for row in history for k in row} - {"epoch"})
    lines = [",".join(["epoch", *keys])]
    for row in history:
        lines.append(",".join([str(int(row["epoch"]))] + [repr(row.get(k, "")) for k in keys]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def plot_curves(rows: list[dict[str, float]], path: Path, title: str = "") -> None:
    """Losses, distillation terms and top-1 per epoch as a PNG (written atomically).

    Args:
        rows: one dict of logs per epoch (``epoch`` 0-based, ``loss``, ``val_loss``, ...).
        path: the PNG to write.
        title: the figure title.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on training machines
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) + 1 for r in rows]
    keys = {k for r in rows for k in r}
    main = [k for k in ("loss", "val_loss", "ce_loss") if k in keys]
    terms = sorted(k for k in keys - set(main) - {"epoch"}
                   if "accuracy" not in k and not k.startswith("val_"))  # fmt: skip
    panels = 3 if terms else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4))
    styles = ["-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1))]

    def draw(ax, names, scale=1.0):
        for i, key in enumerate(names):
            values = [scale * r.get(key, math.nan) for r in rows]
            ax.plot(epochs, values, linestyle=styles[i % len(styles)], marker=".", label=key)

    draw(axes[0], main)
    axes[0].set(xlabel="epoch", ylabel="loss", title="training objective and cross-entropy")
    if terms:
        draw(axes[1], terms)
        positive = all(r.get(k, 1.0) > 0 for r in rows for k in terms)
        axes[1].set(xlabel="epoch", ylabel="value", title="distillation terms (unweighted)",
                    yscale="log" if positive else "linear")  # fmt: skip
    acc = [k for k in ("accuracy", "val_accuracy") if k in keys]
    draw(axes[-1], acc, scale=100.0)
    for line, key in zip(axes[-1].get_lines(), acc):
        line.set_label(key.replace("accuracy", "top-1"))
    axes[-1].set(xlabel="epoch", ylabel="top-1 (%)", title="accuracy")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
