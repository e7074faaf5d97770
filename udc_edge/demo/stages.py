"""The stages of ``udc-edge demo``, each a small function over a shared context.

Each returns a :class:`Stage` with its numbers; a stage whose parts are missing (e.g. no
shipped purifier) says so instead of pretending. Kept apart from ``demo.py`` (the runner
and report) so each stays short.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from udc_edge.core.metrics import psnr, ssim
from udc_edge.data.images import to_hwc, to_nchw


@dataclass
class Stage:
    """One step of the demo and its outcome: ``done``, ``not built yet``, ``skipped`` or ``failed``."""

    name: str
    status: str
    seconds: float = 0.0
    details: dict = field(default_factory=dict)
    note: str = ""


@dataclass
class Context:
    out: Path
    quick: bool
    quiet: bool
    display: str = "poled"
    restorer_name: str = "unet-s-poled"
    purifier_name: str = "purifier-poled-oneshot"
    data: dict[str, Any] = field(default_factory=dict)  # filled by the stages as they run


def _mean(vals: list[float]) -> float:
    return round(float(np.mean(vals)), 3)


def synthesise(ctx: Context) -> Stage:
    from udc_edge.core.progress import progress_bar
    from udc_edge.data.readers import open_paired_dataset
    from udc_edge.data.synth import SynthSpec, write_synthetic_dataset

    spec = SynthSpec(display=ctx.display, count=3 if ctx.quick else 6, size=96 if ctx.quick else 128,
                     source="photos:test", seed=0)
    with progress_bar("synthesising P-OLED test set", spec.count, ctx.quiet) as adv:
        meta = write_synthetic_dataset(ctx.out / "data", spec, progress=adv)
    (ctx.out / "psf.png").write_bytes((ctx.out / "data" / "psf.png").read_bytes())
    ds = open_paired_dataset(ctx.out / "data")
    ctx.data["pairs"] = [(ds[i].lq, ds[i].gt) for i in range(len(ds))]
    st = meta["stats"]
    return Stage(
        "synthesise",
        "done",
        details={"pairs": spec.count, "size": spec.size, "degraded_psnr": st["psnr_lq_vs_gt_mean"]},
        note=f"{spec.count} held-out photos at {spec.size} px; degraded input {st['psnr_lq_vs_gt_mean']:.2f} dB",
    )


def restore(ctx: Context) -> Stage:
    from udc_edge.models.padding import run_padded
    from udc_edge.models.zoo import load_model

    model, _ = load_model(ctx.restorer_name)
    ctx.data["restorer"] = model
    outs, p_in, p_out, s_in, s_out = [], [], [], [], []
    with torch.no_grad():
        for lq, gt in ctx.data["pairs"]:
            y = to_hwc(run_padded(model, to_nchw(lq)))
            outs.append(y)
            p_in.append(psnr(lq, gt))
            p_out.append(psnr(y, gt))
            s_in.append(ssim(lq, gt))
            s_out.append(ssim(y, gt))
    ctx.data["restored"] = outs
    d = {"input_psnr": _mean(p_in), "output_psnr": _mean(p_out), "input_ssim": _mean(s_in), "output_ssim": _mean(s_out)}
    return Stage("restore", "done", details=d,
                 note=f"{ctx.restorer_name}: PSNR {d['input_psnr']:.2f} -> {d['output_psnr']:.2f} dB, "
                      f"SSIM {d['input_ssim']:.3f} -> {d['output_ssim']:.3f}")


def attack(ctx: Context) -> Stage:
    from udc_edge.attacks import AttackSpec
    from udc_edge.attacks import attack as run_attack
    from udc_edge.models.padding import Padded

    target = Padded(ctx.data["restorer"]).eval()
    spec = AttackSpec("pgd", eps=8 / 255, steps=10 if ctx.quick else 20, seed=0)
    advs, outs, p = [], [], []
    for lq, gt in ctx.data["pairs"]:
        res = run_attack(target, to_nchw(lq), to_nchw(gt), spec)
        x_adv = res.x_adv
        with torch.no_grad():
            y = to_hwc(target(x_adv))
        advs.append(to_hwc(x_adv))
        outs.append(y)
        p.append(psnr(y, gt))
    ctx.data["adv"], ctx.data["restored_adv"] = advs, outs
    clean = ctx.data.get("restored")
    clean_p = _mean([psnr(y, gt) for y, (_, gt) in zip(clean, ctx.data["pairs"], strict=True)])
    d = {"attack": f"PGD-{spec.steps} L-inf 8/255 (white-box, objective gt)", "clean_psnr": clean_p,
         "attacked_psnr": _mean(p), "drop_db": round(clean_p - _mean(p), 3)}
    return Stage("attack", "done", details=d,
                 note=f"{d['attack']}: restored PSNR {clean_p:.2f} -> {d['attacked_psnr']:.2f} dB")


def purify(ctx: Context) -> Stage:
    from udc_edge.models.padding import run_padded
    from udc_edge.models.zoo import shipped_models

    if ctx.purifier_name not in shipped_models():
        return Stage("purify", "not built yet", note=f"no shipped purifier {ctx.purifier_name!r}")
    from udc_edge.diffusion.purifier import load_purifier

    pur, _ = load_purifier(ctx.purifier_name)
    gen = torch.Generator().manual_seed(0)
    rows = {"clean": [], "attacked": []}
    outs = []
    with torch.no_grad():
        for (lq, gt), adv in zip(ctx.data["pairs"], ctx.data["adv"], strict=True):
            for key, x in (("clean", lq), ("attacked", adv)):
                xt = to_nchw(x)
                y = to_hwc(run_padded(ctx.data["restorer"], pur(xt, torch.randn(xt.shape, generator=gen))))
                rows[key].append(psnr(y, gt))
                if key == "attacked":
                    outs.append(y)
    ctx.data["purified_adv"] = outs
    d = {"purifier": ctx.purifier_name, "t_star": pur.t_star, "steps": pur.steps, "average": pur.average,
         "clean_psnr": _mean(rows["clean"]), "attacked_psnr": _mean(rows["attacked"]),
         "note": "non-adaptive: PGD crafted on the restorer alone"}
    return Stage("purify", "done", details=d,
                 note=f"{ctx.purifier_name} (t*={pur.t_star}, {pur.steps} step, mean of {pur.average}) + restorer: "
                      f"clean {d['clean_psnr']:.2f} dB, "
                      f"attacked {d['attacked_psnr']:.2f} dB (non-adaptive PGD)")


def export_build(ctx: Context) -> Stage:
    from udc_edge.engines.build import build_engine
    from udc_edge.engines.spec import BuildSpec
    from udc_edge.export.onnx_export import ExportSpec, export_onnx

    eng = ctx.out / "engines"
    eng.mkdir()
    rep = export_onnx(ctx.data["restorer"], eng / "restorer.onnx", ExportSpec(height=128, width=128, parity_images=1))
    b32 = build_engine(eng / "restorer.onnx", eng / "restorer-fp32.onnx", BuildSpec(threads=1))
    # Parity on SSIM needs more than the default 40 dB: keep the most sensitive convs in float.
    calib = {"precision": "int8", "calib": f"synth:{ctx.display}", "calib_count": 8 if ctx.quick else 16, "threads": 1,
                 "auto_exclude": True, "min_fidelity": 45.0, "calib_cache": str(eng / "calib.json")}
    b8 = build_engine(eng / "restorer.onnx", eng / "restorer-int8.onnx", BuildSpec(**calib))
    ctx.data["engines"] = [str(eng / "restorer-fp32.onnx"), str(eng / "restorer-int8.onnx")]
    d = {"export_max_abs_err": max(p["max_abs_err"] for p in rep.parity), "fp32_mb": round(b32.size_mb, 2),
         "int8_mb": round(b8.size_mb, 2), "int8_fidelity_db": round(b8.fidelity_db or 0, 2),
         "int8_vs_fp32_speed": round(b8.int8_speedup_vs_fp32 or 0, 2), "warnings": b8.warnings,
         "kept_in_float": [e["node"] for e in b8.excluded]}
    note = (f"ONNX (max abs error {d['export_max_abs_err']:.1e} vs torch); ORT FP32 {d['fp32_mb']} MB, "
            f"INT8 {d['int8_mb']} MB at {d['int8_fidelity_db']} dB vs FP32 "
            f"({len(d['kept_in_float'])} sensitive conv(s) kept in float)")
    from udc_edge.engines import openvino as ovb

    if ovb.is_available():
        bov = build_engine(eng / "restorer.onnx", eng / "restorer-ov-int8.xml", BuildSpec(backend="openvino", **calib))
        ctx.data["engines"].append(str(eng / "restorer-ov-int8.xml"))
        d |= {"openvino_int8_mb": round(bov.size_mb, 2), "openvino_int8_fidelity_db": round(bov.fidelity_db or 0, 2),
              "openvino_int8_runs_in": bov.inference_precision}
        note += f"; OpenVINO INT8 {d['openvino_int8_mb']} MB at {d['openvino_int8_fidelity_db']} dB"
    else:
        note += f"; OpenVINO not installed, not built ({ovb.EXTRA_HINT})"
    return Stage("export + build", "done", details=d, note=note)


def _speedups(p50: dict[str, float]) -> dict[str, float]:
    """Each engine's speed relative to torch FP32 (empty when torch was not timed)."""
    base = p50.get("torch-fp32")
    return {k: round(base / v, 2) for k, v in p50.items()} if base else {}


