"""`python -m train evaluate`: score a run's checkpoint on its validation split."""

from __future__ import annotations

import click

from train import data as data_mod
from train.cli.common import (
    Command,
    TrainError,
    checkpoint_option,
    data_error,
    data_option,
    run_dir,
    size_option,
)


@click.command(cls=Command)
@click.argument("run")
@click.option("--runs", default="runs", show_default=True, help="Folder of runs.")
@size_option
@checkpoint_option
@data_option
def evaluate(run: str, runs: str, image_size: int | None, checkpoint: str,
             data_dir: str | None) -> None:
    """Score a run's checkpoint on its validation split.

    Prints the accuracy and per-class precision, recall and F1, and writes eval.json,
    confusion.png and spotcheck.png (12 seeded-random validation images) into the run.

    \b
    Example:
        python -m train evaluate scenenet
        python -m train evaluate scenenet --image-size 128 --checkpoint last
    """
    from train.fitting.fit import FitError
    from train.quiet import import_tensorflow
    from train.reports.evaluate import evaluate as run_evaluate

    import_tensorflow()

    path = run_dir(runs, run)
    try:
        result, pngs = run_evaluate(path, image_size, checkpoint, data_dir)
    except data_mod.DataError as exc:
        raise data_error(exc) from exc
    except FitError as exc:
        raise TrainError(str(exc)) from exc
    _print_report(result, f"{path.name}: {checkpoint}.keras at {result['image_size']}px")
    click.echo(f"validation accuracy {result['accuracy']:.4f} ({result['n']} images)")
    click.echo(f"wrote {path / 'eval.json'}, {pngs['confusion']}, {pngs['spotcheck']}", err=True)


def _print_report(result: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("class", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "class" else "right")
    for name, m in result["per_class"].items():
        table.add_row(name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}",
                      str(m["support"]))
    table.add_row("macro F1", "", "", f"{result['macro_f1']:.3f}", str(result["n"]),
                  style="bold")
    Console().print(table)
