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
    OverwriteOpt,
    WeightsOpt,
    check_out,
    err,
    json_opt,
    load_model_opts,
    quiet,
    stdout,
)
from udc_edge.commands.doctor import ExtraInputOpt, OutputIndexOpt, StubModuleOpt


def export_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output .onnx file.")],
    model: Annotated[str | None, typer.Argument(help="Shipped name, checkpoint folder, .safetensors, package.module:Class "
                                                     "(with --weights), or '-' with --arch. Omit with --purifier alone.")] = None,
    purifier: Annotated[str | None, typer.Option(help="Distilled purifier (e.g. purifier-poled-k1): exported alone, or "
                                                      "with MODEL as one purifier + restorer graph; inputs (input, noise).")] = None,
    height: Annotated[int, typer.Option(help="Example input height (rounded up to the network's multiple).")] = 256,
    width: Annotated[int, typer.Option(help="Example input width.")] = 256,
    dynamic: Annotated[bool, typer.Option("--dynamic/--fixed-shape", help="Dynamic batch/H/W, or a fixed shape "
                                          "(for models that bake their input size into the graph).")] = True,
    opset: Annotated[int, typer.Option(help="ONNX opset (dynamo needs >= 18).")] = 17,
    exporter: Annotated[str, typer.Option(help="auto (TorchScript, then dynamo), torchscript or dynamo.")] = "auto",
    tolerance: Annotated[float, typer.Option(help="Fail above this max abs error vs torch.")] = 1e-3,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = "",
    weights: WeightsOpt = None,
    output_index: OutputIndexOpt = None,
    extra_input: ExtraInputOpt = None,
    stub_module: StubModuleOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export a restorer to ONNX, check it, and prove ONNX Runtime matches torch."""
    from udc_edge.core.errors import ModelError, UsageError
    from udc_edge.core.fileio import write_json_atomic
    from udc_edge.engines.manifest import manifest_path
    from udc_edge.export.byo import ExtraInput, load_byo
    from udc_edge.export.onnx_export import ExportSpec, export_onnx

    if model is None and purifier is None:
        raise UsageError("give the MODEL to export, or --purifier P_k")
    if purifier is not None and (output_index is not None or extra_input):
        raise UsageError("--output-index/--extra-input do not apply to purifier graphs")
    model = model or ""
    check_out(out, model, weights, purifier, overwrite=overwrite, kind="file")
    byo_arch = arch if arch and ":" in arch else (model if ":" in model and not arch else None)
    spec = ExportSpec(height=height, width=width, dynamic=dynamic, opset=opset, exporter=exporter,
                      max_abs_err=tolerance, output_index=output_index, cpu_patch=byo_arch is not None,
                      extra_inputs=tuple(ExtraInput.parse(t) for t in extra_input or ()))
    load = None
    if byo_arch:
        if weights is None:
            raise ModelError(f"{byo_arch} given without --weights",
                             "give the weights file to load into it (udc-edge doctor checks a model without)")
        net, load = load_byo(byo_arch, json_opt(arch_kwargs, "--arch-kwargs"), str(weights), tuple(stub_module or ()))
        desc = {"arch": byo_arch}
    elif model or arch:
        if stub_module:
            raise UsageError("--stub-module applies to package.module:Class models only")
        net, desc = load_model_opts(model, arch, arch_kwargs, weights)
    else:
        net, desc = None, {"name": purifier}
    if purifier is not None:
        from dataclasses import replace

        from udc_edge.diffusion.pipeline import purifier_module
        from udc_edge.export.onnxrt import NOISE_INPUT

        net = purifier_module(purifier, net)
        spec = replace(spec, input_names=("input", NOISE_INPUT))
        desc = {"name": f"{purifier}+{desc.get('name') or desc.get('path') or desc.get('arch')}" if model else purifier}
    meta = {"udc_edge.model": str(desc.get("name") or desc.get("path") or desc.get("arch"))}
    report = export_onnx(net, out, spec, metadata=meta)
    # an engine manifest left from a file this export replaced describes another graph
    manifest_path(out).unlink(missing_ok=True)
    doc = report.to_dict() | ({"load": load.to_dict()} if load else {})
    write_json_atomic(out.with_name(out.name + ".export.json"), doc)
    stdout.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
    for c in (load.cuda_calls if load else []) + report.cuda_calls:
        stdout.print(f"warning: hard-coded .cuda() patched out at {c['where']}: {c['code']}", markup=False,
                     highlight=False, soft_wrap=True)


def build_cmd(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="Engine file (.onnx for ort, .xml (+ .bin) for openvino, "
                                                          ".engine for trt; --backend auto: the winner's suffix).")],
    onnx_path: Annotated[Path | None, typer.Argument(help="ONNX model from udc-edge export.")] = None,
    bundle: Annotated[Path | None, typer.Option(help="Build from a bundle (udc-edge bundle) instead of an ONNX.")] = None,
    backend: Annotated[str, typer.Option(help="ort (ONNX Runtime, CPU), openvino (CPU), trt (TensorRT, NVIDIA GPU; "
                                              f"{TRT_STATUS}), or auto (ort and openvino candidates, measured "
                                              "here).")] = "ort",
    precision: Annotated[str, typer.Option(help="fp32, fp16 (trt), bf16 (openvino), int8, or auto (fastest "
                                                "candidate meeting --min-fidelity, measured here).")] = "fp32",
    calib: Annotated[str | None, typer.Option(help="Calibration images: a folder (lq/ of a paired set) or synth:poled.")] = None,
    calib_count: Annotated[int, typer.Option(help="Calibration images to use.")] = 16,
    calib_size: Annotated[int | None, typer.Option(help="Calibration crop size (px) [default: the engine's run size "
                                                        "when known (fixed-shape graph, --opt-shape), else 128].")] = None,
    calib_method: Annotated[str, typer.Option(help="percentile (99.999 %), minmax or entropy (KL, 2048 bins).")] = "percentile",
    calib_cache: Annotated[Path | None, typer.Option(help="Calibration cache JSON (default: beside the engine).")] = None,
    target: Annotated[str | None, typer.Option(help="Q/DQ flavour: cpu (u8/s8) or tensorrt (symmetric s8).")] = None,
    exclude: Annotated[str, typer.Option(help="'auto' (by measured sensitivity), 'auto:robust' (by clean and "
                                              "attacked fidelity) or NODE,NODE kept in float.")] = "",
    calib_adversarial: Annotated[str | None, typer.Option(help="ATTACK:EPS[:STEPS], e.g. pgd:8/255: add copies of "
                                                               "the calibration images attacked on the FP32 model.")] = None,
    min_fidelity: Annotated[float, typer.Option(help="Target PSNR (dB) of INT8 output vs FP32.")] = 40.0,
    min_shape: Annotated[str | None, typer.Option(help="Shape profile min, e.g. 1x3x64x64.")] = None,
    opt_shape: Annotated[str | None, typer.Option(help="Shape profile opt.")] = None,
    max_shape: Annotated[str | None, typer.Option(help="Shape profile max.")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads for calibration and measurements (0: default).")] = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Build an engine (and its manifest ENGINE.json) from an ONNX file."""
    from udc_edge.core.errors import UsageError
    from udc_edge.core.progress import progress_bar
    from udc_edge.engines.build import build_engine
    from udc_edge.engines.spec import BuildSpec, ShapeProfile

    shapes = [min_shape, opt_shape, max_shape]
    if any(shapes) and not all(shapes):
        raise UsageError("give all of --min-shape, --opt-shape and --max-shape, or none")
    profile = ShapeProfile.from_strings(*shapes) if all(shapes) else None
    if exclude.startswith("auto") and exclude not in ("auto", "auto:robust"):
        raise UsageError(f"--exclude {exclude!r}: automatic exclusion is 'auto' or 'auto:robust'")
    names = tuple(n for n in exclude.split(",") if n and not n.startswith("auto"))
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
        spec = BuildSpec(backend=backend, precision=precision, calib=calib, calib_count=calib_count, calib_size=calib_size,
                         calib_method=calib_method, calib_cache=str(calib_cache) if calib_cache else None,
                         target=target, exclude=names, auto_exclude=exclude.startswith("auto"),
                         robust_exclude=exclude == "auto:robust", calib_adversarial=calib_adversarial,
                         min_fidelity=min_fidelity,
                         profile=profile, threads=threads, prequantised=prequantised)
        if backend == "trt":
            err.print(f"note: {TRT_STATUS}")
        with progress_bar(f"building {backend} {precision}", None, quiet(ctx)) as adv:
            report = build_engine(onnx_path, out, spec, progress=adv, overwrite=overwrite,
                                  inputs=(bundle,) if bundle is not None else ())
    stdout.print(report.summary(), markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
    app.command("build")(build_cmd)
