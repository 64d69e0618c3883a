"""The command line: Click commands, rich output and exit codes.

Exit codes: 0 every candidate image classified; 1 some inputs could not be read (the rest
are classified and stored); 2 a usage error or an unusable model, store or output file;
130 interrupted (Ctrl-C). Library code raises `ScenetoolError`s; `Command.invoke` below is
the one place that turns them into one-line messages and exit codes. One module per
command; the options they share are in `cli.options`.
"""

from __future__ import annotations

import errno
import os
import sys
import warnings

import click

from scenetool import __version__
from scenetool.errors import ScenetoolError, UsageError
from scenetool.paths import escape

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
            raise click.UsageError(escape(str(exc)), ctx) from None
        except ScenetoolError as exc:
            raise Fatal(escape(str(exc))) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.EIO, errno.ENOSPC, errno.EBADF):
                raise
            # Writing a table or message to stdout failed: the pipe was closed, the
            # terminal went away, or stdout is a full disk.
            raise Fatal(f"cannot write to stdout: {exc.strerror or exc}") from None


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
    """The console script: Click with Pillow's bomb warning silenced (we refuse such files).

    Started with stdout closed, every command fails at once (exit 2): results would go
    nowhere. Whatever happens, stdout is flushed before exit; when that fails (a closed
    pipe), the error is the one line on stderr and Python's own complaint is silenced.
    """
    from PIL import Image

    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    if sys.stderr is None:  # started with stderr closed: messages go nowhere, not to stdout
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if sys.stdout is None:
        _fail("cannot write to stdout: it is closed")
    try:
        cli(prog_name="scenetool")
    except SystemExit as done:
        code = done.code
        if not _flush_stdout() and code in (0, 1, None):
            _fail("cannot write to stdout: broken pipe")
        raise


def _flush_stdout() -> bool:
    """Flush stdout; on failure point it at /dev/null so the interpreter's own flush at
    exit stays quiet."""
    try:
        sys.stdout.flush()
        return True
    except (OSError, ValueError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
        return False


def _fail(message: str) -> None:
    if sys.stderr is not None:
        print(f"Error: {message}", file=sys.stderr)
    sys.exit(2)
