"""`scenetool classify`: label images, store the results, show and export them."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, NoReturn

import click
from rich.console import Console

from scenetool.cli import Command
from scenetool.cli.options import (
    Probability,
    check_paths,
    close_exports,
    export_options,
    open_exports,
    open_model,
    open_store,
    pipeline_options,
    raw_notes,
    refuse_sidecars_for_urls,
    say,
    sidecar_option,
    stderr,
    stdout,
    store_option,
    unknown_option,
)
from scenetool.errors import FolderGone, UsageError
from scenetool.paths import shown

if TYPE_CHECKING:
    from scenetool.api import Results
    from scenetool.job import Tally
    from scenetool.outputs.table import ResultTable
    from scenetool.store import Row
    from scenetool.tagging import Tagger


@click.command("classify", cls=Command)
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--recursive/--no-recursive", default=True, show_default=True,
              help="Walk into subfolders.")
@click.option("--top-k", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Also show the runners-up.")
@click.option("--min-confidence", type=Probability(), default=0.0, metavar="P",
              show_default=True, help="Below this confidence the label is 'unknown'.")
@export_options("Also write the results")
@click.option("--force", is_flag=True, help="Classify again what the store already has.")
@click.option("-q", "--quiet", is_flag=True, help="No results table; the summary only.")
@click.option("--watch", is_flag=True,
              help="Then keep watching the folders: classify each new or changed image once "
                   "it has stopped changing. Ctrl-C stops.")
@click.option("--settle", type=click.FloatRange(0.1, 3600), default=2.0, metavar="SECONDS",
              show_default=True,
              help="With --watch: how long a file must stay unchanged before it is classified.")
@click.option("--tag", is_flag=True,
              help="Also write each label into the photo's XMP sidecar, as scenetool tag does.")
@sidecar_option
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True,
              help="Run the model in this process, or on Ray (needs the ray extra).")
@click.option("--address", metavar="ADDR", envvar="RAY_ADDRESS", show_envvar=True,
              help="Ray cluster to run on (--engine ray). Default: a local Ray started for "
                   "the run and shut down after it.")
@click.option("--workers", type=click.IntRange(1, 100_000), default=None,
              help="Model replicas (--engine ray). Default: one per CPU of the cluster.")
@unknown_option
@pipeline_options
@store_option
@click.pass_context
def command(ctx: click.Context, paths: tuple[str, ...], recursive: bool, top_k: int,
            min_confidence: float, csv_target: str | None, json_target: str | None,
            force: bool, quiet: bool, watch: bool, settle: float, tag: bool,
            sidecar_name: str, engine: str, address: str | None, workers: int | None,
            no_unknown: bool, batch_size: int, threads: int, model_path: str | None,
            store_path: str | None) -> None:
    """Label every image under PATH... (files or folders) and store the results.

    Images already classified by the same model and unchanged since are taken from the
    store, not classified again (--force redoes them). With --watch, folders are then
    watched and every image copied in is classified once complete.

    \b
    Example:
        scenetool classify ./photos
        scenetool classify ./photos --top-k 3 --csv results.csv
        scenetool classify a.jpg b.png --json - > results.jsonl
        scenetool classify ./incoming --watch --tag
        scenetool classify s3://bucket/photos --engine ray --address 10.0.0.5:6379
    """
    _check_arguments(ctx, paths, recursive, watch, engine, tag)
    model, store = open_model(model_path), open_store(store_path)
    exporters = open_exports(csv_target, json_target)
    to_stdout = "-" in (csv_target, json_target)
    options = dict(model=model, store=store, top_k=top_k, min_confidence=min_confidence,
                   batch_size=batch_size, threads=threads, force=force, unknown=not no_unknown)
    held, results = _start(engine, address, workers, paths, recursive, watch, settle, options)
    tagger = _tagger(sidecar_name, min_confidence) if tag else None
    out, err = stdout(), stderr()
    if watch:
        say(err, f"watching {', '.join(shown(p) for p in paths)} for new images (Ctrl-C stops)")
    started = time.perf_counter()  # a Ray engine's start-up counts in the rate
    finish = partial(_finish, results, model, paths, store, started, to_stdout, out, err,
                     tagger, watch)
    with held, _progress(err, quiet or watch) as progress, results:
        table = None if (quiet or to_stdout) else _result_table(out, progress, model, top_k)
        _run_rows(results, _Outputs(table, exporters, tagger, progress, err, watch), store,
                  finish)
    finish()
    if results.tally.failed or results.tally.walk.errors or (tagger and tagger.tally.failed):
        sys.exit(1)


def _check_arguments(ctx: click.Context, paths: tuple[str, ...], recursive: bool, watch: bool,
                     engine: str, tag: bool) -> None:
    """The usage errors, before the model, the store or an export is opened."""
    check_paths(paths)
    if watch:
        _check_watch(paths, recursive)
    _check_engine_options(ctx, engine, watch, tag, paths)


def _start(engine: str, address: str | None, workers: int | None, paths: tuple[str, ...],
           recursive: bool, watch: bool, settle: float, options: dict) -> tuple[ExitStack, Results]:
    """The engine, held by the returned stack (a Ray engine holds Ray until the run is
    over), and the results to iterate: of one pass over `paths`, or of a watch."""
    from scenetool import api

    held = ExitStack()
    runner = held.enter_context(_engine(engine, options["model"], address, workers, options))
    results = (api.watch(paths, settle=settle, **options) if watch else
               api.classify(paths, recursive=recursive, engine=runner, **options))
    return held, results


@dataclass
class _Outputs:
    """Where a run's rows go as they come: the table, the exports, the sidecars, the bar."""

    table: ResultTable | None
    exporters: list
    tagger: Tagger | None
    progress: _Progress | None
    err: Console
    watch: bool

    def add(self, row: Row, tally: Tally) -> None:
        if self.table:
            self.table.add(row)
        for exporter in self.exporters:
            exporter.write(row)
        if self.tagger:
            _tag(self.tagger, row, self.err)
        if self.progress:
            self.progress.advance(tally)
        if self.watch:  # rows as they come, not a chunk at a time
            self.flush(exports=True)

    def flush(self, exports: bool = False) -> None:
        if self.table:
            self.table.flush()
        if exports:
            for exporter in self.exporters:
                exporter.flush()


