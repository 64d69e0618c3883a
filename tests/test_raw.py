"""Camera RAW: real DNG files (tests/dng.py) read through rawpy, preview first, the half-size
decode when there is no usable preview, orientation from the RAW, and the hint without the
`raw` extra."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import COLOURS, make_image
from dng import write_dng

from scenetool.cli import cli
from scenetool.constants import RAW_HINT
from scenetool.errors import DecodeError
from scenetool.inputs.decode import load_image

pytest.importorskip("rawpy", reason="camera RAW needs the raw extra (rawpy)")


def solid(colour: str, size=(96, 64)) -> np.ndarray:
    arr = np.empty((size[1], size[0], 3), np.uint8)
    arr[:] = COLOURS[colour]
    return arr


def wide_red_left(size=(96, 64)) -> np.ndarray:
    """Red on the left half, blue on the right: stored wide; upright after orientation 6
    (turn 90 degrees clockwise) it is tall with red on top."""
    arr = solid("blue", size)
    arr[:, : size[0] // 2] = COLOURS["red"]
    return arr


def dominant(arr: np.ndarray) -> str:
    return ("red", "green", "blue")[int(np.argmax(arr.reshape(-1, 3).mean(0)))]


def classify(folder: Path) -> tuple[int, dict[str, dict], str]:
    result = CliRunner().invoke(cli, ["classify", str(folder), "--csv", "-"])
    assert "Traceback" not in result.output
    rows = {Path(r["path"]).name: r for r in csv.DictReader(io.StringIO(result.stdout))}
    return result.exit_code, rows, result.stderr


def test_preview_is_read_first(tmp_path):
    # The preview (blue) and the raw data (red) disagree, as they never do in a camera:
    # the label tells which one was decoded.
    path = write_dng(tmp_path / "a.dng", solid("red"), preview=solid("blue"))
    assert dominant(load_image(path, (32, 32))) == "blue"


def test_preview_smaller_than_the_model_input_falls_back_to_the_raw_data(tmp_path):
    path = write_dng(tmp_path / "a.dng", solid("red", (256, 192)),
                     preview=solid("blue", (48, 32)))
    assert dominant(load_image(path, (32, 32))) == "blue"  # 48x32 covers 32x32
    assert dominant(load_image(path, (40, 40))) == "red"  # but not 40x40


def test_without_preview_the_raw_data_is_demosaiced(tmp_path):
    path = write_dng(tmp_path / "a.dng", solid("green", (128, 96)))
    out = load_image(path, (32, 32))
    assert dominant(out) == "green"


@pytest.mark.parametrize("with_preview", [True, False])
def test_orientation_comes_from_the_raw(tmp_path, with_preview):
    picture = wide_red_left((192, 128))
    path = write_dng(tmp_path / "turned.dng", picture,
                     preview=picture if with_preview else None, orientation=6)
    out = load_image(path, (96, 64))  # (height, width): tall
    assert dominant(out[:40]) == "red", "top should be red once upright"
    assert dominant(out[-40:]) == "blue"


def test_raw_with_neither_preview_nor_readable_data_is_named(tmp_path):
    path = write_dng(tmp_path / "broken.dng", solid("red"), compression=8)
    with pytest.raises(DecodeError) as info:
        load_image(path, (32, 32))
    assert str(info.value).startswith("camera RAW: no preview and no readable raw data (")


def test_unreadable_raw_keeps_a_small_preview(tmp_path):
    path = write_dng(tmp_path / "a.dng", solid("red", (256, 192)),
                     preview=solid("blue", (48, 32)), compression=8)
    assert dominant(load_image(path, (64, 64))) == "blue"


def test_not_a_raw_file_under_a_raw_name(tmp_path):
    fake = tmp_path / "IMG_0001.NEF"
    fake.write_bytes(b"this is no camera file" * 100)
    with pytest.raises(DecodeError) as info:
        load_image(fake, (32, 32))
    assert str(info.value) == (
        "camera RAW: not a RAW format LibRaw reads (unknown camera or not a RAW file)")


def test_raw_files_are_classified_with_the_rest(tmp_path):
    folder = tmp_path / "card"
    folder.mkdir()
    write_dng(folder / "DSC_0001.dng", solid("red"), preview=solid("red"))
    write_dng(folder / "DSC_0002.DNG", solid("blue", (128, 96)))
    make_image(folder / "DSC_0003.jpg", "green")
    code, rows, stderr = classify(folder)
    assert code == 0, stderr
    assert {n: r["label"] for n, r in rows.items()} == {
        "DSC_0001.dng": "red", "DSC_0002.DNG": "blue", "DSC_0003.jpg": "green"}


def test_without_the_extra_each_raw_fails_with_the_hint(tmp_path, monkeypatch):
    folder = tmp_path / "card"
    folder.mkdir()
    write_dng(folder / "a.dng", solid("red"), preview=solid("red"))
    (folder / "b.cr2").write_bytes(b"II*\x00" + b"\x00" * 100)
    (folder / "c.NEF").write_bytes(b"anything")
    make_image(folder / "d.jpg", "green")
    monkeypatch.setitem(sys.modules, "rawpy", None)  # as if rawpy were not installed
    code, rows, stderr = classify(folder)
    assert code == 1
    assert {n: r["error"] for n, r in rows.items() if r["error"]} == {
        "a.dng": RAW_HINT, "b.cr2": RAW_HINT, "c.NEF": RAW_HINT}
    assert rows["d.jpg"]["label"] == "green"
    summary = " ".join(stderr.split())  # as one line, however the console wrapped it
    assert ("4 image(s): 1 classified, 0 already in the store (--force redoes them), "
            "3 failed; 3 of them camera RAW, which needs pip install 'scenetool[raw]'"
            ) in summary, stderr


@pytest.mark.parametrize("name", ["caf\udce9.dng", "esc\x1b[31mape.dng", "photo 1.dng"])
def test_any_file_name(tmp_path, name):
    path = write_dng(tmp_path / "a.dng", solid("red"), preview=solid("red"))
    target = tmp_path / name
    path.rename(target)
    assert dominant(load_image(target, (32, 32))) == "red"


def test_sort_without_the_extra_leaves_raw_in_place_and_says_why(tmp_path, monkeypatch):
    src, dest = tmp_path / "card", tmp_path / "sorted"
    src.mkdir()
    write_dng(src / "a.dng", solid("red"), preview=solid("red"))
    make_image(src / "b.jpg", "blue")
    monkeypatch.setitem(sys.modules, "rawpy", None)
    result = CliRunner().invoke(cli, ["sort", str(src), str(dest), "--copy"])
    assert result.exit_code == 1
    assert f"failed: {src / 'a.dng'}: {RAW_HINT}" in result.stderr
    assert ("1 failed (left in place); 1 of them camera RAW, which needs pip install "
            "'scenetool[raw]'") in result.stderr
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.*")) == ["blue/b.jpg"]
