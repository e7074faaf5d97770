"""torch -> ONNX export with checks: onnx.checker, shape inference, and parity against the
torch model on real (synthetic UDC) images, at two sizes when H/W are dynamic.

Exporter choice. The TorchScript exporter (``dynamo=False``) is the default for restorers:
plain conv nets export in about a second, into one self-contained file, with dynamic H/W
through ``dynamic_axes``. It is deprecated upstream, so ``dynamo`` is available and is the
fallback of ``auto``; it is slower (graph capture) and is told ``external_data=False`` so
the model stays one file. ``auto`` tries TorchScript, then dynamo, and records why the
first failed. The file is written only after every check passes (atomic rename).
"""

from __future__ import annotations

import io
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from udc_edge.errors import ExportError, UsageError
from udc_edge.fileio import atomic_path, sha256_file
from udc_edge.models.padding import model_multiple, padded_size

EXPORTERS = ("auto", "torchscript", "dynamo")


@dataclass(frozen=True)
class ExportSpec:
    """How to export: example size, dynamic H/W, opset, exporter and parity tolerance."""

    height: int = 256
    width: int = 256
    dynamic: bool = True
    opset: int = 17
    exporter: str = "auto"
    input_names: tuple[str, ...] = ("input",)
    max_abs_err: float = 1e-3
    parity_images: int = 2

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise UsageError(f"--exporter must be one of {', '.join(EXPORTERS)}, got {self.exporter!r}")
        if self.height < 8 or self.width < 8:
            raise UsageError(f"--height/--width must be >= 8, got {self.height}x{self.width}")
        if not 13 <= self.opset <= 21:
            raise UsageError(f"--opset must be in 13..21, got {self.opset}")


@dataclass
class ExportReport:
    path: str
    exporter: str
    opset: int
    dynamic: bool
    multiple: int
    inputs: list[str]
    sha256: str
    seconds: float
    parity: list[dict] = field(default_factory=list)  # per size: max_abs_err, psnr_db
    fallback_reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        worst = max(p["max_abs_err"] for p in self.parity)
        sizes = ", ".join(f"{p['height']}x{p['width']}" for p in self.parity)
        text = (f"exported {self.path} ({self.exporter}, opset {self.opset}, "
                f"{'dynamic' if self.dynamic else 'fixed'} H/W) in {self.seconds:.1f} s; ONNX Runtime vs torch "
                f"at {sizes}: max abs error {worst:.2e}, PSNR {min(p['psnr_db'] for p in self.parity):.1f} dB")
        if self.fallback_reason:
            text += f"\nTorchScript exporter failed ({self.fallback_reason}); used dynamo"
        return text


def example_inputs(names: tuple[str, ...], n: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    """Real inputs: synthetic P-OLED captures of held-out photos; ``noise`` inputs are N(0, 1)."""
    from udc_edge.data.sources import make_source
    from udc_edge.data.synth import UDCSimulator, image_rng

    sim = UDCSimulator.for_display("poled")
    sample, _ = make_source("photos:test")
    out = []
    for name in names:
        rng = image_rng(seed, len(out))
        if name == "noise":
            out.append(rng.standard_normal((n, 3, h, w)).astype(np.float32))
            continue
        imgs = []
        for i in range(n):
            r = image_rng(seed + 1, i)
            size = max(h, w, sim.min_size)
            lq, _ = sim.simulate(sample(size, r), r)
            imgs.append(lq[:h, :w].transpose(2, 0, 1))
        out.append(np.stack(imgs).astype(np.float32))
    return out


def _export_torchscript(model: nn.Module, args: tuple, f, spec: ExportSpec) -> None:
    axes = {n: {0: "batch", 2: "height", 3: "width"} for n in (*spec.input_names, "output")} if spec.dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, f, dynamo=False, opset_version=spec.opset, input_names=list(spec.input_names),
                          output_names=["output"], dynamic_axes=axes, do_constant_folding=True)


def _export_dynamo(model: nn.Module, args: tuple, path: Path, spec: ExportSpec) -> None:
    dyn = None
    if spec.dynamic:
        # An example batch of 1 would be specialised to a constant; trace with 2.
        args = tuple(a.repeat(2, 1, 1, 1) for a in args)
        auto = torch.export.Dim.AUTO
        dyn = {n: {0: auto, 2: auto, 3: auto} for n in _forward_arg_names(model, len(args))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model, args, dynamo=True, opset_version=max(spec.opset, 18), dynamic_shapes=dyn,
                                 input_names=list(spec.input_names), output_names=["output"], external_data=False)
        prog.save(str(path), external_data=False)


