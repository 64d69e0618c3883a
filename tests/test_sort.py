"""`scenetool sort`: copy, move and link into DEST/<label>/, collisions, re-runs, failures."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from conftest import grey, invoke, make_image


def tree(folder: Path) -> dict[str, bytes | str]:
    """Every file under `folder`: its bytes, or 'link -> target' for a symlink."""
    out: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[rel] = "link -> " + os.readlink(path)
        elif path.is_file():
            out[rel] = path.read_bytes()
    return out


def table_row(stdout: str, label: str) -> list[str]:
    """The cells of the table row for `label`."""
    line = next(x for x in stdout.splitlines() if x.split()[:1] == [label])
    return line.split()[1:]


@pytest.fixture
def src(tmp_path) -> Path:
    folder = tmp_path / "photos"
    make_image(folder / "r1.jpg", "red")
    make_image(folder / "r2.png", "red")
    make_image(folder / "g1.png", "green")
    make_image(folder / "sub" / "b1.jpg", "blue")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def test_copy_is_the_default_and_keeps_the_sources(src, tmp_path):
    before = tree(src)
    dest = tmp_path / "sorted"
    result = invoke("sort", str(src), str(dest))
    assert result.exit_code == 0, result.output
    assert tree(src) == before
    assert tree(dest) == {
        "blue/b1.jpg": before["sub/b1.jpg"], "green/g1.png": before["g1.png"],
        "red/r1.jpg": before["r1.jpg"], "red/r2.png": before["r2.png"]}
    assert (dest / "red" / "r1.jpg").stat().st_mtime == (src / "r1.jpg").stat().st_mtime
    assert "copied" in result.stdout.splitlines()[2]
    assert table_row(result.stdout, "red") == ["2", "0"]
    assert table_row(result.stdout, "total") == ["4", "0"]
    store = os.environ["SCENETOOL_STORE"]
    assert result.stderr == (
        "4 image(s): 4 copied, 0 already there, 0 failed (left in place). "
        f"Run 1 in {store}: 4 classified, 0 from the store.\n")


def test_rerun_is_idempotent_and_reuses_the_store(src, tmp_path):
    dest = tmp_path / "sorted"
    assert invoke("sort", str(src), str(dest)).exit_code == 0
    first = tree(dest)
    result = invoke("sort", str(src), str(dest))
    assert result.exit_code == 0, result.output
    assert tree(dest) == first  # no name-1 copies
    assert table_row(result.stdout, "red") == ["0", "2"]
    assert result.stderr.startswith(
        "4 image(s): 0 copied, 4 already there, 0 failed (left in place). Run 2 in ")
    assert result.stderr.endswith(": 0 classified, 4 from the store.\n")


def test_collisions_get_numbered_names_and_a_rerun_adds_none(tmp_path):
    src = tmp_path / "photos"
    make_image(src / "a" / "x.jpg", "red", size=(48, 40))
    make_image(src / "b" / "x.jpg", "red", size=(50, 40))
    make_image(src / "c" / "x.jpg", "red", size=(52, 40))
    dest = tmp_path / "sorted"
    make_image(dest / "red" / "x.jpg", "green", size=(10, 10))  # someone else's x.jpg
    theirs = (dest / "red" / "x.jpg").read_bytes()
    assert invoke("sort", str(src), str(dest)).exit_code == 0
    assert sorted(tree(dest)) == ["red/x-1.jpg", "red/x-2.jpg", "red/x-3.jpg", "red/x.jpg"]
    assert (dest / "red" / "x.jpg").read_bytes() == theirs
    assert (dest / "red" / "x-1.jpg").read_bytes() == (src / "a" / "x.jpg").read_bytes()
    assert (dest / "red" / "x-3.jpg").read_bytes() == (src / "c" / "x.jpg").read_bytes()
    result = invoke("sort", str(src), str(dest))
    assert sorted(tree(dest)) == ["red/x-1.jpg", "red/x-2.jpg", "red/x-3.jpg", "red/x.jpg"]
    assert table_row(result.stdout, "red") == ["0", "3"]


def test_move_removes_the_sources_and_a_rerun_finds_nothing(src, tmp_path):
    before = tree(src)
    dest = tmp_path / "sorted"
    result = invoke("sort", str(src), str(dest), "--move")
    assert result.exit_code == 0, result.output
    assert tree(src) == {"notes.txt": before["notes.txt"]}
    assert tree(dest)["red/r1.jpg"] == before["r1.jpg"]
    assert tree(dest)["blue/b1.jpg"] == before["sub/b1.jpg"]
    assert table_row(result.stdout, "red") == ["2", "0"]
    assert "4 image(s): 4 moved, 0 already there" in result.stderr
    again = invoke("sort", str(src), str(dest), "--move")
    assert again.exit_code == 0
    assert again.stderr.startswith("0 image(s): 0 moved, 0 already there, 0 failed")


def test_move_across_filesystems_copies_syncs_then_unlinks(src, tmp_path, monkeypatch):
    """With hard links refused (EXDEV, as between filesystems) a move copies to a temporary
    name in DEST, checks it and renames it, and only then deletes the source."""
    def no_link(*args, **kwargs):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "link", no_link)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    before = tree(src)
    dest = tmp_path / "sorted"
    result = invoke("sort", str(src), str(dest), "--move")
    assert result.exit_code == 0, result.output
    assert tree(dest) == {
        "blue/b1.jpg": before["sub/b1.jpg"], "green/g1.png": before["g1.png"],
        "red/r1.jpg": before["r1.jpg"], "red/r2.png": before["r2.png"]}  # no .part left
    assert not (src / "r1.jpg").exists()
    assert len(synced) >= 4


def test_move_finishes_an_interrupted_move(src, tmp_path):
    dest = tmp_path / "sorted"
    (dest / "red").mkdir(parents=True)
    (dest / "red" / "r1.jpg").write_bytes((src / "r1.jpg").read_bytes())  # copied, not deleted
    result = invoke("sort", str(src), str(dest), "--move")
    assert result.exit_code == 0
    assert not (src / "r1.jpg").exists()
    assert sorted(p.name for p in (dest / "red").iterdir()) == ["r1.jpg", "r2.png"]
    assert table_row(result.stdout, "red") == ["1", "1"]


def test_link_makes_absolute_symlinks_and_is_idempotent(src, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("sort", "photos", "sorted", "--link")
    assert result.exit_code == 0, result.output
    link = tmp_path / "sorted" / "blue" / "b1.jpg"
    assert link.is_symlink() and os.readlink(link) == str(src / "sub" / "b1.jpg")
    assert (src / "sub" / "b1.jpg").is_file()
    assert table_row(result.stdout, "total") == ["4", "0"]
    assert "linked" in result.stdout
    first = tree(tmp_path / "sorted")
    again = invoke("sort", "photos", "sorted", "--link")
    assert tree(tmp_path / "sorted") == first
    assert table_row(again.stdout, "total") == ["0", "4"]


def test_min_confidence_sends_doubtful_images_to_unknown(src, tmp_path):
    grey(src / "grey.png")
    dest = tmp_path / "sorted"
    result = invoke("sort", str(src), str(dest), "--min-confidence", "0.5")
    assert result.exit_code == 0, result.output
    assert sorted(tree(dest)) == ["blue/b1.jpg", "green/g1.png", "red/r1.jpg", "red/r2.png",
                                  "unknown/grey.png"]
    assert table_row(result.stdout, "unknown") == ["1", "0"]


def test_a_stored_unknown_does_not_stick(src, tmp_path):
    """Results reused from a classify run with --min-confidence 0.9 carry 'unknown' as
    their label; sort decides from the top label and its own threshold."""
    grey(src / "grey.png")
    assert invoke("classify", str(src), "--min-confidence", "0.9").exit_code == 0
    dest = tmp_path / "sorted"
    result = invoke("sort", str(src), str(dest))
    assert result.stderr.endswith(": 0 classified, 5 from the store.\n")
    assert (dest / "red" / "grey.png").is_file()
    assert not (dest / "unknown").exists()


def test_dry_run_writes_nothing_but_says_what_it_would_do(src, tmp_path):
    make_image(src / "other" / "r1.jpg", "red", size=(30, 30))  # would collide with r1.jpg
    before = tree(src)
    dest = tmp_path / "sorted"
    result = invoke("sort", str(src), str(dest), "--dry-run", "--move")
    assert result.exit_code == 0, result.output
    assert not dest.exists()
    assert tree(src) == before
    assert "Dry run: nothing written" in result.stdout
    assert "would move" in result.stdout
    assert table_row(result.stdout, "red") == ["3", "0"]
    assert result.stderr.startswith(
        "5 image(s): 5 would be moved, 0 already there, 0 failed (left in place). Run 1 in ")


def test_failed_files_stay_in_place_and_exit_1(src, tmp_path):
    (src / "broken.jpg").write_bytes(b"not really a jpeg")
    (src / "empty.png").write_bytes(b"")
    dest = tmp_path / "sorted"
    result = invoke("sort", str(src), str(dest))
    assert result.exit_code == 1
    assert (src / "broken.jpg").exists() and (src / "empty.png").exists()
    assert sorted(tree(dest)) == ["blue/b1.jpg", "green/g1.png", "red/r1.jpg", "red/r2.png"]
    assert table_row(result.stdout, "failed") == ["(left", "in", "place)", "2"]
    lines = result.stderr.splitlines()
    assert f"failed: {src / 'broken.jpg'}: not an image (unknown or corrupt format)" in lines
    assert f"failed: {src / 'empty.png'}: empty file (0 bytes)" in lines
    assert lines[-1].startswith("6 image(s): 4 copied, 0 already there, 2 failed (left in place).")


def test_dest_inside_src_is_not_walked(src):
    dest = src / "sorted"
    assert invoke("sort", str(src), str(dest)).exit_code == 0
    result = invoke("sort", str(src), str(dest))
    assert result.exit_code == 0
    assert result.stderr.startswith("4 image(s): 0 copied, 4 already there, 0 failed")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.*")) == [
        "blue/b1.jpg", "green/g1.png", "red/r1.jpg", "red/r2.png"]


def test_usage_errors(src, tmp_path):
    result = invoke("sort", str(src), str(src))
    assert result.exit_code == 2
    assert "Error: DEST must not be SRC itself" in result.stderr
    result = invoke("sort", str(src), str(tmp_path / "d"), "--copy", "--move")
    assert result.exit_code == 2
    assert "Error: --copy, --move and --link exclude each other" in result.stderr
    (tmp_path / "file").write_text("x")
    result = invoke("sort", str(src), str(tmp_path / "file"))
    assert result.exit_code == 2
    assert f"Error: DEST is not a folder: {tmp_path / 'file'}" in result.stderr
    result = invoke("sort", str(tmp_path / "missing"), str(tmp_path / "d"))
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


@pytest.mark.parametrize("action", ["--copy", "--move", "--link"])
def test_dry_run_counts_what_the_real_sort_then_does(tmp_path, action):
    """Two photos share a name; the second is already in DEST as name-1 (an earlier sort).
    The real sort gives the first the free name and finds the second already there; a dry
    run must plan the names it hands out the same way, not offer the first's name twice."""
    src = tmp_path / "photos"
    first = make_image(src / "a" / "x.png", "red", size=(48, 40))
    second = make_image(src / "b" / "x.png", "red", size=(30, 30))
    dest = tmp_path / "sorted"
    (dest / "red").mkdir(parents=True)
    if action == "--link":
        os.symlink(os.path.abspath(second), dest / "red" / "x-1.png")
    else:
        (dest / "red" / "x-1.png").write_bytes(second.read_bytes())
    before = tree(dest)
    dry = invoke("sort", str(src), str(dest), action, "--dry-run")
    assert tree(dest) == before and first.exists() and second.exists()
    real = invoke("sort", str(src), str(dest), action)
    assert dry.exit_code == real.exit_code == 0, dry.output + real.output
    assert table_row(dry.stdout, "red") == table_row(real.stdout, "red") == ["1", "1"]
    verb = {"--copy": "copied", "--move": "moved", "--link": "linked"}[action]
    assert dry.stderr.startswith(f"2 image(s): 1 would be {verb}, 1 already there, ")
    assert real.stderr.startswith(f"2 image(s): 1 {verb}, 1 already there, ")
    assert sorted(tree(dest)) == ["red/x-1.png", "red/x.png"]


