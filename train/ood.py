"""The "not a scene" score: graph surgery that adds it to an exported model, and its figures.

A scenetool ONNX file ends in `Softmax -> probs`. Its input is the logits, and the logits
are `MatMul(features, W) + b` over the pooled features, so both are recoverable exactly
from any exported file, including one whose Keras checkpoint is gone. `add_score` appends
a few nodes that compute a per-image **scene score** (higher: more like the training
scenes) and expose it as a second graph output beside `probs`; `scenetool.metadata`
names the output and the threshold below which the runtime says `unknown`.

Three scores are built here:

- `energy`: T * logsumexp(logits / T), the free energy of the logits (Liu et al. 2020).
- `rel-mahalanobis`: the relative Mahalanobis distance of the L2-normalised pooled
  features (Ren et al. 2021): the smallest distance to a class mean (shared covariance)
  minus the distance to the mean of all training features, negated. The class means and
  precision matrices are fitted on training images and stored as graph constants.
- `probe`: outlier exposure on the frozen network (Hendrycks et al. 2019): a logistic
  regression, scenes against photos that are not scenes, over the L2-normalised, globally
  averaged activations of the network's last layers (`probe_layers`). Its weights are
  graph constants; its input is what the network already computes, so it costs a few
  pooling and dot products per image.

The threshold is fitted on scene photos only (the validation split): the lowest score
that keeps `keep` (95%) of them. Photos that are not scenes never set the threshold; they
measure it (AUROC, rejection rate), and for `probe` some of them (never the measured ones)
train the regression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scenetool.metadata import SCORE_OUTPUT

OUTPUT_NAME = "probs"
METHODS = ("energy", "rel-mahalanobis", "probe")
PROBE_LAYERS = 3


class SurgeryError(Exception):
    """The graph does not end in the layers the score is built on."""


@dataclass(frozen=True)
class Heads:
    """Tensor names in an exported graph: the logits (Softmax input) and the pooled
    features (the classifier MatMul's input)."""

    logits: str
    features: str
    feature_dim: int


def _producers(graph) -> dict:
    return {out: node for node in graph.node for out in node.output}


def find_heads(proto) -> Heads:
    """The logits and feature tensors of a graph that ends `MatMul -> Add -> Softmax -> probs`."""
    graph = proto.graph
    made_by = _producers(graph)
    softmax = made_by.get(OUTPUT_NAME)
    if softmax is None or softmax.op_type != "Softmax":
        raise SurgeryError(f"the output {OUTPUT_NAME!r} is not made by a Softmax node")
    logits = softmax.input[0]
    node = made_by.get(logits)
    if node is not None and node.op_type == "Add":
        node = made_by.get(node.input[0])
    if node is None or node.op_type not in ("MatMul", "Gemm"):
        raise SurgeryError("the logits are not a MatMul (+ bias) of pooled features")
    weights = {t.name: t for t in graph.initializer}
    if node.input[1] not in weights:
        raise SurgeryError("the classifier's weights are not a constant of the graph")
    return Heads(logits, node.input[0], int(weights[node.input[1]].dims[0]))


def with_outputs(proto, names: Sequence[str]):
    """A copy of the model that also outputs the tensors `names` (float32, any shape)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    have = {o.name for o in out.graph.output}
    for name in names:
        if name not in have:
            out.graph.output.append(
                onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return out


# -- the scores, in NumPy (fitting and measuring) and as ONNX nodes (shipping) ------------

def logsumexp(z: np.ndarray) -> np.ndarray:
    top = z.max(axis=1, keepdims=True)
    return np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]


def energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """T * logsumexp(logits / T): high for inputs like the training data."""
    return temperature * logsumexp(np.asarray(logits, np.float64) / temperature)


@dataclass(frozen=True)
class Gaussians:
    """Class means and a shared precision, plus one Gaussian for all training features
    (the "background"), over L2-normalised features."""

    means: np.ndarray  # (classes, dim)
    precision: np.ndarray  # (dim, dim)
    mean0: np.ndarray  # (dim,)
    precision0: np.ndarray  # (dim, dim)

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, ridge: float = 1e-6) -> Gaussians:
        x = _normalise(np.asarray(features, np.float64))
        labels = np.asarray(labels)
        classes = np.unique(labels)
        if len(classes) < 2:
            raise ValueError("fitting the class Gaussians needs images of two classes or more")
        means = np.stack([x[labels == c].mean(axis=0) for c in range(labels.max() + 1)])
        centred = x - means[labels]
        mean0 = x.mean(axis=0)
        eye = np.eye(x.shape[1])
        precision = np.linalg.pinv(centred.T @ centred / len(x) + ridge * eye)
        precision0 = np.linalg.pinv((x - mean0).T @ (x - mean0) / len(x) + ridge * eye)
        return cls(means, precision, mean0, precision0)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Minus the relative Mahalanobis distance: high for scene-like features."""
        x = _normalise(np.asarray(features, np.float64))
        diff = x[:, None, :] - self.means[None]  # (n, classes, dim)
        d_class = np.einsum("ncd,de,nce->nc", diff, self.precision, diff).min(axis=1)
        d0 = x - self.mean0
        d_all = np.einsum("nd,de,ne->n", d0, self.precision0, d0)
        return -(d_class - d_all)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def probe_layers(proto, count: int = PROBE_LAYERS) -> list[str]:
    """The 4-D activations the probe reads: the one the global pooling averages, after
    the outputs of up to `count - 1` residual additions before it (the last blocks)."""
    find_heads(proto)  # the graph ends in the head every score is built on
    nodes = list(proto.graph.node)
    pooling = [i for i, n in enumerate(nodes) if n.op_type == "GlobalAveragePool"]
    if len(pooling) != 1:
        raise SurgeryError("the probe needs a graph with exactly one GlobalAveragePool")
    end = pooling[0]
    last = nodes[end].input[0]
    first_conv = next((i for i, n in enumerate(nodes) if n.op_type == "Conv"), end)
    adds = [n.output[0] for n in nodes[first_conv:end]
            if n.op_type == "Add" and n.output[0] != last]
    return [*adds[max(len(adds) - (count - 1), 0):], last]


@dataclass(frozen=True)
class Probe:
    """A logistic regression over pooled activations: high for scenes, low for others."""

    layers: tuple[str, ...]
    weights: tuple[np.ndarray, ...]  # one (channels,) vector per layer
    bias: float
    learnt_from: tuple[int, int] = (0, 0)  # (scenes, photos that are not scenes)

    @staticmethod
    def inputs(pooled: Sequence[np.ndarray]) -> np.ndarray:
        """The regression's input: each layer's pooled (n, channels) activations,
        L2-normalised, side by side."""
        return np.concatenate([_normalise(np.asarray(p, np.float64).reshape(len(p), -1))
                               for p in pooled], axis=1)

    @classmethod
    def fit(cls, layers: Sequence[str], scenes: Sequence[np.ndarray],
            others: Sequence[np.ndarray], c: float = 10.0) -> Probe:
        """Fit on the pooled activations of scene photos and of photos that are not
        scenes (one array per layer each), the two classes weighted equally."""
        from sklearn.linear_model import LogisticRegression

        if not len(scenes[0]) or not len(others[0]):
            raise ValueError("the probe needs photos of scenes and photos that are not scenes")
        x_in, x_out = cls.inputs(scenes), cls.inputs(others)
        reg = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
        reg.fit(np.concatenate([x_in, x_out]), np.r_[np.ones(len(x_in)), np.zeros(len(x_out))])
        sizes = np.cumsum([np.asarray(p).reshape(len(p), -1).shape[1] for p in scenes])[:-1]
        return cls(tuple(layers), tuple(np.split(reg.coef_[0], sizes)),
                   float(reg.intercept_[0]), (len(x_in), len(x_out)))

    def score(self, pooled: Sequence[np.ndarray]) -> np.ndarray:
        return self.inputs(pooled) @ np.concatenate(self.weights) + self.bias


def _const(name: str, value) -> object:
    import onnx

    return onnx.numpy_helper.from_array(np.asarray(value, np.float32), name)


def _normalise_nodes(features: str, prefix: str, eps: str) -> list:
    """`_normalise` as nodes: prefix + "x" = features / max(||features||, eps), per row."""
    from onnx import helper

    return [
        helper.make_node("ReduceL2", [features], [prefix + "norm"], axes=[1], keepdims=1),
        helper.make_node("Max", [prefix + "norm", eps], [prefix + "norm_safe"]),
        helper.make_node("Div", [features, prefix + "norm_safe"], [prefix + "x"]),
    ]


def _probe_nodes(probe: Probe, p: str) -> tuple[list, list]:
    """Nodes and constants computing `probe.score` into SCORE_OUTPUT."""
    from onnx import helper

    nodes, consts, terms = [], [_const(p + "eps", 1e-12), _const(p + "bias", [probe.bias])], []
    for i, (layer, weights) in enumerate(zip(probe.layers, probe.weights, strict=True)):
        q = f"{p}{i}/"
        consts.append(_const(q + "w", weights[:, None]))
        nodes += [
            helper.make_node("GlobalAveragePool", [layer], [q + "pooled"]),
            helper.make_node("Flatten", [q + "pooled"], [q + "flat"], axis=1),
            *_normalise_nodes(q + "flat", q, p + "eps"),
            helper.make_node("MatMul", [q + "x", q + "w"], [q + "term"]),
        ]
        terms.append(q + "term")
    nodes += [helper.make_node("Sum", terms, [p + "sum"]),
              helper.make_node("Add", [p + "sum", p + "bias"], [p + "logit"]),
              helper.make_node("Squeeze", [p + "logit", p + "axis1"], [SCORE_OUTPUT])]
    consts.append(_int64s(p + "axis1", [1]))
    return nodes, consts


def _int64s(name: str, values: Sequence[int]) -> object:
    import onnx

    return onnx.numpy_helper.from_array(np.asarray(values, np.int64), name)


def _energy_nodes(logits: str, temperature: float, p: str) -> tuple[list, list]:
    """Nodes and constants computing `energy` of `logits` into SCORE_OUTPUT."""
    from onnx import helper

    consts = [_const(p + "T", temperature)]
    nodes = [
        helper.make_node("Div", [logits, p + "T"], [p + "scaled"]),
        helper.make_node("ReduceLogSumExp", [p + "scaled"], [p + "lse"], axes=[1],
                         keepdims=0),
        helper.make_node("Mul", [p + "lse", p + "T"], [SCORE_OUTPUT]),
    ]
    return nodes, consts


def _mahalanobis_nodes(features: str, g: Gaussians, p: str) -> tuple[list, list]:
    """Nodes and constants computing `g.score` of `features` into SCORE_OUTPUT."""
    from onnx import helper

    consts = [_const(p + "means", g.means[None]), _const(p + "precision", g.precision),
              _const(p + "mean0", g.mean0[None]), _const(p + "precision0", g.precision0),
              _const(p + "eps", 1e-12), _const(p + "minus1", -1.0)]
    nodes = [
        *_normalise_nodes(features, p, p + "eps"),
        # distance to each class mean: (x - mu_c) P (x - mu_c), for all c at once
        helper.make_node("Unsqueeze", [p + "x", p + "axis1"], [p + "x3"]),
        helper.make_node("Sub", [p + "x3", p + "means"], [p + "diff"]),
        helper.make_node("MatMul", [p + "diff", p + "precision"], [p + "diffP"]),
        helper.make_node("Mul", [p + "diffP", p + "diff"], [p + "sq"]),
        helper.make_node("ReduceSum", [p + "sq", p + "axis2"], [p + "d_class"], keepdims=0),
        helper.make_node("ReduceMin", [p + "d_class"], [p + "d_min"], axes=[1],
                         keepdims=0),
        # distance to the mean of all training features
        helper.make_node("Sub", [p + "x", p + "mean0"], [p + "diff0"]),
        helper.make_node("MatMul", [p + "diff0", p + "precision0"], [p + "diff0P"]),
        helper.make_node("Mul", [p + "diff0P", p + "diff0"], [p + "sq0"]),
        helper.make_node("ReduceSum", [p + "sq0", p + "axis1"], [p + "d_all"], keepdims=0),
        helper.make_node("Sub", [p + "d_min", p + "d_all"], [p + "relative"]),
        helper.make_node("Mul", [p + "relative", p + "minus1"], [SCORE_OUTPUT]),
    ]
    consts += [_int64s(p + "axis1", [1]), _int64s(p + "axis2", [2])]
    return nodes, consts


def _score_nodes(method: str, heads: Heads, p: str, temperature: float,
                 gaussians: Gaussians | None, probe: Probe | None) -> tuple[list, list]:
    """Nodes and constants computing `method`'s score into SCORE_OUTPUT; ValueError when
    what it was fitted on is missing."""
    if method == "energy":
        return _energy_nodes(heads.logits, temperature, p)
    if method == "probe":
        if probe is None:
            raise ValueError("the probe score needs the fitted probe")
        return _probe_nodes(probe, p)
    if gaussians is None:
        raise ValueError("rel-mahalanobis needs the fitted class Gaussians")
    return _mahalanobis_nodes(heads.features, gaussians, p)


def _score_value(proto) -> object:
    """The graph output `scene_score`: float32, one per image of `proto`'s batch."""
    import onnx
    from onnx import helper

    batch = proto.graph.output[0].type.tensor_type.shape.dim[0]
    value = helper.make_tensor_value_info(SCORE_OUTPUT, onnx.TensorProto.FLOAT, [None])
    value.type.tensor_type.shape.dim[0].CopyFrom(batch)
    return value


def add_score(proto, method: str, *, temperature: float = 1.0,
              gaussians: Gaussians | None = None, probe: Probe | None = None):
    """A copy of the model with a `scene_score` output ([batch] float32) beside `probs`."""
    import onnx

    if method not in METHODS:
        raise ValueError(f"unknown score method {method!r}; choose from {', '.join(METHODS)}")
    heads = find_heads(proto)
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    if any(o.name == SCORE_OUTPUT for o in graph.output):
        raise SurgeryError(f"the model already has a {SCORE_OUTPUT!r} output")
    nodes, consts = _score_nodes(method, heads, "scene_score/", temperature, gaussians, probe)
    graph.initializer.extend(consts)
    graph.node.extend(nodes)
    graph.output.append(_score_value(proto))
    return out


# -- measuring a score: ROC, threshold, calibration -----------------------------------------

def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse = np.unique(values, return_inverse=True)
    return (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]


def auroc(scenes: np.ndarray, others: np.ndarray) -> float:
    """P(score of a scene > score of a non-scene), ties counted half (Mann-Whitney U)."""
    scenes, others = np.asarray(scenes, float), np.asarray(others, float)
    if not len(scenes) or not len(others):
        raise ValueError("AUROC needs scores of both scenes and non-scenes")
    ranks = _ranks(np.concatenate([scenes, others]))
    u = ranks[: len(scenes)].sum() - len(scenes) * (len(scenes) + 1) / 2
    return float(u / (len(scenes) * len(others)))


def roc_curve(scenes: np.ndarray, others: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(share of non-scenes kept, share of scenes kept) at every threshold, from (0, 0)
    to (1, 1): the false- and true-positive rates with "scene" as the positive class."""
    thresholds = np.unique(np.concatenate([scenes, others]))[::-1]
    tpr = [(np.asarray(scenes) >= t).mean() for t in thresholds]
    fpr = [(np.asarray(others) >= t).mean() for t in thresholds]
    return np.asarray([0.0, *fpr, 1.0]), np.asarray([0.0, *tpr, 1.0])


def fit_threshold(scenes: np.ndarray, keep: float = 0.95) -> float:
    """The highest threshold that keeps at least `keep` of `scenes` (score >= threshold)."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], not {keep}")
    ordered = np.sort(np.asarray(scenes, float))
    if not len(ordered):
        raise ValueError("fitting a threshold needs scene scores")
    return float(ordered[int(np.floor((1 - keep) * len(ordered) + 1e-9))])


@dataclass(frozen=True)
class Separation:
    """How a score at its threshold separates scenes from non-scenes."""

    auroc: float
    threshold: float
    scenes_kept: float  # share of scene photos at or above the threshold
    others_rejected: float  # share of non-scene photos below it: called unknown
    n_scenes: int
    n_others: int

    def as_dict(self) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def separation(scenes: np.ndarray, others: np.ndarray, threshold: float) -> Separation:
    scenes, others = np.asarray(scenes, float), np.asarray(others, float)
    return Separation(auroc(scenes, others), float(threshold),
                      float((scenes >= threshold).mean()), float((others < threshold).mean()),
                      len(scenes), len(others))


def calibration(probs: np.ndarray, true: np.ndarray, bins: int = 10) -> dict:
    """Reliability of the top probability: per equal-width bin the mean confidence, the
    accuracy and the count, and the expected calibration error (ECE)."""
    probs, true = np.asarray(probs), np.asarray(true)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == true
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        members = which == b
        n = int(members.sum())
        if n:
            conf, acc = float(confidence[members].mean()), float(correct[members].mean())
            ece += n / len(true) * abs(acc - conf)
            rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": n,
                         "confidence": conf, "accuracy": acc})
    return {"bins": rows, "ece": float(ece)}
