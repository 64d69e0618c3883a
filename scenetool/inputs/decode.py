"""Decoding images: turning a file into model input, the one decoder every command uses.

Every format Pillow opens (HEIC/HEIF and JPEG XL through their plugins, AVIF through Pillow's
own), and camera RAW with the `raw` extra (`scenetool.inputs.raw`); which files are
candidates is `scenetool.inputs.formats`. Every failure becomes a `DecodeError` with a short
reason meant for people ("truncated image data", "not an image"), never a traceback.
"""

from __future__ import annotations

import io
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from scenetool.errors import DecodeError
from scenetool.fsutil import NotAFileError, open_regular
from scenetool.inputs.formats import (
    PREFIX,
    claimed_format,
    format_name,
    is_candidate,
    is_raw,
    not_decoded,
    register_plugins,
)
from scenetool.paths import escape, is_url, shown

__all__ = ["MAX_PIXELS", "DecodeError", "is_candidate", "load_image", "open_rgb"]

# Pillow's own warning threshold (about 89 megapixels); above it we refuse the file rather
# than spend seconds and gigabytes on what is most likely a decompression bomb.
MAX_PIXELS = 89_478_485
_RESAMPLE = {
    "nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING,
}


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as RGB: alpha over white, 16-bit and float scaled, CMYK converted."""
    if im.mode == "RGB":
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if im.mode in ("I", "F") and arr.max() <= 255:
            top = 255.0
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _bomb(pixels: str, limit: int) -> str:
    return f"image too large ({pixels} pixels; over {limit:,}): possible decompression bomb"


@contextmanager
def _opened(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """What Pillow reads: the regular file (never a FIFO or a device, see
    `fsutil.open_regular`), or an object's bytes fetched from object storage
    (`scenetool.inputs.objects`)."""
    if is_url(path):
        if is_raw(path):
            raise DecodeError("camera RAW is read from folders, not from object storage")
        from scenetool.inputs.objects import read

        data = read(str(path))
        if not data:
            raise DecodeError("empty file (0 bytes)")
        yield io.BytesIO(data)
        return
    with open_regular(path) as f:
        if os.fstat(f.fileno()).st_size == 0:
            raise DecodeError("empty file (0 bytes)")
        yield f


def open_rgb(path: str | os.PathLike, at_least: tuple[int, int],
             max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode `path` as an upright RGB image, or raise DecodeError with a one-line reason.

    EXIF orientation is applied. Of a file with several images the one Pillow opens first
    is used: the first frame of an animation or the first page of a TIFF, the largest size
    of an icon (ICO, ICNS) and the composite of a PSD. Where a format allows it the image is
    decoded at a reduced size no smaller than `at_least` (width, height), `Image.draft`: a
    JPEG at 1/2, 1/4 or 1/8 scale (DCT scaling), a HEIC from its embedded thumbnail. Camera
    RAW goes to `scenetool.inputs.raw` (its embedded preview, or LibRaw's half-size decode).
    The classifier, the contact sheet's thumbnails, sort, evaluate, the engines and the
    training loader all decode through here.

    A FIFO, a device or a folder is refused by what it is, never opened for a read that
    would wait or never end; the file is opened by descriptor, so a path longer than
    PATH_MAX is read like any other. A decoder's warning names the file (stderr).
    """
    try:
        with _opened(path) as f, _warnings_named(path):
            if is_raw(path):
                from scenetool.inputs.raw import open_raw

                return open_raw(path, at_least)
            return _decode_open(f, at_least, max_pixels)
    except DecodeError:
        raise
    except NotAFileError as exc:
        raise DecodeError(exc.strerror) from None
    except DecodeError.UNREADABLE as exc:
        raise DecodeError.unreadable(exc) from None
    except OSError as exc:
        raise DecodeError(f"cannot read: {exc.strerror or exc}") from None