@pytest.mark.parametrize("action, done, already", [
    ("--copy", "1", "1"), ("--move", "1", "1"), ("--link", "2", "0")])
def test_dry_run_counts_a_duplicate_photo_as_the_real_sort_does(tmp_path, action, done,
                                                                 already):
    """The same photo in two folders: copied once, then found already there (a link
    points at one path, so two links are made)."""
    src = tmp_path / "photos"
    first = make_image(src / "a" / "x.png", "red")
    (src / "b").mkdir()
    (src / "b" / "x.png").write_bytes(first.read_bytes())
    dest = tmp_path / "sorted"
    dry = invoke("sort", str(src), str(dest), action, "--dry-run")
    assert not dest.exists()
    real = invoke("sort", str(src), str(dest), action)
    assert dry.exit_code == real.exit_code == 0, dry.output + real.output
    assert table_row(dry.stdout, "red") == table_row(real.stdout, "red") == [done, already]


def test_a_same_size_namesake_is_not_taken_for_the_photo(tmp_path):
    """BMPs of one size have one byte count: only the bytes tell two photos apart. A move
    that took someone else's x.bmp for 'already there' would delete the photo."""
    src = tmp_path / "photos"
    mine = make_image(src / "x.bmp", "red")
    photo = mine.read_bytes()
    dest = tmp_path / "sorted"
    (dest / "red").mkdir(parents=True)
    (dest / "red" / "x.bmp").write_bytes(photo[:-1] + bytes([photo[-1] ^ 1]))  # the last byte
    result = invoke("sort", str(src), str(dest), "--move")
    assert result.exit_code == 0, result.output
    assert table_row(result.stdout, "red") == ["1", "0"]
    assert (dest / "red" / "x-1.bmp").read_bytes() == photo and not mine.exists()


