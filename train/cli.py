"""`python -m train`: summary, fit, compare, evaluate and export.

TensorFlow is imported inside the commands that need it, so `--help` and `summary` are quick.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
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


def _data_error(exc: data_mod.DataError) -> TrainError:
    """A data error as a one-line message; a missing folder says how to name the right one."""
    if isinstance(exc, data_mod.DataNotFound):
        return TrainError(f"{exc}: pass --data DIR (the Kaggle seg_train folder) or set "
                          f"{DATA_ENV}")
    return TrainError(str(exc))


def _run_dir(runs: str, run: str) -> Path:
    path = Path(run)
    if not (path / "config.json").exists():
        path = Path(runs) / run
    if not (path / "config.json").exists():
        raise TrainError(f"no run named {run} (looked for {path}/config.json)")
    return path


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


@cli.command()
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

    from train.fit import FitConfig, default_split_path
    from train.plots import counts_chart

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


@cli.command()
@click.option("--arch", default="scenenet", show_default=True,
              help="Model from the zoo: seed-dense, seed-cnn, scenenet, tiny.")
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True, envvar=DATA_ENV,
              show_envvar=True, type=click.Path(file_okay=False), help=DATA_RULE)
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
@click.option("--teacher", type=click.Path(dir_okay=False), default="",
              help="Distil from this .keras model: part of every target is its probabilities "
              "on the same augmented image.")
@click.option("--distill", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="The teacher's share of the targets (with --teacher).")
@click.option("--teacher-size", type=click.IntRange(0), default=0, show_default=True,
              help="The teacher sees each training image resized to this size; 0: the "
              "student's size.")
@click.option("--resume", is_flag=True, help="Continue the run from its last checkpoint.")
def fit(arch: str, data_dir: str, name: str | None, runs: str, split_path: str, image_size: str,
        epochs: int | None, batch_size: int, lr: float, weight_decay: float, warmup: float,
        label_smoothing: float, mixup: float, cutmix: float, patience: int, seed: int,
        jit: bool, max_train: int, ema: float, swa_from: int, cycle: int, init_from: str,
        teacher: str, distill: float, teacher_size: int, resume: bool) -> None:
    """Train a model from the zoo; every epoch is checkpointed, so --resume can continue.

    \b
    Example:
        python -m train fit --arch scenenet --data ../shared/data/intel/seg_train \\
            --image-size 96:12,128:4,150:2 --name scenenet
        python -m train fit --name scenenet --resume
    """
    from train.fit import FitConfig, FitError, parse_phases
    from train.fit import fit as run_fit
    from train.quiet import import_tensorflow

    import_tensorflow()

    try:
        phases = parse_phases(image_size, epochs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--image-size") from exc
    cfg = FitConfig(arch=arch, data=data_dir, name=name or arch, runs_dir=runs,
                    split=split_path, phases=phases, batch=batch_size, lr=lr,
                    weight_decay=weight_decay, warmup_epochs=warmup,
                    label_smoothing=label_smoothing, mixup=mixup, cutmix=cutmix,
                    patience=patience, seed=seed, jit=jit, max_train=max_train, ema=ema,
                    swa_from=swa_from, cycle=cycle, init_from=init_from, teacher=teacher,
                    distill=distill if teacher else 0.0, teacher_size=teacher_size)
    try:
        metrics = run_fit(cfg, resume=resume)
    except data_mod.DataError as exc:
        raise _data_error(exc) from exc
    except (FitError, KeyError) as exc:
        raise TrainError(str(exc).strip("'\"")) from exc
    except KeyboardInterrupt:
        _interrupted(Path(runs), cfg.name)
    click.echo(f"best validation accuracy {metrics['best_val_accuracy']:.4f} "
               f"at epoch {metrics['best_epoch']} ({Path(runs) / cfg.name}/metrics.json)")


@cli.command()
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
    from train.plots import compare_curves, read_history

    paths = [_run_dir(runs, r) for r in runs_]
    empty = [p.name for p in paths if not read_history(p).get("epoch")]
    if len(empty) == len(paths):
        raise TrainError(f"no finished epoch to draw in {', '.join(empty)}")
    for name in empty:
        click.echo(f"warning: run {name} has no finished epoch yet", err=True)
    target = compare_curves(paths, Path(out) if out else Path(runs) / "compare.png",
                            title="Training curves: " + ", ".join(p.name for p in paths))
    click.echo(f"curves: {target}", err=True)


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


def _size_option(f):
    return click.option("--image-size", type=click.IntRange(min=8), default=None,
                        help="Input size (fully convolutional archs). Default: the size of "
                             "the run's last phase.")(f)


def _checkpoint_option(f):
    return click.option("--checkpoint", type=click.Choice(["best", "last", "ema", "swa"]),
                        default="best", show_default=True,
                        help="Which checkpoint of the run (ema, swa: the weight averages of "
                             "a run fitted with --ema, --swa-from).")(f)


def _data_option(f):
    return click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False),
                        help="The run's data folder, when config.json's path does not "
                             "resolve from here.")(f)


@cli.command()
@click.argument("run")
@click.option("--runs", default="runs", show_default=True, help="Folder of runs.")
@_size_option
@_checkpoint_option
@_data_option
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
    from train.evaluate import evaluate as run_evaluate
    from train.fit import FitError
    from train.quiet import import_tensorflow

    import_tensorflow()

    path = _run_dir(runs, run)
    try:
        result, pngs = run_evaluate(path, image_size, checkpoint, data_dir)
    except data_mod.DataError as exc:
        raise _data_error(exc) from exc
    except FitError as exc:
        raise TrainError(str(exc)) from exc
    _print_report(result, f"{path.name}: {checkpoint}.keras at {result['image_size']}px")
    click.echo(f"validation accuracy {result['accuracy']:.4f} ({result['n']} images)")
    click.echo(f"wrote {path / 'eval.json'}, {pngs['confusion']}, {pngs['spotcheck']}", err=True)


def _negatives_option(f):
    return click.option(
        "--negatives", "negatives_dir", type=click.Path(exists=True, file_okay=False),
        default=None, help="Photos that are not scenes for the probe to learn from. Where "
        "the folder has a PROVENANCE.tsv, only its MIT and Apache-2.0 photos are used.")(f)


@cli.command()
@click.argument("run")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="The ONNX file to write. Default: <runs>/RUN/export/scenes.onnx (the "
                   "shipped model changes only with `python -m train ship`).")
@click.option("--runs", default="runs", show_default=True, help="Folder of runs.")
@_size_option
@_checkpoint_option
@_data_option
@click.option("--card", type=click.Path(dir_okay=False), default=None,
              help="Also write a model card here (figures go beside it).")
@click.option("--compare-runs", default="seed-dense,seed-cnn", show_default=True,
              help="Comma-separated runs whose validation accuracy the card lists.")
@click.option("--unknown", "unknown_method", default=None,
              type=click.Choice(["probe", "rel-mahalanobis", "energy", "none"]),
              help="The \"not a scene\" score added beside probs (threshold: keeps 95% of "
                   "the validation split); none leaves it out. Default: probe with "
                   "--negatives, else rel-mahalanobis.")
@_negatives_option
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
    from train.fit import FitError
    from train.ship import export_path
    from train.unknown import image_files

    path = _run_dir(runs, run)
    unknown_method = unknown_method or _default_score(negatives_dir)
    negatives = _negatives(unknown_method, negatives_dir)
    others = image_files(others_dir) if others_dir else []
    try:
        res = run_export(path, Path(out) if out else export_path(path), image_size, checkpoint,
                         data_dir, None if unknown_method == "none" else unknown_method, others,
                         negatives)
    except data_mod.DataError as exc:
        raise _data_error(exc) from exc
    except (ExportError, FitError) as exc:
        raise TrainError(str(exc)) from exc
    click.echo(f"wrote {res.path} ({res.file_size / 1e6:.2f} MB, {res.image_size}px, "
               f"validation accuracy {res.report['accuracy']:.4f} through onnxruntime, "
               f"parity {res.parity_max_diff:.1e})")
    if card:
        from train.card import write_card

        names = [n.strip() for n in compare_runs.split(",") if n.strip()]
        written = write_card(res, Path(card), Path(runs), names,
                             Path(registry) if registry else None)
        click.echo(f"model card: {written}", err=True)


@cli.command()
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
        lines = run_ship(_run_dir(runs, run))
    except (ShipError, OSError) as exc:
        raise TrainError(str(exc)) from exc
    for line in lines:
        click.echo(line)


def _default_score(negatives_dir: str | None) -> str:
    """The probe where there are photos for it to learn from, else the score that needs none."""
    return "probe" if negatives_dir else "rel-mahalanobis"


def _negatives(method: str, folder: str | None) -> list[str]:
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


def _split_files(data_dir: str, split_path: str):
    """(train paths, train labels, validation paths, validation labels) of a split file."""
    try:
        folder = data_mod.scan(data_dir)
        split = data_mod.read_split(folder, Path(split_path))
    except data_mod.DataError as exc:
        raise _data_error(exc) from exc
    paths = [str(folder.root / f) for f in folder.files]
    return ([paths[i] for i in split.train], [folder.labels[i] for i in split.train],
            [paths[i] for i in split.val], [folder.labels[i] for i in split.val])


@cli.command("unknown")
@click.argument("model_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True, envvar=DATA_ENV,
              show_envvar=True, type=click.Path(file_okay=False), help=DATA_RULE)
@click.option("--split", "split_path", required=True, type=click.Path(dir_okay=False),
              help="The model's validation split: the threshold keeps --keep of it.")
@click.option("--others", "others_dir", type=click.Path(file_okay=False), default=None,
              help="Photos that are not scenes (e.g. ood-dev): measured, never fitted on "
                   "(those the probe learnt from are left out).")
@click.option("--method", type=click.Choice(["probe", "rel-mahalanobis", "energy"]),
              default=None, help="The scene score. Default: probe with --negatives, else "
                                 "rel-mahalanobis.")
@_negatives_option
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

    from scenetool.fsutil import atomic_path, write_text
    from scenetool.model import ModelError, SceneModel
    from train.ood import SurgeryError
    from train.unknown import fit_unknown, image_files, write_figures

    if Path(out).resolve() == Path(model_file).resolve():
        raise click.BadParameter("write the scored model to another file", param_hint="--out")
    method = method or _default_score(negatives_dir)
    negatives = _negatives(method, negatives_dir)
    train_p, train_y, val_p, val_y = _split_files(data_dir, split_path)
    others = image_files(others_dir) if others_dir else []
    try:
        fitted = fit_unknown(onnx.load(model_file), train_p, train_y, val_p, others, method,
                             keep, fitted_on=Path(split_path).name,
                             checked_on=Path(others_dir).name if others_dir else "",
                             negatives=negatives)
    except (SurgeryError, ValueError) as exc:
        raise TrainError(str(exc)) from exc
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(out)) as tmp:
        onnx.save(fitted.proto, tmp)
        try:
            SceneModel(tmp, threads=1)
        except ModelError as exc:
            raise TrainError(f"the runtime cannot open the scored model: {exc}") from exc
    rule = fitted.rule
    click.echo(f"wrote {out}: {method} score, threshold {rule.threshold:.4g} keeps "
               f"{rule.details['scenes_kept']:.1%} of {len(fitted.val_scores)} validation "
               "photos")
    sep = fitted.separation
    if sep is not None:
        click.echo(f"{others_dir}: {sep.n_others} photos, AUROC {sep.auroc:.3f}, "
                   f"{sep.others_rejected:.1%} called unknown at the threshold")
    true = np.asarray(val_y)[fitted.extra["val_kept"]]
    if figures:
        write_figures(fitted, true, Path(figures), Path(model_file).name)
        click.echo(f"figures: {figures}", err=True)
    if card:
        from train.unknown import scene_sections, splice_sections

        lines = scene_sections(fitted.val_probs, true, fitted, Path(card).parent,
                               Path(model_file).name)
        write_text(Path(card), splice_sections(Path(card).read_text(encoding="utf-8"), lines))
        click.echo(f"model card: {card}", err=True)


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True,
              help="onnxruntime intra-op threads.")
@click.option("--rounds", type=click.IntRange(1, 100), default=7, show_default=True)
def speed(models: tuple[str, ...], threads: int, rounds: int) -> None:
    """Batch-32 throughput of ONNX models side by side; ratios against the first.

    The models take turns, one batch each per round, so a drifting machine load hits
    them alike; the median round counts.

    \b
    Example:
        python -m train speed old.onnx runs/scenenet/export/scenes.onnx
    """
    from train.speed import throughputs

    found = throughputs(models, threads=threads, rounds=rounds)
    base = found[0].images_per_second
    for s in found:
        click.echo(f"{s.path}: {s.images_per_second:.1f} images/s at {s.image_size[0]} px "
                   f"({s.spread[0]:.1f}-{s.spread[1]:.1f}), {s.images_per_second / base:.2f}x")


@cli.command()
@click.argument("models", nargs=-1, metavar="NAME=FILE.onnx...")
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True, envvar=DATA_ENV,
              show_envvar=True, type=click.Path(file_okay=False), help=DATA_RULE)
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
def candidates(models: tuple[str, ...], data_dir: str, split_path: str, registry: str,
               png: str | None, reference: str, seconds: tuple[str, ...]) -> None:
    """Measure candidate models side by side and keep them in one table and one plot.

    Each NAME=FILE.onnx is scored on the split through the runtime (accuracy, macro F1)
    and timed beside the others (batch 32); rows already in the registry stay.

    \b
    Example:
        python -m train candidates scenenet=scenetool/models/scenes.onnx \\
            long=runs/scenenet-long/export/scenes.onnx --split exported/val_split.txt
    """
    from train import candidates as cand

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
            rows = cand.merge(rows, cand.measure(files, data_dir, split_path, secs))
        except ValueError as exc:
            raise TrainError(str(exc)) from exc
        cand.save(path, rows)
    if not rows:
        raise TrainError(f"no candidates: {path} is empty and no NAME=FILE.onnx was given")
    for line in cand.table(rows, reference):
        click.echo(line)
    drawn = cand.plot(rows, Path(png) if png else path.with_suffix(".png"))
    click.echo(f"plot: {drawn}", err=True)


def main() -> None:
    # TensorFlow's C++ start-up chatter is noise here; its warnings and errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Our datasets are shuffled by the pipeline itself (seeded per epoch).
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
    cli(prog_name="python -m train")


if __name__ == "__main__":
    sys.exit(main())
