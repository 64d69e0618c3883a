"""`scenetool evaluate`: score the model on a folder with one subfolder per label."""

from __future__ import annotations

import importlib.util
import json
import sys

import click

from scenetool.cli import Command
from scenetool.cli.options import open_model, pipeline_options, say, stderr, stdout
from scenetool.errors import OutputError
from scenetool.paths import shown


@click.command("evaluate", cls=Command)
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--json", "json_target", metavar="FILE|-", help="Write the scores as JSON.")
@click.option("--png", "png_target", metavar="FILE",
              help="Draw the confusion matrix (needs the plot extra: matplotlib).")
@pipeline_options
def command(folder: str, json_target: str | None, png_target: str | None, batch_size: int,
            threads: int, model_path: str | None) -> None:
    """Score the model on FOLDER, which holds one subfolder of images per label.

    \b
    Example:
        scenetool evaluate ./seg_test --json scores.json --png confusion.png
    """
    from scenetool.engines.common import Settings
    from scenetool.evaluate import confusion_png, score
    from scenetool.outputs.table import emit, scores_tables

    if png_target and importlib.util.find_spec("matplotlib") is None:
        raise click.BadParameter("needs matplotlib: pip install 'scenetool[plot]'",
                                 param_hint="--png")
    model = open_model(model_path)
    pairs, failed = _classify_labelled(model, folder, Settings(batch_size=batch_size,
                                                               threads=threads))
    scores = score(model.labels, pairs)
    to_stdout = json_target == "-"
    console = stderr() if to_stdout else stdout()
    for table in scores_tables(scores):
        emit(console, table)
    for path, reason in failed:
        say(stderr(), f"failed: {shown(path)}: {reason}", "red")
    if json_target:
        _write_json(scores.as_dict(), json_target)
    if png_target:
        confusion_png(scores, png_target, title=f"{model.path.name} on {folder}")
    if failed:
        sys.exit(1)


def _classify_labelled(model, folder: str, settings):
    """(true, predicted) pairs for the images under FOLDER/<label>/, and (path, reason)
    for those that failed."""
    from scenetool.engines.local import classify
    from scenetool.evaluate import labelled_items

    truths: dict[str, str] = {}

    def items():
        for true, item in labelled_items(folder, model.labels):
            truths[item.path] = true
            yield item

    pairs, failed = [], []
    for result in classify(model, items(), settings):
        if result.error:
            failed.append((result.item.path, result.error))
        else:
            pairs.append((truths.pop(result.item.path), result.label))
    return pairs, failed


def _write_json(scores: dict, target: str) -> None:
    text = json.dumps(scores, indent=2)
    if target == "-":
        click.echo(text)
        return
    try:
        with open(target, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    except OSError as exc:
        raise OutputError.writing(target, exc) from None
