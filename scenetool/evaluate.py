"""Scoring the model on a labelled folder: one subfolder per class, named by label."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from scenetool.walk import Item, WalkStats, walk


class LayoutError(Exception):
    """The folder does not have one subfolder per label."""


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


def confusion_png(scores: Scores, out: str, title: str = "Confusion matrix") -> None:
    """Draw the confusion matrix; needs matplotlib (the `train` extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    cm = scores.confusion
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(scores.labels)), scores.labels, rotation=45, ha="right")
    ax.set_yticks(range(len(scores.labels)), scores.labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = cm.max() or 1
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > top / 2 else "black")
    ax.set_title(f"{title} (accuracy {scores.accuracy:.1%}, n={scores.n})")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
