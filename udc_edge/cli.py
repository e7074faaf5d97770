"""The ``udc-edge`` command line: each command parses options into a spec, calls ONE
library function and prints/saves its report. No logic lives here; the commands are in
``udc_edge/commands/``, one module per group, each with a ``register(app)``.

Errors the user can cause (:class:`udc_edge.core.errors.UdcEdgeError`) print one line and exit
with code 1 (2 for usage errors); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from typing import Annotated

import click
import typer
from rich.text import Text
from typer.core import TyperGroup

from udc_edge import __version__
from udc_edge.commands import attack, data, demo, deploy, doctor, models, purifier, train, workflow
from udc_edge.commands.common import err, set_threads, stdout
from udc_edge.core.errors import UdcEdgeError
from udc_edge.core.extras import missing_extra


def _debugging(ctx: click.Context) -> bool:
    """Whether ``--debug`` or ``UDC_EDGE_DEBUG`` asks for tracebacks instead of one-line errors."""
    return bool(ctx.meta.get("udc_edge.debug") or os.environ.get("UDC_EDGE_DEBUG"))


class _Group(TyperGroup):
    """Root group: turns UdcEdgeError from any sub-command into one line + exit code."""

    def _invoke(self, ctx: click.Context):
        """The sub-command; an ImportError of a runtime-only install reaching for torch names the extra."""
        try:
            return super().invoke(ctx)
        except ImportError as exc:
            missing = missing_extra(exc, f"udc-edge {ctx.invoked_subcommand or ''}".strip())
            if missing is None or _debugging(ctx):
                raise
            raise missing from exc

    def invoke(self, ctx: click.Context):
        def debug() -> bool:  # read after the callback has parsed --debug
            return _debugging(ctx)

        try:
            return self._invoke(ctx)
        except UdcEdgeError as exc:
            if debug():
                raise
            err.print(Text.assemble(("error:", "bold red"), f" {exc}"), soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except MemoryError:  # e.g. a --shape or --size far beyond this machine
            if debug():
                raise
            err.print(Text.assemble(("error:", "bold red"), " out of memory (the arrays this command needs do not "
                                    "fit in this machine's memory; use a smaller --shape, --size or --tile)"),
                      soft_wrap=True)
            raise typer.Exit(1) from None
        except OSError as exc:  # a full disk outside an atomic write (temp folders): still one line
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or ctx.meta.get("udc_edge.debug"):
                raise
            err.print(f"error: no space left on the device ({exc.filename or 'temp folder'}); nothing was written "
                      "(free some space)", highlight=False, soft_wrap=True, markup=False)
            raise typer.Exit(1) from None


def _interrupt(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so temporary outputs are removed on the way out."""
    raise KeyboardInterrupt


app = typer.Typer(
    cls=_Group,
    name="udc-edge",
    help="Under-display-camera restorers: train, export, build edge engines, prove robustness.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help text as written: "[default: ...]" and "udc-edge[trt]" stay
)


def _version(value: bool) -> None:
    if value:
        stdout.print(f"udc-edge {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    threads: Annotated[
        int,
        typer.Option(
            "--threads",
            help="CPU threads for torch (when installed) and for engines "
            "that restore/eval/verify run (0: the libraries' default). On a shared machine 1 "
            "avoids 10-50x slow-downs when another process holds a core.",
        ),
    ] = 0,
    trust_code: Annotated[
        bool,
        typer.Option(
            "--trust-code",
            help="Let a checkpoint whose config.json names its own class (arch pkg.mod:Class) import "
            "that module. Off by default: a file never makes udc-edge run code.",
        ),
    ] = False,
) -> None:
    """udc-edge: UDC restoration from PyTorch to robust edge engines."""
    ctx.meta["udc_edge.debug"] = debug
    ctx.meta["udc_edge.quiet"] = quiet
    ctx.meta["udc_edge.threads"] = threads
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, _interrupt)
    set_threads(threads)
    if trust_code:  # imported here only: the torch-free commands must not pay for it
        from udc_edge.models.checkpoint import trusting_checkpoint_code

        ctx.with_resource(trusting_checkpoint_code())


for _module in (data, train, purifier, models, deploy, doctor, workflow, attack, demo):
    _module.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
