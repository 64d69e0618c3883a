"""Object storage: images in an S3-compatible bucket, named by `s3://bucket/key` URLs.

pyarrow's S3 filesystem does the listing and reading (Ray Data uses it too): the endpoint
comes from the standard `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`), credentials from
the standard AWS variables and files. An object's URL is its key in the store, and its
size and last-modified time stand for a file's size and mtime, so a re-run skips the
objects that have not changed. pyarrow comes with the `ray` and `s3` extras and is
imported only when a URL is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from scenetool.errors import DecodeError, UsageError
from scenetool.inputs.formats import candidate_extensions
from scenetool.inputs.walk import Item, WalkStats
from scenetool.paths import URL_SCHEME

INSTALL_HINT = "pip install 'scenetool[s3]'"


def _pyarrow_fs() -> Any:
    try:
        import pyarrow.fs
    except ImportError:
        raise UsageError(f"{URL_SCHEME} paths need pyarrow: {INSTALL_HINT}") from None
    return pyarrow.fs


def _split(url: str) -> tuple[str, str]:
    """'s3://bucket/some/key' -> ('bucket', 'bucket/some/key')."""
    path = url[len(URL_SCHEME):].strip("/")
    return path.split("/", 1)[0], path


@lru_cache(maxsize=16)
def _filesystem(bucket: str, endpoint: str | None) -> Any:
    """One S3 filesystem per bucket and endpoint, per process (each Ray actor has its own).

    `from_uri` is what reads AWS_ENDPOINT_URL and the bucket's region; pyarrow's
    S3FileSystem() constructor would ignore the variable (apache/arrow#49643).
    """
    filesystem, _ = _pyarrow_fs().FileSystem.from_uri(f"{URL_SCHEME}{bucket}")
    return filesystem


def filesystem(bucket: str) -> Any:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return _filesystem(bucket, endpoint)


def _reason(exc: BaseException) -> str:
    """pyarrow's S3 errors in one line, without its request ids."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(" (Request ID")[0][:200]


def walk_url(url: str, recursive: bool, stats: WalkStats) -> Iterator[Item]:
    """The candidate images at `url`: one object, or every object under a prefix, in key
    order. Images are told by their extension (reading each object's first bytes would
    cost a request apiece). A URL that names nothing, or a bucket that cannot be listed,
    is one item with the reason."""
    fs_module = _pyarrow_fs()
    bucket, path = _split(url)
    try:
        fs = filesystem(bucket)
        info = fs.get_file_info(path)
        if info.type == fs_module.FileType.File:
            infos = [info]
        else:
            selector = fs_module.FileSelector(path, recursive=recursive, allow_not_found=True)
            infos = sorted(fs.get_file_info(selector), key=lambda i: i.path)
    except Exception as exc:  # pyarrow raises OSError subclasses, and ArrowInvalid for bad URLs
        stats.candidates += 1
        yield Item(url, error=f"cannot list: {_reason(exc)}")
        return
    files = [i for i in infos if i.type == fs_module.FileType.File]
    if not files and info.type == fs_module.FileType.NotFound:
        stats.candidates += 1
        yield Item(url, error="no such object or prefix")
        return
    for found in files:
        if os.path.splitext(found.path)[1].lower() not in candidate_extensions():
            stats.skipped += 1
            continue
        stats.candidates += 1
        mtime = found.mtime.timestamp() if found.mtime is not None else None
        yield Item(URL_SCHEME + found.path, found.size, mtime)


def read(url: str) -> bytes:
    """The object's bytes, or DecodeError with a one-line reason."""
    bucket, path = _split(url)
    try:
        with filesystem(bucket).open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        raise DecodeError("no such object") from None
    except UsageError:
        raise
    except Exception as exc:  # network, permissions: pyarrow's OSErrors
        raise DecodeError(f"cannot read object: {_reason(exc)}") from None
