"""What the `python -m train` commands share: errors, the command class, where the training
images are, finding a run, and the options several commands take."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from train import data as data_mod

CONTEXT = {"help_option_names": ["-h", "--help"]}

DATA_ENV = "SCENETOOL_TRAIN_DATA"
DEFAULT_DATA = "data/intel/seg_train"
# The one rule for where the training images are, stated in `fit --help` and the README.
DATA_RULE = (f"Kaggle-layout training folder: --data, else ${DATA_ENV}, else {DEFAULT_DATA} "
             "(relative to the current folder).")


class TrainError(click.ClickException):
    exit_code = 2


class Command(click.Command):
    """Ctrl-C is exit 130, not Click's "Aborted!" and 1 (fit says more, and first)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


class Group(click.Group):
    command_class = Command


def data_error(exc: data_mod.DataError) -> TrainError:
    """A data error as a one-line message; a missing folder says how to name the right one."""
    if isinstance(exc, data_mod.DataNotFound):
        return TrainError(f"{exc}: pass --data DIR (the Kaggle seg_train folder) or set "
                          f"{DATA_ENV}")
    return TrainError(str(exc))


def run_dir(runs: str, run: str) -> Path:
    path = Path(run)
    if not (path / "config.json").exists():
        path = Path(runs) / run
    if not (path / "config.json").exists():
        raise TrainError(f"no run named {run} (looked for {path}/config.json)")
    return path


def size_option(f):
    return click.option("--image-size", type=click.IntRange(min=8), default=None,
                        help="Input size (fully convolutional archs). Default: the size of "
                             "the run's last phase.")(f)


def checkpoint_option(f):
    return click.option("--checkpoint", type=click.Choice(["best", "last", "ema", "swa"]),
                        default="best", show_default=True,
                        help="Which checkpoint of the run (ema, swa: the weight averages of "
                             "a run fitted with --ema, --swa-from).")(f)


def training_data_option(f):
    """--data for commands that read the training set itself (fit, unknown, candidates)."""
    return click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True,
                        envvar=DATA_ENV, show_envvar=True, type=click.Path(file_okay=False),
                        help=DATA_RULE)(f)


def data_option(f):
    """--data for commands that read a run, whose config.json names its data folder."""
    return click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False),
                        help="The run's data folder, when config.json's path does not "
                             "resolve from here.")(f)


def negatives_option(f):
    return click.option(
        "--negatives", "negatives_dir", type=click.Path(exists=True, file_okay=False),
        default=None, help="Photos that are not scenes for the probe to learn from. Where "
        "the folder has a PROVENANCE.tsv, only its MIT and Apache-2.0 photos are used.")(f)


def default_score(negatives_dir: str | None) -> str:
    """The probe where there are photos for it to learn from, else the score that needs none."""
    return "probe" if negatives_dir else "rel-mahalanobis"


def probe_negatives(method: str, folder: str | None) -> list[str]:
    """The probe's photos that are not scenes (the ones their licence lets us train on)."""
    from train.unknown import trainable_files

    if method != "probe":
        return []
    if not folder:
        raise click.UsageError("the probe score learns from photos that are not scenes: give "
                               "--negatives DIR, or choose another score")
    files = trainable_files(folder)
    if not files:
        raise click.UsageError(f"--negatives {folder}: no photo there may be trained on")
    click.echo(f"the probe learns from {len(files)} photos of {folder}", err=True)
    return files
