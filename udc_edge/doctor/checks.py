"""The checks behind :func:`udc_edge.doctor.doctor.diagnose`, one function per section of
the report. Each fills its part of the report and adds blockers (the model cannot go the
whole way) or advice (it can, with the flags or caveats named)."""

from __future__ import annotations

import ast
import json
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from udc_edge.core.backends import Backend
from udc_edge.core.errors import UdcEdgeError
from udc_edge.core.fileio import work_dir
from udc_edge.core.timing import side_by_side
from udc_edge.doctor.report import DoctorReport, DoctorSpec, ExporterResult, OpFinding
from udc_edge.export import byo


def load(report: DoctorReport, model: str, arch: str | None, arch_kwargs: dict | None, weights: str | None,
         stub_modules: tuple[str, ...]) -> nn.Module | None:
    """Load on the CPU (``.cuda()`` patched out); a failure is a blocker naming the culprit."""
    from udc_edge.models.checkpoint import load_weights
    from udc_edge.models.registry import create
    from udc_edge.models.zoo import load_model

    t0 = time.perf_counter()
    arch = arch or (model if ":" in model else None)
    try:
        if arch and ":" in arch:
            net, lr = byo.load_byo(arch, arch_kwargs, weights, stub_modules)
            report.load = {"ok": True, "source": "bring-your-own", **lr.to_dict()}
        elif arch:
            net = create(arch, **(arch_kwargs or {}))
            if weights:
                load_weights(net, weights)
            report.load = {"ok": True, "source": "architecture", "arch": arch, "weights": weights}
        else:
            net, desc = load_model(model)
            report.load = {"ok": True, "source": desc.get("source", ""), "weights": "checkpoint"}
    except UdcEdgeError as exc:
        report.load = {"ok": False, "error": str(exc), "seconds": round(time.perf_counter() - t0, 2)}
        report.blockers.append(f"cannot load the model on this CPU machine: {exc}")
        return None
    report.load["seconds"] = round(time.perf_counter() - t0, 2)
    report.load["parameters"] = sum(p.numel() for p in net.parameters())
    if report.load.get("weights") is None:
        report.advice.append("no --weights: random initialisation (parity, speed and operator checks hold; "
                             "INT8 fidelity is indicative only)")
    if report.load.get("heavy_modules"):
        report.advice.append(f"importing the model pulls in {', '.join(report.load['heavy_modules'])} "
                             f"({report.load['import_seconds']:.1f} s): keep them out of the network's module")
    return net.eval()


