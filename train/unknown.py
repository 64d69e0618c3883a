"""Give an exported model its "not a scene" rule: fit the scene score, set the threshold,
measure it, and write the metadata the runtime reads.

Every image goes through the runtime's own decoder (`scenetool.engines.common.decode`)
and onnxruntime, exactly as `scenetool classify` sees it:

1. the pooled features of the training images (read from the graph) fit the class
   Gaussians of the relative Mahalanobis score (`train.ood`);
2. the score is added to the graph, and the scored graph is run on the validation split:
   the threshold is the lowest score that keeps `keep` (95%) of those scene photos;
3. photos that are not scenes (a folder such as ood-dev) are only measured: AUROC and the
   share the threshold calls unknown. They never set the threshold.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scenetool.metadata import SCORE_OUTPUT, ModelMeta, UnknownRule
from train import ood

log = logging.getLogger(__name__)
DEFAULT_METHOD = "rel-mahalanobis"
DEFAULT_KEEP = 0.95
BATCH = 32


def run_outputs(model_bytes: bytes, meta: ModelMeta, paths: Sequence[str | os.PathLike],
                names: Sequence[str], threads: int = 2) -> dict[str, np.ndarray]:
    """The graph outputs `names` for every image in `paths` that the runtime's decoder
    reads, plus "kept": the positions in `paths` of those images (the others are skipped
    with a warning, as training skips them)."""
    import onnxruntime as ort

    from scenetool.engines.common import decode, to_input
    from scenetool.errors import DecodeError
    from scenetool.inputs.walk import Item

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    sess = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    kept: list[int] = []
    buffer = np.empty((BATCH, *meta.image_size, 3), np.float32)
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(paths), BATCH):
            chunk = [Item(str(p)) for p in paths[start:start + BATCH]]
            filled = 0
            for i, decoded in enumerate(pool.map(lambda item: decode(meta, item), chunk)):
                if isinstance(decoded, DecodeError):
                    log.warning("skipped unreadable image %s: %s", chunk[i].path, decoded)
                    continue
                to_input(decoded, meta, buffer[filled])
                kept.append(start + i)
                filled += 1
            if not filled:
                continue
            x = buffer[:filled]
            if meta.layout == "NCHW":
                x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
            for name, value in zip(names, sess.run(list(names), {input_name: x}), strict=True):
                out[name].append(np.asarray(value))
    result = {n: np.concatenate(v) if v else np.zeros((0,)) for n, v in out.items()}
    result["kept"] = np.asarray(kept, np.int64)
    return result


@dataclass
class Fitted:
    """A model with its scene score, and what was measured while fitting it."""

    proto: object  # onnx.ModelProto, with the score output and the unknown rule
    rule: UnknownRule
    val_scores: np.ndarray
    val_probs: np.ndarray
    other_scores: np.ndarray | None = None
    other_probs: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    @property
    def separation(self) -> ood.Separation | None:
        if self.other_scores is None or not len(self.other_scores):
            return None
        return ood.separation(self.val_scores, self.other_scores, self.rule.threshold)


def fit_unknown(proto, train_paths: Sequence[str], train_labels: Sequence[int],
                val_paths: Sequence[str], other_paths: Sequence[str] = (),
                method: str = DEFAULT_METHOD, keep: float = DEFAULT_KEEP,
                fitted_on: str = "the validation split", checked_on: str = "",
                threads: int = 2) -> Fitted:
    """Add the scene score to `proto`, fit its threshold on `val_paths`, measure it on
    `other_paths` (photos that are not scenes), and write the rule into the metadata."""
    import onnx

    props = {p.key: p.value for p in proto.metadata_props}
    meta = ModelMeta.from_props({k: v for k, v in props.items() if k != "unknown"})
    gaussians = None
    if method == "rel-mahalanobis":
        heads = ood.find_heads(proto)
        probe = ood.with_outputs(proto, [heads.features]).SerializeToString()
        features = run_outputs(probe, meta, train_paths, [heads.features], threads)
        gaussians = ood.Gaussians.fit(features[heads.features],
                                      np.asarray(train_labels)[features["kept"]])
    scored = ood.add_score(proto, method, gaussians=gaussians)
    scored_bytes = scored.SerializeToString()
    names = ["probs", SCORE_OUTPUT]
    val = run_outputs(scored_bytes, meta, val_paths, names, threads)
    threshold = ood.fit_threshold(val[SCORE_OUTPUT], keep)
    fitted = Fitted(scored, UnknownRule(SCORE_OUTPUT, threshold), val[SCORE_OUTPUT],
                    val["probs"], extra={"val_kept": val["kept"]})
    if other_paths:
        other = run_outputs(scored_bytes, meta, other_paths, names, threads)
        fitted.other_scores, fitted.other_probs = other[SCORE_OUTPUT], other["probs"]
    details = {
        "method": method,
        "keep": keep,
        "fitted_on": f"{fitted_on} ({len(val['kept'])} scene photos)",
        "scenes_kept": round(float(np.mean(fitted.val_scores >= threshold)), 6),
    }
    if method == "rel-mahalanobis":
        details["features_from"] = f"{len(train_paths)} training images"
    sep = fitted.separation
    if sep is not None:
        details["checked_on"] = {"set": checked_on or "photos that are not scenes",
                                 "n": sep.n_others, "auroc": round(sep.auroc, 4),
                                 "called_unknown": round(sep.others_rejected, 4)}
    fitted.rule = UnknownRule(SCORE_OUTPUT, threshold, details)
    merged = dict(props)
    merged["unknown"] = ModelMeta(meta.labels, meta.image_size, unknown=fitted.rule) \
        .to_props()["unknown"]
    del scored.metadata_props[:]
    onnx.helper.set_model_props(scored, merged)
    return fitted


def image_files(root: str | os.PathLike) -> list[str]:
    """Every image under `root`, sorted (a folder of photos that are not scenes)."""
    from scenetool.inputs.walk import walk

    return sorted(item.path for item in walk([str(root)], True) if item.error is None)


def draw_roc(fitted: Fitted, out: Path, title: str) -> Path:
    """The ROC curve of the scene score (scenes positive), the threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sep = fitted.separation
    if sep is None:
        raise ValueError("a ROC curve needs photos that are not scenes")
    fpr, tpr = ood.roc_curve(fitted.val_scores, fitted.other_scores)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot(fpr, tpr, lw=2, label=f"scene score (AUROC {sep.auroc:.3f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.scatter([1 - sep.others_rejected], [sep.scenes_kept], color="C3", zorder=3,
               label=(f"threshold: keeps {sep.scenes_kept:.1%} of scenes, "
                      f"{sep.others_rejected:.1%} of others unknown"))
    ax.set_xlabel("non-scene photos kept (false positive rate)")
    ax.set_ylabel("scene photos kept (true positive rate)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def draw_calibration(probs: np.ndarray, true: np.ndarray, out: Path, title: str) -> Path:
    """Reliability diagram of the top probability on the validation split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cal = ood.calibration(probs, true)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    mids = [(b["low"] + b["high"]) / 2 for b in cal["bins"]]
    ax.bar(mids, [b["accuracy"] for b in cal["bins"]], width=0.09, alpha=0.7,
           label="accuracy in the bin")
    ax.plot([b["confidence"] for b in cal["bins"]], [b["accuracy"] for b in cal["bins"]],
            "o-", color="C1", label="mean confidence vs accuracy")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set_xlabel("top probability")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (ECE {cal['ece']:.3f})", fontsize=10)
    ax.legend(loc="upper left", fontsize=7)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
