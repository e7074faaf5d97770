"""What ``udc-edge export`` exports, resolved in the library so the CLI stays a thin call.

A model is named as the CLI names it: a shipped name, a checkpoint folder or ``.safetensors``,
a bring-your-own ``package.module:Class`` (MODEL or ``--arch``; needs weights), or ``--arch``
with ``-``; optionally behind a distilled purifier (one graph with inputs ``(input, noise)``),
or the purifier alone. Every export writes ``OUT.export.json`` beside the ONNX file: the
export report plus, for a bring-your-own model, what loading it met.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from torch import nn

from udc_edge.core.errors import ModelError, UsageError
from udc_edge.core.fileio import check_output, write_json_atomic
from udc_edge.export.byo import LoadReport, load_byo
from udc_edge.export.onnx_export import ExportReport, ExportSpec, export_onnx


@dataclass(frozen=True)
class ExportSource:
    """MODEL, ``--purifier``, ``--arch``, ``--arch-kwargs``, ``--weights``, ``--stub-module``."""

    model: str = ""
    purifier: str | None = None
    arch: str | None = None
    arch_kwargs: dict = field(default_factory=dict)
    weights: str | None = None
    stub_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.model and self.purifier is None:
            raise UsageError("give the MODEL to export, or --purifier P_k")

    @property
    def byo_arch(self) -> str | None:
        """The user's ``package.module:Class`` (from --arch, else from MODEL), or None."""
        if self.arch and ":" in self.arch:
            return self.arch
        return self.model if ":" in self.model and not self.arch else None


@dataclass
class ExportResult:
    """The export report and, for a bring-your-own model, its load report."""

    report: ExportReport
    load: LoadReport | None = None

    def to_dict(self) -> dict:
        """The ``OUT.export.json`` sidecar."""
        return self.report.to_dict() | ({"load": self.load.to_dict()} if self.load else {})

    def cuda_warnings(self) -> list[str]:
        """One line per hard-coded ``.cuda()`` that was patched out (at load or in forward)."""
        calls = (self.load.cuda_calls if self.load else []) + self.report.cuda_calls
        return [f"warning: hard-coded .cuda() patched out at {c['where']}: {c['code']}" for c in calls]


def sidecar_path(out: str | os.PathLike) -> Path:
    """Where the export report of ``out`` is written: ``OUT.export.json``."""
    out = Path(out)
    return out.with_name(out.name + ".export.json")


def _load(src: ExportSource) -> tuple[nn.Module | None, dict, LoadReport | None]:
    """The restorer to export (None for a purifier alone), its description and load report."""
    from udc_edge.models.zoo import load_model

    byo = src.byo_arch
    if byo:
        if src.weights is None:
            raise ModelError(f"{byo} given without --weights",
                             "give the weights file to load into it (udc-edge doctor checks a model without)")
        net, load = load_byo(byo, src.arch_kwargs, src.weights, src.stub_modules)
        return net, {"arch": byo}, load
    if src.model or src.arch:
        if src.stub_modules:
            raise UsageError("--stub-module applies to package.module:Class models only")
        net, desc = load_model(src.model, arch=src.arch, arch_kwargs=src.arch_kwargs, weights=src.weights)
        return net, desc, None
    return None, {"name": src.purifier}, None


def _label(desc: dict) -> str | None:
    return desc.get("name") or desc.get("path") or desc.get("arch")


def export_source(src: ExportSource, out: str | os.PathLike, spec: ExportSpec | None = None,
                  overwrite: bool = False) -> ExportResult:
    """Load ``src``, wrap it behind its purifier if one is given, export it to ``out`` (checked
    and proven equal to torch), and write the ``OUT.export.json`` sidecar. An existing ``out``
    is replaced only with ``overwrite``, and never when it is one of the inputs."""
    spec = replace(spec or ExportSpec(), cpu_patch=src.byo_arch is not None)
    if src.purifier is not None and (spec.output_index is not None or spec.extra_inputs):
        raise UsageError("--output-index/--extra-input do not apply to purifier graphs")
    check_output(out, (src.model, src.weights, src.purifier), overwrite, kind="file")
    net, desc, load = _load(src)
    if src.purifier is not None:
        from udc_edge.diffusion.pipeline import purifier_module
        from udc_edge.export.onnxrt import NOISE_INPUT

        net = purifier_module(src.purifier, net)
        spec = replace(spec, input_names=("input", NOISE_INPUT))
        desc = {"name": f"{src.purifier}+{_label(desc)}" if src.model else src.purifier}
    elif net is None:
        raise UsageError("give the MODEL to export, or --purifier P_k")
    report = export_onnx(net, out, spec, metadata={"udc_edge.model": str(_label(desc))})
    result = ExportResult(report, load)
    write_json_atomic(sidecar_path(out), result.to_dict())
    return result
