"""The model: one class that owns the onnxruntime session and the labels.

The ONNX file describes itself (see `scenetool.metadata`); nothing about labels, size or
preprocessing is known here until a file is opened. onnxruntime is imported on first use
so `import scenetool` and `scenetool --version` stay quick.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from scenetool.constants import MODEL_ENV, MODEL_FILE
from scenetool.errors import MetadataError, ModelError
from scenetool.fsutil import NotAFileError, open_regular
from scenetool.metadata import PROBS_OUTPUT, ModelMeta

# Providers in order of preference; only those this onnxruntime build has are used.
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CoreMLExecutionProvider", "CPUExecutionProvider")


def shipped_model() -> Path:
    """The model shipped inside the package (scenetool/models/), wherever it is installed."""
    from importlib.resources import files

    return Path(str(files("scenetool") / "models" / MODEL_FILE))


def find_model(explicit: str | os.PathLike | None = None) -> Path:
    """`--model`, else $SCENETOOL_MODEL, else the shipped model."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env)
    shipped = shipped_model()
    if shipped.is_file():
        return shipped
    raise ModelError(
        f"no model found: the shipped {MODEL_FILE} is not installed; "
        f"pass --model FILE or set {MODEL_ENV}")


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        out |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return out, pos
        shift += 7


def read_opsets(buf: bytes) -> dict[str, int]:
    """The opset_import entries of a serialized ModelProto, read without the onnx package.

    Walks the top-level protobuf fields only (field 8 is opset_import: domain=1, version=2).
    """
    opsets: dict[str, int] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if field == 8:
                sub, end, domain, version = pos, pos + length, "", 0
                while sub < end:
                    k, sub = _varint(buf, sub)
                    if k == (1 << 3 | 2):
                        n, sub = _varint(buf, sub)
                        domain = buf[sub:sub + n].decode("utf-8", "replace")
                        sub += n
                    elif k == (2 << 3 | 0):
                        version, sub = _varint(buf, sub)
                    else:
                        break
                opsets[domain or "ai.onnx"] = version
            pos += length
        else:
            break
    return opsets


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    sha256: str
    size: int
    opset: int | None
    input_name: str
    input_shape: list[int | str | None]
    output_name: str
    meta: ModelMeta

    def as_dict(self) -> dict:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "size": self.size,
            "opset": self.opset,
            "input": {"name": self.input_name, "shape": self.input_shape},
            "output": self.output_name,
            "labels": list(self.meta.labels),
            "image_size": list(self.meta.image_size),
            "channel_order": self.meta.channel_order,
            "value_range": list(self.meta.value_range),
            "resize": self.meta.resize,
            "layout": self.meta.layout,
            **{k: v for k, v in self.meta.extra.items()},
            **({"unknown": self.meta.unknown.to_json()} if self.meta.unknown else {}),
        }


# protobuf cannot hold an ONNX file over 2 GiB (larger models keep their weights outside);
# reading is capped there, so /dev/zero or a huge file is refused, not read into memory.
MAX_MODEL_BYTES = 2**31


def read_model(path: Path) -> bytes:
    """The bytes of a model file: a regular file of at most MAX_MODEL_BYTES, else ModelError
    (a FIFO or a device is never opened for a blocking read)."""
    try:
        with open_regular(path, MAX_MODEL_BYTES) as f:
            first = f.read(1)
            if first in (b"", b"\0"):  # no protobuf message starts with a zero byte
                raise ModelError(f"not a usable ONNX model: {path} ("
                                 f"{'empty' if not first else 'it starts with a zero byte'})")
            return first + f.read(MAX_MODEL_BYTES)
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    except NotAFileError as exc:
        if exc.strerror.startswith("a folder"):
            raise ModelError(f"model path is a folder, not an ONNX file: {path}") from None
        raise ModelError(f"model {path} is {exc.strerror}") from None
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc.strerror or exc}") from None


