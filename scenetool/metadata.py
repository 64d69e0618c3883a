"""The model contract: what an ONNX file says about itself in its `metadata_props`.

The exporter (`train.export`) writes these keys and the runtime reads them back; this
module is the one place that names them. Every value is JSON-encoded text.

Required: labels (in output order), image_size ([height, width]), channel_order ("RGB"),
value_range ([0, 255]), resize ("bilinear", ...), layout ("NHWC"). Everything else
(arch, val_accuracy, training_data, created, scenetool_version) is descriptive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from scenetool.errors import MetadataError

REQUIRED = ("labels", "image_size", "channel_order", "value_range", "resize", "layout")
RESIZE_METHODS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


@dataclass(frozen=True)
class ModelMeta:
    labels: tuple[str, ...]
    image_size: tuple[int, int]  # (height, width)
    channel_order: str = "RGB"
    value_range: tuple[float, float] = (0.0, 255.0)
    resize: str = "bilinear"
    layout: str = "NHWC"
    extra: dict[str, Any] = field(default_factory=dict)  # arch, val_accuracy, ...

    def to_props(self) -> dict[str, str]:
        """The metadata_props to write into the ONNX file: every value JSON-encoded."""
        props = {
            "labels": list(self.labels),
            "image_size": list(self.image_size),
            "channel_order": self.channel_order,
            "value_range": list(self.value_range),
            "resize": self.resize,
            "layout": self.layout,
            **self.extra,
        }
        return {k: json.dumps(v) for k, v in props.items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMeta:
        """Parse and check metadata read back with `custom_metadata_map`."""
        missing = [k for k in REQUIRED if k not in props]
        if missing:
            raise MetadataError(f"model metadata lacks {', '.join(missing)}")
        values: dict[str, Any] = {}
        for key, text in props.items():
            try:
                values[key] = json.loads(text)
            except (TypeError, json.JSONDecodeError):
                if key in REQUIRED:
                    raise MetadataError(
                        f"model metadata {key} is not JSON: {text[:40]!r}") from None
                values[key] = text
        labels = values["labels"]
        if (not isinstance(labels, list) or not labels
                or not all(isinstance(x, str) and x for x in labels)
                or len(set(labels)) != len(labels)):
            raise MetadataError("model metadata labels must be a list of distinct names")
        size = values["image_size"]
        if isinstance(size, int):
            size = [size, size]
        if (not isinstance(size, list) or len(size) != 2
                or not all(isinstance(x, int) and x > 0 for x in size)):
            raise MetadataError(f"model metadata image_size must be [height, width], not {size}")
        order = values["channel_order"]
        if order not in ("RGB", "BGR"):
            raise MetadataError(f"model metadata channel_order must be RGB or BGR, not {order}")
        vrange = values["value_range"]
        if not isinstance(vrange, list) or len(vrange) != 2:
            raise MetadataError(f"model metadata value_range must be [low, high], not {vrange}")
        if values["resize"] not in RESIZE_METHODS:
            raise MetadataError(f"model metadata resize must be one of {', '.join(RESIZE_METHODS)}")
        if values["layout"] not in ("NHWC", "NCHW"):
            raise MetadataError(
                f"model metadata layout must be NHWC or NCHW, not {values['layout']}")
        extra = {k: v for k, v in values.items() if k not in REQUIRED}
        return cls(tuple(labels), (size[0], size[1]), order,
                   (float(vrange[0]), float(vrange[1])), values["resize"], values["layout"],
                   extra)
