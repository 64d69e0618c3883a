"""Paths in and out: the one place that turns a filesystem path into the store's key, and a
key into what a person or a program reads (terminal, HTML, CSV, JSON).

A path is bytes a user gave us. In Python it is text in which every byte that is not UTF-8
stands as a lone surrogate (os.fsdecode's "surrogateescape"), so `os.fsencode(key)` gives
the exact bytes back. From there:

- the store keeps the path as UTF-8 TEXT when it is valid UTF-8, else as a BLOB of its
  exact bytes (`to_column` / `from_column`): every name has one faithful key, and the
  store stays readable with any SQLite tool for the names that are text;
- a terminal and the HTML sheet show `escape(path)`: the characters themselves, except
  control characters, Unicode's line/paragraph separators and bidi controls, written as
  Python writes them (\\t, \\n, \\x1b, \\u202e), and each byte that is not UTF-8 as \\xNN
  (rich never reads a path as markup: callers pass it as plain Text);
- CSV gets `csv_text(path)`: the exact text for a UTF-8 name (CR and LF in a quoted
  field, as RFC 4180 says), \\xNN for the bytes that are not UTF-8 (CSV is UTF-8 text);
- JSON gets the key itself: json.dumps writes a non-UTF-8 byte as \\udcNN, which Python's
  json.loads and os.fsencode turn back into the exact bytes.
"""

from __future__ import annotations

import html
import os
import unicodedata

# Characters that reorder or hide text: shown escaped, so a name cannot disguise itself.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}

URL_SCHEME = "s3://"  # object storage (scenetool.inputs.objects)


def is_url(path: str | os.PathLike) -> bool:
    """Whether `path` names an object in object storage rather than a file."""
    return isinstance(path, str) and path.startswith(URL_SCHEME)


def store_key(path: str | bytes | os.PathLike) -> str:
    """The key a file is stored under: its absolute path, symlinks not resolved; an
    object's URL as given."""
    if is_url(path):
        return path  # type: ignore[return-value]
    return os.path.abspath(os.fsdecode(path))


def to_column(key: str) -> str | bytes:
    """The value the store's `path` column holds: UTF-8 text, or the exact bytes."""
    if not isinstance(key, str):
        return key  # not a path (the store refuses it)
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(key)
    return key


def from_column(value: str | bytes) -> str:
    """A `path` column's value back as a key."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8
        return f"\\x{code - 0xDC00:02x}"
    if ch in _NAMED:
        return _NAMED[ch]
    if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return ch


def escape(text: str) -> str:
    """`text` safe to print: control and bidi characters and stray bytes escaped."""
    if text.isprintable() and not (_BIDI & set(text)):
        return text
    return "".join(_escape_char(ch) for ch in text)


def shown(key: str) -> str:
    """A path for a person at a terminal: relative to the working folder when it lies
    below it, else absolute; an object's URL as it is; escaped."""
    if is_url(key):
        return escape(key)
    try:
        rel = os.path.relpath(key)
    except ValueError:
        rel = key
    return escape(key if rel.startswith("..") else rel)


def basename(key: str) -> str:
    """The file name of a key, escaped, as a contact sheet's caption shows it."""
    return escape(os.path.basename(key))


def html_text(text: str) -> str:
    """`text` (a path, a name, a label, a reason) for HTML: escaped, then HTML-quoted."""
    return html.escape(escape(text), quote=True)


def csv_text(key: str) -> str:
    """A path for CSV: exact when it is UTF-8, else \\xNN for each byte that is not."""
    try:
        return os.fsencode(key).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name has: not from the filesystem
        return key.encode("utf-8", "backslashreplace").decode("utf-8")


def as_text(key: str) -> str:
    """A path for JSON and for programs: the key itself, exact (json.dumps writes a byte
    that is not UTF-8 as \\udcNN; os.fsencode turns the text back into the bytes)."""
    return key
