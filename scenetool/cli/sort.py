"""`scenetool sort`: file the images of a folder into one folder per label."""

from __future__ import annotations

import sys

import click

from scenetool.cli import Command, options
from scenetool.paths import is_url, shown


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
    from contextlib import nullcontext

    from scenetool.engines.common import Settings
    from scenetool.errors import UsageError
    from scenetool.job import ClassifyJob
    from scenetool.outputs.table import emit
    from scenetool.sort import Action, Sorter, sort_table, walk_roots

    if copy_ + move + link > 1:
        raise UsageError("--copy, --move and --link exclude each other")
    action = Action.MOVE if move else Action.LINK if link else Action.COPY
    roots = walk_roots(src, dest)
    model = options.open_model(model_path)
    store = options.open_store(store_path)
    err = options.stderr()
    settings = Settings(batch_size=batch_size, threads=threads, min_confidence=min_confidence,
                        unknown=not no_unknown)
    arguments = {"command": "sort", "src": src, "dest": dest, "action": action.value,
                 "unknown": not no_unknown,
                 "min_confidence": min_confidence, "dry_run": dry_run}
    job = ClassifyJob(model, store, roots, settings, arguments=arguments)
    sorter = Sorter(dest, action, dry_run, src=src)
    for leftover in sorter.clean_leftovers():
        options.say(err, f"removed {shown(leftover)}: a partial copy left by an interrupted "
                    "sort", "yellow")
    try:
        status = err.status("classifying", spinner="line") if err.is_terminal else nullcontext()
        with status, job.recording_end():
            rows = list(job)
        tally = sorter.place_all(rows)
    except KeyboardInterrupt:
        options.say(err, f"interrupted: {sorter.tally.total} image(s) placed; run the same "
                    "sort again to finish", "yellow")
        sys.exit(130)
    emit(options.stdout(), sort_table(tally, action, dry_run))
    for path, reason in tally.failed:
        options.say(err, f"failed: {shown(path)}: {reason}", "red")
    for path in tally.outside_src:
        options.say(err, f"{'would copy' if dry_run else 'copied'}, not moved: {shown(path)} "
                    "lies outside SRC (reached through a symbolic link), so it stays where it is")
    for problem in job.tally.walk.errors:
        options.say(err, f"could not read {problem}", "red")
    done = sum(tally.done.values())
    verb = f"would be {action.done}" if dry_run else action.done
    summary = (
        f"{tally.total} image(s): {done} {verb}, {sum(tally.already.values())} already there, "
        f"{len(tally.failed)} failed (left in place)"
        + "".join(f"; {note}" for note in options.raw_notes(job.tally.raw_without_extra))
        + (f", {tally.inside_dest} already inside DEST" if tally.inside_dest else "")
        + (f", {len(tally.outside_src)} outside SRC copied" if tally.outside_src else "")
        + f". Run {job.run_id} in {store.path}: {job.tally.classified} classified, "
        f"{job.tally.reused} from the store.")
    options.say(err, summary)
    if tally.failed or job.tally.walk.errors:
        sys.exit(1)
