"""The folder watcher: real watchdog events, a settle time read from a clock the test moves,
so 'not before it has stopped growing' is checked without racing the machine's load."""

from __future__ import annotations

import os
import shutil
import time

import pytest
from conftest import make_image

from scenetool.inputs.watch import FolderGone, Watcher, signature

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
