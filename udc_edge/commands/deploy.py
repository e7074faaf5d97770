"""``udc-edge export`` and ``udc-edge build``: PyTorch -> ONNX -> engine."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from udc_edge.commands.common import (
    TRT_STATUS,
    ArchKwargsOpt,
    ArchOpt,
    InputOpt,
    OverwriteOpt,
    WeightsOpt,
    err,
    json_opt,
    quiet,
    stdout,
)
from udc_edge.commands.doctor import ExtraInputOpt, FreezeInputOpt, OutputIndexOpt, StubModuleOpt


def export_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .onnx file.")],
    model: Annotated[
        str | None,
        typer.Argument(
            help="Shipped name, checkpoint folder, .safetensors, package.module:Class "
            "(with --weights), or '-' with --arch. Omit with --purifier alone."
        ),
    ] = None,
    purifier: Annotated[
        str | None,
        typer.Option(
            help="Distilled purifier (e.g. purifier-poled-k1): exported alone, or "
            "with MODEL as one purifier + restorer graph; inputs (input, noise)."
        ),
    ] = None,
    height: Annotated[int, typer.Option(help="Example input height (rounded up to the network's multiple).")] = 256,
    width: Annotated[int, typer.Option(help="Example input width.")] = 256,
    dynamic: Annotated[
        bool,
        typer.Option(
            "--dynamic/--fixed-shape",
            help="Dynamic batch/H/W, or a fixed shape (for models that bake their input size into the graph).",
        ),
    ] = True,
    opset: Annotated[int, typer.Option(help="ONNX opset (dynamo needs >= 18).")] = 17,
    exporter: Annotated[str, typer.Option(help="auto (TorchScript, then dynamo), torchscript or dynamo.")] = "auto",
    tolerance: Annotated[float, typer.Option(help="Fail above this max abs error vs torch.")] = 1e-3,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = "",
    weights: WeightsOpt = None,
    output_index: OutputIndexOpt = None,
    extra_input: ExtraInputOpt = None,
    freeze_input: FreezeInputOpt = None,
    multiple: Annotated[int | None, typer.Option(help="Input size multiple the network needs (udc-edge doctor finds "
                                                      "it); recorded, engines pad H/W up to it.")] = None,
    stub_module: StubModuleOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export a restorer to ONNX, check it, and prove ONNX Runtime matches torch."""
    from udc_edge.engines.manifest import MANIFEST_FORMAT, manifest_path
    from udc_edge.export.byo import ExtraInput
    from udc_edge.export.onnx_export import ExportSpec
    from udc_edge.export.request import ExportSource, export_source

    src = ExportSource(model or "", purifier, arch, json_opt(arch_kwargs, "--arch-kwargs"),
                       str(weights) if weights else None, tuple(stub_module or ()))
    spec = ExportSpec(height=height, width=width, dynamic=dynamic, opset=opset, exporter=exporter,
                      max_abs_err=tolerance, output_index=output_index,
                      extra_inputs=ExtraInput.parse_all(extra_input, freeze_input), multiple=multiple)
    result = export_source(src, out, spec, overwrite=overwrite)
    # an engine manifest left from a file this export replaced describes another graph; only a
    # udc-edge manifest is removed, never another file that happens to share the name
    stale = manifest_path(out)
    if stale.is_file() and MANIFEST_FORMAT in stale.read_text(errors="replace")[:4096]:
        stale.unlink()
    stdout.print(result.report.summary(), markup=False, highlight=False, soft_wrap=True)
    for line in result.cuda_warnings():
        stdout.print(line, markup=False, highlight=False, soft_wrap=True)


