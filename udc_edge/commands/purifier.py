"""``udc-edge train purifier``, ``udc-edge distill``, ``udc-edge finetune`` and
``udc-edge purifier tune|table|configure``: the diffusion-purification defence."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from udc_edge.commands.common import (
    AttackBatchOpt,
    OverwriteOpt,
    PoolOpt,
    SeedOpt,
    ThreadsOpt,
    TrainDataOpt,
    check_out,
    json_opt,
    quiet,
    set_threads,
    stdout,
)
from udc_edge.commands.train import DeviceOpt, WeightDecayOpt, WorkersOpt, train_app

purifier_app = typer.Typer(help="Diffusion purifier: pick t* (tune), freeze a setting (configure), evaluate the "
                                "defence (table).",
                           no_args_is_help=True)

PurifierArg = Annotated[str, typer.Argument(help="Purifier: shipped name (purifier-poled), checkpoint or run folder.")]


def train_purifier_cmd(
    ctx: typer.Context,
    data: TrainDataOpt = "synth:poled",
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: best/, last/, state, train_log.json.")] = Path(
        "runs/purifier"
    ),
    domain: Annotated[str, typer.Option(help="lq: the restorer's degraded inputs; gt: clean images.")] = "lq",
    unet: Annotated[str, typer.Option(help="UNet preset: purifier-s (shipped) or purifier-t (tiny).")] = "purifier-s",
    unet_kwargs: Annotated[
        str, typer.Option(help="JSON overrides: block_out_channels, layers_per_block, norm_num_groups.")
    ] = "",
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 4000,
    batch: Annotated[int, typer.Option(help="Batch size per process.")] = 8,
    patch: Annotated[int, typer.Option(help="Random crop size (the purifier's training resolution).")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine schedule).")] = 1e-3,
    weight_decay: WeightDecayOpt = 0.0,
    t_max: Annotated[float, typer.Option(help="Train timesteps below this fraction of the schedule.")] = 0.2,
    t_star: Annotated[float, typer.Option(help="Default purification noise level t* in (0, 1).")] = 0.1,
    sample_steps: Annotated[int, typer.Option(help="Default DDIM steps N of the teacher sampler.")] = 50,
    val_every: Annotated[int, typer.Option(help="Validate and checkpoint every K steps.")] = 500,
    val_count: Annotated[int, typer.Option(help="Held-out validation images.")] = 8,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 0,
    pool: PoolOpt = 192,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 0,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last and OUT/state.safetensors.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Train the diffusion purifier (DDPM, epsilon prediction) on degraded UDC images."""
    from udc_edge.core.progress import progress_bar
    from udc_edge.training.distributed import is_main_process
    from udc_edge.training.purifier import PurifierTrainSpec, train_purifier

    spec = PurifierTrainSpec(
        data=data,
        out=str(out),
        domain=domain,
        unet=unet,
        unet_kwargs=json_opt(unet_kwargs, "--unet-kwargs"),
        steps=steps,
        batch=batch,
        patch=patch,
        lr=lr,
        weight_decay=weight_decay,
        t_max=t_max,
        t_star=t_star,
        sample_steps=sample_steps,
        val_every=val_every,
        val_count=val_count,
        seed=seed,
        threads=threads,
        pool=pool,
        device=device,
        workers=workers,
        resume=resume,
        overwrite=overwrite,
    )
    silent = quiet(ctx) or not is_main_process()
    with progress_bar("preparing data", None, silent) as setup, progress_bar("training", steps, silent) as adv:
        report = train_purifier(spec, progress=adv, setup_progress=setup)
    if is_main_process():
        stdout.print(report.summary())


