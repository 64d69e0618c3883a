"""Figures for the training side: data counts, training curves, confusion matrix, spot check.

Matplotlib runs on the Agg backend (no display needed); the CLI imports this module only in
the commands that draw. Every function writes one PNG, making its folder when needed.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

RIGHT, WRONG = "#2e7d32", "#c62828"  # green: true class / correct; red: a wrong prediction
NEUTRAL = "#9e9e9e"
DPI = 110


def _save(fig, out: str | Path, dpi: int = DPI) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return out


def counts_chart(counts: dict[str, dict[str, int]], out: str | Path, title: str) -> Path:
    """Images per class as horizontal bars, one bar per split (grouped by class)."""
    splits = list(counts)
    classes = list(next(iter(counts.values()))) if counts else []
    height = 0.8 / max(len(splits), 1)
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.3 * len(classes) * max(len(splits), 1)))
    y = np.arange(len(classes))
    for k, split in enumerate(splits):
        values = [counts[split].get(c, 0) for c in classes]
        offset = (k - (len(splits) - 1) / 2) * height
        bars = ax.barh(y + offset, values, height=height, label=split)
        ax.bar_label(bars, padding=2, fontsize=8)
    ax.set_yticks(y, classes)
    ax.invert_yaxis()  # first class on top, as in the table
    ax.set_xlabel("images")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.margins(x=0.12)
    return _save(fig, out)


def read_history(run: Path) -> dict[str, list[float]]:
    """history.csv as columns of floats (empty lists for a run with no epoch yet); a value a
    row lacks (ema_val_accuracy of a run without --ema) is NaN, a gap in a curve."""
    cols: dict[str, list[float]] = {}
    path = Path(run) / "history.csv"
    if not path.exists():
        return cols
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                cols.setdefault(key, []).append(float(value) if value else math.nan)
    return cols


def compare_curves(runs: Sequence[str | Path], out: str | Path,
                   title: str = "Training curves") -> Path:
    """Accuracy and loss per epoch of several runs: training dashed, validation solid."""
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, run in enumerate(runs):
        run = Path(run)
        hist = read_history(run)
        if not hist.get("epoch"):
            continue
        colour = colours[k % len(colours)]
        for ax, metric in ((acc_ax, "accuracy"), (loss_ax, "loss")):
            ax.plot(hist["epoch"], hist[metric], "--", color=colour, alpha=0.8,
                    label=f"{run.name} train")
            ax.plot(hist["epoch"], hist[f"val_{metric}"], "-", color=colour, marker=".",
                    label=f"{run.name} validation")
    for ax, name in ((acc_ax, "accuracy"), (loss_ax, "loss")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    acc_ax.set_title("accuracy")
    loss_ax.set_title("loss")
    handles, labels = acc_ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(handles)), fontsize=8,
                   bbox_to_anchor=(0.5, -0.02 - 0.04 * ((len(handles) - 1) // 4)))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08 + 0.04 * ((len(handles) - 1) // 4), 1, 1))
    return _save(fig, out)


def spot_check_png(images: np.ndarray, true: Sequence[int], probs: np.ndarray,
                   labels: Sequence[str], out: str | Path, title: str = "Spot check") -> Path:
    """Each image beside its probability bars: true class green, a wrong prediction red.

    The caller picks the images (12 seeded-random validation images in `evaluate`); they
    are drawn three pairs to a row.
    """
    n = len(images)
    per_row = 3
    rows = max(1, -(-n // per_row))
    fig, axes = plt.subplots(rows, 2 * per_row, figsize=(4.2 * per_row, 2.0 * rows),
                             gridspec_kw={"width_ratios": [1, 1.15] * per_row}, squeeze=False)
    y = np.arange(len(labels))
    for k in range(rows * per_row):
        row, col = divmod(k, per_row)
        img_ax, bar_ax = axes[row, 2 * col], axes[row, 2 * col + 1]
        img_ax.axis("off")
        if k >= n:
            bar_ax.axis("off")
            continue
        t, p = int(true[k]), int(np.argmax(probs[k]))
        img_ax.imshow(images[k])
        img_ax.set_title(f"true: {labels[t]}", fontsize=8, color=RIGHT)
        colours = [NEUTRAL] * len(labels)
        if p != t:
            colours[p] = WRONG
        colours[t] = RIGHT
        bar_ax.barh(y, probs[k], color=colours)
        bar_ax.set_xlim(0, 1)
        bar_ax.set_yticks(y, labels, fontsize=7)
        bar_ax.invert_yaxis()
        bar_ax.tick_params(axis="x", labelsize=7)
        bar_ax.set_title(f"pred: {labels[p]} {probs[k][p]:.0%}", fontsize=8,
                         color=RIGHT if p == t else WRONG)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out, dpi=80)  # photos make a big PNG; this one ships next to the card
