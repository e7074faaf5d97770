"""``udc-edge demo``: the main job on the built-in default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from udc_edge.commands.common import OverwriteOpt, quiet, stdout


def _previous_demo(folder: Path) -> bool:
    """Whether ``folder`` holds what an earlier ``udc-edge demo`` wrote (its report.json): a
    folder this command made, which a rerun may replace without --overwrite."""
    try:
        doc = json.loads((folder / "report.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and {"out_dir", "quick", "stages", "files"} <= set(doc)


def demo(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where to write the demo's report and files. "
                                          "A rerun replaces an earlier demo's folder; any other non-empty "
                                          "folder needs --overwrite.")] = Path("udc-edge-demo"),
    quick: Annotated[bool, typer.Option(help="A smaller run (under a minute), as used by the tests.")] = False,
    overwrite: OverwriteOpt = False,
    threads: Annotated[
        int, typer.Option(help="torch threads (1 keeps timings steady on shared CPUs; 0: default).")
    ] = 1,
) -> None:
    """Run the main job end to end on the built-in default (P-OLED) and write a report."""
    from udc_edge.demo.run import run_demo

    replace = overwrite or (out_dir.is_dir() and _previous_demo(out_dir))
    report = run_demo(out_dir, quick=quick, quiet=quiet(ctx), overwrite=replace, threads=threads)
    stdout.print(report.summary())


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
