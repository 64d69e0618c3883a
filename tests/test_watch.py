"""The folder watcher: real watchdog events, a settle time read from a clock the test moves,
so 'not before it has stopped growing' is checked without racing the machine's load."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import make_image

from scenetool.errors import FolderGone, WatchError
from scenetool.inputs.watch import Watcher, signature
from scenetool.outputs import xmp

SETTLE = 2.0


def wait_for_event(watcher: Watcher, path, now: float) -> None:
    """Block (real time) until watchdog has reported `path` as it is now, and let the
    watcher see that change at `now` on its clock."""
    deadline = time.monotonic() + 10
    while watcher.waiting(now).get(str(path), False) != signature(str(path)):
        assert time.monotonic() < deadline, f"no event for {path}"
        time.sleep(0.02)


def test_a_growing_file_is_handed_out_once_after_it_settles(tmp_path):
    photo = make_image(tmp_path / "src.jpg")
    data = photo.read_bytes()
    photo.unlink()
    target = tmp_path / "in" / "a.jpg"
    target.parent.mkdir()
    with Watcher([str(target.parent)], settle=SETTLE) as watcher:
        now = 0.0
        with open(target, "wb") as f:
            for start in range(0, len(data), 256):
                f.write(data[start:start + 256])
                f.flush()
                wait_for_event(watcher, target, now)
                # Each chunk comes within the settle time: never handed out half written.
                now += SETTLE * 0.9
                assert watcher.settled(now) == []
        # The last change was seen at now - 0.9 SETTLE.
        assert watcher.settled(now + SETTLE * 0.05) == []
        now += SETTLE * 0.15
        assert watcher.settled(now) == [str(target)]
        assert target.read_bytes() == data
        now += SETTLE * 3
        assert watcher.settled(now) == []  # once

        os.utime(target)  # a change: handed out again once it settles
        wait_for_event(watcher, target, now)
        watcher.settled(now)
        assert watcher.settled(now + SETTLE * 2) == [str(target)]


def test_a_change_no_event_reports_still_restarts_the_settle_time(tmp_path):
    """Events can be lost (a full inotify queue, a write through a hard link elsewhere):
    the size and mtime seen at each poll are checked too."""
    folder = tmp_path / "in"
    folder.mkdir()
    with Watcher([str(folder)], settle=SETTLE) as watcher:
        photo = make_image(folder / "f.png")
        wait_for_event(watcher, photo, 0.0)
        assert watcher.settled(SETTLE * 0.9) == []
        elsewhere = tmp_path / "link.png"
        os.link(photo, elsewhere)
        with open(elsewhere, "ab") as f:  # no event: the folder's watch never sees this path
            f.write(b"more")
        assert watcher.settled(SETTLE * 1.1) == []  # changed: the settle time starts again
        assert watcher.settled(SETTLE * 2.0) == []
        assert watcher.settled(SETTLE * 3.2) == [str(photo)]


def test_temporary_names_are_never_handed_out_but_their_final_name_is(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    with Watcher([str(folder)], settle=SETTLE) as watcher:
        partial = make_image(folder / "b.jpg.part", fmt="JPEG")
        hidden = make_image(folder / ".b.jpg.tmp1234", fmt="JPEG")
        make_image(folder / "notes.txt.jpg", fmt="PNG")
        (folder / "readme.txt").write_text("not an image")
        wait_for_event(watcher, folder / "readme.txt", 0.0)
        assert watcher.settled(SETTLE * 2) == [str(folder / "notes.txt.jpg")]
        os.rename(partial, folder / "b.jpg")
        wait_for_event(watcher, folder / "b.jpg", SETTLE * 3)
        assert watcher.settled(SETTLE * 6) == [str(folder / "b.jpg")]
        assert hidden.exists()


def test_a_folder_moved_in_brings_its_images(tmp_path):
    outside = tmp_path / "outside" / "trip"
    make_image(outside / "c.png")
    make_image(outside / "deeper" / "d.png")
    folder = tmp_path / "in"
    folder.mkdir()
    with Watcher([str(folder)], settle=SETTLE) as watcher:
        os.rename(outside, folder / "trip")
        wait_for_event(watcher, folder / "trip" / "c.png", 0.0)
        assert watcher.settled(SETTLE * 2) == [str(folder / "trip" / "c.png"),
                                              str(folder / "trip" / "deeper" / "d.png")]


def test_a_classified_file_is_not_handed_out_again_unchanged(tmp_path):
    folder = tmp_path / "in"
    photo = make_image(folder / "e.png")
    with Watcher([str(folder)], settle=SETTLE) as watcher:
        st = photo.stat()
        watcher.seen(str(photo), st.st_size, st.st_mtime)
        os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns))  # an event, nothing changed
        wait_for_event(watcher, photo, 0.0)
        assert watcher.settled(SETTLE * 2) == []


@pytest.mark.parametrize("how", ["deleted", "moved", "replaced"])
def test_a_watched_folder_that_goes_away_is_reported(tmp_path, how):
    folder = tmp_path / "in"
    folder.mkdir()
    with Watcher([str(folder)], settle=SETTLE) as watcher:
        watcher.check_roots()
        if how == "deleted":
            shutil.rmtree(folder)
        else:
            os.rename(folder, tmp_path / "elsewhere")
            if how == "replaced":
                folder.mkdir()
        with pytest.raises(FolderGone, match="watched folder disappeared: "):
            next(watcher.batches(poll=0.01))


def test_a_folder_that_cannot_be_watched_is_an_error_not_a_traceback(tmp_path, monkeypatch):
    from watchdog.observers import Observer

    def limit(self):
        raise OSError(errno.ENOSPC, "inotify watch limits reached")

    monkeypatch.setattr(Observer, "start", limit)
    with pytest.raises(WatchError, match=f"cannot watch {tmp_path}: inotify watch limits"):
        Watcher([str(tmp_path)]).__enter__()


# -- scenetool classify DIR --watch, as a real process ---------------------------------------

ROOT = Path(__file__).resolve().parents[1]
WATCH_SETTLE = "1.5"


class Watching:
    """`scenetool classify FOLDER --watch --json -` running; its JSON lines and stderr are
    collected as they come."""

    def __init__(self, folder: Path, *args: str, json_rows: bool = True):
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # A shell that runs CI in the background leaves SIGINT ignored in its children:
        # give this one the default, as a terminal would.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scenetool", "classify", str(folder), "--watch",
             "--settle", WATCH_SETTLE, *(("--json", "-") if json_rows else ()), *args],
            env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.rows: list[dict] = []
        self.out: list[str] = []  # stdout's lines, without --json -
        self.err: list[str] = []
        self.json_rows = json_rows
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, rows: bool) -> None:
        for line in stream:
            if rows and self.json_rows:
                self.rows.append(json.loads(line))
            elif rows:
                self.out.append(line)
            else:
                self.err.append(line)

    def wait_for(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.err}"
            assert time.monotonic() < deadline, f"no {what}; stderr: {self.err}"
            time.sleep(0.05)

    def end(self, timeout: float = 30) -> tuple[int, str]:
        code = self.proc.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout=10)
        return code, "".join(self.err)

    def kill(self) -> None:
        """End the process if a failed test left it watching."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.end()


