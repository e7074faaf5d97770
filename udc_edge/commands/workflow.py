"""``udc-edge bench`` (and the deployment workflow commands that build on it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from udc_edge.commands.common import quiet, stdout


def bench_cmd(
    ctx: typer.Context,
    targets: Annotated[list[str], typer.Argument(help="Engine files (.onnx/.engine with manifest) and/or models.")],
    shape: Annotated[str, typer.Option(help="Input shape NxCxHxW.")] = "1x3x512x512",
    warmup: Annotated[int, typer.Option(help="Untimed calls per engine first.")] = 3,
    iters: Annotated[int, typer.Option(help="Interleaved timed rounds.")] = 20,
    duration: Annotated[float | None, typer.Option(help="Run rounds for this many seconds instead of --iters.")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads per engine (0: default).")] = 0,
    profile: Annotated[bool, typer.Option(help="Per-layer time table (ONNX Runtime / TensorRT profiler).")] = False,
    report: Annotated[Path | None, typer.Option(help="Write bench.json, bench.md and bench.png here.")] = None,
    compare: Annotated[Path | None, typer.Option(help="An older bench.json: mark regressions beyond noise.")] = None,
) -> None:
    """Latency of engines and models, interleaved so machine noise hits all alike."""
    from rich.table import Table

    from udc_edge.engines.spec import ShapeProfile
    from udc_edge.evaluation.bench import BenchSpec, compare_reports, run_bench, save_report
    from udc_edge.progress import progress_bar

    spec = BenchSpec(shape=ShapeProfile.parse_shape(shape, "--shape"), warmup=warmup, iters=iters,
                     duration=duration, threads=threads, profile=profile)
    with progress_bar("benchmarking", None if duration else iters, quiet(ctx)) as adv:
        rep = run_bench(list(targets), spec, progress=adv)
    notes = compare_reports(rep, compare) if compare else []
    table = Table(title=f"udc-edge bench {shape} ({rep.spec['iters']} rounds; absolute CPU times are noise)")
    for col in ("engine", "backend", "precision", "MB", "p50 ms", "p90 ms", "p99 ms", "img/s", "GFLOP/s", "status"):
        table.add_column(col)
    for r in rep.rows:
        lat = r.latency_ms
        table.add_row(Path(r.name).name, r.backend, r.precision, f"{r.size_mb:.2f}",
                      *(f"{lat[k]:.2f}" if lat else "-" for k in ("p50", "p90", "p99")),
                      f"{r.images_per_s:.2f}" if lat else "-", f"{r.gflops:.1f}" if r.gflops else "-",
                      r.status + (f" ({r.verdict})" if r.verdict else ""))
    stdout.print(table)
    for n in notes:
        stdout.print(n)
    stdout.print(f"harness overhead {rep.overhead_us:.1f} us per call ({rep.overhead_us / 100:.3f} % of a 10 ms call)")
    if report:
        files = save_report(rep, report)
        stdout.print(f"wrote {', '.join(str(f) for f in files)}")
    if any(r.status != "ok" for r in rep.rows):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_cmd)
