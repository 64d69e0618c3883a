"""The wheel, built and installed into a fresh venv, run from another directory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_image

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "exported" / "scenes.onnx"


@pytest.mark.skipif(not SHIPPED.exists(), reason="exported/scenes.onnx is not there to ship")
def test_wheel_in_fresh_venv(tmp_path, monkeypatch):
    monkeypatch.delenv("SCENETOOL_MODEL")
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(ROOT)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("scenetool-*.whl")
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
    assert data["sha256"] == __import__("hashlib").sha256(SHIPPED.read_bytes()).hexdigest()
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
    assert not names & {"tensorflow", "tensorflow-cpu", "keras", "tf2onnx"}