def test_same_content_compares_every_byte(tmp_path):
    from scenetool.sort import CHUNK, same_content

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    data = os.urandom(CHUNK + 1000)
    a.write_bytes(data)
    b.write_bytes(data)
    c.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # differs past the first chunk
    assert same_content(str(a), str(b))
    assert not same_content(str(a), str(c))
    assert not same_content(str(a), str(tmp_path / "missing"))


def test_a_move_interrupted_after_its_hard_link_is_finished_not_duplicated(src, tmp_path):
    dest = tmp_path / "sorted"
    (dest / "red").mkdir(parents=True)
    os.link(src / "r1.jpg", dest / "red" / "r1.jpg")  # linked, source not yet unlinked
    result = invoke("sort", str(src), str(dest), "--move")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (dest / "red").iterdir()) == ["r1.jpg", "r2.png"]
    assert not (src / "r1.jpg").exists()


def test_link_does_not_take_a_copy_for_a_link(src, tmp_path):
    """--link makes links: a plain copy of the photo under its name is someone else's
    file, so the link gets the next name."""
    dest = tmp_path / "sorted"
    (dest / "red").mkdir(parents=True)
    (dest / "red" / "r1.jpg").write_bytes((src / "r1.jpg").read_bytes())
    result = invoke("sort", str(src), str(dest), "--link")
    assert result.exit_code == 0, result.output
    assert os.readlink(dest / "red" / "r1-1.jpg") == str(src / "r1.jpg")
    assert not (dest / "red" / "r1.jpg").is_symlink()


