"""`scenetool info`: describe the model."""

from __future__ import annotations

import json

import click

from scenetool.cli import Command
from scenetool.cli.options import model_option, open_model, stdout


@click.command("info", cls=Command)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@model_option
def command(as_json: bool, model_path: str | None) -> None:
    """Describe the model: path, checksum, size, opset, input and labels.

    \b
    Example:
        scenetool info
        scenetool info --json --model other.onnx
    """
    details = open_model(model_path).info().as_dict()
    if as_json:
        click.echo(json.dumps(details, indent=2))
        return
    from rich.table import Table

    from scenetool.outputs.table import emit, plain

    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in details.items():  # metadata is the model's text: shown literally
        table.add_row(plain(key), plain(value if isinstance(value, str) else
                                        json.dumps(value, ensure_ascii=False)))
    emit(stdout(), table)
