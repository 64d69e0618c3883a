"""Real DNG files for the RAW tests, written with tifffile: a Bayer mosaic that LibRaw
demosaics, and optionally an embedded JPEG preview in IFD0 as cameras and converters write it.

The mosaic's camera space is linear sRGB (ColorMatrix1 is the XYZ-to-sRGB matrix), so
LibRaw's output has the colours of the picture it was made from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

WHITE = 4095
# XYZ (D65) to linear sRGB, in ten-thousandths: DNG's ColorMatrix1 maps XYZ to camera RGB.
XYZ_TO_SRGB = ((32406, -15372, -4986), (-9689, 18758, 415), (557, -2040, 10570))


def _srational(rows) -> tuple[int, ...]:
    return tuple(v for row in rows for x in row for v in (x, 10000))


def mosaic(rgb: np.ndarray) -> np.ndarray:
    """An RGGB Bayer mosaic (12-bit, linear) of an sRGB uint8 picture."""
    linear = (rgb.astype(np.float64) / 255.0) ** 2.2 * WHITE
    cfa = np.empty(rgb.shape[:2], np.uint16)
    cfa[0::2, 0::2] = linear[0::2, 0::2, 0]
    cfa[0::2, 1::2] = linear[0::2, 1::2, 1]
    cfa[1::2, 0::2] = linear[1::2, 0::2, 1]
    cfa[1::2, 1::2] = linear[1::2, 1::2, 2]
    return cfa


def write_dng(path: Path, rgb: np.ndarray, preview: np.ndarray | None = None,
              orientation: int = 1, compression: int | None = None) -> Path:
    """A DNG of `rgb` (stored as it is; `orientation` says how to turn it upright).

    With `preview`, IFD0 holds it as a JPEG (NewSubFileType 1) and the mosaic is in a
    SubIFD, as in files from cameras and Adobe's converter; without, IFD0 is the mosaic.
    `compression` tags the mosaic with another TIFF compression than none (for a file
    whose raw data LibRaw cannot read).
    """
    tifffile = pytest.importorskip("tifffile")
    dng = [
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "scenetool test camera", True),  # UniqueCameraModel
        (50721, "2i", 9, _srational(XYZ_TO_SRGB), True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral
        (274, "H", 1, orientation, True),  # Orientation
    ]
    cfa = [
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: RGGB
        (50714, "H", 1, 0, True),  # BlackLevel
        (50717, "H", 1, WHITE, True),  # WhiteLevel
    ]
    raw = mosaic(rgb)
    raw_args = {"photometric": 32803, "subfiletype": 0, "metadata": None}
    with tifffile.TiffWriter(path) as tif:
        if preview is not None:
            pytest.importorskip("imagecodecs")  # tifffile's JPEG encoder
            tif.write(preview, photometric="rgb", compression="jpeg", subfiletype=1,
                      subifds=1, extratags=dng, metadata=None)
            tif.write(raw, extratags=cfa, **raw_args)
        else:
            tif.write(raw, extratags=dng + cfa, **raw_args)
    if compression is not None:
        _retag_compression(path, compression)
    return path


def _retag_compression(path: Path, value: int) -> None:
    """Rewrite the mosaic's Compression tag in place (tifffile writes it as 1, none)."""
    tifffile = pytest.importorskip("tifffile")
    with tifffile.TiffFile(path) as tif:
        pages = [tif.pages[0], *(tif.pages[0].pages or [])]
        offsets = [p.tags["Compression"].valueoffset for p in pages
                   if p.tags["NewSubfileType"].value == 0]
    data = bytearray(path.read_bytes())
    for offset in offsets:
        data[offset:offset + 2] = value.to_bytes(2, "little")
    path.write_bytes(bytes(data))
