"""Where the one-shot purifier's clean-PSNR loss comes from: noise (variance) or smoothing (bias).

    python benchmarks/purifier_limits.py [--t-stars 0.04,0.05,0.06] [--out benchmarks/results/purifier-limits.json]

On held-out synthetic P-OLED crops (default: the 24 x 96 px set of the confirmation run,
seed 7) it purifies with the purifier's UNet in one step at each t*, averaging K = 1, 2,
4, 8, 16, 32 independent noise draws, and once more with 8 draws each under its own
flip/transpose (a dihedral self-ensemble that also averages the network's own
orientation-dependent errors). For each setting it reports the purified image's PSNR
against its input and the restorer's PSNR against ground truth on clean inputs and on
PGD 8/255 inputs crafted on the restorer alone (non-adaptive).

If K -> 32 and the self-ensemble change little, the loss is the denoiser's smoothing,
which no amount of averaging removes: only a better denoiser, or a restorer that learns
to undo it, can win it back. Writes JSON. The run behind purifier-limits.json took 97 s (1 thread).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from udc_edge.core.fileio import write_json_atomic
from udc_edge.core.metrics import psnr
from udc_edge.defence.defence import DefenceSpec, craft_on_restorer, load_eval_set
from udc_edge.diffusion.purifier import load_purifier
from udc_edge.diffusion.schedule import ddim_reverse, diffuse, from_model
from udc_edge.models.padding import run_padded
from udc_edge.models.zoo import load_model

DRAWS = (1, 2, 4, 8, 16, 32)


def dihedral(z: torch.Tensor, i: int, inverse: bool = False) -> torch.Tensor:
    """The i-th of 8 flips/transposes of the last two axes (or its inverse)."""
    if inverse and i >= 4:
        z = z.transpose(-1, -2)
    if i & 1:
        z = z.flip(-1)
    if i & 2:
        z = z.flip(-2)
    if not inverse and i >= 4:
        z = z.transpose(-1, -2)
    return z


@torch.no_grad()
def one_shot(unet: torch.nn.Module, x: torch.Tensor, t_star: float, noise: torch.Tensor, view: int = 0) -> torch.Tensor:
    """One purification: diffuse to t*, the UNet's x0 prediction, in view ``view``."""
    z = diffuse(dihedral(x, view), t_star, dihedral(noise, view))
    return dihedral(from_model(ddim_reverse(unet, z, t_star, 1)), view, inverse=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--restorer", default="unet-s-poled")
    ap.add_argument("--purifier", default="purifier-poled", help="its UNet is used; its t* and steps are not")
    ap.add_argument("--t-stars", default="0.04,0.05,0.06")
    ap.add_argument("--count", type=int, default=24)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/purifier-limits.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    start = time.perf_counter()
    x, y = load_eval_set("synth:poled", a.count, a.size, a.seed)
    restorer, _ = load_model(a.restorer)
    restorer.eval()
    unet = load_purifier(a.purifier)[0].unet.eval()
    x_adv = craft_on_restorer(restorer, x, y, DefenceSpec(attack_steps=20, eot=1, draws=1, seed=a.seed))

    def mean_psnr(pred: torch.Tensor, ref: torch.Tensor) -> float:
        return sum(psnr(p, r) for p, r in zip(pred.numpy(), ref.numpy(), strict=True)) / len(ref)

    def restored(inp: torch.Tensor) -> float:
        with torch.no_grad():
            return mean_psnr(run_padded(restorer, inp).clamp(0, 1), y)

    def fidelity(p: torch.Tensor, inp: torch.Tensor) -> float:
        return mean_psnr(p, inp)

    result: dict = {"benchmark": "purifier_limits", "machine": platform.processor() or platform.machine(),
                    "torch": torch.__version__, "threads": a.threads, "args": vars(a),
                    "undefended": {"clean": restored(x), "pgd_nonadaptive": restored(x_adv)}, "t_stars": {}}
    gen = torch.Generator().manual_seed(a.seed + 1)
    for t_star in (float(t) for t in a.t_stars.split(",")):
        noises = [torch.randn(x.shape, generator=gen) for _ in range(max(DRAWS))]
        outs = {name: [one_shot(unet, inp, t_star, n) for n in noises] for name, inp in (("clean", x), ("pgd", x_adv))}
        rows = {}
        for k in DRAWS:
            pc, pa = (torch.stack(outs[n][:k]).mean(0) for n in ("clean", "pgd"))
            rows[f"draws={k}"] = {
                "purified_vs_input": fidelity(pc, x),
                "clean": restored(pc),
                "pgd_nonadaptive": restored(pa),
            }
        pc, pa = (torch.stack([one_shot(unet, inp, t_star, noises[i], i) for i in range(8)]).mean(0)
                  for inp in (x, x_adv))
        rows["draws=8 dihedral"] = {"purified_vs_input": fidelity(pc, x), "clean": restored(pc),
                                    "pgd_nonadaptive": restored(pa)}
        result["t_stars"][str(t_star)] = rows
        print(f"t*={t_star}: " + ", ".join(f"{k} {v['clean']:.2f}/{v['pgd_nonadaptive']:.2f}" for k, v in rows.items()),
              flush=True)
    result["seconds"] = time.perf_counter() - start
    write_json_atomic(a.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
