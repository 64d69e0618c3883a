"""The model contract: what a model's metadata asks for is what it is fed, and a model
whose metadata cannot be honoured is refused.

A probe model answers with what it was given: its three outputs are the mean of each input
channel, so the values the runtime fed it (layout, channel order, value range) can be read
back from `classify --top-k 3 --json -` exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import build_tiny_model, make_image
from onnx import TensorProto, helper
from PIL import Image

from scenetool.cli import cli
from scenetool.metadata import MetadataError, ModelMeta

PROBE_LABELS = ("c0", "c1", "c2")  # output i: the mean of input channel i
HEIGHT, WIDTH = 24, 40  # not square, so a swapped height and width cannot pass
RGB = (200, 100, 20)  # three different values, so a swapped channel order cannot pass


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def build_probe_model(path: Path, layout: str = "NHWC", channel_order: str = "RGB",
                      value_range: tuple[float, float] = (0.0, 255.0)) -> Path:
    """A model whose output i is the mean of input channel i, for the given layout."""
    if layout == "NHWC":
        shape, axes = ["N", HEIGHT, WIDTH, 3], [1, 2]
    else:
        shape, axes = ["N", 3, HEIGHT, WIDTH], [2, 3]
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["means"], axes=axes, keepdims=0)],
        "probe",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("means", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMeta(labels=PROBE_LABELS, image_size=(HEIGHT, WIDTH),
                     channel_order=channel_order, value_range=value_range, layout=layout)
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def fed_to(model: Path, image: Path) -> list[float]:
    """The per-channel means the model saw for `image` (channel 0 first)."""
    result = invoke("classify", str(image), "--model", str(model), "--top-k", "3",
                    "--json", "-")
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    means = {t["label"]: t["confidence"] for t in record["top_k"]}
    return [means[label] for label in PROBE_LABELS]


def solid(path: Path, rgb=RGB) -> Path:
    """A solid PNG of the model's own size: no resize, no compression loss."""
    Image.new("RGB", (WIDTH, HEIGHT), rgb).save(path)
    return path


def expected(order: str, low: float, high: float) -> list[float]:
    values = RGB[::-1] if order == "BGR" else RGB
    return [low + v * (high - low) / 255.0 for v in values]


@pytest.mark.parametrize("layout, order, value_range", [
    ("NHWC", "RGB", (0.0, 255.0)),
    ("NCHW", "RGB", (0.0, 255.0)),
    ("NHWC", "BGR", (0.0, 255.0)),
    ("NHWC", "RGB", (0.0, 1.0)),
    ("NHWC", "RGB", (-1.0, 1.0)),
    ("NCHW", "BGR", (-1.0, 1.0)),
])
def test_the_model_is_fed_what_its_metadata_asks_for(tmp_path, layout, order, value_range):
    model = build_probe_model(tmp_path / "probe.onnx", layout, order, value_range)
    seen = fed_to(model, solid(tmp_path / "solid.png"))
    assert seen == pytest.approx(expected(order, *value_range), abs=1e-4)


