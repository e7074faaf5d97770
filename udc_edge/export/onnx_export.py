"""torch -> ONNX export with checks: onnx.checker, shape inference, and parity against the
torch model on real (synthetic UDC) images, at two sizes when H/W are dynamic.

Exporter choice. The TorchScript exporter (``dynamo=False``) is the default for restorers:
plain conv nets export in about a second, into one self-contained file, with dynamic H/W
through ``dynamic_axes``. It is deprecated upstream, so ``dynamo`` is available and is the
fallback of ``auto``; it is slower (graph capture) and is told ``external_data=False`` so
the model stays one file. ``auto`` tries TorchScript, then dynamo (when TorchScript fails to
export *or* its graph fails the checks), and the report says why each attempt failed.

Bring-your-own models (``udc_edge.export.byo``): ``output_index`` picks the image from a
tuple output, ``extra_inputs`` freezes named extra ``forward`` arguments (a PSF code) into
the graph, ``cpu_patch`` runs ``forward`` with hard-coded ``.cuda()`` patched out.

Parity runs ONNX Runtime with full optimisation first; when a kernel fails (e.g. the inverse
DFT's "Shape mismatch attempting to re-use buffer"), it retries with safer session options
(:data:`SAFER_SESSION_OPTIONS`) and records the ones that worked as JSON in the ONNX
``metadata_props`` key ``udc_edge.session_options``; ``build`` copies them into the engine
manifest so ``bench`` and ``verify`` reuse them. The file is written only after every check
passes (atomic rename).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from udc_edge.core.errors import ExportError, UsageError
from udc_edge.core.fileio import sha256_file, work_dir, write_bytes_atomic
from udc_edge.export.onnxrt import NOISE_INPUT, SESSION_OPTIONS_KEY, make_session
from udc_edge.models.padding import model_multiple, padded_size

EXPORTERS = ("auto", "torchscript", "dynamo")
# Tried in order until ONNX Runtime runs the graph: memory-pattern planning off, then buffer
# reuse off, then only basic graph optimisations.
SAFER_SESSION_OPTIONS: tuple[dict, ...] = (
    {},
    {"enable_mem_pattern": False},
    {"enable_mem_pattern": False, "enable_mem_reuse": False},
    {"enable_mem_pattern": False, "enable_mem_reuse": False, "graph_optimization_level": "ORT_ENABLE_BASIC"},
)


@dataclass(frozen=True)
class ExportSpec:
    """How to export: example size, dynamic H/W, opset, exporter, parity tolerance, and the
    bring-your-own wrappers (output selector, extra inputs, ``.cuda()`` patch)."""

    height: int = 256
    width: int = 256
    dynamic: bool = True
    opset: int = 17
    exporter: str = "auto"
    input_names: tuple[str, ...] = ("input",)
    max_abs_err: float = 1e-3
    parity_images: int = 2
    output_index: int | None = None
    extra_inputs: tuple = ()  # tuple[byo.ExtraInput, ...]
    cpu_patch: bool = False

    def __post_init__(self) -> None:
        if self.exporter not in EXPORTERS:
            raise UsageError(f"--exporter must be one of {', '.join(EXPORTERS)}, got {self.exporter!r}")
        if self.height < 8 or self.width < 8:
            raise UsageError(f"--height/--width must be >= 8, got {self.height}x{self.width}")
        if not 13 <= self.opset <= 21:
            raise UsageError(f"--opset must be in 13..21, got {self.opset}")
        object.__setattr__(self, "extra_inputs", tuple(self.extra_inputs))


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
    attempts: list[dict] = field(default_factory=list)  # per exporter tried: exporter, ok, reason, seconds
    session_options: dict = field(default_factory=dict)  # ORT overrides parity needed (recorded in the ONNX)
    output_index: int | None = None
    extra_inputs: list[dict] = field(default_factory=list)
    cuda_calls: list[dict] = field(default_factory=list)  # hard-coded .cuda() patched out in forward

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        worst = max(p["max_abs_err"] for p in self.parity)
        sizes = ", ".join(f"{p['height']}x{p['width']}" for p in self.parity)
        text = (f"exported {self.path} ({self.exporter}, opset {self.opset}, "
                f"{'dynamic' if self.dynamic else 'fixed'} H/W) in {self.seconds:.1f} s; ONNX Runtime vs torch "
                f"at {sizes}: max abs error {worst:.2e}, PSNR {min(p['psnr_db'] for p in self.parity):.1f} dB")
        for a in self.attempts:
            if not a["ok"]:
                text += f"\n{a['exporter']} exporter failed ({a['reason']}); used {self.exporter}"
        if self.session_options:
            text += (f"\nONNX Runtime needed session options {json.dumps(self.session_options)} "
                     "(recorded in the ONNX; build copies them into the manifest)")
        if self.output_index is not None:
            text += f"\noutput: element {self.output_index} of forward's tuple"
        for e in self.extra_inputs:
            text += f"\nextra input {e['name']} {tuple(e['shape'])} frozen as a constant ({e['source']})"
        return text


class ParityError(ExportError):
    """ONNX Runtime failed or disagreed with torch; ``size_index`` says at which parity size
    (1 or more: the graph worked at the export size only, i.e. H/W are not really dynamic)."""

    def __init__(self, message: str, hint: str | None = None, size_index: int = 0, runtime: bool = False):
        super().__init__(message, hint)
        self.size_index = size_index
        self.runtime = runtime


def example_inputs(names: tuple[str, ...], n: int, h: int, w: int, seed: int) -> list[np.ndarray]:
    """Real inputs: synthetic P-OLED captures of held-out photos; ``noise`` inputs are N(0, 1)."""
    from udc_edge.data.synth import image_rng, synth_pairs

    out = []
    for name in names:
        rng = image_rng(seed, len(out))
        if name == NOISE_INPUT:
            out.append(rng.standard_normal((n, 3, h, w)).astype(np.float32))
            continue
        pairs = synth_pairs("poled", "photos:test", n, max(h, w), seed + 1)
        out.append(np.stack([lq[:h, :w].transpose(2, 0, 1) for lq, _ in pairs]).astype(np.float32))
    return out


@contextlib.contextmanager
def _quiet_fds():
    """Silence stdout/stderr at the file-descriptor level: the TorchScript exporter's C++
    logger dumps the whole IR graph to them when an operator is unsupported."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _export_torchscript(model: nn.Module, args: tuple, f, spec: ExportSpec) -> None:
    axes = {n: {0: "batch", 2: "height", 3: "width"} for n in (*spec.input_names, "output")} if spec.dynamic else None
    with warnings.catch_warnings(), _quiet_fds():
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
    with warnings.catch_warnings(), _quiet_fds():  # the graph optimiser prints to stdout
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model, args, dynamo=True, opset_version=max(spec.opset, 18), dynamic_shapes=dyn,
                                 input_names=list(spec.input_names), output_names=["output"], external_data=False,
                                 verbose=False)
        prog.save(str(path), external_data=False)