def _decode_open(f: IO[bytes], at_least: tuple[int, int], max_pixels: int) -> Image.Image:
    """open_rgb's decoding of an opened file."""
    try:
        register_plugins()
        with Image.open(f) as opened:
            why = not_decoded(opened.format)
            if why:
                raise DecodeError(f"unsupported format: {format_name(opened.format)}, {why}")
            w, h = opened.size
            if w * h > max_pixels:
                raise DecodeError(_bomb(f"{w}x{h}", max_pixels))
            opened.seek(0)
            opened.draft("RGB", at_least)
            opened.load()
            im = _to_rgb(ImageOps.exif_transpose(opened) or opened)
            # The opened image is closed on leaving this block; return one that outlives it
            # (exif_transpose already copies, so this copy is never expected to run).
            return im.copy() if im is opened else im
    except DecodeError:
        raise
    except DecodeError.UNREADABLE as exc:
        raise DecodeError.unreadable(exc) from None
    except Image.DecompressionBombError as exc:  # Pillow refuses over twice its limit
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,}" if found else "too many"
        raise DecodeError(_bomb(pixels, max_pixels)) from None
    except UnidentifiedImageError:
        raise DecodeError(_unidentified(f)) from None
    except Exception as exc:  # noqa: BLE001 - a malformed file can make a decoder raise anything
        raise DecodeError(_reason(exc)) from None


def _unidentified(f: IO[bytes]) -> str:
    """Why Pillow could not open a file: a known format's signature means a damaged file."""
    try:
        f.seek(0)
        fmt = claimed_format(f.read(PREFIX))
    except OSError:
        fmt = None
    if fmt is None:
        return "not an image (unknown or corrupt format)"
    return f"truncated or corrupt {format_name(fmt)} file (its header cannot be read)"


_TRUNCATED = ("truncated", "end of file", "unexpected end", "premature end")
_UNSUPPORTED = ("unsupported", "not supported", "unimplemented", "unknown pixel format")


def _reason(exc: BaseException) -> str:
    """A decoder's exception as one short line for people."""
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else ""
    lowered = text.lower()
    if any(word in lowered for word in _TRUNCATED) or isinstance(exc, EOFError):
        return "truncated image data"
    if any(word in lowered for word in _UNSUPPORTED):
        return f"unsupported image variant: {line}"[:200]
    if "generic error" in lowered and "libjxl" in lowered:  # pillow-jxl-plugin says no more
        return "corrupt or truncated JPEG XL data"
    if isinstance(exc, (OSError, SyntaxError, ValueError)):
        return f"corrupt image: {line or type(exc).__name__}"[:200]
    return f"corrupt image ({type(exc).__name__}{': ' if line else ''}{line})"[:200]


_decoding = threading.local()  # the file this thread decodes, for its warnings
_hook_lock = threading.Lock()
_hooked = False


@contextmanager
def _warnings_named(path: str | os.PathLike) -> Iterator[None]:
    """While decoding `path`, a warning (Pillow's 'Corrupt EXIF data', ...) is one line
    on stderr that names the file, for every file, instead of Python's warning with
    Pillow's source line, once."""
    _hook_warnings()
    _decoding.path = os.fsdecode(path)
    try:
        yield
    finally:
        _decoding.path = None


def _hook_warnings() -> None:
    global _hooked
    with _hook_lock:
        if _hooked:
            return
        _hooked = True
        warnings.filterwarnings("always", category=UserWarning, module="PIL")
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            path = getattr(_decoding, "path", None)
            if path is None or sys.stderr is None:
                return previous(message, category, filename, lineno, file, line)
            sys.stderr.write(f"warning: {shown(path)}: {escape(' '.join(str(message).split()))}\n")

        warnings.showwarning = show


def load_image(path: str | os.PathLike, size: tuple[int, int], resize: str = "bilinear",
               channel_order: str = "RGB", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode `path` into a uint8 (height, width, 3) array of `size` = (height, width)."""
    height, width = size
    # Orientation may swap the axes, so ask the draft for the target in both directions.
    side = max(height, width)
    im = open_rgb(path, (side, side), max_pixels)
    if im.size != (width, height):
        im = im.resize((width, height), _RESAMPLE[resize])
    arr = np.asarray(im, dtype=np.uint8)
    if channel_order == "BGR":
        arr = arr[..., ::-1]
    return arr
