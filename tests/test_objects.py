"""s3:// paths against a real S3 API on 127.0.0.1 (moto's server, see conftest.s3_server),
with both engines: keys are URLs, re-runs reuse unchanged objects, reports show the URLs
and the contact sheet fetches its thumbnails from them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import make_image

from scenetool.cli import cli

COLOURS = ("red", "green", "blue")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def by_path(output: str) -> dict[str, dict]:
    return {row["path"]: row for row in map(json.loads, output.splitlines())}


@pytest.fixture
def bucket(s3_server, tmp_path) -> tuple[str, object]:
    """A fresh bucket holding photos/ (six images, one of them in a subfolder, a broken
    one, a text file) and other/ (one image); returns its name and a boto3 client."""
    import boto3

    client = boto3.client("s3")
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    for i in range(6):
        key = f"photos/{'deep/' if i == 5 else ''}{i}.jpg"
        image = make_image(tmp_path / "upload" / f"{i}.jpg", COLOURS[i % 3])
        client.put_object(Bucket=name, Key=key, Body=image.read_bytes())
    client.put_object(Bucket=name, Key="photos/broken.jpg", Body=b"\xff\xd8\xff not really")
    client.put_object(Bucket=name, Key="photos/notes.txt", Body=b"not an image")
    client.put_object(Bucket=name, Key="other/x.png",
                      Body=make_image(tmp_path / "upload" / "x.png", "red").read_bytes())
    return name, client


def test_local_engine_classifies_a_bucket_prefix(bucket, tmp_path):
    name, _ = bucket
    url = f"s3://{name}/photos"
    result = invoke("classify", url, "--json", "-")
    assert result.exit_code == 1  # broken.jpg
    rows = by_path(result.stdout)
    expected = {f"{url}/{i}.jpg" for i in range(5)} | {f"{url}/deep/5.jpg", f"{url}/broken.jpg"}
    assert set(rows) == expected  # recursive, images only, nothing from other/
    for i in range(5):
        assert rows[f"{url}/{i}.jpg"]["label"] == COLOURS[i % 3]
    assert rows[f"{url}/broken.jpg"]["error"]
    summary = " ".join(result.stderr.split())
    assert "7 image(s): 6 classified" in summary and "1 non-image file(s) skipped" in summary


def test_rerun_skips_unchanged_objects_and_redoes_changed_ones(bucket, tmp_path):
    name, client = bucket
    url = f"s3://{name}/photos/deep"
    assert invoke("classify", url, "-q").exit_code == 0
    again = invoke("classify", url, "-q")
    assert "1 image(s): 0 classified, 1 already in the store" in " ".join(again.output.split())
    bigger = make_image(tmp_path / "big.jpg", "blue", size=(96, 80)).read_bytes()
    client.put_object(Bucket=name, Key="photos/deep/5.jpg", Body=bigger)
    changed = invoke("classify", url, "--json", "-")
    assert by_path(changed.stdout)[f"{url}/5.jpg"]["label"] == "blue"
    assert "1 classified, 0 already in the store" in " ".join(changed.stderr.split())


def test_missing_bucket_or_prefix_is_a_failed_item(bucket):
    name, _ = bucket
    result = invoke("classify", f"s3://{name}/nothing-here", f"s3://no-such-{name}/x")
    assert result.exit_code == 1
    assert result.output.count("no such object or prefix") == 2


def test_reports_show_urls_and_the_sheet_fetches_thumbnails(bucket, tmp_path):
    name, _ = bucket
    url = f"s3://{name}/photos/0.jpg"
    assert invoke("classify", url, "-q").exit_code == 0
    csv_text = invoke("report", "--csv", "-").stdout
    assert csv_text.splitlines()[1].startswith(f"{url},red,")
    sheet = tmp_path / "sheet.html"
    assert invoke("report", "--html", str(sheet)).exit_code == 0
    html = sheet.read_text()
    assert url in html and "data:image/jpeg;base64," in html


def test_ray_engine_gives_the_same_results_on_a_bucket(ray_cluster, bucket, tmp_path):
    name, _ = bucket
    url = f"s3://{name}/photos"
    local = invoke("classify", url, "--store", str(tmp_path / "l.db"), "--json", "-")
    distributed = invoke("classify", url, "--engine", "ray", "--store",
                         str(tmp_path / "r.db"), "--json", "-")
    assert local.exit_code == distributed.exit_code == 1
    expected, got = by_path(local.stdout), by_path(distributed.stdout)
    assert list(got) == list(expected) and len(got) == 7
    for path, row in expected.items():
        assert (got[path]["label"], got[path]["error"]) == (row["label"], row["error"])
        if row["confidence"] is not None:
            assert abs(got[path]["confidence"] - row["confidence"]) <= 1e-5


def test_sort_refuses_a_bucket(tmp_path):
    result = CliRunner().invoke(cli, ["sort", "s3://bucket/photos", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "does not move objects in object storage" in result.output
    assert not Path(tmp_path / "out").exists()


def test_sidecars_are_never_written_for_objects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["tag", "s3://bucket/photos"], ["classify", "s3://bucket/photos", "--tag"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, args
        assert "s3:// objects have none" in result.output
    assert list(tmp_path.iterdir()) == []  # no "s3:" folder made here
