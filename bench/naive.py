"""The naive loop most scripts write, as the baseline: `python -m bench.naive MODEL FOLDER`.

One image at a time: open with Pillow, convert to RGB, resize to the model's input with a
full decode (no draft), run the model on a batch of one. It uses onnxruntime directly, not
scenetool, and runs as its own process so that, like `scenetool classify`, it is timed from
process start to exit. Prints the number of images it classified.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def image_files(folder: str) -> list[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if f.lower().endswith(EXTENSIONS)]
    return found


def main(argv: list[str]) -> int:
    model_path, folder = argv
    session = ort.InferenceSession(model_path, providers=ort.get_available_providers())
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()
            if k in ("image_size", "value_range", "resize", "layout")}
    height, width = meta["image_size"]
    low, high = meta.get("value_range", (0, 255))
    # The model's own resampling filter, so the comparison is about the pipeline only.
    resample = getattr(Image.Resampling, meta.get("resize", "bilinear").upper())
    input_name = session.get_inputs()[0].name
    count = 0
    for path in image_files(folder):
        with Image.open(path) as im:
            small = im.convert("RGB").resize((width, height), resample)
        x = np.asarray(small, np.float32)[None] * ((high - low) / 255.0) + low
        if meta.get("layout") == "NCHW":
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        session.run(None, {input_name: x})
        count += 1
    print(count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
