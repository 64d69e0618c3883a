"""Every candidate model in one table and one plot: accuracy, macro F1, throughput,
parameters and training time, kept in `exported/candidates.json`.

A candidate given as an ONNX file is measured here, all of them in one run: accuracy and
macro F1 through `scenetool.evaluate` (the runtime's decoder and onnxruntime, forced
choice) on the validation split, throughput side by side (`train.reports.speed`, batch 32).
Parameters and training time come from the file's metadata (`params`, `train_seconds`) or
the command line. Rows whose models are no longer at hand (the study's first models) stay
in the registry as recorded, and say so.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from scenetool.fsutil import write_text


@dataclass
class Candidate:
    name: str
    note: str = ""  # where the numbers come from
    accuracy: float | None = None
    macro_f1: float | None = None
    images_per_second: float | None = None  # batch 32, measured beside the other candidates
    params: int | None = None
    train_seconds: float | None = None
    file_mb: float | None = None
    file: str | None = None
    measured: str | None = None  # when (UTC)
    extra: dict = field(default_factory=dict)


def load(path: Path) -> list[Candidate]:
    if not path.exists():
        return []
    rows = json.loads(path.read_text())["candidates"]
    known = set(Candidate.__dataclass_fields__)
    return [Candidate(**{k: v for k, v in row.items() if k in known}) for row in rows]


def save(path: Path, rows: list[Candidate]) -> None:
    write_text(path, json.dumps({"candidates": [asdict(r) for r in rows]}, indent=2) + "\n")


def _params(meta_extra: dict, proto_path: Path) -> int:
    if isinstance(meta_extra.get("params"), int):
        return meta_extra["params"]
    import numpy as np
    import onnx

    proto = onnx.load(proto_path)
    return int(sum(np.prod(t.dims) for t in proto.graph.initializer))


def measure(files: dict[str, Path], data: str, split: str,
            train_seconds: dict[str, float] | None = None, notes: dict[str, str] | None = None,
            threads: int = 2) -> list[Candidate]:
    """Measure every ONNX file of `files` (name -> path) on `split` and side by side. A
    row's note is `notes[name]`, else empty (`merge` then keeps the note it had)."""
    from scenetool.evaluate import evaluate, listed_items
    from scenetool.model import SceneModel
    from train.reports.evaluate import utc_now
    from train.reports.speed import throughputs

    speeds = {s.path: s for s in throughputs(list(files.values()), threads=threads)}
    rows = []
    for name, path in files.items():
        model = SceneModel(path, threads=threads)
        result = evaluate(model, listed_items(data, split, model.labels), threads=threads)
        extra = model.meta.extra
        seconds = (train_seconds or {}).get(name, extra.get("train_seconds"))
        rows.append(Candidate(
            name=name, note=(notes or {}).get(name, ""),
            accuracy=round(result.scores.accuracy, 6), macro_f1=round(result.scores.macro_f1, 6),
            images_per_second=round(speeds[model.path].images_per_second, 1),
            params=_params(extra, path), train_seconds=seconds,
            file_mb=round(path.stat().st_size / 1e6, 2), file=str(path), measured=utc_now(),
            extra={"image_size": list(model.image_size), "arch": extra.get("arch"),
                   "n": result.scores.n, "failed": len(result.failed),
                   "split": Path(split).name}))
    return rows


def merge(old: list[Candidate], new: list[Candidate]) -> list[Candidate]:
    """The registry with `new` rows replacing those of the same name, order kept.

    A measured row without a note keeps the note of the row it replaces (what the model
    is, written once), else gets a plain one; a row whose file carries no training time
    keeps the time of the row it replaces."""
    before = {r.name: r for r in old}
    by_name = {}
    for row in new:
        prev = before.get(row.name)
        plain = "measured: onnxruntime" + (f" on {row.extra['split']}"
                                           if "split" in row.extra else "")
        seconds = row.train_seconds
        if seconds is None and prev:
            seconds = prev.train_seconds
        by_name[row.name] = replace(row, note=row.note or (prev.note if prev else "") or plain,
                                    train_seconds=seconds)
    out = [by_name.pop(r.name, r) for r in old]
    return out + list(by_name.values())


def _cell(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min"


def table(rows: list[Candidate], reference: str | None = None) -> list[str]:
    """Markdown rows; `reference` names the row the speed ratio is taken against."""
    ref = next((r for r in rows if r.name == reference), None)
    lines = ["| model | accuracy | macro F1 | images/s (batch 32) | speed vs "
             f"{reference or 'reference'} | parameters | training time | file | numbers |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        ratio = (r.images_per_second / ref.images_per_second
                 if ref and ref.images_per_second and r.images_per_second else None)
        lines.append(
            f"| `{r.name}` | {_cell(r.accuracy and 100 * r.accuracy, '.2f')}"
            f"{'%' if r.accuracy is not None else ''} | {_cell(r.macro_f1, '.3f')} | "
            f"{_cell(r.images_per_second, '.1f')} | {_cell(ratio, '.2f')}"
            f"{'x' if ratio is not None else ''} | {_cell(r.params, ',')} | "
            f"{_hours(r.train_seconds)} | "
            f"{_cell(r.file_mb, '.2f')}{' MB' if r.file_mb is not None else ''} | {r.note} |")
    return lines


def plot(rows: list[Candidate], out: Path, title: str = "Candidates") -> Path:
    """Accuracy against throughput, one labelled point per candidate that has both."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    drawn = [r for r in rows if r.accuracy is not None and r.images_per_second]
    for r in drawn:
        size = 20 + (r.params or 0) / 2e4
        ax.scatter(r.images_per_second, 100 * r.accuracy, s=size, alpha=0.7)
    place_labels(ax, [(r.name, (r.images_per_second, 100 * r.accuracy)) for r in drawn])
    missing = [r.name for r in rows if r not in drawn]
    ax.set_xlabel("images/s, batch 32 (onnxruntime, this machine)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(title + (f"\nnot drawn (no throughput): {', '.join(missing)}"
                          if missing else ""), fontsize=9)
    ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


# Where a point's name may go, in points from it: above right first, then below right, above
# left, below left, then the same a line farther away.
_LABEL_OFFSETS = ((4, 4), (4, -11), (-4, 4), (-4, -11), (4, 14), (4, -21), (-4, 14), (-4, -21))


def place_labels(ax, points: list[tuple[str, tuple[float, float]]]) -> list:
    """Name every point, each name at the first offset where it stays inside the axes and
    covers no name placed before it (candidates of equal accuracy and close speed would
    otherwise print their names over each other); the text artists, in the order of
    `points`. A name with no such place goes above right."""
    renderer = ax.figure.canvas.get_renderer()
    ax.figure.canvas.draw()  # fixes the axes' limits, so the boxes below are final
    frame = ax.get_window_extent(renderer)

    def name_at(name: str, xy: tuple[float, float], offset: tuple[int, int]):
        text = ax.annotate(name, xy, fontsize=8, xytext=offset, textcoords="offset points",
                           ha="left" if offset[0] > 0 else "right")
        return text, text.get_window_extent(renderer)

    placed, texts = [], []
    for name, xy in points:
        for offset in _LABEL_OFFSETS:
            text, box = name_at(name, xy, offset)
            inside = (frame.x0 <= box.x0 and box.x1 <= frame.x1
                      and frame.y0 <= box.y0 and box.y1 <= frame.y1)
            if inside and not any(box.overlaps(other) for other in placed):
                break
            text.remove()
        else:
            text, box = name_at(name, xy, _LABEL_OFFSETS[0])
        placed.append(box)
        texts.append(text)
    return texts
