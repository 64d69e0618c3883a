"""The model contract: what an ONNX file says about itself in its `metadata_props`.

The exporter (`train.export`) writes these keys and the runtime reads them back; this
module is the one place that names them. Every value is JSON-encoded text.

Required: labels (in output order), image_size ([height, width]), channel_order ("RGB"),
value_range ([0, 255]), resize ("bilinear", ...), layout ("NHWC").

Optional: unknown, the "not a scene" rule: {"output": the graph output holding one scene
score per image, "threshold": below it the label is `unknown`, ...} plus how the threshold
was fitted (method, keep, fitted_on, checked_on), which the runtime only shows. A model
without it labels every image with one of its labels, as before.

Everything else (arch, val_accuracy, training_data, created, scenetool_version) is
descriptive.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from scenetool.errors import MetadataError

REQUIRED = ("labels", "image_size", "channel_order", "value_range", "resize", "layout")
RESIZE_METHODS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
UNKNOWN_KEY = "unknown"
PROBS_OUTPUT = "probs"  # the output holding the probabilities (else the first output)
SCORE_OUTPUT = "scene_score"  # the output name the exporter gives the scene score


@dataclass(frozen=True)
class UnknownRule:
    """Below `threshold` on the graph output `output`, an image is not a scene."""

    output: str
    threshold: float
    details: dict[str, Any] = field(default_factory=dict)  # method, keep, fitted_on, ...

    def to_json(self) -> dict[str, Any]:
        return {"output": self.output, "threshold": self.threshold, **self.details}

    @classmethod
    def from_json(cls, value: Any) -> UnknownRule:
        if not isinstance(value, dict):
            raise MetadataError("model metadata unknown must be an object")
        output, threshold = value.get("output"), value.get("threshold")
        if not isinstance(output, str) or not output:
            raise MetadataError("model metadata unknown.output must name a graph output")
        if (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                or not math.isfinite(threshold)):
            raise MetadataError(
                f"model metadata unknown.threshold must be a finite number, not {threshold!r}")
        details = {k: v for k, v in value.items() if k not in ("output", "threshold")}
        return cls(output, float(threshold), details)


# The largest input side a model may ask for: a batch buffer is allocated from it.
MAX_SIDE = 4096


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return (_is_int(x) or isinstance(x, float)) and math.isfinite(x)  # type: ignore[arg-type]


def _short(value: object) -> str:
    """A metadata value in a message: text as it is, anything else as JSON; cut short."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class ModelMeta:
    labels: tuple[str, ...]
    image_size: tuple[int, int]  # (height, width)
    channel_order: str = "RGB"
    value_range: tuple[float, float] = (0.0, 255.0)
    resize: str = "bilinear"
    layout: str = "NHWC"
    extra: dict[str, Any] = field(default_factory=dict)  # arch, val_accuracy, ...
    unknown: UnknownRule | None = None

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
        if self.unknown is not None:
            props[UNKNOWN_KEY] = self.unknown.to_json()
        return {k: json.dumps(v) for k, v in props.items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMeta:
        """Parse and check metadata read back with `custom_metadata_map`."""
        missing = [k for k in REQUIRED if k not in props]
        if missing:
            raise MetadataError(f"model metadata lacks {', '.join(missing)}")
        values = {key: _decoded(key, text) for key, text in props.items()}
        extra = {k: v for k, v in values.items() if k not in (*REQUIRED, UNKNOWN_KEY)}
        # Checked in this order, so a file with several faults is named by the first.
        return cls(_labels(values["labels"]), _image_size(values["image_size"]),
                   _choice("channel_order", values["channel_order"], ("RGB", "BGR")),
                   _value_range(values["value_range"]),
                   _choice("resize", values["resize"], RESIZE_METHODS),
                   _choice("layout", values["layout"], ("NHWC", "NCHW")), extra,
                   UnknownRule.from_json(values[UNKNOWN_KEY]) if UNKNOWN_KEY in values else None)


def _decoded(key: str, text: str) -> Any:
    """A value's JSON; a descriptive value that is not JSON stays text."""
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        if key in REQUIRED:
            raise MetadataError(f"model metadata {key} is not JSON: {text[:40]!r}") from None
        return text


def _labels(labels: Any) -> tuple[str, ...]:
    if (not isinstance(labels, list) or not labels
            or not all(isinstance(x, str) and x for x in labels)
            or len(set(labels)) != len(labels)):
        raise MetadataError("model metadata labels must be a list of distinct names")
    if not all(x.isprintable() for x in labels):  # they name folders and fill tables
        raise MetadataError("model metadata labels must not hold control characters, "
                            f"not {_short(labels)}")
    return tuple(labels)


def _image_size(size: Any) -> tuple[int, int]:
    """[height, width], or one number for a square."""
    if _is_int(size):
        size = [size, size]
    if (not isinstance(size, list) or len(size) != 2
            or not all(_is_int(x) and x > 0 for x in size)):
        raise MetadataError(f"model metadata image_size must be [height, width], not "
                            f"{_short(size)}")
    if max(size) > MAX_SIDE:
        raise MetadataError(f"model metadata image_size must be at most {MAX_SIDE} pixels "
                            f"a side, not {_short(size)}")
    return size[0], size[1]


def _value_range(vrange: Any) -> tuple[float, float]:
    if not isinstance(vrange, list) or len(vrange) != 2:
        raise MetadataError(f"model metadata value_range must be [low, high], not "
                            f"{_short(vrange)}")
    if not all(_is_number(x) for x in vrange) or not vrange[0] < vrange[1]:
        raise MetadataError("model metadata value_range must be two numbers, low below "
                            f"high, not {_short(vrange)}")
    return float(vrange[0]), float(vrange[1])


def _choice(key: str, value: Any, options: tuple[str, ...]) -> str:
    """`value` when it is one of `options`; otherwise a message naming the options."""
    if isinstance(value, str) and value in options:
        return value
    allowed = " or ".join(options) if len(options) == 2 else "one of " + ", ".join(options)
    raise MetadataError(f"model metadata {key} must be {allowed}, not {_short(value)}")