def structure(report: DoctorReport, net: nn.Module, spec: DoctorSpec) -> nn.Module | None:
    """Forward's extra arguments and outputs; returns the one-image-in, one-out wrapper."""
    from udc_edge.models.padding import model_multiple, padded_size

    required, optional = byo.forward_params(net)
    report.structure = {"extra_arguments": required, "optional_arguments": optional,
                        "extra_inputs": [e.describe() for e in spec.extra_inputs]}
    missing = [n for n in required if n not in {e.name for e in spec.extra_inputs}]
    if missing:
        report.blockers.append(f"forward needs {', '.join(missing)} besides the image: give "
                               + " ".join(f"--extra-input {n}=SHAPE[:FILE.npy]" for n in missing)
                               + " (frozen into the graph as a constant)")
        return None
    try:
        probe = byo.ByoWrapper(net, None, spec.extra_inputs, cpu_patch=True)
    except UdcEdgeError as exc:
        report.blockers.append(str(exc))
        return None
    m = model_multiple(net)
    x = torch.rand(1, 3, padded_size(spec.height, m), padded_size(spec.width, m))
    extra = {n: getattr(probe, f"extra_{n}") for n in probe.extra_names}
    try:
        with torch.no_grad(), byo.cpu_only(report.load.setdefault("cuda_calls", []), "forward"):
            out = net(x, **extra)
    except Exception as exc:  # noqa: BLE001 (the user's forward can raise anything; reported)
        where = byo.user_frame(exc.__traceback__)
        why = "hard-codes a CUDA device (device='cuda' or .to('cuda')): use x.device" if byo.is_cuda_error(exc) else ""
        report.blockers.append(f"forward fails on a {tuple(x.shape)} CPU input: {type(exc).__name__}: "
                               f"{str(exc)[:200]} ({where}) {why}".strip())
        return None
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    report.structure["outputs"] = [byo.describe_output(o) for o in outs]
    index = spec.output_index
    if isinstance(out, (tuple, list)) and index is None:
        same = [i for i, o in enumerate(outs) if isinstance(o, torch.Tensor) and o.shape == x.shape]
        if len(same) != 1:
            report.blockers.append(f"forward returns {len(outs)} outputs ({', '.join(report.structure['outputs'])}) "
                                   "and not exactly one is shaped like the input: give --output-index N")
            return None
        index = same[0]
        report.advice.append(f"forward returns a {type(out).__name__} of {len(outs)}; output [{index}] is shaped "
                             f"like the input: export with --output-index {index}")
    report.structure["output_index"] = index
    calls = report.load.get("cuda_calls", [])
    if calls:
        report.advice.append("hard-coded .cuda() patched out on this CPU (export does the same): "
                             + "; ".join(f"{c['where']} `{c['code']}`" for c in calls))
    try:
        return byo.ByoWrapper(net, index, spec.extra_inputs, cpu_patch=True).eval()
    except UdcEdgeError as exc:
        report.blockers.append(str(exc))
        return None


def export_all(report: DoctorReport, net: nn.Module, spec: DoctorSpec) -> bytes | None:
    """Both exporters with dynamic H/W (then fixed, if neither works), each checked for
    parity at two sizes with the safer-session retry; returns the graph udc-edge would pick."""
    from udc_edge.export.onnx_export import (
        SESSION_OPTIONS_KEY,
        ExportSpec,
        ParityError,
        export_graph,
        graph_opset,
        parity_with_retry,
        prepare,
        short_error,
    )

    chosen: bytes | None = None
    dyn_fail = False
    for dynamic in (True, False):
        for exporter in ("torchscript", "dynamo"):
            es = ExportSpec(height=spec.height, width=spec.width, dynamic=dynamic, opset=spec.opset,
                            exporter=exporter, parity_images=1)
            t0 = time.perf_counter()
            res = ExporterResult(exporter, dynamic, False, 0.0)
            try:
                wrapped, args, sizes = prepare(net, es)
                proto = export_graph(wrapped, args, es, exporter)
                res.opset, res.op_counts = graph_opset(proto), dict(Counter(n.op_type for n in proto.graph.node))
                par, opts = parity_with_retry(wrapped, proto.SerializeToString(), es.input_names, sizes, 1)
                res.parity, res.session_options = par, opts
                worst = max(p["max_abs_err"] for p in par)
                if worst > es.max_abs_err:
                    raise UdcEdgeError(f"ONNX Runtime output differs from torch by {worst:.2e}")
                res.ok = True
            except Exception as exc:  # noqa: BLE001 (every exporter failure is reported, not raised)
                res.error = short_error(exc)
                dyn_fail |= dynamic and isinstance(exc, ParityError) and exc.size_index > 0
            res.seconds = round(time.perf_counter() - t0, 2)
            report.exporters.append(res)
            if res.ok and chosen is None:
                if res.session_options:
                    proto.metadata_props.add(key=SESSION_OPTIONS_KEY, value=json.dumps(res.session_options))
                chosen = proto.SerializeToString()
                report.chosen = {"exporter": exporter, "dynamic": dynamic, "opset": res.opset,
                                 "session_options": res.session_options}
        if chosen is not None:
            break
    failed = {r.exporter: r.error for r in report.exporters if r.dynamic and not r.ok}
    if chosen is None:
        report.dynamic = {"ok": False, "reason": "no graph at all"}
        report.blockers.append("no exporter produced a graph that ONNX Runtime runs and that matches torch: "
                               + "; ".join(f"{r.exporter} ({'dynamic' if r.dynamic else 'fixed'}): {r.error}"
                                           for r in report.exporters))
        return None
    if report.chosen["dynamic"]:
        report.dynamic = {"ok": True, "reason": "exported with dynamic batch/H/W and checked at two sizes"}
    else:
        why = "it runs at the export size but not at a second one" if dyn_fail else "dynamic export failed"
        report.dynamic = {"ok": False, "reason": f"{why} ({'; '.join(f'{k}: {v}' for k, v in failed.items())}); "
                                                 "the model bakes its input size into the graph"}
        report.advice.append(f"dynamic H/W is impossible ({why}): export with --fixed-shape "
                             f"--height {spec.height} --width {spec.width}, one engine per size")
    if report.chosen["exporter"] == "dynamo" and "torchscript" in failed:
        report.advice.append(f"the TorchScript exporter fails ({failed['torchscript'][:160]}); "
                             "--exporter auto falls back to dynamo")
    if report.chosen["session_options"]:
        report.advice.append(f"ONNX Runtime needs session options {json.dumps(report.chosen['session_options'])} "
                             "for this graph; export records them and build/bench/verify reuse them")
    return chosen


