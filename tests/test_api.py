"""The Python API, through plain calls as a script would make them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image
from PIL import Image

import scenetool
from scenetool.engines import common
from scenetool.errors import DecodeError, FolderGone, ModelError, ScenetoolError, UsageError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def folder(tmp_path) -> Path:
    for i, colour in enumerate(("red", "green", "blue", "red")):
        make_image(tmp_path / "photos" / f"{i}-{colour}.jpg", colour)
    make_image(tmp_path / "photos" / "deeper" / "4-green.png", "green")
    return tmp_path / "photos"


def test_classify_a_folder(folder):
    results = list(scenetool.classify(folder))
    assert [(Path(r.path).name, r.label, r.error) for r in results] == [
        ("0-red.jpg", "red", None), ("1-green.jpg", "green", None),
        ("2-blue.jpg", "blue", None), ("3-red.jpg", "red", None),
        ("4-green.png", "green", None)]
    assert all(os.path.isabs(r.path) and 0.5 < r.confidence <= 1 for r in results)
    assert all(r.top_k == [(r.label, r.confidence)] for r in results)


def test_paths_top_k_min_confidence_and_failures(folder, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really")
    grey = tmp_path / "grey.png"
    Image.new("RGB", (20, 20), (128, 128, 128)).save(grey)
    results = list(scenetool.classify([grey, str(broken)], top_k=3, min_confidence=0.9,
                                      recursive=False))
    unsure, bad = results
    assert unsure.label == "unknown" and unsure.confidence < 0.9 and len(unsure.top_k) == 3
    assert bad.label is None and bad.confidence is None
    with pytest.raises(DecodeError) as reason:  # the decoder's own one-line reason
        scenetool.open_model().load(broken)
    assert bad.error == str(reason.value) and bad.error
    assert list(scenetool.classify(folder, recursive=False))[-1].path.endswith("3-red.jpg")


def test_without_a_store_nothing_is_kept(folder, tmp_path):
    results = scenetool.classify(folder)
    assert len(list(results)) == 5
    assert results.run_id is None
    assert results.tally.classified == 5
    assert not (tmp_path / "store").exists()  # the default store ($SCENETOOL_STORE) untouched


def test_with_a_store_the_run_is_recorded_and_reused(folder, tmp_path):
    db = tmp_path / "results.db"
    first = scenetool.classify(folder, store=db)
    rows = list(first)
    assert first.run_id == 1 and not any(r.reused for r in rows)
    again = scenetool.classify(folder, store=str(db))
    assert all(r.reused for r in again) and again.tally.reused == 5
    forced = scenetool.classify(folder, store=db, force=True)
    assert not any(r.reused for r in forced) and forced.run_id == 3

    from scenetool.store import Store

    with Store(db) as store:  # an open store is used as it is, and left open
        assert [r.label for r in scenetool.classify(folder / "2-blue.jpg", store=store)] == ["blue"]
        assert store.count(4) == 1


def test_results_stream_before_the_folder_is_done(tmp_path, monkeypatch):
    for i in range(60):
        make_image(tmp_path / "many" / f"{i:02d}.png", "blue", size=(16, 16))
    decoded = []
    original = common.decode
    monkeypatch.setattr(common, "decode", lambda meta, item: decoded.append(item) or
                        original(meta, item))
    results = scenetool.classify(tmp_path / "many", batch_size=4, threads=1)
    first = next(results)
    assert first.label == "blue"
    assert len(decoded) < 30, f"{len(decoded)} of 60 images decoded before the first result"
    assert len(list(results)) == 59


def test_errors_are_the_librarys_exceptions(folder, tmp_path):
    with pytest.raises(ModelError, match="model file not found: .*nope.onnx"):
        scenetool.classify(folder, model=tmp_path / "nope.onnx")
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(ScenetoolError, match="store path is a folder"):
        scenetool.classify(folder, store=tmp_path / "folder.db")
    with pytest.raises(UsageError):
        scenetool.classify(folder, top_k=0)
    with pytest.raises(ModelError):
        scenetool.open_model(tmp_path / "nope.onnx")


def test_open_model_predicts_decoded_images(folder, tiny_model):
    model = scenetool.open_model(tiny_model)
    assert model.labels == ("red", "green", "blue") and model.image_size == (32, 32)
    images = [model.load(folder / name) for name in ("0-red.jpg", "2-blue.jpg")]
    assert images[0].dtype == np.uint8 and images[0].shape == (32, 32, 3)
    probs = model.predict(np.stack(images))
    assert probs.shape == (2, 3) and list(probs.argmax(axis=1)) == [0, 2]
    np.testing.assert_allclose(model.predict(images), probs, rtol=1e-6)
    with pytest.raises(ModelError, match=r"shape \(N, 32, 32, 3\)"):
        model.predict(np.zeros((1, 16, 16, 3), np.uint8))
    assert scenetool.open_model().labels == model.labels  # $SCENETOOL_MODEL


def test_import_is_cheap_and_the_api_lazy():
    code = (
        "import sys\n"
        "heavy = ('numpy', 'onnxruntime', 'PIL', 'lxml', 'watchdog', 'tensorflow')\n"
        "import scenetool\n"
        "print('IMPORT', sorted(m for m in heavy if m in sys.modules))\n"
        "assert callable(scenetool.classify) and callable(scenetool.open_model)\n"
        "print('API', sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "IMPORT []" in out.stdout and "API []" in out.stdout, out.stdout


def test_watch_goes_on_with_new_images_until_the_folder_goes(folder, tmp_path):
    results = scenetool.watch(folder, settle=0.3)
    first = [next(results) for _ in range(5)]
    assert {Path(r.path).name for r in first} == {"0-red.jpg", "1-green.jpg", "2-blue.jpg",
                                                   "3-red.jpg", "4-green.png"}
    threading.Timer(0.2, make_image, (folder / "new" / "5-blue.png", "blue")).start()
    arrived = next(results)
    assert (Path(arrived.path).name, arrived.label) == ("5-blue.png", "blue")
    assert results.tally.classified == 6

    def remove() -> None:
        time.sleep(0.2)
        shutil.rmtree(folder)

    threading.Thread(target=remove).start()
    with pytest.raises(FolderGone, match="watched folder disappeared"):
        next(results)
