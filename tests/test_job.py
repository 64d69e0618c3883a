"""A classify run as the store and the summary record it."""

from __future__ import annotations

import csv
import io
import os

from conftest import invoke, make_image

from scenetool.store import Store


def test_a_run_records_its_model_arguments_and_end(tmp_path, tiny_model):
    make_image(tmp_path / "photos" / "r.png", "red")
    assert invoke("classify", tmp_path / "photos", "--top-k", "2").exit_code == 0
    with Store(os.environ["SCENETOOL_STORE"]) as store:
        run = store.run()
        assert run is not None and run.id == 1
        assert run.model_path == str(tiny_model)
        assert run.arguments["top_k"] == 2
        assert run.finished is not None


def test_reused_results_belong_to_the_run_that_reused_them(tmp_path):
    for name, colour in (("r.png", "red"), ("g.png", "green")):
        make_image(tmp_path / "photos" / name, colour)
    assert invoke("classify", tmp_path / "photos").exit_code == 0
    again = invoke("classify", tmp_path / "photos", "--csv", "-")
    assert "0 classified, 2 already in the store" in again.stderr
    rows = list(csv.DictReader(io.StringIO(again.stdout)))
    assert [r["run_id"] for r in rows] == ["2", "2"]


def test_the_summary_counts_each_label(tmp_path):
    for name, colour in (("r1.png", "red"), ("r2.png", "red"), ("g.png", "green")):
        make_image(tmp_path / "photos" / name, colour)
    (tmp_path / "photos" / "bad.jpg").write_bytes(b"not a jpeg")
    result = invoke("classify", tmp_path / "photos")
    lines = result.stdout[result.stdout.index("Summary"):].splitlines()
    rows = {cells[0]: cells[1:] for cells in (line.split() for line in lines) if cells}
    assert rows["red"] == ["2", "50.0%"] and rows["green"] == ["1", "25.0%"]
    assert rows["blue"] == ["0", "0.0%"] and rows["failed"] == ["1", "25.0%"]
    assert rows["total"] == ["4"]
