"""`scenetool tag`: write each photo's label into its XMP sidecar, for photo managers to read."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from scenetool.cli import Command, options
from scenetool.outputs.table import ChunkedTable
from scenetool.paths import escape, shown

if TYPE_CHECKING:  # lxml loads only when a sidecar is written, not at start-up
    from scenetool.tagging import Tagged, Tagger, TagTally

# What each sidecar outcome (scenetool.outputs.xmp.Outcome) is called, done and in a dry run.
DONE = {"created": ("created", "would create"),
        "updated": ("updated", "would update"),
        "unchanged": ("unchanged", "unchanged"),
        "removed": ("keywords removed", "would remove keywords"),
        "deleted": ("deleted (held only scenetool's keywords)", "would delete"),
        "no sidecar": ("no sidecar", "no sidecar")}


@click.command("tag", cls=Command)
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--recursive/--no-recursive", default=True, show_default=True,
              help="Walk into subfolders.")
@options.sidecar_option
@click.option("--min-confidence", type=options.Probability(), default=0.0, metavar="P",
              show_default=True, help="Below this confidence write no keyword.")
@click.option("--dry-run", is_flag=True, help="Say what would be written; write no sidecar.")
@click.option("--remove", is_flag=True, help="Take scenetool's keywords out of the sidecars.")
@options.pipeline_options
@options.store_option
def command(paths: tuple[str, ...], recursive: bool, sidecar_name: str, min_confidence: float,
            dry_run: bool, remove: bool, batch_size: int, threads: int,
            model_path: str | None, store_path: str | None) -> None:
    """Write each image's label as a keyword into its XMP sidecar (PHOTO.EXT.xmp).

    The label goes into dc:subject and, as scenes|LABEL, into lr:hierarchicalSubject,
    which digiKam, darktable, Lightroom and PhotoPrism read. An existing sidecar keeps
    everything else in it; scenetool's earlier keywords are replaced. Results come from
    the store when it has them; other images are classified first. Photos themselves are
    never written to.

    \b
    Example:
        scenetool tag ./photos
        scenetool tag ./photos --sidecar-name stem --min-confidence 0.6
        scenetool tag ./photos --remove
    """
    from scenetool.tagging import Tagger

    options.check_paths(paths)
    options.refuse_sidecars_for_urls(paths)
    tagger = Tagger(sidecar_name, min_confidence, dry_run)
    out, err = options.stdout(), options.stderr()
    table = TagTable(out, dry_run)
    try:
        if remove:
            _remove(paths, recursive, tagger, table)
            summary = ""
        else:
            summary = _tag(paths, recursive, tagger, table, batch_size, threads, model_path,
                           store_path)
    except KeyboardInterrupt:
        table.flush()
        options.say(err, f"interrupted: {tagger.tally.total} photo(s) done; run the same command "
            "again to finish", "yellow")
        sys.exit(130)
    table.flush()
    tally = tagger.tally
    for path, reason in tally.failed:
        options.say(err, f"failed: {shown(path)}: {reason}", "red")
    options.say(err, tally_line(tally, dry_run, min_confidence) + summary)
    if tally.failed:
        sys.exit(1)


def _tag(paths, recursive, tagger: Tagger, table: TagTable, batch_size: int, threads: int,
         model_path: str | None, store_path: str | None) -> str:
    """Tag from the store's results, classifying (and recording) what it lacks."""
    from scenetool.api import classify

    store = options.open_store(store_path)
    results = classify(paths, model=options.open_model(model_path), store=store,
                       recursive=recursive, batch_size=batch_size, threads=threads)
    for row in results:
        table.add(tagger.tag(row))
    walked = results.tally
    return (f" Run {results.run_id} in {store.path}: {walked.classified} classified, "
            f"{walked.reused} from the store.")


def _remove(paths, recursive, tagger: Tagger, table: TagTable) -> None:
    from scenetool.inputs.walk import walk

    for item in walk(paths, recursive):
        table.add(tagger.remove(item.path) if item.error is None else
                  tagger.fail(item.path, None, item.error))


def tally_line(tally: TagTally, dry_run: bool, min_confidence: float) -> str:
    """The one-line summary of a tag run (or the --tag part of a classify run)."""
    order = list(DONE)
    parts = [f"{n} {DONE[outcome.value][dry_run]}" for outcome, n in sorted(
        tally.outcomes.items(), key=lambda kv: order.index(kv[0].value))]
    if tally.below:
        parts.append(f"{tally.below} without a keyword (below {min_confidence:g})")
    parts.append(f"{len(tally.failed)} failed")
    return (("Dry run, nothing written: " if dry_run else "")
            + f"{tally.total} photo(s), sidecars: " + ", ".join(parts) + ".")


class TagTable(ChunkedTable):
    """One row per photo, printed a chunk at a time: photo, keyword, confidence, sidecar."""

    def __init__(self, console: Console, dry_run: bool):
        super().__init__(console)
        self.dry_run = dry_run

    def fill(self, table: Table, rows: list[Tagged]) -> None:
        width = max(self.console.width - 40, 40)
        table.add_column("photo", width=width * 2 // 5, overflow="fold")
        table.add_column("keyword", width=11, overflow="fold")
        table.add_column("confidence", width=10, justify="right")
        table.add_column("sidecar", width=width - width * 2 // 5, overflow="fold")
        for t in rows:
            if t.outcome is None:
                keyword = Text("failed", style="red")
                state = Text(escape(t.reason or ""), style="red")
            else:
                keyword = Text(t.keyword or "-", style="" if t.keyword else "yellow")
                state = Text(f"{DONE[t.outcome.value][self.dry_run]}: {shown(t.sidecar or '')}")
            confidence = "" if t.confidence is None else f"{t.confidence:.1%}"
            table.add_row(Text(shown(t.path)), keyword, confidence, state)
