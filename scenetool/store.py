"""The results store: an embedded SQLite database of runs and their per-image results.

Results are committed a batch at a time, so a killed run loses at most the batch in
flight. WAL mode and a busy timeout let two runs write at once. The schema is versioned
with `PRAGMA user_version`; `MIGRATIONS[n]` takes a store from version n to n + 1.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import click

from scenetool.constants import STORE_ENV
from scenetool.errors import StoreError

BUSY_TIMEOUT_MS = 30_000

MIGRATIONS: list[str] = [
    # 0 -> 1: the first schema.
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        started TEXT NOT NULL,
        finished TEXT,
        model_sha256 TEXT NOT NULL,
        model_path TEXT,
        arguments TEXT NOT NULL
    );
    CREATE TABLE results (
        id INTEGER PRIMARY KEY,
        run INTEGER NOT NULL REFERENCES runs(id),
        path TEXT NOT NULL,
        size INTEGER,
        mtime REAL,
        label TEXT,
        confidence REAL,
        top_k TEXT,
        error TEXT,
        reused INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX results_run ON results(run);
    CREATE INDEX results_path ON results(path);
    """,
    # 1 -> 2: the model's scene score, and whether it made the label unknown (not a scene).
    """
    ALTER TABLE results ADD COLUMN scene_score REAL;
    ALTER TABLE results ADD COLUMN not_scene INTEGER NOT NULL DEFAULT 0;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def default_store_path() -> Path:
    """$SCENETOOL_STORE, else scenetool.db in the user's data folder."""
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env)
    return Path(click.get_app_dir("scenetool")) / "scenetool.db"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Row:
    """One stored result, as the reports and exports see it."""

    run_id: int
    path: str
    size: int | None
    mtime: float | None
    label: str | None
    confidence: float | None
    top_k: list[tuple[str, float]]
    error: str | None
    model_sha256: str
    reused: bool = False
    scene_score: float | None = None  # None: the model has no scene score
    not_scene: bool = False  # labelled unknown because the score is below the threshold


@dataclass(frozen=True)
class Run:
    id: int
    started: str
    finished: str | None
    model_sha256: str
    model_path: str | None
    arguments: dict


