"""A classify run: walk, skip what the store already has, classify the rest, record it all."""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from scenetool.model import SceneModel
from scenetool.pipeline import Result, Settings, classify
from scenetool.store import Row, Store
from scenetool.walk import Item, WalkStats, walk


@dataclass
class Tally:
    """What a run did, for the summary line and the exit status."""

    classified: int = 0
    reused: int = 0
    failed: int = 0
    labels: Counter = field(default_factory=Counter)
    walk: WalkStats = field(default_factory=WalkStats)

    @property
    def total(self) -> int:
        return self.classified + self.reused + self.failed


class ClassifyJob:
    """Iterate over a job to run it; every result is committed to the store before it is
    yielded, a batch per transaction.

    With `force` False, a file whose path, size and mtime match an earlier good result by
    the same model is not classified again: that result is copied into this run.
    """

    def __init__(self, model: SceneModel, store: Store, paths: Sequence[str],
                 settings: Settings = Settings(), recursive: bool = True, force: bool = False,
                 arguments: dict | None = None):
        self.model, self.store, self.paths = model, store, list(paths)
        self.settings, self.recursive, self.force = settings, recursive, force
        self.arguments = arguments or {}
        self.tally = Tally()
        self.run_id: int | None = None

    def _row(self, result: Result) -> Row:
        item = result.item
        return Row(self.run_id or 0, item.path, item.size, item.mtime, result.label,
                   result.confidence, list(result.top_k), result.error, self.model.sha256)

    def _commit(self, results: list[Result]) -> None:
        self.store.add_results(self.run_id or 0, [
            (r.item.path, r.item.size, r.item.mtime, r.label, r.confidence,
             [list(t) for t in r.top_k] or None, r.error) for r in results])

    def __iter__(self) -> Iterator[Row]:
        self.run_id = self.store.start_run(self.model.sha256, str(self.model.path),
                                           self.arguments)
        reused_ids: list[int] = []
        ready: deque[Row] = deque()

        def flush_reused() -> None:
            if reused_ids:
                self.store.reuse(self.run_id or 0, reused_ids)
                for row in self.store.rows_by_id(reused_ids):
                    ready.append(dataclasses.replace(row, run_id=self.run_id, reused=True))
                reused_ids.clear()

        def fresh_items() -> Iterator[Item]:
            for item in walk(self.paths, self.recursive, self.tally.walk):
                if not self.force and item.error is None:
                    done = self.store.find_done(self.model.sha256, item.path, item.size,
                                                item.mtime)
                    if done is not None:
                        reused_ids.append(done)
                        if len(reused_ids) >= self.settings.batch_size:
                            flush_reused()
                        continue
                yield item

        for result in classify(self.model, fresh_items(), self.settings, on_batch=self._commit):
            while ready:
                yield self._count(ready.popleft())
            yield self._count(self._row(result))
        flush_reused()
        while ready:
            yield self._count(ready.popleft())
        self.store.finish_run(self.run_id)

    def _count(self, row: Row) -> Row:
        if row.error:
            self.tally.failed += 1
        else:
            if row.reused:
                self.tally.reused += 1
            else:
                self.tally.classified += 1
            self.tally.labels[row.label] += 1
        return row
