"""``udc-edge attack`` (write adversarial inputs) and ``udc-edge eval`` (robustness table)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from udc_edge.commands.common import (
    ArchKwargsOpt,
    ArchOpt,
    AttackBatchOpt,
    OverwriteOpt,
    PairedDataOpt,
    SeedOpt,
    ThreadsOpt,
    WeightsOpt,
    check_out,
    json_opt,
    print_table,
    quiet,
    set_threads,
    stdout,
)
from udc_edge.core.errors import UsageError


class Objective(str, Enum):
    gt = "gt"
    clean = "clean"


class AdvFormat(str, Enum):
    npy = "npy"
    png16 = "png16"


TargetArg = Annotated[str, typer.Argument(
    help="Shipped name (unet-s-poled), checkpoint folder, or engine file (.onnx/.engine/.plan).")]
ObjectiveOpt = Annotated[Objective, typer.Option(
    help="Maximise output error vs ground truth (gt) or vs the clean output (clean: no ground truth needed).")]
StepsOpt = Annotated[int, typer.Option(help="Iterations of pgd/ifgsm/mifgsm.")]
LimitOpt = Annotated[int | None, typer.Option(help="Use only the first N images.")]
SurrogateOpt = Annotated[str | None, typer.Option(
    "--surrogate", "--reference",
    help="Torch model to craft white-box attacks on (transfer to MODEL, e.g. the restorer its engine was built from).")]
SimbaOpt = Annotated[int, typer.Option(help="SimBA iterations (directions tried) per image.")]
SquareOpt = Annotated[int, typer.Option(help="Square Attack queries per image.")]


def _targets(model: str, surrogate: str | None, arch, arch_kwargs, weights, threads: int):
    from udc_edge.evaluation.robustness import load_target

    set_threads(threads)
    target, info = load_target(model, arch=arch, arch_kwargs=json_opt(arch_kwargs, "--arch-kwargs"),
                               weights=str(weights) if weights else None, threads=threads)
    sur = load_target(surrogate)[0] if surrogate else None
    if surrogate:
        info = {**info, "surrogate": surrogate}
    return target, sur, info


def attack_cmd(
    ctx: typer.Context,
    model: TargetArg,
    data: PairedDataOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder: adv/ images + attack.json.")],
    attack_name: Annotated[str, typer.Option("--attack", help="pgd, ifgsm, mifgsm, cw, simba or square.")] = "pgd",
    eps: Annotated[str | None, typer.Option(help="L-inf budget, e.g. 8/255 or 0.0314 (none for cw).")] = None,
    steps: StepsOpt = 20,
    objective: ObjectiveOpt = Objective.gt,
    limit: LimitOpt = None,
    seed: SeedOpt = 0,
    fmt: Annotated[AdvFormat, typer.Option("--format", help="npy (exact float32) or png16 (16-bit PNG).")
                   ] = AdvFormat.npy,
    surrogate: SurrogateOpt = None,
    simba_iterations: SimbaOpt = 1000,
    square_queries: SquareOpt = 1000,
    overwrite: OverwriteOpt = False,
    threads: ThreadsOpt = 0,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = "",
    weights: WeightsOpt = None,
) -> None:
    """Attack each image of a dataset and write the adversarial inputs losslessly."""
    from udc_edge.attacks import parse_attack_names, parse_eps
    from udc_edge.core.progress import progress_bar
    from udc_edge.data.readers import open_paired_dataset
    from udc_edge.evaluation.robustness import (
        check_plan,
        craft_dataset,
        is_engine_name,
        plan_attacks,
    )

    names = parse_attack_names(attack_name)
    if len(names) != 1:
        raise UsageError(f"--attack takes one attack, got {attack_name!r}", "use udc-edge eval for several")
    if names == ("cw",) and eps is not None:
        raise UsageError("cw is an L2 attack and takes no --eps", "leave out --eps for cw")
    eps_values = (parse_eps(eps),) if eps is not None else ()
    spec = plan_attacks(names, eps_values, objective=objective.value, seed=seed, steps=steps,
                        simba_iterations=simba_iterations, square_queries=square_queries)[0]
    check_plan([spec], is_engine_name(model) and arch is None, model, surrogate is not None)
    check_out(out_dir, data, model, surrogate, weights, overwrite=overwrite)
    dataset = open_paired_dataset(data)
    target, sur, info = _targets(model, surrogate, arch, arch_kwargs, weights, threads)
    total = len(dataset) if limit is None else min(max(limit, 0), len(dataset))
    with progress_bar(f"{spec.name} attack", total, quiet(ctx)) as advance:
        summary = craft_dataset(target, dataset, spec, out_dir, fmt=fmt.value, limit=limit, surrogate=sur,
                                model_info=info, target_name=model, overwrite=overwrite, progress=advance)
    stdout.print(
        f"wrote {len(summary['images'])} adversarial input(s) ({fmt.value}) to {out_dir}/adv: "
        f"{spec.name} eps {summary['eps_label']}, output PSNR {summary['psnr_clean_mean']:.2f} -> "
        f"{summary['psnr_attacked_mean']:.2f} dB vs {summary['reference']}, L-inf {summary['linf_max']:.5f}")


def eval_cmd(
    ctx: typer.Context,
    model: TargetArg,
    data: PairedDataOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Report folder: report.json, report.md, grid.png "
                                                              "(no grid with --purifier).")],
    attacks: Annotated[str | None, typer.Option(help="Comma-separated attacks [default: pgd,ifgsm,mifgsm,cw,simba,"
                                                     "square; with --purifier pgd,cw,simba].")] = None,
    eps: Annotated[str, typer.Option(help="Comma-separated L-inf budgets, e.g. 4/255,8/255.")] = "4/255,8/255",
    steps: StepsOpt = 20,
    objective: ObjectiveOpt = Objective.gt,
    limit: Annotated[int | None, typer.Option(
        help="Use only the first N images [with --purifier: 8 centre crops of --size].")] = None,
    seed: SeedOpt = 0,
    surrogate: SurrogateOpt = None,
    simba_iterations: Annotated[int | None, typer.Option(
        help="SimBA iterations per image [default: 1000; with --purifier 500].")] = None,
    square_queries: Annotated[int | None, typer.Option(
        help="Square Attack queries per image [default: 1000; with --purifier 500].")] = None,
    cw_search_steps: Annotated[int | None, typer.Option(
        help="C&W binary-search rounds [default: 9; with --purifier 5].")] = None,
    cw_max_iter: Annotated[int | None, typer.Option(
        help="C&W Adam steps per round [default: 100; with --purifier 50].")] = None,
    overwrite: OverwriteOpt = False,
    threads: ThreadsOpt = 0,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = "",
    weights: WeightsOpt = None,
    purifier: Annotated[str | None, typer.Option(
        help="Evaluate the defended pipeline purifier -> MODEL: non-adaptive and adaptive (EOT) attacks.")] = None,
    eot: Annotated[int, typer.Option(help="With --purifier: EOT noise samples per adaptive attack step.")] = 10,
    draws: Annotated[int, typer.Option(help="With --purifier: evaluation noise draws per image.")] = 4,
    size: Annotated[int, typer.Option(help="With --purifier: image side (centre crops; one batch).")] = 128,
    attack_batch: AttackBatchOpt = 0,
) -> None:
    """Robustness table: output PSNR/SSIM under each attack and budget, vs clean.

    With --purifier, one defence table per budget: MODEL alone and purifier -> MODEL, with
    non-adaptive attacks (crafted on MODEL alone), adaptive ones (EOT over the purifier's
    noise; exact gradients through <= 4 steps, BPDA through longer samplers) and black-box
    ones that query the defended pipeline. --data may also be synth:poled (held-out photos).
    """
    from udc_edge.attacks import parse_attack_names, parse_eps_list
    from udc_edge.core.progress import progress_bar
    from udc_edge.data.readers import open_paired_dataset
    from udc_edge.evaluation.robustness import (
        DEFAULT_EVAL_ATTACKS,
        check_plan,
        evaluate_robustness,
        is_engine_name,
        plan_attacks,
        write_report,
    )

    eps_values = parse_eps_list(eps)
    given = {"simba_iterations": simba_iterations, "square_queries": square_queries,
             "cw_search_steps": cw_search_steps, "cw_max_iter": cw_max_iter}  # None: the mode's default
    if purifier is not None:
        from udc_edge.defence.defence import check_defended_eval, defence_specs

        plain_only = {"--surrogate": surrogate, "--arch": arch, "--arch-kwargs": arch_kwargs, "--weights": weights,
                      "--objective clean": objective != Objective.gt}
        count = check_defended_eval(plain_only, is_engine_name(model), limit)
        specs_d = defence_specs(eps_values, attacks, attack_steps=steps, eot=eot, draws=draws, seed=seed,
                                attack_batch=attack_batch, **given)
        _eval_defended(ctx, model, purifier, str(data), specs_d, out_dir, count, size, overwrite, threads)
        return
    specs = plan_attacks(parse_attack_names(attacks or DEFAULT_EVAL_ATTACKS), eps_values, objective=objective.value,
                         seed=seed, steps=steps, **given)
    check_plan(specs, is_engine_name(model) and arch is None, model, surrogate is not None)
    check_out(out_dir, data, model, surrogate, weights, overwrite=overwrite)
    dataset = open_paired_dataset(data)
    target, sur, info = _targets(model, surrogate, arch, arch_kwargs, weights, threads)
    n = len(dataset) if limit is None else min(max(limit, 0), len(dataset))
    with progress_bar("attacking", n * len(specs), quiet(ctx)) as advance:
        report, grid = evaluate_robustness(target, dataset, specs, limit=limit, surrogate=sur, model_info=info,
                                           target_name=model, progress=advance)
    write_report(report, grid, out_dir, overwrite=overwrite)
    _print_table(report)
    stdout.print(f"wrote report.json, report.md and grid.png to {out_dir}")


def _eval_defended(ctx: typer.Context, model: str, purifier: str, data: str, specs: list, out_dir: Path,
                   count: int, size: int, overwrite: bool, threads: int) -> None:
    """``eval MODEL --purifier P``: one defence table per budget, written as report.json/.md."""
    from udc_edge.core.progress import progress_bar
    from udc_edge.defence.defence import load_eval_set
    from udc_edge.defence.defence_table import defence_table, write_tables
    from udc_edge.diffusion.purifier import load_purifier
    from udc_edge.models.zoo import load_model

    set_threads(threads)
    check_out(out_dir, data, model, purifier, overwrite=overwrite)
    net, _ = load_model(model)
    pur, _ = load_purifier(purifier)
    x, y = load_eval_set(data, count, size, specs[0].seed)
    tables, cache = [], {}  # C&W has no eps: crafted once for all budgets
    with progress_bar("attacking", 4 * len(specs), quiet(ctx)) as adv:
        for spec in specs:
            tables.append(defence_table(net, x, y, spec, purifiers=[(purifier, pur)], progress=adv, cache=cache))
    write_tables(tables, out_dir, {"model": model, "purifier": purifier, "data": data}, overwrite)
    for t in tables:
        stdout.print(t.to_markdown(), soft_wrap=True, markup=False, highlight=False)
    stdout.print(f"wrote report.json and report.md to {out_dir}")


def _print_table(report) -> None:
    from rich import box
    from rich.table import Table

    def f(v, d=2):
        return "-" if v is None else f"{v:.{d}f}"

    transfer = any(r.transfer for r in report.rows)
    table = Table(
        title=f"robustness on {report.images} image(s): output vs {report.reference} (PSNR in dB)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        caption="* transfer: crafted on the surrogate" if transfer else None,
    )
    for col in ("attack", "eps", "PSNR", "worst", "drop", "SSIM", "worst", "L2", "queries", "sec"):
        table.add_column(col, justify="left" if col in ("attack", "eps") else "right", no_wrap=True)
    c = report.clean
    table.add_row("clean", "-", f(c["psnr_mean"]), f(c["psnr_worst"]), "-", f(c["ssim_mean"], 3),
                  f(c["ssim_worst"], 3), "-", "-", "-")
    for r in report.rows:
        table.add_row(r.attack + ("*" if r.transfer else ""), r.eps_label, f(r.psnr_mean), f(r.psnr_worst),
                      f(r.psnr_drop), f(r.ssim_mean, 3), f(r.ssim_worst, 3), f(r.l2_mean),
                      f"{r.queries_mean:.0f}", f"{r.seconds:.0f}")
    print_table(table)


def register(app: typer.Typer) -> None:
    app.command("attack")(attack_cmd)
    app.command("eval")(eval_cmd)
