"""Paths in and out: the one place that turns a filesystem path into the store's key, and a
stored key into what a person sees (terminal, HTML, CSV, JSON).

Every output goes through `shown` (terminal tables and messages, relative to the working
folder when below it) or `as_text` (exports and the contact sheet: the full path).
"""

from __future__ import annotations

import os

URL_SCHEME = "s3://"  # object storage (scenetool.inputs.objects)


def is_url(path: str | os.PathLike) -> bool:
    """Whether `path` names an object in object storage rather than a file."""
    return isinstance(path, str) and path.startswith(URL_SCHEME)


def store_key(path: str | os.PathLike) -> str:
    """The key a file is stored under: its absolute path, symlinks not resolved; an
    object's URL as given."""
    if is_url(path):
        return path
    return os.path.abspath(os.fspath(path))


def as_text(key: str) -> str:
    """A stored key as text for files others read (CSV, JSON, HTML): the full path."""
    return key


def shown(key: str) -> str:
    """A path for a person at a terminal: relative to the working folder when it lies
    below it, else absolute; an object's URL as it is."""
    if is_url(key):
        return key
    try:
        rel = os.path.relpath(key)
    except ValueError:
        return key
    return key if rel.startswith("..") else rel


def basename(key: str) -> str:
    """The file name of a stored key, as shown in a contact sheet's caption."""
    return os.path.basename(key)
