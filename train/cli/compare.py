"""`python -m train compare`: the training curves of several runs on one PNG."""

from __future__ import annotations

from pathlib import Path

import click

from train.cli.common import Command, TrainError, run_dir


@click.command(cls=Command)
@click.argument("runs_", metavar="RUN...", nargs=-1, required=True)
@click.option("--runs", default="runs", show_default=True, help="Folder of runs.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="PNG to write. Default: <runs>/compare.png.")
def compare(runs_: tuple[str, ...], runs: str, out: str | None) -> None:
    """Draw accuracy and loss per epoch of several runs on one PNG.

    Training is dashed, validation solid, one colour per run.

    \b
    Example:
        python -m train compare seed-dense seed-cnn scenenet --out runs/compare.png
    """
    from train.reports.plots import compare_curves, read_history

    paths = [run_dir(runs, r) for r in runs_]
    empty = [p.name for p in paths if not read_history(p).get("epoch")]
    if len(empty) == len(paths):
        raise TrainError(f"no finished epoch to draw in {', '.join(empty)}")
    for name in empty:
        click.echo(f"warning: run {name} has no finished epoch yet", err=True)
    target = compare_curves(paths, Path(out) if out else Path(runs) / "compare.png",
                            title="Training curves: " + ", ".join(p.name for p in paths))
    click.echo(f"curves: {target}", err=True)
