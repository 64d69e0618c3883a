"""The library's exceptions: one base class, so the CLI maps them to exit codes in one place.

Every `str()` is a one-line reason meant for people. `scenetool.cli` turns a
`UsageError` into Click's usage error and any other `ScenetoolError` into a one-line
message; both exit 2. A `DecodeError` stops one file, never a run.
"""

from __future__ import annotations


class ScenetoolError(Exception):
    """Base of every error scenetool raises on purpose."""


class UsageError(ScenetoolError):
    """The command line asks for something that cannot be done (exit 2, with usage)."""


class ModelError(ScenetoolError):
    """The model file is missing, unreadable, or not a scenetool model."""


class MetadataError(ModelError, ValueError):
    """The model's metadata is missing a key or holds a value the runtime cannot use."""


class StoreError(ScenetoolError):
    """The store cannot be opened, created or written."""


class DecodeError(ScenetoolError):
    """A file that could not be turned into an image; str() is a one-line reason."""

    #: The file-system errors every decoder names the same way (`unreadable`).
    UNREADABLE = (FileNotFoundError, PermissionError, IsADirectoryError)

    @classmethod
    def unreadable(cls, exc: OSError) -> DecodeError:
        if isinstance(exc, FileNotFoundError):
            return cls("no such file")
        if isinstance(exc, PermissionError):
            return cls("permission denied")
        return cls("is a folder")


class LayoutError(ScenetoolError):
    """An evaluation folder that does not have one subfolder per label."""


class SortError(UsageError):
    """A sort that cannot start: DEST is SRC, or DEST is a file."""


class OutputError(ScenetoolError):
    """A file we were asked to write (an export, a contact sheet) cannot be written."""

    @classmethod
    def writing(cls, target: object, exc: OSError) -> OutputError:
        return cls(f"cannot write {target}: {exc.strerror or exc}")


class SidecarError(ScenetoolError):
    """An XMP sidecar scenetool will not touch: not XML, not XMP, or with a DTD. It is left
    exactly as it is; one photo fails, not the run."""


class WatchError(ScenetoolError):
    """A folder cannot be watched (the system's limit on watches, for one)."""


class FolderGone(WatchError):
    """A watched folder was deleted, moved away or replaced."""


class RayError(ScenetoolError):
    """Ray could not be started or reached, or a run on it failed (--engine ray)."""
