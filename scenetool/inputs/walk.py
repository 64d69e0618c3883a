"""Walking the paths given on the command line into a stream of candidate images."""

from __future__ import annotations

import os
import stat
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field

from scenetool.fsutil import describe_mode, open_fd
from scenetool.inputs.formats import candidate_extensions, is_candidate
from scenetool.paths import is_url, shown, store_key


@dataclass(frozen=True)
class Item:
    """One candidate image: its key in the store, and its stat (or an error)."""

    path: str  # absolute, symlinks not resolved (paths.store_key)
    size: int | None = None
    mtime: float | None = None
    error: str | None = None  # known before decoding: a missing argument, a dangling link


@dataclass
class WalkStats:
    candidates: int = 0
    skipped: int = 0  # files that are not images (by extension or content)
    cycles: int = 0  # symlinked folders already walked
    duplicates: int = 0  # paths reached a second time (named twice)
    errors: list[str] = field(default_factory=list)  # "path: reason" for what cannot be read


def _not_a_file(path: str, mode: int, via_link: bool) -> Item:
    """An item for something named like an image that is not a file: a FIFO, a device."""
    what = describe_mode(mode)
    return Item(path, error=f"{'symbolic link to ' if via_link else ''}{what}, not a file")


def _missing(path: str, exc: OSError) -> Item:
    """An item for a path that cannot be stated, with the reason."""
    if isinstance(exc, FileNotFoundError):
        if os.path.islink(path):
            return Item(path, error="broken symbolic link")
        return Item(path, error="no such file or directory")
    if isinstance(exc, PermissionError):
        return Item(path, error="permission denied")
    return Item(path, error=exc.strerror or str(exc))


class _Once:
    """Paths already yielded: a file named twice (`a.jpg a.jpg`, or a file and its folder)
    is classified once. A link is a name of its own, as it is in the store and for sort."""

    def __init__(self, stats: WalkStats):
        self.seen: set[str] = set()
        self.stats = stats

    def first(self, path: str) -> bool:
        if path in self.seen:
            self.stats.duplicates += 1
            return False
        self.seen.add(path)
        return True


def walk(paths: Iterable[str], recursive: bool = True,
         stats: WalkStats | None = None) -> Iterator[Item]:
    """Yield the candidate images under `paths`, files and folders, in a stable order.

    Folders are walked depth first in name order, following symlinks but never into a
    folder already walked (by device and inode), so symlink cycles end; a path reached
    twice (named twice, or a file and its folder) is yielded once. Files that are not
    images are counted in `stats.skipped`. A path argument that does not exist or is not a
    file, and a dangling symlink, FIFO or device with an image's name, are yielded as items
    with an error. A folder or entry that cannot be listed or stated is in `stats.errors`
    with its reason. Folders are opened by descriptor, so paths longer than PATH_MAX work.
    `s3://` URLs are listed in object storage (`scenetool.inputs.objects`).
    """
    stats = stats if stats is not None else WalkStats()
    seen_dirs: set[tuple[int, int]] = set()
    once = _Once(stats)
    for arg in paths:
        if is_url(arg):
            from scenetool.inputs.objects import walk_url

            yield from walk_url(arg, recursive, stats)
            continue
        absolute = store_key(arg)
        try:
            st = os.stat(absolute)
        except OSError as exc:
            stats.candidates += 1
            yield _missing(absolute, exc)
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_dir(absolute, recursive, seen_dirs, once, stats)
        elif not stat.S_ISREG(st.st_mode):  # named on purpose: say what it is
            stats.candidates += 1
            yield _not_a_file(absolute, st.st_mode, os.path.islink(absolute))
        elif is_candidate(absolute):
            if once.first(absolute):
                stats.candidates += 1
                yield Item(absolute, st.st_size, st.st_mtime)
        else:
            stats.skipped += 1


def _walk_dir(root: str, recursive: bool, seen: set[tuple[int, int]], once: _Once,
              stats: WalkStats) -> Iterator[Item]:
    """The candidates under the folder `root`, depth first in name order; each folder is
    held open by descriptor while its entries are yielded."""
    extensions = candidate_extensions()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            fd = open_fd(folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            stats.errors.append(f"{shown(folder)}: {exc.strerror or exc}")
            continue
        try:
            entries = _new_entries(fd, folder, seen, stats)
            if entries is None:
                continue
            subdirs = yield from _entry_items(folder, entries, extensions, recursive, once,
                                              stats)
            stack.extend(reversed(subdirs))
        finally:
            os.close(fd)


def _new_entries(fd: int, folder: str, seen: set[tuple[int, int]],
                 stats: WalkStats) -> list[os.DirEntry[str]] | None:
    """The entries of the open folder `fd` in name order; None for a folder already walked
    (counted in `stats.cycles`) or one that cannot be listed (in `stats.errors`)."""
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino)
    if key in seen:
        stats.cycles += 1
        return None
    seen.add(key)
    try:
        with os.scandir(fd) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        stats.errors.append(f"{shown(folder)}: {exc.strerror or exc}")
        return None


def _entry_items(folder: str, entries: list[os.DirEntry[str]], extensions: frozenset[str],
                 recursive: bool, once: _Once,
                 stats: WalkStats) -> Generator[Item, None, list[str]]:
    """Yield the candidates among a folder's `entries`; return its subfolders to walk."""
    subdirs = []
    for entry in entries:
        path = os.path.join(folder, entry.name)
        named_like_image = os.path.splitext(entry.name)[1].lower() in extensions
        try:
            st = entry.stat()  # follows symlinks
        except FileNotFoundError:  # a dangling symlink
            if named_like_image:
                stats.candidates += 1
                yield Item(path, error="broken symbolic link")
            else:
                stats.skipped += 1
            continue
        except OSError as exc:  # a symlink loop, a permission on the way, ...
            stats.errors.append(f"{shown(path)}: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(st.st_mode):
            if recursive:
                subdirs.append(path)
            continue
        item = _file_item(path, st, entry, named_like_image, once, stats)
        if item is not None:
            yield item
    return subdirs


def _file_item(path: str, st: os.stat_result, entry: os.DirEntry[str], named_like_image: bool,
               once: _Once, stats: WalkStats) -> Item | None:
    """The item for an entry that is not a folder; None (counted in `stats`) for one that
    is not an image or was already yielded."""
    if not stat.S_ISREG(st.st_mode):
        if named_like_image:
            stats.candidates += 1
            return _not_a_file(path, st.st_mode, entry.is_symlink())
        stats.skipped += 1
    elif named_like_image or is_candidate(path):
        if once.first(path):
            stats.candidates += 1
            return Item(path, st.st_size, st.st_mtime)
    else:
        stats.skipped += 1
    return None
