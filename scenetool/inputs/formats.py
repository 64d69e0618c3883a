"""Which files are images: every format Pillow opens (with the HEIF and JPEG XL plugins), and
camera RAW.

The candidate extensions are derived from the formats Pillow has registered for opening, not
kept by hand; formats Pillow can name but not decode here are left out (EPS needs the
Ghostscript program, MPEG is identified but never decoded, and the "stub" formats such as
WMF, HDF5, GRIB and BUFR need a handler an application installs), as are save-only formats
such as PDF, which Pillow never registers for opening. A file with another name is an image
when its first bytes are those of a format Pillow decodes and Pillow identifies it.

The plugins are registered on first use, so `import scenetool` stays fast.
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache

from PIL import Image, ImageFile, UnidentifiedImageError

from scenetool.constants import RAW_HINT  # noqa: F401 - re-exported: the reason without the extra

# Camera RAW files, read with the `raw` extra (rawpy/LibRaw). LibRaw publishes no list of
# extensions, so this is the one kept by hand: the makers' names for their RAW files.
RAW_EXTENSIONS = frozenset({
    ".3fr", ".ari", ".arw", ".bay", ".cap", ".cr2", ".cr3", ".crw", ".dcr", ".dcs", ".dng",
    ".drf", ".eip", ".erf", ".fff", ".gpr", ".iiq", ".k25", ".kdc", ".mdc", ".mef", ".mos",
    ".mrw", ".nef", ".nrw", ".orf", ".ori", ".pef", ".ptx", ".pxn", ".raf", ".raw", ".rw2",
    ".rwl", ".rwz", ".sr2", ".srf", ".srw", ".x3f",
})
# Registered for opening, but never decoded here (see the module's docstring), and why.
NOT_DECODED = {"EPS": "PostScript, which needs the Ghostscript program",
               "MPEG": "a video, not a photo"}
# Names people know the formats by, where Pillow's own differs.
FORMAT_NAMES = {"HEIF": "HEIC/HEIF", "JXL": "JPEG XL", "JPEG2000": "JPEG 2000", "TGA": "Targa"}
# Pillow reads this much of a file to pick a plugin; so do we.
PREFIX = 16

_lock = threading.Lock()
_registered = False


def register_plugins() -> None:
    """Make Pillow open HEIC/HEIF (pillow-heif) and JPEG XL (pillow-jxl-plugin); idempotent.

    AVIF is Pillow's own (its wheels carry libavif). Thumbnails stay enabled: they are what
    `Image.draft` picks to decode a HEIC at a reduced size.
    """
    global _registered
    if _registered:
        return
    with _lock:
        if _registered:
            return
        import pillow_heif
        import pillow_jxl  # noqa: F401 - registers the JXL plugin with Pillow on import

        pillow_heif.register_heif_opener(thumbnails=True)
        Image.init()
        _registered = True


def _decodable(fmt: str) -> bool:
    return not_decoded(fmt) is None


def not_decoded(fmt: str | None) -> str | None:
    """Why an opened format is not decoded here, or None when it is."""
    if fmt in NOT_DECODED:
        return NOT_DECODED[fmt]
    factory = Image.OPEN.get(fmt or "", (None, None))[0]
    if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
        return "it needs a decoder that Pillow does not ship"
    return None


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Lower-case extensions of every format Pillow opens and decodes here (plugins included)."""
    register_plugins()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN and _decodable(fmt))


def candidate_extensions() -> frozenset[str]:
    """Extensions that make a file a candidate without looking inside: images and RAW."""
    return image_extensions() | RAW_EXTENSIONS


def is_raw(path: str | os.PathLike | bytes) -> bool:
    return _suffix(path) in RAW_EXTENSIONS


def _suffix(path: str | os.PathLike | bytes) -> str:
    return os.fsdecode(os.path.splitext(path)[1]).lower()


def format_name(fmt: str) -> str:
    """How a Pillow format is shown to people: "HEIC/HEIF", "JPEG XL", "PNG"."""
    return FORMAT_NAMES.get(fmt, fmt)


def claimed_format(head: bytes) -> str | None:
    """The decodable Pillow format whose signature `head` (a file's first bytes) carries."""
    register_plugins()
    for fmt, (_factory, accept) in Image.OPEN.items():
        if accept is None or not _decodable(fmt):
            continue
        try:
            if accept(head):
                return fmt
        except Exception:  # noqa: BLE001 - a plugin's signature test must not stop a walk
            continue
    return None


def is_candidate(path: str | os.PathLike) -> bool:
    """An image by its extension (any case), or by its content as Pillow identifies it.

    Content is looked at only for names without a known extension: a signature of a format
    Pillow decodes, confirmed by Pillow opening the header (some signatures are short, and
    files such as Thumbs.db would match one).
    """
    if _suffix(path) in candidate_extensions():
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(PREFIX)
    except OSError:
        return False
    if not head or claimed_format(head) is None:
        return False
    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        return False
    except Exception:  # noqa: BLE001 - a malformed file can make a plugin raise anything
        return False
