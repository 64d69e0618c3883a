"""Scoring the model on a labelled folder: one subfolder per class, named by label."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scenetool.errors import LayoutError
from scenetool.inputs.walk import Item, WalkStats, walk


def labelled_items(root: str, labels: Sequence[str],
                   stats: WalkStats | None = None) -> Iterator[tuple[str, Item]]:
    """(true label, item) for every image under root/<label>/; other subfolders are an error."""
    if not os.path.isdir(root):
        raise LayoutError(f"not a folder: {root}")
    subdirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    unknown = [d for d in subdirs if d not in labels]
    if unknown:
        raise LayoutError(f"subfolder(s) of {root} match no label of the model: "
                          f"{', '.join(unknown)} (labels: {', '.join(labels)})")
    if not subdirs:
        raise LayoutError(f"{root} has no class subfolders; expected {root}/<label>/<image>")
    for name in subdirs:
        for item in walk([os.path.join(root, name)], True, stats):
            yield name, item


@dataclass
class Scores:
    labels: list[str]
    confusion: np.ndarray  # [true, predicted]

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / self.n) if self.n else 0.0

    def per_class(self) -> dict[str, dict[str, float]]:
        out = {}
        for i, label in enumerate(self.labels):
            tp = float(self.confusion[i, i])
            predicted = float(self.confusion[:, i].sum())
            support = int(self.confusion[i, :].sum())
            precision = tp / predicted if predicted else 0.0
            recall = tp / support if support else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            out[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        return out

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "n": self.n, "labels": self.labels,
                "per_class": self.per_class(), "confusion": self.confusion.tolist()}


def score(labels: Sequence[str], pairs: Sequence[tuple[str, str]]) -> Scores:
    """Confusion matrix of (true, predicted) label pairs."""
    index = {label: i for i, label in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), np.int64)
    for true, predicted in pairs:
        cm[index[true], index[predicted]] += 1
    return Scores(list(labels), cm)


def draw_confusion(cm: np.ndarray, labels: Sequence[str], out: str | os.PathLike,
                   title: str, dpi: int = 110) -> Path:
    """Counts in every cell, coloured by the share of the true class (row-normalised).

    Needs matplotlib (the `plot` extra); the training package draws its matrices here too.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 0.85 * n, 1.0 + 0.75 * n))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=9,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), labels, rotation=35, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return out


def confusion_png(scores: Scores, out: str, title: str = "Confusion matrix") -> None:
    """Draw the confusion matrix of `scores`, its accuracy in the title."""
    draw_confusion(scores.confusion, scores.labels, out,
                   f"{title} (accuracy {scores.accuracy:.1%}, n={scores.n})")