def distill_cmd(
    ctx: typer.Context,
    teacher: PurifierArg,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run folder of the student: best/, last/, state, train_log.json.")
    ],
    steps: Annotated[int, typer.Option(help="Student sampling steps k (1, 2 or 4).")] = 1,
    teacher_steps: Annotated[int, typer.Option(help="Teacher DDIM steps N (0: the teacher's own).")] = 0,
    train_steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 1000,
    data: Annotated[str, typer.Option(help="Training images (default: the teacher's training data).")] = "",
    batch: Annotated[int, typer.Option(help="Batch size per process.")] = 8,
    patch: Annotated[int, typer.Option(help="Crop size (0: the teacher's training resolution).")] = 0,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-4,
    weight_decay: WeightDecayOpt = 0.0,
    targets: Annotated[int, typer.Option(help="Precompute this many teacher outputs once (0: on the fly).")] = 0,
    val_every: Annotated[int, typer.Option(help="Validate every K steps.")] = 200,
    val_count: Annotated[int, typer.Option(help="Validation images.")] = 8,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 0,
    pool: PoolOpt = 192,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 0,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last and OUT/state.safetensors.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Distil an N-step purifier into a k-step student (direct trajectory matching)."""
    from udc_edge.core.progress import progress_bar
    from udc_edge.training.distill import DistillSpec, distill
    from udc_edge.training.distributed import is_main_process

    spec = DistillSpec(
        teacher=teacher,
        out=str(out),
        k=steps,
        teacher_steps=teacher_steps,
        train_steps=train_steps,
        data=data,
        batch=batch,
        patch=patch,
        lr=lr,
        weight_decay=weight_decay,
        targets=targets,
        val_every=val_every,
        val_count=val_count,
        seed=seed,
        threads=threads,
        pool=pool,
        device=device,
        workers=workers,
        resume=resume,
        overwrite=overwrite,
    )
    silent = quiet(ctx) or not is_main_process()
    with progress_bar("preparing data", None, silent) as setup, progress_bar("distilling", train_steps, silent) as adv:
        report = distill(spec, progress=adv, setup_progress=setup)
    if is_main_process():
        stdout.print(report.summary())


def finetune_cmd(
    ctx: typer.Context,
    restorer: Annotated[str, typer.Argument(help="Restorer: shipped name, checkpoint or run folder.")],
    purifier: Annotated[str, typer.Option(help="Purifier (usually a distilled student).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder: best/, last/, state, train_log.json.")],
    data: TrainDataOpt = "synth:poled",
    mix: Annotated[
        str, typer.Option(help="Inputs: clean, purified, adversarial, purified-adversarial.")
    ] = "clean,purified",
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 500,
    batch: Annotated[int, typer.Option(help="Batch size (split evenly over --mix).")] = 8,
    patch: Annotated[int, typer.Option(help="Crop size.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-4,
    weight_decay: WeightDecayOpt = 1e-4,
    eps: Annotated[str, typer.Option(help="PGD budget of adversarial mix components (8/255 or 0.031).")] = "8/255",
    attack_steps: Annotated[int, typer.Option(help="PGD steps per training batch.")] = 5,
    ssim_weight: Annotated[float, typer.Option(help="Weight of 1 - SSIM.")] = 0.2,
    fft_weight: Annotated[float, typer.Option(help="Weight of the FFT L1 term.")] = 0.05,
    target: Annotated[
        str,
        typer.Option(help="Learn ground truth (gt) or the original restorer's output on the clean input (restorer)."),
    ] = "gt",
    val_every: Annotated[int, typer.Option(help="Validate and checkpoint every K steps.")] = 100,
    val_count: Annotated[int, typer.Option(help="Validation images.")] = 8,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 0,
    pool: PoolOpt = 192,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 0,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last and OUT/state.safetensors.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fine-tune a restorer on purified (and optionally adversarial) inputs."""
    from udc_edge.attacks import parse_eps
    from udc_edge.core.progress import progress_bar
    from udc_edge.training.distributed import is_main_process
    from udc_edge.training.finetune import FinetuneSpec, finetune_restorer, parse_mix

    spec = FinetuneSpec(
        restorer=restorer,
        purifier=purifier,
        out=str(out),
        data=data,
        mix=parse_mix(mix),
        steps=steps,
        batch=batch,
        patch=patch,
        lr=lr,
        weight_decay=weight_decay,
        eps=parse_eps(eps),
        attack_steps=attack_steps,
        ssim_weight=ssim_weight,
        fft_weight=fft_weight,
        val_every=val_every,
        val_count=val_count,
        seed=seed,
        threads=threads,
        pool=pool,
        device=device,
        workers=workers,
        resume=resume,
        overwrite=overwrite,
        target=target,
    )
    silent = quiet(ctx) or not is_main_process()
    with progress_bar("preparing data", None, silent) as setup, progress_bar("fine-tuning", steps, silent) as adv:
        report = finetune_restorer(spec, progress=adv, setup_progress=setup)
    if is_main_process():
        stdout.print(report.summary())


EvalDataOpt = Annotated[str, typer.Option(help="synth:poled (held-out photos) or a paired dataset folder.")]
CountOpt = Annotated[int, typer.Option(help="Images to evaluate on.")]
SizeOpt = Annotated[int, typer.Option(help="Image side (centre crop for folders).")]
EpsOpt = Annotated[str, typer.Option(help="PGD L-inf budget (8/255 or 0.031).")]
AttackStepsOpt = Annotated[int, typer.Option(help="PGD steps.")]


