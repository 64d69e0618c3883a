"""Give an exported model its "not a scene" rule: fit the scene score, set the threshold,
measure it, and write the metadata the runtime reads.

Every image goes through the runtime's own decoder (`scenetool.engines.common.decode`)
and onnxruntime, exactly as `scenetool classify` sees it:

1. the score is fitted (`train.ood`): for `rel-mahalanobis`, the class Gaussians of the
   training images' pooled features; for `probe`, a regression of the training images
   against `negatives`, photos that are not scenes, each used as given and shrunk to the
   Intel scenes' 150 px (so resolution and sharpness cannot tell the two apart);
2. the score is added to the graph, and the scored graph is run on the validation split:
   the threshold is the lowest score that keeps `keep` (95%) of those scene photos;
3. photos that are not scenes (`others`, e.g. ood-dev) are only measured: AUROC and the
   share the threshold calls unknown. They never set the threshold, and any of them that
   is also among the negatives is left out of the measurement.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scenetool.metadata import SCORE_OUTPUT, ModelMeta, UnknownRule
from train import ood

log = logging.getLogger(__name__)
DEFAULT_METHOD = "probe"
DEFAULT_KEEP = 0.95
BATCH = 32
# A folder of photos that are not scenes may say where each came from (ood-dev does):
# only the ones under these licences may train a model that ships.
PROVENANCE = "PROVENANCE.tsv"
TRAINABLE_LICENCES = ("MIT", "Apache-2.0")
SHRUNK_SIZE = 150  # the Intel scenes' size: negatives are also used at it


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


def pooled_outputs(proto, meta: ModelMeta, layers: Sequence[str], paths: Sequence[str],
                   threads: int = 2) -> list[np.ndarray]:
    """The globally averaged activations of `layers`, one (images, channels) array each,
    for the images in `paths` that the runtime's decoder reads."""
    import onnx
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    names = [f"probe_pooled/{i}" for i in range(len(layers))]
    probe.graph.node.extend(helper.make_node("GlobalAveragePool", [layer], [name])
                            for layer, name in zip(layers, names, strict=True))
    probe = ood.with_outputs(probe, names)
    out = run_outputs(probe.SerializeToString(), meta, paths, names, threads)
    return [out[name].reshape(len(out["kept"]), -1) for name in names]


def shrunk_copies(paths: Sequence[str], folder: Path) -> list[str]:
    """Each image as the Intel scenes are: centre-cropped to a square, 150 px, JPEG."""
    from PIL import Image, ImageOps

    from scenetool.errors import DecodeError
    from scenetool.inputs.decode import open_rgb

    copies = []
    for i, path in enumerate(paths):
        try:
            image = open_rgb(path, (SHRUNK_SIZE, SHRUNK_SIZE))
        except DecodeError as exc:
            log.warning("skipped unreadable image %s: %s", path, exc)
            continue
        small = ImageOps.fit(image, (SHRUNK_SIZE, SHRUNK_SIZE), Image.Resampling.BILINEAR)
        copies.append(str(folder / f"{i}.jpg"))
        small.save(copies[-1], quality=75)
    return copies


def fit_probe(proto, meta: ModelMeta, train_paths: Sequence[str], negatives: Sequence[str],
              threads: int = 2) -> ood.Probe:
    """The `probe` score's regression: training scenes against `negatives` and their
    shrunk copies."""
    if not negatives:
        raise ValueError("the probe score needs photos that are not scenes to learn from "
                         "(--negatives)")
    layers = ood.probe_layers(proto)
    scenes = pooled_outputs(proto, meta, layers, train_paths, threads)
    with tempfile.TemporaryDirectory(prefix="scenetool-negatives-") as tmp:
        both = [*negatives, *shrunk_copies(negatives, Path(tmp))]
        others = pooled_outputs(proto, meta, layers, both, threads)
    return ood.Probe.fit(layers, scenes, others)