def _run_rows(results: Results, outputs: _Outputs, store,
              finish: Callable[[], None]) -> None:
    """The row loop; Ctrl-C, or a watched folder that is gone, ends the command there."""
    try:
        _feed_rows(results, outputs)
    except KeyboardInterrupt:
        _interrupted(results, store, outputs, finish)
    except FolderGone as exc:
        outputs.flush()
        finish()
        say(outputs.err, f"Error: {exc}", "red")
        sys.exit(1)


def _feed_rows(results: Results, outputs: _Outputs) -> None:
    """Each row to the outputs as it comes; when the loop ends, the run's end is recorded
    and the exports are closed."""
    with results.job.recording_end(), close_exports(outputs.exporters):
        for row in results:
            outputs.add(row, results.tally)
        outputs.flush()


def _interrupted(results: Results, store, outputs: _Outputs,
                 finish: Callable[[], None]) -> NoReturn:
    """Ctrl-C: a run says how many results it kept; a watch ends with its summary, as when
    a watched folder is gone. Exit 130 either way."""
    if outputs.progress:
        outputs.progress.stop()
    if not outputs.watch:
        kept = store.count(results.run_id) if results.run_id else 0
        say(outputs.err, f"interrupted: {kept} results kept in run {results.run_id} of "
            f"{store.path}", "yellow")
        sys.exit(130)
    outputs.flush()
    finish()
    say(outputs.err, "stopped watching (Ctrl-C)", "yellow")
    sys.exit(130)


def _check_watch(paths: tuple[str, ...], recursive: bool) -> None:
    if not recursive:
        raise UsageError("--watch watches folders with their subfolders: drop --no-recursive")
    for path in paths:
        if not os.path.isdir(path):
            raise UsageError(f"--watch needs folders; not a folder: {shown(path)}")