@purifier_app.command("tune")
def tune_cmd(
    ctx: typer.Context,
    restorer: Annotated[str, typer.Option(help="Restorer: shipped name, checkpoint or run folder.")],
    purifier: Annotated[str, typer.Option(help="Teacher purifier.")] = "purifier-poled",
    data: EvalDataOpt = "synth:poled",
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for tune.json, tune.md, tune.png.")] = Path(
        "purifier-tune"
    ),
    t_stars: Annotated[
        str, typer.Option(help="Comma-separated t* values in (0, 1).")
    ] = "0.02,0.04,0.06,0.08,0.1,0.12,0.15",
    max_drop: Annotated[float, typer.Option(help="Largest clean PSNR drop (dB) allowed for the chosen t*.")] = 1.0,
    steps: Annotated[int, typer.Option(help="Teacher DDIM steps (0: its own, capped below t*; 1: one-shot).")] = 0,
    average: Annotated[int, typer.Option(help="Noise draws averaged per purification (1-8).")] = 1,
    count: CountOpt = 8,
    size: SizeOpt = 64,
    eps: EpsOpt = "8/255",
    attack_steps: AttackStepsOpt = 20,
    draws: Annotated[int, typer.Option(help="Purifier noise draws per image.")] = 2,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 0,
) -> None:
    """Sweep t* and pick the best attacked PSNR within a clean-PSNR-drop bound."""

    from udc_edge.attacks import parse_eps
    from udc_edge.core.progress import progress_bar
    from udc_edge.defence.defence import load_eval_set
    from udc_edge.defence.purifier_tune import TuneSpec, parse_t_stars, tune_t_star
    from udc_edge.diffusion.purifier import load_purifier
    from udc_edge.models.zoo import load_model

    set_threads(threads)
    spec = TuneSpec(t_stars=parse_t_stars(t_stars), max_clean_drop=max_drop, eps=parse_eps(eps),
                    attack_steps=attack_steps, draws=draws, steps=steps, seed=seed, average=average)
    net, _ = load_model(restorer)
    pur, _ = load_purifier(purifier)
    x, y = load_eval_set(data, count, size, seed)
    with progress_bar("sweeping t*", len(spec.t_stars) + 1, quiet(ctx)) as adv:
        report = tune_t_star(net, pur, x, y, spec, progress=adv)
    paths = report.write(out)
    stdout.print(report.to_markdown(), soft_wrap=True, markup=False, highlight=False)
    stdout.print(f"wrote {paths['json']}, {paths['markdown']} and {paths['plot']}")


