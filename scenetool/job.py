"""A classify run, whatever engine classifies: walk, take what the store already has,
hand the rest to the engine, commit each batch, tally, yield rows.

An engine (see `scenetool.engines`) only maps walked items to results; everything that
touches the store happens here, so every engine gets the same reuse, commits and tally.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from scenetool.constants import RAW_HINT
from scenetool.engines.common import Engine, Result, Settings, final_label
from scenetool.inputs.walk import Item, WalkStats, walk
from scenetool.model import SceneModel
from scenetool.store import Row, Store


@dataclass
class Tally:
    """What a run did, for the summary line and the exit status."""

    classified: int = 0
    reused: int = 0
    failed: int = 0
    raw_without_extra: int = 0  # failed camera RAW files, for the summary's install hint
    labels: Counter = field(default_factory=Counter)
    walk: WalkStats = field(default_factory=WalkStats)

    @property
    def total(self) -> int:
        return self.classified + self.reused + self.failed

    def count(self, row: Row) -> Row:
        if row.error:
            self.failed += 1
            if row.error == RAW_HINT:
                self.raw_without_extra += 1
        else:
            if row.reused:
                self.reused += 1
            else:
                self.classified += 1
            self.labels[row.label] += 1
        return row


class Reuse:
    """Earlier results copied into this run, a batch per transaction. A copy is labelled
    by this run's --min-confidence (the top label, or unknown below it) and shows this
    run's --top-k; the store keeps every label the earlier result had."""

    def __init__(self, store: Store, run_id: int, settings: Settings, top_k: int,
                 threshold: float | None = None):
        self.store, self.run_id, self.settings, self.top_k = store, run_id, settings, top_k
        self.threshold = threshold  # the model's scene-score threshold, if it has one
        self.waiting: list[int] = []  # result ids not yet copied
        self.ready: list[Row] = []  # copied, not yet yielded

    def add(self, result_id: int) -> None:
        """Note one result to copy; a batch's worth is copied at once."""
        self.waiting.append(result_id)
        if len(self.waiting) == self.settings.batch_size:
            self.flush()

    def flush(self) -> None:
        """Copy the waiting results into this run (one transaction)."""
        ids, self.waiting = self.waiting, []
        if not ids:
            return
        rows = [self._copy(row) for row in self.store.rows_by_id(ids)]
        self.store.reuse(self.run_id, rows)
        self.ready += [dataclasses.replace(r, top_k=r.top_k[:self.top_k]) for r in rows]

    def _copy(self, row: Row) -> Row:
        top = row.top_k[0][0] if row.top_k else row.label or ""
        not_scene = (self.settings.unknown and self.threshold is not None
                     and row.scene_score is not None and row.scene_score < self.threshold)
        label = final_label(top, row.confidence or 0.0, self.settings.min_confidence, not_scene)
        return dataclasses.replace(row, run_id=self.run_id, reused=True, label=label,
                                   not_scene=not_scene)

    def take(self) -> list[Row]:
        rows, self.ready = self.ready, []
        return rows


class ClassifyJob:
    """Iterate over a job to run it; every result is committed to the store before it is
    yielded, a batch per transaction.

    With `force` False, a file whose path, size and mtime match an earlier good result by
    the same model, stored with at least as many top-k labels as asked for, is not
    classified again: that result is copied into this run. With `store` None nothing is
    kept: every image is classified and `run_id` stays None. `more` gives further lists of
    files to classify into the same run once the walk is done (a watched folder's new
    images); each list is finished before the next is asked for.
    """

    def __init__(self, model: SceneModel, store: Store | None, paths: Sequence[str],
                 settings: Settings = Settings(), recursive: bool = True, force: bool = False,
                 arguments: dict | None = None, engine: Engine | None = None,
                 more: Iterable[Sequence[str]] = ()):
        self.model, self.store, self.paths = model, store, list(paths)
        self.settings, self.recursive, self.force = settings, recursive, force
        self.arguments = arguments or {}
        if engine is None:
            from scenetool.engines.local import LocalEngine

            engine = LocalEngine(model, settings)
        self.engine = engine
        self.more = more
        self.tally = Tally()
        self.run_id: int | None = None

    def __iter__(self) -> Iterator[Row]:
        if self.store is not None:
            self.run_id = self.store.start_run(self.model.sha256, str(self.model.path),
                                               self.arguments)
        yield from self._classify(walk(self.paths, self.recursive, self.tally.walk))
        for paths in self.more:
            yield from self._classify(walk(paths, False, self.tally.walk))
        if self.store is not None:
            self.store.finish_run(self.run_id)

    def _classify(self, items: Iterable[Item]) -> Iterator[Row]:
        reuse = Reuse(self.store, self.run_id or 0, self.settings, self._top_k(),
                      self.model.unknown_threshold)
        for batch in self.engine.batches(self._to_classify(items, reuse)):
            self._commit(batch)
            yield from self._counted(reuse.take())
            yield from self._counted(self._row(result) for result in batch)
        reuse.flush()
        yield from self._counted(reuse.take())

    @contextmanager
    def recording_end(self) -> Iterator[None]:
        """Run the job inside this block: when the block fails (a full disk, an export
        that cannot be written, Ctrl-C), the run is marked with why it stopped, so
        `report` says so; everything committed before stays in the store."""
        try:
            yield
        except KeyboardInterrupt:
            self.stop("interrupted by Ctrl-C")
            raise
        except BaseException as exc:
            self.stop(str(exc) or type(exc).__name__)
            raise

    def stop(self, reason: str) -> None:
        """Mark the run as stopped before finishing, with `reason` (best effort)."""
        if self.store is not None and self.run_id is not None:
            self.store.end_run(self.run_id, reason)

    def _to_classify(self, items: Iterable[Item], reuse: Reuse) -> Iterator[Item]:
        """The walked items the store cannot answer; the others go to `reuse`."""
        for item in items:
            done = self._stored(item)
            if done is None:
                yield item
            else:
                reuse.add(done)

    def _top_k(self) -> int:
        """How many labels each result holds: --top-k, at most the model's label count."""
        return max(1, min(self.settings.top_k, len(self.model.labels)))

    def _stored(self, item: Item) -> int | None:
        """The id of a stored result this run may reuse for `item`, if any."""
        if self.force or item.error is not None or self.store is None:
            return None
        return self.store.find_done(self.model.sha256, item.path, item.size, item.mtime,
                                    self._top_k())

    def _commit(self, results: list[Result]) -> None:
        if self.store is None:
            return
        self.store.add_results(self.run_id or 0, [
            (r.item.path, r.item.size, r.item.mtime, r.label, r.confidence,
             [list(t) for t in r.top_k] or None, r.error, r.scene_score, r.not_scene)
            for r in results])

    def _row(self, result: Result) -> Row:
        item = result.item
        return Row(self.run_id or 0, item.path, item.size, item.mtime, result.label,
                   result.confidence, list(result.top_k), result.error, self.model.sha256,
                   scene_score=result.scene_score, not_scene=result.not_scene)

    def _counted(self, rows: Iterable[Row]) -> Iterator[Row]:
        for row in rows:
            yield self.tally.count(row)
