"""`python -m train unknown`: give an exported model a "not a scene" score and threshold."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from train import data as data_mod
from train.cli.common import (
    Command,
    TrainError,
    data_error,
    default_score,
    negatives_option,
    probe_negatives,
    training_data_option,
)

if TYPE_CHECKING:  # annotations only: numpy and train.unknown load when the command runs
    import numpy as np

    from train.unknown import Fitted


def _split_files(data_dir: str, split_path: str):
    """(train paths, train labels, validation paths, validation labels) of a split file."""
    try:
        folder = data_mod.scan(data_dir)
        split = data_mod.read_split(folder, Path(split_path))
    except data_mod.DataError as exc:
        raise data_error(exc) from exc
    paths = [str(folder.root / f) for f in folder.files]
    return ([paths[i] for i in split.train], [folder.labels[i] for i in split.train],
            [paths[i] for i in split.val], [folder.labels[i] for i in split.val])


@click.command("unknown", cls=Command)
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False))
@training_data_option
@click.option("--split", "split_path", required=True, type=click.Path(dir_okay=False),
              help="The model's validation split: the threshold keeps --keep of it.")
@click.option("--others", "others_dir", type=click.Path(file_okay=False), default=None,
              help="Photos that are not scenes (e.g. ood-dev): measured, never fitted on "
                   "(those the probe learnt from are left out).")
@click.option("--method", type=click.Choice(["probe", "rel-mahalanobis", "energy"]),
              default=None, help="The scene score. Default: probe with --negatives, else "
                                 "rel-mahalanobis.")
@negatives_option
@click.option("--keep", type=click.FloatRange(0.5, 1.0), default=0.95, show_default=True,
              help="Share of the validation photos the threshold keeps as scenes.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The ONNX file to write (never the input).")
@click.option("--figures", type=click.Path(file_okay=False), default=None,
              help="Also write unknown.json, roc.png and calibration.png here.")
@click.option("--card", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Also put the Calibration and Not a scene sections into this model card "
                   "(replacing those it has), their figures beside it.")
def unknown(model_file: str, data_dir: str, split_path: str, others_dir: str | None,
            method: str, negatives_dir: str | None, keep: float, out: str,
            figures: str | None, card: str | None) -> None:
    """Give an exported model a "not a scene" score and the threshold the runtime uses.

    The score is added to the graph beside `probs` (surgery on the file: the Keras
    checkpoint is not needed), fitted on the training images of the split (and, for the
    probe, on --negatives), its threshold set on the validation images, and measured on
    --others.

    \b
    Example:
        python -m train unknown scenetool/models/scenes.onnx --split exported/val_split.txt \\
            --negatives ../shared/data/ood-dev --others ../shared/data/ood-dev \\
            --out runs/scenes-unknown.onnx --figures runs/ood
    """
    import numpy as np
    import onnx

    from train.ood import SurgeryError
    from train.unknown import fit_unknown, image_files, write_figures

    if Path(out).resolve() == Path(model_file).resolve():
        raise click.BadParameter("write the scored model to another file", param_hint="--out")
    method = method or default_score(negatives_dir)
    negatives = probe_negatives(method, negatives_dir)
    train_p, train_y, val_p, val_y = _split_files(data_dir, split_path)
    others = image_files(others_dir) if others_dir else []
    try:
        fitted = fit_unknown(onnx.load(model_file), train_p, train_y, val_p, others, method,
                             keep, fitted_on=Path(split_path).name,
                             checked_on=Path(others_dir).name if others_dir else "",
                             negatives=negatives)
    except (SurgeryError, ValueError) as exc:
        raise TrainError(str(exc)) from exc
    _save(fitted, Path(out))
    _say_what_was_written(fitted, method, out, others_dir)
    true = np.asarray(val_y)[fitted.extra["val_kept"]]
    if figures:
        write_figures(fitted, true, Path(figures), Path(model_file).name)
        click.echo(f"figures: {figures}", err=True)
    if card:
        _update_card(Path(card), fitted, true, Path(model_file).name)
        click.echo(f"model card: {card}", err=True)


def _save(fitted: Fitted, out: Path) -> None:
    """Write the scored model to `out`, in place only once the runtime has opened it."""
    import onnx

    from scenetool.fsutil import atomic_path
    from scenetool.model import ModelError, SceneModel

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        onnx.save(fitted.proto, tmp)
        try:
            SceneModel(tmp, threads=1)
        except ModelError as exc:
            raise TrainError(f"the runtime cannot open the scored model: {exc}") from exc


def _say_what_was_written(fitted: Fitted, method: str, out: str, others_dir: str | None) -> None:
    """The threshold and what it keeps, and how it did on --others when measured."""
    rule = fitted.rule
    click.echo(f"wrote {out}: {method} score, threshold {rule.threshold:.4g} keeps "
               f"{rule.details['scenes_kept']:.1%} of {len(fitted.val_scores)} validation "
               "photos")
    sep = fitted.separation
    if sep is not None:
        click.echo(f"{others_dir}: {sep.n_others} photos, AUROC {sep.auroc:.3f}, "
                   f"{sep.others_rejected:.1%} called unknown at the threshold")


def _update_card(card: Path, fitted: Fitted, true: np.ndarray, model_name: str) -> None:
    """Replace the card's Calibration and Not a scene sections, their figures beside it."""
    from scenetool.fsutil import write_text
    from train.unknown import scene_sections, splice_sections

    lines = scene_sections(fitted.val_probs, true, fitted, card.parent, model_name)
    write_text(card, splice_sections(card.read_text(encoding="utf-8"), lines))
