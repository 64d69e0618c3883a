"""`scenetool sort`: file the images of a folder into one folder per label."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from scenetool.cli import Command, options
from scenetool.paths import is_url, shown

if TYPE_CHECKING:
    from rich.console import Console

    from scenetool.job import ClassifyJob
    from scenetool.sort import Action, Sorter, SortTally


class LocalFolder(click.Path):
    """A folder on this machine: an s3:// URL is refused with the reason, not as missing."""

    def convert(self, value, param, ctx):
        if is_url(value):
            self.fail(f"{value}: sort files images into folders on this machine and does not "
                      "move objects in object storage; classify the bucket, then use report "
                      "--csv to act on its labels", param, ctx)
        return super().convert(value, param, ctx)


@click.command("sort", cls=Command)
@click.argument("src", type=LocalFolder(exists=True, file_okay=False))
@click.argument("dest", type=click.Path())
@click.option("--copy", "copy_", is_flag=True, help="Copy the images (the default).")
@click.option("--move", is_flag=True, help="Move the images (safe across filesystems).")
@click.option("--link", is_flag=True, help="Make symbolic links to the images.")
@click.option("--min-confidence", type=options.Probability(), default=0.0, metavar="P",
              show_default=True, help="Below this confidence an image goes to DEST/unknown/.")
@click.option("--dry-run", is_flag=True, help="Say what would be done; write no file.")
@options.unknown_option
@options.pipeline_options
@options.store_option
def command(src: str, dest: str, copy_: bool, move: bool, link: bool, min_confidence: float,
            dry_run: bool, no_unknown: bool, batch_size: int, threads: int,
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
    action = _action(copy_, move, link)
    job = _job(src, dest, action, min_confidence, dry_run, no_unknown, batch_size, threads,
               model_path, store_path)
    err = options.stderr()
    sorter = _sorter(src, dest, action, dry_run, err)
    tally = _classify_then_place(job, sorter, err)
    _report(tally, job, action, dry_run, err)
    if tally.failed or job.tally.walk.errors:
        sys.exit(1)


def _action(copy_: bool, move: bool, link: bool) -> Action:
    """What --copy, --move or --link asks for (copy by default); two of them are an error."""
    from scenetool.errors import UsageError
    from scenetool.sort import Action

    if copy_ + move + link > 1:
        raise UsageError("--copy, --move and --link exclude each other")
    return Action.MOVE if move else Action.LINK if link else Action.COPY


def _job(src: str, dest: str, action: Action, min_confidence: float, dry_run: bool,
         no_unknown: bool, batch_size: int, threads: int, model_path: str | None,
         store_path: str | None) -> ClassifyJob:
    """The job classifying SRC (less DEST when it lies inside), the sort's arguments
    recorded with its run."""
    from scenetool.engines.common import Settings
    from scenetool.job import ClassifyJob
    from scenetool.sort import walk_roots

    roots = walk_roots(src, dest)
    model = options.open_model(model_path)
    store = options.open_store(store_path)
    settings = Settings(batch_size=batch_size, threads=threads, min_confidence=min_confidence,
                        unknown=not no_unknown)
    arguments = {"command": "sort", "src": src, "dest": dest, "action": action.value,
                 "unknown": not no_unknown,
                 "min_confidence": min_confidence, "dry_run": dry_run}
    return ClassifyJob(model, store, roots, settings, arguments=arguments)


def _sorter(src: str, dest: str, action: Action, dry_run: bool, err: Console) -> Sorter:
    """The sorter, once the partial copies an interrupted sort left in DEST are removed."""
    from scenetool.sort import Sorter

    sorter = Sorter(dest, action, dry_run, src=src)
    for leftover in sorter.clean_leftovers():
        options.say(err, f"removed {shown(leftover)}: a partial copy left by an interrupted "
                    "sort", "yellow")
    return sorter


def _classify_then_place(job: ClassifyJob, sorter: Sorter, err: Console) -> SortTally:
    """Classify everything (a spinner on a terminal), then place the images; Ctrl-C says
    how many were placed and exits 130."""
    from contextlib import nullcontext

    try:
        status = err.status("classifying", spinner="line") if err.is_terminal else nullcontext()
        with status, job.recording_end():
            rows = list(job)
        return sorter.place_all(rows)
    except KeyboardInterrupt:
        options.say(err, f"interrupted: {sorter.tally.total} image(s) placed; run the same "
                    "sort again to finish", "yellow")
        sys.exit(130)


def _report(tally: SortTally, job: ClassifyJob, action: Action, dry_run: bool,
            err: Console) -> None:
    """The table on stdout; on stderr, the files left in place or not moved, and the summary."""
    from scenetool.outputs.table import emit
    from scenetool.sort import sort_table

    emit(options.stdout(), sort_table(tally, action, dry_run))
    for path, reason in tally.failed:
        options.say(err, f"failed: {shown(path)}: {reason}", "red")
    for path in tally.outside_src:
        options.say(err, f"{'would copy' if dry_run else 'copied'}, not moved: {shown(path)} "
                    "lies outside SRC (reached through a symbolic link), so it stays where it is")
    for problem in job.tally.walk.errors:
        options.say(err, f"could not read {problem}", "red")
    options.say(err, _summary(tally, job, action, dry_run))


def _summary(tally: SortTally, job: ClassifyJob, action: Action, dry_run: bool) -> str:
    """The last line: what was placed, and what the run classified or took from the store."""
    done = sum(tally.done.values())
    verb = f"would be {action.done}" if dry_run else action.done
    return (
        f"{tally.total} image(s): {done} {verb}, {sum(tally.already.values())} already there, "
        f"{len(tally.failed)} failed (left in place)"
        + "".join(f"; {note}" for note in options.raw_notes(job.tally.raw_without_extra))
        + (f", {tally.inside_dest} already inside DEST" if tally.inside_dest else "")
        + (f", {len(tally.outside_src)} outside SRC copied" if tally.outside_src else "")
        + f". Run {job.run_id} in {job.store.path}: {job.tally.classified} classified, "
        f"{job.tally.reused} from the store.")
