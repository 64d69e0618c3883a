"""`python -m train export` (a run to ONNX, checked) and `python -m train ship` (the export
replaces the shipped model)."""

from __future__ import annotations

from pathlib import Path

import click

from train import data as data_mod
from train.cli.common import (
    Command,
    TrainError,
    checkpoint_option,
    data_error,
    data_option,
    default_score,
    negatives_option,
    probe_negatives,
    run_dir,
    size_option,
)


@click.command(cls=Command)
@click.argument("run")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="The ONNX file to write. Default: <runs>/RUN/export/scenes.onnx (the "
                   "shipped model changes only with `python -m train ship`).")
@click.option("--runs", default="runs", show_default=True, help="Folder of runs.")
@size_option
@checkpoint_option
@data_option
@click.option("--card", type=click.Path(dir_okay=False), default=None,
              help="Also write a model card here (figures go beside it).")
@click.option("--compare-runs", default="seed-dense,seed-cnn", show_default=True,
              help="Comma-separated runs whose validation accuracy the card lists.")
@click.option("--unknown", "unknown_method", default=None,
              type=click.Choice(["probe", "rel-mahalanobis", "energy", "none"]),
              help="The \"not a scene\" score added beside probs (threshold: keeps 95% of "
                   "the validation split); none leaves it out. Default: probe with "
                   "--negatives, else rel-mahalanobis.")
@negatives_option
@click.option("--others", "others_dir", type=click.Path(file_okay=False), default=None,
              help="Photos that are not scenes, to measure the score on for the card "
                   "(those the probe learnt from are left out).")
@click.option("--candidates", "registry", type=click.Path(dir_okay=False), default=None,
              help="A candidates registry (python -m train candidates) for the card's table.")
def export(run: str, out: str | None, runs: str, image_size: int | None, checkpoint: str,
           data_dir: str | None, card: str | None, compare_runs: str, unknown_method: str,
           negatives_dir: str | None, others_dir: str | None, registry: str | None) -> None:
    """Export a run's checkpoint to ONNX, checked against Keras, with its metadata.

    The file only lands at --out after onnx.checker, a parity check against Keras on 64
    validation images and a load by the scenetool runtime have passed. It goes into the
    run's folder unless --out says otherwise; `ship` then replaces the shipped model.

    \b
    Example:
        python -m train export scenenet --negatives ../shared/data/ood-dev \\
            --others ../shared/data/ood-dev --card runs/scenenet/export/MODEL.md
        python -m train ship scenenet
    """
    from train.export import ExportError
    from train.export import export as run_export
    from train.quiet import import_tensorflow

    import_tensorflow()
    from train.fitting.fit import FitError
    from train.ship import export_path
    from train.unknown import image_files

    path = run_dir(runs, run)
    unknown_method = unknown_method or default_score(negatives_dir)
    negatives = probe_negatives(unknown_method, negatives_dir)
    others = image_files(others_dir) if others_dir else []
    try:
        res = run_export(path, Path(out) if out else export_path(path), image_size, checkpoint,
                         data_dir, None if unknown_method == "none" else unknown_method, others,
                         negatives)
    except data_mod.DataError as exc:
        raise data_error(exc) from exc
    except (ExportError, FitError) as exc:
        raise TrainError(str(exc)) from exc
    click.echo(f"wrote {res.path} ({res.file_size / 1e6:.2f} MB, {res.image_size}px, "
               f"validation accuracy {res.report['accuracy']:.4f} through onnxruntime, "
               f"parity {res.parity_max_diff:.1e})")
    if card:
        from train.reports.card import write_card

        names = [n.strip() for n in compare_runs.split(",") if n.strip()]
        written = write_card(res, Path(card), Path(runs), names,
                             Path(registry) if registry else None)
        click.echo(f"model card: {written}", err=True)


@click.command(cls=Command)
@click.argument("run")
@click.option("--runs", default="runs", show_default=True, help="Folder of runs.")
def ship(run: str, runs: str) -> None:
    """Replace the shipped model with RUN's export, and its card, figures and split.

    Copies <runs>/RUN/export/scenes.onnx over scenetool/models/scenes.onnx, MODEL.md and
    its figures into exported/, and the run's split to exported/val_split.txt, then says
    what it replaced. Run it from the repository root.

    \b
    Example:
        python -m train export scenenet --card runs/scenenet/export/MODEL.md
        python -m train ship scenenet
    """
    from train.ship import ShipError
    from train.ship import ship as run_ship

    try:
        lines = run_ship(run_dir(runs, run))
    except (ShipError, OSError) as exc:
        raise TrainError(str(exc)) from exc
    for line in lines:
        click.echo(line)
