"""Shared pieces of the CLI commands: consoles, option types, small parsers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from udc_edge.core.errors import UsageError

err = Console(stderr=True)
stdout = Console()


def quiet(ctx: typer.Context) -> bool:
    """Whether the root ``--quiet`` flag was given."""
    root = ctx.find_root()
    return bool(root.meta.get("udc_edge.quiet"))


def set_threads(threads: int) -> None:
    """Apply a ``--threads`` option: torch's CPU threads (0 keeps torch's default)."""
    if threads < 0:
        raise UsageError(f"--threads {threads} must be >= 0", "use 0 for the default")
    if threads:
        import torch

        torch.set_num_threads(threads)


def json_opt(value: str, name: str) -> dict:
    """Parse a JSON-object option value (empty string: {})."""
    try:
        obj = json.loads(value) if value else {}
    except json.JSONDecodeError as exc:
        raise UsageError(f"{name} is not valid JSON: {exc}", 'e.g. \'{"width": 16}\'') from exc
    if not isinstance(obj, dict):
        raise UsageError(f"{name} must be a JSON object")
    return obj


DisplayOpt = Annotated[
    str, typer.Option("--display", "-d", help="Display preset (poled, toled), layout .json or unit-cell mask .png.")
]
ModelArg = Annotated[str, typer.Argument(help="Shipped name (unet-s-poled), checkpoint folder or .safetensors file.")]
ArchOpt = Annotated[str | None, typer.Option(help="Bring your own: preset, architecture or package.module:Class.")]
ArchKwargsOpt = Annotated[str, typer.Option(help="JSON kwargs for --arch.")]
WeightsOpt = Annotated[Path | None, typer.Option(help="Weights for --arch: .safetensors or a state dict (weights_only).")]
AttackBatchOpt = Annotated[int, typer.Option(
    help="Images per adaptive (EOT) attack batch; 0: all at once. Lower it if memory runs out: EOT holds "
         "every noise sample's graph through the purifier.")]


def load_model_opts(model: str, arch: str | None, arch_kwargs: str, weights: Path | None):
    """Resolve MODEL / --arch / --arch-kwargs / --weights into ``(model, description)``."""
    from udc_edge.models.zoo import load_model

    return load_model(model, arch=arch, arch_kwargs=json_opt(arch_kwargs, "--arch-kwargs"),
                      weights=str(weights) if weights else None)
