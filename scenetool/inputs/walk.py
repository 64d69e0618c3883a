"""Walking the paths given on the command line into a stream of candidate images."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

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
    errors: list[str] = field(default_factory=list)


def _item(path: str) -> Item:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return Item(path, error="broken symbolic link")
        return Item(path, error="no such file or directory")
    except PermissionError:
        return Item(path, error="permission denied")
    except OSError as exc:
        return Item(path, error=exc.strerror or str(exc))
    return Item(path, st.st_size, st.st_mtime)


def walk(paths: Iterable[str], recursive: bool = True,
         stats: WalkStats | None = None) -> Iterator[Item]:
    """Yield the candidate images under `paths`, files and folders, in a stable order.

    Folders are walked depth first in name order, following symlinks but never into a
    folder already walked (by device and inode), so symlink cycles end. Files that are not
    images are counted in `stats.skipped`. A path argument that does not exist, and a
    dangling symlink with an image's name, are yielded as items with an error.
    `s3://` URLs are listed in object storage (`scenetool.inputs.objects`).
    """
    stats = stats if stats is not None else WalkStats()
    seen_dirs: set[tuple[int, int]] = set()
    for arg in paths:
        if is_url(arg):
            from scenetool.inputs.objects import walk_url

            yield from walk_url(arg, recursive, stats)
            continue
        absolute = store_key(arg)
        if os.path.isdir(absolute):
            yield from _walk_dir(absolute, recursive, seen_dirs, stats)
        elif os.path.isfile(absolute):
            if is_candidate(absolute):
                stats.candidates += 1
                yield _item(absolute)
            else:
                stats.skipped += 1
        else:
            stats.candidates += 1
            yield _item(absolute)


def _walk_dir(root: str, recursive: bool, seen: set[tuple[int, int]],
              stats: WalkStats) -> Iterator[Item]:
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError:
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen:
            stats.cycles += 1
            continue
        seen.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            stats.errors.append(f"{shown(folder)}: {exc.strerror or exc}")
            continue
        subdirs = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows symlinks
                is_file = not is_dir and entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                if recursive:
                    subdirs.append(entry.path)
            elif is_file:
                if is_candidate(entry.path):
                    stats.candidates += 1
                    yield _item(entry.path)
                else:
                    stats.skipped += 1
            elif entry.is_symlink():  # dangling: report it if it is named like an image
                if os.path.splitext(entry.name)[1].lower() in candidate_extensions():
                    stats.candidates += 1
                    yield Item(entry.path, error="broken symbolic link")
                else:
                    stats.skipped += 1
        stack.extend(reversed(subdirs))
