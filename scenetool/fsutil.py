"""File helpers: the one way scenetool (and train/, bench/) writes a file atomically.

A file is written under a temporary name beside its target (same folder, so the same
filesystem), flushed to disk, then renamed over the target and the folder synced: a
reader sees the old file or the new one, never half of one, and a failure leaves no
temporary file behind.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def temp_beside(target: str | os.PathLike, suffix: str = "") -> Path:
    """A fresh hidden name in `target`'s folder: `.NAME.XXXXXXXX.part` (+ `suffix`, for
    writers that insist on an extension, like Keras' `.keras`)."""
    target = Path(target)
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part{suffix}")


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file to disk (opened read-only: it may have a read-only mode)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in `folder` durable; a no-op where folders cannot be synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target` to write; on a clean exit it is synced and
    renamed to `target` (replacing it). On an exception the temporary file is removed."""
    target = Path(target)
    temp = temp_beside(target, suffix)
    try:
        yield temp
        fsync_file(temp)
        os.replace(temp, target)
        fsync_dir(target.parent)
    finally:
        if os.path.lexists(temp):
            os.unlink(temp)


@contextmanager
def atomic_write(target: str | os.PathLike, mode: str = "w",
                 **open_args) -> Iterator[IO]:
    """`open(target, mode)` that replaces `target` only once the block ends without error."""
    with atomic_path(target) as temp, open(temp, mode, **open_args) as f:
        yield f


def write_text(target: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Atomically replace `target` with `text`."""
    with atomic_write(target, "w", encoding=encoding) as f:
        f.write(text)
    return Path(target)


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace `target` with `data`."""
    with atomic_write(target, "wb") as f:
        f.write(data)
    return Path(target)
