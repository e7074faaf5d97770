"""The doctor's spec and report (what each check found); apart from the runner so that the
checks and the runner both import it and not each other."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from udc_edge.core.backends import Backend
from udc_edge.core.errors import UsageError


@dataclass(frozen=True)
class DoctorSpec:
    """Example size, bring-your-own options, target backend and measurement effort."""

    height: int = 64
    width: int = 64
    output_index: int | None = None
    extra_inputs: tuple = ()  # tuple[byo.ExtraInput, ...]
    opset: int = 17
    backend: Backend = Backend.ORT  # which path must work for a clean bill: ort, or trt (adds TensorRT support)
    min_fidelity: float = 35.0  # INT8 output vs FP32, dB
    calib_count: int = 6
    runs: int = 5
    threads: int = 0  # ONNX Runtime threads; 0: torch's current thread count (side by side)

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", Backend.parse(self.backend))
        if self.height < 8 or self.width < 8:
            raise UsageError(f"--height/--width must be >= 8, got {self.height}x{self.width}")
        if self.calib_count < 3 or self.runs < 1:
            raise UsageError("--calib-count must be >= 3 and --runs >= 1")
        object.__setattr__(self, "extra_inputs", tuple(self.extra_inputs))


@dataclass
class ExporterResult:
    exporter: str
    dynamic: bool
    ok: bool
    seconds: float
    error: str = ""
    opset: int | None = None
    op_counts: dict[str, int] = field(default_factory=dict)
    parity: list[dict] = field(default_factory=list)
    session_options: dict = field(default_factory=dict)


@dataclass
class OpFinding:
    op_type: str
    count: int
    layers: list[str]
    note: str
    time_share: float | None = None  # fraction of ONNX Runtime time spent in this op type
    tensorrt: bool | None = None


@dataclass
class DoctorReport:
    model: str
    spec: dict
    load: dict = field(default_factory=dict)  # ok, seconds, random_weights, cuda_calls, heavy_modules, error
    structure: dict = field(default_factory=dict)  # forward args, outputs, output_index, extra_inputs
    exporters: list[ExporterResult] = field(default_factory=list)
    chosen: dict = field(default_factory=dict)  # exporter, dynamic, opset, session_options
    dynamic: dict = field(default_factory=dict)  # ok, reason
    findings: list[OpFinding] = field(default_factory=list)
    ort: dict = field(default_factory=dict)  # max_abs_err, psnr_db, eager_ms, ort_ms, ort_speedup_vs_eager
    int8: dict = field(default_factory=dict)  # fidelity_db, speedup_vs_fp32, per_op_type, float_ops
    tensorrt: list[dict] = field(default_factory=list)  # op_type, count, supported, note
    blockers: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)
    export_command: str = ""

    @property
    def ok(self) -> bool:
        return not self.blockers

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def summary(self) -> str:
        """A few lines for the terminal; the markdown has the tables."""
        lines = [f"udc-edge doctor {self.model}: " + ("OK, can go the whole way" if self.ok else "BLOCKED")]
        for r in self.exporters:
            state = f"ok, {sum(r.op_counts.values())} nodes" if r.ok else f"failed: {r.error[:160]}"
            lines.append(f"  {r.exporter} ({'dynamic' if r.dynamic else 'fixed'} H/W, {r.seconds:.1f} s): {state}")
        if self.ort:
            lines.append(f"  ONNX Runtime vs eager: max abs error {self.ort['max_abs_err']:.1e}, "
                         f"{self.ort['ort_speedup_vs_eager']:.2f}x the speed of eager")
        if self.int8.get("fidelity_db") is not None:
            lines.append(
                f"  INT8 vs FP32: {self.int8['fidelity_db']:.1f} dB, {self.int8['speedup_vs_fp32']:.2f}x the speed"
            )
        for f in self.findings:
            share = f", {100 * f.time_share:.0f}% of time" if f.time_share is not None else ""
            lines.append(f"  {f.op_type} x{f.count}{share}: {f.note}")
        lines += [f"  blocker: {b}" for b in self.blockers] + [f"  advice: {a}" for a in self.advice]
        if self.export_command:
            lines.append(f"  next: {self.export_command}")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        verdict = "can go the whole way (export -> build fp32/int8 -> run)" if self.ok else "blocked"
        where = f"target {self.spec.get('backend')}, example {self.spec.get('height')}x{self.spec.get('width')}"
        out = [f"# udc-edge doctor: {self.model}", "", f"**Verdict:** {verdict} ({where})", ""]
        out += [f"- blocker: {b}" for b in self.blockers] + [f"- advice: {a}" for a in self.advice]
        if self.export_command:
            out += ["", "Suggested export:", "", f"    {self.export_command}"]
        out += ["", "## Load on CPU", ""]
        out += [f"- {k}: {v}" for k, v in self.load.items() if k != "cuda_calls"]
        out += [
            f"- `.cuda()` patched out at {c['where']} ({c['phase']}): `{c['code']}`"
            for c in self.load.get("cuda_calls", [])
        ]
        out += ["", "## Structure", ""] + [f"- {k}: {v}" for k, v in self.structure.items()]
        out += ["", "## Exporters", "", "| exporter | H/W | result | seconds | opset | op types (count) |",
                "|---|---|---|---|---|---|"]
        for r in self.exporters:
            ops = ", ".join(f"{k} {v}" for k, v in sorted(r.op_counts.items(), key=lambda kv: -kv[1]))
            res = "ok" + (f" (session options {json.dumps(r.session_options)})" if r.session_options else "") \
                if r.ok else r.error.replace("|", "/")
            out.append(f"| {r.exporter} | {'dynamic' if r.dynamic else 'fixed'} | {res} | {r.seconds:.1f} | "
                       f"{r.opset or ''} | {ops} |")
        out += ["", f"Dynamic H/W: {'yes' if self.dynamic.get('ok') else 'no'}. {self.dynamic.get('reason', '')}"]
        out += ["", "## Slow or unsupported operators", ""]
        if self.findings:
            out += ["| op | count | time share | TensorRT | layers | note |", "|---|---|---|---|---|---|"]
            for f in self.findings:
                share = f"{100 * f.time_share:.0f}%" if f.time_share is not None else ""
                trt = {True: "yes", False: "no", None: "?"}[f.tensorrt]
                out.append(f"| {f.op_type} | {f.count} | {share} | {trt} | {'; '.join(f.layers)} | {f.note} |")
        else:
            out.append("None.")
        if self.ort:
            o = self.ort
            speed = (f"- speed (measured side by side, {o['threads']} thread(s)): eager {o['eager_ms']:.2f} ms, "
                     f"ONNX Runtime {o['ort_ms']:.2f} ms, ratio {o['ort_speedup_vs_eager']:.2f}x")
            out += ["", "## ONNX Runtime vs eager torch", "",
                    f"- parity: max abs error {o['max_abs_err']:.2e}, PSNR {o['psnr_db']:.1f} dB", speed]
        if self.int8:
            i = self.int8
            out += ["", "## INT8 friendliness", ""]
            if i.get("error"):
                out.append(f"INT8 failed: {i['error']}")
            else:
                allq = (f"- all quantisable ops INT8: {i['fidelity_db']:.1f} dB vs FP32, {i['speedup_vs_fp32']:.2f}x "
                        f"the speed of FP32 (FP32 {i['fp32_ms']:.2f} ms, INT8 {i['int8_ms']:.2f} ms)")
                out += [allq, f"- kept in float (never quantised): {', '.join(i['float_ops']) or 'none'}", "",
                        "| op type quantised alone | nodes | PSNR vs FP32 (dB) |", "|---|---|---|"]
                out += [f"| {t} | {v['nodes']} | {v['psnr_db']:.1f} |" for t, v in i["per_op_type"].items()]
        if self.tensorrt:
            out += ["", "## TensorRT parser support (ONNX-TensorRT operator table)", "",
                    "| op type | count | supported | note |", "|---|---|---|---|"]
            out += [f"| {t['op_type']} | {t['count']} | {({True: 'yes', False: 'no', None: '?'})[t['supported']]} | "
                    f"{t['note']} |" for t in self.tensorrt]
        return "\n".join(out) + "\n"
