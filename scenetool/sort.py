"""Sorting a folder of photos into one folder per label: copy, move or link, never overwrite.

A name already taken in the destination gets a numbered suffix (`name-1.jpg`, ...), unless
it holds the very same file: then the image is "already there" and nothing is written, so
running the same sort twice does nothing the second time. Every file is written under a
temporary name in its destination folder, checked and synced, then given its final name,
so an interrupted sort leaves no half-written photo under a real name.
"""

from __future__ import annotations

import enum
import os
import shutil
import stat
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from scenetool.constants import UNKNOWN
from scenetool.errors import SortError
from scenetool.fsutil import (
    fsync_dir,
    fsync_file,
    open_regular,
    remove_leftovers,
    temp_beside,
    unlink,
)
from scenetool.store import Row

CHUNK = 1 << 20


class Action(enum.Enum):
    COPY = "copy"
    MOVE = "move"
    LINK = "link"

    @property
    def done(self) -> str:
        return {"copy": "copied", "move": "moved", "link": "linked"}[self.value]


@dataclass(frozen=True)
class Placement:
    """What happened to one image: `outcome` is 'done', 'already there' or 'failed'."""

    source: str
    label: str
    outcome: str
    reason: str | None = None


@dataclass
class SortTally:
    done: Counter = field(default_factory=Counter)  # by label
    already: Counter = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    inside_dest: int = 0
    outside_src: list[str] = field(default_factory=list)  # --move: copied, not moved

    def add(self, placement: Placement) -> None:
        if placement.outcome == "done":
            self.done[placement.label] += 1
        elif placement.outcome == "already there":
            self.already[placement.label] += 1
        else:
            self.failed.append((placement.source, placement.reason or "failed"))

    @property
    def total(self) -> int:
        return sum(self.done.values()) + sum(self.already.values()) + len(self.failed)


def _is_within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def walk_roots(src: str, dest: str) -> list[str]:
    """The paths to walk for SRC so that DEST, when it lies inside SRC, is left out.

    `walk` has no exclusion, so the folders on the way from SRC down to DEST are opened
    here and their other entries given as paths instead; store keys stay the same because
    they are the same absolute paths a walk of SRC would give.
    """
    src_abs = os.path.abspath(src)
    if not os.path.isdir(dest):
        if os.path.lexists(dest):
            raise SortError(f"DEST is not a folder: {dest}")
        return [src_abs]
    real_dest = os.path.realpath(dest)
    real_src = os.path.realpath(src)
    if real_src == real_dest:
        raise SortError("DEST must not be SRC itself")
    if not _is_within(real_dest, real_src):
        return [src_abs]
    roots: list[str] = []
    seen: set[str] = set()

    def expand(folder: str) -> None:
        real_folder = os.path.realpath(folder)
        if real_folder in seen:
            return
        seen.add(real_folder)
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                real = os.path.realpath(path)
                if real == real_dest:
                    continue
                if _is_within(real_dest, real):
                    expand(path)
                    continue
            roots.append(path)

    expand(src_abs)
    return roots


def folder_name(label: str) -> str:
    """A label as a single safe folder name (labels come from the model's metadata)."""
    name = label.replace(os.sep, "_")
    if os.altsep:
        name = name.replace(os.altsep, "_")
    return "_" if name in ("", ".", "..") else name


def same_content(a: str, b: str) -> bool:
    """Same size and the same bytes; a byte comparison stops at the first difference,
    where hashing would read both files whole."""
    try:
        if os.path.getsize(a) != os.path.getsize(b):
            return False
        with open(a, "rb") as fa, open(b, "rb") as fb:
            while True:
                x, y = fa.read(CHUNK), fb.read(CHUNK)
                if x != y:
                    return False
                if not x:
                    return True
    except OSError:
        return False


def numbered(name: str, n: int) -> str:
    stem, ext = os.path.splitext(name)
    return name if n == 0 else f"{stem}-{n}{ext}"


