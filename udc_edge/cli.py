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
stdout = Console()


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
train_app = typer.Typer(help="Train restorers (and, later, the purifier).", no_args_is_help=True)
app.add_typer(train_app, name="train")


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
    stdout.print(
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
    stdout.print(
        f"wrote {out_path} and {out_path.with_suffix('.npy')}: {info['psf_size']}x{info['psf_size']} px, "
        f"diffraction orders every {info['first_order_px'][1]:.1f} px (G), "
        f"light transmission R/G/B {', '.join(f'{t:.3f}' for t in info['light_transmission'])}"
    )


def _json_opt(value: str, name: str) -> dict:
    import json

    from udc_edge.errors import UsageError

    try:
        obj = json.loads(value) if value else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"{name} is not valid JSON: {exc}", "e.g. '{\"width\": 16}'") from exc
    if not isinstance(obj, dict):
        raise UsageError(f"{name} must be a JSON object")
    return obj


@train_app.command("restorer")
def train_restorer_cmd(
    ctx: typer.Context,
    arch: Annotated[str, typer.Option(help="Preset (unet-s), architecture, package.module:Class, or a checkpoint to fine-tune.")] = "unet-s",
    data: Annotated[str, typer.Option(help="synth:poled, synth:toled, synth:LAYOUT.json, or a paired dataset folder.")] = "synth:poled",
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: best/, last/, state, train_log.json.")] = Path("runs/restorer"),
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 2000,
    batch: Annotated[int, typer.Option(help="Batch size per process.")] = 8,
    patch: Annotated[int, typer.Option(help="Random crop size.")] = 96,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine schedule).")] = 2e-3,
    loss: Annotated[str, typer.Option(help="Pixel loss: charbonnier, l1, l2 (plus --fft-weight x FFT L1).")] = "charbonnier",
    fft_weight: Annotated[float, typer.Option(help="Weight of the frequency (FFT L1) term.")] = 0.05,
    val_every: Annotated[int, typer.Option(help="Validate and checkpoint every K steps.")] = 250,
    val_count: Annotated[int, typer.Option(help="Held-out validation pairs.")] = 8,
    seed: Annotated[int, typer.Option(help="Random seed (deterministic on CPU).")] = 0,
    arch_kwargs: Annotated[str, typer.Option(help="JSON kwargs for the architecture.")] = "",
    threads: Annotated[int, typer.Option(help="torch threads per process (0: default).")] = 0,
    pool: Annotated[int, typer.Option(help="Clean crops kept in memory for synth: data.")] = 192,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last and OUT/state.safetensors.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty OUT.")] = False,
) -> None:
    """Train a restorer (single process, or DDP under torchrun --nproc_per_node N)."""
    from udc_edge.progress import progress_bar
    from udc_edge.training.restorer import TrainSpec, main_rank, train_restorer

    spec = TrainSpec(arch=arch, data=data, out=str(out), steps=steps, batch=batch, patch=patch, lr=lr,
                     pixel_loss=loss, fft_weight=fft_weight, val_every=val_every, val_count=val_count, seed=seed,
                     arch_kwargs=_json_opt(arch_kwargs, "--arch-kwargs"), threads=threads, pool=pool, resume=resume,
                     overwrite=overwrite)
    quiet = _quiet(ctx) or not main_rank()
    with progress_bar("preparing data", None, quiet) as setup, progress_bar("training", steps, quiet) as adv:
        report = train_restorer(spec, progress=adv, setup_progress=setup)
    if main_rank():
        stdout.print(report.summary())


ModelArg = Annotated[str, typer.Argument(help="Shipped name (unet-s-poled), checkpoint folder or .safetensors file.")]
ArchOpt = Annotated[str | None, typer.Option(help="Bring your own: preset, architecture or package.module:Class.")]
ArchKwargsOpt = Annotated[str, typer.Option(help="JSON kwargs for --arch.")]
WeightsOpt = Annotated[Path | None, typer.Option(help="Weights for --arch: .safetensors or a state dict (weights_only).")]


def _load(model: str, arch: str | None, arch_kwargs: str, weights: Path | None):
    from udc_edge.models.zoo import load_model

    return load_model(model, arch=arch, arch_kwargs=_json_opt(arch_kwargs, "--arch-kwargs"),
                      weights=str(weights) if weights else None)


@app.command("restore")
def restore_cmd(
    ctx: typer.Context,
    model: ModelArg,
    inputs: Annotated[list[Path], typer.Argument(help="Images and/or folders of images.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder (PNG, same names, same bit depth).")],
    gt: Annotated[Path | None, typer.Option(help="Ground-truth folder: report PSNR/SSIM per image.")] = None,
    tile: Annotated[int, typer.Option(help="Tile size for large images (0: whole image).")] = 0,
    overlap: Annotated[int, typer.Option(help="Tile overlap in pixels (blended).")] = 32,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = "",
    weights: WeightsOpt = None,
) -> None:
    """Restore degraded UDC images with a model."""
    from udc_edge.evaluation.restore import collect_inputs, restore_files
    from udc_edge.progress import progress_bar

    net, _ = _load(model, arch, arch_kwargs, weights)
    n = len(collect_inputs(list(inputs)))
    with progress_bar("restoring", n, _quiet(ctx)) as adv:
        report = restore_files(net, list(inputs), out_dir, gt_dir=gt, tile=tile, overlap=overlap, progress=adv)
    msg = f"restored {len(report.images)} image(s) into {out_dir}"
    if gt is not None:
        msg += (f": PSNR {report.mean('input_psnr'):.2f} -> {report.mean('output_psnr'):.2f} dB, "
                f"SSIM {report.mean('input_ssim'):.4f} -> {report.mean('output_ssim'):.4f}")
    stdout.print(msg)


@app.command("models")
def models_cmd(
    size: Annotated[int, typer.Option(help="Image side for the MAC count.")] = 256,
) -> None:
    """List architectures and shipped weights, with parameters and MACs."""
    from rich.table import Table

    from udc_edge.models import count_macs, count_params, create, list_models
    from udc_edge.models.zoo import load_model, shipped_card, shipped_models

    table = Table(title=f"restorer architectures (MACs at {size}x{size})")
    for col in ("name", "arch", "params", "GMACs"):
        table.add_column(col)
    for name in list_models():
        net = create(name)
        table.add_row(name, type(net).__name__, f"{count_params(net):,}", f"{count_macs(net, size, size) / 1e9:.2f}")
    stdout.print(table)
    shipped = Table(title="shipped weights")
    for col in ("name", "arch", "params", "held-out PSNR in -> out (dB)", "trained"):
        shipped.add_column(col)
    for name in shipped_models():
        card = shipped_card(name)
        net, _ = load_model(name)
        ho = card.get("heldout", {})
        res = f"{ho['input_psnr']:.2f} -> {ho['psnr']:.2f}" if ho else "-"
        shipped.add_row(name, card["arch"], f"{count_params(net):,}", res, card.get("training", {}).get("data", {}).get("display", ""))
    stdout.print(shipped)


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
    stdout.print(report.summary())


if __name__ == "__main__":  # pragma: no cover
    app()