def fit_unknown(proto, train_paths: Sequence[str], train_labels: Sequence[int],
                val_paths: Sequence[str], other_paths: Sequence[str] = (),
                method: str = DEFAULT_METHOD, keep: float = DEFAULT_KEEP,
                fitted_on: str = "the validation split", checked_on: str = "",
                threads: int = 2, negatives: Sequence[str] = ()) -> Fitted:
    """Add the scene score to `proto`, fit its threshold on `val_paths`, measure it on
    `other_paths` (photos that are not scenes; those among `negatives` are left out), and
    write the rule into the metadata."""
    import onnx

    props = {p.key: p.value for p in proto.metadata_props}
    meta = ModelMeta.from_props({k: v for k, v in props.items() if k != "unknown"})
    gaussians, probe = _fit_score(proto, meta, method, train_paths, train_labels, negatives,
                                  threads)
    learnt_from = {os.path.realpath(p) for p in negatives}
    other_paths = [p for p in other_paths if os.path.realpath(p) not in learnt_from]
    scored = ood.add_score(proto, method, gaussians=gaussians, probe=probe)
    fitted = _measure(scored, meta, val_paths, other_paths, keep, threads)
    threshold = fitted.rule.threshold
    details = {
        "method": method,
        "keep": keep,
        "fitted_on": f"{fitted_on} ({len(fitted.extra['val_kept'])} scene photos)",
        "scenes_kept": round(float(np.mean(fitted.val_scores >= threshold)), 6),
        **_learnt_details(method, train_paths, probe, negatives),
        **_checked_details(fitted.separation, checked_on),
    }
    fitted.rule = UnknownRule(SCORE_OUTPUT, threshold, details)
    merged = dict(props)
    merged["unknown"] = ModelMeta(meta.labels, meta.image_size, unknown=fitted.rule) \
        .to_props()["unknown"]
    del scored.metadata_props[:]
    onnx.helper.set_model_props(scored, merged)
    return fitted


def _fit_score(proto, meta: ModelMeta, method: str, train_paths: Sequence[str],
               train_labels: Sequence[int], negatives: Sequence[str],
               threads: int) -> tuple[ood.Gaussians | None, ood.Probe | None]:
    """What `method` learns from the training images: the class Gaussians for
    rel-mahalanobis, the probe for probe, nothing for energy."""
    if method == "rel-mahalanobis":
        return _fit_gaussians(proto, meta, train_paths, train_labels, threads), None
    if method == "probe":
        return None, fit_probe(proto, meta, train_paths, negatives, threads)
    return None, None


def _fit_gaussians(proto, meta: ModelMeta, train_paths: Sequence[str],
                   train_labels: Sequence[int], threads: int) -> ood.Gaussians:
    """The `rel-mahalanobis` score's class Gaussians, over the training images' pooled
    features."""
    heads = ood.find_heads(proto)
    with_features = ood.with_outputs(proto, [heads.features]).SerializeToString()
    features = run_outputs(with_features, meta, train_paths, [heads.features], threads)
    return ood.Gaussians.fit(features[heads.features],
                             np.asarray(train_labels)[features["kept"]])


def _measure(scored, meta: ModelMeta, val_paths: Sequence[str], other_paths: Sequence[str],
             keep: float, threads: int) -> Fitted:
    """Run the scored model on the validation split, fit the threshold that keeps `keep`
    of it, and run it on `other_paths` (when there are any)."""
    scored_bytes = scored.SerializeToString()
    names = ["probs", SCORE_OUTPUT]
    val = run_outputs(scored_bytes, meta, val_paths, names, threads)
    threshold = ood.fit_threshold(val[SCORE_OUTPUT], keep)
    fitted = Fitted(scored, UnknownRule(SCORE_OUTPUT, threshold), val[SCORE_OUTPUT],
                    val["probs"], extra={"val_kept": val["kept"]})
    if other_paths:
        other = run_outputs(scored_bytes, meta, other_paths, names, threads)
        fitted.other_scores, fitted.other_probs = other[SCORE_OUTPUT], other["probs"]
    return fitted


def _learnt_details(method: str, train_paths: Sequence[str], probe: ood.Probe | None,
                    negatives: Sequence[str]) -> dict:
    """The rule's details on what the score learnt from."""
    details: dict = {}
    if method == "rel-mahalanobis":
        details["features_from"] = f"{len(train_paths)} training images"
    if method == "probe":
        scenes, others = probe.learnt_from
        details["trained_on"] = (f"{scenes} training images against {others} images of "
                                 f"{len(negatives)} photos that are not scenes, each as "
                                 f"given and shrunk to {SHRUNK_SIZE} px")
        details["layers"] = list(probe.layers)
    return details


def _checked_details(sep: ood.Separation | None, checked_on: str) -> dict:
    """The rule's details on how it did on photos that are not scenes, if measured."""
    if sep is None:
        return {}
    return {"checked_on": {"set": checked_on or "photos that are not scenes",
                           "n": sep.n_others, "auroc": round(sep.auroc, 4),
                           "called_unknown": round(sep.others_rejected, 4)}}


