"""Export a run's checkpoint to the ONNX file the scenetool runtime ships.

Conversion is `tf2onnx.convert.from_function` over a `tf.function` that calls the Keras
model with `training=False` and returns `{"probs": ...}`: the input signature names the
input `image` ([batch, S, S, 3] float32) and the dict key names the output `probs`. It
needs nothing but a traced function, so it does not lean on how tf2onnx reads Keras
models (`from_keras` also converts these models with tf2onnx 1.17 and Keras 3.15).

Before anything lands at `--out` the graph passes `onnx.checker` (full check), matches
Keras on 64 seeded-random validation images (PARITY_TOL, same argmax), gets the metadata
contract (`scenetool.metadata.ModelMeta`) and, unless turned off, its "not a scene" score
and threshold (`train.unknown`), and is measured on the whole validation split by
`scenetool.evaluate.evaluate`, the scorer of `scenetool evaluate`: the runtime's decoder,
its `SceneModel` and onnxruntime, so the accuracy in the metadata and on the card is the
accuracy a user measures. The file is written next to `--out` and renamed into place, so
a failed export leaves whatever was there before untouched.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scenetool.fsutil import atomic_path
from train import data as data_mod
from train.fitting.fit import stages, train_seconds
from train.reports.evaluate import (
    RunData,
    check_size,
    default_size,
    load_checkpoint,
    open_run,
    report,
    sample_positions,
    utc_now,
    val_batches,
    val_paths,
)

OPSET = 17
PARITY_TOL = 1e-4  # max abs difference of probabilities, ONNX vs Keras
PARITY_IMAGES = 64
INPUT_NAME, OUTPUT_NAME, BATCH_DIM = "image", "probs", "batch"


class ExportError(Exception):
    """The model cannot be exported, or the exported graph does not behave like Keras."""


@dataclass
class ExportResult:
    path: Path
    run: RunData
    checkpoint: str
    image_size: int
    params: int
    macs: int
    parity_max_diff: float
    probs: np.ndarray  # onnxruntime, whole validation split
    report: dict
    props: dict[str, str] = field(default_factory=dict)
    unknown: object | None = None  # train.unknown.Fitted, when the score was added

    @property
    def file_size(self) -> int:
        return self.path.stat().st_size


def to_onnx(model, size: int, opset: int = OPSET):
    """The Keras model as an ONNX ModelProto: input `image` [batch, S, S, 3], output `probs`."""
    import tensorflow as tf
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    spec = tf.TensorSpec([None, size, size, 3], tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(image):
        return {OUTPUT_NAME: model(image, training=False)}

    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=opset)
    except Exception as exc:  # tf2onnx raises bare exceptions from deep inside its passes
        raise ExportError(f"tf2onnx could not convert the model: {exc}") from exc
    for value in (*proto.graph.input, *proto.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = BATCH_DIM
    return proto


def check(proto) -> None:
    import onnx

    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the ONNX graph fails onnx.checker: {exc}") from exc
    names = ([i.name for i in proto.graph.input], [o.name for o in proto.graph.output])
    if names != ([INPUT_NAME], [OUTPUT_NAME]):
        raise ExportError(f"expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, got {names}")


def session(model_bytes: bytes, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def parity(sess, model, images: np.ndarray) -> float:
    """Max abs difference of the probabilities; an ExportError when too big or argmax differs."""
    onnx_probs = sess.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
    keras_probs = np.asarray(model(images, training=False))
    diff = float(np.max(np.abs(onnx_probs - keras_probs)))
    changed = int(np.sum(onnx_probs.argmax(1) != keras_probs.argmax(1)))
    if not diff <= PARITY_TOL or changed:
        raise ExportError(f"ONNX and Keras disagree on {len(images)} validation images: "
                          f"max abs diff {diff:.2e} (limit {PARITY_TOL:.0e}), "
                          f"{changed} different top class(es)")
    return diff


def count_macs(proto) -> int:
    """Multiply-accumulates of one image through the Conv, MatMul and Gemm nodes."""
    import onnx

    one = onnx.ModelProto()
    one.CopyFrom(proto)
    for value in (*one.graph.input, *one.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(one)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)}
    weights = {t.name: list(t.dims) for t in one.graph.initializer}
    macs = 0
    for node in one.graph.node:
        out = shapes.get(node.output[0], [])
        if node.op_type == "Conv" and node.input[1] in weights:
            # output N, Cout, H, W; weight Cout, Cin/groups, kh, kw
            macs += int(np.prod(out)) * int(np.prod(weights[node.input[1]][1:]))
        elif node.op_type in ("MatMul", "Gemm") and node.input[1] in weights:
            k = weights[node.input[1]][0]
            macs += int(np.prod(out)) * k
    return macs


def runtime_scores(proto, rd: RunData) -> tuple[np.ndarray, dict]:
    """Probabilities and the report of the validation split, scored as `scenetool evaluate`
    scores the same files (the graph is written to a temporary file for the runtime)."""
    from scenetool.evaluate import evaluate
    from scenetool.inputs.walk import Item, walk
    from scenetool.model import SceneModel

    def labelled():
        for i, path in zip(rd.split.val, val_paths(rd), strict=True):
            found = list(walk([path], False))
            yield rd.classes[rd.folder.labels[i]], found[0] if found else Item(path)

    handle, name = tempfile.mkstemp(suffix=".onnx")
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(proto.SerializeToString())
        result = evaluate(SceneModel(name, threads=2), labelled())
    finally:
        os.unlink(name)
    if result.failed:
        path, reason = result.failed[0]
        raise ExportError(f"{len(result.failed)} validation image(s) failed in the runtime, "
                          f"e.g. {path}: {reason}")
    true = np.asarray([rd.classes.index(t) for t, _ in result.results])
    return result.probabilities(), report(true, result.probabilities(), rd.classes)


def metadata(rd: RunData, size: int, val_accuracy: float, params: int,
             macro_f1: float | None = None) -> dict[str, str]:
    import scenetool
    from scenetool.metadata import ModelMeta

    return ModelMeta(
        labels=tuple(rd.classes), image_size=(size, size), channel_order="RGB",
        value_range=(0.0, 255.0), resize="bilinear", layout="NHWC",
        extra={
            "arch": rd.cfg.arch,
            "val_accuracy": round(val_accuracy, 6),
            "val_macro_f1": None if macro_f1 is None else round(macro_f1, 6),
            "train_seconds": round(train_seconds(stages(rd.path, rd.cfg, rd.state)), 1),
            "training_data": data_mod.training_summary(rd.folder, rd.split),
            "created": utc_now(),
            "scenetool_version": scenetool.__version__,
            "opset": OPSET,
            "params": params,
        }).to_props()


def _verify_runtime(path: Path, rd: RunData, size: int) -> None:
    """Open the written file the way the runtime does; it must answer with the run's labels."""
    from scenetool.model import ModelError, SceneModel

    try:
        model = SceneModel(path, threads=1)
    except ModelError as exc:
        raise ExportError(f"the runtime cannot open the export: {exc}") from exc
    probs = model.predict(np.zeros((2, size, size, 3), np.float32))
    if list(model.labels) != rd.classes or probs.shape != (2, len(rd.classes)):
        raise ExportError(f"the runtime reads labels {model.labels} and outputs {probs.shape}")


