"""`python -m train speed`: the throughput of ONNX models side by side."""

from __future__ import annotations

import click

from train.cli.common import Command


@click.command(cls=Command)
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
    from train.reports.speed import throughputs

    found = throughputs(models, threads=threads, rounds=rounds)
    base = found[0].images_per_second
    for s in found:
        click.echo(f"{s.path}: {s.images_per_second:.1f} images/s at {s.image_size[0]} px "
                   f"({s.spread[0]:.1f}-{s.spread[1]:.1f}) on {s.cores_used:.1f} cores, "
                   f"{s.images_per_second / base:.2f}x")
