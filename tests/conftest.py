"""Shared fixtures and helpers: tiny ONNX models built with the onnx helper API, image
makers, and the ways tests run scenetool (CliRunner in-process, or a real process).

The tiny model labels an image by its dominant colour (red, green or blue): it averages
each channel and applies a softmax, so its answers are known in advance. It can be built
with any of the conventions a model may declare (NHWC or NCHW, RGB or BGR, any value
range), and labels photos the same way whichever it uses, provided it is fed as declared.
Built with `unknown_threshold`, it also outputs a scene score, the energy
logsumexp(logits): about 17 for a saturated red, green or blue photo, about 11 for a
grey one, so a threshold of 14 calls grey photos `unknown` and coloured ones not.
The probe model answers with what it was fed: output i is the mean of input channel i.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from scenetool.metadata import SCORE_OUTPUT, ModelMeta, UnknownRule

try:
    import onnx
    from onnx import TensorProto, helper
except ImportError as exc:  # a test dependency: the suite must fail, not skip, without it
    raise ImportError("the tests build their models with the onnx package: "
                      "pip install -e '.[test]'") from exc

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 210)}
# What make_image paints: grey is no label, a dull green-grey (top label green, but
# little evidence: a low scene score).
SHADES = {**COLOURS, "grey": (120, 140, 120)}
LABELS = ("red", "green", "blue")
SIZE = (32, 32)
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "intel"


def write_model(path: Path, nodes: list, inputs: list, outputs: list,
                meta: ModelMeta | None = None, props: dict[str, str] | None = None,
                initializers: list | None = None,
                opsets: dict[str, int] | None = None) -> Path:
    """An ONNX file of this graph with `meta` (or raw `props`) as its metadata."""
    model = helper.make_model(
        helper.make_graph(nodes, "tiny", inputs, outputs, initializers or []),
        opset_imports=[helper.make_opsetid(d, v) for d, v in (opsets or {"": 17}).items()])
    model.ir_version = 8
    if props is None:
        props = (meta or ModelMeta(labels=LABELS, image_size=SIZE)).to_props()
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    path.write_bytes(model.SerializeToString())
    return path


def image_input(layout: str, size: tuple[int, int]):
    """The image input for `layout` and `size` = (height, width), and its spatial axes."""
    if layout == "NCHW":
        return helper.make_tensor_value_info(
            "image", TensorProto.FLOAT, ["N", 3, size[0], size[1]]), [2, 3]
    return helper.make_tensor_value_info(
        "image", TensorProto.FLOAT, ["N", size[0], size[1], 3]), [1, 2]


def build_tiny_model(path: Path, labels=LABELS, size=SIZE, meta: ModelMeta | None = None,
                     props: dict[str, str] | None = None, layout: str = "NHWC",
                     channel_order: str = "RGB",
                     value_range: tuple[float, float] = (0.0, 255.0),
                     unknown_threshold: float | None = None) -> Path:
    """Write the colour model to `path`; `props` replaces the metadata when given; with
    `unknown_threshold`, a scene-score output and the metadata's unknown rule too.

    The model takes its input in `layout`, `channel_order` and `value_range`, turns it back
    into RGB 0..255 in the graph, and scores each colour: fed any other way, it is wrong.
    """
    k = len(labels)
    low, high = value_range
    weights = np.zeros((3, k), np.float32)
    for i in range(min(3, k)):  # the input channel that holds colour i
        weights[2 - i if channel_order == "BGR" else i, i] = 20.0 / 255.0
    image, axes = image_input(layout, size)
    nodes = [helper.make_node("ReduceMean", ["image"], ["mean"], axes=axes, keepdims=0)]
    initializers = [helper.make_tensor("w", TensorProto.FLOAT, [3, k], weights.ravel())]
    features = "mean"  # what the MatMul scores (test_ood finds it there)
    if (low, high) != (0.0, 255.0):  # back to 0..255 first
        nodes += [helper.make_node("Sub", ["mean", "low"], ["shifted"]),
                  helper.make_node("Mul", ["shifted", "scale"], ["pixels"])]
        initializers += [helper.make_tensor("low", TensorProto.FLOAT, [], [low]),
                         helper.make_tensor("scale", TensorProto.FLOAT, [], [255.0 / (high - low)])]
        features = "pixels"
    nodes += [helper.make_node("MatMul", [features, "w"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", k])]
    if unknown_threshold is not None:
        nodes.append(helper.make_node("ReduceLogSumExp", ["logits"], [SCORE_OUTPUT], axes=[1],
                                      keepdims=0))
        outputs.append(helper.make_tensor_value_info(SCORE_OUTPUT, TensorProto.FLOAT, ["N"]))
    rule = (UnknownRule(SCORE_OUTPUT, unknown_threshold, {"method": "energy", "keep": 0.95})
            if unknown_threshold is not None else None)
    meta = meta or ModelMeta(labels=tuple(labels), image_size=size,
                             channel_order=channel_order, value_range=value_range,
                             layout=layout, extra={"arch": "tiny-colour"}, unknown=rule)
    write_model(path, nodes, [image], outputs, meta, props, initializers)
    onnx.checker.check_model(onnx.load(path))
    return path


PROBE_LABELS = ("c0", "c1", "c2")  # output i: the mean of input channel i


def build_probe_model(path: Path, size: tuple[int, int], layout: str = "NHWC",
                      channel_order: str = "RGB",
                      value_range: tuple[float, float] = (0.0, 255.0)) -> Path:
    """A model whose output i is the mean of input channel i, as the runtime fed it."""
    image, axes = image_input(layout, size)
    meta = ModelMeta(labels=PROBE_LABELS, image_size=size, channel_order=channel_order,
                     value_range=value_range, layout=layout)
    write_model(path, [helper.make_node("ReduceMean", ["image"], ["means"], axes=axes,
                                        keepdims=0)],
                [image], [helper.make_tensor_value_info("means", TensorProto.FLOAT, ["N", 3])],
                meta)
    onnx.checker.check_model(onnx.load(path))
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


@pytest.fixture(scope="session")
def converted_model(tmp_path_factory) -> Path:
    """The tiny colour model as another exporter writes it: NCHW, BGR, values in [-1, 1]."""
    return build_tiny_model(tmp_path_factory.mktemp("model") / "nchw-bgr-signed.onnx",
                            layout="NCHW", channel_order="BGR", value_range=(-1.0, 1.0))


def make_image(path: Path, colour: str = "red", size=(48, 40), fmt: str | None = None,
               mode: str = "RGB", **save) -> Path:
    """A solid-colour image with a little noise, saved in the format its suffix says.

    The noise is seeded by the file name (crc32, stable across processes, unlike hash()),
    so a test makes the same bytes every run and two files of one name are identical.
    """
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
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


def grey(path: Path) -> Path:
    """An image the colour model is unsure about: a third for each class, 'red' on top."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 40), (128, 128, 128)).save(path)
    return path


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims huge dimensions."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))


