"""`python -m train fit`: train a model from the zoo (TensorFlow is imported when it runs)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from train import data as data_mod
from train.cli.common import Command, TrainError, data_error, training_data_option


@click.command(cls=Command)
@click.option("--arch", default="scenenet", show_default=True,
              help="Model from the zoo: seed-dense, seed-cnn, scenenet, scenenet-wide, tiny.")
@training_data_option
@click.option("--name", default=None, help="Run name (folder under --runs). Default: the arch.")
@click.option("--runs", default="runs", show_default=True, help="Folder of runs.")
@click.option("--split", "split_path", default="", help="Split file (made when missing).")
@click.option("--image-size", default="96", show_default=True,
              help="One size, or size:epochs phases for progressive resizing: 96:10,150:2.")
@click.option("--epochs", type=int, default=None, help="Epochs (with one image size). [12]")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True, help="Peak learning rate.")
@click.option("--weight-decay", type=float, default=0.05, show_default=True)
@click.option("--warmup", type=float, default=1.0, show_default=True, help="Warm-up epochs.")
@click.option("--label-smoothing", type=float, default=0.1, show_default=True)
@click.option("--mixup", type=float, default=0.0, show_default=True, help="Mixup alpha; 0 off.")
@click.option("--cutmix", type=float, default=0.0, show_default=True, help="Cutmix alpha; 0 off.")
@click.option("--patience", type=int, default=6, show_default=True,
              help="Early stopping: epochs without a better validation accuracy; 0 off.")
@click.option("--seed", type=int, default=data_mod.DEFAULT_SEED, show_default=True)
@click.option("--jit/--no-jit", default=True, show_default=True, help="XLA-compile the step.")
@click.option("--max-train", type=int, default=0, help="Use only N training images (smoke runs).")
@click.option("--ema", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              metavar="DECAY", help="Keep an exponential moving average of the weights "
              "(ema.keras; e.g. 0.999); 0 off.")
@click.option("--swa-from", type=click.IntRange(0), default=0, show_default=True,
              metavar="EPOCH", help="Also keep the mean of the weights at the end of every "
              "epoch from EPOCH on (swa.keras); 0 off.")
@click.option("--cycle", type=click.IntRange(0), default=0, show_default=True,
              help="Restart the cosine learning rate every N epochs (warm restarts, for "
              "--swa-from); 0: one cosine over the run.")
@click.option("--init-from", type=click.Path(dir_okay=False), default="",
              help="Start from the weights of this .keras checkpoint (a second stage), "
              "not from random ones.")
@click.option("--teacher", "teachers", multiple=True, metavar="PATH[@SIZE]",
              help="Distil from this .keras model: part of every target is its probabilities "
              "on the same augmented image, resized to SIZE px for it. Repeat it for an "
              "ensemble: the targets take the mean of the teachers' probabilities.")
@click.option("--distill", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="The teachers' share of the targets (with --teacher).")
@click.option("--teacher-size", type=click.IntRange(0), default=0, show_default=True,
              help="A teacher given without @SIZE sees each training image resized to this "
              "size; 0: the student's size.")
@click.option("--resume", is_flag=True, help="Continue the run from its last checkpoint.")
def fit(arch: str, data_dir: str, name: str | None, runs: str, split_path: str, image_size: str,
        epochs: int | None, batch_size: int, lr: float, weight_decay: float, warmup: float,
        label_smoothing: float, mixup: float, cutmix: float, patience: int, seed: int,
        jit: bool, max_train: int, ema: float, swa_from: int, cycle: int, init_from: str,
        teachers: tuple[str, ...], distill: float, teacher_size: int, resume: bool) -> None:
    """Train a model from the zoo; every epoch is checkpointed, so --resume can continue.

    \b
    Example:
        python -m train fit --arch scenenet --data ../shared/data/intel/seg_train \\
            --image-size 96:12,128:4,150:2 --name scenenet
        python -m train fit --name scenenet --resume
    """
    from train.fitting.fit import FitConfig, FitError, parse_phases, parse_teacher
    from train.fitting.fit import fit as run_fit
    from train.quiet import import_tensorflow

    import_tensorflow()

    try:
        phases = parse_phases(image_size, epochs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--image-size") from exc
    try:
        teacher_sizes = [parse_teacher(text, teacher_size) for text in teachers]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--teacher") from exc
    cfg = FitConfig(arch=arch, data=data_dir, name=name or arch, runs_dir=runs,
                    split=split_path, phases=phases, batch=batch_size, lr=lr,
                    weight_decay=weight_decay, warmup_epochs=warmup,
                    label_smoothing=label_smoothing, mixup=mixup, cutmix=cutmix,
                    patience=patience, seed=seed, jit=jit, max_train=max_train, ema=ema,
                    swa_from=swa_from, cycle=cycle, init_from=init_from,
                    teachers=teacher_sizes, distill=distill if teachers else 0.0)
    try:
        metrics = run_fit(cfg, resume=resume)
    except data_mod.DataError as exc:
        raise data_error(exc) from exc
    except (FitError, KeyError) as exc:
        raise TrainError(str(exc).strip("'\"")) from exc
    except KeyboardInterrupt:
        _interrupted(Path(runs), cfg.name)
    click.echo(f"best validation accuracy {metrics['best_val_accuracy']:.4f} "
               f"at epoch {metrics['best_epoch']} ({Path(runs) / cfg.name}/metrics.json)")


def _interrupted(runs: Path, name: str) -> None:
    """Ctrl-C during fit: say what is kept and how to continue; exit 130."""
    import json

    state = runs / name / "state.json"
    done = json.loads(state.read_text())["epochs_done"] if state.exists() else 0
    resume = f"python -m train fit --name {name} --runs {runs} --resume"
    if done:
        click.echo(f"interrupted: epoch {done} is checkpointed in {runs / name}/last.keras; "
                   f"continue with: {resume}", err=True)
    else:
        click.echo("interrupted before the first epoch finished: nothing to resume; "
                   "run the same command again", err=True)
    sys.exit(130)
