"""``udc-edge demo``: the main job end to end on the built-in default (P-OLED).

Synthesise a P-OLED test set from held-out photos, restore it with the shipped restorer,
attack it (PGD 8/255), purify with the distilled purifier, export, build ONNX Runtime FP32
and INT8 engines (and OpenVINO INT8 where installed), bench them, and verify the engines'
robustness parity fastest first: the demo uses, and names, the fastest that passes. Each stage
records its numbers (``demo_stages``); a stage that cannot run says why, never pretends.
Writes ``OUT/report.md`` and ``OUT/report.json`` with the pictures beside them.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from udc_edge.core.errors import UdcEdgeError
from udc_edge.core.fileio import atomic_dir, write_json_atomic, write_text_atomic
from udc_edge.core.progress import progress_bar
from udc_edge.demo.stages import STAGES, Context, Stage, grid


@dataclass
class DemoReport:
    """What the demo did, in order, and where its files are."""

    out_dir: str
    quick: bool
    stages: list[Stage] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    def to_markdown(self) -> str:
        lines = ["# udc-edge demo report", "",
                 (f"Display: P-OLED (preset `poled`). Quick mode: {self.quick}. Total time: {self.seconds:.1f} s "
                 "(absolute times on shared CPUs are noise)."), "",
                 "| stage | status | time (s) | result |", "|---|---|---|---|"]
        lines += [f"| {s.name} | {s.status} | {s.seconds:.1f} | {s.note} |" for s in self.stages]
        for s in self.stages:
            if s.name == "verify" and s.details.get("rows"):
                lines += _verify_lines(s.details)
            if s.name == "bench" and s.details.get("speedup_vs_torch"):
                lines += _bench_lines(s.details)
        lines += ["", "## Pictures", ""] + [f"![{Path(f).stem}]({f})" for f in self.files if f.endswith(".png")]
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        done = sum(s.status == "done" for s in self.stages)
        text = f"demo: {done}/{len(self.stages)} stages done in {self.seconds:.1f} s; report: {self.out_dir}/report.md"
        for s in self.stages:
            text += f"\n  {s.name:<15} {s.status:<14} {s.note}"
        return text


def _verify_lines(details: dict) -> list[str]:
    """The report's robustness-parity table from the verify stage's details."""
    from udc_edge.deploy.verify import format_check_value as f

    lines = ["", (f"## Robustness parity of the engine the demo uses: {details.get('engine', '')} "
                  f"({details.get('backend', '')}, the fastest that passes verify)"), "",
             "| check | reference | engine | value | threshold | result |", "|---|---|---|---|---|---|"]
    for r in details["rows"]:
        lines.append(f"| {r['check']} | {f(r['reference'])} | {f(r['engine'])} | {f(r['value'])} | "
                     f"{r['threshold']} | {'pass' if r['passed'] else '**FAIL**'} |")
    return lines


def _bench_lines(details: dict) -> list[str]:
    """The report's latency table from the bench stage's details."""
    lines = [
        "",
        f"## Latency ({details['shape']}, 1 thread)",
        "",
        "| engine | p50 ms | speed vs torch |",
        "|---|---|---|",
    ]
    return lines + [f"| {k} | {v} | {details['speedup_vs_torch'][k]}x |" for k, v in details["p50_ms"].items()]


def run_demo(out_dir: str | Path, quick: bool = False, quiet: bool = False, overwrite: bool = False,
             threads: int = 1) -> DemoReport:
    """Run every stage, write the report; a failing stage is recorded and later ones that need it skipped.

    torch runs with ``threads`` threads (default 1): on a shared CPU, multi-threaded torch can
    slow down 10-50x when another process holds a core (measured here: PGD-10 on a 96 px
    image took 26 s with 2 threads under load, 0.5 s with 1).
    """
    import torch

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(out_dir, quick, quiet, overwrite)
    finally:
        torch.set_num_threads(old_threads)


def _run(out_dir: str | Path, quick: bool, quiet: bool, overwrite: bool) -> DemoReport:
    t0 = time.perf_counter()
    report = DemoReport(out_dir=str(out_dir), quick=quick)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp, progress_bar("demo", len(STAGES), quiet) as adv:
        ctx = Context(out=tmp, quick=quick, quiet=True)
        broken = False
        for fn in STAGES:
            name = fn.__name__.replace("export_build", "export + build")
            if broken:
                report.stages.append(Stage(name, "skipped", note="an earlier stage failed"))
                continue
            t = time.perf_counter()
            try:
                stage = fn(ctx)
            except UdcEdgeError as exc:
                stage, broken = Stage(name, "failed", note=str(exc)), True
            stage.seconds = time.perf_counter() - t
            report.stages.append(stage)
            adv(1, status=f"{name}: {stage.status}")
        if "pairs" in ctx.data:
            grid(ctx)
        report.files = sorted(str(p.relative_to(tmp)) for p in tmp.glob("*.png"))
        report.seconds = time.perf_counter() - t0
        write_text_atomic(tmp / "report.md", report.to_markdown())
        write_json_atomic(tmp / "report.json", json.loads(report.to_json()))
    return report
