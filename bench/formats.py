"""Do converted photos keep their labels? The shared photos in HEIC, AVIF, JPEG XL, JPEG 2000,
Targa, PPM and QOI, classified by `scenetool classify` (a real process, the shipped model
unless --model says otherwise), each compared with its JPEG original's label.

    python -m bench.formats --count 200

Each format is written with its library's default settings, as a user converting photos
would get them. Exits 0 when every format keeps at least --min-agreement of the labels and
none fails, 1 otherwise, 2 when it cannot run.
"""

from __future__ import annotations

import csv
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python bench/formats.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import click  # noqa: E402
from PIL import Image  # noqa: E402

from bench.measure import BenchError, child_env, python_module, run_command  # noqa: E402
from bench.photos import DEFAULT_PHOTOS, list_photos  # noqa: E402
from scenetool.inputs.formats import register_plugins  # noqa: E402

# (Pillow format, extension): the formats the issue names, in its order.
FORMATS = (("HEIF", ".heic"), ("AVIF", ".avif"), ("JXL", ".jxl"), ("JPEG2000", ".jp2"),
           ("TGA", ".tga"), ("PPM", ".ppm"), ("QOI", ".qoi"))


@dataclass(frozen=True)
class Agreement:
    fmt: str
    images: int
    same: int
    failed: list[str]

    @property
    def share(self) -> float:
        return self.same / self.images if self.images else 0.0


def convert(sources: list[str], folder: Path) -> None:
    """Each source as `original.jpg` (a link) and once per format, in `folder`."""
    register_plugins()
    for i, source in enumerate(sources):
        stem = folder / f"{i:04d}"
        (folder / f"{i:04d}-original.jpg").symlink_to(Path(source).resolve())
        with Image.open(source) as im:
            rgb = im.convert("RGB")
        for fmt, ext in FORMATS:
            rgb.save(stem.with_name(f"{stem.name}-as{ext}"), format=fmt)


def classify(folder: Path, model: str | None, out: Path) -> dict[str, dict]:
    args = ["classify", str(folder), "--csv", str(out), "-q",
            "--store", str(out.with_suffix(".db"))]
    if model:
        args += ["--model", model]
    run_command(python_module("scenetool", *args), child_env(), ok_codes=(0, 1))
    with open(out, newline="") as f:
        return {Path(r["path"]).name: r for r in csv.DictReader(f)}


def compare(rows: dict[str, dict], count: int) -> list[Agreement]:
    found = []
    for fmt, ext in FORMATS:
        same, failed = 0, []
        for i in range(count):
            original = rows[f"{i:04d}-original.jpg"]["label"]
            mine = rows.get(f"{i:04d}-as{ext}")
            if mine is None or mine["error"]:
                failed.append(f"{i:04d}-as{ext}: {mine['error'] if mine else 'not classified'}")
            elif mine["label"] == original:
                same += 1
        found.append(Agreement(fmt, count, same, failed))
    return found


def check(sources: list[str], model: str | None, workdir: Path) -> list[Agreement]:
    folder = workdir / "converted"
    folder.mkdir()
    convert(sources, folder)
    return compare(classify(folder, model, workdir / "labels.csv"), len(sources))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--photos", type=click.Path(file_okay=False, exists=True), default=None,
              help=f"JPEG photos to convert. Default: {DEFAULT_PHOTOS}.")
@click.option("--count", type=click.IntRange(1), default=200, show_default=True,
              help="How many photos (the first in walking order).")
@click.option("--model", default=None, help="ONNX model. Default: the shipped one.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=0.95, show_default=True)
def main(photos: str | None, count: int, model: str | None, min_agreement: float) -> None:
    """Convert photos to seven formats and check they keep their JPEG originals' labels."""
    folder = Path(photos) if photos else DEFAULT_PHOTOS
    if not folder.is_dir():
        raise click.UsageError(f"no such folder: {folder} (give --photos)")
    sources = list_photos(folder)[:count]
    with tempfile.TemporaryDirectory(prefix="scenetool-formats-") as tmp:
        try:
            found = check(sources, model, Path(tmp))
        except BenchError as exc:
            raise click.ClickException(str(exc)) from None
    ok = True
    click.echo(f"{len(sources)} photos from {folder}, each converted with default settings")
    click.echo(f"{'format':<10} {'same label':>10} {'share':>7} {'failed':>6}")
    for a in found:
        click.echo(f"{a.fmt:<10} {a.same:>10} {a.share:>7.1%} {len(a.failed):>6}")
        for line in a.failed[:5]:
            click.echo(f"  failed: {line}")
        ok &= a.share >= min_agreement and not a.failed
    total = sum(a.same for a in found) / sum(a.images for a in found)
    click.echo(f"all       {sum(a.same for a in found):>10} {total:>7.1%}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
