"""Robustness of a restorer (or its engine) under attack, over a paired dataset.

:func:`evaluate_robustness` runs every planned attack on every image (batch of one, so
images may differ in size) and aggregates, per attack and budget, the output PSNR/SSIM
against ground truth (mean and worst image), the drop vs the clean output, queries and
crafting time, into a :class:`RobustnessReport`. :func:`craft_dataset` writes the
adversarial inputs of one attack losslessly for other tools. Numbers are *non-adaptive*
for a defended pipeline: the attacks see the target as given, nothing more.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from udc_edge.attacks import AttackSpec, is_torch_target
from udc_edge.attacks.blackbox import blackbox_attack, forward, output_image
from udc_edge.attacks.io import encode_adversarial, write_adversarial
from udc_edge.core.errors import (
    BackendUnavailableError,
    DataError,
    InputError,
    UsageError,
)
from udc_edge.core.fileio import atomic_dir, write_json_atomic, write_text_atomic
from udc_edge.core.metrics import psnr, ssim
from udc_edge.core.progress import Advance, noop
from udc_edge.data.images import nchw_array, to_hwc
from udc_edge.data.readers import PairedDataset

GRID_COLUMNS = ("degraded", "attacked", "perturbation x10", "output clean", "output attacked", "ground truth")
NON_ADAPTIVE = "non-adaptive: the attacks see the target as given (no purifier-aware gradients, no EOT)"


def as_target(model: Any) -> Any:
    """A torch restorer wrapped in :class:`Padded`; an engine callable as it is."""
    if not is_torch_target(model):
        return model
    from udc_edge.models.padding import Padded

    return model if isinstance(model, Padded) else Padded(model).eval()


def is_engine_name(name: str | os.PathLike) -> bool:
    """Whether a MODEL argument names an engine file (``.onnx``, ``.engine``, ``.plan``, ``.trt``)."""
    from udc_edge.engines import is_engine_path

    return is_engine_path(name)


def load_target(name: str, *, arch: str | None = None, arch_kwargs: dict | None = None,
                weights: str | None = None, threads: int = 0) -> tuple[Any, dict]:
    """``(target, description)``: an engine for ``.onnx/.engine/.plan`` files, else a torch
    model (shipped name, checkpoint, or ``arch`` + ``weights``) that accepts any size."""
    if arch is None and is_engine_name(name):
        if not Path(name).is_file():
            raise InputError(f"engine {name} does not exist", "check the path, or build it with udc-edge build")
        try:
            from udc_edge.engines import load_engine
        except ImportError as exc:
            raise BackendUnavailableError(f"cannot load engine {name}: engine loading is unavailable ({exc})",
                                          "attack the torch model instead") from exc
        engine = load_engine(name, threads=threads)
        return engine, {"source": "engine", "path": str(name), "backend": getattr(engine, "backend", "?")}
    from udc_edge.models.zoo import load_model

    model, info = load_model(name, arch=arch, arch_kwargs=arch_kwargs, weights=weights)
    return as_target(model), info


def eps_label(eps: float | None) -> str:
    """``8/255`` for budgets on the 1/255 grid, else ``0.0314``; ``-`` for none."""
    if eps is None:
        return "-"
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:.4g}"


DEFAULT_EVAL_ATTACKS = "pgd,ifgsm,mifgsm,cw,simba,square"  # eval's columns when --attacks is not given


def plan_attacks(names: tuple[str, ...], eps_values: tuple[float, ...], objective: str = "gt",
                 seed: int = 0, **overrides: Any) -> list[AttackSpec]:
    """One spec per attack and budget (``cw`` is an L2 attack: one spec, no eps).

    ``overrides`` set AttackSpec fields for every attack that has them (``steps``,
    ``simba_iterations``, ``square_queries``, ...); ``None`` values are ignored.
    """
    extra = {k: v for k, v in overrides.items() if v is not None}
    specs: list[AttackSpec] = []
    for name in dict.fromkeys(names):
        budgets = (None,) if name == "cw" else tuple(dict.fromkeys(eps_values)) or (None,)
        for eps in budgets:
            specs.append(AttackSpec(name, eps=eps, objective=objective, seed=seed, **extra))
    return specs


def check_plan(specs: list[AttackSpec], engine: bool, target_name: str, surrogate: bool = False) -> None:
    """Refuse white-box attacks on an engine that has no torch surrogate to craft on."""
    white = [s.name for s in specs if s.is_whitebox]
    if white and engine and not surrogate:
        raise UsageError(
            f"white-box attack {', '.join(dict.fromkeys(white))} needs gradients, and {target_name} "
            "is an engine without them",
            "pass --reference MODEL (or --surrogate: the torch restorer it was built from) for a transfer attack, "
            "or use the black-box attacks simba, square",
        )


def _check_surrogate(surrogate: Any) -> Any:
    if surrogate is not None and not is_torch_target(surrogate):
        raise UsageError(f"the surrogate ({type(surrogate).__name__}) is an engine, without gradients",
                         "give a torch model (shipped name or checkpoint) as --surrogate")
    return None if surrogate is None else as_target(surrogate)


def check_data(dataset: PairedDataset, objective: str, limit: int | None) -> int:
    """Number of images to use; refuses a missing ground truth for ``objective="gt"``."""
    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit} must be >= 1", "leave it out to use every image")
    if objective == "gt" and not dataset.has_gt:
        raise DataError(f"dataset {dataset.root} has no ground truth, and --objective gt needs it",
                        "add a gt/ folder of matching images, or use --objective clean")
    return len(dataset) if limit is None else min(limit, len(dataset))


def run_one(target: Any, spec: AttackSpec, lq: np.ndarray, gt: np.ndarray | None,
            surrogate: Any = None):
    """Attack one image; white-box attacks are crafted on ``surrogate`` when one is given.
    Black-box attacks need no torch (an engine is attacked on a device without it)."""
    x, y = nchw_array(lq), (nchw_array(gt) if spec.objective == "gt" else None)
    if not spec.is_whitebox:
        return blackbox_attack(target, x, y, spec)
    from udc_edge.attacks.api import attack, transfer_attack

    if surrogate is not None:
        return transfer_attack(surrogate, target, x, y, spec)
    return attack(target, x, y, spec)


@dataclass
class RobustnessRow:
    """One attack at one budget, aggregated over the images (drops are clean minus attacked)."""

    attack: str
    eps: float | None
    eps_label: str
    psnr_mean: float
    psnr_worst: float
    ssim_mean: float
    ssim_worst: float
    psnr_drop: float | None
    ssim_drop: float | None
    worst_image: str
    queries_mean: float
    seconds: float
    linf_max: float
    l2_mean: float
    transfer: bool = False
    success_rate: float | None = None


@dataclass
class RobustnessReport:
    """The robustness table of one target on one dataset, plus per-image numbers."""

    model: dict
    data: dict
    objective: str
    reference: str
    images: int
    clean: dict
    rows: list[RobustnessRow]
    per_image: list[dict]
    specs: list[dict]
    seconds: float
    environment: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def row(self, attack_name: str, eps: float | None = None) -> RobustnessRow:
        """The row of ``attack_name`` at budget ``eps`` (KeyError if it was not run)."""
        for r in self.rows:
            if r.attack == attack_name and (eps is None or (r.eps is not None and abs(r.eps - eps) < 1e-9)):
                return r
        raise KeyError(f"no row for {attack_name} at eps {eps_label(eps)}")

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        """A table a person reads: clean first, then a row per attack and budget."""
        c = self.clean
        lines = [
            f"# Robustness of {self.model.get('name') or self.model.get('path') or self.model.get('arch', '?')}",
            "",
            (f"{self.images} image(s) from `{self.data.get('root', '?')}`; objective `{self.objective}`; "
             f"PSNR/SSIM of the output against {self.reference}."),
            "",
            ("| attack | eps | PSNR mean (dB) | PSNR worst | drop (dB) | SSIM mean | SSIM worst | SSIM drop "
             "| L2 mean | queries/img | time (s) |"),
            "|---|---|---|---|---|---|---|---|---|---|---|",
            (f"| clean | - | {_f(c['psnr_mean'])} | {_f(c['psnr_worst'])} | - | {_f(c['ssim_mean'], 4)} "
             f"| {_f(c['ssim_worst'], 4)} | - | - | - | - |"),
        ]
        for r in self.rows:
            name = r.attack + (" (transfer)" if r.transfer else "")
            lines.append(
                f"| {name} | {r.eps_label} | {_f(r.psnr_mean)} | {_f(r.psnr_worst)} | {_f(r.psnr_drop)} "
                f"| {_f(r.ssim_mean, 4)} | {_f(r.ssim_worst, 4)} | {_f(r.ssim_drop, 4)} | {_f(r.l2_mean, 3)} "
                f"| {r.queries_mean:.0f} | {r.seconds:.1f} |")
        lines += ["", *(f"- {n}" for n in self.notes)]
        return "\n".join(lines) + "\n"


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _stats(values: list[float], names: list[str]) -> tuple[float, float, str]:
    i = int(np.argmin(values))
    return float(np.mean(values)), float(values[i]), names[i]


def _environment() -> dict:
    torch = sys.modules.get("torch")  # None on a runtime-only install: an engine was attacked
    return {"torch": torch.__version__ if torch else None, "threads": torch.get_num_threads() if torch else None,
            "machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}


def _grid_row(lq: np.ndarray, adv: np.ndarray, out: np.ndarray, out_adv: np.ndarray,
              ref: np.ndarray) -> list[np.ndarray]:
    pert = np.clip(0.5 + 10.0 * (adv - lq), 0.0, 1.0)
    return [lq, adv, pert, out, out_adv, ref]


def evaluate_robustness(target: Any, dataset: PairedDataset, specs: list[AttackSpec], *,
                        limit: int | None = None, surrogate: Any = None, model_info: dict | None = None,
                        target_name: str = "the target", progress: Advance = noop
                        ) -> tuple[RobustnessReport, dict[str, list[np.ndarray]]]:
    """Attack every image with every spec; return the report and the first image's grid rows.

    Image ``i`` is attacked with seed ``spec.seed + i``. Metrics compare the clipped output
    with the ground truth (or, for a set without it, with the clean output).
    """
    if not specs:
        raise UsageError("no attack to run", "give at least one attack")
    objective = "gt" if any(s.objective == "gt" for s in specs) else "clean"
    target, surrogate = as_target(target), _check_surrogate(surrogate)
    check_plan(specs, not is_torch_target(target), target_name, surrogate is not None)
    n = check_data(dataset, objective, limit)
    keys = [s.name if s.eps is None else f"{s.name}@{eps_label(s.eps)}" for s in specs]
    per_image: list[dict] = []
    grid: dict[str, list[np.ndarray]] = {}
    t0 = time.perf_counter()
    for i in range(n):
        pair = dataset[i]
        out = forward(target, pair.lq)
        ref = pair.gt if pair.gt is not None else out
        entry: dict[str, Any] = {"name": pair.name, "clean": {"psnr": psnr(out, ref), "ssim": ssim(out, ref)}}
        for key, spec in zip(keys, specs, strict=True):
            res = run_one(target, dataclasses.replace(spec, seed=spec.seed + i), pair.lq, pair.gt, surrogate)
            adv, out_adv = to_hwc(res.x_adv), output_image(res.output)
            entry[key] = {"psnr": psnr(out_adv, ref), "ssim": ssim(out_adv, ref),
                          "queries": int(res.queries[0]), "linf": float(res.linf[0]), "l2": float(res.l2[0]),
                          "seconds": res.seconds, "transfer": res.transfer,
                          "success": None if res.success is None else bool(res.success[0])}
            if i == 0:
                grid[key] = _grid_row(pair.lq, adv, out, out_adv, ref)
            progress(1, status=f"{pair.name} {key}")
        per_image.append(entry)
    report = _aggregate(per_image, specs, keys, dataset, objective, model_info or {}, time.perf_counter() - t0)
    if surrogate is not None:
        report.notes.append("white-box rows are transfer attacks: crafted on the surrogate, measured on the target")
    return report, grid


def _aggregate(per_image: list[dict], specs: list[AttackSpec], keys: list[str], dataset: PairedDataset,
               objective: str, model_info: dict, seconds: float) -> RobustnessReport:
    names = [e["name"] for e in per_image]
    has_gt = dataset.has_gt
    cp, cpw, _ = _stats([e["clean"]["psnr"] for e in per_image], names)
    cs, csw, _ = _stats([e["clean"]["ssim"] for e in per_image], names)
    clean = {"psnr_mean": cp if has_gt else None, "psnr_worst": cpw if has_gt else None,
             "ssim_mean": cs if has_gt else None, "ssim_worst": csw if has_gt else None}
    rows = []
    for key, spec in zip(keys, specs, strict=True):
        recs = [e[key] for e in per_image]
        pm, pw, worst = _stats([r["psnr"] for r in recs], names)
        sm, sw, _ = _stats([r["ssim"] for r in recs], names)
        succ = [r["success"] for r in recs if r["success"] is not None]
        rows.append(RobustnessRow(
            attack=spec.name, eps=spec.eps, eps_label=eps_label(spec.eps), psnr_mean=pm, psnr_worst=pw,
            ssim_mean=sm, ssim_worst=sw, psnr_drop=cp - pm if has_gt else None,
            ssim_drop=cs - sm if has_gt else None, worst_image=worst,
            queries_mean=float(np.mean([r["queries"] for r in recs])),
            seconds=float(sum(r["seconds"] for r in recs)), linf_max=float(max(r["linf"] for r in recs)),
            l2_mean=float(np.mean([r["l2"] for r in recs])), transfer=bool(recs[0]["transfer"]),
            success_rate=float(np.mean(succ)) if succ else None))
    notes = [NON_ADAPTIVE, "cw is an L2 attack (no eps); its row reports the L2 norm it needed"]
    if not has_gt:
        notes.append("no ground truth: PSNR/SSIM compare with the clean output, so there is no drop to report")
    return RobustnessReport(
        model=model_info, data=dataset.describe(), objective=objective,
        reference="the ground truth" if has_gt else "the clean output", images=len(per_image),
        clean=clean, rows=rows, per_image=per_image, specs=[s.to_dict() for s in specs],
        seconds=seconds, environment=_environment(), notes=notes)


def grid_image(grid: dict[str, list[np.ndarray]]) -> np.ndarray:
    """The PNG grid: a row per attack (labelled), columns as in :data:`GRID_COLUMNS`."""
    from udc_edge.core.figures import image_grid, text_image

    rows = [[text_image(key, 96, row[0].shape[0]), *row] for key, row in grid.items()]
    return image_grid(rows, col_labels=["attack", *GRID_COLUMNS])


def write_report(report: RobustnessReport, grid: dict[str, list[np.ndarray]], out: str | os.PathLike,
                 overwrite: bool = False) -> Path:
    """Write ``report.json``, ``report.md`` and ``grid.png`` into ``out`` atomically."""
    from udc_edge.data.images import write_png

    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_json_atomic(tmp / "report.json", report.to_dict())
        write_text_atomic(tmp / "report.md", report.to_markdown())
        if grid:
            write_png(tmp / "grid.png", grid_image(grid), bit_depth=8)
    return Path(out)


def craft_dataset(target: Any, dataset: PairedDataset, spec: AttackSpec, out: str | os.PathLike, *,
                  fmt: str = "npy", limit: int | None = None, surrogate: Any = None,
                  model_info: dict | None = None, target_name: str = "the target", overwrite: bool = False,
                  progress: Advance = noop) -> dict:
    """Attack each image and write ``out/adv/NAME.npy|png`` plus ``out/attack.json``.

    The per-image record is measured on the file as written (16-bit rounding included,
    kept inside the budget): queries, L-inf and L2 of the perturbation, output PSNR
    against the ground truth (or the clean output) for the clean and the adversarial input.
    """
    target, surrogate = as_target(target), _check_surrogate(surrogate)
    check_plan([spec], not is_torch_target(target), target_name, surrogate is not None)
    n = check_data(dataset, spec.objective, limit)
    suffix = ".npy" if fmt == "npy" else ".png"
    records, t0 = [], time.perf_counter()
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "adv").mkdir()
        for i in range(n):
            pair = dataset[i]
            res = run_one(target, dataclasses.replace(spec, seed=spec.seed + i), pair.lq, pair.gt, surrogate)
            payload, stored = encode_adversarial(to_hwc(res.x_adv), pair.lq, spec.eps, fmt)
            write_adversarial(tmp / "adv" / f"{pair.name}{suffix}", payload)
            out_clean, out_adv = forward(target, pair.lq), forward(target, stored)
            ref = pair.gt if pair.gt is not None else out_clean
            delta = stored.astype(np.float64) - pair.lq
            records.append({"name": pair.name, "file": f"adv/{pair.name}{suffix}", "seed": spec.seed + i,
                            "queries": int(res.queries[0]), "linf": float(np.abs(delta).max()),
                            "l2": float(np.sqrt((delta ** 2).sum())), "psnr_clean": psnr(out_clean, ref),
                            "psnr_attacked": psnr(out_adv, ref), "seconds": res.seconds})
            progress(1, status=pair.name)
        summary = {"attack": spec.name, "eps": spec.eps, "eps_label": eps_label(spec.eps), "format": fmt,
                   "spec": spec.to_dict(), "model": model_info or {}, "data": dataset.describe(),
                   "transfer": surrogate is not None and spec.is_whitebox,
                   "reference": "ground truth" if dataset.has_gt else "clean output",
                   "psnr_clean_mean": float(np.mean([r["psnr_clean"] for r in records])),
                   "psnr_attacked_mean": float(np.mean([r["psnr_attacked"] for r in records])),
                   "linf_max": float(max(r["linf"] for r in records)), "images": records,
                   "seconds": time.perf_counter() - t0, "environment": _environment()}
        write_json_atomic(tmp / "attack.json", summary)
    return summary
