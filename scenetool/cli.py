"""The command line: Click commands, rich output and exit codes.

Exit codes: 0 every candidate image classified; 1 some inputs could not be read (the rest
are classified and stored); 2 a usage error or an unusable model or store. Library code
raises; this module alone turns errors into one-line messages.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

from scenetool import __version__

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


class Fatal(click.ClickException):
    """An error that stops the command: unusable model, store or output file. Exit 2."""

    exit_code = 2


def stdout() -> Console:
    # Piped or redirected output is read later, not on an 80-column terminal: do not fold
    # paths to fit one.
    console = Console(file=sys.stdout)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160
    return console


def stderr() -> Console:
    return Console(file=sys.stderr, stderr=True)


def model_option(fn: Callable) -> Callable:
    return click.option(
        "--model", "model_path", metavar="FILE", default=None,
        help="ONNX model to use. Default: $SCENETOOL_MODEL, else the shipped model.")(fn)


def store_option(fn: Callable) -> Callable:
    return click.option(
        "--store", "store_path", metavar="FILE", default=None,
        help="Results database. Default: $SCENETOOL_STORE, else scenetool.db in "
             f"{click.get_app_dir('scenetool')}.")(fn)


def pipeline_options(fn: Callable) -> Callable:
    """--batch-size and --threads, shared by every command that runs the model."""
    fn = click.option("--threads", type=click.IntRange(0, 256), default=0, show_default=True,
                      help="Decoding threads; 0 = one per core.")(fn)
    fn = click.option("--batch-size", type=click.IntRange(1, 4096), default=32,
                      show_default=True, help="Images per inference batch.")(fn)
    return model_option(fn)


def open_model(model_path: str | None):
    from scenetool.model import ModelError
    from scenetool.model import open_model as _open

    try:
        return _open(model_path)
    except ModelError as exc:
        raise Fatal(str(exc)) from None


def open_store(store_path: str | None):
    from scenetool.store import Store, StoreError

    try:
        return Store(store_path)
    except StoreError as exc:
        raise Fatal(str(exc)) from None


def handle_errors(fn: Callable) -> Callable:
    """A store or model that fails mid-command (disk full, a model that cannot run the
    batch) is exit 2 with a one-line reason; what was committed so far stays in the store."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from scenetool.model import ModelError
        from scenetool.store import StoreError

        try:
            return fn(*args, **kwargs)
        except (StoreError, ModelError) as exc:
            raise Fatal(str(exc)) from None
    return wrapper


def open_exports(csv_target: str | None, json_target: str | None) -> list:
    from scenetool.exports import Exporter

    if csv_target == "-" and json_target == "-":
        raise click.UsageError("only one of --csv and --json can write to stdout (-)")
    exporters = []
    for target, fmt in ((csv_target, "csv"), (json_target, "json")):
        if target:
            try:
                exporters.append(Exporter(target, fmt))
            except OSError as exc:
                raise Fatal(f"cannot write {target}: {exc.strerror or exc}") from None
    return exporters


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="scenetool")
def cli() -> None:
    """Sort photos of scenes: buildings, forest, glacier, mountain, sea or street.

    \b
    Example:
        scenetool classify ./photos
        scenetool report --csv results.csv
    """


@cli.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--recursive/--no-recursive", default=True, show_default=True,
              help="Walk into subfolders.")
@click.option("--top-k", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Also show the runners-up.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.0, metavar="P",
              show_default=True, help="Below this confidence the label is 'unknown'.")
@click.option("--csv", "csv_target", metavar="FILE|-", help="Also write the results as CSV.")
@click.option("--json", "json_target", metavar="FILE|-",
              help="Also write the results as JSON Lines.")
