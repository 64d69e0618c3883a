"""The results store: reuse only what is unchanged, and open while another run holds the lock."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from conftest import make_image

import scenetool.store
from scenetool.cli import cli
from scenetool.store import Store


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


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