BROKEN = {
    "empty.jpg": "empty file (0 bytes)",
    "text.jpg": "not an image (unknown or corrupt format)",
    "cut.jpg": "truncated image data",
    "bomb.png":
        "image too large (900,000,000 pixels; over 89,478,485): possible decompression bomb",
    "dangling.jpg": "broken symbolic link",
}


def make_broken(folder: Path) -> None:
    """One file for each reason in BROKEN."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("hello")
    good = make_image(folder / "tmp.jpg", "red", size=(300, 300), quality=95).read_bytes()
    (folder / "tmp.jpg").unlink()
    (folder / "cut.jpg").write_bytes(good[: len(good) // 2])
    (folder / "bomb.png").write_bytes(png_bomb(30000, 30000))
    os.symlink(folder / "nowhere.jpg", folder / "dangling.jpg")


def invoke(*args: object, **kwargs) -> Result:
    """scenetool in-process through CliRunner; an exception that escapes the CLI fails the
    test instead of becoming exit 1."""
    from scenetool.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)


def python_env() -> dict[str, str]:
    """The environment for a child Python that imports this checkout."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def scenetool(*args: str, **kwargs) -> subprocess.Popen:
    """scenetool as a real process (python -m scenetool), its output piped."""
    return subprocess.Popen([sys.executable, "-m", "scenetool", *args], env=python_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def run(*args: str) -> subprocess.CompletedProcess:
    """scenetool as a real process, to the end."""
    proc = scenetool(*args)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API on 127.0.0.1 (moto's server), and the standard AWS variables that
    point every client at it: this process, its subprocesses and the session's Ray
    workers (started after this, so they inherit them)."""
    moto_server = pytest.importorskip("moto.server", reason="needs moto[server] (test extra)")
    pytest.importorskip("pyarrow", reason="needs pyarrow (the s3 or ray extra)")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }.items():
            patch.setenv(key, value)
        yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def ray_cluster(s3_server):
    """One real local Ray for the whole session (two CPUs), started the way scenetool
    starts one (127.0.0.1 only, token authentication, no dashboard), shut down at the end.
    Runs with --engine ray use it instead of starting their own."""
    # Not importorskip: ray must not be imported before local_ray configures it.
    if importlib.util.find_spec("ray") is None:
        pytest.skip("needs the ray extra: pip install '.[ray]'")
    from scenetool.engines.ray import local_ray

    with local_ray(num_cpus=2) as ray:
        yield ray
