"""``udc-edge bench`` (and the deployment workflow commands that build on it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from udc_edge.commands.common import InputOpt, OverwriteOpt, SeedOpt, print_table, quiet, stdout


def parse_thread_counts(text: str) -> tuple[int, ...]:
    """``--threads``: '1,all' -> (1, cores); '0' -> (0,) (the backend's default); duplicates dropped."""
    import os

    from udc_edge.core.errors import UsageError

    counts: list[int] = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        try:
            n = (os.cpu_count() or 1) if part == "all" else int(part)
        except ValueError as exc:
            raise UsageError(
                f"--threads {text!r}: {part!r} is not a count", "e.g. --threads 1,all or --threads 4"
            ) from exc
        if n < 0:
            raise UsageError(f"--threads {text!r}: {n} is negative", "use 0 for the default")
        if n not in counts:
            counts.append(n)
    if not counts:
        raise UsageError("--threads is empty", "e.g. --threads 1,all")
    return tuple(counts)


def bench_cmd(
    ctx: typer.Context,
    targets: Annotated[list[str], typer.Argument(help="Engine files (.onnx/.engine with manifest) and/or models.")],
    shape: Annotated[str, typer.Option(help="Input shape NxCxHxW.")] = "1x3x512x512",
    warmup: Annotated[int, typer.Option(help="Untimed calls per engine first.")] = 3,
    iters: Annotated[int, typer.Option(help="Interleaved timed rounds.")] = 20,
    duration: Annotated[float | None, typer.Option(help="Run rounds for this many seconds instead of --iters.")] = None,
    threads: Annotated[str, typer.Option(help="CPU threads per engine, every backend: a count, 'all' (every core), "
                                              "0 (the backend's default), or a list measured in turn.")] = "1,all",
    profile: Annotated[bool, typer.Option(help="Per-layer time table (ONNX Runtime / TensorRT profiler).")] = False,
    report: Annotated[Path | None, typer.Option(help="Write bench.json, bench.md and bench.png here.")] = None,
    compare: Annotated[Path | None, typer.Option(
        help="An older bench.json of the same --shape: regression / improvement / same / inconclusive from a "
             "bootstrap interval on the raw rounds (20 or more on each side).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of the table.")] = False,
    input_: InputOpt = None,
) -> None:
    """Latency of engines and models, interleaved so machine noise hits all alike."""
    from udc_edge.core.progress import progress_bar
    from udc_edge.deploy.bench import BenchSpec, run_bench, save_report
    from udc_edge.deploy.bench_compare import compare_reports
    from udc_edge.engines.spec import ShapeProfile

    counts = parse_thread_counts(threads)
    spec = BenchSpec.for_thread_counts(counts, shape=ShapeProfile.parse_shape(shape, "--shape"), warmup=warmup,
                                       iters=iters, duration=duration, profile=profile,
                                       inputs=input_)
    with progress_bar("benchmarking", None if duration else iters, quiet(ctx)) as adv:
        rep = run_bench(list(targets), spec, progress=adv)
    notes = compare_reports(rep, compare) if compare else []
    if as_json:
        print(rep.to_json())
    else:
        _print_bench(rep, shape, notes)
    files = save_report(rep, report) if report else []
    if files and not as_json:
        stdout.print(f"wrote {', '.join(str(f) for f in files)}")
    if any(r.status != "ok" for r in rep.rows):
        raise typer.Exit(1)


def _print_bench(rep, shape: str, notes: list[str]) -> None:
    """The bench table, the --compare notes and the harness overhead, for a person."""
    from rich.table import Table

    from udc_edge.deploy.bench import TABLE_COLUMNS

    table = Table(title=f"udc-edge bench {shape} ({rep.spec['iters']} rounds; absolute CPU times are noise)")
    for col in TABLE_COLUMNS:
        table.add_column(col)
    for r in rep.rows:
        table.add_row(*r.cells())
    print_table(table)
    for n in notes:
        stdout.print(n)
    stdout.print(f"harness overhead {rep.overhead_us:.1f} us per call ({rep.overhead_us / 100:.3f} % of a 10 ms call)")


def verify_cmd(
    ctx: typer.Context,
    engine: Annotated[Path, typer.Option(help="Engine file built by udc-edge build (with its manifest).")],
    report: Annotated[Path, typer.Option(help="Folder for verify.json, verify.md and worst.png.")],
    reference: Annotated[str | None, typer.Option(help="PyTorch reference: shipped name or checkpoint.")] = None,
    data: Annotated[Path | None, typer.Option(help="Paired dataset (lq/ + gt/).")] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            help="A bundle from udc-edge bundle: its images and stored reference outputs replace --reference/--data."
        ),
    ] = None,
    attacks: Annotated[
        str, typer.Option(help="Attacks: white-box ones are transferred, black-box ones run on the engine.")
    ] = "pgd,simba",
    eps: Annotated[str, typer.Option(help="L-inf budget, e.g. 8/255.")] = "8/255",
    steps: Annotated[int, typer.Option(help="PGD steps.")] = 20,
    simba_iterations: Annotated[int, typer.Option(help="SimBA/Square query budget per image.")] = 200,
    max_psnr_drop: Annotated[float, typer.Option(help="Largest allowed PSNR loss (dB) of engine vs reference.")] = 0.3,
    max_ssim_drop: Annotated[float, typer.Option(help="Largest allowed SSIM loss.")] = 0.01,
    min_fidelity: Annotated[
        float, typer.Option(help="Smallest allowed PSNR (dB) of engine output vs reference output.")
    ] = 35.0,
    limit: Annotated[
        int | None, typer.Option(help="Images to use; the data must have that many [default: up to 8].")
    ] = None,
    seed: SeedOpt = 0,
    direct: Annotated[
        bool,
        typer.Option(
            "--direct/--no-direct",
            help="Also craft each white-box attack on a differentiable replica of the engine (its own INT8 numerics) "
            "and run it on the engine; rows are 'not run' (verdict INCOMPLETE) when no replica can be made.",
        ),
    ] = True,
    min_replica_match: Annotated[
        float, typer.Option(help="Smallest allowed PSNR (dB) of replica vs engine output.")
    ] = 50.0,
    cw_iterations: Annotated[int, typer.Option(help="C&W Adam iterations per search step.")] = 100,
    cw_search_steps: Annotated[int, typer.Option(help="C&W binary-search steps on its constant.")] = 9,
    purifier: Annotated[
        str | None,
        typer.Option(
            help="Verify the defended pipeline: reference = purifier + "
            "restorer, engine = export MODEL --purifier P_k graph."
        ),
    ] = None,
    eot: Annotated[int, typer.Option(help="Noise draws for the adaptive EOT attack with --purifier.")] = 10,
    overwrite: OverwriteOpt = False,
) -> None:
    """Robustness parity: is the engine as accurate and as robust as its PyTorch reference? Exit 1 if not."""
    from udc_edge.attacks import parse_eps
    from udc_edge.deploy.verify import VerifySpec, run_verify

    spec = VerifySpec(attacks=tuple(a for a in attacks.split(",") if a), eps=parse_eps(eps), steps=steps,
                      simba_iterations=simba_iterations, max_psnr_drop=max_psnr_drop, max_ssim_drop=max_ssim_drop,
                      min_fidelity=min_fidelity, limit=limit, seed=seed, direct=direct,
                      min_replica_match=min_replica_match, cw_iterations=cw_iterations, cw_search_steps=cw_search_steps)
    rep = run_verify(engine, report, spec, reference=reference, data=data, bundle=bundle, quiet=quiet(ctx),
                     purifier=purifier, eot=eot, overwrite=overwrite)
    _print_verify(rep)
    if not rep.passed:
        raise typer.Exit(1)


