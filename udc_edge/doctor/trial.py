"""Doctor's proposal and its trial: the ``udc-edge`` command lines that take a restorer the
whole way (export with parity -> the recommended build -> restore at two sizes that are not
multiples of each other), and running exactly those lines in a scratch folder.

The lines use names relative to the folder they run in (``model.onnx``, ``engine.onnx``,
``probe-72x88.png``); the trial writes the probe images (synthetic UDC captures) and, when
no ``--weights`` were given, the random initialisation doctor used as ``WEIGHTS.safetensors``,
then runs each line with this interpreter (``python -m udc_edge``, the same import path as
doctor's own) and stops at the first failure. Doctor's verdict is what they did.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from udc_edge.doctor.report import DoctorReport, DoctorSpec

PROBE_SIZES = ((72, 88), (100, 60))  # not multiples of each other, nor of 16
WEIGHTS_PLACEHOLDER = "WEIGHTS.safetensors"


def probe_sizes(report: DoctorReport, spec: DoctorSpec) -> list[tuple[int, int]]:
    """Two restore sizes: fixed-shape engines run tiled, so theirs are at least the shape."""
    if report.chosen.get("dynamic", True):
        return list(PROBE_SIZES)
    return [(spec.height + 8, spec.width + 24), (spec.height + 36, spec.width + 4)]


def propose(report: DoctorReport, model: str, arch: str | None, arch_kwargs: dict | None, weights: str | None,
            stub_modules: tuple[str, ...], spec: DoctorSpec) -> None:
    """Fill ``report.commands``: export, build, restore, with every flag the diagnosis needs."""
    from dataclasses import replace

    if not report.chosen:
        return
    q = shlex.quote
    arch = arch or (model if ":" in model else None)
    parts = ["udc-edge export", q(arch if arch and ":" in arch else ("-" if arch else model))]
    if arch and ":" not in arch:
        parts.append(f"--arch {q(arch)}")
    if arch:
        parts.append(f"--weights {q(str(Path(weights).resolve())) if weights else WEIGHTS_PLACEHOLDER}")
        if arch_kwargs:
            import json

            parts.append(f"--arch-kwargs {q(json.dumps(arch_kwargs))}")
    if report.structure.get("output_index") is not None:
        parts.append(f"--output-index {report.structure['output_index']}")
    for e in spec.extra_inputs:
        parts.append(replace(e, file=str(Path(e.file).resolve()) if e.file else None).text())
    parts += [f"--stub-module {q(s)}" for s in stub_modules]
    m = report.structure.get("multiple", 1)
    if m > report.structure.get("declared_multiple", 1):
        parts.append(f"--multiple {m}")
    if report.chosen["exporter"] == "dynamo":
        parts.append("--exporter dynamo")
    if not report.chosen["dynamic"]:
        parts.append("--fixed-shape")
    parts += [f"--height {spec.height}", f"--width {spec.width}"]
    if spec.opset != 17:
        parts.append(f"--opset {spec.opset}")
    export = " ".join(parts + ["--out model.onnx"])
    feeds = "".join(f" --input {e.name}={q(str(Path(e.file).resolve())) if e.file else f'{e.value:g}'}"
                    for e in spec.extra_inputs if not e.frozen)  # one display's value, given explicitly
    build = f"udc-edge build model.onnx --out engine.onnx --precision auto --calib synth:poled --calib-count 8{feeds}"
    sizes = probe_sizes(report, spec)
    restore = ("udc-edge restore engine.onnx " + " ".join(f"probe-{h}x{w}.png" for h, w in sizes)
               + f" --out restored{feeds}")
    if not report.chosen["dynamic"]:
        restore += f" --tile {min(spec.height, spec.width)} --overlap 8"
    report.export_command = export
    report.commands = [export, build, restore]


def _env() -> dict[str, str]:
    """This process's environment with its import path (so the user's module imports the
    same way) and its torch thread count."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(Path(p or ".").resolve()) for p in sys.path)
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    env.pop("UDC_EDGE_DEBUG", None)
    return env


def _write_inputs(folder: Path, report: DoctorReport, net: nn.Module | None, sizes: list[tuple[int, int]]) -> None:
    from udc_edge.data.images import write_png
    from udc_edge.export.onnx_export import example_inputs

    for h, w in sizes:
        x = example_inputs(("input",), 1, h, w, seed=5)[0]
        write_png(folder / f"probe-{h}x{w}.png", x[0].transpose(1, 2, 0), bit_depth=8)
    if net is not None and any(WEIGHTS_PLACEHOLDER in c for c in report.commands):
        from safetensors.torch import save_file

        save_file({k: v.detach().clone().contiguous() for k, v in net.state_dict().items()},
                  str(folder / WEIGHTS_PLACEHOLDER))


def _check_restored(folder: Path, sizes: list[tuple[int, int]]) -> str:
    """'' when each probe was restored at its own size, else what is wrong."""
    from udc_edge.data.images import read_image

    for h, w in sizes:
        out = folder / "restored" / f"probe-{h}x{w}.png"
        if not out.is_file():
            return f"restore wrote no {out.name}"
        img, _ = read_image(out)
        if img.shape[:2] != (h, w):
            return f"restored {out.name} is {img.shape[0]}x{img.shape[1]}, not {h}x{w}"
        if not np.isfinite(img).all():
            return f"restored {out.name} has NaN/Inf"
    return ""


def run_trial(report: DoctorReport, net: nn.Module | None, spec: DoctorSpec, timeout: float = 900) -> None:
    """Run ``report.commands`` in a scratch folder (removed afterwards, or renamed to
    ``spec.keep``); each step's exit code, time and last output line go to ``report.trial``;
    a failure becomes a blocker."""
    from udc_edge.core.fileio import atomic_dir, work_dir

    scratch = atomic_dir(spec.keep) if spec.keep else work_dir("doctor-trial")
    with scratch as tmp:
        _run_lines(report, Path(tmp), net, spec, timeout)


def _run_lines(report: DoctorReport, folder: Path, net: nn.Module | None, spec: DoctorSpec, timeout: float) -> None:
    sizes = probe_sizes(report, spec)
    _write_inputs(folder, report, net, sizes)
    for line in report.commands:
        args = shlex.split(line)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "udc_edge", *args[1:]], cwd=folder, env=_env(),
                                  capture_output=True, text=True, timeout=timeout, check=False)
            code, text = proc.returncode, (proc.stdout + proc.stderr).strip()
        except subprocess.TimeoutExpired:
            code, text = 124, f"timed out after {timeout:.0f} s"
        tail = [ln for ln in text.splitlines() if ln.strip()][-1:] or [""]
        step = {"command": line, "exit_code": code, "seconds": round(time.perf_counter() - t0, 1),
                "last_line": tail[0][:400]}
        if code == 0 and args[1] == "restore":
            step["check"] = _check_restored(folder, sizes)
        report.trial.append(step)
        if code != 0 or step.get("check"):
            why = step.get("check") or f"exited {code}: {step['last_line']}"
            report.blockers.append(f"doctor's trial of its proposal failed: `{line}` {why}")
            return