def _forward_arg_names(model: nn.Module, n: int) -> list[str]:
    import inspect

    params = [p for p in inspect.signature(model.forward).parameters.values() if p.name != "self"]
    return [p.name for p in params[:n]]


def _check(model: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(f"exported graph fails onnx.checker: {exc}") from exc


def short_error(exc: BaseException, limit: int = 240) -> str:
    """One line: the exception type and the first line of its message (for ONNX Runtime
    kernel failures: the node and the kernel's own message)."""
    import re

    text = str(exc).strip()
    m = re.search(r"running (\w+) node\. Name:'([^']*)' Status Message: (.*)", text, re.DOTALL)
    if m:
        detail = m.group(3).rsplit(" : FAIL : ", 1)[-1].strip()
        detail = re.sub(r"^\S+\.(?:cc|h):\d+ \S+ ", "", detail)
        return f"{m.group(1)} node {m.group(2)!r}: {detail.splitlines()[0][:limit]}"
    first = (text.splitlines() or [""])[0].split(" Please feel free to request support")[0]
    return f"{type(exc).__name__}: {first[:limit]}"


def export_graph(model: nn.Module, args: tuple, spec: ExportSpec, exporter: str) -> onnx.ModelProto:
    """Export with one named exporter and run onnx.checker (no parity, nothing written)."""
    if exporter == "torchscript":
        buf = io.BytesIO()
        _export_torchscript(model, args, buf, spec)
        proto = onnx.load_from_string(buf.getvalue())
    elif exporter == "dynamo":
        with work_dir("export") as tmp:
            path = Path(tmp) / "model.onnx"
            _export_dynamo(model, args, path, spec)
            proto = onnx.load(str(path))
    else:
        raise UsageError(f"exporter must be torchscript or dynamo here, got {exporter!r}")
    _check(proto)
    return proto


def graph_opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def _cases(model: nn.Module, names: tuple[str, ...], sizes: list[tuple[int, int]], n: int) -> list[tuple]:
    """(h, w, inputs, torch output) per size: computed once, compared against each session."""
    cases = []
    for h, w in sizes:
        xs = example_inputs(names, n, h, w, seed=h * 10007 + w)
        with torch.inference_mode():
            cases.append((h, w, xs, model(*[torch.from_numpy(x) for x in xs]).numpy()))
    return cases


def _compare(cases: list[tuple], onnx_bytes: bytes, session_options: dict | None) -> list[dict]:
    from udc_edge.core.metrics import psnr

    # Kernel failures are reported by the ParityError; keep ORT's own log quiet while retrying.
    sess = make_session(onnx_bytes, options={**(session_options or {}), "log_severity_level": 4})
    names = [i.name for i in sess.get_inputs()]
    fixed_batch = isinstance(sess.get_inputs()[0].shape[0], int)  # a --fixed-shape graph takes batch 1
    results = []
    for k, (h, w, xs, ref) in enumerate(cases):
        try:
            if fixed_batch:
                got = np.concatenate([sess.run(None, dict(zip(names, [x[i : i + 1] for x in xs], strict=False)))[0]
                                      for i in range(len(xs[0]))])
            else:
                got = sess.run(None, dict(zip(names, xs, strict=False)))[0]
        except Exception as exc:  # ORT's own Fail/RuntimeException types
            raise ParityError(f"ONNX Runtime failed at {h}x{w}: {short_error(exc, 300)}", size_index=k,
                              runtime=True) from exc
        if got.shape != ref.shape:
            raise ParityError(f"ONNX output shape {got.shape} differs from torch {ref.shape} at {h}x{w}", size_index=k)
        err = float(np.abs(got - ref).max())
        p = float(np.mean([psnr(np.clip(g, 0, 1), np.clip(r, 0, 1)) for g, r in zip(got, ref, strict=True)]))
        results.append({"height": h, "width": w, "max_abs_err": err, "psnr_db": p})
    return results


def parity_with_retry(model: nn.Module, onnx_bytes: bytes, names: tuple[str, ...], sizes: list[tuple[int, int]],
                      n: int) -> tuple[list[dict], dict]:
    """ONNX Runtime vs torch on real inputs at each size (max abs error and PSNR, dB;
    :class:`ParityError` with the size's index when ONNX Runtime fails or a shape differs),
    retried with each of :data:`SAFER_SESSION_OPTIONS` while ONNX Runtime
    itself fails; returns (results, the session options that worked)."""
    cases = _cases(model, names, sizes, n)
    first: ParityError | None = None
    for opts in SAFER_SESSION_OPTIONS:
        try:
            return _compare(cases, onnx_bytes, opts), opts
        except ParityError as exc:
            first = first or exc
            if not exc.runtime:
                raise
    assert first is not None
    raise ParityError(first.message + " (with default and safer session options)", size_index=first.size_index,
                      runtime=True)


def _macs_per_pixel(model: nn.Module, args: tuple) -> float:
    """Multiply-accumulates per pixel, counted by torch's FLOP counter on the example input
    (fully convolutional restorers scale with H x W, so this carries to any size)."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = args[0].shape[-2:]
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(*args)
    return fc.get_total_flops() / 2 / (h * w)


def prepare(model: nn.Module, spec: ExportSpec) -> tuple[nn.Module, tuple, list[tuple[int, int]]]:
    """The network to export (bring-your-own wrappers applied), the example input, and the
    parity sizes (the export size, plus a second size when H/W are dynamic)."""
    from udc_edge.core.errors import ModelError
    from udc_edge.export.byo import select_output, user_frame, wrap

    net = wrap(model.eval(), spec.output_index, spec.extra_inputs, spec.cpu_patch).eval()
    m = model_multiple(net)
    h, w = padded_size(spec.height, m), padded_size(spec.width, m)
    args = tuple(torch.from_numpy(x) for x in example_inputs(spec.input_names, 1, h, w, seed=0))
    try:
        with torch.no_grad():
            select_output(net(*args), None)
    except UsageError:
        raise
    except Exception as exc:  # the user's forward can raise anything
        raise ModelError(f"{type(model).__name__}.forward fails on a 1x3x{h}x{w} input on this CPU: "
                         f"{short_error(exc)} ({user_frame(exc.__traceback__)})",
                         "make forward run on CPU tensors (no hard-coded devices), or fix --height/--width") from exc
    return net, args, [(h, w)] + ([(h + 2 * m, w + 4 * m)] if spec.dynamic else [])


def _attempt(net: nn.Module, args: tuple, sizes: list, spec: ExportSpec, exporter: str,
             meta: dict[str, str]) -> tuple[bytes, list[dict], dict, int]:
    proto = export_graph(net, args, spec, exporter)
    for k, v in {**meta, "udc_edge.exporter": exporter}.items():
        proto.metadata_props.add(key=k, value=v)
    proto = onnx.shape_inference.infer_shapes(proto)
    par, opts = parity_with_retry(net, proto.SerializeToString(), spec.input_names, sizes, spec.parity_images)
    if opts:
        proto.metadata_props.add(key=SESSION_OPTIONS_KEY, value=json.dumps(opts))
    worst = max(p["max_abs_err"] for p in par)
    if worst > spec.max_abs_err:
        raise ExportError(f"ONNX Runtime output differs from torch by {worst:.2e} (> {spec.max_abs_err:.0e})",
                          "the graph does not reproduce the model")
    return proto.SerializeToString(), par, opts, graph_opset(proto)


def _failure(attempts: list[dict], errors: list[BaseException], spec: ExportSpec) -> ExportError:
    text = "; ".join(f"{a['exporter']}: {a['reason']}" for a in attempts)
    if spec.dynamic and any(isinstance(e, ParityError) and e.size_index > 0 for e in errors):
        return ExportError(f"ONNX export with dynamic H/W failed ({text}): the graph runs at "
                           f"{spec.height}x{spec.width} but not at a second size, so the model bakes its input "
                           "size into the graph (Python ints of x.shape, .new().resize_(), Python-side padding "
                           "or loops)", f"export with --fixed-shape --height {spec.height} --width {spec.width}")
    hint = "try the other --exporter" if spec.exporter != "auto" else "run udc-edge doctor for the failing ops"
    if spec.dynamic:
        hint += "; if the model cannot take dynamic H/W, add --fixed-shape"
    return ExportError(f"ONNX export failed ({text})", hint)


def export_onnx(model: nn.Module, out: str | os.PathLike, spec: ExportSpec = ExportSpec(),
                metadata: dict[str, str] | None = None) -> ExportReport:
    """Export ``model`` to ``out`` (ONNX), check it, prove parity, then write it atomically."""
    out = Path(out)
    if out.suffix != ".onnx":
        raise UsageError(f"--out {out} must end in .onnx")
    net, args, sizes = prepare(model, spec)
    m = model_multiple(net)
    t0 = time.perf_counter()
    meta = {"udc_edge.multiple": str(m), "udc_edge.macs_per_pixel": f"{_macs_per_pixel(net, args):.3f}",
            **(metadata or {})}
    if spec.output_index is not None:
        meta["udc_edge.output_index"] = str(spec.output_index)
    if spec.extra_inputs:
        meta["udc_edge.extra_inputs"] = json.dumps([e.describe() for e in spec.extra_inputs])
    attempts: list[dict] = []
    errors: list[BaseException] = []
    for exporter in (("torchscript", "dynamo") if spec.exporter == "auto" else (spec.exporter,)):
        t = time.perf_counter()
        try:
            data, par, opts, opset = _attempt(net, args, sizes, spec, exporter, meta)
        except Exception as exc:  # the exporters raise many types
            if isinstance(exc, UsageError):
                raise
            attempts.append({"exporter": exporter, "ok": False, "reason": short_error(exc),
                             "seconds": round(time.perf_counter() - t, 2)})
            errors.append(exc)
            continue
        attempts.append({"exporter": exporter, "ok": True, "reason": "", "seconds": round(time.perf_counter() - t, 2)})
        break
    else:
        raise _failure(attempts, errors, spec) from errors[-1]
    write_bytes_atomic(out, data)
    return ExportReport(path=str(out), exporter=exporter, opset=opset, dynamic=spec.dynamic, multiple=m,
                        inputs=list(spec.input_names), sha256=sha256_file(out), seconds=time.perf_counter() - t0,
                        parity=par, fallback_reason=next((a["reason"] for a in attempts if not a["ok"]), ""),
                        attempts=attempts, session_options=opts, output_index=spec.output_index,
                        extra_inputs=[e.describe() for e in spec.extra_inputs],
                        cuda_calls=list(getattr(net, "cuda_calls", [])))
