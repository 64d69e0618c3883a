"""Decoding: formats, modes, EXIF orientation, draft decoding and every kind of bad file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import COLOURS, make_image, png_bomb
from PIL import Image

from scenetool.errors import DecodeError
from scenetool.inputs.decode import is_candidate, load_image


@pytest.mark.parametrize("name", ["a.jpg", "a.JPEG", "a.png", "a.webp", "a.bmp", "a.gif",
                                  "a.tif", "a.TIFF"])
def test_formats_decode_to_rgb_of_model_size(tmp_path, name):
    path = make_image(tmp_path / name, "blue", size=(64, 48))
    arr = load_image(path, (32, 32))
    assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    assert np.abs(arr.reshape(-1, 3).mean(0) - COLOURS["blue"]).max() < 25


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    suffix = ".tif" if mode in ("I;16", "I", "F", "CMYK") else ".png"
    if mode == "CMYK":
        suffix = ".jpg"
    path = make_image(tmp_path / f"m{suffix}", "green", size=(40, 40), mode=mode)
    with Image.open(path) as im:
        assert im.mode == mode or (mode, im.mode) in {("I;16", "I;16"), ("I", "I;32"),
                                                       ("F", "F")}
    arr = load_image(path, (16, 16))
    assert arr.shape == (16, 16, 3)
    if mode in ("RGBA", "P", "CMYK"):
        assert np.abs(arr.reshape(-1, 3).mean(0) - COLOURS["green"]).max() < 30


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr16 = np.full((20, 20), 32768, np.uint16)  # half scale
    path = tmp_path / "deep.png"
    Image.fromarray(arr16).save(path)
    out = load_image(path, (8, 8))
    assert 120 <= out.mean() <= 135


def test_alpha_is_composited_over_white(tmp_path):
    path = tmp_path / "clear.png"
    Image.new("RGBA", (10, 10), (255, 0, 0, 0)).save(path)
    assert (load_image(path, (4, 4)) == 255).all()


def test_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (30, 30), COLOURS[c]) for c in ("red", "blue", "blue")]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    arr = load_image(path, (8, 8)).reshape(-1, 3).mean(0)
    assert arr[0] > 150 and arr[2] < 100


def test_exif_orientation_is_applied(tmp_path):
    # A wide image, red on the left and blue on the right, stored with orientation 6
    # ("rotate 90 clockwise to view"): upright it is tall, red on top.
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :40] = COLOURS["red"]
    arr[:, 40:] = COLOURS["blue"]
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, exif=exif.tobytes(), quality=95)
    out = load_image(path, (80, 40))  # (height, width): tall
    top, bottom = out[:30].reshape(-1, 3).mean(0), out[50:].reshape(-1, 3).mean(0)
    assert top[0] > 150 and top[2] < 100, "top should be red once upright"
    assert bottom[2] > 150 and bottom[0] < 100


def test_large_jpeg_is_decoded_in_draft_mode(tmp_path, monkeypatch):
    path = make_image(tmp_path / "big.jpg", "red", size=(2400, 1800), quality=80)
    seen = {}
    original = Image.Image.load

    def spy(self):
        result = original(self)
        seen.setdefault("size", self.size)
        return result

    monkeypatch.setattr(Image.Image, "load", spy)
    load_image(path, (150, 150))
    assert max(seen["size"]) <= 2400 // 4, f"decoded at {seen['size']}, not reduced"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("make, reason", [
    (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    (lambda p: p.write_text("this is not a picture"), "not an image (unknown or corrupt format)"),
    (lambda p: p.write_bytes(png_bomb(30000, 30000)),
     "image too large (900,000,000 pixels; over 89,478,485): possible decompression bomb"),
    (lambda p: p.write_bytes(png_bomb(12000, 9000)),
     "image too large (12000x9000 pixels; over 89,478,485): possible decompression bomb"),
])
def test_bad_files_raise_one_line_reasons(tmp_path, make, reason):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(DecodeError) as info:
        load_image(path, (32, 32))
    assert str(info.value) == reason


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(
        buf, "JPEG", quality=95)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DecodeError, match="^truncated image data$"):
        load_image(path, (32, 32))


def test_candidates_by_extension_or_magic(tmp_path):
    jpeg_named_dat = make_image(tmp_path / "photo.dat", "red", fmt="JPEG")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    upper = tmp_path / "SHOUT.JPG"
    upper.write_text("not really")
    assert is_candidate(jpeg_named_dat)
    assert not is_candidate(text)
    assert is_candidate(upper)
    assert not is_candidate(Path(tmp_path / "missing.bin"))


def test_any_decoder_exception_becomes_a_reason(tmp_path, monkeypatch):
    """Pillow can raise struct.error, IndexError... on odd files: one image fails, not the run."""
    import struct as struct_mod

    path = make_image(tmp_path / "odd.png", "red")

    def boom(self):
        raise struct_mod.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(Image.Image, "load", boom)
    with pytest.raises(DecodeError) as info:
        load_image(path, (8, 8))
    assert str(info.value) == "corrupt image (error: unpack requires a buffer of 4 bytes)"


@pytest.mark.parametrize("method, resample", [
    ("nearest", Image.NEAREST), ("bilinear", Image.BILINEAR), ("lanczos", Image.LANCZOS)])
def test_the_model_s_resize_method_is_the_one_used(tmp_path, method, resample):
    """Noise resized by one method differs from the same noise resized by another, so this
    fails if the metadata's method is not the one passed to Pillow."""
    noise = np.random.default_rng(1).integers(0, 256, (60, 90, 3), np.uint8)
    path = tmp_path / "noise.png"
    Image.fromarray(noise).save(path)
    want = np.asarray(Image.fromarray(noise).resize((20, 10), resample))
    assert np.array_equal(load_image(path, (10, 20), method), want)


def test_the_pixel_limit_passed_is_the_one_applied(tmp_path):
    path = make_image(tmp_path / "big.png", "red", size=(100, 100))
    with pytest.raises(DecodeError, match=r"^image too large \(100x100 pixels; over 5,000\)"):
        load_image(path, (8, 8), max_pixels=5000)