def _print_verify(rep) -> None:
    from rich.table import Table

    from udc_edge.deploy.verify import format_check_value

    table = Table(title=f"udc-edge verify: {rep.verdict} ({rep.images} images)")
    for col in ("check (crafted on, evaluated on: reference side / engine side)", "reference", "engine", "value",
                "threshold", "result"):
        table.add_column(col)
    f = format_check_value
    for c in rep.checks:
        res = {"pass": "pass", "FAIL": Text("FAIL", style="bold red"), "not run": Text("not run", style="yellow")}
        name = f"{c.name}\n  crafted on {c.crafted_on}\n  evaluated on {c.evaluated_on}"
        table.add_row(name, f(c.reference), f(c.engine), f(c.value), c.threshold, res[c.result])
    print_table(table)
    for c in rep.checks:
        if not c.run:
            stdout.print(f"not run: {c.name}: {c.note}", markup=False, highlight=False, soft_wrap=True)
    for n in rep.notes:
        stdout.print(f"note: {n}", markup=False, highlight=False, soft_wrap=True)


def bundle_cmd(
    ctx: typer.Context,
    restorer: Annotated[str, typer.Option(help="Restorer: shipped name or checkpoint.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder, or a path ending in .tar.gz.")],
    calib: Annotated[str, typer.Option(help="Calibration images: folder or synth:poled.")] = "synth:poled",
    calib_count: Annotated[int, typer.Option(help="Calibration images to use.")] = 16,
    verify_data: Annotated[Path | None, typer.Option(help="Paired data for the stored verification set "
                                                           "(default: synthetic held-out P-OLED).")] = None,
    verify_count: Annotated[int, typer.Option(help="Verification images to store.")] = 4,
    attacks: Annotated[str, typer.Option(help="Attacks whose reference results are stored.")] = "pgd,simba",
    overwrite: OverwriteOpt = False,
) -> None:
    """Write what a device needs to build and verify its own engines (no PyTorch needed there)."""
    from udc_edge.core.progress import progress_bar
    from udc_edge.deploy.bundle import write_bundle

    with progress_bar("bundling", 4, quiet(ctx)) as adv:
        path = write_bundle(restorer, out, calib=calib, calib_count=calib_count,
                            verify_data=str(verify_data) if verify_data else None, verify_count=verify_count,
                            attacks=tuple(a for a in attacks.split(",") if a), progress=adv, overwrite=overwrite)
    stdout.print(f"wrote bundle {path}; on the device: see its README.md")


def register(app: typer.Typer) -> None:
    app.command("bundle")(bundle_cmd)
    app.command("bench")(bench_cmd)
    app.command("verify")(verify_cmd)
