"""``udc-edge doctor``: what will and will not work for a restorer, before a user spends time.

One report: loading on the CPU, the forward's structure, the ONNX each exporter produces
(or its error), dynamic H/W, slow or unsupported operators with counts and layer names,
ONNX Runtime parity and speed against eager torch, INT8 friendliness per quantisable op
type, and TensorRT parser support per op type (static table, no TensorRT needed).
``blockers`` empty means the model can go the whole way (export -> build fp32/int8 -> run).
The checks are in :mod:`udc_edge.doctor.checks`.
"""

from __future__ import annotations

from dataclasses import asdict

from udc_edge.core.progress import Advance, noop
from udc_edge.doctor import checks
from udc_edge.doctor.report import DoctorReport, DoctorSpec

STEPS = 5


def diagnose(model: str, arch: str | None = None, arch_kwargs: dict | None = None, weights: str | None = None,
             stub_modules: tuple[str, ...] = (), spec: DoctorSpec = DoctorSpec(),  # noqa: B008 (frozen)
             progress: Advance = noop) -> DoctorReport:
    """Run every check on ``model`` (shipped name, checkpoint, ``package.module:Class``, or
    ``-`` with ``arch``) and return the report; never raises for what the model does wrong."""
    report = DoctorReport(model=arch or model, spec={k: v for k, v in asdict(spec).items() if k != "extra_inputs"})
    progress(0, status="loading")
    net = checks.load(report, model, arch, arch_kwargs, weights, stub_modules)
    net = checks.structure(report, net, spec) if net is not None else None
    progress(1, status="exporting (TorchScript, dynamo)")
    graph = checks.export_all(report, net, spec) if net is not None else None
    if graph is not None:
        progress(1, status="ONNX Runtime vs eager")
        checks.ops_and_speed(report, net, graph, spec)
        progress(1, status="INT8 sensitivity")
        checks.int8(report, graph, spec)
        progress(1, status="TensorRT support")
        checks.tensorrt(report, graph, spec)
    checks.export_command(report, model, arch, arch_kwargs, weights, stub_modules, spec)
    progress(1, status="done")
    return report
