"""Scoring the model on labelled images: a folder with one subfolder per class, or a list
of such files (a validation split), through the same engine `classify` uses.

`evaluate` is the one scorer: `scenetool evaluate`, and the training side's export and
model card, call it, so an accuracy on the card is the accuracy a user measures.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scenetool.errors import LayoutError
from scenetool.inputs.walk import Item, WalkStats, walk


def labelled_items(root: str, labels: Sequence[str],
                   stats: WalkStats | None = None) -> Iterator[tuple[str, Item]]:
    """(true label, item) for every image under root/<label>/; other subfolders are an error."""
    if not os.path.isdir(root):
        raise LayoutError(f"not a folder: {root}")
    try:
        with os.scandir(root) as entries:
            subdirs = sorted(e.name for e in entries
                             if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise LayoutError(f"cannot list {root}: {exc.strerror or exc}") from None
    unknown = [d for d in subdirs if d not in labels]
    if unknown:
        raise LayoutError(f"subfolder(s) of {root} match no label of the model: "
                          f"{', '.join(unknown)} (labels: {', '.join(labels)})")
    if not subdirs:
        raise LayoutError(f"{root} has no class subfolders; expected {root}/<label>/<image>")
    for name in subdirs:
        for item in walk([os.path.join(root, name)], True, stats):
            yield name, item


def listed_items(root: str, list_file: str | os.PathLike,
                 labels: Sequence[str]) -> Iterator[tuple[str, Item]]:
    """(true label, item) for every file a list names, relative to `root`: one path a line,
    its first folder the label (`forest/123.jpg`); blank lines and `#` comments are skipped.
    A listed file that is missing becomes an item with its error (a failed image)."""
    if not os.path.isdir(root):
        raise LayoutError(f"not a folder: {root}")
    try:
        with open(list_file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise LayoutError(f"cannot read the list {list_file}: {reason}") from None
    entries = []
    for number, line in enumerate(lines, 1):
        rel = line.strip()
        if not rel or rel.startswith("#"):
            continue
        true = rel.replace("\\", "/").split("/", 1)[0]
        if true not in labels or "/" not in rel:
            raise LayoutError(f"{list_file}, line {number}: {rel!r} is not <label>/<image> "
                              f"for a label of the model ({', '.join(labels)})")
        entries.append((true, os.path.join(root, rel)))
    if not entries:
        raise LayoutError(f"{list_file} lists no images")
    for true, path in entries:
        found = list(walk([path], False))
        yield true, found[0] if found else Item(path, error="not an image")


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

    @property
    def macro_f1(self) -> float:
        per_class = self.per_class()
        return float(np.mean([m["f1"] for m in per_class.values()])) if per_class else 0.0

    def as_dict(self) -> dict:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "n": self.n,
                "labels": self.labels, "per_class": self.per_class(),
                "confusion": self.confusion.tolist()}


def score(labels: Sequence[str], pairs: Sequence[tuple[str, str]]) -> Scores:
    """Confusion matrix of (true, predicted) label pairs."""
    index = {label: i for i, label in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), np.int64)
    for true, predicted in pairs:
        cm[index[true], index[predicted]] += 1
    return Scores(list(labels), cm)


@dataclass
class Evaluation:
    """Forced-choice scores (every image gets one of the model's labels, so accuracies stay
    comparable across models), how many images the model's threshold calls unknown, the
    failures, and each image's result (all labels' probabilities, for figures)."""

    scores: Scores
    threshold: float | None  # the model's "not a scene" threshold; None: it has none
    called_unknown: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    results: list[tuple[str, object]] = field(default_factory=list)  # (true label, Result)

    @property
    def unknown_share(self) -> float | None:
        if self.threshold is None or not self.scores.n:
            return None
        return self.called_unknown / self.scores.n

    def probabilities(self) -> np.ndarray:
        """(images, labels): every scored image's probability of each label."""
        index = {label: i for i, label in enumerate(self.scores.labels)}
        out = np.zeros((len(self.results), len(index)), np.float32)
        for row, (_, result) in enumerate(self.results):
            for name, p in result.top_k:
                out[row, index[name]] = p
        return out

    def as_dict(self) -> dict:
        out = self.scores.as_dict()
        if self.threshold is not None:
            out["unknown"] = {"threshold": self.threshold, "called_unknown": self.called_unknown,
                              "share": self.unknown_share}
        out["failed"] = len(self.failed)
        return out


def evaluate(model, labelled: Iterable[tuple[str, Item]], batch_size: int = 32,
             threads: int = 0) -> Evaluation:
    """Classify labelled items with the local engine, forced choice, and score them."""
    from scenetool.engines.common import Settings
    from scenetool.engines.local import classify

    settings = Settings(batch_size=batch_size, threads=threads, top_k=len(model.labels),
                        unknown=False)
    truths: dict[str, list[str]] = {}

    def items() -> Iterator[Item]:
        for true, item in labelled:
            truths.setdefault(item.path, []).append(true)
            yield item

    threshold = model.unknown_threshold
    evaluation = Evaluation(Scores(list(model.labels), np.zeros((0, 0))), threshold)
    for result in classify(model, items(), settings):
        true = truths[result.item.path].pop(0)
        if result.error:
            evaluation.failed.append((result.item.path, result.error))
            continue
        evaluation.results.append((true, result))
        if (threshold is not None and result.scene_score is not None
                and result.scene_score < threshold):
            evaluation.called_unknown += 1
    evaluation.scores = score(model.labels, [(t, r.label) for t, r in evaluation.results])
    return evaluation


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
