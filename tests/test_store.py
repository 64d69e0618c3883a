"""The results store: reuse only what is unchanged, and open while another run holds the lock."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import invoke, make_image

import scenetool.store
from scenetool.store import Row, Store


def test_a_file_changed_in_place_with_the_same_size_is_classified_again(tmp_path):
    """Photo editors rewrite a file in place; a BMP of the same dimensions keeps its size
    to the byte, so only the modification time tells the store that it changed."""
    photo = make_image(tmp_path / "photos" / "p.bmp", "red")
    first = invoke("classify", str(photo.parent), "--csv", "-")
    assert first.exit_code == 0 and ",red," in first.stdout
    size, mtime = photo.stat().st_size, photo.stat().st_mtime
    make_image(photo, "blue")
    os.utime(photo, (mtime + 60, mtime + 60))
    assert photo.stat().st_size == size
    again = invoke("classify", str(photo.parent), "--csv", "-")
    assert "1 classified, 0 already in the store" in again.stderr
    assert ",blue," in again.stdout and ",red," not in again.stdout


def test_find_done_matches_path_size_mtime_and_model(tmp_path):
    with Store(tmp_path / "s.db") as store:
        run = store.start_run("sha-a", "a.onnx", {})
        store.add_results(run, [("/p/x.jpg", 10, 100.5, "red", 0.9, [["red", 0.9]], None),
                                ("/p/bad.jpg", 10, 100.5, None, None, None, "truncated")])
        done = store.find_done("sha-a", "/p/x.jpg", 10, 100.5)
        assert done is not None
        assert [r.label for r in store.rows_by_id([done])] == ["red"]
        assert store.find_done("sha-a", "/p/x.jpg", 10, 100.75) is None  # touched
        assert store.find_done("sha-a", "/p/x.jpg", 11, 100.5) is None  # grown
        assert store.find_done("sha-b", "/p/x.jpg", 10, 100.5) is None  # another model
        assert store.find_done("sha-a", "/p/y.jpg", 10, 100.5) is None
        assert store.find_done("sha-a", "/p/bad.jpg", 10, 100.5) is None  # failed: retry


def test_a_store_opens_while_another_run_holds_the_lock_it_needs(tmp_path, monkeypatch):
    """Two runs creating one store at once: the second to switch the new file to WAL finds
    the first one's write lock, and SQLite answers 'database is locked' at once, without
    waiting (its busy handler is not used there, to avoid a deadlock). The store must retry.

    Made deterministic: another connection holds a write lock on the new store while it
    opens, and lets go only when the store has failed once and waits to retry (its
    `time.sleep`); without the retry the store gives up while the lock is held.
    """
    path = tmp_path / "new.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        if not waits:
            holder.execute("ROLLBACK")
        waits.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(scenetool.store, "time",
                        SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    with Store(path) as store:
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == (
            scenetool.store.SCHEMA_VERSION)
        assert store.start_run("sha", "m.onnx", {}) == 1
    assert len(waits) == 1, "the store should have met the lock exactly once"
    holder.close()


def test_a_lock_held_for_good_is_an_error_after_the_timeout(tmp_path, monkeypatch):
    """The retry has an end: a lock never let go is a StoreError (exit 2), not a hang."""
    path = tmp_path / "stuck.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += 10.0  # ten seconds a try: the 30 s timeout passes after a few

    monkeypatch.setattr(scenetool.store, "time",
                        SimpleNamespace(monotonic=lambda: clock[0], sleep=sleep))
    with pytest.raises(scenetool.store.StoreError, match="database is locked"):
        Store(path)
    assert clock[0] <= 40.0
    holder.close()


def test_store_path_in_a_new_folder_is_created(tmp_path):
    path = tmp_path / "a" / "b" / "store.db"
    with Store(path):
        pass
    assert Path(path).is_file()


def test_results_read_back_as_they_were_written(tmp_path):
    with Store(tmp_path / "s.db") as store:
        run = store.start_run("sha-a", "/models/a.onnx", {"command": "classify", "top_k": 2})
        store.add_results(run, [
            ("/p/x.jpg", 10, 100.5, "red", 0.875, [["red", 0.875], ["blue", 0.125]], None),
            ("/p/bad.jpg", 3, 7.25, None, None, None, "truncated image data")])
        unfinished = store.run(run)
        assert unfinished is not None and unfinished.finished is None
        assert datetime.fromisoformat(unfinished.started).utcoffset() == timedelta(0)
        store.finish_run(run)
        rows = list(store.rows(run))
        assert rows == [
            Row(run, "/p/x.jpg", 10, 100.5, "red", 0.875, [("red", 0.875), ("blue", 0.125)],
                None, "sha-a", False),
            Row(run, "/p/bad.jpg", 3, 7.25, None, None, [], "truncated image data", "sha-a",
                False)]
        saved = store.run(run)
        assert saved is not None and saved.id == run
        assert saved.model_sha256 == "sha-a" and saved.model_path == "/models/a.onnx"
        assert saved.arguments == {"command": "classify", "top_k": 2}
        started = datetime.fromisoformat(saved.started)
        assert started.utcoffset() == timedelta(0), "times are stored in UTC"
        assert saved.started == unfinished.started
        assert datetime.fromisoformat(saved.finished) >= started


def test_reused_results_are_copies_marked_as_reused(tmp_path):
    with Store(tmp_path / "s.db") as store:
        first = store.start_run("sha-a", "a.onnx", {})
        store.add_results(first, [("/p/x.jpg", 10, 1.0, "red", 0.9, [["red", 0.9]], None)])
        done = store.find_done("sha-a", "/p/x.jpg", 10, 1.0)
        second = store.start_run("sha-a", "a.onnx", {})
        store.reuse(second, store.rows_by_id([done]))
        (copy,) = store.rows(second)
        assert copy == Row(second, "/p/x.jpg", 10, 1.0, "red", 0.9, [("red", 0.9)], None,
                           "sha-a", True)
        assert store.run() is not None and store.run().id == second  # the latest run
        assert store.run(first).id == first and store.run(99) is None


def test_rows_without_a_run_are_the_latest_result_of_every_path(tmp_path):
    with Store(tmp_path / "s.db") as store:
        one = store.start_run("m", "m.onnx", {})
        store.add_results(one, [("/a", 1, 1.0, "red", 0.5, None, None),
                                ("/b", 1, 1.0, "red", 0.5, None, None)])
        two = store.start_run("m", "m.onnx", {})
        store.add_results(two, [("/a", 1, 2.0, "blue", 0.7, None, None)])
        latest = [(r.path, r.run_id, r.label) for r in store.rows()]
        assert latest == [("/b", one, "red"), ("/a", two, "blue")]


def test_rows_by_id_keeps_the_order_asked_for_past_one_query(tmp_path):
    """Ids are looked up 500 at a time (SQLite limits the parameters of a statement)."""
    with Store(tmp_path / "s.db") as store:
        run = store.start_run("m", "m.onnx", {})
        store.add_results(run, [(f"/p/{i:04d}", i, 1.0, "red", 0.5, None, None)
                                for i in range(1200)])
        ids = [r[0] for r in store.db.execute("SELECT id FROM results ORDER BY id")]
        wanted = ids[::-1] + [10**9]  # an unknown id is left out
        assert [r.size for r in store.rows_by_id(wanted)] == list(range(1199, -1, -1))


def test_a_batch_that_cannot_be_written_is_rolled_back_whole(tmp_path):
    """One bad row fails the batch with a StoreError; none of its rows stay, and the
    store takes the next batch (the transaction was closed)."""
    with Store(tmp_path / "s.db") as store:
        run = store.start_run("m", "m.onnx", {})
        with pytest.raises(scenetool.store.StoreError, match="^cannot write to store .*: "
                                                             "NOT NULL constraint failed"):
            store.add_results(run, [("/p/good.jpg", 1, 1.0, "red", 0.5, None, None),
                                    (None, 1, 1.0, "red", 0.5, None, None)])
        assert list(store.rows(run)) == []
        store.add_results(run, [("/p/good.jpg", 1, 1.0, "red", 0.5, None, None)])
        (good,) = [r[0] for r in store.db.execute("SELECT id FROM results")]
        store.db.execute("CREATE TRIGGER full BEFORE INSERT ON results WHEN NEW.reused"
                         " BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        with pytest.raises(scenetool.store.StoreError,
                           match="^cannot write to store .*: disk full$"):
            store.reuse(run, store.rows_by_id([good, good]))
        store.db.execute("DROP TRIGGER full")
        store.db.execute("CREATE TRIGGER no_runs BEFORE INSERT ON runs"
                         " BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        with pytest.raises(scenetool.store.StoreError,
                           match="^cannot write to store .*: disk full$"):
            store.start_run("m", "m.onnx", {})
        store.reuse(run, store.rows_by_id([good]))
        store.reuse(run, [])
        assert [(r.path, r.reused) for r in store.rows(run)] == [("/p/good.jpg", False),
                                                                  ("/p/good.jpg", True)]


class _CtrlCAfterInsert:
    """A store connection that is interrupted (Ctrl-C) after a batch's rows are inserted,
    before its COMMIT."""

    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __getattr__(self, name):
        return getattr(self._db, name)

    def executemany(self, sql, rows):
        self._db.executemany(sql, rows)
        raise KeyboardInterrupt


def test_a_batch_interrupted_before_its_commit_is_neither_kept_nor_counted(tmp_path):
    """What `classify` says it kept after Ctrl-C (store.count) is what the store keeps."""
    row = ("/p/{}.jpg", 1, 1.0, "red", 0.5, None, None)
    with Store(tmp_path / "s.db") as store:
        run = store.start_run("m", "m.onnx", {})
        store.add_results(run, [(row[0].format(0), *row[1:])])
        real, store.db = store.db, _CtrlCAfterInsert(store.db)
        with pytest.raises(KeyboardInterrupt):
            store.add_results(run, [(row[0].format(i), *row[1:]) for i in (1, 2)])
        store.db = real
        assert store.count(run) == 1
    with Store(tmp_path / "s.db") as again:
        assert again.count(run) == 1


def test_the_default_store_is_in_the_user_config_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("SCENETOOL_STORE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    photo = make_image(tmp_path / "photos" / "r.png", "red")
    result = invoke("classify", str(photo))
    assert result.exit_code == 0, result.output
    expected = tmp_path / "config" / "scenetool" / "scenetool.db"
    assert expected.is_file()
    with Store(expected) as store:
        assert [Path(r.path).name for r in store.rows()] == ["r.png"]


def test_a_store_opened_without_a_path_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SCENETOOL_STORE", str(tmp_path / "env" / "from-env.db"))
    with Store() as store:
        assert store.path == tmp_path / "env" / "from-env.db"
    assert (tmp_path / "env" / "from-env.db").is_file()
