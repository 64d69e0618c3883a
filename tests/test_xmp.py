"""XMP sidecars: what scenetool writes is read back by a real client (exiftool), and a
sidecar written beforehand (by exiftool itself) keeps every property and keyword it had."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from scenetool.errors import SidecarError
from scenetool.outputs import xmp

EXIFTOOL = shutil.which("exiftool")
needs_exiftool = pytest.mark.skipif(
    EXIFTOOL is None, reason="exiftool is not installed (Debian: apt-get install "
                             "libimage-exiftool-perl; .ci/run installs it)")
SHA = "ab" * 32
FOREST = xmp.Tag("forest", 0.93123, SHA)
SEA = xmp.Tag("sea", 0.8, "cd" * 32)
# What exiftool reports about the file rather than its XMP: left out of comparisons.
NOT_XMP = ("SourceFile", "ExifTool:", "System:", "File:")


def exiftool(*args: str) -> dict:
    out = subprocess.run([EXIFTOOL, "-j", "-G1", "-a", "-struct", *args], capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout)[0]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def xmp_properties(path) -> dict:
    return {k: v for k, v in exiftool(str(path)).items() if not k.startswith(NOT_XMP)}


def keywords(path) -> tuple[list, list]:
    found = exiftool("-XMP-dc:Subject", "-XMP-lr:HierarchicalSubject", str(path))
    return (as_list(found.get("XMP-dc:Subject", [])),
            as_list(found.get("XMP-lr:HierarchicalSubject", [])))


@pytest.fixture
def exiftool_sidecar(tmp_path):
    """A sidecar exiftool writes from scratch, with keywords and other properties."""
    path = tmp_path / "IMG_0001.jpg.xmp"
    subprocess.run([
        EXIFTOOL, "-q", "-o", str(path), "-XMP-dc:Subject=holiday", "-XMP-dc:Subject=family",
        "-XMP-lr:HierarchicalSubject=places|Norway|Oslo", "-XMP-xmp:Rating=4",
        "-XMP-dc:Title=Fjord at dusk", "-XMP-dc:Creator=Kari Nordmann",
        "-XMP-photoshop:City=Oslo", "-XMP-xmp:Label=Red",
        "-XMP-iptcExt:LocationCreated={City=Oslo,CountryName=Norway}",
    ], check=True, timeout=60)
    return path


@needs_exiftool
def test_exiftool_reads_the_keywords_scenetool_wrote(tmp_path):
    sidecar = tmp_path / "photo.jpg.xmp"
    assert xmp.update(str(sidecar), FOREST) is xmp.Outcome.CREATED
    assert keywords(sidecar) == (["forest"], ["scenes|forest"])
    found = exiftool(str(sidecar))
    assert found["XMP-scenetool:Confidence"] == pytest.approx(0.9312)
    assert found["XMP-scenetool:ModelSha256"] == SHA


@needs_exiftool
def test_a_sidecar_exiftool_wrote_keeps_every_property(exiftool_sidecar):
    before = xmp_properties(exiftool_sidecar)
    assert before["XMP-dc:Subject"] == ["holiday", "family"]  # the fixture did write them

    assert xmp.update(str(exiftool_sidecar), FOREST) is xmp.Outcome.UPDATED
    after = xmp_properties(exiftool_sidecar)
    assert after["XMP-dc:Subject"] == ["holiday", "family", "forest"]
    assert after["XMP-lr:HierarchicalSubject"] == ["places|Norway|Oslo", "scenes|forest"]
    for key, value in before.items():
        if key not in ("XMP-dc:Subject", "XMP-lr:HierarchicalSubject"):
            assert after[key] == value, key

    # Re-tagging replaces scenetool's keyword and nothing else.
    assert xmp.update(str(exiftool_sidecar), SEA) is xmp.Outcome.UPDATED
    after = xmp_properties(exiftool_sidecar)
    assert after["XMP-dc:Subject"] == ["holiday", "family", "sea"]
    assert after["XMP-lr:HierarchicalSubject"] == ["places|Norway|Oslo", "scenes|sea"]
    assert after["XMP-scenetool:Label"] == "sea"

    # Removing takes out exactly what scenetool added.
    assert xmp.update(str(exiftool_sidecar), None) is xmp.Outcome.REMOVED
    assert xmp_properties(exiftool_sidecar) == before


@needs_exiftool
def test_a_keyword_the_user_already_had_stays_theirs(tmp_path):
    sidecar = tmp_path / "photo.xmp"
    subprocess.run([EXIFTOOL, "-q", "-o", str(sidecar), "-XMP-dc:Subject=forest",
                    "-XMP-lr:HierarchicalSubject=scenes|forest"], check=True, timeout=60)
    xmp.update(str(sidecar), FOREST)
    assert keywords(sidecar) == (["forest"], ["scenes|forest"])  # not doubled
    xmp.update(str(sidecar), SEA)
    assert keywords(sidecar) == (["forest", "sea"], ["scenes|forest", "scenes|sea"])
    xmp.update(str(sidecar), None)
    assert keywords(sidecar) == (["forest"], ["scenes|forest"])


@needs_exiftool
def test_keywords_exiftool_adds_to_our_sidecar_survive_a_new_tag(tmp_path):
    sidecar = tmp_path / "photo.jpg.xmp"
    xmp.update(str(sidecar), FOREST)
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-XMP-dc:Subject+=family",
                    "-XMP-xmp:Rating=5", str(sidecar)], check=True, timeout=60)
    assert keywords(sidecar)[0] == ["forest", "family"]
    assert xmp.update(str(sidecar), SEA) is xmp.Outcome.UPDATED
    assert keywords(sidecar) == (["family", "sea"], ["scenes|sea"])
    assert exiftool(str(sidecar))["XMP-xmp:Rating"] == 5
    xmp.update(str(sidecar), None)
    assert keywords(sidecar) == (["family"], [])
    assert exiftool(str(sidecar))["XMP-xmp:Rating"] == 5


def test_a_second_identical_tag_leaves_the_file_alone(tmp_path):
    sidecar = tmp_path / "photo.jpg.xmp"
    xmp.update(str(sidecar), FOREST)
    before = (sidecar.read_bytes(), sidecar.stat().st_mtime_ns, sidecar.stat().st_ino)
    assert xmp.update(str(sidecar), FOREST) is xmp.Outcome.UNCHANGED
    assert (sidecar.read_bytes(), sidecar.stat().st_mtime_ns, sidecar.stat().st_ino) == before
    assert xmp.read(str(sidecar)) == {"label": "forest", "confidence": "0.9312",
                                      "modelSha256": SHA}


def test_removing_from_a_sidecar_only_scenetool_wrote_deletes_it(tmp_path):
    sidecar = tmp_path / "photo.jpg.xmp"
    assert xmp.update(str(sidecar), None) is xmp.Outcome.ABSENT
    assert not sidecar.exists()
    xmp.update(str(sidecar), FOREST)
    assert xmp.update(str(sidecar), None) is xmp.Outcome.DELETED
    assert not sidecar.exists()


def test_dry_run_writes_nothing(tmp_path):
    sidecar = tmp_path / "photo.jpg.xmp"
    assert xmp.update(str(sidecar), FOREST, dry_run=True) is xmp.Outcome.CREATED
    assert not sidecar.exists()
    xmp.update(str(sidecar), FOREST)
    data = sidecar.read_bytes()
    assert xmp.update(str(sidecar), SEA, dry_run=True) is xmp.Outcome.UPDATED
    assert xmp.update(str(sidecar), None, dry_run=True) is xmp.Outcome.DELETED
    assert sidecar.read_bytes() == data


BAD_SIDECARS = {
    "not valid XML": b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF></x:xmpmeta>",
    "has a DTD": (b"<?xml version='1.0'?>\n<!DOCTYPE lolz [<!ENTITY lol 'lol'>"
                  b"<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
                  b"<!ENTITY ext SYSTEM 'file:///etc/passwd'>]>\n"
                  b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>&lol2;&ext;</x:xmpmeta>"),
    "not XMP": b"<?xml version='1.0'?><html><body>a web page</body></html>",
}


@pytest.mark.parametrize("reason", sorted(BAD_SIDECARS))
def test_a_sidecar_that_is_not_xmp_is_left_untouched(tmp_path, reason):
    sidecar = tmp_path / "photo.jpg.xmp"
    sidecar.write_bytes(BAD_SIDECARS[reason])
    stat = sidecar.stat()
    for tag in (FOREST, None):
        with pytest.raises(SidecarError, match=reason):
            xmp.update(str(sidecar), tag)
    assert sidecar.read_bytes() == BAD_SIDECARS[reason]
    assert sidecar.stat().st_mtime_ns == stat.st_mtime_ns
    assert os.listdir(tmp_path) == ["photo.jpg.xmp"]


def test_a_failed_write_keeps_the_old_sidecar_whole(tmp_path, monkeypatch):
    sidecar = tmp_path / "photo.jpg.xmp"
    xmp.update(str(sidecar), FOREST)
    data = sidecar.read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        xmp.update(str(sidecar), SEA)
    assert sidecar.read_bytes() == data
    assert os.listdir(tmp_path) == ["photo.jpg.xmp"]  # no temporary file left behind


def test_sidecar_names():
    assert xmp.sidecar_path("/p/IMG_1.JPG") == "/p/IMG_1.JPG.xmp"
    assert xmp.sidecar_path("/p/IMG_1.JPG", "stem") == "/p/IMG_1.xmp"
    assert xmp.sidecar_path("/p/a.b.png", "stem") == "/p/a.b.xmp"
    with pytest.raises(ValueError):
        xmp.sidecar_path("/p/a.png", "other")
