"""`scenetool classify`: label images, store the results, show and export them."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click
from rich.console import Console

from scenetool.cli import Command
from scenetool.cli.options import (
    export_options,
    open_exports,
    open_model,
    open_store,
    pipeline_options,
    say,
    stderr,
    stdout,
    store_option,
)
from scenetool.errors import UsageError


@click.command("classify", cls=Command)
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--recursive/--no-recursive", default=True, show_default=True,
              help="Walk into subfolders.")
@click.option("--top-k", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Also show the runners-up.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.0, metavar="P",
              show_default=True, help="Below this confidence the label is 'unknown'.")
@export_options("Also write the results")
@click.option("--force", is_flag=True, help="Classify again what the store already has.")
@click.option("-q", "--quiet", is_flag=True, help="No results table; the summary only.")
@pipeline_options
@store_option
def command(paths: tuple[str, ...], recursive: bool, top_k: int, min_confidence: float,
            csv_target: str | None, json_target: str | None, force: bool, quiet: bool,
            batch_size: int, threads: int, model_path: str | None,
            store_path: str | None) -> None:
    """Label every image under PATH... (files or folders) and store the results.

    Images already classified by the same model and unchanged since are taken from the
    store, not classified again (--force redoes them).

    \b
    Example:
        scenetool classify ./photos
        scenetool classify ./photos --top-k 3 --csv results.csv
        scenetool classify a.jpg b.png --json - > results.jsonl
    """
    from scenetool.engines.common import Settings
    from scenetool.job import ClassifyJob

    _check_paths(paths)
    model = open_model(model_path)
    store = open_store(store_path)
    exporters = open_exports(csv_target, json_target)
    to_stdout = "-" in (csv_target, json_target)
    settings = Settings(batch_size=batch_size, threads=threads, top_k=top_k,
                        min_confidence=min_confidence)
    arguments = {"paths": list(paths), "recursive": recursive, "top_k": top_k,
                 "min_confidence": min_confidence, "force": force, "batch_size": batch_size}
    job = ClassifyJob(model, store, paths, settings, recursive, force, arguments)
    out, err = stdout(), stderr()
    started = time.perf_counter()
    with _progress(err, quiet) as progress:
        table_console = progress.console if progress and out.is_terminal else out
        table = None if (quiet or to_stdout) else _result_table(table_console, model, top_k)
        try:
            for row in job:
                if table:
                    table.add(row)
                for exporter in exporters:
                    exporter.write(row)
                if progress:
                    progress.advance(job.tally)
            if table:
                table.flush()
        except KeyboardInterrupt:
            if progress:
                progress.stop()
            kept = store.count(job.run_id) if job.run_id else 0
            say(err, f"interrupted: {kept} results kept in run {job.run_id} of {store.path}",
                "yellow")
            sys.exit(130)
        finally:
            for exporter in exporters:
                exporter.close()
    seconds = time.perf_counter() - started
    _print_summary(job, model.labels, paths, store.path, seconds,
                   err if to_stdout else out, err)
    if job.tally.failed:
        sys.exit(1)


def _check_paths(paths: tuple[str, ...]) -> None:
    """A PATH that is not there at all is a typo: a usage error before any run is recorded.
    (A dangling symlink is there; it is classified as a failed file.)"""
    missing = [path for path in paths if not os.path.lexists(path)]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")


def _result_table(console: Console, model, top_k: int):
    from scenetool.outputs.table import ResultTable

    return ResultTable(console, model.labels, top_k)


class _Progress:
    """A transient bar on a terminal's stderr: images done, of how many, and the rate."""

    def __init__(self, err: Console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bar = Progress(TextColumn("classifying"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), console=err, transient=True,
                            redirect_stdout=False)
        self.started = time.perf_counter()
        self.bar.start()
        self.task = self.bar.add_task("classify", total=None, rate="")

    @property
    def console(self) -> Console:
        """With stdout and stderr on one terminal, rows go through the bar's console so
        the bar stays below them."""
        return self.bar.console

    def advance(self, tally) -> None:
        done = tally.total
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(self.task, completed=done, total=tally.walk.candidates or None,
                        rate=f"{rate:.0f} images/s")

    def stop(self) -> None:
        self.bar.stop()


@contextmanager
def _progress(err: Console, quiet: bool) -> Iterator[_Progress | None]:
    """A progress bar when stderr is a terminal and the table is wanted, else None."""
    progress = _Progress(err) if err.is_terminal and not quiet else None
    try:
        yield progress
    finally:
        if progress:
            progress.stop()


def _print_summary(job, labels, paths, store_path, seconds: float, tables: Console,
                   err: Console) -> None:
    """The per-class table (on `tables`) and the one-line summary on stderr."""
    from scenetool.outputs.table import emit, tally_table

    tally = job.tally
    emit(tables, tally_table(tally, labels))
    if tally.total == 0:
        say(err, "no images found in " + ", ".join(paths), "yellow")
    summary = (
        f"{tally.total} image(s): {tally.classified} classified, "
        f"{tally.reused} already in the store (--force redoes them), {tally.failed} failed"
        + "".join(f"; {note}" for note in _raw_note(tally) + _walk_notes(tally.walk))
        + f". Run {job.run_id} in {store_path} ({seconds:.1f} s, "
        f"{tally.classified / max(seconds, 1e-9):.0f} images/s).")
    say(err, summary)


def _raw_note(tally) -> list[str]:
    if not tally.raw_without_extra:
        return []
    return [f"{tally.raw_without_extra} of them camera RAW, which needs "
            "pip install 'scenetool[raw]'"]


def _walk_notes(walked) -> list[str]:
    """What the walk passed over, for the summary line."""
    notes = []
    if walked.skipped:
        notes.append(f"{walked.skipped} non-image file(s) skipped")
    if walked.cycles:
        notes.append(f"{walked.cycles} symlinked folder(s) already walked")
    notes += [f"could not list {problem}" for problem in walked.errors]
    return notes