def _claim(temp: str, target: str) -> None:
    """Give `temp` the name `target`; FileExistsError when that name exists.

    A hard link fails when the name is taken, so nothing is ever overwritten even with
    another sort writing to the same folder; where links are not supported, a rename
    after a check does nearly as well.
    """
    try:
        os.link(temp, target)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(target):
            raise FileExistsError(target) from None
        os.rename(temp, target)
        return
    os.unlink(temp)


class Sorter:
    """Places images in DEST/<label>/ one at a time (`place`), keeping a tally."""

    def __init__(self, dest: str, action: Action = Action.COPY, dry_run: bool = False,
                 src: str | None = None):
        self.dest = os.path.abspath(dest)
        self.real_dest = os.path.realpath(dest)
        self.real_src = os.path.realpath(src) if src else None
        self.action, self.dry_run = action, dry_run
        self.tally = SortTally()
        # A dry run writes nothing, so it remembers the names it has given out (and to
        # which source) to count what the real sort would do with the next photo.
        self._planned: dict[str, str] = {}

    def clean_leftovers(self) -> list[str]:
        """Remove the partial copies an interrupted sort left in DEST and its label
        folders (not those of a sort still running); returns their paths."""
        if self.dry_run or not os.path.isdir(self.dest):
            return []
        removed = remove_leftovers(self.dest)
        with os.scandir(self.dest) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    removed += remove_leftovers(entry.path)
        return removed

    def _outside_src(self, source: str) -> bool:
        """Whether `source` really lives outside SRC (reached through a symlinked folder):
        --move copies such a file, never taking it from where it lives."""
        if self.real_src is None:
            return False
        return not _is_within(os.path.realpath(os.path.dirname(source)), self.real_src)

    def place_all(self, rows: Iterable[Row]) -> SortTally:
        for row in rows:
            self.place(row)
        return self.tally

    def place(self, row: Row) -> Placement | None:
        """Put one image in place; None for an image that already lies inside DEST."""
        if row.error:
            placement = Placement(row.path, "", "failed", reason=row.error)
            self.tally.add(placement)
            return placement
        if _is_within(os.path.realpath(row.path), self.real_dest):
            self.tally.inside_dest += 1
            return None
        label = row.label or UNKNOWN  # the job labels by this sort's --min-confidence
        try:
            placement = self._place(row.path, label)
        except OSError as exc:
            placement = Placement(row.path, label, "failed",
                                  reason=f"cannot {self.action.value} to {self.dest}: "
                                         f"{exc.strerror or exc}")
        self.tally.add(placement)
        return placement

    def _identical(self, source: str, target: str) -> bool:
        """Whether `target` already stands for `source`: for --link, a symlink to it; for
        --copy and --move, a plain file with the same bytes (never a symlink, which a move
        would leave dangling)."""
        if os.path.islink(target):
            return (self.action is Action.LINK
                    and os.readlink(target) == os.path.abspath(source))
        if self.action is Action.LINK:
            return False
        try:
            if os.path.samefile(source, target):
                return True
        except OSError:
            return False
        return same_content(source, target)

    def _free_name(self, source: str, folder: str, start: int = 0) -> tuple[str, bool, int]:
        """The first of name, name-1, ... from `start` that is free or already holds
        `source`: (path, already there, its number)."""
        name = os.path.basename(source)
        n = start
        while True:
            target = os.path.join(folder, numbered(name, n))
            planned = self._planned.get(target)
            if planned is not None:
                if self.action is not Action.LINK and same_content(source, planned):
                    return target, True, n
            elif not os.path.lexists(target):
                return target, False, n
            elif self._identical(source, target):
                return target, True, n
            n += 1

    def _place(self, source: str, label: str) -> Placement:
        folder = os.path.join(self.dest, folder_name(label))
        move = self.action is Action.MOVE
        if move and self._outside_src(source):
            move = False
            self.tally.outside_src.append(source)
        target, already, n = self._free_name(source, folder)
        if not already and self.dry_run:
            self._planned[target] = source
        elif not already:
            os.makedirs(folder, exist_ok=True)
            if self.action is Action.LINK:
                target, already = self._link(source, folder, target, n)
            else:
                moved = None
                if move and not os.path.islink(source):
                    moved = self._hard_link(source, folder, target, n)
                if moved is None:
                    target, already = self._copy(source, folder, target, n)
                else:
                    target, already = moved
        if move and not self.dry_run:
            # Done, or an identical copy was there already (say, from a move interrupted
            # after its copy): either way the photo is safe in DEST.
            unlink(source)
        return Placement(source, label, "already there" if already else "done")

    def _make_at_free_name(self, make: Callable[[str], None], source: str, folder: str,
                           target: str, n: int) -> tuple[str, bool]:
        """`make(target)`; when the name was taken since we looked (FileExistsError), the
        next free name, or (name, True) where one already holds `source`."""
        while True:
            try:
                make(target)
                return target, False
            except FileExistsError:
                target, already, n = self._free_name(source, folder, n + 1)
                if already:
                    return target, True

    def _link(self, source: str, folder: str, target: str, n: int) -> tuple[str, bool]:
        absolute = os.path.abspath(source)
        return self._make_at_free_name(lambda t: os.symlink(absolute, t), source, folder,
                                       target, n)

    def _hard_link(self, source: str, folder: str, target: str,
                   n: int) -> tuple[str, bool] | None:
        """A move within one filesystem: a hard link (which never replaces an existing
        name), the source is unlinked afterwards. None when the link cannot be made
        (another filesystem, or one without hard links)."""
        try:
            return self._make_at_free_name(lambda t: os.link(source, t), source, folder,
                                           target, n)
        except OSError:
            return None

    def _copy(self, source: str, folder: str, target: str, n: int) -> tuple[str, bool]:
        """Copy to a temporary name in `folder`, check the size, sync, then claim `target`
        (or the next free name)."""
        temp = str(temp_beside(os.path.join(folder, os.path.basename(source))))
        try:
            size = _copy_file(source, temp)
            if os.path.getsize(temp) != size:
                raise OSError(f"copy has the wrong size: {temp}")
            fsync_file(temp)
            target, already = self._make_at_free_name(lambda t: _claim(temp, t), source,
                                                      folder, target, n)
            if not already:
                fsync_dir(folder)
            return target, already
        finally:
            if os.path.lexists(temp):
                os.unlink(temp)


