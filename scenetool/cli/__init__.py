"""The command line: Click commands, rich output and exit codes.

Exit codes: 0 every candidate image classified; 1 some inputs could not be read (the rest
are classified and stored); 2 a usage error or an unusable model, store or output file;
130 interrupted (Ctrl-C). Library code raises `ScenetoolError`s; `Command.invoke` below is
the one place that turns them into one-line messages and exit codes. One module per
command; the options they share are in `cli.options`.
"""

from __future__ import annotations

import sys
import warnings

import click

from scenetool import __version__
from scenetool.errors import ScenetoolError, UsageError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


class Fatal(click.ClickException):
    """An error that stops the command: unusable model, store or output file. Exit 2."""

    exit_code = 2


class Command(click.Command):
    """A command whose library errors become exit 2 with a one-line reason (what was
    committed before the error stays in the store), and whose Ctrl-C is exit 130 (commands
    that have more to say about an interruption catch it first)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            raise click.UsageError(str(exc), ctx) from None
        except ScenetoolError as exc:
            raise Fatal(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="scenetool")
def cli() -> None:
    """Sort photos of scenes: buildings, forest, glacier, mountain, sea or street.

    \b
    Example:
        scenetool classify ./photos
        scenetool report --csv results.csv
    """


def _register() -> None:
    """Add the commands (their modules import `Command` from here, defined above)."""
    from scenetool.cli import classify, evaluate, info, report, sort, tag

    for module in (classify, report, info, evaluate, sort, tag):
        cli.add_command(module.command)


_register()


def main() -> None:
    """The console script: Click with Pillow's bomb warning silenced (we refuse such files)."""
    from PIL import Image

    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    cli(prog_name="scenetool")
