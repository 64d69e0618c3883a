"""The Kaggle Intel scenes layout, the fixed validation split and the decoded-array cache.

Nothing here imports TensorFlow: scanning, splitting and decoding are plain Pillow and
NumPy, so `python -m train summary` is quick and the tests of this module stay cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scenetool.fsutil import atomic_path
from scenetool.inputs.decode import load_image
from scenetool.inputs.formats import candidate_extensions

log = logging.getLogger(__name__)

#: Every array in the cache is this square size; the data set's native size.
CACHE_SIZE = 150
CACHE_VERSION = 1
DEFAULT_VAL_FRACTION = 0.15
DEFAULT_SEED = 1337


class DataError(Exception):
    """A data folder, split file or cache that cannot be used as it is."""


class DataNotFound(DataError):
    """The data folder does not exist."""


@dataclass(frozen=True)
class ImageFolder:
    """A `DIR/<class>/<image>` tree: class names and the files under each."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[str, ...]  # posix paths relative to root, sorted
    labels: tuple[int, ...]  # index into classes, one per file

    def counts(self, indices: list[int] | None = None) -> dict[str, int]:
        picked = range(len(self.files)) if indices is None else indices
        out = {c: 0 for c in self.classes}
        for i in picked:
            out[self.classes[self.labels[i]]] += 1
        return out


def scan(root: str | os.PathLike, classes: list[str] | None = None) -> ImageFolder:
    """List the images of a Kaggle-layout folder.

    `classes`, when given, is the expected class list: a class folder that is missing is an
    error, as is any class folder with no images in it.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataNotFound(f"data folder not found: {root}")
    dirs = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if not dirs:
        raise DataError(f"{root} has no class folders; expected {root}/<class>/<image>.jpg")
    if classes is not None:
        missing = [c for c in classes if c not in dirs]
        if missing:
            raise DataError(f"{root} lacks the class folder(s): {', '.join(missing)}")
        names = list(classes)
    else:
        names = sorted(dirs)
    files: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    extensions = candidate_extensions()  # what scenetool classifies, by name
    for index, name in enumerate(names):
        found = sorted(
            p.relative_to(root).as_posix()
            for p in dirs[name].rglob("*")
            if p.is_file() and p.suffix.lower() in extensions
        )
        if not found:
            empty.append(name)
        files.extend(found)
        labels.extend([index] * len(found))
    if empty:
        raise DataError(f"class folder(s) with no images in {root}: {', '.join(empty)}")
    if len(names) < 2:
        raise DataError(f"{root} has only one class folder ({names[0]}); need at least two")
    return ImageFolder(root, tuple(names), tuple(files), tuple(labels))


@dataclass
class Split:
    """Indices into an ImageFolder's files: the training part and the validation part."""

    train: list[int]
    val: list[int]
    seed: int = DEFAULT_SEED
    fraction: float = DEFAULT_VAL_FRACTION
    path: Path | None = field(default=None, compare=False)


def make_split(folder: ImageFolder, fraction: float = DEFAULT_VAL_FRACTION,
               seed: int = DEFAULT_SEED) -> Split:
    """A stratified split: `fraction` of every class, chosen by a seeded shuffle."""
    if not 0 < fraction < 1:
        raise DataError(f"validation fraction must be between 0 and 1, not {fraction}")
    rng = np.random.default_rng(seed)
    val: list[int] = []
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(folder.labels):
        by_class.setdefault(label, []).append(i)
    for label in sorted(by_class):
        members = by_class[label]
        n_val = round(len(members) * fraction)
        if len(members) > 1:
            n_val = min(max(n_val, 1), len(members) - 1)
        else:
            n_val = 0
        val.extend(int(i) for i in rng.permutation(members)[:n_val])
    val_set = set(val)
    train = [i for i in range(len(folder.files)) if i not in val_set]
    return Split(train=train, val=sorted(val), seed=seed, fraction=fraction)