def build_colour_model(path: Path, layout: str, order: str,
                       value_range: tuple[float, float]) -> Path:
    """The colour classifier as an exporter with these conventions would write it: it
    expects its input in `layout`, `order` and `value_range` and labels the dominant colour
    right only when it gets exactly that."""
    low, high = value_range
    channels = ("blue", "green", "red") if order == "BGR" else ("red", "green", "blue")
    shape = (["N", 3, 32, 32], [2, 3]) if layout == "NCHW" else (["N", 32, 32, 3], [1, 2])
    # Back to 0..255 inside the graph, then the tiny model's own weights.
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [255.0 / (high - low)])
    offset = helper.make_tensor("offset", TensorProto.FLOAT, [], [-low])
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3, 3],
                                 (np.eye(3, dtype=np.float32) * 20.0 / 255.0).ravel())
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=shape[1], keepdims=0),
        helper.make_node("Add", ["mean", "offset"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "scale"], ["pixels"]),
        helper.make_node("MatMul", ["pixels", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "colour", [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape[0])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        [scale, offset, weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMeta(labels=channels, image_size=(32, 32), channel_order=order,
                     value_range=value_range, layout=layout)
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def test_an_nchw_bgr_signed_model_labels_photos_like_the_plain_one(tmp_path, tiny_model):
    """The same classifier exported the other way round gives the same labels and
    confidences as the plain NHWC, RGB, 0-255 one. (A missing value-range offset shifts
    every channel alike, which this softmax cannot see; the probe test above catches it.)"""
    photos = tmp_path / "photos"
    for colour in ("red", "green", "blue"):
        make_image(photos / f"{colour}.png", colour)
    other = build_colour_model(tmp_path / "other.onnx", "NCHW", "BGR", (-1.0, 1.0))

    def labels(model: Path) -> dict[str, tuple[str, float]]:
        result = invoke("classify", str(photos), "--model", str(model), "--json", "-",
                        "--force")
        assert result.exit_code == 0, result.output
        records = [json.loads(line) for line in result.stdout.splitlines()]
        return {Path(r["path"]).stem: (r["label"], r["confidence"]) for r in records}

    plain, converted = labels(tiny_model), labels(other)
    assert {name: label for name, (label, _) in converted.items()} == {
        "red": "red", "green": "green", "blue": "blue"}
    for name, (label, confidence) in plain.items():
        assert converted[name][0] == label
        assert converted[name][1] == pytest.approx(confidence, abs=1e-4)


# -- models the runtime must refuse --------------------------------------------------------

@pytest.mark.parametrize("outputs", [2, 4])
def test_a_model_with_more_or_fewer_outputs_than_labels_is_refused(tmp_path, outputs):
    path = build_tiny_model(
        tmp_path / "mismatch.onnx", labels=tuple(f"l{i}" for i in range(outputs)),
        props=ModelMeta(labels=("red", "green", "blue"), image_size=(32, 32)).to_props())
    photo = make_image(tmp_path / "red.png", "red")
    for args in (["info"], ["classify", str(photo), "--top-k", "3"]):
        result = invoke(*args, "--model", str(path))
        assert result.exit_code == 2, result.output
        assert result.stderr == f"Error: {path}: {outputs} outputs but 3 labels\n"


def props(**changes: object) -> dict[str, str]:
    good = ModelMeta(labels=("red", "green", "blue"), image_size=(32, 32)).to_props()
    return good | {key: json.dumps(value) for key, value in changes.items()}


@pytest.mark.parametrize("labels", [["red", "red", "blue"], ["a", "b", "a"]])
def test_duplicate_labels_are_refused(labels):
    with pytest.raises(MetadataError, match="^model metadata labels must be a list of "
                                            "distinct names$"):
        ModelMeta.from_props(props(labels=labels))


@pytest.mark.parametrize("order", ["bgr", "rgb", "RGBA", "GRB", ""])
def test_an_unknown_channel_order_is_refused(order):
    with pytest.raises(MetadataError, match="^model metadata channel_order must be RGB or BGR"):
        ModelMeta.from_props(props(channel_order=order))


def test_a_model_with_duplicate_labels_exits_2_naming_the_reason(tmp_path):
    path = build_tiny_model(tmp_path / "dup.onnx", props=props(labels=["red", "red", "blue"]))
    result = invoke("info", "--model", str(path))
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {path} is not a scenetool model: model metadata labels "
                             "must be a list of distinct names\n")


def test_a_model_with_a_lowercase_channel_order_exits_2(tmp_path):
    """'bgr' would otherwise be taken for RGB: every photo fed with red and blue swapped."""
    path = build_tiny_model(tmp_path / "bgr.onnx", props=props(channel_order="bgr"))
    result = invoke("classify", str(make_image(tmp_path / "r.png")), "--model", str(path))
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {path} is not a scenetool model: model metadata "
                             "channel_order must be RGB or BGR, not bgr\n")


@pytest.mark.parametrize("changes, message", [
    ({"labels": []}, "model metadata labels must be a list of distinct names"),
    ({"labels": "red"}, "model metadata labels must be a list of distinct names"),
    ({"labels": ["red", ""]}, "model metadata labels must be a list of distinct names"),
    ({"labels": ["red", 3]}, "model metadata labels must be a list of distinct names"),
    ({"image_size": [32]}, "model metadata image_size must be [height, width], not [32]"),
    ({"image_size": [0, 32]}, "model metadata image_size must be [height, width], not [0, 32]"),
    ({"image_size": [32, 2.5]},
     "model metadata image_size must be [height, width], not [32, 2.5]"),
    ({"image_size": "32x32"}, "model metadata image_size must be [height, width], not 32x32"),
    ({"value_range": [0]}, "model metadata value_range must be [low, high], not [0]"),
    ({"value_range": 255}, "model metadata value_range must be [low, high], not 255"),
    ({"resize": "cubic"}, "model metadata resize must be one of nearest, bilinear, bicubic, "
                          "lanczos, box, hamming"),
    ({"layout": "CHW"}, "model metadata layout must be NHWC or NCHW, not CHW"),
])
def test_unusable_metadata_is_refused_with_its_reason(changes, message):
    with pytest.raises(MetadataError) as info:
        ModelMeta.from_props(props(**changes))
    assert str(info.value) == message


def test_metadata_that_is_not_json_is_named():
    with pytest.raises(MetadataError) as info:
        ModelMeta.from_props(props() | {"labels": "red, green" + "x" * 60})
    assert str(info.value) == ("model metadata labels is not JSON: "
                               f"{('red, green' + 'x' * 60)[:40]!r}")


def test_metadata_round_trips_with_its_descriptive_keys():
    """The exporter writes to_props and the runtime reads from_props: nothing is lost,
    and descriptive keys that are not JSON are kept as text."""
    meta = ModelMeta(labels=("sea", "street"), image_size=(24, 40), channel_order="BGR",
                     value_range=(-1.0, 1.0), resize="lanczos", layout="NCHW",
                     extra={"arch": "tiny", "val_accuracy": 0.5})
    written = meta.to_props()
    assert json.loads(written["image_size"]) == [24, 40]
    assert ModelMeta.from_props(written) == meta
    read = ModelMeta.from_props(written | {"note": "plain text, not JSON"})
    assert read.extra == {"arch": "tiny", "val_accuracy": 0.5, "note": "plain text, not JSON"}


def test_a_square_size_may_be_one_number():
    assert ModelMeta.from_props(props(image_size=64)).image_size == (64, 64)


def test_info_shows_the_contract_and_the_descriptive_keys(tmp_path):
    path = build_probe_model(tmp_path / "probe.onnx", "NCHW", "BGR", (-1.0, 1.0))
    data = json.loads(invoke("info", "--json", "--model", str(path)).stdout)
    assert {k: data[k] for k in ("labels", "image_size", "channel_order", "value_range",
                                 "resize", "layout")} == {
        "labels": list(PROBE_LABELS), "image_size": [HEIGHT, WIDTH], "channel_order": "BGR",
        "value_range": [-1.0, 1.0], "resize": "bilinear", "layout": "NCHW"}
    assert data["input"] == {"name": "image", "shape": ["N", 3, HEIGHT, WIDTH]}
    assert data["output"] == "means"


def build_graph_model(path: Path, nodes: list, inputs: list, outputs: list,
                      meta: ModelMeta | None = None, opsets: dict[str, int] | None = None,
                      initializers: list | None = None) -> Path:
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, outputs, initializers or []),
        opset_imports=[helper.make_opsetid(d, v) for d, v in (opsets or {"": 17}).items()])
    model.ir_version = 8
    meta = meta or ModelMeta(labels=("red", "green", "blue"), image_size=(32, 32))
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path.write_bytes(model.SerializeToString())
    return path


