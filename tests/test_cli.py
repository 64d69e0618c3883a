"""The CLI through CliRunner: exit codes, exact messages, the store and the exports."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
from pathlib import Path

import pytest
from conftest import BROKEN, build_tiny_model, chmod_works, invoke, make_broken, make_image

from scenetool import __version__
from scenetool.metadata import ModelMeta
from scenetool.outputs.exports import COLUMNS


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    make_image(folder / "r1.jpg", "red")
    make_image(folder / "g1.png", "green")
    make_image(folder / "b1.webp", "blue")
    make_image(folder / "sub" / "r2.JPG", "red")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_version_and_help():
    assert invoke("--version").output == f"scenetool, version {__version__}\n"
    result = invoke("-h")
    assert result.exit_code == 0 and "classify" in result.output and "Example:" in result.output
    assert "Example:" in invoke("classify", "--help").output


def test_classify_labels_every_image_and_summarises(photos):
    result = invoke("classify", str(photos))
    assert result.exit_code == 0, result.output
    out = result.stdout
    for name, label in [("r1.jpg", "red"), ("g1.png", "green"), ("b1.webp", "blue"),
                        ("r2.JPG", "red")]:
        line = next(x for x in out.splitlines() if name in x)
        assert line.split()[1] == label
    assert "Summary" in out
    assert ("4 image(s): 4 classified, 0 already in the store (--force redoes them), 0 failed; "
            "1 non-image file(s) skipped") in result.stderr
    assert "Summary" not in result.stderr


def test_csv_to_stdout_has_fixed_columns_and_no_table(photos):
    result = invoke("classify", str(photos), "--csv", "-", "--top-k", "2")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == ",".join(COLUMNS)
    rows = csv_rows(result.stdout)
    assert len(rows) == 4
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["g1.png"]["label"] == "green"
    top = json.loads(by_name["g1.png"]["top_k"])
    assert [t["label"] for t in top][0] == "green" and len(top) == 2
    assert all(r["run_id"] == "1" and len(r["model_sha256"]) == 64 for r in rows)
    assert "Summary" in result.stderr


def test_json_lines_file(photos, tmp_path):
    out = tmp_path / "out.jsonl"
    assert invoke("classify", str(photos), "--json", str(out)).exit_code == 0
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(records) == 4 and set(records[0]) == set(COLUMNS)
    assert {r["label"] for r in records} == {"red", "green", "blue"}


def test_min_confidence_makes_unknown(tmp_path):
    grey = tmp_path / "grey.png"
    from PIL import Image
    Image.new("RGB", (20, 20), (128, 128, 128)).save(grey)
    result = invoke("classify", str(grey), "--min-confidence", "0.9", "--csv", "-")
    row = csv_rows(result.stdout)[0]
    assert row["label"] == "unknown" and float(row["confidence"]) < 0.9


def test_reused_results_follow_this_runs_min_confidence(tmp_path):
    grey = tmp_path / "grey.png"
    from PIL import Image
    Image.new("RGB", (20, 20), (128, 128, 128)).save(grey)
    first = csv_rows(invoke("classify", str(grey), "--csv", "-").stdout)[0]
    assert first["label"] != "unknown"
    strict = invoke("classify", str(grey), "--min-confidence", "0.9", "--csv", "-")
    assert "0 classified, 1 already in the store" in strict.stderr
    assert csv_rows(strict.stdout)[0]["label"] == "unknown"
    stored = csv_rows(invoke("report", "--csv", "-").stdout)[0]  # the run just made
    assert stored["label"] == "unknown" and stored["top_k"] == first["top_k"]
    lenient = invoke("classify", str(grey), "--csv", "-")
    assert csv_rows(lenient.stdout)[0]["label"] == first["label"]


def test_ctrl_c_in_any_command_is_exit_130(monkeypatch):
    import scenetool.cli.info

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(scenetool.cli.info, "open_model", interrupted)
    result = invoke("info")
    assert (result.exit_code, result.stderr) == (130, "interrupted\n")


def test_no_recursive(photos):
    result = invoke("classify", str(photos), "--no-recursive", "--csv", "-")
    assert {Path(r["path"]).name for r in csv_rows(result.stdout)} == {"r1.jpg", "g1.png",
                                                                        "b1.webp"}


def test_symlink_cycle_is_walked_once(photos):
    os.symlink(photos, photos / "sub" / "loop")
    result = invoke("classify", str(photos), "--csv", "-")
    assert result.exit_code == 0
    assert len(csv_rows(result.stdout)) == 4
    assert "1 symlinked folder(s) already walked" in result.stderr


def test_image_by_magic_bytes_not_extension(tmp_path):
    make_image(tmp_path / "IMG_0001", "blue", fmt="PNG")
    result = invoke("classify", str(tmp_path), "--csv", "-")
    assert [r["label"] for r in csv_rows(result.stdout)] == ["blue"]


def test_rerun_skips_unchanged_and_force_redoes(photos):
    assert invoke("classify", str(photos)).exit_code == 0
    again = invoke("classify", str(photos), "--csv", "-")
    assert "0 classified, 4 already in the store" in again.stderr
    assert len(csv_rows(again.stdout)) == 4, "a re-run still lists every image"
    make_image(photos / "r1.jpg", "blue", size=(50, 50))  # changed: size differs
    changed = invoke("classify", str(photos))
    assert "1 classified, 3 already in the store" in changed.stderr
    forced = invoke("classify", str(photos), "--force")
    assert "4 classified, 0 already in the store" in forced.stderr


def test_bad_inputs_are_reported_and_the_rest_classified(tmp_path, photos):
    make_broken(photos / "broken")
    export = tmp_path / "out.csv"
    result = invoke("classify", str(photos), "--csv", str(export))
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    rows = {Path(r["path"]).name: r for r in csv_rows(export.read_text())}
    for name, reason in BROKEN.items():
        assert rows[name]["error"] == reason, name
        assert rows[name]["label"] == ""
        line = next(x for x in result.stdout.splitlines() if name in x)
        assert "failed" in line and reason[:40] in line, (name, line)
    assert {rows[n]["label"] for n in ("r1.jpg", "g1.png", "b1.webp", "r2.JPG")} == {
        "red", "green", "blue"}
    assert "4 classified, 0 already in the store (--force redoes them), 5 failed" in result.stderr
    db = sqlite3.connect(os.environ["SCENETOOL_STORE"])
    stored = dict(db.execute("SELECT path, error FROM results"))
    assert stored[str(photos / "broken" / "cut.jpg")] == "truncated image data"
    report = invoke("report")
    assert "Failed: 5" in report.stdout and "truncated image data" in report.stdout


def test_mistyped_path_is_a_usage_error_before_any_run(tmp_path, photos):
    missing = tmp_path / "phtos"
    result = invoke("classify", str(photos), str(missing), str(tmp_path / "nope.jpg"))
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"Error: no such file or folder: {missing}, {tmp_path / 'nope.jpg'}")
    assert not Path(os.environ["SCENETOOL_STORE"]).exists(), "no run may be recorded"


def test_top_k_larger_than_stored_classifies_again(photos):
    assert invoke("classify", str(photos)).exit_code == 0
    wider = invoke("classify", str(photos), "--top-k", "3", "--csv", "-")
    assert "4 classified, 0 already in the store" in wider.stderr
    assert all(len(json.loads(r["top_k"])) == 3 for r in csv_rows(wider.stdout))
    narrower = invoke("classify", str(photos), "--top-k", "2", "--csv", "-")
    assert "0 classified, 4 already in the store" in narrower.stderr
    assert all(len(json.loads(r["top_k"])) == 2 for r in csv_rows(narrower.stdout))
    # More than the model has labels: every label is all there is, so the store answers.
    most = invoke("classify", str(photos), "--top-k", "9")
    assert "0 classified, 4 already in the store" in most.stderr


def test_piped_table_has_no_padding_and_no_empty_column(photos, monkeypatch):
    monkeypatch.delenv("COLUMNS")
    result = invoke("classify", str(photos))
    lines = result.stdout.splitlines()
    assert lines and all(line == line.rstrip() for line in lines)
    assert lines[0].split() == ["path", "label", "confidence"], "no empty note column"
    (photos / "bad.jpg").write_text("not an image")
    failed = invoke("classify", str(photos))
    assert failed.stdout.splitlines()[0].split() == ["path", "label", "confidence", "note"]
    summary = failed.stderr.splitlines()[-1]
    assert summary.startswith("5 image(s): 0 classified, 4 already in the store (--force "
                              "redoes them), 1 failed; 1 non-image file(s) skipped. Run 2 in ")
    assert summary.endswith("images/s)."), "the summary is one line, not wrapped"


@pytest.mark.skipif(not chmod_works(), reason="file permissions do not bind root")
def test_unreadable_file(tmp_path):
    path = make_image(tmp_path / "locked.jpg", "red")
    path.chmod(0)
    result = invoke("classify", str(path), "--csv", "-")
    assert result.exit_code == 1
    assert csv_rows(result.stdout)[0]["error"] == "permission denied"


def test_unreadable_file_reason_without_root(tmp_path, monkeypatch):
    """Root can read anything, so simulate the OS refusing the open."""
    path = make_image(tmp_path / "locked.jpg", "red")
    real_open = os.open

    def refusing_open(file, *args, **kwargs):
        if os.fsdecode(file) == str(path):
            raise PermissionError(13, "Permission denied", os.fsdecode(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    result = invoke("classify", str(path), "--csv", "-")
    assert result.exit_code == 1
    assert csv_rows(result.stdout)[0]["error"] == "permission denied"


def test_model_errors_exit_2_with_one_line(tmp_path):
    cases = {
        "missing": (tmp_path / "nope.onnx", "Error: model file not found: {p}\n"),
        "corrupt": (tmp_path / "corrupt.onnx", None),
        "folder": (tmp_path, "Error: model path is a folder, not an ONNX file: {p}\n"),
    }
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07garbage" * 10)
    for name, (path, message) in cases.items():
        result = invoke("classify", str(tmp_path), "--model", str(path))
        assert result.exit_code == 2, name
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        if message:
            assert result.stderr == message.format(p=path)
        else:
            assert result.stderr.startswith(f"Error: not a usable ONNX model: {path} (")


def test_model_whose_metadata_disagrees_with_its_input(tmp_path):
    path = build_tiny_model(tmp_path / "liar.onnx",
                            meta=ModelMeta(labels=("red", "green", "blue"), image_size=(64, 64)))
    result = invoke("info", "--model", str(path))
    assert result.exit_code == 2
    assert result.stderr == f"Error: {path}: input is 32x32 but the metadata says 64x64\n"


def test_unlabelled_model_exits_2(tmp_path):
    path = build_tiny_model(tmp_path / "plain.onnx", props={})
    result = invoke("info", "--model", str(path))
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {path} is not a scenetool model: model metadata lacks "
                             "labels, image_size, channel_order, value_range, resize, layout\n")


def test_store_errors_exit_2(tmp_path, photos):
    result = invoke("classify", str(photos), "--store", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr == f"Error: store path is a folder: {tmp_path}\n"
    bogus = tmp_path / "bogus.db"
    bogus.write_text("this is not sqlite" * 100)
    result = invoke("classify", str(photos), "--store", str(bogus))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: cannot open store {bogus}: ")


def test_newer_schema_is_refused(tmp_path, photos):
    db = tmp_path / "new.db"
    sqlite3.connect(db).execute("PRAGMA user_version = 99")
    result = invoke("report", "--store", str(db))
    assert result.exit_code == 2
    from scenetool.store import SCHEMA_VERSION

    assert (f"has schema 99; this scenetool knows up to {SCHEMA_VERSION}: upgrade scenetool"
            in result.stderr)


def test_usage_errors_exit_2(photos):
    assert invoke("classify").exit_code == 2
    assert invoke("classify", str(photos), "--top-k", "0").exit_code == 2
    both = invoke("classify", str(photos), "--csv", "-", "--json", "-")
    assert both.exit_code == 2
    assert "only one of --csv and --json can write to stdout (-)" in both.stderr
    assert invoke("report", "--run", "1", "--all").exit_code == 2


def test_report_runs_and_exports(photos, tmp_path):
    assert invoke("report").exit_code == 2
    assert invoke("report").stderr.startswith("Error: no runs in ")
    invoke("classify", str(photos / "sub"))
    invoke("classify", str(photos))
    latest = invoke("report", "--csv", "-")
    assert latest.exit_code == 0
    assert len(latest.stdout.splitlines()) == 1 + 4
    first = csv_rows(invoke("report", "--run", "1", "--csv", "-").stdout)
    assert [Path(r["path"]).name for r in first] == ["r2.JPG"]
    everything = csv_rows(invoke("report", "--all", "--csv", "-").stdout)
    assert sorted(Path(r["path"]).name for r in everything) == sorted(
        ["r1.jpg", "g1.png", "b1.webp", "r2.JPG"])
    assert invoke("report", "--run", "9").stderr.startswith("Error: no run 9 in ")
    table = invoke("report", "--low", "1.0")
    assert "Per class" in table.stdout and "Low confidence (below 100%): 4" in table.stdout
    jsonl = invoke("report", "--json", "-").stdout.splitlines()
    assert len(jsonl) == 4 and json.loads(jsonl[0])["run_id"] == 2


def test_info_json(tiny_model):
    result = invoke("info", "--json")
    data = json.loads(result.stdout)
    assert data["labels"] == ["red", "green", "blue"]
    assert data["opset"] == 17 and data["input"]["shape"] == ["N", 32, 32, 3]
    assert data["size"] == tiny_model.stat().st_size and len(data["sha256"]) == 64
    assert "labels" in invoke("info").stdout


def test_model_from_env_and_option(tmp_path, photos, monkeypatch):
    other = build_tiny_model(tmp_path / "other.onnx", labels=("a", "b", "c"), size=(16, 16),
                             meta=ModelMeta(labels=("a", "b", "c"), image_size=(16, 16)))
    assert json.loads(invoke("info", "--json", "--model", str(other)).stdout)["labels"] == [
        "a", "b", "c"]
    monkeypatch.setenv("SCENETOOL_MODEL", str(other))
    rows = csv_rows(invoke("classify", str(photos), "--csv", "-").stdout)
    assert {r["label"] for r in rows} == {"a", "b", "c"}


def make_labelled(root: Path, wrong: int = 0) -> Path:
    for colour in ("red", "green", "blue"):
        for i in range(3):
            make_image(root / colour / f"{colour}{i}.jpg", colour)
    for i in range(wrong):
        make_image(root / "red" / f"actually_blue{i}.jpg", "blue")
    return root


def test_evaluate_scores_and_json(tmp_path):
    root = make_labelled(tmp_path / "test", wrong=1)
    out = tmp_path / "scores.json"
    result = invoke("evaluate", str(root), "--json", str(out))
    assert result.exit_code == 0
    assert "Accuracy 90.00% on 10 images" in result.stdout
    scores = json.loads(out.read_text())
    assert scores["n"] == 10 and scores["accuracy"] == pytest.approx(0.9)
    assert scores["labels"] == ["red", "green", "blue"]
    assert scores["confusion"][0] == [3, 0, 1]
    assert scores["per_class"]["red"]["recall"] == pytest.approx(0.75)
    assert scores["per_class"]["blue"]["precision"] == pytest.approx(0.75)
    assert set(scores["per_class"]["red"]) == {"precision", "recall", "f1", "support"}


def test_evaluate_png(tmp_path):
    pytest.importorskip("matplotlib")
    root = make_labelled(tmp_path / "test")
    png = tmp_path / "cm.png"
    assert invoke("evaluate", str(root), "--png", str(png)).exit_code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_png_needs_matplotlib_alone(tmp_path):
    """What the plot extra installs is enough: --png works where TensorFlow cannot be
    imported, and where matplotlib is missing the message names the extra."""
    pytest.importorskip("matplotlib")
    import subprocess
    import sys

    root = make_labelled(tmp_path / "test")
    png = tmp_path / "cm.png"
    code = ("import sys\n"
            "sys.modules['tensorflow'] = sys.modules['keras'] = None  # importing them fails\n"
            "{block}"
            "from scenetool.cli import main\n"
            "sys.argv = ['scenetool', 'evaluate', sys.argv[1], '--png', sys.argv[2]]\n"
            "main()\n")
    ok = subprocess.run([sys.executable, "-c", code.format(block=""), str(root), str(png)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    blocked = code.format(block="sys.modules['matplotlib'] = None\n"
                                "import importlib.util\n"
                                "importlib.util.find_spec = lambda name, *a: None\n")
    missing = subprocess.run([sys.executable, "-c", blocked, str(root), str(tmp_path / "x.png")],
                             capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.splitlines()[-1] == (
        "Error: Invalid value for --png: needs matplotlib: pip install 'scenetool[plot]'")


def test_evaluate_unknown_subfolder_is_an_error(tmp_path):
    root = make_labelled(tmp_path / "test")
    (root / "purple").mkdir()
    (root / "zebra").mkdir()
    result = invoke("evaluate", str(root))
    assert result.exit_code == 2
    assert result.stderr == (f"Error: subfolder(s) of {root} match no label of the model: "
                             "purple, zebra (labels: red, green, blue)\n")


def test_evaluate_failed_images_exit_1(tmp_path):
    root = make_labelled(tmp_path / "test")
    (root / "red" / "broken.jpg").write_text("nope")
    result = invoke("evaluate", str(root))
    assert result.exit_code == 1
    assert "Accuracy 100.00% on 9 images" in result.stdout
    assert "broken.jpg: not an image (unknown or corrupt format)" in result.stderr
