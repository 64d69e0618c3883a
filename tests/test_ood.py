"""The "not a scene" score on the training side: graph surgery, fitting and its figures.

The surgery is checked on the conftest colour model (image -> mean colour -> MatMul ->
Softmax), whose logits and features are known: the score onnxruntime computes must equal
the NumPy definition of the same score.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_tiny_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from train import ood  # noqa: E402 - after the skips: needs onnx


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, 32, 32, 3)).astype(np.float32)


def _run(proto, names, x):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(names, {"image": x})


@pytest.fixture
def colour_proto(tmp_path):
    return onnx.load(build_tiny_model(tmp_path / "m.onnx"))


def test_find_heads_names_the_logits_and_features(colour_proto):
    heads = ood.find_heads(colour_proto)
    assert (heads.logits, heads.features, heads.feature_dim) == ("logits", "mean", 3)


def test_find_heads_refuses_a_graph_without_softmax(colour_proto):
    colour_proto.graph.node[-1].op_type = "Sigmoid"
    with pytest.raises(ood.SurgeryError, match="not made by a Softmax"):
        ood.find_heads(colour_proto)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_energy_output_equals_numpy_energy(colour_proto, temperature):
    scored = ood.add_score(colour_proto, "energy", temperature=temperature)
    onnx.checker.check_model(scored, full_check=True)
    x = _images(5)
    probs, score, logits = _run(ood.with_outputs(scored, ["logits"]),
                                ["probs", "scene_score", "logits"], x)
    assert score.shape == (5,)
    assert np.allclose(score, ood.energy(logits, temperature), atol=1e-4)
    # the probabilities are untouched by the surgery
    assert np.allclose(probs, _run(colour_proto, ["probs"], x)[0])


def test_relative_mahalanobis_output_equals_numpy(colour_proto):
    rng = np.random.default_rng(1)
    features = np.concatenate([rng.normal(m, 5, (40, 3)) for m in (50, 120, 200)])
    features[:, 0] += np.repeat([0, 60, -30], 40)
    labels = np.repeat([0, 1, 2], 40)
    gaussians = ood.Gaussians.fit(features, labels)
    scored = ood.add_score(colour_proto, "rel-mahalanobis", gaussians=gaussians)
    onnx.checker.check_model(scored, full_check=True)
    x = _images(6, seed=2)
    score, mean = _run(ood.with_outputs(scored, ["mean"]), ["scene_score", "mean"], x)
    assert np.allclose(score, gaussians.score(mean), rtol=1e-3, atol=1e-3)


def test_relative_mahalanobis_ranks_training_like_features_higher():
    rng = np.random.default_rng(3)
    centres = np.array([[5.0, 0, 0, 1], [0, 5.0, 0, 1], [0, 0, 5.0, 1]])
    train = np.concatenate([c + rng.normal(0, 0.3, (50, 4)) for c in centres])
    gaussians = ood.Gaussians.fit(train, np.repeat([0, 1, 2], 50))
    inside = np.concatenate([c + rng.normal(0, 0.3, (10, 4)) for c in centres])
    outside = rng.normal(0, 0.3, (30, 4)) + np.array([0, 0, 0, 5.0])
    assert ood.auroc(gaussians.score(inside), gaussians.score(outside)) > 0.99


def test_add_score_twice_is_refused(colour_proto):
    scored = ood.add_score(colour_proto, "energy")
    with pytest.raises(ood.SurgeryError, match="already has"):
        ood.add_score(scored, "energy")


def test_auroc_counts_pairs_and_ties():
    assert ood.auroc([3, 4], [1, 2]) == 1.0
    assert ood.auroc([1, 2], [3, 4]) == 0.0
    assert ood.auroc([1, 1], [1, 1]) == 0.5
    # 2 of the 4 pairs ordered right, one tied: (2 + 0.5) / 4
    assert ood.auroc([2, 5], [2, 6]) == pytest.approx(0.375)


def test_fit_threshold_keeps_the_asked_share():
    scenes = np.arange(100, dtype=float)
    threshold = ood.fit_threshold(scenes, keep=0.95)
    assert threshold == 5.0
    assert np.mean(scenes >= threshold) == 0.95
    # with 7 scores, keeping 95% means keeping all 7
    assert ood.fit_threshold(np.arange(7.0), 0.95) == 0.0


def test_separation_reports_kept_and_rejected_shares():
    sep = ood.separation(np.array([5.0, 6, 7, 8]), np.array([1.0, 2, 6.5]), threshold=6.0)
    assert (sep.scenes_kept, sep.others_rejected) == (0.75, pytest.approx(2 / 3))
    assert sep.n_scenes == 4 and sep.n_others == 3


def test_roc_curve_runs_from_origin_to_corner():
    fpr, tpr = ood.roc_curve(np.array([3.0, 4.0]), np.array([1.0, 3.5]))
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_calibration_bins_and_ece():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    true = np.array([0, 1, 0, 0])
    cal = ood.calibration(probs, true, bins=10)
    assert [(b["n"], b["accuracy"]) for b in cal["bins"]] == [(2, 1.0), (2, 0.5)]
    # |1.0 - 0.6| * 2/4 + |0.5 - 0.9| * 2/4
    assert cal["ece"] == pytest.approx(0.4)


def _residual_proto():
    """A small residual CNN in the shape tf2onnx exports scenenet: NHWC image, transposed
    to NCHW, a stem conv, two residual blocks, global average pooling, MatMul + bias,
    Softmax. Random weights: the probe only needs activations to read."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(7)

    def const(name, shape):
        return onnx.numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "k0"], ["c0"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"])]
    inits = [const("k0", (4, 3, 3, 3))]
    for i in (1, 2):
        nodes += [helper.make_node("Conv", [f"r{i - 1}", f"k{i}"], [f"c{i}"],
                                   kernel_shape=[3, 3], pads=[1] * 4),
                  helper.make_node("Add", [f"c{i}", f"r{i - 1}"], [f"block{i}"]),
                  helper.make_node("Relu", [f"block{i}"], [f"r{i}"])]
        inits.append(const(f"k{i}", (4, 4, 3, 3)))
    nodes += [helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
              helper.make_node("Flatten", ["gap"], ["pooled"], axis=1),
              helper.make_node("MatMul", ["pooled", "w"], ["mm"]),
              helper.make_node("Add", ["mm", "b"], ["logits"]),
              helper.make_node("Softmax", ["logits"], ["probs"], axis=-1)]
    inits += [const("w", (4, 3)), const("b", (3,))]
    graph = helper.make_graph(
        nodes, "residual",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 32, 32, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_probe_layers_are_the_pooled_activation_and_the_blocks_before_it():
    proto = _residual_proto()
    assert ood.probe_layers(proto) == ["block1", "block2", "r2"]
    assert ood.probe_layers(proto, count=2) == ["block2", "r2"]
    assert ood.probe_layers(proto, count=5) == ["block1", "block2", "r2"]


def test_probe_layers_refuse_a_graph_without_global_pooling(colour_proto):
    with pytest.raises(ood.SurgeryError, match="exactly one GlobalAveragePool"):
        ood.probe_layers(colour_proto)


def test_probe_output_equals_numpy_probe():
    proto = _residual_proto()
    layers = ood.probe_layers(proto)
    x = _images(40, seed=4)
    bright = np.clip(x * 0.3 + 170, 0, 255).astype(np.float32)

    def pooled(images):
        acts = _run(ood.with_outputs(proto, layers), layers, images)
        return [a.mean(axis=(2, 3)) for a in acts]

    probe = ood.Probe.fit(layers, pooled(bright), pooled(x))
    assert [w.shape for w in probe.weights] == [(4,), (4,), (4,)]
    scored = ood.add_score(proto, "probe", probe=probe)
    onnx.checker.check_model(scored, full_check=True)
    test = _images(6, seed=5)
    probs, score = _run(scored, ["probs", "scene_score"], test)
    assert score.shape == (6,)
    assert np.allclose(score, probe.score(pooled(test)), rtol=1e-4, atol=1e-4)
    assert np.allclose(probs, _run(proto, ["probs"], test)[0])


def test_probe_learns_which_side_is_a_scene():
    rng = np.random.default_rng(6)
    scenes = [rng.normal(0, 1, (80, 5)) + [4, 0, 0, 0, 0], rng.normal(0, 1, (80, 3)) + 3]
    others = [rng.normal(0, 1, (40, 5)) + [0, 4, 0, 0, 0], rng.normal(0, 1, (40, 3)) - 3]
    probe = ood.Probe.fit(["a", "b"], scenes, others)
    assert [w.shape for w in probe.weights] == [(5,), (3,)]
    new_scenes = [rng.normal(0, 1, (20, 5)) + [4, 0, 0, 0, 0], rng.normal(0, 1, (20, 3)) + 3]
    new_others = [rng.normal(0, 1, (20, 5)) + [0, 4, 0, 0, 0], rng.normal(0, 1, (20, 3)) - 3]
    assert ood.auroc(probe.score(new_scenes), probe.score(new_others)) > 0.99


def test_probe_without_photos_that_are_not_scenes_is_refused():
    with pytest.raises(ValueError, match="photos that are not scenes"):
        ood.Probe.fit(["a"], [np.ones((3, 2))], [np.ones((0, 2))])
    with pytest.raises(ValueError, match="needs the fitted probe"):
        ood.add_score(_residual_proto(), "probe")


def test_shrunk_copies_are_square_150px_jpegs_and_skip_what_cannot_be_read(tmp_path):
    from PIL import Image

    from train.unknown import shrunk_copies

    wide = tmp_path / "wide.png"
    Image.fromarray(np.full((300, 500, 3), 90, np.uint8)).save(wide)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    out = tmp_path / "out"
    out.mkdir()
    (copy,) = shrunk_copies([str(wide), str(bad)], out)
    with Image.open(copy) as image:
        assert (image.format, image.size) == ("JPEG", (150, 150))
