"""`python -m train summary`: images per split and class, a table and a bar chart."""

from __future__ import annotations

from pathlib import Path

import click

from train import data as data_mod
from train.cli.common import Command, TrainError


@click.command(cls=Command)
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--split", "split_path", type=click.Path(dir_okay=False),
              help="Split file (made when missing). Default: runs/split-<folder>.txt.")
@click.option("--runs", default="runs", show_default=True, help="Folder of runs.")
@click.option("--png", type=click.Path(dir_okay=False), default=None,
              help="Where to draw the bar chart. Default: runs/summary-<folder>.png.")
def summary(data_dir: str, split_path: str | None, runs: str, png: str | None) -> None:
    """Count the images per split and class: a table and a horizontal bar chart.

    \b
    Example:
        python -m train summary ../shared/data/intel/seg_train
    """
    from rich.console import Console
    from rich.table import Table

    from train.fitting.fit import FitConfig, default_split_path
    from train.reports.plots import counts_chart

    try:
        folder = data_mod.scan(data_dir)
        cfg = FitConfig(data=data_dir, runs_dir=runs)
        path = Path(split_path) if split_path else default_split_path(cfg)
        split = data_mod.load_or_make_split(folder, path)
    except data_mod.DataError as exc:
        raise TrainError(str(exc)) from exc
    counts = {"train": folder.counts(split.train), "val": folder.counts(split.val)}
    table = Table(title=f"{folder.root} ({len(folder.files)} images; split {path})")
    table.add_column("class")
    for name in counts:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    for cls in folder.classes:
        table.add_row(cls, *(str(counts[s][cls]) for s in counts),
                      str(sum(counts[s][cls] for s in counts)))
    table.add_row("all", *(str(sum(counts[s].values())) for s in counts), str(len(folder.files)),
                  style="bold")
    Console().print(table)
    out = Path(png) if png else Path(runs) / f"summary-{folder.root.resolve().name}.png"
    counts_chart(counts, out, title=f"Images per class and split: {folder.root.resolve().name}")
    click.echo(f"bar chart: {out}", err=True)
