"""The results store: an embedded SQLite database of runs and their per-image results.

Results are committed a batch at a time, so a killed run loses at most the batch in
flight. WAL mode and a busy timeout let two runs write at once. The schema is versioned
with `PRAGMA user_version`; `MIGRATIONS[n]` takes a store from version n to n + 1.

A result's `path` is the file's key (`scenetool.paths`): UTF-8 TEXT, or for a path that
is not valid UTF-8 a BLOB of its exact bytes, so every file name has one faithful key.
A run records the process that runs it (pid, host) and, when it stops before finishing,
why (`ended`), so `report` can tell a run still going from one that was interrupted.
Every SQLite error, on any read or write, becomes a StoreError that names the store.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import click

from scenetool import paths
from scenetool.constants import STORE_ENV
from scenetool.errors import StoreError
from scenetool.fsutil import describe_mode, process_alive

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
    # 2 -> 3: how a run ended and which process runs it. The path column also holds
    # BLOBs from now on (the exact bytes of a path that is not UTF-8).
    """
    ALTER TABLE runs ADD COLUMN ended TEXT;
    ALTER TABLE runs ADD COLUMN pid INTEGER;
    ALTER TABLE runs ADD COLUMN host TEXT;
    """,
]
# The columns this scenetool reads and writes: a store lacking any is refused, by name.
COLUMNS = {
    "runs": ("id", "started", "finished", "model_sha256", "model_path", "arguments", "ended",
             "pid", "host"),
    "results": ("id", "run", "path", "size", "mtime", "label", "confidence", "top_k", "error",
                "reused", "scene_score", "not_scene"),
}
# Room kept beside the store, given up when the disk fills so the run's end can be recorded.
RESERVE_BYTES = 64 * 1024
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
    ended: str | None = None  # why it stopped before finishing
    pid: int | None = None
    host: str | None = None

    def state(self) -> str:
        """How the run stands: 'finished ...', 'still running ...', 'stopped ...: why', or
        'interrupted ...' (its process is gone without saying why)."""
        if self.finished:
            return f"finished {self.finished}"
        if self.ended:
            return f"stopped before finishing: {self.ended}"
        if self.pid is not None and self.host == socket.gethostname():
            if process_alive(self.pid):
                return f"still running (process {self.pid})"
            return "interrupted (its process ended before finishing)"
        if self.pid is not None:
            return f"not finished (started by process {self.pid} on {self.host})"
        return "interrupted (not finished)"


_RUN_COLUMNS = "id, started, finished, model_sha256, model_path, arguments, ended, pid, host"


def _text(value: str | None) -> str | None:
    """Text for a TEXT column: a byte that is not UTF-8 (from a path in a message) as \\xNN."""
    return None if value is None else paths.csv_text(value)


def _arguments(text: str) -> dict:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


class Store:
    """The results database. `readonly` (for reading commands) opens a store that cannot be
    written, such as one in a read-only folder, without changing it."""

    def __init__(self, path: str | os.PathLike | None = None, readonly: bool = False):
        self.path = Path(path) if path else default_store_path()
        self.readonly = readonly
        self.reserve = self.path.with_name(self.path.name + "-reserve")
        try:
            if self.path.is_dir():
                raise StoreError(f"store path is a folder: {self.path}")
            if self.path.exists() and not self.path.is_file():  # a FIFO would hang SQLite
                kind = describe_mode(self.path.stat().st_mode)
                raise StoreError(f"store {self.path} is {kind}, not a file")
            if readonly and not self._writable():
                self.db = self._connect_readonly()
            else:
                self.readonly = False
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                          isolation_level=None, check_same_thread=False)
                self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                self._set_up()
                self._keep_reserve()
            self._check_schema()
        except StoreError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None

    def _writable(self) -> bool:
        """Whether the store (or, if it does not exist, its folder) can be written."""
        if self.path.exists():
            return os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)
        parent = self.path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        return os.access(parent, os.W_OK)

    def _connect_readonly(self) -> sqlite3.Connection:
        """A read-only connection; where SQLite cannot even keep its shared-memory file
        beside the store (a read-only folder), the file is opened as immutable."""
        if not self.path.exists():
            raise StoreError(f"no runs in {self.path} yet: run scenetool classify first")
        uri = "file:" + urllib.parse.quote(os.fsencode(self.path.resolve())) + "?mode=ro"
        for extra in ("", "&immutable=1"):
            db = sqlite3.connect(uri + extra, uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                                 isolation_level=None, check_same_thread=False)
            try:
                db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
                return db
            except sqlite3.OperationalError:
                db.close()
                if extra:
                    raise
        raise AssertionError("unreachable")

    def _check_schema(self) -> None:
        """Refuse, by name, a store whose schema is not (all) there."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"store {self.path} has schema {version}; this scenetool knows "
                             f"up to {SCHEMA_VERSION}: upgrade scenetool")
        if version < SCHEMA_VERSION:  # only a read-only store is left unmigrated
            raise StoreError(f"store {self.path} is from an older scenetool and cannot be "
                             "upgraded here (read-only): open it once where it can be written")
        for table, wanted in COLUMNS.items():
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            missing = [c for c in wanted if c not in have]
            if missing:
                what = f"table {table}" if not have else f"{table}.{', '.join(missing)}"
                raise StoreError(f"store {self.path} is incomplete (no {what}): not a "
                                 "scenetool store, or a damaged one")

    def _damaged(self, exc: Exception) -> StoreError:
        return StoreError(f"store {self.path} is damaged: {exc}")

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
        if version >= SCHEMA_VERSION:
            return  # a newer schema is refused by _check_schema
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
            self._rollback()
            raise

    def _keep_reserve(self) -> None:
        """Keep RESERVE_BYTES beside the store (best effort: not on a disk already full)."""
        try:
            if not self.reserve.exists():
                with open(self.reserve, "wb") as f:
                    f.write(b"\0" * RESERVE_BYTES)
        except OSError:
            try:
                self.reserve.unlink()
            except OSError:
                pass

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rollback(self) -> None:
        """Roll back the open transaction, if SQLite has not already (it does on a full
        disk)."""
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _write_error(self, exc: sqlite3.Error) -> StoreError:
        if isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc):
            return self._damaged(exc)
        return StoreError(f"cannot write to store {self.path}: {exc}")

    def _write(self, sql: str, params: Iterable = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, params)
        except sqlite3.Error as exc:
            raise self._write_error(exc) from None

    def _transaction(self, sql: str, rows: list[tuple]) -> None:
        """`executemany(sql, rows)` in one committed transaction."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(sql, rows)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise self._write_error(exc) from None
        except BaseException:
            # Ctrl-C mid-batch: the batch is not kept, so it must not be counted as kept
            # either (left open, this connection would see its rows until it closed)
            self._rollback()
            raise

    def _read(self, sql: str, params: Iterable = ()) -> Iterator[tuple]:
        """The rows of a query; a damaged store is a StoreError at any row."""
        try:
            cursor = self.db.execute(sql, tuple(params))
            while True:
                rows = cursor.fetchmany(256)
                if not rows:
                    return
                yield from rows
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot read store {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            raise self._damaged(exc) from None

    def _one(self, sql: str, params: Iterable = ()) -> tuple | None:
        return next(self._read(sql, params), None)

    # -- runs -----------------------------------------------------------------------------

    def start_run(self, model_sha256: str, model_path: str, arguments: dict) -> int:
        cur = self._write(
            "INSERT INTO runs (started, model_sha256, model_path, arguments, pid, host)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (now(), model_sha256, _text(model_path), json.dumps(arguments), os.getpid(),
             socket.gethostname()))
        return int(cur.lastrowid)

    def finish_run(self, run_id: int) -> None:
        self._write("UPDATE runs SET finished = ? WHERE id = ?", (now(), run_id))

    def end_run(self, run_id: int, reason: str) -> bool:
        """Record why a run stopped before finishing. On a full disk, the room kept beside
        the store is given up for it. Never raises: False when it could not be recorded."""
        for attempt in range(2):
            try:
                self.db.execute("UPDATE runs SET ended = ? WHERE id = ? AND finished IS NULL",
                                (reason, run_id))
                return True
            except sqlite3.Error:
                self._rollback()
                if attempt or not self.reserve.exists():
                    return False
                try:
                    self.reserve.unlink()
                except OSError:
                    return False
        return False

    def run(self, run_id: int | None = None) -> Run | None:
        """The run `run_id`, or the latest one."""
        sql = (f"SELECT {_RUN_COLUMNS} FROM runs "
               + ("WHERE id = ?" if run_id is not None else "ORDER BY id DESC LIMIT 1"))
        r = self._one(sql, (run_id,) if run_id is not None else ())
        return Run(*r[:5], _arguments(r[5]), *r[6:]) if r else None

    # -- results --------------------------------------------------------------------------

    def add_results(self, run_id: int, results: Iterable[tuple], reused: bool = False) -> None:
        """Commit one batch: tuples of (path, size, mtime, label, confidence, top_k, error)
        and optionally (..., scene_score, not_scene); `reused` marks results taken from
        earlier runs rather than classified."""
        rows = []
        for p, s, m, lab, c, t, e, *scene in results:
            score, not_scene = scene or (None, False)
            rows.append((run_id, paths.to_column(p), s, m, _text(lab), c,
                         json.dumps(t) if t else None, _text(e), int(reused), score,
                         int(bool(not_scene))))
        if rows:
            self._transaction(
                "INSERT INTO results (run, path, size, mtime, label, confidence, top_k, error,"
                " reused, scene_score, not_scene) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows)

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
        r = self._one(
            "SELECT results.id FROM results JOIN runs ON runs.id = results.run"
            " WHERE results.path = ? AND runs.model_sha256 = ? AND results.error IS NULL"
            " AND results.size IS ? AND results.mtime IS ?"
            " AND json_array_length(results.top_k) >= ? ORDER BY results.id DESC LIMIT 1",
            (paths.to_column(path), model_sha256, size, mtime, top_k))
        return int(r[0]) if r else None

    def count(self, run_id: int) -> int:
        """How many results the run has committed."""
        r = self._one("SELECT COUNT(*) FROM results WHERE run = ?", (run_id,))
        return int(r[0]) if r else 0

    def rows_by_id(self, result_ids: list[int]) -> list[Row]:
        """Stored results by their ids (in that order)."""
        by_id = {}
        for start in range(0, len(result_ids), 500):
            chunk = result_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._read(self._SELECT + f"WHERE results.id IN ({marks})", chunk):
                by_id[r[12]] = self._row(r)
        return [by_id[i] for i in result_ids if i in by_id]

    _SELECT = ("SELECT results.run, results.path, results.size, results.mtime, results.label,"
               " results.confidence, results.top_k, results.error, runs.model_sha256,"
               " results.reused, results.scene_score, results.not_scene, results.id"
               " FROM results JOIN runs ON runs.id = results.run ")

    def _row(self, r: tuple) -> Row:
        try:
            top_k = [(str(x[0]), float(x[1])) for x in json.loads(r[6])] if r[6] else []
        except (TypeError, ValueError, IndexError, KeyError):
            raise StoreError(f"store {self.path} is damaged: result {r[12]} has an "
                             "unreadable top_k") from None
        return Row(r[0], paths.from_column(r[1]), r[2], r[3], r[4], r[5], top_k, r[7], r[8],
                   bool(r[9]), r[10], bool(r[11]))

    def rows(self, run_id: int | None = None) -> Iterator[Row]:
        """The results of one run, or with run_id None the latest result of every path."""
        if run_id is not None:
            rows = self._read(self._SELECT + "WHERE results.run = ? ORDER BY results.id",
                              (run_id,))
        else:
            rows = self._read(
                self._SELECT + "WHERE results.id IN (SELECT MAX(id) FROM results GROUP BY path)"
                " ORDER BY results.id")
        for r in rows:
            yield self._row(r)
