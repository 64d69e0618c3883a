"""`scenetool evaluate`: score the model on a folder with one subfolder per label, or on
the files of such a folder that a list (a validation split) names."""

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
@click.option("--split", "split_file", metavar="LIST", type=click.Path(dir_okay=False),
              help="Score only the files LIST names, one FOLDER-relative path a line "
                   "(label/name.jpg; # comments), e.g. a validation split.")
@click.option("--json", "json_target", metavar="FILE|-", help="Write the scores as JSON.")
@click.option("--png", "png_target", metavar="FILE",
              help="Draw the confusion matrix (needs the plot extra: matplotlib).")
@pipeline_options
def command(folder: str, split_file: str | None, json_target: str | None,
            png_target: str | None, batch_size: int, threads: int,
            model_path: str | None) -> None:
    """Score the model on FOLDER, which holds one subfolder of images per label.

    Accuracy is forced choice: every image counts with its most likely label, so figures
    compare across models. A model with a "not a scene" threshold also reports the share
    of these images it would call unknown.

    \b
    Example:
        scenetool evaluate ./seg_test --json scores.json --png confusion.png
        scenetool evaluate ./seg_train --split exported/val_split.txt
    """
    from scenetool.evaluate import confusion_png, evaluate, labelled_items, listed_items
    from scenetool.inputs.walk import WalkStats
    from scenetool.outputs.table import emit, scores_tables

    if png_target and importlib.util.find_spec("matplotlib") is None:
        raise click.BadParameter("needs matplotlib: pip install 'scenetool[plot]'",
                                 param_hint="--png")
    model = open_model(model_path)
    walked = WalkStats()
    labelled = (listed_items(folder, split_file, model.labels) if split_file
                else labelled_items(folder, model.labels, walked))
    result = evaluate(model, labelled, batch_size, threads)
    to_stdout = json_target == "-"
    console = stderr() if to_stdout else stdout()
    for table in scores_tables(result.scores):
        emit(console, table)
    if result.threshold is not None:
        say(console, f"called unknown (not a scene) at the model's threshold: "
                     f"{result.unknown_share:.1%} ({result.called_unknown} of "
                     f"{result.scores.n}); accuracy above counts every image's top label")
    for path, reason in result.failed:
        say(stderr(), f"failed: {shown(path)}: {reason}", "red")
    for problem in walked.errors:
        say(stderr(), f"could not read {problem}", "red")
    if json_target:
        _write_json(result.as_dict(), json_target)
    if png_target:
        confusion_png(result.scores, png_target, title=f"{model.path.name} on {folder}")
    if result.failed or walked.errors:
        sys.exit(1)


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
