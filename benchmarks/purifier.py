"""Purifier benchmark: teacher vs distilled students, and the fine-tuned restorer, in ONE run.

On a small synthetic P-OLED set (held-out ``photos:test`` crops) it measures, with the same
inputs, noise and machine for every row:

- purifier latency per image (teacher N steps vs the k = 1, 2 students) and their ratio;
- PSNR/SSIM on clean inputs and under PGD 8/255 *non-adaptive* (crafted on the restorer
  alone, then purified), and the fraction of the teacher's attacked-PSNR gain over the
  undefended restorer that each student recovers;
- the restorer fine-tuned on purified inputs (``--finetuned``, or a short fine-tune made
  here and recorded): clean and attacked PSNR with the k = 1 student in front;
- adaptive PGD + EOT through the k = 1 student (exact gradients), reported as measured.

    python benchmarks/purifier.py [--restorer unet-s-poled] [--out benchmarks/results/purifier.json]

Writes JSON (and prints it). The default run takes about 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from udc_edge.evaluation.defence import (
    DefenceSpec,
    DefendedPipeline,
    latency_ms,
    load_eval_set,
    measure,
    pgd_adaptive,
    pgd_on_restorer,
)
from udc_edge.fileio import write_json_atomic
from udc_edge.models.purifier import check_pair, load_purifier
from udc_edge.models.zoo import load_model, shipped_models


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--restorer", default="unet-s-poled", help="shipped name or checkpoint of the restorer")
    ap.add_argument("--teacher", default="purifier-poled")
    ap.add_argument("--students", default="purifier-poled-k1,purifier-poled-k2")
    ap.add_argument("--finetuned", default="", help="fine-tuned restorer; empty: fine-tune here (--ft-steps)")
    ap.add_argument("--ft-steps", type=int, default=150)
    ap.add_argument("--ft-mix", default="clean,purified")
    ap.add_argument("--count", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--latency-size", type=int, default=128)
    ap.add_argument("--attack-steps", type=int, default=20)
    ap.add_argument("--eot", type=int, default=4, help="EOT samples of the adaptive attack on the k=1 student")
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/purifier.json")
    return ap.parse_args()


def _finetune(args: argparse.Namespace, student: str, work: Path) -> tuple[str, dict]:
    from udc_edge.training.finetune import FinetuneSpec, finetune_restorer, parse_mix

    spec = FinetuneSpec(restorer=args.restorer, purifier=student, out=str(work / "ft"), data="synth:poled",
                        mix=parse_mix(args.ft_mix), steps=args.ft_steps, batch=8, patch=64, val_every=args.ft_steps,
                        val_count=4, pool=48, seed=args.seed, threads=args.threads)
    rep = finetune_restorer(spec)
    return str(work / "ft" / "best"), {"made_here": True, "steps": args.ft_steps, "mix": list(spec.mix),
                                       "seconds": rep.seconds, "validation_before": rep.before,
                                       "validation_best": {k: rep.best[k] for k in ("psnr", "clean_psnr")}}


def main() -> int:
    args = _args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    result: dict = {"benchmark": "purifier", "machine": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": args.threads, "args": vars(args), "notes": []}
    if args.restorer == "unet-s-poled" and "unet-s-poled" not in shipped_models():
        print("the shipped restorer unet-s-poled does not exist (udc_edge/weights/unet-s-poled); "
              "give --restorer CHECKPOINT", file=sys.stderr)
        return 1
    restorer, rdesc = load_model(args.restorer)
    result["restorer"] = {"name": args.restorer, "source": rdesc.get("source"), "shipped": args.restorer in shipped_models()}
    teacher, _ = load_purifier(args.teacher)
    names = [s for s in args.students.split(",") if s]
    students = [load_purifier(s)[0] for s in names]
    for name, s in zip(names, students):
        check_pair(teacher, s, args.teacher, name)
    x, y = load_eval_set("synth:poled", args.count, args.size, args.seed)
    spec = DefenceSpec(attack_steps=args.attack_steps, eot=args.eot, draws=args.draws, seed=args.seed)
    result["eval_set"] = {"data": "synth:poled (photos:test)", "count": args.count, "size": args.size,
                          "pgd": spec.pgd().to_dict(), "draws": args.draws}

    # Latency of the purifier alone (no restorer) at --latency-size, same noise and machine.
    xl = torch.rand(1, 3, args.latency_size, args.latency_size, generator=torch.Generator().manual_seed(0))
    lat = {args.teacher: latency_ms(DefendedPipeline(torch.nn.Identity(), teacher.sampler()), xl)}
    for name, s in zip(names, students):
        lat[name] = latency_ms(DefendedPipeline(torch.nn.Identity(), s.sampler()), xl)
    result["latency_ms_per_image"] = {"size": args.latency_size, **lat}
    result["latency_ratio_student_over_teacher"] = {n: lat[n] / lat[args.teacher] for n in names}

    # Clean and non-adaptive PGD through each purifier.
    restorer.eval()
    x_adv = pgd_on_restorer(restorer, x, y, spec)
    plain = DefendedPipeline(restorer)
    rows = {"restorer": {"clean": measure(plain, x, y), "pgd_nonadaptive": measure(plain, x_adv, y)}}
    for name, p in [(args.teacher, teacher), *zip(names, students)]:
        pipe = DefendedPipeline(restorer, p.sampler())
        rows[name] = {"clean": measure(pipe, x, y, args.draws, args.seed),
                      "pgd_nonadaptive": measure(pipe, x_adv, y, args.draws, args.seed),
                      "purifier": f"{p.role} t*={p.t_star} steps={p.steps}"}
    base = rows["restorer"]["pgd_nonadaptive"]["psnr"]
    gain_t = rows[args.teacher]["pgd_nonadaptive"]["psnr"] - base
    result["attacked_psnr_gain_db"] = {n: rows[n]["pgd_nonadaptive"]["psnr"] - base for n in [args.teacher, *names]}
    result["gain_recovery_student_over_teacher"] = {
        n: (result["attacked_psnr_gain_db"][n] / gain_t if gain_t > 0 else None) for n in names}
    if gain_t <= 0:
        result["notes"].append("the teacher does not raise the attacked PSNR here, so gain recovery is undefined")

    # Adaptive PGD + EOT with exact gradients through the k=1 student.
    if students:
        pipe = DefendedPipeline(restorer, students[0].sampler())
        rows[names[0]]["pgd_adaptive_eot"] = measure(pipe, pgd_adaptive(pipe, x, y, spec), y, args.draws, args.seed)

    # The restorer fine-tuned on purified inputs, behind the k=1 student.
    with tempfile.TemporaryDirectory() as work:
        if students:
            ft_path, ft_info = (args.finetuned, {"made_here": False}) if args.finetuned else _finetune(
                args, names[0], Path(work))
            ft, _ = load_model(ft_path)
            ft.eval()
            pipe = DefendedPipeline(ft, students[0].sampler())
            x_adv_ft = pgd_on_restorer(ft, x, y, spec)
            rows["finetuned+" + names[0]] = {
                "clean": measure(pipe, x, y, args.draws, args.seed),
                "pgd_nonadaptive": measure(pipe, x_adv_ft, y, args.draws, args.seed),
                "pgd_adaptive_eot": measure(pipe, pgd_adaptive(pipe, x, y, spec), y, args.draws, args.seed),
                "restorer_alone_clean": measure(DefendedPipeline(ft), x, y), "finetune": ft_info}
            r0, rf = rows["restorer"], rows["finetuned+" + names[0]]
            lost = r0["clean"]["psnr"] - r0["pgd_nonadaptive"]["psnr"]
            result["finetuned_goals"] = {
                "clean_drop_db": r0["clean"]["psnr"] - rf["clean"]["psnr"],
                "pgd_psnr_lost_by_restorer_db": lost,
                "fraction_won_back": (rf["pgd_nonadaptive"]["psnr"] - r0["pgd_nonadaptive"]["psnr"]) / lost
                if lost > 0 else None}
    result["rows"] = rows
    result["seconds"] = time.perf_counter() - t_start
    write_json_atomic(args.out, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