def bench(ctx: Context) -> Stage:
    from udc_edge.deploy.bench import BenchSpec, run_bench, save_report

    size = 128 if ctx.quick else 256
    rep = run_bench([ctx.restorer_name, *ctx.data["engines"]],
                    BenchSpec(shape=(1, 3, size, size), iters=5 if ctx.quick else 15, warmup=2, threads=1))
    save_report(rep, ctx.out / "bench")
    timed = [r for r in rep.rows if r.latency_ms]
    ctx.data["p50_by_engine"] = {r.name: r.latency_ms["p50"] for r in timed if r.name != ctx.restorer_name}
    (ctx.out / "bench.png").write_bytes((ctx.out / "bench" / "bench.png").read_bytes())
    t = {r.backend + "-" + r.precision: round(r.latency_ms["p50"], 2) for r in timed}
    d = {"shape": f"1x3x{size}x{size}", "threads": 1, "p50_ms": t, "speedup_vs_torch": _speedups(t)}
    return Stage("bench", "done", details=d, note="p50 " + ", ".join(f"{k} {v} ms" for k, v in t.items())
                 + " (1 thread, interleaved; ratios matter, absolute CPU times are noise)")


def _fastest_passing(ctx: Context, rs, spec, load_engine, verify_engine):
    """Verify the engines fastest first (bench p50) until one passes: ``(report, worst row,
    engine path, "backend precision", one "name: pass|FAIL" per engine tried)``."""
    p50 = ctx.data.get("p50_by_engine") or {}
    order = sorted(ctx.data["engines"], key=lambda e: p50.get(e, float("inf")))
    tried = []
    for path in order:
        with load_engine(path, threads=1) as eng:
            rep, row = verify_engine(eng, rs, spec, name=Path(path).name)
            desc = f"{eng.info().backend} {eng.info().precision}"
        tried.append(f"{Path(path).name}: {'pass' if rep.passed else 'FAIL'}")
        if rep.passed:
            break
    return rep, row, path, desc, tried


