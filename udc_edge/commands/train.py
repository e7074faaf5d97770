"""``udc-edge train``: restorers (the purifier registers its own command here)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from udc_edge.commands.common import (
    OverwriteOpt,
    PoolOpt,
    SeedOpt,
    ThreadsOpt,
    TrainDataOpt,
    json_opt,
    quiet,
    stdout,
)

train_app = typer.Typer(help="Train restorers and the diffusion purifier.", no_args_is_help=True)

#: The options every trainer shares (restorer, purifier, distill, finetune: one Trainer).
DeviceOpt = Annotated[str, typer.Option(help="auto (a CUDA GPU when torch sees one), cpu, cuda or cuda:N.")]
WorkersOpt = Annotated[int, typer.Option(help="Processes that make batches ahead (0: in the training process). "
                                              "On a GPU, synthesis bounds the step rate without them.")]
WeightDecayOpt = Annotated[float, typer.Option(help="AdamW weight decay.")]


@train_app.command("restorer")
def train_restorer_cmd(
    ctx: typer.Context,
    arch: Annotated[
        str, typer.Option(help="Preset (unet-s), architecture, package.module:Class, or a checkpoint to fine-tune.")
    ] = "unet-s",
    data: TrainDataOpt = "synth:poled",
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: best/, last/, state, train_log.json.")] = Path(
        "runs/restorer"
    ),
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 2000,
    batch: Annotated[int, typer.Option(help="Batch size per process.")] = 8,
    patch: Annotated[int, typer.Option(help="Random crop size.")] = 96,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine schedule).")] = 2e-3,
    weight_decay: WeightDecayOpt = 1e-4,
    loss: Annotated[
        str, typer.Option(help="Pixel loss: charbonnier, l1, l2 (plus --fft-weight x FFT L1).")
    ] = "charbonnier",
    fft_weight: Annotated[float, typer.Option(help="Weight of the frequency (FFT L1) term.")] = 0.05,
    val_every: Annotated[int, typer.Option(help="Validate and checkpoint every K steps.")] = 250,
    val_count: Annotated[int, typer.Option(help="Held-out validation pairs.")] = 8,
    seed: SeedOpt = 0,
    arch_kwargs: Annotated[str, typer.Option(help="JSON kwargs for the architecture.")] = "",
    threads: ThreadsOpt = 0,
    pool: PoolOpt = 192,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 0,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last and OUT/state.safetensors.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train a restorer (single process, or DDP under torchrun --nproc_per_node N)."""
    from udc_edge.core.progress import progress_bar
    from udc_edge.training.distributed import is_main_process
    from udc_edge.training.restorer import TrainSpec, train_restorer

    spec = TrainSpec(
        arch=arch,
        data=data,
        out=str(out),
        steps=steps,
        batch=batch,
        patch=patch,
        lr=lr,
        weight_decay=weight_decay,
        device=device,
        workers=workers,
        pixel_loss=loss,
        fft_weight=fft_weight,
        val_every=val_every,
        val_count=val_count,
        seed=seed,
        arch_kwargs=json_opt(arch_kwargs, "--arch-kwargs"),
        threads=threads,
        pool=pool,
        resume=resume,
        overwrite=overwrite,
    )
    silent = quiet(ctx) or not is_main_process()
    with progress_bar("preparing data", None, silent) as setup, progress_bar("training", steps, silent) as adv:
        report = train_restorer(spec, progress=adv, setup_progress=setup)
    if is_main_process():
        stdout.print(report.summary())


def register(app: typer.Typer) -> None:
    app.add_typer(train_app, name="train")
