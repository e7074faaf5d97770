"""``udc-edge data``: synthesise and inspect UDC datasets and PSFs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from udc_edge.commands.common import DisplayOpt, OverwriteOpt, quiet, stdout

data_app = typer.Typer(help="Synthesise and inspect UDC datasets and PSFs.", no_args_is_help=True)


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
    overwrite: OverwriteOpt = False,
) -> None:
    """Synthesise a paired UDC dataset: lq/ and gt/ 16-bit PNGs, psf.npy, psf.png, dataset.json."""
    from udc_edge.core.progress import progress_bar
    from udc_edge.data.synth import SynthSpec, write_synthetic_dataset

    spec = SynthSpec(display=display, count=count, size=size, source=source, seed=seed, noise=noise, lights=lights)
    with progress_bar("synthesising", count, quiet(ctx)) as advance:
        meta = write_synthetic_dataset(out_dir, spec, overwrite=overwrite, progress=advance)
    st = meta["stats"]
    stdout.print(
        f"wrote {count} pairs to {out_dir} (display {meta['display']['name']}, "
        f"degraded PSNR {st['psnr_lq_vs_gt_mean']:.2f} dB mean, {st['psnr_lq_vs_gt_min']:.2f} dB worst)"
    )


@data_app.command("psf")
def data_psf(
    display: DisplayOpt = "poled",
    out_path: Annotated[
        Path, typer.Option("--out", "-o", help="PSF picture (.png); a .npy is written beside it.")
    ] = Path("psf.png"),
) -> None:
    """Compute a display's PSF and write it as a log-scaled PNG and a .npy array."""
    from udc_edge.data.psf import write_psf

    info = write_psf(display, out_path)
    stdout.print(
        f"wrote {out_path} and {out_path.with_suffix('.npy')}: {info['psf_size']}x{info['psf_size']} px, "
        f"diffraction orders every {info['first_order_px'][1]:.1f} px (G), "
        f"light transmission R/G/B {', '.join(f'{t:.3f}' for t in info['light_transmission'])}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
