"""Watching folders for new or changed images (watchdog), handing each out once it has settled.

A photo being copied in grows for a while; it is handed out only once its size and
modification time have stayed the same for `settle` seconds, so a half-copied file is never
classified. Files whose names say they are still being written (hidden temporary names,
`.part`, `.crdownload`, ...) are never handed out: the copier's final rename is. A file is
handed out again only when it has changed since.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from scenetool.errors import FolderGone, WatchError
from scenetool.paths import shown, store_key

# Names that copy tools, browsers and sync clients give files they have not finished.
PARTIAL_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", "~")


@dataclass(frozen=True)
class Signature:
    size: int
    mtime: float


def signature(path: str) -> Signature | None:
    """A regular file's size and mtime (as the walk records them), or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    return Signature(st.st_size, st.st_mtime)


def finished_name(path: str) -> bool:
    """Whether a file's name is that of a finished file, not a copier's temporary one."""
    name = os.path.basename(path)
    return not name.startswith(".") and not name.lower().endswith(PARTIAL_SUFFIXES)


def _default_accept(path: str) -> bool:
    from scenetool.inputs.decode import is_candidate

    return is_candidate(path)


class Watcher:
    """Watch `roots` recursively; `settled()` gives the images that have stopped changing.

    Use as a context manager: the watch starts on entering, so nothing that arrives while
    the caller classifies what was already there is missed.
    """

    def __init__(self, roots: Sequence[str], settle: float = 2.0,
                 accept: Callable[[str], bool] = _default_accept):
        self.roots = [store_key(root) for root in roots]
        self.settle, self.accept = settle, accept
        self._identity = {root: self._folder_id(root) for root in self.roots}
        self._events: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._pending: dict[str, tuple[Signature | None, float]] = {}
        self._handed: dict[str, Signature] = {}
        self._observer = None

    @staticmethod
    def _folder_id(root: str) -> tuple[int, int] | None:
        try:
            st = os.stat(root)
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if os.path.isdir(root) else None

    def __enter__(self) -> Watcher:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        events = self._events

        class Handler(FileSystemEventHandler):
            # Opening and closing a file without writing (our own reads) says nothing new.
            def on_created(self, event):
                events.put(os.fsdecode(event.src_path))

            def on_modified(self, event):
                if not event.is_directory:
                    events.put(os.fsdecode(event.src_path))

            def on_attrib(self, event):  # a new mtime (cp -p, rsync -t, touch)
                if not event.is_directory:
                    events.put(os.fsdecode(event.src_path))

            def on_closed(self, event):
                events.put(os.fsdecode(event.src_path))

            def on_moved(self, event):
                events.put(os.fsdecode(event.dest_path))

        for root, identity in self._identity.items():
            if identity is None:
                raise FolderGone(f"not a folder: {shown(root)}")
        self._observer = Observer()
        self._observer.daemon = True
        try:
            for root in self.roots:
                self._observer.schedule(Handler(), root, recursive=True)
            self._observer.start()
        except OSError as exc:  # e.g. inotify's limit on watches (fs.inotify.max_user_watches)
            self.__exit__()
            raise WatchError(f"cannot watch {', '.join(map(shown, self.roots))}: "
                             f"{exc.strerror or exc}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._observer is not None:
            self._observer.stop()
            if self._observer.is_alive():
                self._observer.join(timeout=5)
            self._observer = None

    def seen(self, path: str, size: int | None, mtime: float | None) -> None:
        """Record that `path` was classified as it was then, so an event that changes
        nothing (or arrives late) does not hand it out again."""
        if size is not None and mtime is not None:
            self._handed[store_key(path)] = Signature(size, mtime)

    def check_roots(self) -> None:
        """Raise FolderGone when a watched folder is no longer the one being watched."""
        for root, identity in self._identity.items():
            if self._folder_id(root) != identity:
                raise FolderGone(f"watched folder disappeared: {shown(root)}")

    def _note(self, path: str, now: float) -> None:
        if os.path.isdir(path):  # a folder moved or copied in: its files are new too
            for folder, _, files in os.walk(path):
                for name in files:
                    self._note(os.path.join(folder, name), now)
        elif finished_name(path):
            current = signature(path)
            known = self._pending.get(path)
            if known is None or known[0] != current:  # an event that changed nothing (a
                self._pending[path] = (current, now)  # close after the last write) is no news

    def waiting(self, now: float | None = None) -> dict[str, Signature | None]:
        """The files seen to change that have not settled yet, with their size and mtime
        as last seen."""
        now = time.monotonic() if now is None else now
        while True:
            try:
                self._note(self._events.get_nowait(), now)
            except queue.Empty:
                return {path: known for path, (known, _) in self._pending.items()}

    def settled(self, now: float | None = None) -> list[str]:
        """The images whose size and mtime have not changed for `settle` seconds since they
        were last seen to change, in name order; each is handed out once per change."""
        now = time.monotonic() if now is None else now
        self.waiting(now)
        ready = []
        for path, (known, since) in list(self._pending.items()):
            current = signature(path)
            if current is None:  # deleted, or not a regular file
                del self._pending[path]
            elif current != known:
                self._pending[path] = (current, now)
            elif now - since >= self.settle:
                del self._pending[path]
                if self._handed.get(path) != current and self.accept(path):
                    self._handed[path] = current
                    ready.append(path)
        return sorted(ready)

    def batches(self, poll: float = 0.2) -> Iterator[list[str]]:
        """Settled images, a non-empty list at a time, forever; raises FolderGone when a
        watched folder goes away."""
        while True:
            self.check_roots()
            ready = self.settled()
            if ready:
                yield ready
            else:
                time.sleep(poll)