def _copy_file(source: str, target: str) -> int:
    """Copy bytes, permission bits and times (as shutil.copy2 does) from a regular file,
    whose path may be longer than PATH_MAX; returns the size copied."""
    with open_regular(source) as src, open(target, "xb") as dst:
        shutil.copyfileobj(src, dst, CHUNK)
        st = os.fstat(src.fileno())
    os.chmod(target, stat.S_IMODE(st.st_mode))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    return st.st_size


def sort_table(tally: SortTally, action: Action, dry_run: bool):
    """Per-class counts of what a sort did (or would do), as a rich Table."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    verb = f"would {action.value}" if dry_run else action.done
    table = Table(title="Sorted" if not dry_run else "Dry run: nothing written",
                  box=box.SIMPLE_HEAD)
    table.add_column("label")
    table.add_column(verb, justify="right")
    table.add_column("already there", justify="right")
    labels = sorted(set(tally.done) | set(tally.already), key=lambda x: (x == UNKNOWN, x))
    for label in labels:
        table.add_row(Text(label), str(tally.done[label]), str(tally.already[label]))
    if tally.failed:
        table.add_row(Text("failed (left in place)", style="red"), str(len(tally.failed)), "")
    table.add_row(Text("total", style="bold"), str(sum(tally.done.values())),
                  str(sum(tally.already.values())))
    return table
