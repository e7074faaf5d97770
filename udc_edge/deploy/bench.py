"""``udc-edge bench``: latency of several engines/models in one run, like ``yolo benchmark``.

Rounds are interleaved (each round calls every engine once, in turn) so machine noise
hits all of them alike. Per engine: latency statistics, throughput, memory, achieved
GFLOP/s from the model's counted MACs and its fraction of a measured FP32 convolution peak,
CUDA-event compute time apart from copies on GPU, and power/energy on Jetson. The
harness's own per-call overhead is measured with a null engine and reported.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from udc_edge.core.errors import UdcEdgeError, UsageError
from udc_edge.core.progress import Advance, noop
from udc_edge.core.timing import median_seconds
from udc_edge.deploy.hostinfo import PowerMonitor, conv_peak_gflops, nvpmodel_mode, rss_mb
from udc_edge.engines import Engine, EngineInfo, is_engine_path, load_engine
from udc_edge.engines.base import LayerProfiler
from udc_edge.engines.manifest import cpu_facts


@dataclass(frozen=True)
class BenchSpec:
    shape: tuple[int, int, int, int] = (1, 3, 512, 512)
    warmup: int = 3
    iters: int = 20
    duration: float | None = None  # seconds; overrides iters when set
    threads: int = 0
    profile: bool = False
    seed: int = 0
    thread_counts: tuple[int, ...] = ()  # when set: every target once per count (e.g. (1, cores)), overriding threads

    @classmethod
    def for_thread_counts(cls, counts: tuple[int, ...] | list[int], **fields: Any) -> BenchSpec:
        """One count: every target at ``threads``; several: every target once per count."""
        if len(counts) == 1:
            return cls(threads=counts[0], **fields)
        return cls(thread_counts=tuple(counts), **fields)

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.iters < 1:
            raise UsageError(f"--warmup must be >= 0 and --iters >= 1, got {self.warmup}, {self.iters}")
        if self.duration is not None and self.duration <= 0:
            raise UsageError(f"--duration must be > 0 seconds, got {self.duration}")
        if self.threads < 0 or any(t < 1 for t in self.thread_counts):
            raise UsageError(f"--threads must be >= 1 (or 0 / all), got {self.threads} {self.thread_counts}")
        if len(self.shape) != 4 or self.shape[1] != 3 or min(self.shape) < 1:
            raise UsageError(f"--shape must be Nx3xHxW, got {'x'.join(map(str, self.shape))}")


@dataclass
class BenchRow:
    name: str
    threads: int = 0  # CPU threads the engine was given (0: its default)
    backend: str = ""
    precision: str = ""
    size_mb: float = 0.0
    status: str = "ok"
    latency_ms: dict = field(default_factory=dict)
    images_per_s: float = 0.0
    megapixels_per_s: float = 0.0
    memory_mb: float = 0.0
    gflops: float | None = None
    peak_fraction: float | None = None
    gpu_ms: dict | None = None  # compute / h2d / d2h from CUDA events
    power_mw: float | None = None
    energy_mj_per_image: float | None = None
    top_layers: list = field(default_factory=list)
    verdict: str = ""  # vs --compare: regression / improvement / same

    @property
    def samples(self) -> list[float]:
        return self.latency_ms.get("samples", [])

    def cells(self) -> list[str]:
        """The row of the terminal table, in TABLE_COLUMNS order ("-" where nothing was measured)."""
        lat = self.latency_ms
        timed = [f"{lat[k]:.2f}" if lat and lat[k] is not None else "-" for k in ("p50", "p90", "p99")]
        return [Path(self.name).name, str(self.threads or "default"), self.backend, self.precision,
                f"{self.size_mb:.2f}", *timed,
                f"{self.images_per_s:.2f}" if lat else "-", f"{self.gflops:.1f}" if self.gflops else "-",
                self.status + (f" ({self.verdict})" if self.verdict else "")]


TABLE_COLUMNS = ("engine", "threads", "backend", "precision", "MB", "p50 ms", "p90 ms", "p99 ms", "img/s", "GFLOP/s",
                 "status")


@dataclass
class BenchReport:
    spec: dict
    rows: list[BenchRow]
    host: dict
    overhead_us: float
    seconds: float

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "note": "absolute times on shared CPUs are noise; compare ratios "
                           "measured in one run"}, indent=2)

    def to_markdown(self) -> str:
        n, c, h, w = self.spec["shape"]
        lines = [
            f"# udc-edge bench ({n}x{c}x{h}x{w}, {self.spec['iters']} interleaved rounds)",
            "",
            (
                "| engine | threads | backend | precision | size MB | p50 ms | p90 ms | p99 ms | img/s | MP/s "
                "| GFLOP/s | % peak | mem MB | status |"
            ),
            "|" + "---|" * 14,
        ]
        for r in self.rows:
            lat = r.latency_ms
            def ms(v):
                return "-" if v is None else f"{v:.2f}"
            g = f"{r.gflops:.1f}" if r.gflops else "-"
            pk = f"{100 * r.peak_fraction:.1f}" if r.peak_fraction else "-"
            status = r.status + (f" ({r.verdict})" if r.verdict else "")
            if lat:
                lines.append(f"| {r.name} | {r.threads or 'default'} | {r.backend} | {r.precision} | {r.size_mb:.2f} | "
                             f"{ms(lat['p50'])} | {ms(lat['p90'])} | {ms(lat['p99'])} | {r.images_per_s:.2f} | "
                             f"{r.megapixels_per_s:.2f} "
                             f"| {g} | {pk} | {r.memory_mb:.0f} | {status} |")
            else:
                lines.append(f"| {r.name} | {r.threads or 'default'} | {r.backend} | {r.precision} "
                             f"| - | - | - | - | - | - | - | - | - | {status} |")
        lines += ["", (f"Harness overhead: {self.overhead_us:.1f} us per call "
                  f"({self.overhead_us / 100:.3f} % of a 10 ms engine call). Conv peak: "
                  f"{_peak_text(self.host.get('conv_peak_gflops'))} (an FP32 convolution: % peak is shown for "
                  "FP32 rows only). p90/p95/p99 need 10/20/100 rounds. Absolute times on shared CPUs are noise; "
                  "compare the ratios between rows.")]
        for r in self.rows:
            if r.top_layers:
                lines += ["", f"## Slowest layers: {r.name}", "", "| layer | op | ms | share |", "|---|---|---|---|"]
                lines += [
                    f"| {t['layer']} | {t['op']} | {t['ms']:.3f} | {100 * t['share']:.1f} % |" for t in r.top_layers
                ]
        return "\n".join(lines) + "\n"


def open_target(name: str, threads: int) -> tuple[Engine, dict]:
    """An engine file or a torch model (shipped name / checkpoint) behind the Engine interface."""
    if is_engine_path(name):
        eng = load_engine(name, threads=threads)
        m = eng.manifest
        macs = (m.build_options or {}).get("macs_per_pixel")
        return eng, {"size_mb": Path(name).stat().st_size / 2**20, "macs_per_pixel": macs}
    from udc_edge.engines.torch_ref import TorchEngine
    from udc_edge.models import count_macs, count_params
    from udc_edge.models.zoo import load_model

    model, _ = load_model(name)
    return TorchEngine(model, threads=threads), {"size_mb": count_params(model) * 4 / 2**20,
                                                 "macs_per_pixel": count_macs(model, 64, 64) / 4096}


class _NullEngine(Engine):
    """Returns its input: what remains of a call's time is the harness's own overhead."""

    def info(self) -> EngineInfo:
        from udc_edge.engines.base import IOSpec

        return EngineInfo("null", "0", "fp32", "fp32", [IOSpec("input", (None, 3, None, None))], [])

    def _activate(self) -> None: ...

    def _deactivate(self) -> None: ...

    def _infer(self, *inputs: np.ndarray) -> np.ndarray:
        return inputs[0]


def measure_overhead(x: np.ndarray, calls: int = 200) -> float:
    """Median microseconds per timed call of the null engine through the full harness path."""
    eng = _NullEngine().activate()
    return median_seconds(lambda: eng(x), calls, warmup=0) * 1e6


#: A percentile is reported only from this many samples up (p99 of 10 samples is the maximum).
MIN_SAMPLES_FOR = {50: 1, 90: 10, 95: 20, 99: 100}


def _stats(samples: list[float]) -> dict:
    a = np.asarray(samples)
    pct = {f"p{q}": float(np.percentile(a, q)) if a.size >= MIN_SAMPLES_FOR[q] else None for q in (50, 90, 95, 99)}
    return {"min": float(a.min()), "mean": float(a.mean()), **pct, "max": float(a.max()), "std": float(a.std()),
            "samples": [round(float(s), 4) for s in a]}


def _peak_text(peak: float | None) -> str:
    return f"{peak:.1f} GFLOP/s" if peak else "not measured (it is a torch convolution; torch is not installed)"


def _fill(row: BenchRow, samples: list[float], meta: dict, shape: tuple, peak: float | None) -> None:
    n, _, h, w = shape
    row.latency_ms = _stats(samples)
    mean_s = row.latency_ms["mean"] / 1000
    row.images_per_s = n / mean_s
    row.megapixels_per_s = n * h * w / 1e6 / mean_s
    if meta.get("macs_per_pixel"):
        row.gflops = 2 * meta["macs_per_pixel"] * n * h * w / (row.latency_ms["p50"] / 1000) / 1e9
        # the peak is an FP32 convolution's: a fraction of it means nothing for INT8/FP16 rows
        row.peak_fraction = row.gflops / peak if peak and row.precision == "fp32" else None


def run_bench(targets: list[str], spec: BenchSpec = BenchSpec(), progress: Advance = noop) -> BenchReport:
    """Benchmark every target on the same input, interleaved; a failing target gets a status, not a crash."""
    if not targets:
        raise UsageError("give at least one engine or model to bench")
    t0 = time.perf_counter()
    x = np.random.default_rng(spec.seed).random(spec.shape, dtype=np.float32)
    rows, live = [], []
    for name, threads in [(t, n) for t in targets for n in (spec.thread_counts or (spec.threads,))]:
        row = BenchRow(name=name, threads=threads)
        try:
            before = rss_mb()
            eng, meta = open_target(name, threads)
            info = eng.activate().info()
            row.backend, row.precision, row.size_mb = info.backend, info.precision, meta["size_mb"]
            inputs = [x] * eng.num_inputs
            for _ in range(max(1, spec.warmup)):
                eng(*inputs)
            row.memory_mb = max(0.0, rss_mb() - before)
            live.append((row, eng, meta, inputs, []))
        except UdcEdgeError as exc:
            row.status = f"error: {exc.message}"
        rows.append(row)
    peaks = {r.threads: conv_peak_gflops(r.threads) for r in rows}  # the peak at each row's thread count
    deadline = t0 + spec.duration if spec.duration else None
    rounds = 0
    with PowerMonitor() as power:
        while live and (rounds < spec.iters if deadline is None else time.perf_counter() < deadline or rounds < 3):
            for _row, eng, _, inputs, samples in live:
                t = time.perf_counter()
                eng(*inputs)
                samples.append((time.perf_counter() - t) * 1000)
            rounds += 1
            progress(1)
    for row, eng, meta, inputs, samples in live:
        _fill(row, samples, meta, spec.shape, peaks[row.threads])
        if power.mean_mw() is not None:
            row.power_mw = power.mean_mw()
            row.energy_mj_per_image = row.power_mw * row.latency_ms["mean"] / 1000 / spec.shape[0]
        if hasattr(eng, "timed_call"):
            timings = [eng.timed_call(*inputs)[1] for _ in range(5)]
            row.gpu_ms = {k: float(np.median([t[k] for t in timings])) for k in timings[0]}
        if spec.profile and isinstance(eng, LayerProfiler):
            layers = eng.profile_layers(*inputs, runs=5)
            total = sum(r.ms for r in layers) or 1.0
            row.top_layers = [{"layer": r.layer, "op": r.op, "ms": r.ms, "share": r.ms / total} for r in layers[:10]]
        eng.deactivate()
    known = [p for p in peaks.values() if p is not None]  # None: no torch here to measure the peak
    host = {"conv_peak_gflops": max(known) if known else None, "conv_peak_gflops_by_threads": peaks,
            "threads": spec.threads, "thread_counts": list(spec.thread_counts), "nvpmodel": nvpmodel_mode(),
            **cpu_facts()}
    spec_d = {**asdict(spec), "shape": list(spec.shape), "iters": rounds}
    return BenchReport(spec=spec_d, rows=rows, host=host, overhead_us=measure_overhead(x),
                       seconds=time.perf_counter() - t0)


def save_report(report: BenchReport, out_dir: str | Path) -> list[Path]:
    """bench.json, bench.md and bench.png (latency box plot) in ``out_dir``."""
    from udc_edge.core.fileio import write_text_atomic

    out = Path(out_dir)
    files = [write_text_atomic(out / "bench.json", report.to_json()),
             write_text_atomic(out / "bench.md", report.to_markdown())]
    ok = [r for r in report.rows if r.samples]
    if ok:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from udc_edge.core.fileio import atomic_path

        fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(ok)), 3.2))
        ax.boxplot([r.samples for r in ok], showfliers=True)
        ax.set_xticks(range(1, len(ok) + 1),
                      [f"{Path(r.name).name}\n{r.backend} {r.precision} {r.threads or ''}t" for r in ok], fontsize=7)
        ax.set_ylabel("latency (ms)")
        ax.set_title("udc-edge bench (interleaved rounds)", fontsize=9)
        fig.tight_layout()
        with atomic_path(out / "bench.png") as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        files.append(out / "bench.png")
    return files
