"""Hostile and unlucky inputs (issue 8), tried the way a user meets them: the real CLI as a
subprocess on files made in tmp_path.

Every test asserts the exit code, that no Python traceback reaches stdout or stderr, that
the file at fault is named, and what the store kept. The categories:

1. file names of every kind          4. arguments
2. faults of the machine             5. sort --move never moves a file outside SRC
3. hostile files where a model is    6. the contact sheet keeps only pixels, CSP by hash
   expected                          7. messages that say what really happened
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import build_tiny_model, make_image
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
SETPRIV = shutil.which("setpriv")
PATH_MAX = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096


# -- running the CLI ----------------------------------------------------------------------

def cli(*args: str | bytes | os.PathLike, timeout: float = 120, env: dict | None = None,
        no_root_bypass: bool = False, **kwargs) -> subprocess.CompletedProcess:
    """`python -m scenetool ARGS` as a user runs it: bytes out, never a traceback.

    `no_root_bypass`: run without root's power to read and write any file, so that file
    modes apply (as for every other user) even when the tests run as root.
    """
    command = [sys.executable, "-m", "scenetool", *args]
    if no_root_bypass and IS_ROOT:
        command = [SETPRIV, "--bounding-set=-dac_override,-dac_read_search", "--", *command]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.run(command, env=full_env, timeout=timeout, **kwargs)
    out, err = proc.stdout or b"", proc.stderr or b""
    assert b"Traceback" not in out + err, (out + err).decode("utf-8", "replace")
    return proc


def needs_root_bypass_off(test):
    """Tests that need file modes to bind: as root they run the CLI through setpriv."""
    return pytest.mark.skipif(IS_ROOT and SETPRIV is None,
                              reason="running as root without setpriv: file modes do not "
                                     "bind root, so an unreadable folder cannot be made")(test)


def needs_tmpfs(test):
    return pytest.mark.skipif(not IS_ROOT or shutil.which("mount") is None,
                              reason="a small full disk needs a tmpfs mount (root only)")(test)


def one_line_error(stderr: bytes) -> str:
    """The single line a fatal error prints (exit 2)."""
    text = stderr.decode("utf-8")
    lines = [x for x in text.splitlines() if x.strip()]
    assert len(lines) == 1, text
    return lines[0]


def store_path() -> Path:
    return Path(os.environ["SCENETOOL_STORE"])


def stored(run: int | None = None, db: Path | None = None) -> dict[bytes, tuple]:
    """The store's results as {path bytes: (label, error)}. The documented key: the path as
    UTF-8 text, or, for a path that is not valid UTF-8, its bytes as a BLOB."""
    with sqlite3.connect(db or store_path()) as con:
        sql = "SELECT path, label, error FROM results" + (" WHERE run = ?" if run else "")
        rows = con.execute(sql, (run,) if run else ()).fetchall()
    out = {}
    for path, label, error in rows:
        key = path if isinstance(path, bytes) else path.encode("utf-8")
        out[key] = (label, error)
    return out


def runs(db: Path | None = None) -> list[tuple]:
    with sqlite3.connect(db or store_path()) as con:
        return con.execute("SELECT id, finished, arguments FROM runs ORDER BY id").fetchall()


def shown(name: bytes) -> str:
    """How a name must look on a terminal or in HTML: the characters themselves, except that
    control characters (and Unicode's bidi and line separators) are escaped the way Python
    writes them (\\t, \\x1b, \\u202e) and a byte that is not UTF-8 is \\xNN."""
    out = []
    for ch in os.fsdecode(name):
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch in "\t\n\r":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r"}[ch])
        elif unicodedata.category(ch) in ("Cc", "Zl", "Zp") or ch in BIDI:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
RAW_CONTROLS = [bytes([c]) for c in range(32) if c not in (9, 10)] + [b"\x7f", b"\xc2\x9b",
                                                                      "\u202e".encode()]


# -- 1. file names of every kind ----------------------------------------------------------

NAMES = {
    "latin-1": b"caf\xe9 \xe0 la plage.jpg",
    "invalid-utf8-only": b"\xff\xfe\xfd.png",
    "mixed-utf8": "Ångström-".encode() + b"\xe9\x80.jpg",
    "windows-1252": b"\x93quoted\x94 \x96 dash.jpeg",
    "esc": b"esc\x1b[31mred\x1b[0m.jpg",
    "cr": b"cr\rname.jpg",
    "lf": b"lf\nname.jpg",
    "crlf": b"two\r\nlines.jpg",
    "tab": b"tab\tname.jpg",
    "bel": b"bell\x07.jpg",
    "del-and-c1": b"del\x7f csi\xc2\x9b31m.png",
    "osc-hyperlink": b"\x1b]8;;http:\x1b\\link\x1b]8;;\x1b\\.jpg",
    "bidi": "photo\u202egpj.exe".encode() + b".jpg",
    "markup-bold": b"[bold]b[/bold].jpg",
    "markup-bad-close": b"x[/x].jpg",
    "markup-link": b"[link=file:evil]l.jpg",
    "markup-copy": b"holiday [copy].jpg",
    "markup-escape": b"\\[not] [/].jpg",
    "html": b"<img src=x onerror=alert(1)> &amp; \"q\" 'a'.jpg",
    "csv": b'comma, "quote",semi;.jpg',
    "dash-start": b"-rf.jpg",
    "spaces": b"  leading and trailing  .jpg",
    "255-ascii": b"a" * 251 + b".jpg",
    "255-utf8": "é".encode() * 125 + b"e.jpg",
    "255-invalid": b"\xe9" * 250 + b".jpeg",
}


def make_named(folder: Path, name: bytes, colour: str = "green") -> bytes:
    """An image under a name given as bytes; returns its full path as bytes."""
    buffer = io.BytesIO()
    make_image(folder / "tmp.png", colour)
    data = (folder / "tmp.png").read_bytes()
    (folder / "tmp.png").unlink()
    buffer.write(data)
    full = os.fsencode(folder) + b"/" + name  # a name with a / in it is in a subfolder
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(buffer.getvalue())
    return full


@pytest.mark.parametrize("name", NAMES.values(), ids=NAMES.keys())
def test_any_file_name_is_classified_stored_and_shown_literally(tmp_path, name):
    folder = tmp_path / "photos"
    folder.mkdir()
    good = make_image(folder / "good.jpg", "red")
    hostile = make_named(folder, name, "green")
    csv_out, json_out = tmp_path / "out.csv", tmp_path / "out.jsonl"
    proc = cli("classify", folder, "--csv", csv_out, "--json", json_out,
               env={"COLUMNS": "3000"})
    assert proc.returncode == 0, proc.stderr.decode()

    # The store: one row each, under the exact bytes of the path.
    rows = stored()
    assert rows[hostile] == ("green", None)
    assert rows[os.fsencode(good)] == ("red", None)

    # The table: the name literally (markup not interpreted), control characters escaped.
    out, err = proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")
    line = next(x for x in out.splitlines() if shown(name) in x)
    assert line.split()[-2:] == ["green", "100.0%"] or "green" in line
    for raw in RAW_CONTROLS:
        if raw in name:
            assert raw not in proc.stdout + proc.stderr
    assert "Traceback" not in err

    # JSON Lines: the path round-trips exactly (os.fsencode of the text gives the bytes).
    records = [json.loads(x) for x in json_out.read_text("utf-8").splitlines()]
    assert {os.fsencode(r["path"]): r["label"] for r in records} == {
        hostile: "green", os.fsencode(good): "red"}

    # CSV: a conforming reader gets two records, the name exactly when it is UTF-8 (CR and
    # LF included), else with \xNN for the bytes that are not.
    with open(csv_out, encoding="utf-8", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2
    paths = {r["path"]: r["label"] for r in table}
    try:
        expected = os.fsencode(hostile).decode("utf-8")
    except UnicodeDecodeError:
        expected = os.fsencode(hostile).decode("utf-8", "backslashreplace")
    assert paths[expected] == "green"
    # ... and a reader in universal-newline mode (the Python default) is not broken either.
    assert len(list(csv.DictReader(io.StringIO(csv_out.read_text("utf-8"))))) == 2


def test_a_store_of_the_first_schema_is_migrated_and_keeps_its_rows(tmp_path):
    from scenetool.store import MIGRATIONS, SCHEMA_VERSION

    db = store_path()
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as con:
        con.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
        con.execute("INSERT INTO runs (started, finished, model_sha256, arguments) VALUES"
                    " ('2025-01-01T00:00:00+00:00', NULL, 'abc', '{}')")
        con.execute("INSERT INTO results (run, path, label, confidence, top_k) VALUES"
                    " (1, '/old/photo.jpg', 'red', 0.9, '[[\"red\", 0.9]]')")
    folder = tmp_path / "photos"
    folder.mkdir()
    hostile = make_named(folder, b"caf\xe9.jpg", "green")
    assert cli("classify", folder, "-q").returncode == 0
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        kinds = dict(con.execute("SELECT typeof(path), path FROM results").fetchall())
    assert kinds == {"text": "/old/photo.jpg", "blob": hostile}
    proc = cli("report", "--all", "--json", "-")
    paths = {os.fsencode(json.loads(x)["path"]) for x in proc.stdout.decode().splitlines()}
    assert paths == {b"/old/photo.jpg", hostile}
    header = cli("report", "--run", "1").stdout.decode().splitlines()[0]
    assert "interrupted" in header


@pytest.fixture
def archive(tmp_path) -> tuple[Path, dict[bytes, str]]:
    """One folder holding every hostile name (green) and a good red photo."""
    folder = tmp_path / "archive"
    folder.mkdir()
    expected = {os.fsencode(make_image(folder / "good.jpg", "red")): "red"}
    for name in NAMES.values():
        expected[make_named(folder, name)] = "green"
    return folder, expected


def test_every_name_through_report_exports_and_the_contact_sheet(tmp_path, archive):
    folder, expected = archive
    assert cli("classify", folder, "-q").returncode == 0
    assert {k: v[0] for k, v in stored().items()} == expected

    proc = cli("report", "--json", "-")
    assert proc.returncode == 0
    got = {os.fsencode(json.loads(x)["path"]): json.loads(x)["label"]
           for x in proc.stdout.decode("utf-8").splitlines()}
    assert got == expected

    proc = cli("report", "--csv", "-")
    assert proc.returncode == 0
    table = list(csv.DictReader(io.StringIO(proc.stdout.decode("utf-8"), newline="")))
    assert len(table) == len(expected)

    # The report's tables: every name escaped, none interpreted as markup.
    proc = cli("report", "--low", "1", env={"COLUMNS": "1000"})
    assert proc.returncode == 0
    text = proc.stdout.decode("utf-8")
    for raw in RAW_CONTROLS:
        assert raw not in proc.stdout

    # The contact sheet, written to a name of 255 bytes: every caption is the name as
    # shown, escaped for HTML; no element comes from a name.
    sheet_name = b"s" * 250 + b".html"
    target = os.fsencode(tmp_path) + b"/" + sheet_name
    proc = cli("report", "--html", target)
    assert proc.returncode == 0, proc.stderr.decode()
    page = Path(os.fsdecode(target)).read_text("utf-8")
    parsed = Sheet()
    parsed.feed(page)
    captions = set(parsed.captions)
    for path in expected:
        assert shown(os.path.basename(path)) in captions, shown(os.path.basename(path))
    assert parsed.img_count == len(expected)
    assert "onerror" not in " ".join(parsed.attribute_names)
    del text


def test_sort_copies_and_moves_every_name(tmp_path, archive):
    folder, expected = archive
    dest = tmp_path / "sorted"
    proc = cli("sort", folder, dest)
    assert proc.returncode == 0, proc.stderr.decode()
    for path, label in expected.items():
        target = os.fsencode(dest) + b"/" + label.encode() + b"/" + os.path.basename(path)
        assert os.path.isfile(target), target
    # No temporary file left beside them (their names must fit beside a 255-byte name).
    assert not [p for p in dest.rglob("*") if p.name.endswith(".part")]

    moved = tmp_path / "moved"
    proc = cli("sort", folder, moved, "--move")
    assert proc.returncode == 0, proc.stderr.decode()
    for path, label in expected.items():
        assert not os.path.lexists(path)
        target = os.fsencode(moved) + b"/" + label.encode() + b"/" + os.path.basename(path)
        assert os.path.isfile(target), target


def test_evaluate_with_every_name(tmp_path):
    folder = tmp_path / "labelled"
    for label in ("red", "green", "blue"):
        (folder / label).mkdir(parents=True)
        make_image(folder / label / "plain.jpg", label)
    for name in NAMES.values():
        make_named(folder / "green", name, "green")
    proc = cli("evaluate", folder, "--json", "-")
    assert proc.returncode == 0, proc.stderr.decode()
    scores = json.loads(proc.stdout)
    assert scores["n"] == 3 + len(NAMES)
    assert b"Accuracy 100.00%" in proc.stderr


class Sheet(HTMLParser):
    """The contact sheet's captions, images and attribute names."""

    def __init__(self) -> None:
        super().__init__()
        self.captions: list[str] = []
        self.img_count = 0
        self.img_srcs: list[str] = []
        self.attribute_names: list[str] = []
        self.scripts: list[str] = []
        self.csp: str | None = None
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.attribute_names += [k for k, _ in attrs]
        if tag == "img":
            self.img_count += 1
            self.img_srcs.append(a.get("src") or "")
        if tag == "span" and a.get("class") == "name":
            self._in = "caption"
            self.captions.append("")
        if tag == "script":
            self._in = "script"
            self.scripts.append("")
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "content-security-policy":
            self.csp = a.get("content")

    def handle_endtag(self, tag):
        if tag in ("span", "script"):
            self._in = None

    def handle_data(self, data):
        if self._in == "caption":
            self.captions[-1] += data
        elif self._in == "script":
            self.scripts[-1] += data


def test_a_file_named_twice_is_classified_once(tmp_path):
    folder = tmp_path / "photos"
    a = make_image(folder / "a.jpg", "red")
    make_image(folder / "b.jpg", "blue")
    os.symlink("a.jpg", folder / "link-to-a.jpg")  # a name of its own: classified too
    proc = cli("classify", a, a, folder, "photos/./a.jpg", "photos/../photos/a.jpg", folder,
               "--json", "-", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    records = [json.loads(x) for x in proc.stdout.decode().splitlines()]
    assert sorted(os.path.basename(r["path"]) for r in records) == [
        "a.jpg", "b.jpg", "link-to-a.jpg"]
    run_id = runs()[-1][0]
    assert len(stored(run_id)) == 3
    assert b"4 file(s) named more than once (classified once)" in proc.stderr


def _deep_tree(root: Path, total: int) -> bytes:
    """Folders below `root` whose full path is longer than `total` bytes, made through
    folder descriptors (no single call sees the long path); returns the deepest folder."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    path = os.fsencode(root)
    part = b"d" * 200
    try:
        while len(path) <= total:
            os.mkdir(part, dir_fd=fd)
            new = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
            path += b"/" + part
        image = io.BytesIO()
        make_image(root / "x.png", "blue")
        image.write((root / "x.png").read_bytes())
        (root / "x.png").unlink()
        out = os.open(b"deep.png", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, image.getvalue())
        os.close(out)
    finally:
        os.close(fd)
    return path + b"/deep.png"


def test_paths_deeper_than_path_max(tmp_path):
    root = tmp_path / "deep"
    root.mkdir()
    make_image(root / "top.jpg", "red")
    deep = _deep_tree(root, PATH_MAX + 100)
    assert len(deep) > PATH_MAX
    proc = cli("classify", root, "--json", "-")
    assert proc.returncode == 0, proc.stderr.decode()
    labels = {os.fsencode(json.loads(x)["path"]): json.loads(x)["label"]
              for x in proc.stdout.decode().splitlines()}
    assert labels[deep] == "blue"
    assert stored()[deep] == ("blue", None)
    sheet = tmp_path / "sheet.html"
    assert cli("report", "--html", sheet).returncode == 0
    parsed = Sheet()
    parsed.feed(sheet.read_text())
    assert sum(s.startswith("data:image/jpeg") for s in parsed.img_srcs) == 2
    dest = tmp_path / "sorted"
    proc = cli("sort", root, dest)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (dest / "blue" / "deep.png").is_file() and (dest / "red" / "top.jpg").is_file()


@needs_root_bypass_off
def test_a_folder_that_cannot_be_listed_or_stated_is_named(tmp_path):
    folder = tmp_path / "photos"
    make_image(folder / "ok.jpg", "red")
    locked = folder / "locked"
    make_image(locked / "hidden.jpg", "red")
    make_image(folder / "shut" / "inner" / "x.jpg", "red")
    os.symlink("loop", folder / "loop")  # a link to itself: cannot be stated (ELOOP)
    locked.chmod(0o000)
    (folder / "shut").chmod(0o100)  # can pass through, cannot list
    try:
        proc = cli("classify", folder, no_root_bypass=True)
    finally:
        locked.chmod(0o755)
        (folder / "shut").chmod(0o755)
    assert proc.returncode == 1, proc.stderr.decode()
    err = " ".join(proc.stderr.decode().split())
    assert "locked" in err and "ermission denied" in err
    assert "shut" in err
    assert "loop" in err and "symbolic links" in err
    assert stored()[os.fsencode(folder / "ok.jpg")] == ("red", None)


# -- 2. faults of the machine -------------------------------------------------------------

@pytest.fixture
def photos40(tmp_path) -> Path:
    folder = tmp_path / "photos40"
    for i in range(40):
        make_image(folder / f"p{i:02d}.png", ("red", "green", "blue")[i % 3], size=(16, 16))
    return folder


def _run_end(run_id: int) -> str:
    """What `report` says about how a run ended (its header line)."""
    proc = cli("report", "--run", str(run_id))
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode().splitlines()[0]


@pytest.mark.parametrize("fmt", ["--csv", "--json"])
def test_export_to_dev_full_is_exit_2_and_keeps_what_was_committed(photos40, fmt):
    proc = cli("classify", photos40, fmt, "/dev/full", "--batch-size", "8")
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    assert "/dev/full" in line and "No space left on device" in line
    run_id = runs()[-1][0]
    assert len(stored(run_id)) >= 1  # at least the first batch was committed and is kept
    header = _run_end(run_id)
    assert "No space left on device" in header and "interrupted" not in header


def test_report_export_to_dev_full(photos40):
    assert cli("classify", photos40, "-q").returncode == 0
    for args in (["--csv", "/dev/full"], ["--json", "/dev/full"], ["--html", "/dev/full"]):
        proc = cli("report", *args)
        assert proc.returncode == 2, args
        assert "/dev/full" in one_line_error(proc.stderr)
        # Written to, never replaced: a rename over it would swap the device for a file.
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode), args


def test_closed_stdout(photos40):
    proc = cli("classify", photos40, "--json", "-", stdout=None,
               preexec_fn=lambda: os.close(1))
    assert proc.returncode == 2
    assert "stdout" in one_line_error(proc.stderr)
    assert cli("classify", photos40, "-q").returncode == 0
    proc = cli("report", "--csv", "-", stdout=None, preexec_fn=lambda: os.close(1))
    assert proc.returncode == 2
    assert "stdout" in one_line_error(proc.stderr)


@pytest.mark.parametrize("command", [["classify", "--json", "-", "--batch-size", "8"],
                                     ["report", "--csv", "-"], ["report"]])
def test_broken_pipe_is_exit_2_one_line_and_keeps_results(photos40, command):
    if command[0] == "report":
        assert cli("classify", photos40, "-q").returncode == 0
        args = command
    else:
        args = [command[0], photos40, *command[1:]]
    read, write = os.pipe()
    os.close(read)  # nobody reads: the first write fails
    try:
        proc = cli(*args, stdout=write)
    finally:
        os.close(write)
    assert proc.returncode == 2
    assert "broken pipe" in one_line_error(proc.stderr).lower()
    if command[0] == "classify":
        run_id = runs()[-1][0]
        assert len(stored(run_id)) >= 8
        assert "interrupted" not in _run_end(run_id)


@needs_tmpfs
def test_disk_full_mid_run_keeps_what_was_committed(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", small], check=True)
    try:
        db = small / "store.db"
        photos = tmp_path / "many"
        for i in range(400):
            make_image(photos / f"p{i:03d}.png", ("red", "green", "blue")[i % 3], size=(8, 8))
        env = {"SCENETOOL_STORE": str(db)}
        assert cli("classify", photos / "p000.png", "-q", env=env).returncode == 0
        filler = small / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # fill the disk...
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        os.truncate(filler, max(filler.stat().st_size - 64 * 1024, 0))  # ...but a little
        proc = cli("classify", photos, "--json", "-", "--batch-size", "4", "--force", env=env)
        assert proc.returncode == 2, proc.stderr.decode()
        line = one_line_error(proc.stderr)
        assert str(db) in line and ("full" in line or "No space" in line)
        yielded = {os.fsencode(json.loads(x)["path"])
                   for x in proc.stdout.decode().splitlines()}
        filler.unlink()
        run_id = runs(db)[-1][0]
        kept = stored(run_id, db)
        assert yielded and yielded <= set(kept)  # every result shown was committed and stays
        assert len(kept) < 400
        header = cli("report", "--run", str(run_id), env=env).stdout.decode().splitlines()[0]
        assert "full" in header or "No space" in header
    finally:
        subprocess.run(["umount", "-l", small], check=False)


def _corrupt_store(db: Path) -> None:
    """Overwrite every page but the first (header and schema) with garbage."""
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.seek(4096)
        f.write(bytes((i * 37 + 11) % 256 for i in range(size - 4096)))


def _half_schema(db: Path) -> None:
    with sqlite3.connect(db) as con:
        con.execute("DROP TABLE results")


def _runs_lacks_column(db: Path) -> None:
    with sqlite3.connect(db) as con:
        con.executescript("CREATE TABLE r2 AS SELECT id, started FROM runs; DROP TABLE runs;"
                          " ALTER TABLE r2 RENAME TO runs;")


def _garbage_header(db: Path) -> None:
    with open(db, "r+b") as f:
        f.write(b"this is not a database, it only has its name" * 3)


@pytest.mark.parametrize("damage", [_corrupt_store, _half_schema, _runs_lacks_column,
                                    _garbage_header])
def test_damaged_store_is_exit_2_naming_it_for_every_command(tmp_path, photos40, damage):
    assert cli("classify", photos40, "-q").returncode == 0
    make_image(photos40 / "new.png", "red")
    db = store_path()
    damage(db)
    commands = [
        ["classify", photos40, "-q"],
        ["report"], ["report", "--all"], ["report", "--csv", "-"], ["report", "--json", "-"],
        ["report", "--html", tmp_path / "sheet.html"], ["report", "--run", "1"],
        ["sort", photos40, tmp_path / "sorted", "--dry-run"],
    ]
    for command in commands:
        proc = cli(*command)
        assert proc.returncode == 2, (command, proc.stderr.decode())
        assert str(db) in one_line_error(proc.stderr), command
    assert not (tmp_path / "sorted").exists()


STORE_FILES = {"fifo": lambda p: os.mkfifo(p) or p, "dev-null": lambda _: Path("/dev/null"),
               "folder": lambda p: p.mkdir() or p}


@pytest.mark.parametrize("make", STORE_FILES.values(), ids=STORE_FILES.keys())
def test_a_store_that_is_not_a_file_is_refused(tmp_path, photos40, make):
    store = make(tmp_path / "store.db")
    for args in (["report"], ["classify", photos40, "-q"]):
        proc = cli(*args, "--store", store, timeout=30)
        assert proc.returncode == 2
        assert str(store) in one_line_error(proc.stderr)


@needs_root_bypass_off
def test_evaluate_names_a_folder_it_cannot_list(tmp_path):
    folder = tmp_path / "labelled"
    for label in ("red", "green", "blue"):
        make_image(folder / label / "a.jpg", label)
    make_image(folder / "red" / "locked" / "b.jpg", "red")
    (folder / "red" / "locked").chmod(0)
    try:
        proc = cli("evaluate", folder, no_root_bypass=True)
    finally:
        (folder / "red" / "locked").chmod(0o755)
    assert proc.returncode == 1
    err = " ".join(proc.stderr.decode().split())
    assert "locked" in err and "ermission denied" in err


@needs_root_bypass_off
def test_report_reads_a_store_in_a_read_only_folder(tmp_path, photos40):
    db = tmp_path / "ro" / "scenetool.db"
    env = {"SCENETOOL_STORE": str(db)}
    assert cli("classify", photos40, "-q", env=env).returncode == 0
    db.chmod(0o444)
    db.parent.chmod(0o555)
    try:
        proc = cli("report", env=env, no_root_bypass=True)
        assert proc.returncode == 0, proc.stderr.decode()
        assert b"40 images" in proc.stdout
        proc = cli("report", "--csv", "-", env=env, no_root_bypass=True)
        assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 41
        proc = cli("classify", photos40, "-q", env=env, no_root_bypass=True)
        assert proc.returncode == 2
        assert str(db) in one_line_error(proc.stderr)
    finally:
        db.parent.chmod(0o755)
        db.chmod(0o644)


# -- 3. hostile files where a model is expected -------------------------------------------

def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.onnx"
    os.mkfifo(path)
    return path


def _huge(tmp_path: Path) -> Path:
    path = tmp_path / "huge.onnx"
    with open(path, "wb") as f:
        f.truncate(3 << 30)  # sparse: 3 GiB that take no room
    return path


def _link_to_zero(tmp_path: Path) -> Path:
    path = tmp_path / "zero.onnx"
    os.symlink("/dev/zero", path)
    return path


def _sparse_gigabyte(tmp_path: Path) -> Path:
    path = tmp_path / "zeros.onnx"
    with open(path, "wb") as f:
        f.truncate(1 << 30)  # under the size cap: refused by its first byte, not read
    return path


MODEL_FILES = {"dev-zero": lambda _: Path("/dev/zero"), "fifo": _fifo, "huge": _huge,
               "sparse-gigabyte": _sparse_gigabyte,
               "link-to-dev-zero": _link_to_zero, "folder": lambda p: p,
               "dev-null": lambda _: Path("/dev/null")}


@pytest.mark.parametrize("make", MODEL_FILES.values(), ids=MODEL_FILES.keys())
@pytest.mark.parametrize("command", ["info", "classify"])
def test_a_hostile_model_file_is_refused_quickly(tmp_path, make, command):
    model = make(tmp_path)
    make_image(tmp_path / "photos" / "a.jpg")
    args = ["info"] if command == "info" else ["classify", tmp_path / "photos"]
    started = time.monotonic()
    proc = cli(*args, "--model", model, timeout=30)
    assert time.monotonic() - started < 20
    assert proc.returncode == 2
    assert str(model) in one_line_error(proc.stderr)


BAD_META = {
    "labels-number": {"labels": "5"},
    "labels-mixed": {"labels": '["a", 3, "c"]'},
    "labels-nested": {"labels": '[["a"], "b", "c"]'},
    "size-string": {"image_size": '"big"'},
    "size-bools": {"image_size": "[true, true]"},
    "size-huge": {"image_size": "[100000, 100000]"},
    "size-float": {"image_size": "[32.0, 32.0]"},
    "range-strings": {"value_range": '["a", "b"]'},
    "range-nan": {"value_range": "[NaN, 1]"},
    "range-dict": {"value_range": '{"low": 0}'},
    "order-list": {"channel_order": '["R", "G", "B"]'},
    "resize-dict": {"resize": '{"x": 1}'},
    "layout-null": {"layout": "null"},
    "not-json": {"channel_order": "RGB"},
    "label-escape": {"labels": '["red", "green\\u001b[31m", "blue"]'},
    "label-newline": {"labels": '["red", "gr\\neen", "blue"]'},
    "label-surrogate": {"labels": '["red", "\\udce9", "blue"]'},
}


@pytest.mark.parametrize("change", BAD_META.values(), ids=BAD_META.keys())
def test_metadata_of_the_wrong_type_is_exit_2(tmp_path, change):
    from scenetool.metadata import ModelMeta

    props = ModelMeta(labels=("red", "green", "blue"), image_size=(32, 32)).to_props()
    props.update(change)
    model = build_tiny_model(tmp_path / "bad.onnx", props=props)
    make_image(tmp_path / "photos" / "a.jpg")
    for args in (["info"], ["classify", tmp_path / "photos"]):
        proc = cli(*args, "--model", model)
        assert proc.returncode == 2, (args, proc.stdout.decode(), proc.stderr.decode())
        assert str(model) in one_line_error(proc.stderr)
    assert not store_path().exists() or not runs()


def test_labels_with_markup_and_escapes_are_shown_literally(tmp_path):
    labels = ("[bold]red", "[/x]", "[link=http://x]blue")
    model = build_tiny_model(tmp_path / "marked.onnx", labels=labels)
    folder = tmp_path / "photos"
    make_image(folder / "r.jpg", "red")
    make_image(folder / "g.jpg", "green")
    make_image(folder / "b.jpg", "blue")
    proc = cli("classify", folder, "--model", model, "--top-k", "2")
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    assert "[bold]red" in out and "[/x]" in out and "[link=http://x]blue" in out
    proc = cli("info", "--model", model)
    assert proc.returncode == 0 and "[/x]" in proc.stdout.decode()
    proc = cli("report", env={"SCENETOOL_MODEL": str(model)})
    assert proc.returncode == 0 and "[/x]" in proc.stdout.decode()
    dest = tmp_path / "sorted"
    proc = cli("sort", folder, dest, "--model", model)
    assert proc.returncode == 0, proc.stderr.decode()
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["[bold]red", "[_x]", "[link=http:__x]blue"])


# -- 4. arguments -------------------------------------------------------------------------

BAD_ARGS = {
    "min-confidence-nan": ["classify", "{photos}", "--min-confidence", "nan"],
    "min-confidence-minus-nan": ["classify", "{photos}", "--min-confidence", "-NaN"],
    "sort-min-confidence-nan": ["sort", "{photos}", "{dest}", "--min-confidence", "nan"],
    "low-nan": ["report", "--low", "nan"],
    "low-inf": ["report", "--low", "inf"],
    "run-huge": ["report", "--run", "99999999999999999999"],
    "run-huge-negative": ["report", "--run", "-99999999999999999999"],
    "html-stdout": ["report", "--html", "-"],
    "html-empty": ["report", "--html", ""],
}


@pytest.mark.parametrize("args", BAD_ARGS.values(), ids=BAD_ARGS.keys())
def test_bad_arguments_are_usage_errors(tmp_path, args):
    photos = tmp_path / "photos"
    make_image(photos / "a.jpg")
    assert cli("classify", photos, "-q").returncode == 0
    filled = [a.format(photos=photos, dest=tmp_path / "dest") for a in args]
    proc = cli(*filled, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr.decode()
    err = proc.stderr.decode()
    assert "Usage:" in err and "Error:" in err
    option = next((a for a in filled if a.startswith("--")), None)
    assert option in err
    assert not (tmp_path / "-").exists() and not (tmp_path / "dest").exists()
    assert len(runs()) == 1
    for _, _, arguments in runs():
        assert "NaN" not in arguments


# -- 5. sort --move never moves a file outside SRC ----------------------------------------

def test_move_never_moves_files_from_outside_src(tmp_path):
    src, outside, dest = tmp_path / "src", tmp_path / "outside", tmp_path / "dest"
    own = make_image(src / "own.jpg", "red")
    elsewhere = [make_image(outside / "b.jpg", "green"),
                 make_image(outside / "sub" / "c.jpg", "blue")]
    lone = make_image(tmp_path / "lone" / "d.jpg", "red")
    os.symlink(outside, src / "linked-folder")
    os.symlink(lone, src / "linked-file.jpg")
    before = {p: p.read_bytes() for p in [*elsewhere, lone]}
    proc = cli("sort", src, dest, "--move")
    assert proc.returncode == 0, proc.stderr.decode()
    for path, data in before.items():  # everything outside SRC is where it was
        assert path.read_bytes() == data
    assert not own.exists()  # what lies in SRC is moved
    assert (dest / "red" / "own.jpg").is_file()
    assert (dest / "green" / "b.jpg").is_file() and (dest / "blue" / "c.jpg").is_file()
    err = " ".join(proc.stderr.decode().split())
    assert "outside" in err and "copied" in err


def test_a_part_file_left_by_a_killed_move_is_cleaned_up(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_image(src / "a.jpg", "red")
    (dest / "red").mkdir(parents=True)
    leftovers = [dest / "red" / ".a.jpg.0123abcd.part",  # named as a killed sort names it
                 dest / "red" / ".scenetool-4194303-0123abcd.part"]
    for part in leftovers:
        part.write_bytes(b"\xff\xd8half a photo")
    proc = cli("sort", src, dest, "--move")
    assert proc.returncode == 0, proc.stderr.decode()
    assert not [p for p in leftovers if p.exists()]
    err = proc.stderr.decode()
    assert ".part" in err and "interrupted" in err
    assert (dest / "red" / "a.jpg").is_file()


def test_a_killed_move_leaves_no_part_after_the_next_sort(tmp_path):
    src, dest = tmp_path / "src", tmp_path / "dest"
    for i in range(30):
        make_image(src / f"p{i:02d}.png", "red", size=(600, 600))
    proc = subprocess.Popen([sys.executable, "-m", "scenetool", "sort", src, dest, "--move"],
                            env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (dest / "red").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc = cli("sort", src, dest, "--move")
    assert proc.returncode == 0
    assert not [p for p in dest.rglob("*") if ".part" in p.name]
    assert len(list((dest / "red").iterdir())) == 30 and not list(src.iterdir())


# -- 6. the contact sheet keeps only pixels -----------------------------------------------

def test_thumbnails_keep_only_pixels_and_the_csp_allows_the_script_by_hash(tmp_path):
    folder = tmp_path / "photos"
    exif = Image.Exif()
    exif[0x010E] = "SECRET-EXIF-DESCRIPTION"
    exif[0x013B] = "SECRET-ARTIST"
    make_image(folder / "exif.jpg", "red", exif=exif.tobytes(), comment=b"SECRET-COMMENT")
    from PIL import PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "SECRET-PNG-TEXT")
    make_image(folder / "text.png", "green", pnginfo=text)
    make_image(folder / "icc.jpg", "blue", icc_profile=b"SECRET-ICC" * 20)
    assert cli("classify", folder, "-q").returncode == 0
    sheet = tmp_path / "sheet.html"
    proc = cli("report", "--html", sheet)
    assert proc.returncode == 0
    page = sheet.read_text()
    parsed = Sheet()
    parsed.feed(page)
    thumbs = [base64.b64decode(s.split(",", 1)[1]) for s in parsed.img_srcs]
    assert len(thumbs) == 3
    for data in thumbs:
        assert b"SECRET" not in data and b"Exif" not in data
        with Image.open(io.BytesIO(data)) as im:
            assert not {"exif", "comment", "icc_profile", "Comment"} & set(im.info)
    csp = parsed.csp or ""
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    script_src = re.search(r"script-src ([^;]*)", csp).group(1).split()
    assert parsed.scripts
    for script in parsed.scripts:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in script_src


# -- 7. messages that say what really happened --------------------------------------------

def test_devices_fifos_and_links_are_named_for_what_they_are(tmp_path):
    folder = tmp_path / "photos"
    make_image(folder / "ok.jpg", "red")
    os.symlink("/dev/null", folder / "to-device.jpg")
    os.symlink("/dev/zero", folder / "to-zero.png")
    os.mkfifo(folder / "pipe.jpg")
    os.symlink(folder / "nowhere.jpg", folder / "dangling.jpg")
    proc = cli("classify", folder, "--json", "-", timeout=30)
    assert proc.returncode == 1
    reasons = {os.path.basename(json.loads(x)["path"]): json.loads(x)["error"]
               for x in proc.stdout.decode().splitlines()}
    assert "device" in reasons["to-device.jpg"] and "broken" not in reasons["to-device.jpg"]
    assert "device" in reasons["to-zero.png"]
    assert "FIFO" in reasons["pipe.jpg"] or "pipe" in reasons["pipe.jpg"]
    assert "empty" not in reasons["pipe.jpg"]
    assert reasons["dangling.jpg"] == "broken symbolic link"
    assert reasons["ok.jpg"] is None
    # Named on the command line, a FIFO is not opened (which would wait for a writer).
    proc = cli("classify", folder / "pipe.jpg", "/dev/null", "--json", "-", timeout=30)
    assert proc.returncode == 1
    errors = [json.loads(x)["error"] for x in proc.stdout.decode().splitlines()]
    assert len(errors) == 2 and all("empty" not in e for e in errors), errors


def _wait_for_rows(db: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(db, timeout=5) as con:
                if con.execute("SELECT COUNT(*) FROM results").fetchone()[0] >= n:
                    return
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    raise AssertionError("no results committed in time")


def test_a_run_still_going_is_not_interrupted(tmp_path):
    folder = tmp_path / "photos"
    for i in range(300):
        make_image(folder / f"p{i:03d}.png", "red", size=(300, 300))
    proc = subprocess.Popen(
        [sys.executable, "-m", "scenetool", "classify", folder, "-q", "--batch-size", "2"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        _wait_for_rows(store_path(), 2)
        proc.send_signal(signal.SIGSTOP)
        header = cli("report").stdout.decode().splitlines()[0]
        assert "still running" in header and "interrupted" not in header
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        header = cli("report").stdout.decode().splitlines()[0]
        assert "interrupted" in header and "still running" not in header
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


UNREADABLE_FORMATS = {
    "photo.heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
    "photo.avif": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64,
    "photo.jxl": b"\xff\x0a" + b"\x00" * 64,
    "photo.cr2": b"II*\x00\x10\x00\x00\x00CR\x02\x00" + b"\x00" * 64,
    "photo.nef": b"MM\x00*\x00\x00\x00\x08" + b"\x00" * 64,
}


def test_an_image_in_a_format_we_cannot_read_is_named_with_its_reason(tmp_path):
    folder = tmp_path / "photos"
    make_image(folder / "ok.jpg", "red")
    for name, data in UNREADABLE_FORMATS.items():
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("not a photo")
    proc = cli("classify", folder, "--json", "-")
    assert proc.returncode == 1
    reasons = {os.path.basename(json.loads(x)["path"]): json.loads(x)["error"]
               for x in proc.stdout.decode().splitlines()}
    for name in UNREADABLE_FORMATS:
        assert reasons.get(name), (name, reasons)
    assert "notes.txt" not in reasons
    assert b"1 non-image" in proc.stderr


def _corrupt_exif_jpeg(path: Path) -> Path:
    """A JPEG whose EXIF block claims more data than it has: Pillow warns about it."""
    make_image(path, "blue")
    data = path.read_bytes()
    exif = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x0f\x01\x02\x00\xff\x00\x00\x00" \
           b"\x20\x00\x00\x00"
    app1 = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    path.write_bytes(data[:2] + app1 + data[2:])
    return path


def test_pillow_warnings_name_the_file_they_are_about(tmp_path):
    folder = tmp_path / "photos"
    make_image(folder / "ok.jpg", "red")
    bad = _corrupt_exif_jpeg(folder / "odd-exif.jpg")
    other = _corrupt_exif_jpeg(folder / "odd-too.jpg")
    with pytest.warns(UserWarning), Image.open(bad) as im:
        im.getexif()
    proc = cli("classify", folder, "--threads", "2")
    assert proc.returncode == 0, proc.stderr.decode()
    err = proc.stderr.decode()
    # One line per warning, naming its file (every file, not the first only); never
    # Python's warning format with Pillow's source line.
    assert "UserWarning" not in err and "PIL" not in err and "warnings.warn" not in err
    warned = [x for x in err.splitlines() if x.startswith("warning: ")]
    assert any("odd-exif.jpg" in x and "EXIF" in x for x in warned), err
    assert any("odd-too.jpg" in x and "EXIF" in x for x in warned), err
    assert not any("ok.jpg" in x for x in warned)
    assert stored()[os.fsencode(other)][0] == "blue"