def image_input(shape: list) -> object:
    return helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)


def test_an_input_that_is_not_an_image_batch_is_refused(tmp_path):
    path = build_graph_model(
        tmp_path / "flat.onnx",
        [helper.make_node("ReduceMean", ["image"], ["means"], axes=[1], keepdims=0)],
        [image_input(["N", 32, 3])],
        [helper.make_tensor_value_info("means", TensorProto.FLOAT, ["N", 3])])
    result = invoke("info", "--model", str(path))
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}: expected one image input of rank 4\n"


def test_an_nchw_input_size_that_disagrees_with_the_metadata_is_named(tmp_path):
    meta = ModelMeta(labels=PROBE_LABELS, image_size=(WIDTH, HEIGHT), layout="NCHW")
    path = build_graph_model(
        tmp_path / "nchw.onnx",
        [helper.make_node("ReduceMean", ["image"], ["means"], axes=[2, 3], keepdims=0)],
        [image_input(["N", 3, HEIGHT, WIDTH])],
        [helper.make_tensor_value_info("means", TensorProto.FLOAT, ["N", 3])], meta)
    result = invoke("info", "--model", str(path))
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {path}: input is {HEIGHT}x{WIDTH} but the metadata "
                             f"says {WIDTH}x{HEIGHT}\n")


