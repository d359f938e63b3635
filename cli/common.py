"""What every command shares: one-line user errors, the version option, output, progress bars.

Exit codes: 0 success, 1 data or model errors, 2 usage errors.  Only user
errors become a one-line message: bad data, a bad model file, an OS error,
an invalid option or spec, a ``ValueError`` of the library about its input,
or something unavailable (CuPy, Dask, matplotlib, a cluster).  Anything else
(a ``TypeError``, an ``AssertionError`` ...) is a bug and shows its traceback.
"""

from __future__ import annotations

import json
import sys
import time

import click

from intervalnn import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Failure(click.ClickException):
    """A one-line error about data or a model file (exit code 1)."""

    def show(self, file=None):
        click.echo(f"Error: {self.format_message()}", err=True)


def usage_error(exc, ctx=None) -> click.UsageError:
    """A :class:`~intervalnn.experiment.SpecError` as click's usage error (exit code 2),
    options spelled as flags."""
    from intervalnn.experiment.schema import flag

    if exc.sentence:
        return click.UsageError(exc.render(flag), ctx)
    return click.BadParameter(exc.reason, ctx, param_hint=f"'{flag(exc.field)}'")


class Command(click.Command):
    """A command whose user errors are one line (see the module doc); bugs keep their traceback."""

    #: What an interrupted run (Ctrl-C) kept, said in its one-line message.
    interrupted = "nothing was written"

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # one line and 130 (128 + SIGINT), as `sweep` does
            echo_err(f"\n{ctx.info_name}: interrupted; {self.interrupted}")
            ctx.exit(130)
        except (OSError, ValueError, RuntimeError) as exc:
            # imported here: `intervalnn --version` need not load the library
            from intervalnn.experiment.errors import SpecError, UnavailableError
            from intervalnn.experiment.outputs import OutputError

            if isinstance(exc, SpecError):
                raise usage_error(exc, ctx) from None
            if isinstance(exc, OutputError):  # an output that is an input, a directory ...
                raise click.UsageError(str(exc), ctx) from None
            if isinstance(exc, RuntimeError) and not isinstance(exc, UnavailableError):
                raise  # a bug
            # ValueError covers DataError, ModelFileError, GridError and the library's
            # checks of its input (labels, shapes, a loss that does not fit the data)
            raise Failure(str(exc)) from None


class Group(click.Group):
    """A group of :class:`Command` s."""

    command_class = Command


def version(fn):
    """The ``-V/--version`` option."""
    return click.version_option(__version__, "-V", "--version", prog_name="intervalnn")(fn)


def command(name: str, interrupted: str | None = None, **kw):
    """A :class:`Command` called ``name`` with the version option (the first one listed);
    ``interrupted`` says what Ctrl-C leaves behind (default: nothing was written)."""

    def wrap(fn):
        cmd = click.command(name, cls=Command, context_settings=CONTEXT, **kw)(version(fn))
        if interrupted is not None:
            cmd.interrupted = interrupted
        return cmd

    return wrap


def emit(summary: dict, as_json: bool) -> None:
    """Print ``summary`` as JSON or as an aligned table of keys and values."""
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, dict | list):
            value = json.dumps(value, default=str)
        click.echo(f"{key:<{width}}  {value}")


def echo_err(message: str) -> None:
    click.echo(message, err=True)


class Progress:
    """A click progress bar on stderr redrawn at most every ``interval`` seconds.

    :meth:`advance` is the per-step callback: it counts and, at most
    ``1 / interval`` times a second, redraws; leaving the ``with`` block draws
    the final state.  Without a terminal click draws only the label, once.
    """

    def __init__(self, total: int, label: str, show=None, show_pos=False, interval=0.2):
        self._bar = click.progressbar(
            length=total, label=label, item_show_func=show, file=sys.stderr, show_pos=show_pos
        )
        self._interval = interval
        self._pending = 0
        self._item = None
        self._next = 0.0

    def __enter__(self):
        self._bar.__enter__()
        self._next = time.monotonic() + self._interval
        return self

    def __exit__(self, *exc):
        self._flush()
        return self._bar.__exit__(*exc)

    def advance(self, item=None, steps: int = 1) -> None:
        self._pending += steps
        self._item = item
        if time.monotonic() >= self._next:
            self._flush()
            self._next = time.monotonic() + self._interval

    def _flush(self) -> None:
        if self._pending:
            self._bar.update(self._pending, self._item)
            self._pending = 0


class _NoProgress:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def progress(total: int, label: str, quiet: bool, show=None, show_pos=False):
    """A :class:`Progress` bar as a context manager, or one giving None when ``quiet``."""
    if quiet or not total:
        return _NoProgress()
    return Progress(total, label, show, show_pos)
