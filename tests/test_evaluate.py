"""`evaluate`: the scores' arithmetic, and what counts as a class folder."""

from __future__ import annotations

import json

import pytest
from conftest import invoke, make_image

from scenetool.evaluate import score


def test_per_class_scores_are_exact_and_zero_where_undefined():
    """red: 2 of 3 right, one taken for green; green: predicted 3 times, right once;
    blue: never seen and never predicted (nothing to divide by: all 0.0)."""
    pairs = [("red", "red"), ("red", "red"), ("red", "green"),
             ("green", "green"), ("green", "red"), ("sea", "green")]
    scores = score(["red", "green", "blue", "sea"], pairs)
    assert scores.n == 6 and scores.accuracy == pytest.approx(3 / 6)
    per = scores.per_class()
    assert per["red"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert per["green"] == pytest.approx(
        {"precision": 1 / 3, "recall": 1 / 2, "f1": 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2),
         "support": 2})
    assert per["blue"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert per["sea"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert scores.as_dict()["confusion"] == [[2, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0],
                                             [0, 1, 0, 0]]
    assert score(["red"], []).accuracy == 0.0


def test_class_folders_are_the_visible_subfolders_searched_to_the_bottom(tmp_path):
    """Files beside the class folders and hidden folders (.thumbnails) are not classes;
    a class folder's own subfolders are part of it."""
    root = tmp_path / "test"
    make_image(root / "red" / "r.jpg", "red")
    make_image(root / "red" / "2023" / "summer" / "r2.jpg", "red")
    make_image(root / "blue" / "b.jpg", "blue")
    make_image(root / ".thumbnails" / "t.jpg", "green")
    (root / "README.txt").write_text("labelled test set")
    out = tmp_path / "scores.json"
    result = invoke("evaluate", root, "--json", out)
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    assert scores["n"] == 3 and scores["accuracy"] == 1.0
    assert scores["confusion"] == [[2, 0, 0], [0, 0, 0], [0, 0, 1]]


def test_a_folder_without_class_folders_says_what_it_expected(tmp_path):
    make_image(tmp_path / "flat" / "r.jpg", "red")
    result = invoke("evaluate", tmp_path / "flat")
    assert result.exit_code == 2
    flat = tmp_path / "flat"
    assert result.stderr == (f"Error: {flat} has no class subfolders; expected "
                             f"{flat}/<label>/<image>\n")
