"""The Python API: what `import scenetool` offers scripts, and what the CLI itself calls.

    import scenetool

    for result in scenetool.classify("photos"):
        print(result.path, result.label, result.confidence)

`classify` streams results as the CLI does (a batch at a time, memory flat however many
images); `watch` goes on with a folder's new images; `open_model` gives the model for
arrays of images. Errors are `scenetool.errors.ScenetoolError`s (ModelError, StoreError,
...), never SystemExit; an image that cannot be read is a result with `error` set, not an
exception. Nothing heavy is imported until one of these is called.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scenetool.engines.common import Engine
    from scenetool.inputs.watch import Watcher
    from scenetool.job import ClassifyJob, Tally
    from scenetool.model import SceneModel
    from scenetool.store import Row, Store

PathArg = str | os.PathLike
Paths = PathArg | Iterable[PathArg]


def open_model(path: PathArg | None = None, *, threads: int | None = None) -> SceneModel:
    """Open a scenetool ONNX model: `path`, else $SCENETOOL_MODEL, else the shipped one.

    The model has `labels`, `image_size` (height, width), `sha256`, `load(file)` (an
    image file decoded as the model wants it) and `predict(images)` (probabilities, one row
    per image, one column per label). `threads` caps onnxruntime's threads (None: all
    cores). Raises ModelError for a missing, unreadable or unsuitable file.
    """
    from scenetool.model import open_model as _open

    return _open(path, threads=threads)


class Results(Iterator["Row"]):
    """The stream `classify` and `watch` return: iterate it for results (`scenetool.store.Row`:
    path, label, confidence, top_k, error, ...), each committed to the store (when there is
    one) before it is yielded. `tally` counts them as they come; `run_id` is the store's
    run (None without a store). A store or watch this object opened is closed when the
    stream ends or `close()` is called; use it as a context manager to be sure.
    """

    def __init__(self, job: ClassifyJob, owned_store: Store | None = None,
                 watcher: Watcher | None = None):
        self.job, self._owned_store, self._watcher = job, owned_store, watcher
        self._rows = iter(job)

    def __next__(self) -> Row:
        try:
            row = next(self._rows)
        except BaseException:  # the end, an error, or Ctrl-C: let go of what we hold
            self.close()
            raise
        if self._watcher is not None:
            self._watcher.seen(row.path, row.size, row.mtime)
        return row

    @property
    def tally(self) -> Tally:
        """Counts so far: classified, reused, failed, per label, and what the walk skipped."""
        return self.job.tally

    @property
    def run_id(self) -> int | None:
        return self.job.run_id

    @property
    def model(self) -> SceneModel:
        return self.job.model

    def close(self) -> None:
        # The rows' generators first: a stream left mid-way (Ctrl-C while a row was being
        # shown) would otherwise keep its engine's work going (Ray Data's executor and
        # actors) until garbage collection, after the engine itself was let go.
        self._rows.close()
        if self._watcher is not None:
            self._watcher.__exit__(None, None, None)
            self._watcher = None
        if self._owned_store is not None:
            self._owned_store.close()
            self._owned_store = None

    def __enter__(self) -> Results:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _path_list(paths: Paths) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def _job(paths: Sequence[str], model: PathArg | SceneModel | None, store: PathArg | Store | None,
         top_k: int, min_confidence: float, batch_size: int, threads: int, force: bool,
         recursive: bool, engine: Engine | None = None,
         more: Iterable[Sequence[str]] = (), unknown: bool = True
         ) -> tuple[ClassifyJob, Store | None]:
    from scenetool.engines.common import Settings
    from scenetool.errors import UsageError
    from scenetool.job import ClassifyJob
    from scenetool.model import SceneModel
    from scenetool.store import Store

    if top_k < 1 or batch_size < 1 or threads < 0 or not 0.0 <= min_confidence <= 1.0:
        raise UsageError("top_k and batch_size are at least 1, threads at least 0, and "
                         "min_confidence between 0 and 1")
    opened = model if isinstance(model, SceneModel) else open_model(model)
    owned = Store(store) if store is not None and not isinstance(store, Store) else None
    settings = Settings(batch_size=batch_size, threads=threads, top_k=top_k,
                        min_confidence=min_confidence, unknown=unknown)
    arguments = {"paths": list(paths), "recursive": recursive, "top_k": top_k,
                 "min_confidence": min_confidence, "force": force, "batch_size": batch_size,
                 "unknown": unknown}
    job = ClassifyJob(opened, owned or store, paths, settings, recursive, force, arguments,
                      engine, more)
    return job, owned


def classify(paths: Paths, *, model: PathArg | SceneModel | None = None,
             store: PathArg | Store | None = None, top_k: int = 1, min_confidence: float = 0.0,
             batch_size: int = 32, threads: int = 0, force: bool = False,
             recursive: bool = True, engine: Engine | None = None,
             unknown: bool = True) -> Results:
    """Classify the images under `paths` (files and folders, one path or several),
    streaming one result per image in a stable order.

    `model`: a path or an opened model (default: $SCENETOOL_MODEL, else the shipped one).
    `store`: a results database (path or `scenetool.store.Store`) to record the run in and
    to take unchanged images' results from (unless `force`); None keeps nothing.
    `top_k` runners-up per image; below `min_confidence` the label is "unknown", and so
    it is when the model has a scene score below its threshold (not a scene), unless
    `unknown` is False.
    `batch_size` images per inference batch, `threads` decoding threads (0: one per core).
    `engine`: what runs the model (a `scenetool.engines` engine built for `model`);
    default: this process, decoding in a thread pool.

    Raises ModelError/StoreError (both ScenetoolError) when the model or the store cannot
    be used; a file that cannot be read is a result with `error` set.
    """
    job, owned = _job(_path_list(paths), model, store, top_k, min_confidence, batch_size,
                      threads, force, recursive, engine, unknown=unknown)
    return Results(job, owned)


def watch(folders: Paths, *, settle: float = 2.0, model: PathArg | SceneModel | None = None,
          store: PathArg | Store | None = None, top_k: int = 1, min_confidence: float = 0.0,
          batch_size: int = 32, threads: int = 0, force: bool = False,
          engine: Engine | None = None, unknown: bool = True) -> Results:
    """Like `classify` on `folders` (recursively), then go on forever with each image that
    arrives or changes there, once it has stopped changing for `settle` seconds.

    The watch starts before the folders are walked, so nothing arriving meanwhile is
    missed. The stream ends only by an exception: FolderGone (a ScenetoolError) when a
    watched folder is deleted or moved away, KeyboardInterrupt on Ctrl-C.
    """
    from scenetool.inputs.watch import Watcher

    roots = _path_list(folders)
    watcher = Watcher(roots, settle=settle).__enter__()
    try:
        job, owned = _job(roots, model, store, top_k, min_confidence, batch_size, threads,
                          force, True, engine, watcher.batches(), unknown=unknown)
    except BaseException:
        watcher.__exit__(None, None, None)
        raise
    return Results(job, owned, watcher)