def test_a_model_with_a_second_output_is_read_from_its_first(tmp_path):
    """Exporters often add outputs (logits next to probabilities): the first is the one."""
    path = build_graph_model(
        tmp_path / "two.onnx",
        [helper.make_node("ReduceMean", ["image"], ["means"], axes=[1, 2], keepdims=0),
         helper.make_node("Neg", ["means"], ["negated"])],
        [image_input(["N", HEIGHT, WIDTH, 3])],
        [helper.make_tensor_value_info("means", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("negated", TensorProto.FLOAT, ["N", 3])],
        ModelMeta(labels=PROBE_LABELS, image_size=(HEIGHT, WIDTH)))
    assert fed_to(path, solid(tmp_path / "solid.png")) == pytest.approx(list(RGB))


def test_a_model_that_fails_while_running_is_exit_2_with_one_line(tmp_path):
    """A model that loads but cannot run a batch: a usage-grade error naming the model,
    not a traceback and not a run of failed images."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [7, -1])
    path = build_graph_model(
        tmp_path / "broken.onnx",
        [helper.make_node("Reshape", ["image", "shape"], ["flat"]),  # 32*32*3 is no 7*k
         helper.make_node("Reshape", ["flat", "back"], ["out"])],
        [image_input(["N", "H", "W", 3])],  # sizes unknown until a batch comes
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])],
        initializers=[shape, helper.make_tensor("back", TensorProto.INT64, [2], [-1, 3])])
    result = invoke("classify", str(make_image(tmp_path / "p" / "r.png")), "--model",
                    str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: inference failed with broken.onnx: ")
    assert len(result.stderr.splitlines()) == 1 and len(result.stderr) < 300
    assert "Traceback" not in result.output


@pytest.mark.parametrize("opsets", [
    {"": 17},
    {"": 13, "ai.onnx.ml": 3},
    {"com.example." + "x" * 150: 300, "": 18},  # names and numbers past one varint byte
])
def test_info_reads_the_opset_without_onnx(tmp_path, opsets):
    """`info` reads opset_import from the raw protobuf (onnx is not a runtime dependency):
    compared here with what the onnx package reads."""
    from scenetool.model import read_opsets

    path = build_tiny_model(tmp_path / "m.onnx")
    model = onnx.load(path)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in opsets.items())
    raw = model.SerializeToString()
    want = {(o.domain or "ai.onnx"): o.version for o in onnx.load_from_string(raw).opset_import}
    assert read_opsets(raw) == want
    # Unknown top-level fields of every wire type, before the known ones, are skipped.
    unknown = (b"\xf8\x07\x96\x01"  # field 127, varint 150
               + b"\xf9\x07" + b"\x01" * 8  # field 127, fixed64
               + b"\xfd\x07" + b"\x02" * 4  # field 127, fixed32
               + b"\xfa\x07\x03abc")  # field 127, 3 bytes
    assert read_opsets(unknown + raw) == want


def test_info_names_the_model_file_it_opened(tmp_path, monkeypatch):
    path = build_probe_model(tmp_path / "probe.onnx")
    monkeypatch.chdir(tmp_path)
    data = json.loads(invoke("info", "--json", "--model", "probe.onnx").stdout)
    assert data["path"] == str(path.resolve())
    assert data["opset"] == 17