def _forward_arg_names(model: nn.Module, n: int) -> list[str]:
    import inspect

    params = [p for p in inspect.signature(model.forward).parameters.values() if p.name != "self"]
    return [p.name for p in params[:n]]


def _check(path: Path) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise ExportError(f"exported graph fails onnx.checker: {exc}") from exc


def parity(model: nn.Module, onnx_bytes: bytes, names: tuple[str, ...], sizes: list[tuple[int, int]],
           n: int, session_options: dict | None = None) -> list[dict]:
    """ONNX Runtime vs torch on real inputs at each size: max abs error and PSNR (dB)."""
    from udc_edge.engines.ort import make_session
    from udc_edge.evaluation.metrics import psnr

    sess = make_session(onnx_bytes, options=session_options)
    results = []
    for h, w in sizes:
        xs = example_inputs(names, n, h, w, seed=h * 10007 + w)
        with torch.inference_mode():
            ref = model(*[torch.from_numpy(x) for x in xs]).numpy()
        got = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], xs)))[0]
        if got.shape != ref.shape:
            raise ExportError(f"ONNX output shape {got.shape} differs from torch {ref.shape} at {h}x{w}")
        err = float(np.abs(got - ref).max())
        p = float(np.mean([psnr(np.clip(g, 0, 1), np.clip(r, 0, 1)) for g, r in zip(got, ref)]))
        results.append({"height": h, "width": w, "max_abs_err": err, "psnr_db": p})
    return results


def _macs_per_pixel(model: nn.Module, args: tuple) -> float:
    """Multiply-accumulates per pixel, counted by torch's FLOP counter on the example input
    (fully convolutional restorers scale with H x W, so this carries to any size)."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = args[0].shape[-2:]
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(*args)
    return fc.get_total_flops() / 2 / (h * w)


def export_onnx(model: nn.Module, out: str | os.PathLike, spec: ExportSpec = ExportSpec(),
                metadata: dict[str, str] | None = None) -> ExportReport:
    """Export ``model`` to ``out`` (ONNX), check it, prove parity, then write it atomically."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise UsageError(f"--out {out} must end in .onnx")
    model = model.eval()
    m = model_multiple(model)
    h, w = padded_size(spec.height, m), padded_size(spec.width, m)
    args = tuple(torch.from_numpy(x) for x in example_inputs(spec.input_names, 1, h, w, seed=0))
    t0 = time.perf_counter()
    used, reason = spec.exporter, ""
    with atomic_path(out) as tmp:
        if spec.exporter in ("auto", "torchscript"):
            try:
                buf = io.BytesIO()
                _export_torchscript(model, args, buf, spec)
                tmp.write_bytes(buf.getvalue())
                used = "torchscript"
            except Exception as exc:  # the exporter raises many types
                if spec.exporter == "torchscript":
                    raise ExportError(f"TorchScript export failed: {str(exc).splitlines()[0][:300]}",
                                      "try --exporter dynamo") from exc
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if used != "torchscript":
            try:
                _export_dynamo(model, args, tmp, spec)
                used = "dynamo"
            except Exception as exc:
                raise ExportError(f"dynamo export failed: {str(exc).splitlines()[0][:300]}"
                                  + (f"; TorchScript also failed: {reason}" if reason else ""),
                                  "check the model traces with fixed shapes, or try --static") from exc
        _check(tmp)
        proto = onnx.load(str(tmp))
        meta = {"udc_edge.multiple": str(m), "udc_edge.exporter": used,
                "udc_edge.macs_per_pixel": f"{_macs_per_pixel(model, args):.3f}", **(metadata or {})}
        for k, v in meta.items():
            proto.metadata_props.add(key=k, value=v)
        proto = onnx.shape_inference.infer_shapes(proto)
        data = proto.SerializeToString()
        sizes = [(h, w)] + ([(h + 2 * m, w + 4 * m)] if spec.dynamic else [])
        par = parity(model, data, spec.input_names, sizes, spec.parity_images)
        worst = max(p["max_abs_err"] for p in par)
        if worst > spec.max_abs_err:
            raise ExportError(f"ONNX Runtime output differs from torch by {worst:.2e} (> {spec.max_abs_err:.0e})",
                              "the graph does not reproduce the model; try the other --exporter")
        tmp.write_bytes(data)
    return ExportReport(path=str(out), exporter=used, opset=spec.opset if used == "torchscript" else max(spec.opset, 18),
                        dynamic=spec.dynamic, multiple=m, inputs=list(spec.input_names), sha256=sha256_file(out),
                        seconds=time.perf_counter() - t0, parity=par, fallback_reason=reason)
