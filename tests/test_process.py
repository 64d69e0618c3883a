"""scenetool as a real process: tracebacks, SIGKILL mid-run, concurrent runs, imports."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from conftest import make_broken, make_image, python_env, run, scenetool


def test_broken_files_no_traceback_exit_1(tmp_path):
    make_image(tmp_path / "ok.jpg", "green")
    make_broken(tmp_path / "broken")
    result = run("classify", str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    assert "1 classified, 0 already in the store (--force redoes them), 5 failed" in result.stderr
    words = " ".join(result.stdout.split())
    for reason in ("empty file (0 bytes)", "truncated image data", "broken symbolic link",
                   "image too large"):
        assert reason in words, reason


def test_bad_model_and_store_no_traceback(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("no")
    result = run("classify", str(tmp_path), "--model", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: not a usable ONNX model")
    result = run("report", "--store", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr == f"Error: store path is a folder: {tmp_path}\n"


def _count(db: Path, sql: str) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute(sql).fetchone()[0]
    except sqlite3.Error:
        return 0


def wait_for_results(proc: subprocess.Popen, db: Path, n: int) -> None:
    """Until the run has committed n results (or ended, or a minute passed)."""
    deadline = time.time() + 60
    while _count(db, "SELECT COUNT(*) FROM results") < n and time.time() < deadline:
        if proc.poll() is not None:
            return
        time.sleep(0.005)


def test_sigkill_mid_run_then_rerun_loses_nothing(tmp_path):
    photos = tmp_path / "photos"
    n = 400
    for i in range(n):
        make_image(photos / f"{i:04d}.png", ("red", "green", "blue")[i % 3], size=(400, 300))
    db = tmp_path / "kill.db"
    proc = scenetool("classify", str(photos), "--store", str(db), "--batch-size", "4",
                     "--threads", "1", "-q")
    wait_for_results(proc, db, 8)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = _count(db, "SELECT COUNT(*) FROM results")
    assert 0 < done < n
    assert _count(db, "SELECT COUNT(*) FROM runs WHERE finished IS NULL") == 1

    result = run("classify", str(photos), "--store", str(db), "-q")
    assert result.returncode == 0, result.stderr
    assert f"{n - done} classified, {done} already in the store" in result.stderr
    assert _count(db, "SELECT COUNT(*) FROM results WHERE run = 2") == n
    assert _count(db, "SELECT COUNT(DISTINCT path) FROM results WHERE run = 2") == n
    assert _count(db, "SELECT COUNT(DISTINCT path) FROM results") == n
    assert _count(db, "SELECT COUNT(*) FROM results WHERE run = 1") == done


def test_two_concurrent_runs_on_one_store(tmp_path):
    for name in ("a", "b"):
        for i in range(120):
            make_image(tmp_path / name / f"{i}.png", "blue", size=(200, 150))
    db = tmp_path / "shared.db"
    procs = [scenetool("classify", str(tmp_path / name), "--store", str(db), "-q",
                       "--batch-size", "2") for name in ("a", "b")]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finished = con.execute("SELECT COUNT(*) FROM runs WHERE finished IS NOT NULL")
        assert finished.fetchone()[0] == 2
        counts = con.execute("SELECT run, COUNT(*) FROM results GROUP BY run").fetchall()
        assert sorted(c for _, c in counts) == [120, 120]
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_no_tensorflow_is_imported(tmp_path):
    make_image(tmp_path / "x.jpg", "red")
    code = (
        "import sys, scenetool, scenetool.cli\n"
        "from click.testing import CliRunner\n"
        "r = CliRunner().invoke(scenetool.cli.cli, ['classify', sys.argv[1]])\n"
        "assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(scenetool.cli.cli, ['report'])\n"
        "bad = [m for m in ('tensorflow', 'keras', 'tf2onnx', 'tf_keras') if m in sys.modules]\n"
        "print('IMPORTED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.jpg")], env=python_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "IMPORTED []" in out.stdout


def _open_store_at(path: str, start: float) -> None:
    from scenetool.store import Store

    while time.time() < start:
        pass
    store = Store(path)
    store.start_run("sha", "model", {})
    store.close()


def test_runs_creating_one_store_at_the_same_moment(tmp_path):
    """Switching a new file to WAL is not covered by the busy timeout: the store retries."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for round_ in range(5):
        path = str(tmp_path / f"{round_}.db")
        start = time.time() + 0.3
        procs = [context.Process(target=_open_store_at, args=(path, start)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        assert _count(Path(path), "SELECT COUNT(*) FROM runs") == 4


def test_ctrl_c_keeps_what_was_done(tmp_path):
    photos = tmp_path / "photos"
    for i in range(300):
        make_image(photos / f"{i:04d}.png", "green", size=(400, 300))
    db = tmp_path / "int.db"
    # A shell that runs CI in the background leaves SIGINT ignored in its children, and
    # Python keeps an ignored SIGINT ignored: give the child the default, as a terminal would.
    proc = scenetool("classify", str(photos), "--store", str(db), "--batch-size", "2",
                     "--threads", "1", "-q",
                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_results(proc, db, 4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err)
    assert "Traceback" not in err
    kept = _count(db, "SELECT COUNT(*) FROM results")
    assert 0 < kept < 300
    assert err.strip().splitlines()[-1] == f"interrupted: {kept} results kept in run 1 of {db}"
