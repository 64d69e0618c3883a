"""Evaluate a run's checkpoint on its own validation split: metrics, confusion, spot check.

Shared by `python -m train evaluate` and the exporter: `open_run` finds the data, split and
checkpoint a run used, `report` turns labels and predictions into the numbers both print.
Validation images are decoded from their files by the runtime's own decoder
(`scenetool.engines.common.decode`: EXIF orientation, Pillow resize to the model's size),
never from the training cache, so every figure here is one a user of the tool would see.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from scenetool.evaluate import Scores, draw_confusion
from scenetool.fsutil import write_text
from train import data as data_mod
from train.fitting.fit import FitConfig, FitError, load_saved, prepare

SPOT_CHECK_IMAGES = 12


@dataclass
class RunData:
    """A run folder with what it trained on: config, folder, split (bad files removed)."""

    path: Path
    cfg: FitConfig
    folder: data_mod.ImageFolder
    split: data_mod.Split
    arrays: data_mod.Arrays
    state: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def classes(self) -> list[str]:
        return list(self.folder.classes)

    def val_labels(self) -> np.ndarray:
        return np.asarray(self.folder.labels)[self.split.val]


def utc_now() -> str:
    """Now in UTC, ISO 8601 to the second (datetime.UTC would need Python 3.11)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")  # noqa: UP017


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def open_run(run: Path, data: str | None = None) -> RunData:
    """Load a run's config and its exact validation split (its split.txt copy).

    `data` overrides the data folder of config.json (which may be relative to where the
    run was started). The class order is the run's: a folder that lacks one is an error.
    """
    cfg = FitConfig.read(run)
    if data:
        cfg.data = data
    if (run / "split.txt").exists():
        cfg.split = str(run / "split.txt")
    folder, split, arrays = prepare(cfg)
    trained = _read_json(run / "metrics.json").get("classes")
    if trained and list(folder.classes) != trained:
        raise FitError(f"{cfg.data} has the classes {', '.join(folder.classes)}, but run "
                       f"{run.name} was trained on {', '.join(trained)}")
    if not split.val:
        raise FitError(f"run {run.name} has no readable validation images")
    return RunData(run, cfg, folder, split, arrays, _read_json(run / "state.json"))


def default_size(cfg: FitConfig) -> int:
    """The size of the run's last phase: where a progressive-resizing run ends up."""
    return cfg.phases[-1][0]


def check_size(cfg: FitConfig, size: int) -> None:
    from train.fitting.zoo import fixed_size

    if fixed_size(cfg.arch) and size != cfg.phases[0][0]:
        raise FitError(f"{cfg.arch} flattens its features: it only takes {cfg.phases[0][0]}px "
                       f"images, not {size}px")
    if size < 8:
        raise FitError(f"image size {size} is too small")


def load_checkpoint(run: Path, which: str = "best"):
    """The Keras model of `run/<which>.keras` (no optimizer: evaluation and export only)."""
    return load_saved(run / f"{which}.keras", f"run {run.name} has no {which}.keras checkpoint yet")


def val_paths(rd: RunData, positions=None) -> list[str]:
    """The files of the validation split (or of those at `positions` in it)."""
    indices = rd.split.val if positions is None else [rd.split.val[i] for i in positions]
    return [str(rd.folder.root / rd.folder.files[i]) for i in indices]


def decoded(paths: list[str], size: int) -> np.ndarray:
    """uint8 (n, size, size, 3) images as the runtime decodes them for a model of `size`."""
    from concurrent.futures import ThreadPoolExecutor

    from scenetool.engines.common import decode
    from scenetool.errors import DecodeError
    from scenetool.inputs.walk import Item
    from scenetool.metadata import ModelMeta

    meta = ModelMeta(labels=("-",), image_size=(size, size))
    with ThreadPoolExecutor(2) as pool:
        images = list(pool.map(lambda p: decode(meta, Item(p)), paths))
    for path, image in zip(paths, images, strict=True):
        if isinstance(image, DecodeError):
            raise FitError(f"cannot decode validation image {path}: {image}")
    return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)


def val_batches(rd: RunData, size: int, batch: int = 64, positions=None):
    """The validation images (or those at `positions` in the split) as float32 batches in
    0..255, decoded from their files by the runtime's decoder at `size`."""
    paths = val_paths(rd, positions)
    for start in range(0, len(paths), batch):
        yield decoded(paths[start:start + batch], size).astype(np.float32)


def predict_keras(model, rd: RunData, size: int) -> np.ndarray:
    """Probabilities of the whole validation split, (n_val, classes)."""
    return np.concatenate([np.asarray(model(x, training=False)) for x in val_batches(rd, size)])


def confusion(true: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """cm[i, j]: images of true class i predicted as j."""
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (np.asarray(true), np.asarray(pred)), 1)
    return cm


def report(true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support, macro F1 and the confusion matrix,
    computed by the runtime's own scorer, so `train evaluate` and `scenetool evaluate` agree."""
    pred = np.argmax(probs, axis=1)
    scores = Scores(list(classes), confusion(true, pred, len(classes)))
    per_class = scores.per_class()
    return {
        "accuracy": scores.accuracy,
        "macro_f1": scores.macro_f1,
        "n": scores.n,
        "classes": list(classes),
        "per_class": per_class,
        "confusion": scores.confusion.tolist(),
    }


def sample_positions(n: int, seed: int, k: int = SPOT_CHECK_IMAGES) -> np.ndarray:
    """k sorted positions out of n (the validation split), the same for the same seed."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(k, n), replace=False))


def draw(rd: RunData, true: np.ndarray, probs: np.ndarray, result: dict, out_dir: Path,
         title: str, size: int) -> dict[str, Path]:
    """confusion.png and spotcheck.png (the images as the model saw them) in out_dir."""
    from train.reports.plots import spot_check_png

    picks = sample_positions(len(true), rd.cfg.seed)
    images = decoded(val_paths(rd, picks), size)
    return {
        "confusion": draw_confusion(np.asarray(result["confusion"]), rd.classes,
                                   out_dir / "confusion.png", f"Confusion: {title}"),
        "spotcheck": spot_check_png(images, true[picks], probs[picks], rd.classes,
                                    out_dir / "spotcheck.png", f"Spot check: {title}"),
    }


def evaluate(run: Path, size: int | None = None, which: str = "best",
             data: str | None = None) -> tuple[dict, dict[str, Path]]:
    """Predict the run's validation split; write eval.json, confusion.png, spotcheck.png."""
    rd = open_run(run, data)
    size = size or default_size(rd.cfg)
    check_size(rd.cfg, size)
    model = load_checkpoint(run, which)
    probs = predict_keras(model, rd, size)
    true = rd.val_labels()
    result = report(true, probs, rd.classes)
    result.update({"run": rd.name, "arch": rd.cfg.arch, "checkpoint": which, "image_size": size,
                   "created": utc_now()})
    pngs = draw(rd, true, probs, result, run, f"{rd.name} ({which}, {size}px)", size)
    write_text(run / "eval.json", json.dumps(result, indent=2) + "\n")
    return result, pngs