@pytest.fixture
def watch():
    """Starts `Watching` processes and kills any still running when the test ends, so a
    failed assertion cannot leave one behind (and pytest waiting on its readers)."""
    started: list[Watching] = []

    def start(folder: Path, *args: str, json_rows: bool = True) -> Watching:
        started.append(Watching(folder, *args, json_rows=json_rows))
        return started[-1]

    yield start
    for watching in started:
        watching.kill()


def copy_slowly(source: Path, target: Path, chunks: int = 6, pause: float = 0.15) -> None:
    """Copy as a slow link would: chunk by chunk, each within the settle time."""
    data = source.read_bytes()
    step = -(-len(data) // chunks)
    with open(target, "wb") as f:
        for start in range(0, len(data), step):
            f.write(data[start:start + step])
            f.flush()
            time.sleep(pause)


def test_watch_classifies_photos_copied_in_once_each_after_they_are_complete(tmp_path, watch):
    folder = tmp_path / "incoming"
    make_image(folder / "already.png", "green")
    sources = {name: make_image(tmp_path / "camera" / name, colour, size=(400, 300))
               for name, colour in (("p1.jpg", "red"), ("p2.jpg", "blue"),
                                    ("p3.png", "green"))}
    db = tmp_path / "watch.db"
    watching = watch(folder, "--store", str(db), "--tag")
    watching.wait_for(lambda: len(watching.rows) == 1, "row for the photo already there")
    (folder / "day2").mkdir()
    for name, source in sources.items():
        copy_slowly(source, folder / "day2" / name)
    watching.wait_for(lambda: len(watching.rows) == 4, "rows for the photos copied in")
    time.sleep(float(WATCH_SETTLE) * 2)  # time enough to see a photo twice, if it would be
    watching.proc.send_signal(signal.SIGINT)
    code, err = watching.end()

    assert code == 130, err
    assert "Traceback" not in err
    labels = {Path(r["path"]).name: (r["label"], r["error"]) for r in watching.rows}
    assert labels == {"already.png": ("green", None), "p1.jpg": ("red", None),
                      "p2.jpg": ("blue", None), "p3.png": ("green", None)}
    assert len(watching.rows) == 4  # each once
    with sqlite3.connect(db) as con:
        stored = dict(con.execute("SELECT path, size FROM results"))
        assert con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 4
    for name, source in sources.items():  # classified complete, never half-copied
        assert stored[str(folder / "day2" / name)] == source.stat().st_size
        assert xmp.read(str(folder / "day2" / f"{name}.xmp"))["label"] == labels[name][0]
    assert "4 image(s): 4 classified, 0 already in the store" in err
    # the time was mostly spent waiting for photos: no images/s, which would say nothing
    assert re.search(rf"Run \d+ in {re.escape(str(db))} \(watched for [\d.]+ s\)\.", err), err
    assert "images/s" not in err
    assert "4 photo(s), sidecars: 4 created, 0 failed." in err
    assert err.rstrip().endswith("stopped watching (Ctrl-C)")


def test_watch_shows_and_exports_each_photo_as_it_comes(tmp_path, watch):
    """While it watches, a photo's row reaches the table and the CSV file at once, not when
    the table's chunk fills or the run ends."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    csv_path = tmp_path / "rows.csv"
    watching = watch(folder, "--store", str(tmp_path / "w.db"), "--csv", str(csv_path),
                     json_rows=False)
    watching.wait_for(lambda: any("watching" in line for line in watching.err), "start")
    make_image(tmp_path / "new-arrival.png", "blue").rename(folder / "new-arrival.png")
    watching.wait_for(lambda: "new-arrival.png" in "".join(watching.out), "row in the table")
    watching.wait_for(lambda: csv_path.is_file() and "new-arrival.png" in csv_path.read_text(),
                      "row in the CSV file")
    assert watching.proc.poll() is None  # still watching


def test_a_watched_folder_that_disappears_ends_the_run_with_exit_1(tmp_path, watch):
    folder = tmp_path / "incoming"
    make_image(folder / "a.png", "red")
    watching = watch(folder, "--store", str(tmp_path / "gone.db"))
    watching.wait_for(lambda: len(watching.rows) == 1, "row for the photo already there")
    shutil.rmtree(folder)
    code, err = watching.end()
    assert code == 1, err
    assert "Traceback" not in err
    assert err.rstrip().splitlines()[-1] == f"Error: watched folder disappeared: {folder}"


def test_watch_needs_folders(tmp_path):
    photo = make_image(tmp_path / "a.png", "red")
    result = subprocess.run([sys.executable, "-m", "scenetool", "classify", str(photo),
                             "--watch"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"Error: --watch needs folders; not a folder: {photo}" in result.stderr
