"""The local engine: decode in a thread pool, batch, run the model, yield results as they come.

Decoding (Pillow releases the GIL) overlaps with inference (onnxruntime releases it too).
At most `max_in_flight` images are being decoded or waiting for their batch at any time,
so memory stays flat however many images there are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from scenetool.engines import common
from scenetool.engines.common import Result, Settings
from scenetool.errors import DecodeError
from scenetool.inputs.walk import Item
from scenetool.model import SceneModel


class LocalEngine:
    """One model session in this process, fed by a pool of decode threads."""

    def __init__(self, model: SceneModel, settings: Settings = Settings()):
        self.model, self.settings = model, settings

    def batches(self, items: Iterable[Item]) -> Iterator[list[Result]]:
        """A list of Results per batch, in input order."""
        meta, settings = self.model.meta, self.settings
        height, width = meta.image_size
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
                    pending.append((item, pool.submit(common.decode, meta, item)))

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
                        common.to_input(decoded, meta, buffer[len(rows)])
                        rows.append((len(batch), item))
                        batch.append(None)
                    refill()  # keep the pool busy while this batch fills
                if rows:
                    probs, scores = self.model.predict_scored(buffer[: len(rows)])
                    threshold = self.model.unknown_threshold
                    for i, (slot, item) in enumerate(rows):
                        batch[slot] = common.label(
                            probs[i], self.model.labels, settings, item,
                            None if scores is None else scores[i], threshold)
                yield [r for r in batch if r is not None]


def classify(model: SceneModel, items: Iterable[Item], settings: Settings = Settings(),
             on_batch: Callable[[list[Result]], None] | None = None) -> Iterator[Result]:
    """Yield a Result for every item, in input order, with the local engine.

    `on_batch` (if given) is called with each finished batch before its results are
    yielded.
    """
    for batch in LocalEngine(model, settings).batches(items):
        if on_batch:
            on_batch(batch)
        yield from batch
