"""The public Python API: the toolkit's main job in eight calls.

Load a restorer, restore an image, attack it, export it to ONNX, build an engine, load the
engine, benchmark, verify robustness parity. Each call is a thin, typed front for the
package that does the work (named in its docstring); the CLI commands call the same code.
Images are float32 in [0, 1]: ``restore`` takes HxWx3, ``attack`` and engines take NCHW.
See docs/api.md for a runnable example.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from torch import nn

from udc_edge.attacks import AttackResult, AttackSpec, parse_eps
from udc_edge.attacks import attack as _run_attack
from udc_edge.core.backends import Backend
from udc_edge.deploy.bench import BenchReport, BenchSpec, run_bench
from udc_edge.deploy.reference import VerifySpec
from udc_edge.deploy.verify import VerifyReport, run_verify
from udc_edge.engines import Engine
from udc_edge.engines import load_engine as _load_engine
from udc_edge.engines.build import BuildReport, build_engine
from udc_edge.engines.spec import BuildSpec, Precision
from udc_edge.evaluation.restore import restore_array
from udc_edge.export.onnx_export import ExportReport, ExportSpec, export_onnx
from udc_edge.models.zoo import load_model as _load_model

__all__ = ["attack", "bench", "build", "export", "load_engine", "load_model", "restore", "verify"]

PathLike = str | os.PathLike


def load_model(model: str, arch: str | None = None, arch_kwargs: dict | None = None,
               weights: str | None = None) -> nn.Module:
    """A restorer in eval mode: a shipped name (``unet-s-poled``), a checkpoint folder or
    run folder, a ``.safetensors`` file, or ``arch`` (preset, architecture or
    ``package.module:Class``, imported because you named it) with ``weights``
    (:func:`udc_edge.models.zoo.load_model`, which also returns a description)."""
    return _load_model(model, arch, arch_kwargs, weights)[0]


def restore(model: nn.Module | Engine | str, image: np.ndarray, tile: int = 0, overlap: int = 32) -> np.ndarray:
    """Restore one HxWx3 float32 image in [0, 1] with a torch model, an engine or a model
    name; the output has the input's size (padding to the network's multiple is handled).
    ``tile`` > 0 runs it tile by tile (``overlap`` pixels shared)."""
    if isinstance(model, str):
        model = load_model(model)
    return restore_array(model, image, tile, overlap)


def attack(target: Any, x: np.ndarray, y: np.ndarray | None = None, name: str = "pgd",
           eps: float | str | None = "8/255", **options: Any) -> AttackResult:
    """Attack ``target`` (a torch model; or an engine for the black-box ``simba``/``square``)
    on an NCHW batch ``x`` with ground truth ``y``; ``eps`` as a float or ``"8/255"``.
    ``options`` are :class:`udc_edge.attacks.AttackSpec` fields (``steps``, ``seed``, ...)."""
    budget = parse_eps(eps) if isinstance(eps, str) else eps
    return _run_attack(target, x, y, AttackSpec(name, eps=budget, **options))


def export(model: nn.Module | str, out: PathLike, **options: Any) -> ExportReport:
    """Export a restorer (or a model name) to ONNX at ``out``, checked and proven equal to
    torch in ONNX Runtime; ``options`` are :class:`udc_edge.export.onnx_export.ExportSpec`
    fields (``height``, ``width``, ``dynamic``, ``opset``, ``exporter``, ...)."""
    net = load_model(model) if isinstance(model, str) else model
    return export_onnx(net, out, ExportSpec(**options))


def build(onnx_path: PathLike, out: PathLike, backend: Backend | str = Backend.ORT, precision: str = "fp32",
          overwrite: bool = False, **options: Any) -> BuildReport:
    """Build an engine (and its manifest ``out.json``) from an exported ONNX file; INT8
    needs ``calib`` (a folder of degraded images or ``"synth:poled"``). An existing ``out``
    is replaced only with ``overwrite``. ``options`` are :class:`udc_edge.engines.spec.BuildSpec` fields."""
    spec = BuildSpec(backend=Backend.parse(backend), precision=Precision(precision), **options)
    return build_engine(onnx_path, out, spec, overwrite=overwrite)


def load_engine(path: PathLike, threads: int = 0) -> Engine:
    """An engine built by :func:`build`; its manifest is checked first and picks the backend.
    Use it as a context manager, or call it on a float32 NCHW array."""
    return _load_engine(path, threads=threads)


def bench(targets: list[str], **options: Any) -> BenchReport:
    """Latency of engines or torch models (names or paths) on the same input, interleaved;
    ``options`` are :class:`udc_edge.deploy.bench.BenchSpec` fields (``shape``, ``iters``, ...)."""
    return run_bench(targets, BenchSpec(**options))


def verify(engine: PathLike, report_dir: PathLike, reference: str | None = None,
           data: PathLike | None = None, bundle: PathLike | None = None, overwrite: bool = False,
           **options: Any) -> VerifyReport:
    """Robustness parity of a deployed engine against its torch ``reference`` on a paired
    ``data`` folder (or against a ``bundle``'s stored reference set); writes ``report_dir``.
    ``options`` are :class:`udc_edge.deploy.reference.VerifySpec` fields."""
    return run_verify(engine, report_dir, VerifySpec(**options), reference=reference, data=data,
                      bundle=bundle, quiet=True, overwrite=overwrite)
