"""`scenetool tag`: sidecars a real client (exiftool) reads, merges that keep what was there,
and photos that are never written to."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import build_tiny_model, make_image
from PIL import Image
from test_xmp import EXIFTOOL, exiftool, keywords, needs_exiftool, xmp_properties

from scenetool.cli import cli
from scenetool.outputs import xmp

ROOT = Path(__file__).resolve().parents[1]


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    make_image(folder / "r1.jpg", "red")
    make_image(folder / "g1.png", "green")
    make_image(folder / "sub" / "b1.webp", "blue")
    return folder


def fingerprints(folder: Path) -> dict[str, tuple[str, int]]:
    """Every photo's content hash and mtime (sidecars left out)."""
    return {str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".xmp"}


@needs_exiftool
def test_each_photo_gets_a_sidecar_exiftool_reads(photos):
    before = fingerprints(photos)
    result = invoke("tag", str(photos))
    assert result.exit_code == 0, result.output
    for name, label in (("r1.jpg", "red"), ("g1.png", "green"), ("sub/b1.webp", "blue")):
        assert keywords(photos / f"{name}.xmp") == ([label], [f"scenes|{label}"])
    assert fingerprints(photos) == before
    assert "3 photo(s), sidecars: 3 created, 0 failed. Run 1 in " in result.stderr
    assert ": 3 classified, 0 from the store." in result.stderr


@needs_exiftool
def test_an_existing_sidecar_keeps_its_keywords_and_a_better_model_relabels(photos, tmp_path):
    sidecar = photos / "r1.jpg.xmp"
    subprocess.run([EXIFTOOL, "-q", "-o", str(sidecar), "-XMP-dc:Subject=holiday",
                    "-XMP-lr:HierarchicalSubject=places|Oslo", "-XMP-xmp:Rating=3"],
                   check=True, timeout=60)
    before = xmp_properties(sidecar)
    assert invoke("tag", str(photos)).exit_code == 0
    assert keywords(sidecar) == (["holiday", "red"], ["places|Oslo", "scenes|red"])
    # A model whose first class is called 'crimson': re-tagging replaces the keyword.
    other = build_tiny_model(tmp_path / "other.onnx", labels=("crimson", "green", "blue"))
    result = invoke("tag", str(photos / "r1.jpg"), "--model", str(other))
    assert result.exit_code == 0 and "1 updated" in result.stderr
    assert keywords(sidecar) == (["holiday", "crimson"], ["places|Oslo", "scenes|crimson"])
    assert exiftool(str(sidecar))["XMP-xmp:Rating"] == 3
    assert invoke("tag", "--remove", str(photos)).exit_code == 0
    assert xmp_properties(sidecar) == before
    assert not (photos / "g1.png.xmp").exists()  # held nothing but scenetool's keywords


def test_results_come_from_the_store_when_it_has_them(photos):
    assert invoke("classify", str(photos)).exit_code == 0
    result = invoke("tag", str(photos))
    assert "Run 2 in " in result.stderr and ": 0 classified, 3 from the store." in result.stderr
    assert xmp.read(str(photos / "g1.png.xmp"))["label"] == "green"
    assert invoke("tag", str(photos)).stderr.startswith("3 photo(s), sidecars: 3 unchanged")


def test_sidecar_named_by_stem_and_a_shared_one_is_refused(photos):
    make_image(photos / "r1.png", "blue")
    result = invoke("tag", str(photos), "--sidecar-name", "stem")
    assert result.exit_code == 1
    assert xmp.read(str(photos / "r1.xmp"))["label"] == "red"  # r1.jpg came first
    assert xmp.read(str(photos / "sub" / "b1.xmp"))["label"] == "blue"
    assert not list(photos.rglob("*.*.xmp"))
    assert (f"failed: {photos / 'r1.png'}: its sidecar {photos / 'r1.xmp'} is also "
            f"{photos / 'r1.jpg'}'s (--sidecar-name stem); tag one of them at a time; "
            "left untouched") in result.stderr