class SceneModel:
    """An opened scenetool ONNX model: `load` decodes an image file as the model wants it,
    `predict` turns a batch of such images into probabilities, one column per label, and
    `predict_scored` into probabilities and, when the model has one, a "scene score" each.

    `threads` sets onnxruntime's intra-op threads (None: onnxruntime's default, all cores).
    `data` is the file's content when it is already in memory (a Ray actor gets it from the
    object store); `path` then only names the model in messages.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None,
                 data: bytes | None = None):
        self.path = Path(path)
        self._bytes = read_model(self.path) if data is None else data
        self.session = self._open_session(threads)
        try:
            self.meta = ModelMeta.from_props(self.session.get_modelmeta().custom_metadata_map)
        except MetadataError as exc:
            raise ModelError(f"{self.path} is not a scenetool model: {exc}") from None
        self.input_name = self._check_input()
        self.output_name, self.score_name = self._outputs()

    def _open_session(self, threads: int | None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        # Idle intra-op threads would spin between batches, burning the cores the decode
        # threads need; on 2 cores turning that off measured 2-5% faster end to end.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        providers = [p for p in PREFERRED_PROVIDERS if p in available] or available
        try:
            return ort.InferenceSession(self._bytes, options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"not a usable ONNX model: {self.path} ({first[:160]})") from None

    def _check_input(self) -> str:
        """The name of the one image input, once its shape agrees with the metadata."""
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ModelError(f"{self.path}: expected one image input of rank 4")
        shape = inputs[0].shape
        spatial = shape[1:3] if self.meta.layout == "NHWC" else shape[2:4]
        if all(isinstance(d, int) for d in spatial) and tuple(spatial) != self.meta.image_size:
            raise ModelError(f"{self.path}: input is {spatial[0]}x{spatial[1]} but the metadata "
                             f"says {self.meta.image_size[0]}x{self.meta.image_size[1]}")
        return inputs[0].name

    def _outputs(self) -> tuple[str, str | None]:
        """(the probabilities' output, the scene score's output or None), once the number of
        probabilities agrees with the labels and the unknown rule's output exists."""
        outputs = self.session.get_outputs()
        names = [o.name for o in outputs]
        probs = outputs[names.index(PROBS_OUTPUT)] if PROBS_OUTPUT in names else outputs[0]
        n_out = probs.shape[-1] if probs.shape else None
        if isinstance(n_out, int) and n_out != len(self.meta.labels):
            raise ModelError(f"{self.path}: {n_out} outputs but {len(self.meta.labels)} labels")
        rule = self.meta.unknown
        if rule is not None and rule.output not in names:
            raise ModelError(f"{self.path}: the metadata's unknown rule reads the output "
                             f"{rule.output!r}, which the graph lacks")
        return probs.name, rule.output if rule is not None else None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.meta.labels

    @property
    def image_size(self) -> tuple[int, int]:
        return self.meta.image_size

    @property
    def data(self) -> bytes:
        """The model file's bytes (the Ray engine ships them to its workers)."""
        return self._bytes

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self._bytes).hexdigest()

    def info(self) -> ModelInfo:
        opsets = read_opsets(self._bytes)
        return ModelInfo(
            path=self.path.resolve(), sha256=self.sha256, size=len(self._bytes),
            opset=opsets.get("ai.onnx"), input_name=self.input_name,
            input_shape=list(self.session.get_inputs()[0].shape),
            output_name=self.output_name, meta=self.meta)

    @property
    def unknown_threshold(self) -> float | None:
        """The scene score below which an image is `unknown`; None: the model has no rule."""
        return self.meta.unknown.threshold if self.meta.unknown else None

    def _run(self, names: list[str], batch: np.ndarray) -> list[np.ndarray]:
        if self.meta.layout == "NCHW":
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        try:
            return self.session.run(names, {self.input_name: batch})
        except Exception as exc:  # onnxruntime's errors are untyped
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"inference failed with {self.path.name}: {first[:200]}") from None

    def load(self, path: str | os.PathLike) -> np.ndarray:
        """Decode an image file into a uint8 (height, width, 3) array of `image_size`, in
        the model's channel order: the classifier's own decoder. Raises DecodeError."""
        from scenetool.inputs.decode import load_image

        meta = self.meta
        return load_image(path, meta.image_size, meta.resize, meta.channel_order)

    def predict(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Probabilities (N, len(labels)) for N images of `image_size`.

        `images` are decoded images as `load` gives them: uint8 (N, H, W, 3), or a sequence
        of (H, W, 3) arrays, scaled here into the model's value range; float32 input is
        taken as already scaled (the engines fill a float32 batch buffer themselves).
        """
        batch = np.stack(images) if not isinstance(images, np.ndarray) else images
        height, width = self.meta.image_size
        if batch.ndim != 4 or batch.shape[1:] != (height, width, 3):
            raise ModelError(f"predict takes images of shape (N, {height}, {width}, 3); "
                             f"got {batch.shape}")
        if batch.dtype != np.float32:
            from scenetool.engines.common import to_input

            scaled = np.empty(batch.shape, np.float32)
            to_input(batch, self.meta, scaled)
            batch = scaled
        return self._run([self.output_name], batch)[0]

    def predict_scored(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and the scene scores (None for a model without the score), computed
        in one run of the graph."""
        if self.score_name is None:
            return self.predict(batch), None
        probs, scores = self._run([self.output_name, self.score_name], batch)
        return probs, np.asarray(scores, np.float32).reshape(len(probs))


def open_model(explicit: str | os.PathLike | None = None, threads: int | None = None) -> SceneModel:
    """The session factory: find the model (`--model`, $SCENETOOL_MODEL, shipped) and open it."""
    return SceneModel(find_model(explicit), threads=threads)
