"""Shipping: replace the packaged model (and its card) with a run's export, on purpose.

`python -m train export RUN` writes into the run's own folder (runs/RUN/export/), so a
trial never touches what the package ships. `python -m train ship RUN` (`make ship`) is
the one step that does: it copies runs/RUN/export/scenes.onnx over
scenetool/models/scenes.onnx, the card and its figures into exported/, and the run's
validation split to exported/val_split.txt, and says what it replaced.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from scenetool.constants import MODEL_FILE
from scenetool.fsutil import atomic_path

EXPORT_DIR = "export"  # inside a run's folder
SHIPPED_MODEL = Path("scenetool") / "models" / MODEL_FILE
SHIPPED_CARD_DIR = Path("exported")
CARD_FILES = ("MODEL.md", "confusion.png", "curves.png", "spotcheck.png", "calibration.png",
              "roc.png", "candidates.png")  # each copied when the export has it


class ShipError(Exception):
    """A run that has nothing to ship, or an export the runtime cannot open."""


def export_path(run: Path) -> Path:
    """Where `python -m train export` writes a run's model by default."""
    return run / EXPORT_DIR / MODEL_FILE


@dataclass(frozen=True)
class ModelSummary:
    path: Path
    sha256: str
    arch: str
    val_accuracy: float | None
    created: str

    def describe(self) -> str:
        accuracy = (f"validation accuracy {self.val_accuracy:.1%}, "
                    if isinstance(self.val_accuracy, float) else "")
        return (f"{self.path} ({self.arch}, {accuracy}sha256 {self.sha256[:12]}, "
                f"exported {self.created})")


def summarise(path: Path) -> ModelSummary:
    """What a model file says about itself, read through the runtime (so a file the
    runtime cannot open is refused here)."""
    from scenetool.errors import ModelError
    from scenetool.model import SceneModel

    try:
        model = SceneModel(path)
    except ModelError as exc:
        raise ShipError(str(exc)) from None
    extra = model.meta.extra
    accuracy = extra.get("val_accuracy")
    return ModelSummary(path, model.sha256, str(extra.get("arch", "?")),
                        float(accuracy) if isinstance(accuracy, (int, float)) else None,
                        str(extra.get("created", "?")))


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as temp:
        shutil.copyfile(source, temp)


def _same(a: Path, b: Path) -> bool:
    return b.exists() and hashlib.sha256(a.read_bytes()).digest() == \
        hashlib.sha256(b.read_bytes()).digest()


def ship(run: Path, model_target: Path = SHIPPED_MODEL,
         card_dir: Path = SHIPPED_CARD_DIR) -> list[str]:
    """Copy `run`'s export into place; returns lines saying what was replaced."""
    source = export_path(run)
    if not source.is_file():
        raise ShipError(f"run {run.name} has no export at {source}: "
                        f"run `python -m train export {run.name}` first")
    new = summarise(source)
    old = summarise(model_target) if model_target.is_file() else None
    lines = []
    if old and old.sha256 == new.sha256:
        lines.append(f"{model_target} is already {source} (sha256 {new.sha256[:12]}); "
                     "nothing replaced")
    else:
        _copy(source, model_target)
        lines.append(f"replaced {old.describe()}" if old else f"shipped to {model_target} "
                     "(no model was there)")
        lines.append(f"    with {new.describe()}")
    copied = []
    extras = [(source.parent / name, card_dir / name) for name in CARD_FILES]
    extras.append((run / "split.txt", card_dir / "val_split.txt"))
    for src, dst in extras:
        if src.is_file() and not _same(src, dst):
            _copy(src, dst)
            copied.append(dst.name)
    if copied:
        lines.append(f"replaced in {card_dir}/: {', '.join(copied)}")
    if not (source.parent / "MODEL.md").is_file():
        lines.append(f"note: {source.parent} has no MODEL.md (export with --card), so "
                     f"{card_dir / 'MODEL.md'} still describes the model shipped before")
    return lines
