"""The wheel, built and installed (into a fresh venv, and with pip --target), run from
another directory: the shipped model is package data and is found in every layout."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_image

SHIPPED = ROOT / "scenetool" / "models" / "scenes.onnx"
pytestmark = pytest.mark.skipif(not SHIPPED.exists(),
                                reason="scenetool/models/scenes.onnx is not there to ship")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(ROOT)], check=True, cwd=wheels)
    (built,) = wheels.glob("scenetool-*.whl")
    return built


def test_wheel_in_fresh_venv(wheel, tmp_path, monkeypatch):
    monkeypatch.delenv("SCENETOOL_MODEL")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
           "--disable-pip-version-check"]
    subprocess.run(pip + ["-c", str(ROOT / "constraints.txt"), str(wheel)], check=True)

    elsewhere = tmp_path / "elsewhere"
    make_image(elsewhere / "photo.jpg", "blue", size=(200, 150))
    exe = str(venv / "bin" / "scenetool")
    info = subprocess.run([exe, "info", "--json"], cwd=elsewhere, capture_output=True,
                          text=True, check=True)
    data = json.loads(info.stdout)
    assert Path(data["path"]).is_relative_to(venv), data["path"]
    assert data["sha256"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
    result = subprocess.run([exe, "classify", "photo.jpg", "--store", "s.db"], cwd=elsewhere,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "1 classified" in result.stderr
    version = subprocess.run([str(venv / "bin" / "python"), "-m", "scenetool", "--version"],
                             capture_output=True, text=True, cwd=elsewhere)
    assert version.stdout.startswith("scenetool, version ")
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list",
                                "--format=json"], capture_output=True, text=True, check=True)
    names = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "matplotlib"}


def test_wheel_with_pip_target(wheel, tmp_path):
    """`pip install --target DIR` puts no files under sys.prefix: the model must come with
    the package. The dependencies come from this interpreter's site-packages."""
    target = tmp_path / "target"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-deps", "--target", str(target), str(wheel)], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SCENETOOL_MODEL"}
    env["PYTHONPATH"] = str(target)
    info = subprocess.run([sys.executable, "-m", "scenetool", "info", "--json"], cwd=elsewhere,
                          env=env, capture_output=True, text=True)
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert Path(data["path"]) == target / "scenetool" / "models" / "scenes.onnx"
    assert data["sha256"] == hashlib.sha256(SHIPPED.read_bytes()).hexdigest()