def write_split(split: Split, folder: ImageFolder, path: str | os.PathLike) -> None:
    """The validation files, one relative path a line, behind a header with the recipe."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [(f"# validation split: fraction={split.fraction} seed={split.seed} "
             f"n_val={len(split.val)} n_train={len(split.train)}")]
    lines += [folder.files[i] for i in split.val]
    path.write_text("\n".join(lines) + "\n")


def read_split(folder: ImageFolder, path: str | os.PathLike) -> Split:
    """The split written by write_split, checked against the folder it is applied to."""
    path = Path(path)
    header: dict[str, str] = {}
    names: list[str] = []
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            header.update(kv.split("=", 1) for kv in line[1:].split() if "=" in kv)
        elif line.strip():
            names.append(line.strip())
    index = {f: i for i, f in enumerate(folder.files)}
    missing = [n for n in names if n not in index]
    if missing:
        raise DataError(
            f"split file {path} names {len(missing)} file(s) not in {folder.root} "
            f"(first: {missing[0]}); delete it to make a new split"
        )
    val = sorted(index[n] for n in names)
    val_set = set(val)
    train = [i for i in range(len(folder.files)) if i not in val_set]
    return Split(train, val, int(header.get("seed", DEFAULT_SEED)),
                 float(header.get("fraction", DEFAULT_VAL_FRACTION)), path)


def load_or_make_split(folder: ImageFolder, path: str | os.PathLike,
                       fraction: float = DEFAULT_VAL_FRACTION,
                       seed: int = DEFAULT_SEED) -> Split:
    """Read the split at `path`; make it there first if it does not exist yet."""
    path = Path(path)
    if path.exists():
        return read_split(folder, path)
    split = make_split(folder, fraction, seed)
    write_split(split, folder, path)
    split.path = path
    log.info("wrote a new validation split to %s", path)
    return split


# -- decoding and the cache ------------------------------------------------------------

def decode(path: Path, size: int = CACHE_SIZE) -> np.ndarray:
    """One image as an RGB uint8 array of size x size (bilinear resize when it differs).

    The runtime's own decoder, so training sees what `scenetool classify` sees: every
    format it reads, EXIF orientation applied, the same conversion to RGB.
    """
    return load_image(path, (size, size), "bilinear")


def folder_key(folder: ImageFolder, size: int = CACHE_SIZE) -> str:
    """A digest of the folder's contents as listed (path, size, mtime) and the cache format."""
    h = hashlib.sha256(f"v{CACHE_VERSION} size={size} classes={folder.classes}".encode())
    for rel in folder.files:
        st = (folder.root / rel).stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def default_cache_dir() -> Path:
    env = os.environ.get("SCENETOOL_TRAIN_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scenetool" / "train"


@dataclass
class Arrays:
    """The decoded folder: images[i] belongs to folder.files[i] unless i is in `bad`."""

    images: np.ndarray  # (N, S, S, 3) uint8, zeros where a file could not be read
    bad: list[int]
    key: str


def load_arrays(folder: ImageFolder, cache_dir: str | os.PathLike | None = None,
                threads: int | None = None, size: int = CACHE_SIZE) -> Arrays:
    """Decode every image once and keep the result on disk; later calls load in seconds.

    Unreadable files are skipped with a warning naming each one, and are listed in `bad`.
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    key = folder_key(folder, size)
    npy, meta = cache / f"{key}.npy", cache / f"{key}.json"
    if npy.exists() and meta.exists():
        info = json.loads(meta.read_text())
        images = np.load(npy, mmap_mode="r")
        if images.shape == (len(folder.files), size, size, 3):
            for rel in info["bad"]:
                log.warning("skipped unreadable image %s", folder.root / rel)
            return Arrays(np.asarray(images), [folder.files.index(b) for b in info["bad"]], key)
    images = np.zeros((len(folder.files), size, size, 3), np.uint8)
    bad: list[int] = []

    def one(i: int) -> None:
        try:
            images[i] = decode(folder.root / folder.files[i], size)
        except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
            log.warning("skipped unreadable image %s: %s", folder.root / folder.files[i], exc)
            bad.append(i)

    with ThreadPoolExecutor(threads or os.cpu_count() or 2) as pool:
        list(pool.map(one, range(len(folder.files))))
    bad.sort()
    cache.mkdir(parents=True, exist_ok=True)
    with atomic_path(npy, suffix=".npy") as tmp:  # np.save adds .npy to any other name
        np.save(tmp, images)
    meta.write_text(json.dumps({"root": str(folder.root), "n": len(folder.files),
                                "bad": [folder.files[i] for i in bad]}))
    return Arrays(images, bad, key)


def training_summary(folder: ImageFolder, split: Split) -> dict:
    """Per-split, per-class counts: for the summary command and the model's metadata."""
    return {
        "root": folder.root.name,
        "classes": list(folder.classes),
        "train": folder.counts(split.train),
        "val": folder.counts(split.val),
        "val_fraction": split.fraction,
        "seed": split.seed,
    }