def _write_atomic(proto, out: Path, rd: RunData, size: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_bytes(proto.SerializeToString())
        _verify_runtime(tmp, rd, size)


def _set_props(proto, props: dict[str, str]) -> None:
    import onnx

    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)


def export(run: Path, out: Path, size: int | None = None, which: str = "best",
           data: str | None = None, unknown: str | None = "probe",
           others: list[str] | None = None,
           negatives: list[str] | None = None) -> ExportResult:
    """Convert, check, measure and write `run`'s checkpoint as `out` (see the module doc).

    `unknown` is the scene score to add (None: none); `others` are photos that are not
    scenes, on which it is measured for the card; `negatives` are the ones the `probe`
    score learns from."""
    rd = open_run(run, data)
    size = size or default_size(rd.cfg)
    check_size(rd.cfg, size)
    model = load_checkpoint(run, which)
    proto = to_onnx(model, size)
    check(proto)
    sess = session(proto.SerializeToString())
    picks = sample_positions(len(rd.split.val), rd.cfg.seed, PARITY_IMAGES)
    diff = parity(sess, model, next(val_batches(rd, size, PARITY_IMAGES, picks)))
    params = int(model.count_params())
    _set_props(proto, metadata(rd, size, 0.0, params))
    fitted = None
    if unknown:
        from train.ood import SurgeryError
        from train.unknown import fit_unknown

        train_paths = [str(rd.folder.root / rd.folder.files[i]) for i in rd.split.train]
        try:
            fitted = fit_unknown(proto, train_paths, [rd.folder.labels[i] for i in rd.split.train],
                                 val_paths(rd), others or [], unknown,
                                 fitted_on=f"run {rd.name}'s validation split",
                                 checked_on="photos that are not scenes",
                                 negatives=negatives or [])
        except (SurgeryError, ValueError) as exc:
            raise ExportError(f"cannot add the scene score: {exc}") from exc
        proto = fitted.proto
    probs, result = runtime_scores(proto, rd)
    props = {p.key: p.value for p in proto.metadata_props}
    props.update(metadata(rd, size, result["accuracy"], params, result["macro_f1"]))
    _set_props(proto, props)
    proto.doc_string = f"scenetool {rd.cfg.arch}, run {rd.name} ({which}.keras) at {size}px"
    _write_atomic(proto, out, rd, size)
    return ExportResult(out, rd, which, size, params, count_macs(proto), diff, probs,
                        result, props, fitted)
