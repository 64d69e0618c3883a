"""Shared fixtures: a tiny ONNX model built with the onnx helper API, and image makers.

The tiny model labels an image by its dominant colour (red, green or blue): it averages
each channel and applies a softmax, so its answers are known in advance. Built with
`unknown_threshold`, it also outputs a scene score, the energy logsumexp(logits): about 17
for a saturated red, green or blue photo, about 11 for a mid-grey one, so a threshold of
14 calls grey photos `unknown` and coloured ones not.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scenetool.metadata import SCORE_OUTPUT, ModelMeta, UnknownRule

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 210)}
SHADES = {**COLOURS, "grey": (128, 128, 128)}  # what make_image paints: grey is no label
LABELS = ("red", "green", "blue")
SIZE = (32, 32)
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "intel"


def build_tiny_model(path: Path, labels=LABELS, size=SIZE, meta: ModelMeta | None = None,
                     props: dict[str, str] | None = None,
                     unknown_threshold: float | None = None) -> Path:
    """Write the colour model to `path`; `props` replaces the metadata when given; with
    `unknown_threshold`, a scene-score output and the metadata's unknown rule too."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    k = len(labels)
    weights = np.zeros((3, k), np.float32)
    for i in range(min(3, k)):
        weights[i, i] = 20.0 / 255.0
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["mean", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", k])]
    if unknown_threshold is not None:
        nodes.append(helper.make_node("ReduceLogSumExp", ["logits"], [SCORE_OUTPUT], axes=[1],
                                      keepdims=0))
        outputs.append(helper.make_tensor_value_info(SCORE_OUTPUT, TensorProto.FLOAT, ["N"]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size[0], size[1], 3])],
        outputs, [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    rule = (UnknownRule(SCORE_OUTPUT, unknown_threshold, {"method": "energy", "keep": 0.95})
            if unknown_threshold is not None else None)
    meta = meta or ModelMeta(labels=tuple(labels), image_size=size,
                             extra={"arch": "tiny-colour"}, unknown=rule)
    for key, value in (props if props is not None else meta.to_props()).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


@pytest.fixture(autouse=True)
def isolated(tmp_path, tiny_model, monkeypatch):
    """Every test gets its own store and, unless it says otherwise, the tiny model."""
    monkeypatch.setenv("SCENETOOL_STORE", str(tmp_path / "store" / "scenetool.db"))
    monkeypatch.setenv("SCENETOOL_MODEL", str(tiny_model))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    yield


def make_image(path: Path, colour: str = "red", size=(48, 40), fmt: str | None = None,
               mode: str = "RGB", **save) -> Path:
    """A solid-colour image with a little noise, saved in the format its suffix says."""
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    arr = np.empty((size[1], size[0], 3), np.uint8)
    arr[:] = SHADES[colour]
    arr = np.clip(arr.astype(int) + rng.integers(-10, 10, arr.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        im = im.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt, **save)
    return path


def chmod_works() -> bool:
    """Root ignores file permissions, so unreadable-file tests cannot run as root."""
    return hasattr(os, "geteuid") and os.geteuid() != 0