def test_below_min_confidence_no_keyword(tmp_path):
    grey = tmp_path / "grey.png"
    Image.new("RGB", (20, 20), (128, 128, 128)).save(grey)
    make_image(tmp_path / "red.png", "red")
    assert invoke("tag", str(tmp_path)).exit_code == 0
    assert (tmp_path / "grey.png.xmp").exists()
    result = invoke("tag", str(tmp_path), "--min-confidence", "0.9")
    assert result.exit_code == 0
    assert not (tmp_path / "grey.png.xmp").exists()  # its earlier keyword taken out
    assert xmp.read(str(tmp_path / "red.png.xmp"))["label"] == "red"
    assert "1 without a keyword (below 0.9)" in result.stderr


def test_dry_run_writes_no_sidecar(photos):
    result = invoke("tag", str(photos), "--dry-run")
    assert result.exit_code == 0
    assert "would create: " in result.stdout
    assert result.stderr.startswith("Dry run, nothing written: 3 photo(s), sidecars: "
                                    "3 would create, 0 failed.")
    assert not list(photos.rglob("*.xmp"))


def test_an_invalid_sidecar_is_left_untouched_and_reported(photos):
    broken = photos / "g1.png.xmp"
    broken.write_bytes(b"<x:xmpmeta><unclosed></x:xmpmeta>")
    result = invoke("tag", str(photos))
    assert result.exit_code == 1
    assert broken.read_bytes() == b"<x:xmpmeta><unclosed></x:xmpmeta>"
    assert f"failed: {photos / 'g1.png'}: sidecar {broken} not valid XML (" in result.stderr
    assert "left untouched" in result.stderr
    assert xmp.read(str(photos / "r1.jpg.xmp"))["label"] == "red"  # the others are tagged
    assert "2 created, 1 failed" in result.stderr


def test_a_photo_that_cannot_be_read_fails_and_gets_no_sidecar(photos):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    result = invoke("tag", str(photos))
    assert result.exit_code == 1
    assert not (photos / "broken.jpg.xmp").exists()
    assert "3 created, 1 failed" in result.stderr


AUDIT = """
import os, sys
photos = set(sys.argv[1].split(os.pathsep))
written = []
WRITE = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
def hook(event, args):
    if event == "open" and args[0] is not None and not isinstance(args[0], int):
        path, mode, flags = os.path.abspath(os.fsdecode(args[0])), args[1], args[2]
        writes = any(c in (mode or "") for c in "wax+") or (flags or 0) & WRITE
        if path in photos and writes:
            written.append(path)
    elif event in ("os.rename", "os.replace", "os.remove", "os.truncate", "os.utime",
                   "os.chmod") and os.path.abspath(os.fsdecode(args[0])) in photos:
        written.append((event, args[0]))
sys.addaudithook(hook)
from scenetool.cli import cli
try:
    cli(sys.argv[2:], prog_name="scenetool")
except SystemExit as exc:
    print("EXIT", exc.code, "WRITTEN", written)
"""


def test_the_photos_are_never_opened_for_writing(photos):
    """Every open, rename and removal the process makes is audited (sys.addaudithook)."""
    paths = [str(p) for p in photos.rglob("*") if p.is_file()]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args in (["tag", str(photos)], ["tag", str(photos), "--sidecar-name", "stem"],
                 ["tag", "--remove", str(photos)],
                 ["tag", "--remove", str(photos), "--sidecar-name", "stem"]):
        out = subprocess.run([sys.executable, "-c", AUDIT, os.pathsep.join(paths), *args],
                             env=env, capture_output=True, text=True, timeout=120)
        assert "EXIT 0 WRITTEN []" in out.stdout, out.stdout + out.stderr
    assert not list(photos.rglob("*.xmp"))  # --remove took the sidecars back out


def test_a_path_that_is_not_there_is_a_usage_error(tmp_path):
    result = invoke("tag", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert f"no such file or folder: {tmp_path / 'nope'}" in result.stderr
