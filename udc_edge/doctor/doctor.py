"""``udc-edge doctor``: what will and will not work for a restorer, before a user spends time.

One report: loading on the CPU, the forward's structure and the input size multiple it
needs (found by running it), the ONNX each exporter produces (or its error), dynamic H/W,
slow or unsupported operators with counts and layer names, ONNX Runtime parity and speed
against eager torch, INT8 friendliness per quantisable op type, the fastest faithful CPU
engine, and TensorRT parser support per op type (static table, no TensorRT needed). Then
doctor proposes the ``udc-edge`` commands (export, build, restore at two sizes) and runs
exactly those in a scratch folder: ``blockers`` empty means they all worked. The checks are
in :mod:`udc_edge.doctor.checks`, the proposal and trial in :mod:`udc_edge.doctor.trial`.
"""

from __future__ import annotations

from dataclasses import asdict

from udc_edge.core.progress import Advance, noop
from udc_edge.doctor import checks, trial
from udc_edge.doctor.report import DoctorReport, DoctorSpec

STEPS = 6


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
    if graph is not None and net is not None:
        progress(1, status="ONNX Runtime vs eager")
        checks.ops_and_speed(report, net, graph, spec)
        progress(1, status="INT8 sensitivity")
        checks.int8(report, graph, spec)
        progress(1, status="TensorRT support")
        checks.tensorrt(report, graph, spec)
    trial.propose(report, model, arch, arch_kwargs, weights, stub_modules, spec)
    if report.commands and not report.blockers and spec.trial:
        progress(1, status="running the proposed commands")
        trial.run_trial(report, net, spec)
    progress(1, status="done")
    return report