def build_cmd(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Engine file (.onnx for ort, .xml (+ .bin) for openvino, "
            ".engine for trt; --backend auto: the winner's suffix).",
        ),
    ],
    onnx_path: Annotated[Path | None, typer.Argument(help="ONNX model from udc-edge export.")] = None,
    bundle: Annotated[
        Path | None, typer.Option(help="Build from a bundle (udc-edge bundle) instead of an ONNX.")
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="ort (ONNX Runtime, CPU), openvino (CPU), trt (TensorRT, NVIDIA GPU; "
            f"{TRT_STATUS}), or auto (ort and openvino candidates, measured "
            "here)."
        ),
    ] = "ort",
    precision: Annotated[
        str,
        typer.Option(
            help="fp32, fp16 (trt), bf16 (openvino), int8, or auto (fastest "
            "candidate meeting --min-fidelity, measured here)."
        ),
    ] = "fp32",
    calib: Annotated[
        str | None, typer.Option(help="Calibration images: a folder (lq/ of a paired set) or synth:poled.")
    ] = None,
    calib_count: Annotated[int, typer.Option(help="Calibration images to use.")] = 16,
    calib_size: Annotated[
        int | None,
        typer.Option(
            help="Calibration crop size (px) [default: the engine's run size "
            "when known (fixed-shape graph, --opt-shape), else 128]."
        ),
    ] = None,
    calib_method: Annotated[
        str, typer.Option(help="percentile (99.999 %), minmax or entropy (KL, 2048 bins).")
    ] = "percentile",
    calib_cache: Annotated[
        Path | None, typer.Option(help="Calibration cache JSON (default: beside the engine).")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Q/DQ flavour: cpu (u8/s8) or tensorrt (symmetric s8).")] = None,
    exclude: Annotated[
        str,
        typer.Option(
            help="'auto' (by measured sensitivity), 'auto:robust' (by clean and "
            "attacked fidelity) or NODE,NODE kept in float."
        ),
    ] = "",
    calib_adversarial: Annotated[
        str | None,
        typer.Option(
            help="ATTACK:EPS[:STEPS], e.g. pgd:8/255: add copies of the calibration images attacked on the FP32 model."
        ),
    ] = None,
    min_fidelity: Annotated[float, typer.Option(help="Target PSNR (dB) of INT8 output vs FP32.")] = 40.0,
    min_shape: Annotated[str | None, typer.Option(help="Shape profile min, e.g. 1x3x64x64.")] = None,
    opt_shape: Annotated[str | None, typer.Option(help="Shape profile opt.")] = None,
    max_shape: Annotated[str | None, typer.Option(help="Shape profile max.")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for calibration and measurements (0: default).")] = 0,
    input_: InputOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Build an engine (and its manifest ENGINE.json) from an ONNX file."""
    from udc_edge.core.errors import UsageError
    from udc_edge.core.progress import progress_bar
    from udc_edge.engines.build import build_engine
    from udc_edge.engines.spec import BuildSpec, ShapeProfile, parse_exclude

    profile = ShapeProfile.from_options(min_shape, opt_shape, max_shape)
    names, auto_exclude = parse_exclude(exclude)
    prequantised = False
    with contextlib.ExitStack() as opened:  # an unpacked .tar.gz bundle is deleted after the build
        if bundle is not None:
            if onnx_path is not None:
                raise UsageError("give an ONNX file or --bundle, not both")
            from udc_edge.deploy.bundle import open_bundle

            b = opened.enter_context(open_bundle(bundle))
            onnx_path = b.onnx_for(backend, precision)
            prequantised = precision == "int8" and backend in ("ort", "trt")
            calib = calib or str(b.path("calib"))
        if onnx_path is None:
            raise UsageError("give the ONNX file to build (or --bundle)")
        spec = BuildSpec(
            backend=backend,
            precision=precision,
            calib=calib,
            calib_count=calib_count,
            calib_size=calib_size,
            calib_method=calib_method,
            calib_cache=str(calib_cache) if calib_cache else None,
            target=target,
            exclude=names,
            auto_exclude=auto_exclude,
            robust_exclude=exclude == "auto:robust",
            calib_adversarial=calib_adversarial,
            min_fidelity=min_fidelity,
            profile=profile,
            threads=threads,
            prequantised=prequantised,
            inputs=tuple(input_ or ()),
        )
        if backend == "trt":
            err.print(f"note: {TRT_STATUS}")
        with progress_bar(f"building {backend} {precision}", None, quiet(ctx)) as adv:
            report = build_engine(
                onnx_path, out, spec, progress=adv, overwrite=overwrite, inputs=(bundle,) if bundle is not None else ()
            )
    stdout.print(report.summary(), markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
    app.command("build")(build_cmd)
