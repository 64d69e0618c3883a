"""The benchmark's smoke run: `python -m bench --quick` on a tiny folder with the tiny model.

It checks that every case runs and lands in the JSON, not any figure (timings are for
`make bench`, not for tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_image, python_env

from bench import photos, previous
from bench.measure import BenchError
from scenetool.model import open_model

CASES = {
    "ceiling", "ceiling_previous", "decode", "end_to_end", "naive", "phone_end_to_end",
    "phone_naive",
    "memory_1x", "memory_5x", "startup_version", "startup_info", "startup_classify_one",
    "phone_heic_jpeg", "phone_heic", "phone_heic_full",
    "local_5x", "ray_5x",
}
TARGETS = {"end_to_end_vs_ceiling", "phone_end_to_end_vs_naive", "memory_5x_vs_1x",
           "memory_5x", "startup_version", "startup_classify_one", "ray_vs_local_5x",
           "ceiling_vs_previous"}


def python(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=python_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_quick_bench_measures_every_case(tmp_path, tiny_model):
    folder = tmp_path / "photos"
    for i in range(12):
        make_image(folder / f"{i:02d}.jpg", ("red", "green", "blue")[i % 3])
    out, cache = tmp_path / "results.json", tmp_path / "cache"
    result = python("-m", "bench", "--quick", "--model", str(tiny_model), "--photos",
                    str(folder), "--cache", str(cache), "--phone-count", "2", "--heic-count", "1",
                    "--previous", str(tiny_model), "--out", str(out), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ceiling" in result.stdout and "written to" in result.stdout

    doc = json.loads(out.read_text())
    assert set(doc["cases"]) == CASES
    for name, case in doc["cases"].items():
        assert case["error"] is None, f"{name}: {case['error']}"
        assert case["median"] > 0 and len(case["repeats"]) == 1, name
    assert doc["cases"]["end_to_end"]["images"] == 12
    assert doc["cases"]["memory_5x"]["images"] == 60
    assert doc["cases"]["phone_heic"]["images"] == 1
    assert [len(list(cache.glob(f"phone-2-*-heic-*-{kind}-1/*.heic"))) for kind in (
        "thumb320", "nothumb")] == [1, 1]
    assert doc["cases"]["ray_5x"]["images"] == doc["cases"]["local_5x"]["images"] == 60
    assert doc["cases"]["ceiling_previous"]["images"] == doc["cases"]["ceiling"]["images"] == 12
    assert doc["figures"]["ceiling_vs_previous"] > 0
    assert doc["settings"]["previous_model"] == str(tiny_model)
    assert {t["figure"] for t in doc["targets"]} == TARGETS
    assert all(isinstance(t["passed"], bool) for t in doc["targets"])
    machine = doc["machine"]
    assert machine["cores"] >= 1 and set(machine["versions"]) >= {
        "python", "onnxruntime", "numpy", "pillow"}

    # The phone photos are cached: asking again returns the same files, not new ones.
    made = sorted(cache.glob("phone-2-*/*.jpg"))
    assert len(made) == 2
    stamps = [p.stat().st_mtime_ns for p in made]
    again = photos.phone_photos(photos.list_photos(folder), 2, cache)
    assert sorted(map(Path, again)) == made
    assert [p.stat().st_mtime_ns for p in made] == stamps


def test_bench_imports_no_tensorflow():
    code = ("import sys, bench.run\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules))")
    result = python("-c", code, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_generated_photos_and_link_trees(tmp_path):
    files = photos.generate_photos(tmp_path / "generated", count=4)
    assert photos.list_photos(tmp_path / "generated") == files
    tree = photos.link_tree(files, tmp_path / "x3", copies=3)
    linked = photos.list_photos(tree)
    assert len(linked) == 12
    assert {os.stat(p).st_ino for p in linked} == {os.stat(p).st_ino for p in files}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c",
                           "user.email=t@example.com", *args],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_the_previous_model_is_read_from_a_revision_not_the_work_tree(tmp_path):
    repo = tmp_path / "repo"
    model = repo / previous.MODEL_IN_REPO
    model.parent.mkdir(parents=True)
    git(repo.parent, "init", "-q", str(repo))
    model.write_bytes(b"old model")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "old")
    old = git(repo, "rev-parse", "HEAD")
    model.write_bytes(b"new model")
    git(repo, "commit", "-q", "-am", "new")

    fetched = previous.fetch(old, tmp_path / "previous.onnx", repo)
    assert fetched == tmp_path / "previous.onnx"
    assert fetched.read_bytes() == b"old model"
    assert model.read_bytes() == b"new model"


def test_a_previous_model_given_as_a_file_is_used_as_it_is(tmp_path, tiny_model):
    assert previous.fetch(str(tiny_model), tmp_path / "unused.onnx") == tiny_model
    assert not (tmp_path / "unused.onnx").exists()


def test_a_revision_git_does_not_have_says_how_to_give_the_model(tmp_path):
    git(tmp_path, "init", "-q")
    with pytest.raises(BenchError, match=r"from git history .*; give --previous FILE$"):
        previous.fetch("0" * 40, tmp_path / "previous.onnx", tmp_path)


def test_the_default_previous_model_is_the_one_issue_10_replaced(tmp_path):
    """`make bench` from a clone compares against the 92.40% model without any file kept."""
    known = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e",
                            f"{previous.PREVIOUS_REV}^{{commit}}"], capture_output=True)
    if known.returncode != 0:
        pytest.skip("this checkout has no git history to read the previous model from")
    model = open_model(previous.fetch(previous.PREVIOUS_REV, tmp_path / "previous.onnx"))
    assert model.meta.extra["arch"] == "scenenet" and model.meta.image_size == (172, 172)
    assert model.meta.extra["val_accuracy"] == pytest.approx(0.9236, abs=1e-4)
