"""Pick the purification noise level t* (after UAD-RS's adaptive noise level selection).

For each t* in a sweep, the teacher purifies (its N steps, capped to the timesteps below
t*, or ``steps``; averaged over ``average`` noise draws) the clean inputs and a
non-adaptive PGD input (crafted once on the restorer alone), and the restorer restores
them. The chosen t* has the best attacked PSNR among those whose clean PSNR drop against
the undefended restorer stays within ``max_clean_drop``; if none does, nothing is chosen
and the report says so (no silent fallback). Larger t* drowns the attack in more noise
but also erases more detail: the sweep shows that trade-off as a plot (PNG) and JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from udc_edge.core.errors import UsageError
from udc_edge.core.fileio import atomic_path, write_json_atomic, write_text_atomic
from udc_edge.core.progress import Advance, noop
from udc_edge.defence.defence import DefenceSpec, DefendedPipeline, craft_on_restorer, measure
from udc_edge.diffusion.purifier import Purifier
from udc_edge.diffusion.sampler import check_average
from udc_edge.diffusion.schedule import check_t_star, t_index
from udc_edge.evaluation.robustness import eps_label

DEFAULT_T_STARS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15)


def parse_t_stars(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise UsageError(f"--t-stars {text!r} is not a comma-separated list of numbers", "e.g. 0.05,0.1,0.15") from None
    if not values:
        raise UsageError("--t-stars is empty", "e.g. 0.05,0.1,0.15")
    return tuple(check_t_star(v, "--t-stars value") for v in values)


@dataclass(frozen=True)
class TuneSpec:
    t_stars: tuple[float, ...] = DEFAULT_T_STARS
    max_clean_drop: float = 1.0
    eps: float = 8 / 255
    attack_steps: int = 20
    draws: int = 2
    steps: int = 0  # 0: the teacher's N (capped to the timesteps below each t*)
    seed: int = 0
    average: int = 1  # noise draws averaged per purification

    def __post_init__(self) -> None:
        for t in self.t_stars:
            check_t_star(t, "--t-stars value")
        if self.max_clean_drop < 0:
            raise UsageError(f"--max-drop {self.max_clean_drop} must be >= 0 dB")
        if self.steps < 0:
            raise UsageError("--steps must be >= 0 (0: the teacher's own)")
        check_average(self.average)
        DefenceSpec(eps=self.eps, attack_steps=self.attack_steps, draws=self.draws)  # validates those


@dataclass
class TuneReport:
    rows: list[dict[str, Any]]
    baseline: dict[str, float]
    chosen: float | None
    spec: dict[str, Any]
    images: int
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def to_markdown(self) -> str:
        lines = ["| t* | steps | clean PSNR | clean drop | PGD non-adaptive PSNR | within bound |",
                 "|---|---|---|---|---|---|"]
        for r in self.rows:
            mark = " **chosen**" if self.chosen == r["t_star"] else ""
            avg = f" (mean of {r['average']})" if r.get("average", 1) > 1 else ""
            lines.append(
                f"| {r['t_star']:g}{mark} | {r['steps']}{avg} | {r['clean_psnr']:.2f} | {r['clean_drop']:+.2f} | "
                f"{r['attacked_psnr']:.2f} | {'yes' if r['within_bound'] else 'no'} |"
            )
        b = self.baseline
        lines.append(f"\nundefended restorer: clean {b['clean_psnr']:.2f} dB, PGD {b['attacked_psnr']:.2f} dB; "
                     f"bound: clean drop <= {self.spec['max_clean_drop']} dB; {self.images} images.")
        lines.append(self.summary())
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        if self.chosen is None:
            return (f"no t* keeps the clean PSNR drop within {self.spec['max_clean_drop']} dB; "
                    "raise --max-drop, fine-tune the restorer on purified inputs, or sweep smaller t*")
        r = next(r for r in self.rows if r["t_star"] == self.chosen)
        return (f"chosen t* = {self.chosen:g}: attacked PSNR {r['attacked_psnr']:.2f} dB (undefended "
                f"{self.baseline['attacked_psnr']:.2f}), clean drop {r['clean_drop']:.2f} dB")

    def plot(self, path: str | Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ts = [r["t_star"] for r in self.rows]
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        ax.plot(ts, [r["clean_psnr"] for r in self.rows], "o-", label="purified, clean input")
        ax.plot(ts, [r["attacked_psnr"] for r in self.rows], "s-", label="purified, PGD (non-adaptive)")
        ax.axhline(self.baseline["clean_psnr"], color="C0", ls=":", label="undefended, clean")
        ax.axhline(self.baseline["attacked_psnr"], color="C1", ls=":", label="undefended, PGD")
        ax.axhline(self.baseline["clean_psnr"] - self.spec["max_clean_drop"], color="grey", ls="--", lw=0.8,
                   label="clean-drop bound")
        if self.chosen is not None:
            ax.axvline(self.chosen, color="k", lw=0.8, label=f"chosen t* = {self.chosen:g}")
        ax.set_xlabel("t* (fraction of the 1000-step schedule)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"t* sweep, PGD {eps_label(self.spec['eps'])}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        out = Path(out_dir)
        paths = {"json": out / "tune.json", "markdown": out / "tune.md", "plot": out / "tune.png"}
        write_json_atomic(paths["json"], asdict(self))
        write_text_atomic(paths["markdown"], self.to_markdown())
        self.plot(paths["plot"])
        return paths


def tune_t_star(restorer: nn.Module, purifier: Purifier, x: torch.Tensor, y: torch.Tensor,
                spec: TuneSpec = TuneSpec(), progress: Advance = noop) -> TuneReport:
    """Sweep ``spec.t_stars`` with the teacher ``purifier``; see the module docstring."""
    if purifier.role != "teacher":
        raise UsageError("t* can only be tuned with a teacher purifier (a student is fixed to its t*)",
                         "give the teacher, then distil a student at the chosen t*")
    dspec = DefenceSpec(eps=spec.eps, attack_steps=spec.attack_steps, draws=spec.draws, seed=spec.seed)
    restorer.eval()
    x_adv = craft_on_restorer(restorer, x, y, dspec)
    plain = DefendedPipeline(restorer)
    base = {"clean_psnr": measure(plain, x, y)["psnr"], "attacked_psnr": measure(plain, x_adv, y)["psnr"]}
    progress(1)
    rows = []
    for t in spec.t_stars:
        n = min(spec.steps or purifier.steps, t_index(t) + 1)
        pipe = DefendedPipeline(restorer, purifier.sampler(t_star=t, steps=n, average=spec.average))
        clean = measure(pipe, x, y, spec.draws, spec.seed)
        att = measure(pipe, x_adv, y, spec.draws, spec.seed)
        drop = base["clean_psnr"] - clean["psnr"]
        rows.append({"t_star": t, "steps": n, "average": spec.average, "clean_psnr": clean["psnr"],
                     "clean_ssim": clean["ssim"],
                     "attacked_psnr": att["psnr"], "attacked_ssim": att["ssim"],
                     "attacked_psnr_worst": att["psnr_worst"], "clean_drop": drop,
                     "within_bound": bool(drop <= spec.max_clean_drop)})
        progress(1, status=f"t* {t:g}: clean {clean['psnr']:.2f}, attacked {att['psnr']:.2f} dB")
    ok = [r for r in rows if r["within_bound"]]
    chosen = max(ok, key=lambda r: r["attacked_psnr"])["t_star"] if ok else None
    return TuneReport(rows=rows, baseline=base, chosen=chosen, spec=asdict(spec), images=len(x),
                      notes=["attacked = PGD crafted on the restorer alone (non-adaptive), then purified"])
