"""Atomic writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os

import pytest

from scenetool.fsutil import atomic_path, atomic_write, temp_beside, write_bytes, write_text


def test_write_text_and_bytes_replace_the_target_whole(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old and longer than the new text")
    assert write_text(target, "naïve café\n") == target
    assert target.read_bytes() == "naïve café\n".encode()
    assert write_text(target, "naïve", encoding="latin-1") == target
    assert target.read_bytes() == "naïve".encode("latin-1")
    assert write_bytes(target, b"\x00\x01") == target
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "report.csv"
    target.write_text("the old report")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "the old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.csv"]


def test_atomic_path_hands_out_a_hidden_name_beside_the_target(tmp_path):
    target = tmp_path / "model.keras"
    with atomic_path(target, suffix=".keras") as temp:
        assert temp.parent == tmp_path and temp.name.startswith(f".scenetool-{os.getpid()}-")
        assert temp.name.endswith(".part.keras") and not target.exists()
        temp.write_bytes(b"weights")
        os.chmod(temp, 0o444)  # a writer may leave its file read-only: still synced
    assert target.read_bytes() == b"weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


def test_temporary_names_do_not_collide(tmp_path):
    names = {temp_beside(tmp_path / "x.json").name for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith(".scenetool-") and n.endswith(".part") for n in names)
    # Short and fixed: it fits beside a 255-byte name (the most a name can have).
    long_target = tmp_path / ("n" * 251 + ".jpg")
    assert len(temp_beside(long_target).name) < 40


def test_what_a_killed_writer_left_is_removed_by_the_next_write_beside_it(tmp_path):
    """A writer killed mid-file (SIGKILL: no cleanup runs) leaves its temporary file; the
    next atomic write in that folder removes it, but not one a live process is writing."""
    import signal
    import subprocess
    import sys

    target = tmp_path / "sheet.html"
    killed = subprocess.run([sys.executable, "-c", (
        "import os, signal\n"
        "from scenetool.fsutil import atomic_path\n"
        f"with atomic_path({str(target)!r}) as temp:\n"
        "    temp.write_text('<html>half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n")])
    assert killed.returncode == -signal.SIGKILL
    (left,) = [p.name for p in tmp_path.iterdir()]
    assert left.startswith(".scenetool-") and left.endswith(".part")
    live = temp_beside(target)  # this process's own: still being written
    live.write_text("in progress")

    write_text(target, "<html>whole</html>")

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "sheet.html"])
    assert target.read_text() == "<html>whole</html>"
