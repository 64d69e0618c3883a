"""Names and values shared across the package, kept apart so no module imports another
just for a constant."""

from __future__ import annotations

UNKNOWN = "unknown"  # the label below --min-confidence or the scene-score threshold
NOT_A_SCENE = "unknown: not a scene"  # how an unknown the scene score made is shown

MODEL_ENV = "SCENETOOL_MODEL"  # a model to use instead of the shipped one
STORE_ENV = "SCENETOOL_STORE"  # the results database
MODEL_FILE = "scenes.onnx"  # the shipped model, package data in scenetool/models/
RAW_HINT = "camera RAW: install scenetool[raw]"  # the reason a RAW fails without the extra
