"""The pipeline: decode in a thread pool, batch, run the model, yield results as they come.

Decoding (Pillow releases the GIL) overlaps with inference (onnxruntime releases it too).
At most `max_in_flight` images are being decoded or waiting for their batch at any time,
so memory stays flat however many images there are.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from scenetool.images import DecodeError, load_image
from scenetool.model import SceneModel
from scenetool.walk import Item

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Result:
    item: Item
    label: str | None = None  # None when the image failed; UNKNOWN below --min-confidence
    confidence: float | None = None
    top_k: tuple[tuple[str, float], ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class Settings:
    batch_size: int = 32
    threads: int = 0  # decode threads; 0 = as many as cores
    top_k: int = 1
    min_confidence: float = 0.0

    def decode_threads(self) -> int:
        return self.threads or os.cpu_count() or 2

    def max_in_flight(self) -> int:
        """Images decoding or waiting: one batch being filled plus one more in the pool."""
        return 2 * self.batch_size + self.decode_threads()


def _decode(model: SceneModel, item: Item) -> np.ndarray | DecodeError:
    if item.error:
        return DecodeError(item.error)
    try:
        return load_image(item.path, model.meta.image_size, model.meta.resize,
                          model.meta.channel_order)
    except DecodeError as exc:
        return exc


def _label(probs: np.ndarray, labels: tuple[str, ...], settings: Settings,
           item: Item) -> Result:
    order = np.argsort(-probs)[: max(settings.top_k, 1)]
    top = tuple((labels[i], float(probs[i])) for i in order)
    label, confidence = top[0]
    if confidence < settings.min_confidence:
        label = UNKNOWN
    return Result(item, label, confidence, top)


def classify(model: SceneModel, items: Iterable[Item], settings: Settings = Settings(),
             on_batch: Callable[[list[Result]], None] | None = None) -> Iterator[Result]:
    """Yield a Result for every item, in input order, a batch at a time.

    `on_batch` (if given) is called with each finished batch before its results are
    yielded, which is where the store commits them.
    """
    low, high = model.meta.value_range
    scale = (high - low) / 255.0
    height, width = model.meta.image_size
    batch_size = max(settings.batch_size, 1)
    # One contiguous float32 buffer, reused for every batch.
    buffer = np.empty((batch_size, height, width, 3), np.float32)
    pending: deque[tuple[Item, Future]] = deque()
    iterator = iter(items)
    limit = settings.max_in_flight()
    with ThreadPoolExecutor(settings.decode_threads(), thread_name_prefix="decode") as pool:

        def refill() -> None:
            """Keep up to `limit` images decoding or decoded, waiting for their batch."""
            while len(pending) < limit:
                item = next(iterator, None)
                if item is None:
                    return
                pending.append((item, pool.submit(_decode, model, item)))

        while True:
            refill()
            if not pending:
                return
            batch: list[Result | None] = []
            rows: list[tuple[int, Item]] = []
            while pending and len(rows) < batch_size:
                item, future = pending.popleft()
                decoded = future.result()
                if isinstance(decoded, DecodeError):
                    batch.append(Result(item, error=str(decoded)))
                else:
                    np.multiply(decoded, scale, out=buffer[len(rows)], casting="unsafe")
                    if low:
                        buffer[len(rows)] += low
                    rows.append((len(batch), item))
                    batch.append(None)
                refill()  # keep the pool busy while this batch fills
            if rows:
                probs = model.predict(buffer[: len(rows)])
                for (slot, item), p in zip(rows, probs, strict=True):
                    batch[slot] = _label(p, model.labels, settings, item)
            results = [r for r in batch if r is not None]
            if on_batch:
                on_batch(results)
            yield from results