@click.option("--force", is_flag=True, help="Classify again what the store already has.")
@click.option("-q", "--quiet", is_flag=True, help="No results table; the summary only.")
@pipeline_options
@store_option
@handle_errors
def classify(paths: tuple[str, ...], recursive: bool, top_k: int, min_confidence: float,
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
    from scenetool.job import ClassifyJob
    from scenetool.pipeline import Settings
    from scenetool.render import ResultTable, tally_table

    model = open_model(model_path)
    store = open_store(store_path)
    exporters = open_exports(csv_target, json_target)
    to_stdout = "-" in (csv_target, json_target)
    out, err = stdout(), stderr()
    settings = Settings(batch_size=batch_size, threads=threads, top_k=max(top_k, 1),
                        min_confidence=min_confidence)
    arguments = {"paths": list(paths), "recursive": recursive, "top_k": top_k,
                 "min_confidence": min_confidence, "force": force, "batch_size": batch_size}
    job = ClassifyJob(model, store, paths, settings, recursive, force, arguments)
    started = time.perf_counter()
    progress = None
    if err.is_terminal and not quiet:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        progress = Progress(TextColumn("classifying"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]}"), console=err, transient=True,
                            redirect_stdout=False)
    # With stdout and stderr on one terminal, rows go through the progress display so the
    # bar stays below them; otherwise stdout gets them directly.
    table_console = progress.console if progress and out.is_terminal else out
    table = None if (quiet or to_stdout) else ResultTable(table_console, model.labels, top_k)
    try:
        if progress:
            progress.start()
            task = progress.add_task("classify", total=None, rate="")
        for row in job:
            if table:
                table.add(row)
            for exporter in exporters:
                exporter.write(row)
            if progress:
                done = job.tally.total
                rate = done / max(time.perf_counter() - started, 1e-9)
                progress.update(task, completed=done, total=job.tally.walk.candidates or None,
                                rate=f"{rate:.0f} images/s")
        if table:
            table.flush()
    except KeyboardInterrupt:
        if progress:
            progress.stop()
        kept = store.count(job.run_id) if job.run_id else 0
        err.print(f"interrupted: {kept} results kept in run {job.run_id} of {store.path}",
                  style="yellow", highlight=False)
        sys.exit(130)
    finally:
        if progress:
            progress.stop()
        for exporter in exporters:
            exporter.close()
    seconds = time.perf_counter() - started
    tally = job.tally
    (err if to_stdout else out).print(tally_table(tally, model.labels))
    walked = tally.walk
    notes = []
    if walked.skipped:
        notes.append(f"{walked.skipped} non-image file(s) skipped")
    if walked.cycles:
        notes.append(f"{walked.cycles} symlinked folder(s) already walked")
    for problem in walked.errors:
        notes.append(f"could not list {problem}")
    if tally.total == 0:
        err.print("no images found in " + ", ".join(paths), style="yellow", highlight=False)
    err.print(
        f"{tally.total} image(s): {tally.classified} classified, "
        f"{tally.reused} already in the store (--force redoes them), {tally.failed} failed"
        + ("; " + "; ".join(notes) if notes else "")
        + f". Run {job.run_id} in {store.path} ({seconds:.1f} s, "
        f"{tally.classified / max(seconds, 1e-9):.0f} images/s).", highlight=False)
    if tally.failed:
        sys.exit(1)


@cli.command()
@click.option("--run", "run_id", type=int, default=None, help="Run id. Default: the latest.")
@click.option("--all", "all_runs", is_flag=True,
              help="Every image in the store (its latest result), not one run.")
@click.option("--csv", "csv_target", metavar="FILE|-", help="Write one row per image as CSV.")
@click.option("--json", "json_target", metavar="FILE|-", help="Write JSON Lines.")
@click.option("--html", "html_target", metavar="FILE",
              help="Write a self-contained HTML contact sheet.")
@click.option("--html-limit", type=click.IntRange(1), default=2000, show_default=True,
              help="Most thumbnails per class in the contact sheet.")
