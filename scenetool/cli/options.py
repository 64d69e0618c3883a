"""What the commands share: option decorators, consoles, and opening the model, the store
and the export files."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.console import Console

from scenetool.constants import MODEL_ENV, STORE_ENV
from scenetool.errors import OutputError, ScenetoolError, UsageError


class Probability(click.FloatRange):
    """A number from 0 to 1; NaN (which compares false with both ends) is refused."""

    name = "probability"

    def __init__(self) -> None:
        super().__init__(0.0, 1.0)

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number from 0 to 1.", param, ctx)
        return number


# Run ids are SQLite integers: anything beyond 64 bits cannot name a run.
RUN_ID = click.IntRange(1, 2**63 - 1)


def model_option(fn: Callable) -> Callable:
    return click.option(
        "--model", "model_path", metavar="FILE", default=None, envvar=MODEL_ENV,
        show_envvar=True, help="ONNX model to use. Default: the shipped model.")(fn)


def store_option(fn: Callable) -> Callable:
    return click.option(
        "--store", "store_path", metavar="FILE", default=None, envvar=STORE_ENV,
        show_envvar=True,
        help=f"Results database. Default: scenetool.db in {click.get_app_dir('scenetool')}.")(fn)


def pipeline_options(fn: Callable) -> Callable:
    """--batch-size, --threads and --model, shared by every command that runs the model."""
    fn = click.option("--threads", type=click.IntRange(0, 256), default=0, show_default=True,
                      help="Decoding threads; 0 = one per core.")(fn)
    fn = click.option("--batch-size", type=click.IntRange(1, 4096), default=32,
                      show_default=True, help="Images per inference batch.")(fn)
    return model_option(fn)


def sidecar_option(fn: Callable) -> Callable:
    return click.option(
        "--sidecar-name", type=click.Choice(["ext", "stem"]), default="ext", show_default=True,
        help="XMP sidecar beside each photo: PHOTO.EXT.xmp (ext: darktable, digiKam) or "
             "PHOTO.xmp (stem: Lightroom, Capture One).")(fn)


def unknown_option(fn: Callable) -> Callable:
    """--no-unknown: every photo gets one of the model's labels, scene or not."""
    return click.option(
        "--no-unknown", "no_unknown", is_flag=True,
        help="Give every photo one of the model's labels, even those its scene score calls "
             "not a scene (models without the score never say unknown but for "
             "--min-confidence).")(fn)


def export_options(what: str) -> Callable[[Callable], Callable]:
    """--csv and --json (FILE or - for stdout), worded for `what` the command writes."""
    def decorate(fn: Callable) -> Callable:
        fn = click.option("--json", "json_target", metavar="FILE|-",
                          help=f"{what} as JSON Lines.")(fn)
        return click.option("--csv", "csv_target", metavar="FILE|-",
                            help=f"{what} as CSV.")(fn)
    return decorate


class _Console(Console):
    """rich's Console, except that a closed pipe is our one-line error (exit 2), not
    rich's silent exit 1."""

    def on_broken_pipe(self) -> None:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, (sys.stderr if self.stderr else sys.stdout).fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass
        raise OutputError(f"cannot write to {'stderr' if self.stderr else 'stdout'}: "
                          "broken pipe")


def stdout() -> Console:
    # Piped or redirected output is read later, not on an 80-column terminal: do not fold
    # paths to fit one.
    console = _Console(file=sys.stdout)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160
    return console


def stderr() -> Console:
    return _Console(file=sys.stderr, stderr=True)


def check_paths(paths: tuple[str, ...]) -> None:
    """A PATH that is not there at all is a typo: a usage error before any run is recorded.
    (A dangling symlink is there; it is classified as a failed file. An s3:// URL is looked
    up by the run: a missing bucket or prefix is a failed item.)"""
    from scenetool.paths import is_url

    missing = [path for path in paths if not is_url(path) and not os.path.lexists(path)]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")


def raw_notes(failed_raw: int) -> list[str]:
    """The summary's note on camera RAW files that failed for want of the `raw` extra."""
    if not failed_raw:
        return []
    return [f"{failed_raw} of them camera RAW, which needs pip install 'scenetool[raw]'"]


def open_model(model_path: str | None):
    from scenetool.model import open_model as _open

    return _open(model_path)


def open_store(store_path: str | None, readonly: bool = False):
    """The store; `readonly` for commands that only read it (a read-only folder is fine)."""
    from scenetool.store import Store

    return Store(store_path, readonly=readonly)


def say(console: Console, text: str, style: str | None = None) -> None:
    """One message line: never wrapped mid-sentence, never read as markup, control
    characters (from file names) escaped."""
    from rich.text import Text

    from scenetool.paths import escape

    console.print(Text(escape(text), style=style or ""), soft_wrap=True)


@contextmanager
def close_exports(exporters: list) -> Iterator[None]:
    """Close the exporters after the block. When the block failed, closing is quiet (its
    error is the one reported); otherwise a failed close (the last rows reaching a full
    disk) is the error."""
    try:
        yield
    except BaseException:
        for exporter in exporters:
            try:
                exporter.close()
            except ScenetoolError:
                pass
        raise
    for exporter in exporters:
        exporter.close()


def open_exports(csv_target: str | None, json_target: str | None) -> list:
    """The exporters asked for; only one of them may write to stdout."""
    from scenetool.outputs.exports import Exporter

    if csv_target == "-" and json_target == "-":
        raise UsageError("only one of --csv and --json can write to stdout (-)")
    exporters: list = []
    try:
        for target, fmt in ((csv_target, "csv"), (json_target, "json")):
            if target:
                exporters.append(Exporter(target, fmt))
    except ScenetoolError:
        for exporter in exporters:
            exporter.close()
        raise
    return exporters


def refuse_sidecars_for_urls(paths) -> None:
    """Sidecars are files beside photos: objects in a bucket have no such place (and a URL
    must never become a local path)."""
    from scenetool.paths import is_url

    if any(is_url(path) for path in paths):
        raise UsageError("XMP sidecars are written beside photos in folders; s3:// objects "
                         "have none")
