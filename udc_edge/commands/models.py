"""``udc-edge restore`` and ``udc-edge models``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from udc_edge.commands.common import (
    ArchKwargsOpt,
    ArchOpt,
    OverwriteOpt,
    WeightsOpt,
    load_model_opts,
    print_table,
    quiet,
    root_threads,
    stdout,
)


def restore_cmd(
    ctx: typer.Context,
    model: Annotated[
        str,
        typer.Argument(
            help="Shipped name (unet-s-poled), checkpoint folder, .safetensors file, "
            "or engine file (.onnx/.engine/.plan with its manifest, from udc-edge build)."
        ),
    ],
    inputs: Annotated[list[Path], typer.Argument(help="Images and/or folders of images.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder (PNG, same names, same bit depth).")],
    gt: Annotated[Path | None, typer.Option(help="Ground-truth folder: report PSNR/SSIM per image.")] = None,
    tile: Annotated[int, typer.Option(help="Tile size for large images (0: whole image).")] = 0,
    overlap: Annotated[int, typer.Option(help="Tile overlap in pixels (blended).")] = 32,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = "",
    weights: WeightsOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Restore degraded UDC images with a model or a deployed engine (no PyTorch needed for an engine)."""
    import contextlib

    from udc_edge.core.progress import progress_bar
    from udc_edge.engines import is_engine_path, load_engine
    from udc_edge.evaluation.restore import collect_inputs, restore_files

    with contextlib.ExitStack() as stack:
        if arch is None and is_engine_path(model):
            net = stack.enter_context(load_engine(model, threads=root_threads(ctx)))
        else:
            net, _ = load_model_opts(model, arch, arch_kwargs, weights)
        n = len(collect_inputs(list(inputs)))
        with progress_bar("restoring", n, quiet(ctx)) as adv:
            report = restore_files(net, list(inputs), out_dir, gt_dir=gt, tile=tile, overlap=overlap, progress=adv,
                                   overwrite=overwrite, also_inputs=(model, *((weights,) if weights else ())))
    msg = f"restored {len(report.images)} image(s) into {out_dir}"
    if gt is not None:
        msg += (f": PSNR {report.mean('input_psnr'):.2f} -> {report.mean('output_psnr'):.2f} dB, "
                f"SSIM {report.mean('input_ssim'):.4f} -> {report.mean('output_ssim'):.4f}")
    stdout.print(msg)


def _listing(size: int) -> dict:
    """Architectures and shipped weights as plain data (what the tables and --json show)."""
    from udc_edge.models import count_macs, count_params, create, list_models
    from udc_edge.models.zoo import load_model, shipped_models

    archs = []
    for name in list_models():
        net = create(name)
        archs.append({"name": name, "arch": type(net).__name__, "params": count_params(net),
                      "gmacs": round(count_macs(net, size, size) / 1e9, 4)})
    shipped = []
    for name in shipped_models():
        net, card = load_model(name)  # the description is the card (config.json)
        ho = card.get("heldout", {})
        arch = card["arch"]
        if arch.endswith(":Purifier"):
            k = card["kwargs"]
            avg = f", mean of {k['average']}" if k.get("average", 1) > 1 else ""
            arch = f"purifier {k['role']}: t* {k['t_star']:g}, {k['steps']} step(s){avg}"
        shipped.append({"name": name, "arch": arch, "params": count_params(net),
                        "heldout_input_psnr": ho.get("input_psnr"), "heldout_psnr": ho.get("psnr"),
                        "display": card.get("training", {}).get("data", {}).get("display", "")})
    return {"size": size, "architectures": archs, "shipped": shipped}


def _table(title: str, rows: list[dict], cols: dict) -> object:
    from rich.table import Table

    table = Table(title=title)
    for col in cols:
        table.add_column(col)
    for r in rows:
        table.add_row(*(fmt(r) for fmt in cols.values()))
    return table


def models_cmd(
    size: Annotated[int, typer.Option(help="Image side for the MAC count.")] = 256,
    as_json: Annotated[bool, typer.Option("--json", help="Print the listing as JSON (for scripts).")] = False,
) -> None:
    """List architectures and shipped weights, with parameters and MACs."""
    import json

    data = _listing(size)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    print_table(_table(f"restorer architectures (MACs at {size}x{size})", data["architectures"], {
        "name": lambda r: r["name"], "arch": lambda r: r["arch"], "params": lambda r: f"{r['params']:,}",
        "GMACs": lambda r: f"{r['gmacs']:.2f}"}))
    def psnr(r):
        return (f"{r['heldout_input_psnr']:.2f} -> {r['heldout_psnr']:.2f}"
                          if r["heldout_psnr"] is not None else "-")
    print_table(_table("shipped weights", data["shipped"], {
        "name": lambda r: r["name"], "arch": lambda r: r["arch"], "params": lambda r: f"{r['params']:,}",
        "held-out PSNR in -> out (dB)": psnr, "trained": lambda r: r["display"]}))


def register(app: typer.Typer) -> None:
    app.command("restore")(restore_cmd)
    app.command("models")(models_cmd)
