"""`python -m train`: the training side's commands (summary, fit, compare, evaluate, export, ship,
unknown, speed, candidates).

TensorFlow is imported inside the commands that need it, so `--help` and `summary` are quick:
no module of this package imports it (or Keras) at import time. One module per command (export
and ship share one); what they share is in `common.py`.
"""

from __future__ import annotations

import logging
import os
import warnings

import click

from train.cli import candidates, compare, evaluate, export, fit, speed, summary, unknown
from train.cli.common import CONTEXT, Group


@click.group(cls=Group, context_settings=CONTEXT)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens, for example cache hits.")
def cli(verbose: bool) -> None:
    """Train, compare, evaluate and export the scenetool CNN.

    \b
    Example:
        python -m train summary data/intel/seg_train
        python -m train fit --arch scenenet --name scenenet
        python -m train export scenenet
        python -m train ship scenenet
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")


def _register() -> None:
    """Add the commands, one module each (export and ship share one)."""
    for command in (summary.summary, fit.fit, compare.compare, evaluate.evaluate,
                    export.export, export.ship, unknown.unknown, speed.speed,
                    candidates.candidates):
        cli.add_command(command)


_register()


def main() -> None:
    # TensorFlow's C++ start-up chatter is noise here; its warnings and errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Our datasets are shuffled by the pipeline itself (seeded per epoch).
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
    cli(prog_name="python -m train")
