"""The photo sets the benchmark runs on: the shared photos or a generated stand-in, folders
of links to them, and twelve-megapixel "phone photos" (JPEG, and the same in HEIC) cached
between runs.

Photos are never copied into the repository: folders of links live in a temporary
workspace, and the phone photos in the user's cache folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from bench.measure import REPO_ROOT
from scenetool.fsutil import atomic_path
from scenetool.inputs.walk import walk

DEFAULT_PHOTOS = REPO_ROOT.parent / "shared" / "data" / "intel" / "seg_pred"
GENERATED_COUNT = 300
GENERATED_SIZE = (150, 150)  # like the shared photos
PHONE_SIZE = (4032, 3024)  # twelve megapixels, 4:3
PHONE_QUALITY = 90
# Gaussian grain added after upscaling: a bare upscale is too smooth to cost what a real
# photo costs to decode; with this grain the files weigh about what a phone writes (~4 MB).
PHONE_GRAIN = 8
PHONE_VERSION = 1  # bump when the recipe changes, so cached photos are made again
# HEIC as phones write it: a 320 px thumbnail beside the image (an iPhone's is 320x240).
# x265's fastest preset keeps making them bearable (about 6 s a photo instead of a minute);
# decoding, which is what is measured, costs about the same whatever the preset.
HEIC_QUALITY = 80
HEIC_THUMBNAIL = 320
HEIC_PRESET = "ultrafast"


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scenetool-bench"


def list_photos(folder: str | os.PathLike) -> list[str]:
    """The images scenetool would classify under `folder`, in its walking order."""
    return [item.path for item in walk([str(folder)]) if item.error is None]


def generate_photos(folder: Path, count: int = GENERATED_COUNT, seed: int = 0) -> list[str]:
    """Write `count` random-ish JPEGs (gradients, shapes, grain) when no photos are at hand.

    They decode like small real photos, not like flat colour, which JPEG makes too cheap.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = GENERATED_SIZE
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for i in range(count):
        start, slope = rng.uniform(0, 255, 3), rng.uniform(-1, 1, (2, 3))
        base = start + xs[..., None] * slope[0] + ys[..., None] * slope[1]
        base += rng.normal(0, 12, base.shape)
        im = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(3, 9))):
            x0, y0 = rng.integers(0, width), rng.integers(0, height)
            box = (x0, y0, x0 + rng.integers(5, 80), y0 + rng.integers(5, 80))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        path = folder / f"generated-{i:04d}.jpg"
        im.save(path, "JPEG", quality=90)
        paths.append(str(path))
    return paths


def _link(source: str, target: Path) -> None:
    """A hard link (the same file, free), or a symbolic link across filesystems."""
    try:
        os.link(source, target)
    except OSError:
        os.symlink(os.path.abspath(source), target)


def link_tree(files: Sequence[str], folder: Path, copies: int = 1) -> Path:
    """A folder of links to `files`; with copies > 1, that many subfolders of them.

    Each link gets a numbered name so files from different folders cannot collide.
    """
    folder.mkdir(parents=True)
    for copy in range(copies):
        sub = folder / f"copy-{copy}" if copies > 1 else folder
        sub.mkdir(exist_ok=True)
        for i, source in enumerate(files):
            _link(source, sub / f"{i:05d}-{os.path.basename(source)}")
    return folder


def _phone_key(sources: Sequence[str]) -> str:
    recipe = [PHONE_VERSION, PHONE_SIZE, PHONE_QUALITY, PHONE_GRAIN]
    recipe += [(os.path.basename(s), os.path.getsize(s)) for s in sources]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]


def _make_phone_photo(source: str, target: Path) -> None:
    with Image.open(source) as im:
        big = im.convert("RGB").resize(PHONE_SIZE, Image.BICUBIC)
    grain = Image.effect_noise(PHONE_SIZE, PHONE_GRAIN).convert("RGB")
    photo = ImageChops.add(big, grain, scale=1.0, offset=-128)
    with atomic_path(target) as partial:
        photo.save(partial, "JPEG", quality=PHONE_QUALITY)


def phone_photos(sources: Sequence[str], count: int, cache: Path) -> list[str]:
    """`count` twelve-megapixel JPEGs upscaled from `sources`, made once and cached.

    The cache folder is named after the recipe and the sources, and is complete only once
    its `.done` file exists, so an interrupted run makes them again.
    """
    if not sources:
        raise ValueError("no photos to make phone photos from")
    chosen = [sources[i % len(sources)] for i in range(count)]
    name = f"phone-{count}-{_phone_key(chosen)}"
    folder, done = cache / name, cache / f"{name}.done"
    targets = [folder / f"phone-{i:03d}.jpg" for i in range(count)]
    if done.is_file() and all(t.is_file() for t in targets):
        return [str(t) for t in targets]
    # Start clean: a half-written file left by an interrupted run is still a JPEG by its
    # magic bytes, which scenetool would classify.
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for source, target in zip(chosen, targets, strict=True):
        _make_phone_photo(source, target)
    done.write_text(json.dumps({"sources": chosen}, indent=1) + "\n")
    return [str(t) for t in targets]


def phone_heics(jpegs: Sequence[str], thumbnail: bool) -> list[str]:
    """The phone photos `jpegs` (from `phone_photos`) in HEIC, made once beside them.

    With `thumbnail`, each carries a 320 px thumbnail as a phone's does; without, a HEIC
    has to be decoded whole at 12 megapixels.
    """
    from scenetool.inputs.formats import register_plugins

    register_plugins()
    source = Path(jpegs[0]).parent
    name = (f"{source.name}-heic-q{HEIC_QUALITY}-{HEIC_PRESET}"
            f"{f'-thumb{HEIC_THUMBNAIL}' if thumbnail else '-nothumb'}-{len(jpegs)}")
    folder, done = source.parent / name, source.parent / f"{name}.done"
    targets = [folder / (Path(j).stem + ".heic") for j in jpegs]
    if done.is_file() and all(t.is_file() for t in targets):
        return [str(t) for t in targets]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for jpeg, target in zip(jpegs, targets, strict=True):
        with Image.open(jpeg) as im, atomic_path(target) as partial:
            im.save(partial, "HEIF", quality=HEIC_QUALITY, enc_params={"preset": HEIC_PRESET},
                    thumbnails=[HEIC_THUMBNAIL] if thumbnail else [])
    done.write_text(json.dumps({"sources": list(jpegs)}, indent=1) + "\n")
    return [str(t) for t in targets]
