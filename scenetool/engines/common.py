"""The steps every engine shares: decode one item into model input, and turn the model's
probabilities (and scene score) for it into a Result."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from scenetool.constants import UNKNOWN
from scenetool.errors import DecodeError
from scenetool.inputs.decode import load_image
from scenetool.inputs.walk import Item
from scenetool.metadata import ModelMeta


@dataclass(frozen=True)
class Result:
    item: Item
    label: str | None = None  # None when the image failed; else UNKNOWN or a model label
    confidence: float | None = None
    top_k: tuple[tuple[str, float], ...] = ()
    error: str | None = None
    scene_score: float | None = None  # None: the model has no scene score
    not_scene: bool = False  # UNKNOWN because the scene score is below the model's threshold


@dataclass(frozen=True)
class Settings:
    batch_size: int = 32
    threads: int = 0  # decode threads; 0 = as many as cores
    top_k: int = 1
    min_confidence: float = 0.0
    unknown: bool = True  # apply the model's "not a scene" threshold (--no-unknown: False)

    def decode_threads(self) -> int:
        return self.threads or os.cpu_count() or 2

    def max_in_flight(self) -> int:
        """Images decoding or waiting: one batch being filled plus one more in the pool."""
        return 2 * self.batch_size + self.decode_threads()


class Engine(Protocol):
    """Maps walked items to results: one Result per item, in input order, by batches."""

    def batches(self, items: Iterable[Item]) -> Iterator[list[Result]]: ...


def decode(meta: ModelMeta, item: Item) -> np.ndarray | DecodeError:
    """The item as a uint8 (height, width, 3) array in the model's size and channel order,
    or the DecodeError that says why not (returned, so a pool can carry it back)."""
    if item.error:
        return DecodeError(item.error)
    try:
        return load_image(item.path, meta.image_size, meta.resize, meta.channel_order)
    except DecodeError as exc:
        return exc


def to_input(decoded: np.ndarray, meta: ModelMeta, out: np.ndarray) -> None:
    """Scale uint8 pixels into the model's value range, written into `out` (float32)."""
    low, high = meta.value_range
    np.multiply(decoded, (high - low) / 255.0, out=out, casting="unsafe")
    if low:
        out += low


def label(probs: np.ndarray, labels: tuple[str, ...], settings: Settings, item: Item,
          score: float | None = None, threshold: float | None = None) -> Result:
    """The top-k labels of one image. The label is UNKNOWN when its scene `score` is below
    the model's `threshold` (not a scene; unless settings.unknown is off), or when its top
    probability is below settings.min_confidence."""
    order = np.argsort(-probs)[: max(settings.top_k, 1)]
    top = tuple((labels[i], float(probs[i])) for i in order)
    name, confidence = top[0]
    not_scene = (settings.unknown and score is not None and threshold is not None
                 and score < threshold)
    return Result(item, final_label(name, confidence, settings.min_confidence, not_scene),
                  confidence, top, scene_score=None if score is None else float(score),
                  not_scene=not_scene)


def final_label(top: str, confidence: float, min_confidence: float,
                not_scene: bool = False) -> str:
    """The label a result gets: its top label, or UNKNOWN when it is not a scene (its scene
    score is below the model's threshold) or below --min-confidence."""
    return UNKNOWN if not_scene or confidence < min_confidence else top