class Store:
    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path else default_store_path()
        try:
            if self.path.is_dir():
                raise StoreError(f"store path is a folder: {self.path}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                      isolation_level=None, check_same_thread=False)
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._set_up()
        except StoreError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None

    def _set_up(self) -> None:
        """WAL mode and the schema. Switching a new file to WAL takes an exclusive lock that
        SQLite's busy handler does not wait for, so two runs creating one store at the same
        moment retry here until the busy timeout."""
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                if self.db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self.db.execute("PRAGMA journal_mode = WAL")
                self.db.execute("PRAGMA synchronous = NORMAL")
                self._migrate()
                return
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"store {self.path} has schema {version}; this scenetool knows "
                             f"up to {SCHEMA_VERSION}: upgrade scenetool")
        if version == SCHEMA_VERSION:
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]  # re-read, locked
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version = {step + 1}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, params: Iterable = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to store {self.path}: {exc}") from None

    # -- runs -----------------------------------------------------------------------------

    def start_run(self, model_sha256: str, model_path: str, arguments: dict) -> int:
        cur = self._write(
            "INSERT INTO runs (started, model_sha256, model_path, arguments) VALUES (?, ?, ?, ?)",
            (now(), model_sha256, model_path, json.dumps(arguments)))
        return int(cur.lastrowid)

    def finish_run(self, run_id: int) -> None:
        self._write("UPDATE runs SET finished = ? WHERE id = ?", (now(), run_id))

    def run(self, run_id: int | None = None) -> Run | None:
        """The run `run_id`, or the latest one."""
        sql = ("SELECT id, started, finished, model_sha256, model_path, arguments FROM runs "
               + ("WHERE id = ?" if run_id is not None else "ORDER BY id DESC LIMIT 1"))
        r = self.db.execute(sql, (run_id,) if run_id is not None else ()).fetchone()
        return Run(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) if r else None

    # -- results --------------------------------------------------------------------------

    def add_results(self, run_id: int, results: Iterable[tuple], reused: bool = False) -> None:
        """Commit one batch: tuples of (path, size, mtime, label, confidence, top_k, error)
        and optionally (..., scene_score, not_scene); `reused` marks results taken from
        earlier runs rather than classified."""
        rows = []
        for p, s, m, lab, c, t, e, *scene in results:
            score, not_scene = scene or (None, False)
            rows.append((run_id, p, s, m, lab, c, json.dumps(t) if t else None, e, int(reused),
                         score, int(bool(not_scene))))
        if not rows:
            return
        self._write("BEGIN IMMEDIATE")
        try:
            self.db.executemany(
                "INSERT INTO results (run, path, size, mtime, label, confidence, top_k, error,"
                " reused, scene_score, not_scene) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.db.execute("ROLLBACK")
            raise StoreError(f"cannot write to store {self.path}: {exc}") from None

    def reuse(self, run_id: int, rows: Iterable[Row]) -> None:
        """Commit copies of earlier results into this run (one transaction), marked as
        reused; the rows come as the run should keep them (its label)."""
        self.add_results(run_id, [
            (r.path, r.size, r.mtime, r.label, r.confidence, [list(t) for t in r.top_k] or None,
             r.error, r.scene_score, r.not_scene) for r in rows], reused=True)

    def find_done(self, model_sha256: str, path: str, size: int | None,
                  mtime: float | None, top_k: int = 1) -> int | None:
        """The id of an earlier good result for this unchanged file and model that holds at
        least `top_k` labels, if any (one stored with a smaller --top-k cannot answer)."""
        r = self.db.execute(
            "SELECT results.id FROM results JOIN runs ON runs.id = results.run"
            " WHERE results.path = ? AND runs.model_sha256 = ? AND results.error IS NULL"
            " AND results.size IS ? AND results.mtime IS ?"
            " AND json_array_length(results.top_k) >= ? ORDER BY results.id DESC LIMIT 1",
            (path, model_sha256, size, mtime, top_k)).fetchone()
        return int(r[0]) if r else None

    def count(self, run_id: int) -> int:
        """How many results the run has committed."""
        return int(self.db.execute("SELECT COUNT(*) FROM results WHERE run = ?",
                                   (run_id,)).fetchone()[0])

    def rows_by_id(self, result_ids: list[int]) -> list[Row]:
        """Stored results by their ids (in that order)."""
        by_id = {}
        for start in range(0, len(result_ids), 500):
            chunk = result_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.db.execute(self._SELECT + f"WHERE results.id IN ({marks})", chunk):
                by_id[r[-1]] = self._row(r)
        return [by_id[i] for i in result_ids if i in by_id]

    _SELECT = ("SELECT results.run, results.path, results.size, results.mtime, results.label,"
               " results.confidence, results.top_k, results.error, runs.model_sha256,"
               " results.reused, results.scene_score, results.not_scene, results.id"
               " FROM results JOIN runs ON runs.id = results.run ")

    @staticmethod
    def _row(r: tuple) -> Row:
        return Row(r[0], r[1], r[2], r[3], r[4], r[5],
                   [tuple(x) for x in json.loads(r[6])] if r[6] else [], r[7], r[8], bool(r[9]),
                   r[10], bool(r[11]))

    def rows(self, run_id: int | None = None) -> Iterator[Row]:
        """The results of one run, or with run_id None the latest result of every path."""
        if run_id is not None:
            cursor = self.db.execute(self._SELECT + "WHERE results.run = ? ORDER BY results.id",
                                     (run_id,))
        else:
            cursor = self.db.execute(
                self._SELECT + "WHERE results.id IN (SELECT MAX(id) FROM results GROUP BY path)"
                " ORDER BY results.id")
        for r in cursor:
            yield self._row(r)
