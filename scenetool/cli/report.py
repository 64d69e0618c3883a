"""`scenetool report`: summarise a stored run, export it, or draw its contact sheet."""

from __future__ import annotations

import click

from scenetool.cli import Command
from scenetool.cli.options import (
    RUN_ID,
    Probability,
    close_exports,
    export_options,
    open_exports,
    open_store,
    say,
    stderr,
    stdout,
    store_option,
)
from scenetool.errors import OutputError, StoreError, UsageError


def _a_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value == "":
        raise click.BadParameter("name a file, such as sheet.html", ctx, param)
    if value == "-":
        raise click.BadParameter("the contact sheet is a file (its thumbnails are read "
                                 "back); name one, such as sheet.html", ctx, param)
    return value


@click.command("report", cls=Command)
@click.option("--run", "run_id", type=RUN_ID, default=None, help="Run id. Default: the latest.")
@click.option("--all", "all_runs", is_flag=True,
              help="Every image in the store (its latest result), not one run.")
@export_options("Write one row per image")
@click.option("--html", "html_target", metavar="FILE", callback=_a_file,
              help="Write a self-contained HTML contact sheet.")
@click.option("--html-limit", type=click.IntRange(1), default=2000, show_default=True,
              help="Most thumbnails in each section of the contact sheet (each class, and "
                   "the low-confidence one).")
@click.option("--low", type=Probability(), default=0.5, show_default=True,
              help="Confidence below which an image is listed as doubtful.")
@store_option
def command(run_id: int | None, all_runs: bool, csv_target: str | None,
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
    from scenetool.outputs.report import Summary
    from scenetool.outputs.table import emit, run_header, summary_tables

    if run_id is not None and all_runs:
        raise UsageError("--run and --all exclude each other")
    store = open_store(store_path, readonly=True)
    run = None if all_runs else _the_run(store, run_id)
    exporters = open_exports(csv_target, json_target)
    to_stdout = "-" in (csv_target, json_target)
    summary = Summary(low_threshold=low)
    with close_exports(exporters):
        for row in store.rows(run.id if run else None):
            summary.add(row)
            for exporter in exporters:
                exporter.write(row)
    console = stderr() if to_stdout else stdout()
    say(console, run_header(run, str(store.path), summary.total))
    for table in summary_tables(summary):
        emit(console, table)
    if html_target:
        _contact_sheet(store, run, html_target, html_limit, low)


def _the_run(store, run_id: int | None):
    """The run asked for (the latest by default), or a StoreError saying there is none."""
    run = store.run(run_id)
    if run is None:
        raise StoreError(f"no run {run_id} in {store.path}" if run_id is not None else
                         f"no runs in {store.path} yet: run scenetool classify first")
    return run


def _contact_sheet(store, run, target: str, limit: int, low: float) -> None:
    from scenetool.outputs.html import write_contact_sheet

    try:
        info = write_contact_sheet(store, run, target, limit=limit, low_threshold=low)
    except OSError as exc:
        raise OutputError.writing(target, exc) from None
    say(stderr(), info)
