"""`unknown` for photos that are not scenes: the model contract and the runtime.

The conftest colour model built with `unknown_threshold=14` outputs the energy of its
logits as a scene score: saturated red, green and blue photos score 15-17, grey ones 11.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import build_tiny_model, make_image

from scenetool.errors import MetadataError, ModelError
from scenetool.metadata import ModelMeta, UnknownRule
from scenetool.model import SceneModel

THRESHOLD = 14.0


@pytest.fixture
def scored_model(tmp_path):
    return build_tiny_model(tmp_path / "scored.onnx", unknown_threshold=THRESHOLD)


def _props(**unknown) -> dict[str, str]:
    props = ModelMeta(labels=("a", "b"), image_size=(8, 8)).to_props()
    props["unknown"] = json.dumps(unknown)
    return props


def test_unknown_rule_round_trips_through_the_metadata():
    rule = UnknownRule("scene_score", -3.5, {"method": "energy", "keep": 0.95})
    meta = ModelMeta(labels=("a", "b"), image_size=(8, 8), unknown=rule)
    back = ModelMeta.from_props(meta.to_props())
    assert back.unknown == rule
    assert "unknown" not in back.extra


def test_a_model_without_the_rule_has_none():
    assert ModelMeta.from_props(ModelMeta(labels=("a",), image_size=(8, 8)).to_props()).unknown \
        is None


@pytest.mark.parametrize("unknown, message", [
    ({"threshold": 1.0}, "unknown.output must name a graph output"),
    ({"output": "s", "threshold": "high"}, "unknown.threshold must be a finite number"),
    ({"output": "s", "threshold": float("nan")}, "unknown.threshold must be a finite number"),
    ({"output": "s", "threshold": True}, "unknown.threshold must be a finite number"),
])
def test_a_bad_rule_is_a_metadata_error(unknown, message):
    with pytest.raises(MetadataError, match=message):
        ModelMeta.from_props(_props(**unknown))


def test_predict_scored_returns_probabilities_and_scores(scored_model):
    model = SceneModel(scored_model)
    assert model.unknown_threshold == THRESHOLD
    x = np.zeros((2, 32, 32, 3), np.float32)
    x[0] = (220, 30, 30)
    x[1] = 128
    probs, scores = model.predict_scored(x)
    assert probs.shape == (2, 3) and np.allclose(probs, model.predict(x))
    assert scores.shape == (2,)
    assert scores[0] > THRESHOLD > scores[1]
    assert scores[1] == pytest.approx(128 * 20 / 255 + np.log(3), abs=1e-3)  # lse(z, z, z)


def test_a_model_without_the_score_predicts_no_scores(tiny_model):
    model = SceneModel(tiny_model)
    probs, scores = model.predict_scored(np.zeros((1, 32, 32, 3), np.float32))
    assert scores is None and model.unknown_threshold is None and probs.shape == (1, 3)


def test_a_rule_naming_a_missing_output_is_a_model_error(tmp_path):
    meta = ModelMeta(labels=("red", "green", "blue"), image_size=(32, 32),
                     unknown=UnknownRule("scene_score", 1.0))
    path = build_tiny_model(tmp_path / "liar.onnx", meta=meta)
    with pytest.raises(ModelError, match="reads the output 'scene_score', which the graph lacks"):
        SceneModel(path)


# -- scenetool evaluate: a list of files, and the share called unknown ------------------------

def _invoke(*args: str, env: dict | None = None):
    from click.testing import CliRunner

    from scenetool.cli import cli

    return CliRunner().invoke(cli, list(args), env=env)


def _labelled(root):
    for colour in ("red", "green", "blue"):
        for i in range(2):
            make_image(root / colour / f"{colour}{i}.jpg", colour)
    make_image(root / "red" / "grey.jpg", "grey")  # a red-labelled photo of nothing
    return root


def test_evaluate_scores_only_the_files_a_split_lists(tmp_path):
    root = _labelled(tmp_path / "data")
    split = tmp_path / "split.txt"
    split.write_text("# validation split: a header comment\nred/red0.jpg\n\nblue/blue1.jpg\n"
                     "red/grey.jpg\n")
    out = tmp_path / "scores.json"
    result = _invoke("evaluate", str(root), "--split", str(split), "--json", str(out))
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["n"] == 3 and scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["confusion"][0] == [1, 1, 0]  # grey's top label is green
    assert "unknown" not in scores  # the colour model has no scene score


def test_evaluate_split_names_a_missing_file_and_exits_1(tmp_path):
    root = _labelled(tmp_path / "data")
    split = tmp_path / "split.txt"
    split.write_text("red/red0.jpg\nred/gone.jpg\n")
    result = _invoke("evaluate", str(root), "--split", str(split))
    assert result.exit_code == 1
    assert "Accuracy 100.00% on 1 images" in result.stdout
    assert "gone.jpg: no such file or directory" in result.stderr


def test_evaluate_split_line_without_a_label_is_a_usage_error(tmp_path):
    root = _labelled(tmp_path / "data")
    split = tmp_path / "split.txt"
    split.write_text("red/red0.jpg\npurple/p.jpg\n")
    result = _invoke("evaluate", str(root), "--split", str(split))
    assert result.exit_code == 2
    assert (f"{split}, line 2: 'purple/p.jpg' is not <label>/<image> for a label of the "
            "model (red, green, blue)") in result.stderr


def test_evaluate_is_forced_choice_and_reports_the_unknown_share(tmp_path, scored_model):
    root = _labelled(tmp_path / "data")
    out = tmp_path / "scores.json"
    result = _invoke("evaluate", str(root), "--json", str(out), "--model", str(scored_model))
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    # grey counts as a (wrong) green, not as unknown: accuracy stays forced choice
    assert scores["n"] == 7 and scores["accuracy"] == pytest.approx(6 / 7)
    assert scores["unknown"] == {"threshold": THRESHOLD, "called_unknown": 1,
                                 "share": pytest.approx(1 / 7)}
    assert "called unknown (not a scene) at the model's threshold: 14.3% (1 of 7)" \
        in result.stdout


# -- classify, sort and the store with a model that says "not a scene" ------------------------

def _photos(root):
    for name, colour in (("red.jpg", "red"), ("blue.jpg", "blue"), ("grey.jpg", "grey")):
        make_image(root / name, colour)
    return root


def _labels(result) -> dict[str, str]:
    return {Path(r["path"]).name: r["label"] for r in csv.DictReader(io.StringIO(result.stdout))}


def test_classify_calls_photos_below_the_threshold_unknown(tmp_path, scored_model):
    photos = _photos(tmp_path / "photos")
    result = _invoke("classify", str(photos), "--model", str(scored_model), "--csv", "-")
    assert result.exit_code == 0, result.output
    assert _labels(result) == {"red.jpg": "red", "blue.jpg": "blue", "grey.jpg": "unknown"}
    table = _invoke("classify", str(photos), "--model", str(scored_model), "--force")
    line = next(x for x in table.stdout.splitlines() if "grey.jpg" in x)
    # the closest scene is named, with the confidence the table shows
    assert line.split()[1:] == ["unknown", "71.2%", "unknown:", "not", "a", "scene;", "green",
                                "71.2%"], line
    assert not any("not a scene" in x for x in table.stdout.splitlines() if "red.jpg" in x)
    summary = next(x for x in table.stdout.splitlines() if x.strip().startswith("unknown"))
    assert summary.split()[:2] == ["unknown", "1"]


def test_no_unknown_forces_a_scene_label_and_min_confidence_still_applies(tmp_path,
                                                                           scored_model):
    photos = _photos(tmp_path / "photos")
    forced = _invoke("classify", str(photos), "--model", str(scored_model), "--csv", "-",
                     "--no-unknown")
    assert _labels(forced) == {"red.jpg": "red", "blue.jpg": "blue", "grey.jpg": "green"}
    strict = _invoke("classify", str(photos), "--model", str(scored_model), "--csv", "-",
                     "--force", "--min-confidence", "1.0")
    assert set(_labels(strict).values()) == {"unknown"}


def test_a_stored_result_is_labelled_by_the_new_run_s_settings(tmp_path, scored_model):
    """The store keeps the scene score, so a reused result follows --no-unknown."""
    photos = _photos(tmp_path / "photos")
    first = _invoke("classify", str(photos), "--model", str(scored_model), "--csv", "-")
    assert _labels(first)["grey.jpg"] == "unknown"
    again = _invoke("classify", str(photos), "--model", str(scored_model), "--json", "-",
                    "--no-unknown")
    rows = {Path(r["path"]).name: r for r in map(json.loads, again.stdout.splitlines())}
    assert rows["grey.jpg"]["label"] == "green"
    back = _invoke("classify", str(photos), "--model", str(scored_model), "--csv", "-")
    assert _labels(back)["grey.jpg"] == "unknown"
    for run in (again, back):
        assert "0 classified, 3 already in the store" in run.stderr


def test_sort_puts_what_is_not_a_scene_under_unknown(tmp_path, scored_model):
    photos = _photos(tmp_path / "photos")
    dest = tmp_path / "sorted"
    result = _invoke("sort", str(photos), str(dest), "--model", str(scored_model))
    assert result.exit_code == 0, result.output
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*.jpg")) == [
        "blue/blue.jpg", "red/red.jpg", "unknown/grey.jpg"]
    forced = tmp_path / "forced"
    assert _invoke("sort", str(photos), str(forced), "--model", str(scored_model),
                   "--no-unknown").exit_code == 0
    assert (forced / "green" / "grey.jpg").is_file()