def _check_rows(checks) -> list[dict]:
    """verify's rows for the demo's JSON; a row that did not run has no value."""
    return [{"check": c.name, "reference": c.reference, "engine": c.engine,
             "value": None if c.value is None else round(c.value, 4),
             "threshold": c.threshold, "passed": c.passed} for c in checks]


def verify(ctx: Context) -> Stage:
    from udc_edge.data.readers import open_paired_dataset
    from udc_edge.deploy.verify import VerifySpec, make_reference_set, verify_engine
    from udc_edge.engines import load_engine

    spec = VerifySpec(
        attacks=("pgd", "simba"),
        steps=10 if ctx.quick else 20,
        simba_iterations=50 if ctx.quick else 150,
        limit=2 if ctx.quick else 4,
        direct=False,  # white-box on the engine's replica: udc-edge verify
    )
    rs = make_reference_set(ctx.data["restorer"], open_paired_dataset(ctx.out / "data"), spec)
    rep, row, path, desc, tried = _fastest_passing(ctx, rs, spec, load_engine, verify_engine)
    rep.notes.append("white-box attacks crafted on the engine's own INT8 numerics are left to `udc-edge verify` "
                     "(docs/verify.md): the demo's rows are transferred and black-box only")
    (ctx.out / "verify.md").write_text(rep.to_markdown())
    if row:
        from udc_edge.core.figures import image_grid
        from udc_edge.data.images import write_png
        from udc_edge.deploy.verify import GRID_LABELS

        write_png(ctx.out / "worst.png", image_grid([row], GRID_LABELS), bit_depth=8)
    failed = [c.name for c in rep.checks if not c.passed]
    d = {"passed": rep.passed, "checks": len(rep.checks), "failed": failed, "engine": Path(path).name,
         "backend": desc, "tried_fastest_first": tried,
         "rows": _check_rows(rep.checks)}
    note = (f"uses {desc} ({Path(path).name}), the fastest engine that passes all {len(rep.checks)} parity checks"
            if rep.passed else f"no engine passes; the last tried ({Path(path).name}) FAILS {len(failed)} of "
            f"{len(rep.checks)} parity checks") + f" (tried fastest first: {', '.join(tried)})"
    if failed:
        note += ": " + "; ".join(failed)
    return Stage("verify", "done", details=d, note=note)


def grid(ctx: Context) -> None:
    """The picture of the demo: a row per image."""
    from udc_edge.core.figures import image_grid
    from udc_edge.data.images import write_png

    cols = ["ground truth", "P-OLED degraded", "restored", "PGD 8/255 input", "restored (attacked)"]
    rows = []
    for i, (lq, gt) in enumerate(ctx.data["pairs"][:4]):
        row = [gt, lq]
        for key in ("restored", "adv", "restored_adv", "purified_adv"):
            if key in ctx.data:
                row.append(ctx.data[key][i])
        rows.append(row)
    if "purified_adv" in ctx.data:
        cols.append("purified + restored")
    write_png(ctx.out / "grid.png", image_grid(rows, cols), bit_depth=8)


STAGES = [synthesise, restore, attack, purify, export_build, bench, verify]
