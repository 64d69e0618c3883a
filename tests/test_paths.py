"""Paths: stored absolute, shown relative to the working folder when below it."""

from __future__ import annotations

import os

from conftest import invoke, make_image

from scenetool.paths import shown, store_key


def test_store_keys_are_absolute_and_keep_symlinks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real = make_image(tmp_path / "real" / "r.png")
    os.symlink(real.parent, tmp_path / "alias")
    assert store_key("alias/r.png") == str(tmp_path / "alias" / "r.png")
    assert shown(store_key("alias/r.png")) == os.path.join("alias", "r.png")
    assert shown(str(tmp_path.parent / "x.png")) == str(tmp_path.parent / "x.png")


def test_the_table_shows_paths_as_the_user_would_type_them(tmp_path, monkeypatch):
    photo = make_image(tmp_path / "photos" / "r.png")
    monkeypatch.chdir(tmp_path)
    below = invoke("classify", "photos")
    assert os.path.join("photos", "r.png") in below.stdout and str(photo) not in below.stdout
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    outside = invoke("classify", photo.parent, "--force")
    assert str(photo) in outside.stdout
    csv = invoke("report", "--csv", "-").stdout.splitlines()
    assert csv[1].startswith(f"{photo},red,")  # exports carry the full path
