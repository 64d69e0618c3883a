"""File helpers: the one way scenetool (and train/, bench/) writes a file atomically.

A file is written under a temporary name beside its target (same folder, so the same
filesystem), flushed to disk, then renamed over the target and the folder synced: a
reader sees the old file or the new one, never half of one, and a failure leaves no
temporary file behind.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

# Temporary files are `.scenetool-PID-XXXXXXXX.part`: short and fixed (they fit beside a
# 255-byte name), and they say which process writes them, so a later run removes only
# those whose process is gone. `.NAME.XXXXXXXX.part` is how scenetool 0.1 named them.
_PART = re.compile(r"^\.scenetool-(\d+)-[0-9a-f]{8}\.part")
_PART_0_1 = re.compile(r"^\..+\.[0-9a-f]{8}\.part$")


def temp_beside(target: str | os.PathLike, suffix: str = "") -> Path:
    """A fresh hidden name in `target`'s folder: `.scenetool-PID-XXXXXXXX.part` (+
    `suffix`, for writers that insist on an extension, like Keras' `.keras`)."""
    target = Path(target)
    return target.with_name(f".scenetool-{os.getpid()}-{uuid.uuid4().hex[:8]}.part{suffix}")


def remove_leftovers(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files an interrupted scenetool left in `folder` (those of a
    process still running are kept); returns the paths removed."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        ours = _PART.match(name)
        if ours and process_alive(int(ours.group(1))):
            continue
        if ours or _PART_0_1.match(name):
            path = os.path.join(folder, name)
            try:
                if os.path.isfile(path) and not os.path.islink(path):
                    os.unlink(path)
                    removed.append(path)
            except OSError:
                pass
    return removed


_cleaned: set[str] = set()  # folders whose leftovers this process has removed


def _remove_leftovers_once(folder: Path) -> None:
    """remove_leftovers, once per folder and process: a process that has ended leaves no
    new files, and listing a folder of photos for each sidecar written beside them would
    make tagging quadratic."""
    key = os.path.abspath(folder)
    if key not in _cleaned:
        remove_leftovers(key)
        _cleaned.add(key)


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (a zombie counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


class NotAFileError(OSError):
    """A path that is not a regular file (a FIFO, a device, a folder), or one too large."""


def describe_mode(mode: int) -> str:
    """What a file that is not a regular file is: 'a named pipe (FIFO)', 'a device'..."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def open_fd(path: str | bytes | os.PathLike, flags: int = os.O_RDONLY) -> int:
    """os.open that also reaches a path longer than PATH_MAX, a few folders at a time."""
    raw = os.fsencode(path)
    try:
        return os.open(raw, flags | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
    parent, name = os.path.split(raw)
    chunks: list[bytes] = []
    for part in parent.split(b"/"):
        if chunks and len(chunks[-1]) + len(part) < 2048:
            chunks[-1] += b"/" + part
        else:
            chunks.append(part)
    fd = os.open(chunks[0] or b"/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for chunk in chunks[1:]:
            inner = os.open(chunk, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(name, flags | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def unlink(path: str | bytes | os.PathLike) -> None:
    """os.unlink that also reaches a path longer than PATH_MAX."""
    try:
        os.unlink(path)
        return
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
    parent, name = os.path.split(os.fsencode(path))
    fd = open_fd(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def open_regular(path: str | bytes | os.PathLike, max_size: int | None = None) -> IO[bytes]:
    """Open a regular file to read, never waiting on a FIFO or reading a device: anything
    else, and a file over `max_size` bytes, is a NotAFileError whose strerror says what
    it is ('a named pipe (FIFO), not a file'). Works for paths longer than PATH_MAX."""
    fd = open_fd(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotAFileError(errno.EINVAL, f"{describe_mode(st.st_mode)}, not a file")
        if max_size is not None and st.st_size > max_size:
            raise NotAFileError(errno.EFBIG, f"too large ({st.st_size:,} bytes; the limit "
                                             f"is {max_size:,})")
        os.set_blocking(fd, True)
        return open(fd, "rb", closefd=True)  # noqa: SIM115 - the caller closes it
    except BaseException:
        os.close(fd)
        raise


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
    renamed to `target` (replacing it). On an exception the temporary file is removed;
    what a killed scenetool left beside `target` is removed before writing.

    A target that exists and is not a regular file (a device such as /dev/stdout or
    /dev/full, a FIFO) is written to directly: renaming over it would replace the device
    node with a file."""
    target = Path(target)
    try:
        mode = os.stat(target).st_mode
    except OSError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder", str(target))
    if mode is not None and not stat.S_ISREG(mode):
        yield target
        return
    _remove_leftovers_once(target.parent)
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
