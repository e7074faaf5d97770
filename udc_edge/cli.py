"""The ``udc-edge`` command line: each command parses options into a spec, calls ONE
library function and prints/saves its report. No logic lives here.

Errors the user can cause (:class:`udc_edge.errors.UdcEdgeError`) print one line and exit
with code 1 (2 for usage errors); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from udc_edge import __version__
from udc_edge.errors import UdcEdgeError

err = Console(stderr=True)
out = Console()


class _Group(TyperGroup):
    """Root group: turns UdcEdgeError from any sub-command into one line + exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UdcEdgeError as exc:
            if ctx.meta.get("udc_edge.debug") or os.environ.get("UDC_EDGE_DEBUG"):
                raise
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Group,
    name="udc-edge",
    help="Under-display-camera restorers: train, export, build edge engines, prove robustness.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Synthesise and inspect UDC datasets and PSFs.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def _version(value: bool) -> None:
    if value:
        out.print(f"udc-edge {__version__}")
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
) -> None:
    """udc-edge: UDC restoration from PyTorch to robust edge engines."""
    ctx.meta["udc_edge.debug"] = debug
    ctx.meta["udc_edge.quiet"] = quiet


def _quiet(ctx: typer.Context) -> bool:
    return bool(ctx.meta.get("udc_edge.quiet"))


DisplayOpt = Annotated[
    str, typer.Option("--display", "-d", help="Display preset (poled, toled), layout .json or unit-cell mask .png.")
]


@data_app.command("synth")
def data_synth(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Argument(help="Output dataset folder (created atomically).")],
    display: DisplayOpt = "poled",
    count: Annotated[int, typer.Option("--count", "-n", help="Number of image pairs.")] = 16,
    size: Annotated[int, typer.Option("--size", "-s", help="Image side in pixels.")] = 128,
    source: Annotated[
        str, typer.Option(help="photos, photos:train, photos:test, deadleaves, mixed, or a folder of images.")
    ] = "photos",
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 0,
    noise: Annotated[bool, typer.Option("--noise/--no-noise", help="Poisson-Gaussian sensor noise.")] = True,
    lights: Annotated[bool, typer.Option("--lights/--no-lights", help="Add bright light sources (flare).")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing non-empty output folder.")] = False,
) -> None:
    """Synthesise a paired UDC dataset: lq/ and gt/ 16-bit PNGs, psf.npy, psf.png, dataset.json."""
    from udc_edge.data.synth import SynthSpec, write_synthetic_dataset
    from udc_edge.progress import progress_bar

    spec = SynthSpec(display=display, count=count, size=size, source=source, seed=seed, noise=noise, lights=lights)
    with progress_bar("synthesising", count, _quiet(ctx)) as advance:
        meta = write_synthetic_dataset(out_dir, spec, overwrite=overwrite, progress=advance)
    st = meta["stats"]
    out.print(
        f"wrote {count} pairs to {out_dir} (display {meta['display']['name']}, "
        f"degraded PSNR {st['psnr_lq_vs_gt_mean']:.2f} dB mean, {st['psnr_lq_vs_gt_min']:.2f} dB worst)"
    )


@data_app.command("psf")
def data_psf(
    display: DisplayOpt = "poled",
    out_path: Annotated[Path, typer.Option("--out", "-o", help="PSF picture (.png); a .npy is written beside it.")] = Path("psf.png"),
) -> None:
    """Compute a display's PSF and write it as a log-scaled PNG and a .npy array."""
    from udc_edge.data.psf import write_psf

    info = write_psf(display, out_path)
    out.print(
        f"wrote {out_path} and {out_path.with_suffix('.npy')}: {info['psf_size']}x{info['psf_size']} px, "
        f"diffraction orders every {info['first_order_px'][1]:.1f} px (G), "
        f"light transmission R/G/B {', '.join(f'{t:.3f}' for t in info['light_transmission'])}"
    )


@app.command("demo")
def demo(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Argument(help="Where to write the demo's report and files.")] = Path("udc-edge-demo"),
    quick: Annotated[bool, typer.Option(help="A smaller run (under a minute), as used by the tests.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing non-empty output folder.")] = True,
) -> None:
    """Run the main job end to end on the built-in default (P-OLED) and write a report."""
    from udc_edge.demo import run_demo

    report = run_demo(out_dir, quick=quick, quiet=_quiet(ctx), overwrite=overwrite)
    out.print(report.summary())


if __name__ == "__main__":  # pragma: no cover
    app()