@click.option("--low", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Confidence below which an image is listed as doubtful.")
@store_option
@handle_errors
def report(run_id: int | None, all_runs: bool, csv_target: str | None,
           json_target: str | None, html_target: str | None, html_limit: int, low: float,
           store_path: str | None) -> None:
    """Summarise a run from the store, or export it one row per image.

    \b
    Example:
        scenetool report
        scenetool report --run 3 --csv results.csv
        scenetool report --csv - | head
        scenetool report --html sheet.html
    """
    from scenetool.render import run_header, summary_tables
    from scenetool.report import Summary

    if run_id is not None and all_runs:
        raise click.UsageError("--run and --all exclude each other")
    store = open_store(store_path)
    run = None
    if not all_runs:
        run = store.run(run_id)
        if run is None:
            raise Fatal(f"no run {run_id} in {store.path}" if run_id is not None else
                        f"no runs in {store.path} yet: run scenetool classify first")
    exporters = open_exports(csv_target, json_target)
    to_stdout = "-" in (csv_target, json_target)
    summary = Summary(low_threshold=low)
    try:
        for row in store.rows(run.id if run else None):
            summary.add(row)
            for exporter in exporters:
                exporter.write(row)
    finally:
        for exporter in exporters:
            exporter.close()
    console = stderr() if to_stdout else stdout()
    console.print(run_header(run, str(store.path), summary.total), highlight=False)
    for table in summary_tables(summary):
        console.print(table)
    if html_target:
        from scenetool.html import write_contact_sheet

        try:
            info = write_contact_sheet(store, run, html_target, limit=html_limit,
                                       low_threshold=low)
        except OSError as exc:
            raise Fatal(f"cannot write {html_target}: {exc.strerror or exc}") from None
        stderr().print(info, highlight=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@model_option
def info(as_json: bool, model_path: str | None) -> None:
    """Describe the model: path, checksum, size, opset, input and labels.

    \b
    Example:
        scenetool info
        scenetool info --json --model other.onnx
    """
    details = open_model(model_path).info().as_dict()
    if as_json:
        click.echo(json.dumps(details, indent=2))
        return
    from rich.table import Table

    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in details.items():
        table.add_row(key, value if isinstance(value, str) else json.dumps(value))
    stdout().print(table)


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--json", "json_target", metavar="FILE|-", help="Write the scores as JSON.")
@click.option("--png", "png_target", metavar="FILE", help="Draw the confusion matrix (matplotlib).")
@pipeline_options
@handle_errors
def evaluate(folder: str, json_target: str | None, png_target: str | None, batch_size: int,
             threads: int, model_path: str | None) -> None:
    """Score the model on FOLDER, which holds one subfolder of images per label.

    \b
    Example:
        scenetool evaluate ./seg_test --json scores.json --png confusion.png
    """
    from scenetool.evaluate import LayoutError, confusion_png, labelled_items, score
    from scenetool.pipeline import Settings, classify
    from scenetool.render import scores_tables, shown_path

    if png_target and importlib.util.find_spec("matplotlib") is None:
        raise click.BadParameter("needs matplotlib: pip install 'scenetool[train]'",
                                 param_hint="--png")
    model = open_model(model_path)
    truths: dict[str, str] = {}

    def items():
        for true, item in labelled_items(folder, model.labels):
            truths[item.path] = true
            yield item

    pairs, failed = [], []
    settings = Settings(batch_size=batch_size, threads=threads)
    try:
        for result in classify(model, items(), settings):
            if result.error:
                failed.append((result.item.path, result.error))
            else:
                pairs.append((truths.pop(result.item.path), result.label))
    except LayoutError as exc:
        raise Fatal(str(exc)) from None
    scores = score(model.labels, pairs)
    to_stdout = json_target == "-"
    console = stderr() if to_stdout else stdout()
    for table in scores_tables(scores):
        console.print(table)
    for path, reason in failed:
        stderr().print(f"failed: {shown_path(path)}: {reason}", style="red", highlight=False)
    if json_target:
        text = json.dumps(scores.as_dict(), indent=2)
        if to_stdout:
            click.echo(text)
        else:
            try:
                with open(json_target, "w", encoding="utf-8") as f:
                    f.write(text + "\n")
            except OSError as exc:
                raise Fatal(f"cannot write {json_target}: {exc.strerror or exc}") from None
    if png_target:
        confusion_png(scores, png_target, title=f"{model.path.name} on {folder}")
    if failed:
        sys.exit(1)


@cli.command("sort")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("dest", type=click.Path())
@click.option("--copy", "copy_", is_flag=True, help="Copy the images (the default).")
@click.option("--move", is_flag=True, help="Move the images (safe across filesystems).")
@click.option("--link", is_flag=True, help="Make symbolic links to the images.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=0.0, metavar="P",
              show_default=True, help="Below this confidence an image goes to DEST/unknown/.")
@click.option("--dry-run", is_flag=True, help="Say what would be done; write no file.")
@pipeline_options
@store_option
@handle_errors
def sort_command(src: str, dest: str, copy_: bool, move: bool, link: bool,
                 min_confidence: float, dry_run: bool, batch_size: int, threads: int,
                 model_path: str | None, store_path: str | None) -> None:
    """Put each image under SRC into DEST/<label>/, classifying what the store lacks.

    Nothing is overwritten: a name already taken gets a suffix (name-1.jpg), unless it
    holds the same file, which is then left as it is, so a second run does nothing.
    Files that cannot be read stay where they are.

    \b
    Example:
        scenetool sort ./photos ./sorted
        scenetool sort ./photos ./sorted --move --min-confidence 0.6
        scenetool sort ./photos ./sorted --link --dry-run
    """
    from contextlib import nullcontext

    from scenetool.job import ClassifyJob
    from scenetool.pipeline import Settings
    from scenetool.render import shown_path
    from scenetool.sort import Action, Sorter, SortError, sort_table, walk_roots

    if copy_ + move + link > 1:
        raise click.UsageError("--copy, --move and --link exclude each other")
    action = Action.MOVE if move else Action.LINK if link else Action.COPY
    try:
        roots = walk_roots(src, dest)
    except SortError as exc:
        raise click.UsageError(str(exc)) from None
    model = open_model(model_path)
    store = open_store(store_path)
    err = stderr()
    settings = Settings(batch_size=batch_size, threads=threads, min_confidence=min_confidence)
    arguments = {"command": "sort", "src": src, "dest": dest, "action": action.value,
                 "min_confidence": min_confidence, "dry_run": dry_run}
    job = ClassifyJob(model, store, roots, settings, arguments=arguments)
    sorter = Sorter(dest, action, min_confidence, dry_run)
    try:
        with err.status("classifying", spinner="line") if err.is_terminal else nullcontext():
            rows = list(job)
        tally = sorter.place_all(rows)
    except KeyboardInterrupt:
        err.print(f"interrupted: {sorter.tally.total} image(s) placed; run the same sort "
                  "again to finish", style="yellow", highlight=False, markup=False)
        sys.exit(130)
    stdout().print(sort_table(tally, action, dry_run))
    for path, reason in tally.failed:
        err.print(f"failed: {shown_path(path)}: {reason}", style="red", highlight=False,
                  markup=False, soft_wrap=True)
    done = sum(tally.done.values())
    verb = f"would be {action.done}" if dry_run else action.done
    err.print(
        f"{tally.total} image(s): {done} {verb}, {sum(tally.already.values())} already there, "
        f"{len(tally.failed)} failed (left in place)"
        + (f", {tally.inside_dest} already inside DEST" if tally.inside_dest else "")
        + f". Run {job.run_id} in {store.path}: {job.tally.classified} classified, "
        f"{job.tally.reused} from the store.", highlight=False, markup=False,
        soft_wrap=True)
    if tally.failed:
        sys.exit(1)


def main() -> None:
    """The console script: Click with Pillow's bomb warning silenced (we refuse such files)."""
    from PIL import Image

    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    cli(prog_name="scenetool")