def _threads(spec: DoctorSpec) -> int:
    return spec.threads or torch.get_num_threads()


def _layer(node: onnx.NodeProto) -> str:
    """A node's name plus, for dynamo graphs, its module scope and source line."""
    md = {p.key: p.value for p in node.metadata_props}
    label = node.name
    try:
        scopes = [s for s in ast.literal_eval(md.get("pkg.torch.onnx.name_scopes", "[]")) if s]
    except (ValueError, SyntaxError):
        scopes = []
    scopes = [s.removeprefix("model.") for s in scopes if s != "model"]  # ByoWrapper's own scope
    if scopes:
        label += f" [{scopes[-2] if len(scopes) > 1 else scopes[-1]}]"
    frames = [f for f in re.findall(r'File "([^"]+)", line (\d+)', md.get("pkg.torch.onnx.stack_trace", ""))
              if "/udc_edge/" not in f[0] and "/torch/" not in f[0]]
    if frames:
        label += f" at {Path(frames[-1][0]).name}:{frames[-1][1]}"
    return label


def _profile(graph: bytes, x: np.ndarray, threads: int, opts: dict, runs: int) -> dict[str, float]:
    """Milliseconds per run spent in each op type, from ONNX Runtime's profiler."""
    from udc_edge.export.onnxrt import profile_nodes

    per: Counter = Counter()
    for _, op, ms in profile_nodes(graph, [x], threads, opts, runs):
        per[op] += ms
    return dict(per)


