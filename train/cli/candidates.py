"""`python -m train candidates`: candidate models measured into one table and one plot."""

from __future__ import annotations

from pathlib import Path

import click

from train.cli.common import Command, TrainError, training_data_option


@click.command(cls=Command)
@click.argument("models", nargs=-1, metavar="NAME=FILE.onnx...")
@training_data_option
@click.option("--split", "split_path", required=True, type=click.Path(dir_okay=False),
              help="The validation split every candidate is scored on.")
@click.option("--registry", type=click.Path(dir_okay=False),
              default="exported/candidates.json", show_default=True,
              help="The table of candidates, updated in place.")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="The plot. Default: beside the registry, candidates.png.")
@click.option("--reference", default="scenenet", show_default=True,
              help="The row speed ratios are taken against (the shipped model).")
@click.option("--train-seconds", "seconds", multiple=True, metavar="NAME=SECONDS",
              help="Training time of a candidate whose metadata lacks it.")
@click.option("--note", "notes", multiple=True, metavar="NAME=TEXT",
              help="What a candidate is, for the table. A candidate measured again keeps "
                   "its note unless given a new one.")
def candidates(models: tuple[str, ...], data_dir: str, split_path: str, registry: str,
               png: str | None, reference: str, seconds: tuple[str, ...],
               notes: tuple[str, ...]) -> None:
    """Measure candidate models side by side and keep them in one table and one plot.

    Each NAME=FILE.onnx is scored on the split through the runtime (accuracy, macro F1)
    and timed beside the others (batch 32); rows already in the registry stay.

    \b
    Example:
        python -m train candidates scenenet=scenetool/models/scenes.onnx \\
            long=runs/scenenet-long/export/scenes.onnx --split exported/val_split.txt
    """
    from train.reports import candidates as cand

    def pairs(values, what: str) -> dict[str, str]:
        out = {}
        for value in values:
            name, sep, rest = value.partition("=")
            if not sep or not name or not rest:
                raise click.BadParameter(f"{value!r} is not NAME=VALUE", param_hint=what)
            out[name] = rest
        return out

    files = {k: Path(v) for k, v in pairs(models, "MODELS").items()}
    secs = {k: float(v) for k, v in pairs(seconds, "--train-seconds").items()}
    path = Path(registry)
    rows = cand.load(path)
    if files:
        try:
            measured = cand.measure(files, data_dir, split_path, secs,
                                    pairs(notes, "--note"))
            rows = cand.merge(rows, measured)
        except ValueError as exc:
            raise TrainError(str(exc)) from exc
        cand.save(path, rows)
    if not rows:
        raise TrainError(f"no candidates: {path} is empty and no NAME=FILE.onnx was given")
    for line in cand.table(rows, reference):
        click.echo(line)
    drawn = cand.plot(rows, Path(png) if png else path.with_suffix(".png"))
    click.echo(f"plot: {drawn}", err=True)
