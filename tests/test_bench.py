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

from conftest import ROOT, make_image, python_env

from bench import photos

CASES = {
    "ceiling", "decode", "end_to_end", "naive", "phone_end_to_end", "phone_naive",
    "memory_1x", "memory_5x", "startup_version", "startup_info", "startup_classify_one",
    "phone_heic_jpeg", "phone_heic", "phone_heic_full",
    "local_5x", "ray_5x",
}
TARGETS = {"end_to_end_vs_ceiling", "phone_end_to_end_vs_naive", "memory_5x_vs_1x",
           "memory_5x", "startup_version", "startup_classify_one", "ray_vs_local_5x"}


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
                    "--out", str(out), timeout=300)
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