def _check_engine_options(ctx: click.Context, engine: str, watch: bool, tag: bool,
                          paths: tuple[str, ...]) -> None:
    """--address and --workers mean something to the Ray engine only, which needs its
    extra ($RAY_ADDRESS alone does not make a local run a usage error); --watch runs
    locally; --tag writes sidecars beside files, which objects in a bucket do not have."""
    from click.core import ParameterSource

    if tag:
        refuse_sidecars_for_urls(paths)
    if engine == "ray":
        if watch:
            raise UsageError("--watch runs with the local engine: drop --engine ray")
        from scenetool.engines.ray import require_ray

        require_ray()
        return
    for name in ("address", "workers"):
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            raise UsageError(f"--{name} needs --engine ray")


def _engine(name: str, model, address: str | None, workers: int | None,
            options: dict) -> AbstractContextManager:
    """The engine for the run as a context (None: the API's local engine); a Ray engine
    holds Ray for its duration."""
    if name != "ray":
        return nullcontext(None)
    from scenetool.engines.common import Settings
    from scenetool.engines.ray import ray_engine

    settings = Settings(batch_size=options["batch_size"], threads=options["threads"],
                        top_k=options["top_k"], min_confidence=options["min_confidence"],
                        unknown=options["unknown"])
    return ray_engine(model, settings, address, workers)


def _tagger(sidecar_name: str, min_confidence: float):
    from scenetool.tagging import Tagger

    return Tagger(sidecar_name, min_confidence)


def _tag(tagger, row, err: Console) -> None:
    """Write the row's sidecar; a problem is reported at once (the run goes on)."""
    tagged = tagger.tag(row)
    if tagged.outcome is None and not row.error:
        say(err, f"failed: {shown(row.path)}: {tagged.reason}", "red")


def _finish(results, model, paths, store, started: float, to_stdout: bool, out: Console,
            err: Console, tagger, watched: bool) -> None:
    """The summary tables and lines, after a run or when a watch ends."""
    seconds = time.perf_counter() - started
    _print_summary(results, model.labels, paths, store.path, seconds,
                   err if to_stdout else out, err, watched)
    if tagger:
        from scenetool.cli.tag import tally_line

        say(err, tally_line(tagger.tally, False, tagger.min_confidence))


def _result_table(out: Console, progress: _Progress | None, model, top_k: int):
    """The results table on stdout, through the bar's console when both are on a terminal."""
    from scenetool.outputs.table import ResultTable

    console = progress.console if progress and out.is_terminal else out
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
                   err: Console, watched: bool) -> None:
    """The per-class table (on `tables`) and the one-line summary on stderr. A watch's
    time is mostly waiting for photos, so it gets no images/s."""
    from scenetool.outputs.table import emit, tally_table

    tally = job.tally
    emit(tables, tally_table(tally, labels))
    for problem in tally.walk.errors:
        say(err, f"could not read {problem}", "red")
    if tally.total == 0:
        say(err, "no images found in " + ", ".join(paths), "yellow")
    notes = raw_notes(tally.raw_without_extra) + _walk_notes(tally.walk)
    summary = (
        f"{tally.total} image(s): {tally.classified} classified, "
        f"{tally.reused} already in the store (--force redoes them), {tally.failed} failed"
        + "".join(f"; {note}" for note in notes)
        + f". Run {job.run_id} in {store_path} "
        + (f"(watched for {seconds:.1f} s)." if watched else
           f"({seconds:.1f} s, {tally.classified / max(seconds, 1e-9):.0f} images/s)."))
    say(err, summary)


def _walk_notes(walked) -> list[str]:
    """What the walk passed over, for the summary line."""
    notes = []
    if walked.skipped:
        notes.append(f"{walked.skipped} non-image file(s) skipped")
    if walked.cycles:
        notes.append(f"{walked.cycles} symlinked folder(s) already walked")
    if walked.duplicates:
        notes.append(f"{walked.duplicates} file(s) named more than once (classified once)")
    if walked.errors:
        notes.append(f"{len(walked.errors)} folder(s) or file(s) could not be read")
    return notes