def image_files(root: str | os.PathLike) -> list[str]:
    """Every image under `root`, sorted (a folder of photos that are not scenes)."""
    from scenetool.inputs.walk import walk

    return sorted(item.path for item in walk([str(root)], True) if item.error is None)


def trainable_files(root: str | os.PathLike) -> list[str]:
    """The images under `root` that may train a shipped model: all of them, unless
    `root` has a PROVENANCE.tsv (columns `file` and `license`; a `file` names an image by
    its path under `root`, perhaps behind more folders); then only the ones under an MIT
    or Apache-2.0 licence."""
    files = image_files(root)
    listing = Path(root) / PROVENANCE
    if not listing.is_file():
        return files
    with open(listing, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    allowed = {parts[i:] for row in rows if row.get("license") in TRAINABLE_LICENCES
               for parts in [Path(row["file"]).parts] for i in range(len(parts))}
    return [f for f in files if Path(os.path.relpath(f, root)).parts in allowed]


def write_figures(fitted: Fitted, true: np.ndarray, folder: Path, name: str) -> None:
    """unknown.json (the rule, its separation, the calibration), roc.png (when it was
    measured on photos that are not scenes) and calibration.png in `folder`."""
    import json

    from scenetool.fsutil import write_text

    folder.mkdir(parents=True, exist_ok=True)
    sep = fitted.separation
    report = {"rule": fitted.rule.to_json(),
              "separation": sep.as_dict() if sep is not None else None,
              "calibration": ood.calibration(fitted.val_probs, true),
              "accuracy": float(np.mean(fitted.val_probs.argmax(1) == true))}
    write_text(folder / "unknown.json", json.dumps(report, indent=2) + "\n")
    if sep is not None:
        draw_roc(fitted, folder / "roc.png", f"{name}: scene score")
    draw_calibration(fitted.val_probs, true, folder / "calibration.png",
                     f"{name}, validation split")


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


def scene_sections(probs: np.ndarray, true: np.ndarray, fitted: Fitted | None, card_dir: Path,
                   name: str) -> list[str]:
    """## Calibration (the validation split's top probability) and, for a fitted scene
    score, ## Not a scene: how its threshold was fitted, what it learnt from, and its ROC
    curve against photos that are not scenes (when it was measured on some)."""
    cal_png = draw_calibration(probs, true, card_dir / "calibration.png",
                               f"{name}, validation split")
    ece = ood.calibration(probs, true)["ece"]
    lines = ["## Calibration", "",
             (f"Reliability of the top probability on the validation split: expected "
              f"calibration error {ece:.3f}."), "", f"![calibration]({cal_png.name})", ""]
    if fitted is None:
        return lines
    rule = fitted.rule
    lines += [
        "## Not a scene", "",
        (f"The graph's second output, `scene_score` ({rule.details.get('method')}), is high "
         f"for photos like the training scenes. Below {rule.threshold:.4g} the tool labels a "
         f"photo `unknown` (\"unknown: not a scene\"). The threshold keeps "
         f"{rule.details.get('scenes_kept', 0):.1%} of the validation split's scene photos "
         f"(target {rule.details.get('keep', 0):.0%}); it was fitted on those only."), "",
    ]
    if "trained_on" in rule.details:
        lines += [(f"The score is a logistic regression over the pooled activations of the "
                   f"network's last layers ({', '.join(f'`{x}`' for x in rule.details['layers'])}"
                   f"), trained on {rule.details['trained_on']}: outlier exposure on the "
                   "frozen network."), ""]
    sep = fitted.separation
    if sep is not None:
        roc_png = draw_roc(fitted, card_dir / "roc.png", f"{name}: scene score")
        lines += [(f"Against {sep.n_others} photos that are not scenes, none of them learnt "
                   f"from: AUROC **{sep.auroc:.3f}**, **{sep.others_rejected:.1%}** called "
                   f"unknown at the threshold."), "", f"![ROC curve]({roc_png.name})", ""]
    return lines


def splice_sections(card: str, lines: list[str], before: str = "## Model file") -> str:
    """`card` with its ## sections that `lines` also has replaced by those of `lines`;
    sections new to it go in before the `before` heading (or at the end)."""
    new = "\n".join(lines).rstrip() + "\n\n"
    titles = re.findall(r"^## .+$", new, flags=re.M)
    for title in titles:
        card = re.sub(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", "", card, flags=re.M | re.S)
    at = card.find(f"\n{before}\n")
    if at < 0:
        return card.rstrip() + "\n\n" + new.rstrip() + "\n"
    return card[:at + 1] + new + card[at + 1:]