def test_a_copy_that_fails_half_way_leaves_no_part_file(src, tmp_path, monkeypatch):
    """Disk full during a copy: that image fails (exit 1), no half-written file stays in
    DEST under any name, and the source is untouched, even for --move."""
    import scenetool.sort

    def half_copy(source, target, *args, **kwargs):
        with open(source, "rb") as f, open(target, "wb") as out:
            out.write(f.read()[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "link", lambda *a, **k: (_ for _ in ()).throw(
        OSError(errno.EXDEV, os.strerror(errno.EXDEV))))
    monkeypatch.setattr(scenetool.sort, "_copy_file", half_copy)
    before = tree(src)
    dest = tmp_path / "sorted"
    result = invoke("sort", str(src), str(dest), "--move")
    assert result.exit_code == 1
    assert tree(src) == before
    assert [p for p in dest.rglob("*") if p.is_file()] == []
    assert (f"failed: {src / 'r1.jpg'}: cannot move to {dest}: No space left on device"
            in result.stderr.splitlines())


def test_labels_that_are_paths_stay_folders_inside_dest(tmp_path):
    """Labels come from a model file: '..' or 'a/b' must not lead a photo out of DEST."""
    from conftest import build_tiny_model

    model = build_tiny_model(tmp_path / "odd.onnx", labels=("..", "a/b", "."))
    src = tmp_path / "photos"
    make_image(src / "r.jpg", "red")
    make_image(src / "g.jpg", "green")
    make_image(src / "b.jpg", "blue")
    dest = tmp_path / "box" / "sorted"
    result = invoke("sort", src, dest, "--model", model)
    assert result.exit_code == 0, result.output
    assert sorted(tree(tmp_path / "box")) == ["sorted/_/b.jpg", "sorted/_/r.jpg",
                                              "sorted/a_b/g.jpg"]


def test_the_table_lists_labels_in_order_with_unknown_last(src, tmp_path):
    grey(src / "grey.png")
    make_image(src / "a-blue.png", "blue")
    result = invoke("sort", src, tmp_path / "sorted", "--min-confidence", "0.5")
    lines = [line.split() for line in result.stdout.splitlines() if line.strip()]
    assert lines[0] == ["Sorted"]
    assert lines[1] == ["label", "copied", "already", "there"]
    assert [line[0] for line in lines[3:]] == ["blue", "green", "red", "unknown", "total"]
    assert lines[-1] == ["total", "6", "0"]


def test_a_photo_linked_from_inside_dest_is_left_alone_and_counted(src, tmp_path):
    dest = tmp_path / "sorted"
    assert invoke("sort", src, dest).exit_code == 0
    os.symlink(dest / "red" / "r1.jpg", src / "again.jpg")  # photos already in DEST
    os.symlink(dest / "green" / "g1.png", src / "again.png")
    result = invoke("sort", src, dest)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("4 image(s): 0 copied, 4 already there, 0 failed (left in "
                                    "place), 2 already inside DEST. ")
    assert sorted(tree(dest)) == ["blue/b1.jpg", "green/g1.png", "red/r1.jpg", "red/r2.png"]


def test_dest_deep_inside_src_is_skipped_and_its_neighbours_sorted(tmp_path):
    """DEST two levels down: the folders on the way are opened, DEST itself is not
    walked (nothing in it is classified), and every neighbour, before and after it, is."""
    src = tmp_path / "photos"
    make_image(src / "a.jpg", "red")
    make_image(src / "trip" / "b.jpg", "green")
    make_image(src / "trip" / "aa" / "c.jpg", "blue")
    make_image(src / "trip" / "zz.jpg", "red")
    make_image(src / "trip" / "zzz" / "d.jpg", "green")
    make_image(src / "zulu.jpg", "blue")
    dest = src / "trip" / "sorted"
    make_image(dest / "red" / "old.jpg", "red")  # sorted before: must not be walked
    result = invoke("sort", src, dest)
    assert result.exit_code == 0, result.output
    assert result.stderr.endswith(": 6 classified, 0 from the store.\n")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.jpg")) == [
        "blue/c.jpg", "blue/zulu.jpg", "green/b.jpg", "green/d.jpg", "red/a.jpg",
        "red/old.jpg", "red/zz.jpg"]
    again = invoke("sort", src, dest)
    assert again.stderr.startswith("6 image(s): 0 copied, 6 already there, 0 failed (left in "
                                   "place). Run 2 in ")


def test_a_name_taken_between_looking_and_writing_goes_to_the_next(src, tmp_path, monkeypatch):
    """Another sort writes r1.jpg into DEST after this one found the name free: the link
    is made at the next free name and the other sort's file is left as it is."""
    dest = tmp_path / "sorted"
    real_symlink = os.symlink
    raced: list[str] = []

    def racing_symlink(target, name, *args, **kwargs):
        if not raced:
            raced.append(str(name))
            Path(name).write_bytes(b"another sort's photo")
        real_symlink(target, name, *args, **kwargs)

    monkeypatch.setattr(os, "symlink", racing_symlink)
    result = invoke("sort", src, dest, "--link")
    assert result.exit_code == 0, result.output
    assert raced == [str(dest / "green" / "g1.png")]  # the first photo placed
    assert (dest / "green" / "g1.png").read_bytes() == b"another sort's photo"
    assert os.readlink(dest / "green" / "g1-1.png") == str(src / "g1.png")
    assert table_row(result.stdout, "green") == ["1", "0"]