def ops_and_speed(report: DoctorReport, net: nn.Module, graph: bytes, spec: DoctorSpec) -> None:
    """Parity, ONNX Runtime vs eager speed (side by side) and the slow or unsupported ops."""
    from udc_edge.engines.tensorrt_ops import SLOW_OPS, tensorrt_support
    from udc_edge.export.onnx_export import example_inputs
    from udc_edge.export.onnxrt import make_session
    from udc_edge.models.padding import model_multiple, padded_size

    proto = onnx.load_from_string(graph)
    opts = report.chosen["session_options"]
    shape = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    h, w = (shape[2], shape[3]) if not report.chosen["dynamic"] else (spec.height, spec.width)
    m = model_multiple(net)
    h, w = padded_size(h, m), padded_size(w, m)
    x = example_inputs(("input",), 1, h, w, seed=1)[0]
    threads = _threads(spec)
    sess = make_session(graph, threads, opts)
    feed = {sess.get_inputs()[0].name: x}
    xt = torch.from_numpy(x)

    def eager():
        with torch.no_grad():
            net(xt)
    eager_ms, ort_ms = side_by_side(eager, lambda: sess.run(None, feed), spec.runs)
    par = next(r.parity for r in report.exporters if r.ok)
    report.ort = {"max_abs_err": max(p["max_abs_err"] for p in par), "psnr_db": min(p["psnr_db"] for p in par),
                  "eager_ms": eager_ms, "ort_ms": ort_ms, "ort_speedup_vs_eager": eager_ms / ort_ms,
                  "threads": threads, "size": [h, w]}
    if ort_ms > 1.1 * eager_ms:
        report.advice.append(f"ONNX Runtime runs at {eager_ms / ort_ms:.2f}x the speed of eager torch here; "
                             "see the slow operators")
    per_type = _profile(graph, x, threads, opts, spec.runs)
    total = sum(per_type.values()) or 1.0
    counts = Counter(n.op_type for n in proto.graph.node)
    for op, count in sorted(counts.items()):
        trt = tensorrt_support(op)
        if op not in SLOW_OPS and trt.supported is not False:
            continue
        layers = list(dict.fromkeys(_layer(n) for n in proto.graph.node if n.op_type == op))
        shown = layers[:4] + ([f"... {len(layers) - 4} more"] if len(layers) > 4 else [])
        report.findings.append(OpFinding(op, count, shown, SLOW_OPS.get(op) or trt.note,
                                         per_type.get(op, 0.0) / total if per_type else None, trt.supported))


def int8(report: DoctorReport, graph: bytes, spec: DoctorSpec) -> None:
    """Calibrate on synthetic UDC captures, quantise one op type at a time, then all of them."""
    from udc_edge.calibration.dataset import load_calibration_set
    from udc_edge.calibration.qdq import QUANT_OPS, fidelity, prepare, quantize_bytes
    from udc_edge.calibration.ranges import compute_ranges
    from udc_edge.engines.tensorrt_ops import SLOW_OPS
    from udc_edge.export.onnxrt import make_session

    h, w = report.ort["size"]
    opts, threads = report.chosen["session_options"], _threads(spec)
    proto = onnx.load_from_string(graph)
    types = Counter(n.op_type for n in proto.graph.node)
    if not any(t in types for t in QUANT_OPS):
        report.int8 = {"error": "no Conv/ConvTranspose/MatMul/Gemm nodes: INT8 would change nothing"}
        report.advice.append("INT8 has nothing to quantise in this graph; build FP32")
        return

    def run(model_bytes: bytes, images: np.ndarray) -> np.ndarray:
        sess = make_session(model_bytes, threads, opts)
        name = sess.get_inputs()[0].name
        return np.concatenate([sess.run(None, {name: images[i : i + 1]})[0] for i in range(len(images))])
    try:
        with work_dir("doctor") as tmp:
            path = Path(tmp) / "fp32.onnx"
            path.write_bytes(graph)
            imgs = load_calibration_set("synth:poled", spec.calib_count, max(h, w)).images
            imgs = np.ascontiguousarray(imgs[:, :, :h, :w])
            cal, held = imgs[:-2], imgs[-2:]
            ranges = compute_ranges(path, cal, "percentile")
            ref = run(graph, held)
            per = {}
            source = prepare(path)  # once for every quantisation below
            for t in QUANT_OPS:
                nodes = tuple(n.name for n in proto.graph.node if n.op_type == t)
                if nodes:
                    q = quantize_bytes(source, ranges, "cpu", only=nodes)
                    per[t] = {"nodes": len(nodes), "psnr_db": fidelity(run, q, held, ref)}
            full = quantize_bytes(source, ranges, "cpu")
            fid = fidelity(run, full, held, ref)
    except Exception as exc:  # noqa: BLE001 (a failing calibration/quantisation is reported)
        from udc_edge.export.onnx_export import short_error

        report.int8 = {"error": short_error(exc)}
        report.blockers.append(f"INT8 calibration/quantisation fails: {short_error(exc)}")
        return
    s32, s8 = make_session(graph, threads, opts), make_session(full, threads, opts)
    feed = {s32.get_inputs()[0].name: held[:1]}
    fp32_ms, int8_ms = side_by_side(lambda: s32.run(None, feed), lambda: s8.run(None, feed), spec.runs)
    report.int8 = {"fidelity_db": fid, "speedup_vs_fp32": fp32_ms / int8_ms, "fp32_ms": fp32_ms, "int8_ms": int8_ms,
                   "per_op_type": per, "float_ops": sorted(t for t in types if t in SLOW_OPS),
                   "calibration": {"source": "synth:poled", "images": len(cal), "held_out": len(held),
                                   "method": "percentile"}}
    if int8_ms > fp32_ms:
        report.advice.append(f"INT8 runs at {fp32_ms / int8_ms:.2f}x the speed of FP32 here (slower): "
                             "build --precision auto keeps FP32")
    if fid < spec.min_fidelity:
        worst = min(per, key=lambda t: per[t]["psnr_db"])
        report.advice.append(f"INT8 output is {fid:.1f} dB from FP32 (< {spec.min_fidelity:g}); most sensitive op "
                             f"type {worst} ({per[worst]['psnr_db']:.1f} dB alone): build with --exclude auto")