@purifier_app.command("table")
def table_cmd(
    ctx: typer.Context,
    restorer: Annotated[str, typer.Option(help="Restorer: shipped name, checkpoint or run folder.")],
    teacher: Annotated[
        str | None,
        typer.Option(help="Teacher purifier (its adaptive attack uses BPDA when it runs more than 4 steps)."),
    ] = None,
    student: Annotated[list[str] | None, typer.Option(help="Distilled student(s); repeat the option.")] = None,
    finetuned: Annotated[str | None, typer.Option(help="Restorer fine-tuned on purified inputs.")] = None,
    purifier: Annotated[
        list[str] | None,
        typer.Option(
            help="Further purifier(s) in front of the restorer (e.g. purifier-poled-oneshot); repeat the option."
        ),
    ] = None,
    finetuned_purifier: Annotated[
        str | None,
        typer.Option(
            help="Purifier in front of the fine-tuned restorer (default: the first student, else the teacher)."
        ),
    ] = None,
    attacks: Annotated[
        str,
        typer.Option(help="Columns beside PGD: cw, ifgsm, mifgsm (on the restorer alone), simba, square (black-box)."),
    ] = "pgd,cw,simba",
    simba_iterations: Annotated[int, typer.Option(help="SimBA iterations per image.")] = 500,
    data: EvalDataOpt = "synth:poled",
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for defence.json and defence.md.")] = Path("defence"),
    count: CountOpt = 4,
    size: SizeOpt = 64,
    eps: EpsOpt = "8/255",
    attack_steps: AttackStepsOpt = 20,
    eot: Annotated[int, typer.Option(help="EOT noise samples per adaptive PGD step.")] = 10,
    draws: Annotated[int, typer.Option(help="Evaluation noise draws per image.")] = 4,
    adaptive: Annotated[bool, typer.Option(help="Run the adaptive (EOT, BPDA/exact) attacks.")] = True,
    attack_batch: AttackBatchOpt = 0,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Defence table: restorer, + teacher, + students, + purifiers, + fine-tuned; clean, PGD non-adaptive
    and adaptive + EOT, C&W, SimBA (black-box on the defended pipeline), latency."""

    from udc_edge.attacks import parse_eps
    from udc_edge.core.errors import UsageError
    from udc_edge.core.fileio import atomic_dir
    from udc_edge.core.progress import progress_bar
    from udc_edge.defence.defence import DefenceSpec, load_eval_set
    from udc_edge.defence.defence_table import defence_table
    from udc_edge.diffusion.purifier import load_purifier
    from udc_edge.models.zoo import load_model

    set_threads(threads)
    if finetuned_purifier and not finetuned:
        raise UsageError("--finetuned-purifier needs --finetuned", "give the fine-tuned restorer too")
    student, purifier = student or [], purifier or []
    spec = DefenceSpec(eps=parse_eps(eps), attack_steps=attack_steps, eot=eot, draws=draws, seed=seed,
                       adaptive=adaptive, attacks=attacks, simba_iterations=simba_iterations,
                       attack_batch=attack_batch)
    check_out(out, data, restorer, teacher, finetuned, finetuned_purifier, *student, *purifier, overwrite=overwrite)
    net, _ = load_model(restorer)
    t = load_purifier(teacher)[0] if teacher else None
    students = [load_purifier(s)[0] for s in student]
    others = [(p, load_purifier(p)[0]) for p in purifier]
    ft = load_model(finetuned)[0] if finetuned else None
    ft_pur = load_purifier(finetuned_purifier)[0] if finetuned_purifier else None
    x, y = load_eval_set(data, count, size, seed)
    rows = 1 + (t is not None) + len(students) + len(others) + (ft is not None)
    with progress_bar("attacking", 2 * rows, quiet(ctx)) as adv:
        table = defence_table(net, x, y, spec, teacher=t, students=students, finetuned=ft, progress=adv,
                              purifiers=others, finetuned_purifier=ft_pur)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "defence.json").write_text(table.to_json())
        (tmp / "defence.md").write_text(table.to_markdown())
    stdout.print(table.to_markdown(), soft_wrap=True, markup=False, highlight=False)
    stdout.print(f"wrote {out / 'defence.json'} and {out / 'defence.md'}")


@purifier_app.command("configure")
def configure_cmd(
    purifier: PurifierArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="New purifier checkpoint folder.")],
    t_star: Annotated[float | None, typer.Option(help="Default t* (fraction of the schedule).")] = None,
    steps: Annotated[int | None, typer.Option(help="Default DDIM steps (1: one-shot denoising).")] = None,
    average: Annotated[int | None, typer.Option(help="Noise draws averaged per purification (1-8).")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Save PURIFIER with other default t*, steps or draws averaged (same weights), e.g. the
    setting `purifier tune` chose, so export, finetune, verify and table use it by name."""
    from udc_edge.core.errors import UsageError
    from udc_edge.diffusion.purifier import Purifier, load_purifier, save_purifier, state_digest

    if t_star is None and steps is None and average is None:
        raise UsageError("nothing to configure", "give --t-star, --steps and/or --average")
    pur, desc = load_purifier(purifier)
    sampler = pur.sampler(t_star, steps, average)  # validates against the role and t_max
    cfg = {**pur.config(), "t_star": sampler.t_star, "steps": sampler.steps, "average": sampler.average}
    new = Purifier(**cfg)
    new.load_state_dict(pur.state_dict())
    extra = {"configured_from": {"purifier": desc.get("name", desc.get("path", purifier)),
                                 "weights_digest": state_digest(pur)}}
    if isinstance(desc.get("training"), dict):  # how the weights were made still holds
        extra["training"] = desc["training"]
    save_purifier(out, new.eval(), extra, overwrite=overwrite)
    stdout.print(f"wrote {out}: {new.role} purifier, t* = {new.t_star:g}, {new.steps} step(s), "
                 f"mean of {new.average} noise draw(s)")


def register(app: typer.Typer) -> None:
    train_app.command("purifier")(train_purifier_cmd)
    app.command("distill")(distill_cmd)
    app.command("finetune")(finetune_cmd)
    app.add_typer(purifier_app, name="purifier")
