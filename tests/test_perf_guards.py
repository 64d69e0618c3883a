"""Performance guards that are not timings: bounds and counts a regression would break.

`make bench` measures speed; these check the properties the speed rests on, and they hold
however loaded the machine is: decoded images in flight stay bounded, the store commits a
batch per transaction, and start-up loads none of the heavy modules.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import numpy as np
from conftest import make_image, python_env

import scenetool.engines.common as common
from scenetool.engines.common import Settings
from scenetool.engines.local import classify
from scenetool.inputs.walk import walk
from scenetool.job import ClassifyJob
from scenetool.model import open_model
from scenetool.store import Store


def photo_folder(folder: Path, n: int) -> Path:
    for i in range(n):
        make_image(folder / f"{i:04d}.jpg", ("red", "green", "blue")[i % 3], size=(24, 20))
    return folder


class LiveArrays:
    """Counts decoded arrays still alive anywhere (the pipeline's memory), and their peak."""

    def __init__(self) -> None:
        self.live = self.peak = self.decoded = 0
        self._lock = threading.Lock()

    def track(self, array: np.ndarray) -> None:
        with self._lock:
            self.live += 1
            self.decoded += 1
            self.peak = max(self.peak, self.live)
        weakref.finalize(array, self._release)

    def _release(self) -> None:
        with self._lock:
            self.live -= 1


def test_decoded_images_in_flight_stay_bounded(tmp_path, monkeypatch):
    n = 300
    folder = photo_folder(tmp_path / "photos", n)
    arrays = LiveArrays()
    original = common.decode

    def counting_decode(meta, item):
        decoded = original(meta, item)
        if isinstance(decoded, np.ndarray):
            arrays.track(decoded)
        return decoded

    monkeypatch.setattr(common, "decode", counting_decode)
    settings = Settings(batch_size=8, threads=2)
    seen = 0
    for _ in classify(open_model(), walk([str(folder)]), settings):
        seen += 1
        time.sleep(0.0005)  # a slow consumer: decoders run ahead as far as they are let
    assert seen == arrays.decoded == n
    # The pipeline's own bound, plus the array being copied into the batch buffer; and
    # whatever that bound says, far fewer than all the images.
    assert arrays.peak <= settings.max_in_flight() + 1, (
        f"{arrays.peak} decoded images alive at once; the bound is {settings.max_in_flight()}")
    assert arrays.peak < n // 4


def transactions(statements: list[str]) -> tuple[int, int]:
    """(COMMITs, writes to results outside an explicit transaction) in an SQL trace."""
    commits = autocommitted = 0
    in_transaction = False
    for sql in statements:
        word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if word == "BEGIN":
            in_transaction = True
        elif word in ("COMMIT", "END", "ROLLBACK"):
            commits += word != "ROLLBACK"
            in_transaction = False
        elif word == "INSERT" and " results " in f" {sql} " and not in_transaction:
            autocommitted += 1
    return commits, autocommitted


def test_store_is_written_a_batch_per_transaction(tmp_path):
    n, batch = 100, 8
    folder = photo_folder(tmp_path / "photos", n)
    store = Store(tmp_path / "store.db")
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    settings = Settings(batch_size=batch, threads=2)
    model = open_model()
    for rerun in (False, True):  # classify, then reuse every result from the store
        statements.clear()
        rows = list(ClassifyJob(model, store, [str(folder)], settings))
        assert len(rows) == n and all(r.reused is rerun for r in rows)
        commits, autocommitted = transactions(statements)
        assert autocommitted == 0, "results written outside a batch transaction"
        # A batch per transaction (plus slack for run bookkeeping), never one per image.
        assert commits <= math.ceil(n / batch) + 2, f"{commits} commits for {n} images"


def test_start_up_loads_no_heavy_module():
    """`import scenetool.cli` and `scenetool --version` stay cheap: the model runtime, numpy
    and the training stack load only when a command needs them (TensorFlow never)."""
    code = (
        "import sys\n"
        "heavy = ('onnxruntime', 'numpy', 'tensorflow', 'keras', 'tf2onnx', 'lxml', 'watchdog')\n"
        "import scenetool.cli\n"
        "print('IMPORT', sorted(m for m in heavy if m in sys.modules))\n"
        "sys.argv = ['scenetool', '--version']\n"
        "try:\n"
        "    scenetool.cli.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('VERSION', sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=python_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "IMPORT []" in out.stdout and "VERSION []" in out.stdout, out.stdout