def tensorrt(report: DoctorReport, graph: bytes, spec: DoctorSpec) -> None:
    """Each op type of the chosen graph against the ONNX-TensorRT support table."""
    from udc_edge.engines.tensorrt_ops import tensorrt_support

    counts = Counter(n.op_type for n in onnx.load_from_string(graph).graph.node)
    for op, count in sorted(counts.items()):
        s = tensorrt_support(op)
        report.tensorrt.append({"op_type": op, "count": count, "supported": s.supported, "note": s.note})
    bad = [f"{t['op_type']} x{t['count']} ({t['note']})" for t in report.tensorrt if t["supported"] is False]
    if bad:
        text = f"TensorRT's ONNX parser rejects {', '.join(bad)}"
        if spec.backend is Backend.TRT:
            report.blockers.append(text)
        else:
            report.advice.append(text + ": the ONNX Runtime path works; TensorRT needs another layer there")


def export_command(report: DoctorReport, model: str, arch: str | None, arch_kwargs: dict | None,
                   weights: str | None, stub_modules: tuple[str, ...], spec: DoctorSpec) -> None:
    """The ``udc-edge export`` line with every flag the diagnosis found necessary."""
    if not report.chosen:
        return
    arch = arch or (model if ":" in model else None)
    parts = ["udc-edge export", arch if arch and ":" in arch else ("-" if arch else model)]
    if arch and ":" not in arch:
        parts.append(f"--arch {arch}")
    if arch:
        parts.append(f"--weights {weights or 'WEIGHTS.safetensors'}")
        if arch_kwargs:
            parts.append(f"--arch-kwargs '{json.dumps(arch_kwargs)}'")
    if report.structure.get("output_index") is not None:
        parts.append(f"--output-index {report.structure['output_index']}")
    for e in spec.extra_inputs:
        parts.append(f"--extra-input {e.name}={'x'.join(map(str, e.shape))}:{e.file or e.value}")
    parts += [f"--stub-module {s}" for s in stub_modules]
    if report.chosen["exporter"] == "dynamo":
        parts.append("--exporter dynamo")
    if not report.chosen["dynamic"]:
        parts.append("--fixed-shape")
    if not report.chosen["dynamic"] or (spec.height, spec.width) != (256, 256):
        parts += [f"--height {spec.height}", f"--width {spec.width}"]
    if spec.opset != 17:
        parts.append(f"--opset {spec.opset}")
    report.export_command = " ".join(parts + ["--out model.onnx"])
