"""Shared pieces of the CLI commands: consoles, option types, small parsers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from udc_edge.core.errors import UsageError
from udc_edge.core.extras import has_torch

# markup off: messages, paths and table cells are printed as they are ("udc-edge[trt]" keeps
# its brackets); style with rich.text.Text where colour is wanted.
err = Console(stderr=True, markup=False, highlight=False)

#: Said wherever ``--backend trt`` is offered, until a real TensorRT run is recorded.
TRT_STATUS = ("the TensorRT backend has not yet been run against real TensorRT: its tests use a stand-in "
              "(docs/tensorrt.md)")
stdout = Console(markup=False, highlight=False)


def print_table(table, console: Console = stdout) -> None:
    """Print a rich table whole: never cut or squeezed below its natural width (piped output
    is 80 columns wide); a wider table is printed wider and a terminal wraps its lines."""
    from rich.measure import Measurement

    need = Measurement.get(console, console.options.update(max_width=100_000), table).maximum
    if need <= console.width:
        console.print(table)
    else:
        Console(width=need, markup=False, highlight=False, file=console.file,
                stderr=console.stderr).print(table)


def quiet(ctx: typer.Context) -> bool:
    """Whether the root ``--quiet`` flag was given."""
    root = ctx.find_root()
    return bool(root.meta.get("udc_edge.quiet"))


def set_threads(threads: int) -> None:
    """Apply a ``--threads`` option to torch's CPU threads (0 keeps torch's default) when
    torch is installed; engines take theirs when they are loaded (see :func:`root_threads`)."""
    if threads < 0:
        raise UsageError(f"--threads {threads} must be >= 0", "use 0 for the default")
    if threads and has_torch():
        import torch

        torch.set_num_threads(threads)


def root_threads(ctx: typer.Context) -> int:
    """The root ``--threads`` value (0: the libraries' default)."""
    return int(ctx.find_root().meta.get("udc_edge.threads") or 0)


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
WeightsOpt = Annotated[
    Path | None, typer.Option(help="Weights for --arch: .safetensors or a state dict (weights_only).")
]
# Options that several commands take: defined once, so the name and help agree everywhere.
TrainDataOpt = Annotated[
    str, typer.Option(help="synth:poled, synth:toled, synth:LAYOUT.json, or a paired dataset folder.")
]
PairedDataOpt = Annotated[
    Path, typer.Option("--data", help="Paired dataset (lq/ + gt/ folders, .mat, DISCNet .npy).")
]
SeedOpt = Annotated[int, typer.Option(help="Random seed (deterministic on CPU; attacks use seed + i on image i).")]
ThreadsOpt = Annotated[
    int, typer.Option(help="CPU threads per process for torch and ONNX Runtime (0: their default).")
]
OverwriteOpt = Annotated[bool, typer.Option(
    help="Replace an existing output: a file, or a folder udc-edge made. Never an input.")]
PoolOpt = Annotated[int, typer.Option(help="Clean crops kept in memory for synth: data.")]
AttackBatchOpt = Annotated[int, typer.Option(
    help="Images per adaptive (EOT) attack batch; 0: all at once. Lower it if memory runs out: EOT holds "
         "every noise sample's graph through the purifier.")]


def check_out(out: Path, *inputs: str | Path | None, overwrite: bool = False, kind: str = "dir") -> None:
    """Refuse OUT before any work starts: see :func:`udc_edge.core.fileio.check_output`."""
    from udc_edge.core.fileio import check_output

    check_output(out, inputs, overwrite, kind)


def load_model_opts(model: str, arch: str | None, arch_kwargs: str, weights: Path | None):
    """Resolve MODEL / --arch / --arch-kwargs / --weights into ``(model, description)``."""
    from udc_edge.models.zoo import load_model

    return load_model(model, arch=arch, arch_kwargs=json_opt(arch_kwargs, "--arch-kwargs"),
                      weights=str(weights) if weights else None)
