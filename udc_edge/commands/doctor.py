"""``udc-edge doctor``: will this restorer export, build and run, and what stands in the way?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from udc_edge.commands.common import (
    TRT_STATUS,
    ArchKwargsOpt,
    ArchOpt,
    WeightsOpt,
    json_opt,
    quiet,
    stdout,
)

ExtraInputOpt = Annotated[list[str] | None, typer.Option(
    "--extra-input", help="NAME=SHAPE[:FILE.npy|:VALUE]: an extra forward argument (e.g. psf_code=1x8:code.npy), "
                          "frozen into the graph as a constant. Repeatable.")]
StubModuleOpt = Annotated[list[str] | None, typer.Option(
    "--stub-module", help="Module the model imports but never calls on the CPU path (a CUDA-only extension): "
                          "replaced by a stub so the class loads. Repeatable.")]
OutputIndexOpt = Annotated[int | None, typer.Option(
    help="forward returns a tuple/list: the index of the restored image.")]


def doctor_cmd(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Argument(help="package.module:Class, a shipped name, a checkpoint, or '-' with --arch.")
    ],
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = "",
    weights: WeightsOpt = None,
    height: Annotated[int, typer.Option(help="Example input height.")] = 64,
    width: Annotated[int, typer.Option(help="Example input width.")] = 64,
    output_index: OutputIndexOpt = None,
    extra_input: ExtraInputOpt = None,
    stub_module: StubModuleOpt = None,
    opset: Annotated[int, typer.Option(help="ONNX opset for the TorchScript exporter (dynamo uses >= 18).")] = 17,
    backend: Annotated[str, typer.Option(help="Target that must work for exit code 0: ort, or trt (also needs "
                                              "every op in the ONNX-TensorRT support table; "
                                              f"{TRT_STATUS}).")] = "ort",
    min_fidelity: Annotated[float, typer.Option(help="INT8 vs FP32 PSNR (dB) below which doctor advises.")] = 35.0,
    runs: Annotated[int, typer.Option(help="Timed runs per measurement.")] = 5,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder for doctor.json and doctor.md.")] = None,
) -> None:
    """Will this restorer export, build and run? Exit 0 if it can go the whole way, 1 if not.

    One report: load on CPU, each exporter's ops or error, dynamic shapes, slow ops, ONNX
    Runtime parity and speed vs eager, INT8 sensitivity per op type, TensorRT support."""
    from udc_edge.core.fileio import write_json_atomic, write_text_atomic
    from udc_edge.core.progress import progress_bar
    from udc_edge.doctor.doctor import STEPS, diagnose
    from udc_edge.doctor.report import DoctorSpec
    from udc_edge.export.byo import ExtraInput

    spec = DoctorSpec(height=height, width=width, output_index=output_index, opset=opset, backend=backend,
                      extra_inputs=tuple(ExtraInput.parse(t) for t in extra_input or ()), min_fidelity=min_fidelity,
                      runs=runs)
    kwargs = json_opt(arch_kwargs, "--arch-kwargs")
    with progress_bar("doctor", STEPS, quiet(ctx)) as adv:
        report = diagnose(model, arch, kwargs, str(weights) if weights else None, tuple(stub_module or ()), spec, adv)
    if out is not None:
        write_json_atomic(out / "doctor.json", report.to_dict())
        write_text_atomic(out / "doctor.md", report.to_markdown())
    stdout.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_cmd)
