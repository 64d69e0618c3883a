"""Recognising and decoding images: what counts as one, and turning a file into model input.

Every failure becomes a `DecodeError` with a short reason meant for people ("truncated
image data", "not an image"), never a traceback.
"""

from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from scenetool.errors import DecodeError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".gif", ".tif", ".tiff"})
# Pillow's own warning threshold (about 89 megapixels); above it we refuse the file rather
# than spend seconds and gigabytes on what is most likely a decompression bomb.
MAX_PIXELS = 89_478_485
_RESAMPLE = {
    "nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS, "box": Image.BOX, "hamming": Image.HAMMING,
}


def sniff(head: bytes) -> bool:
    """Whether the first bytes of a file are those of an image format we decode."""
    return (
        head.startswith(b"\xff\xd8\xff")  # JPEG
        or head.startswith(b"\x89PNG\r\n\x1a\n")
        or head.startswith((b"GIF87a", b"GIF89a"))
        or head.startswith(b"BM")
        or (head.startswith(b"RIFF") and head[8:12] == b"WEBP")
        or head.startswith((b"II*\x00", b"MM\x00*"))  # TIFF
    )


def is_candidate(path: str | os.PathLike) -> bool:
    """An image by its extension (any case), or else by its magic bytes."""
    if os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as f:
            return sniff(f.read(12))
    except OSError:
        return False


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


def open_rgb(path: str | os.PathLike, at_least: tuple[int, int],
             max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode `path` as an upright RGB image, or raise DecodeError with a one-line reason.

    EXIF orientation is applied and the first frame of an animation is used. A large JPEG
    is decoded at a reduced scale (`Image.draft`, DCT scaling) no smaller than `at_least`
    (width, height), which costs a fraction of a full decode. The classifier and the
    contact sheet's thumbnails both decode through here.
    """
    try:
        if os.path.getsize(path) == 0:
            raise DecodeError("empty file (0 bytes)")
        with Image.open(path) as opened:
            w, h = opened.size
            if w * h > max_pixels:
                raise DecodeError(_bomb(f"{w}x{h}", max_pixels))
            if opened.format == "JPEG":
                opened.draft("RGB", at_least)
            opened.seek(0)
            opened.load()
            im = _to_rgb(ImageOps.exif_transpose(opened) or opened)
            # The opened image is closed on leaving this block; return one that outlives it
            # (exif_transpose already copies, so this copy is never expected to run).
            return im.copy() if im is opened else im
    except DecodeError:
        raise
    except FileNotFoundError:
        raise DecodeError("no such file") from None
    except PermissionError:
        raise DecodeError("permission denied") from None
    except IsADirectoryError:
        raise DecodeError("is a folder") from None
    except Image.DecompressionBombError as exc:  # Pillow refuses over twice its limit
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,}" if found else "too many"
        raise DecodeError(_bomb(pixels, max_pixels)) from None
    except UnidentifiedImageError:
        raise DecodeError("not an image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc).strip() or type(exc).__name__
        if "truncated" in text:
            raise DecodeError("truncated image data") from None
        raise DecodeError(f"corrupt image: {text}"[:200]) from None
    except Exception as exc:  # noqa: BLE001 - a malformed file can make Pillow raise anything
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DecodeError(f"corrupt image ({type(exc).__name__}{': ' if text else ''}"
                          f"{text})"[:200]) from None


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
