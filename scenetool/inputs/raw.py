"""Camera RAW files (CR2, CR3, NEF, ARW, DNG, RAF, ORF, RW2, ...) through rawpy, the `raw` extra.

The embedded preview comes first: almost every RAW carries a JPEG the camera made, it is what
photo managers show, and it costs a fraction of demosaicing. LibRaw hands over its largest
preview (rawpy exposes no other), which is decoded at the smallest JPEG scale (1/2, 1/4,
1/8) that is not smaller than what the caller needs, so a full-size preview costs about
what a small one would. LibRaw's half-size decode of the raw data is the fallback when there
is no preview or the preview is smaller than needed; a too-small preview is still used when
the raw data cannot be read. Orientation comes from the RAW's own metadata (LibRaw's
`flip`), never from the preview's EXIF, which cameras do not keep in step.
"""

from __future__ import annotations

import io
import os

from PIL import Image

from scenetool.constants import RAW_HINT
from scenetool.errors import DecodeError

# LibRaw's flip (bit 0: mirror left-right, bit 1: top-bottom, bit 2: swap axes, the
# dcraw convention) as the EXIF orientation that means the same, then Pillow's transpose.
_FLIP_TO_EXIF = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}


def _rawpy():
    try:
        import rawpy
    except ImportError:
        raise DecodeError(RAW_HINT) from None
    return rawpy


def _orient(im: Image.Image, flip: int) -> Image.Image:
    method = _EXIF_TRANSPOSE.get(_FLIP_TO_EXIF.get(flip, 1))
    return im.transpose(method) if method is not None else im


def _fits(size: tuple[int, int], at_least: tuple[int, int]) -> bool:
    """Whether an image of `size` covers `at_least` in either orientation."""
    (w, h), (need_w, need_h) = size, at_least
    return (w >= need_w and h >= need_h) or (w >= need_h and h >= need_w)


def _preview(raw, rawpy, at_least: tuple[int, int]) -> Image.Image | None:
    """LibRaw's embedded preview as an RGB image (JPEG at a reduced scale), or None."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    except rawpy.LibRawError:
        return None  # a damaged preview: the raw data may still be readable
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            im = Image.open(io.BytesIO(thumb.data))
            side = max(at_least)
            im.draft("RGB", (side, side))  # either orientation: the flip comes later
            im.load()
        else:
            im = Image.fromarray(thumb.data)
        return im.convert("RGB")
    except Exception:  # noqa: BLE001 - a corrupt preview is treated as none at all
        return None


def _open(rawpy, path: str | os.PathLike):
    """rawpy on `path`. A name LibRaw cannot take as UTF-8 text, or one with control
    characters, is read through a buffer: LibRaw prints the file's name on stderr when its
    data ends early, and such a name must not reach a terminal raw."""
    name = os.fsdecode(path)
    try:
        name.encode("utf-8")
        plain = name.isprintable()
    except UnicodeEncodeError:
        plain = False
    if not plain:
        with open(path, "rb") as f:
            return rawpy.imread(f)
    return rawpy.imread(name)


def open_raw(path: str | os.PathLike, at_least: tuple[int, int]) -> Image.Image:
    """An upright RGB image of the camera RAW at `path`, or DecodeError with a reason.

    `at_least` is (width, height) the caller needs, in either orientation.
    """
    rawpy = _rawpy()
    try:
        with _open(rawpy, path) as raw:
            flip = raw.sizes.flip
            preview = _preview(raw, rawpy, at_least)
            if preview is not None and _fits(preview.size, at_least):
                return _orient(preview, flip)
            try:
                # LibRaw applies the flip itself; camera white balance as the camera saw it.
                rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
            except rawpy.LibRawError as exc:
                if preview is not None:
                    return _orient(preview, flip)
                raise DecodeError(
                    f"camera RAW: no preview and no readable raw data ({_why(exc)})") from None
            return Image.fromarray(rgb).convert("RGB")
    except DecodeError:
        raise
    except DecodeError.UNREADABLE as exc:
        raise DecodeError.unreadable(exc) from None
    except rawpy.LibRawFileUnsupportedError:
        raise DecodeError("camera RAW: not a RAW format LibRaw reads "
                          "(unknown camera or not a RAW file)") from None
    except rawpy.LibRawError as exc:
        raise DecodeError(f"camera RAW: unreadable ({_why(exc)})") from None
    except (OSError, ValueError, MemoryError) as exc:
        raise DecodeError(f"camera RAW: unreadable ({_why(exc)})") from None


def _why(exc: BaseException) -> str:
    """LibRaw's message (bytes in rawpy's exceptions) as one short line."""
    text = exc.args[0] if exc.args else ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__
    return text[:120]
