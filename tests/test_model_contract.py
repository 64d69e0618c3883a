"""The model contract: what a model's metadata asks for is what it is fed, and a model
whose metadata cannot be honoured is refused.

A probe model answers with what it was given: its three outputs are the mean of each input
channel, so the values the runtime fed it (layout, channel order, value range) can be read
back from `classify --top-k 3 --json -` exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from conftest import (
    PROBE_LABELS,
    build_probe_model,
    build_tiny_model,
    invoke,
    make_image,
    write_model,
)
from onnx import TensorProto, helper
from PIL import Image

from scenetool.metadata import MetadataError, ModelMeta

HEIGHT, WIDTH = 24, 40  # not square, so a swapped height and width cannot pass
RGB = (200, 100, 20)  # three different values, so a swapped channel order cannot pass


def probe(path: Path, layout: str = "NHWC", channel_order: str = "RGB",
          value_range: tuple[float, float] = (0.0, 255.0)) -> Path:
    return build_probe_model(path, (HEIGHT, WIDTH), layout, channel_order, value_range)


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
    model = probe(tmp_path / "probe.onnx", layout, order, value_range)
    seen = fed_to(model, solid(tmp_path / "solid.png"))
    assert seen == pytest.approx(expected(order, *value_range), abs=1e-4)


def test_an_nchw_bgr_signed_model_labels_photos_like_the_plain_one(tmp_path, tiny_model,
                                                                  converted_model):
    """The same classifier exported the other way round gives the same labels and
    confidences as the plain NHWC, RGB, 0-255 one. (A missing value-range offset shifts
    every channel alike, which this softmax cannot see; the probe test above catches it.)"""
    photos = tmp_path / "photos"
    for colour in ("red", "green", "blue"):
        make_image(photos / f"{colour}.png", colour)

    def labels(model: Path) -> dict[str, tuple[str, float]]:
        result = invoke("classify", str(photos), "--model", str(model), "--json", "-",
                        "--force")
        assert result.exit_code == 0, result.output
        records = [json.loads(line) for line in result.stdout.splitlines()]
        return {Path(r["path"]).stem: (r["label"], r["confidence"]) for r in records}

    plain, converted = labels(tiny_model), labels(converted_model)
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
                          "lanczos, box, hamming, not cubic"),
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
    assert ModelMeta.from_props(props(image_size=[1, 5])).image_size == (1, 5)


def test_info_shows_the_contract_and_the_descriptive_keys(tmp_path):
    path = probe(tmp_path / "probe.onnx", "NCHW", "BGR", (-1.0, 1.0))
    data = json.loads(invoke("info", "--json", "--model", str(path)).stdout)
    assert {k: data[k] for k in ("labels", "image_size", "channel_order", "value_range",
                                 "resize", "layout")} == {
        "labels": list(PROBE_LABELS), "image_size": [HEIGHT, WIDTH], "channel_order": "BGR",
        "value_range": [-1.0, 1.0], "resize": "bilinear", "layout": "NCHW"}
    assert data["input"] == {"name": "image", "shape": ["N", 3, HEIGHT, WIDTH]}
    assert data["output"] == "means"


def image_of(shape: list):
    return helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)


def test_an_input_that_is_not_an_image_batch_is_refused(tmp_path):
    path = write_model(
        tmp_path / "flat.onnx",
        [helper.make_node("ReduceMean", ["image"], ["means"], axes=[1], keepdims=0)],
        [image_of(["N", 32, 3])],
        [helper.make_tensor_value_info("means", TensorProto.FLOAT, ["N", 3])])
    result = invoke("info", "--model", str(path))
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}: expected one image input of rank 4\n"


def test_an_nchw_input_size_that_disagrees_with_the_metadata_is_named(tmp_path):
    meta = ModelMeta(labels=PROBE_LABELS, image_size=(WIDTH, HEIGHT), layout="NCHW")
    path = write_model(
        tmp_path / "nchw.onnx",
        [helper.make_node("ReduceMean", ["image"], ["means"], axes=[2, 3], keepdims=0)],
        [image_of(["N", 3, HEIGHT, WIDTH])],
        [helper.make_tensor_value_info("means", TensorProto.FLOAT, ["N", 3])], meta)
    result = invoke("info", "--model", str(path))
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {path}: input is {HEIGHT}x{WIDTH} but the metadata "
                             f"says {WIDTH}x{HEIGHT}\n")


def test_a_model_with_a_second_output_is_read_from_its_first(tmp_path):
    """Exporters often add outputs (logits next to probabilities): the first is the one."""
    path = write_model(
        tmp_path / "two.onnx",
        [helper.make_node("ReduceMean", ["image"], ["means"], axes=[1, 2], keepdims=0),
         helper.make_node("Neg", ["means"], ["negated"])],
        [image_of(["N", HEIGHT, WIDTH, 3])],
        [helper.make_tensor_value_info("means", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("negated", TensorProto.FLOAT, ["N", 3])],
        ModelMeta(labels=PROBE_LABELS, image_size=(HEIGHT, WIDTH)))
    assert fed_to(path, solid(tmp_path / "solid.png")) == pytest.approx(list(RGB))


def test_a_model_that_fails_while_running_is_exit_2_with_one_line(tmp_path):
    """A model that loads but cannot run a batch: a usage-grade error naming the model,
    not a traceback and not a run of failed images."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [7, -1])
    path = write_model(
        tmp_path / "broken.onnx",
        [helper.make_node("Reshape", ["image", "shape"], ["flat"]),  # 32*32*3 is no 7*k
         helper.make_node("Reshape", ["flat", "back"], ["out"])],
        [image_of(["N", "H", "W", 3])],  # sizes unknown until a batch comes
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
    path = probe(tmp_path / "probe.onnx")
    monkeypatch.chdir(tmp_path)
    data = json.loads(invoke("info", "--json", "--model", "probe.onnx").stdout)
    assert data["path"] == str(path.resolve())
    assert data["opset"] == 17


def test_the_python_api_decodes_and_feeds_as_the_classifier_does(tmp_path):
    """`SceneModel.load` gives an image in the model's channel order and `predict` scales
    it into the model's range: the probe sees what `classify` feeds it."""
    from scenetool.model import SceneModel

    model = SceneModel(probe(tmp_path / "probe.onnx", "NCHW", "BGR", (-1.0, 1.0)))
    image = model.load(solid(tmp_path / "solid.png"))
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype.name == "uint8"
    assert tuple(image[0, 0]) == RGB[::-1]
    (seen,) = model.predict(image[None])
    assert list(seen) == pytest.approx(expected("BGR", -1.0, 1.0), abs=1e-4)


def test_info_shows_the_unknown_rule(tmp_path):
    path = build_tiny_model(tmp_path / "ood.onnx", unknown_threshold=14.0)
    data = json.loads(invoke("info", "--json", "--model", path).stdout)
    assert data["unknown"]["threshold"] == 14.0
    assert "unknown" not in json.loads(invoke("info", "--json").stdout)
