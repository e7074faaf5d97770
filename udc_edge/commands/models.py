"""``udc-edge restore`` and ``udc-edge models``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from udc_edge.commands.common import (
    ArchKwargsOpt,
    ArchOpt,
    ModelArg,
    WeightsOpt,
    load_model_opts,
    quiet,
    stdout,
)


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
    from udc_edge.core.progress import progress_bar
    from udc_edge.evaluation.restore import collect_inputs, restore_files

    net, _ = load_model_opts(model, arch, arch_kwargs, weights)
    n = len(collect_inputs(list(inputs)))
    with progress_bar("restoring", n, quiet(ctx)) as adv:
        report = restore_files(net, list(inputs), out_dir, gt_dir=gt, tile=tile, overlap=overlap, progress=adv)
    msg = f"restored {len(report.images)} image(s) into {out_dir}"
    if gt is not None:
        msg += (f": PSNR {report.mean('input_psnr'):.2f} -> {report.mean('output_psnr'):.2f} dB, "
                f"SSIM {report.mean('input_ssim'):.4f} -> {report.mean('output_ssim'):.4f}")
    stdout.print(msg)


def models_cmd(
    size: Annotated[int, typer.Option(help="Image side for the MAC count.")] = 256,
) -> None:
    """List architectures and shipped weights, with parameters and MACs."""
    from rich.table import Table

    from udc_edge.models import count_macs, count_params, create, list_models
    from udc_edge.models.zoo import load_model, shipped_models

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
        net, card = load_model(name)  # the description is the card (config.json)
        ho = card.get("heldout", {})
        res = f"{ho['input_psnr']:.2f} -> {ho['psnr']:.2f}" if ho else "-"
        arch = card["arch"]
        if arch.endswith(":Purifier"):
            k = card["kwargs"]
            avg = f", mean of {k['average']}" if k.get("average", 1) > 1 else ""
            arch = f"purifier {k['role']}: t* {k['t_star']:g}, {k['steps']} step(s){avg}"
        shipped.add_row(name, arch, f"{count_params(net):,}", res, card.get("training", {}).get("data", {}).get("display", ""))
    stdout.print(shipped)


def register(app: typer.Typer) -> None:
    app.command("restore")(restore_cmd)
    app.command("models")(models_cmd)
