"""``udc-edge demo``: the main job on the built-in default."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from udc_edge.commands.common import quiet, stdout


def demo(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Argument(help="Where to write the demo's report and files.")] = Path("udc-edge-demo"),
    quick: Annotated[bool, typer.Option(help="A smaller run (under a minute), as used by the tests.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing non-empty output folder.")] = True,
    threads: Annotated[int, typer.Option(help="torch threads (1 keeps timings steady on shared CPUs; 0: default).")] = 1,
) -> None:
    """Run the main job end to end on the built-in default (P-OLED) and write a report."""
    from udc_edge.demo.run import run_demo

    report = run_demo(out_dir, quick=quick, quiet=quiet(ctx), overwrite=overwrite, threads=threads)
    stdout.print(report.summary())


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
