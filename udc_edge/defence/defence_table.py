"""The defence table: rows {restorer, + teacher, + students k, + other purifiers, + purifier
and fine-tuned restorer} x columns {clean, PGD non-adaptive, PGD adaptive + EOT, and the
other attacks of the spec: C&W/I-FGSM/MI-FGSM crafted on the restorer alone, SimBA/Square
black-box on the defended pipeline}, with PSNR/SSIM (mean and worst noise draw) and
latency per image. Used by ``udc-edge purifier table`` and ``udc-edge eval --purifier``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from udc_edge.attacks.spec import BLACKBOX_ATTACKS, WHITEBOX_ATTACKS
from udc_edge.core.errors import UsageError
from udc_edge.core.fileio import atomic_dir
from udc_edge.core.progress import Advance, noop
from udc_edge.defence.defence import (
    DefenceSpec,
    DefendedPipeline,
    black_box,
    craft_adaptive,
    craft_on_restorer,
    describe,
    latency_ms,
    measure,
    uses_bpda,
)
from udc_edge.diffusion.purifier import Purifier, check_pair
from udc_edge.evaluation.robustness import eps_label


@dataclass
class DefenceRow:
    name: str
    purifier: str
    restorer: str
    clean: dict[str, float]
    nonadaptive: dict[str, float]
    adaptive: dict[str, float] | None
    adaptive_kind: str
    latency_ms: float
    #: further columns ("cw non-adaptive", "simba black-box", ...): metrics, or None if skipped
    others: dict[str, dict[str, float] | None] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def column_names(spec: DefenceSpec | dict) -> list[str]:
    """The table's columns after clean and PGD, in ``spec.attacks`` order."""
    attacks = spec["attacks"] if isinstance(spec, dict) else spec.attacks
    adaptive = spec["adaptive"] if isinstance(spec, dict) else spec.adaptive
    cols = []
    for a in attacks:
        if a in WHITEBOX_ATTACKS and a != "pgd":
            cols.append(f"{a} non-adaptive")
            if adaptive and a != "cw":
                cols.append(f"{a} adaptive")
        elif a in BLACKBOX_ATTACKS:
            cols.append(f"{a} black-box")
    return cols


@dataclass
class DefenceTable:
    rows: list[DefenceRow]
    spec: dict[str, Any]
    images: int
    size: list[int]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        eps = eps_label(self.spec["eps"])
        cols = column_names(self.spec)
        head = (f"| defence | clean PSNR / SSIM | PGD {eps} non-adaptive | PGD {eps} adaptive | "
                + "".join(f"{c.replace('cw', 'C&W-L2').replace('simba', 'SimBA').replace('square', 'Square')} | "
                          for c in cols)
                + "adaptive attack | latency / image (ms) |\n|" + "---|" * (6 + len(cols)))
        lines = [head]

        def cell(m: dict | None, why: str = "not run") -> str:
            if m is None:
                return why
            worst = f" (worst {m['psnr_worst']:.2f})" if m.get("draws", 1) > 1 else ""
            extra = f", L2 {m['l2']:.2f}" if "l2" in m else ""
            extra += f", {m['queries']:.0f} queries" if "queries" in m else ""
            return f"{m['psnr']:.2f} dB / {m['ssim']:.3f}{worst}{extra}"

        for r in self.rows:
            others = "".join(f"{cell(r.others.get(c), r.skipped.get(c, 'not run'))} | " for c in cols)
            lines.append(f"| {r.name} | {cell(r.clean)} | {cell(r.nonadaptive)} | {cell(r.adaptive)} | {others}"
                         f"{r.adaptive_kind} | {r.latency_ms:.1f} |")
        note = (f"\n{self.images} images of {self.size[0]}x{self.size[1]}; PGD {self.spec['attack_steps']} steps; "
                f"defended numbers are means over {self.spec['draws']} noise draws (worst draw per image in "
                "brackets). Non-adaptive: crafted on the row's restorer alone, then purified. Black-box: "
                "the attack queries the defended pipeline, which draws fresh noise for every query.")
        return "\n".join(lines) + note + "".join(f"\n- {n}" for n in self.notes) + "\n"


def _column(atk: str, kind: str, exact: DefendedPipeline, purifier: Purifier | None, x: torch.Tensor,
            y: torch.Tensor, crafted: dict[str, torch.Tensor], spec: DefenceSpec) -> dict[str, float] | str:
    """One cell of the row whose pipeline is ``exact``: metrics, or why it was skipped.
    ``kind``: non-adaptive, adaptive or black-box."""
    if kind == "non-adaptive":
        m = measure(exact, crafted[atk], y, spec.draws, spec.seed)
        return {**m, "l2": float((crafted[atk] - x).flatten(1).norm(dim=1).mean())} if atk == "cw" else m
    if kind == "adaptive":
        pipe = DefendedPipeline(exact.restorer, exact.sampler, bpda=uses_bpda(purifier))
        return measure(exact, craft_adaptive(pipe, x, y, spec, atk), y, spec.draws, spec.seed)
    if purifier is not None and uses_bpda(purifier):
        return f"skipped: {purifier.steps}-step purifier (query attacks through it are too slow)"
    x_bb, queries = black_box(exact, x, y, spec, atk)
    return {**measure(exact, x_bb, y, spec.draws, spec.seed), "queries": queries}


def _row(name: str, restorer: nn.Module, restorer_name: str, purifier: Purifier | None, x: torch.Tensor,
         y: torch.Tensor, crafted: dict[str, torch.Tensor], spec: DefenceSpec, progress: Advance) -> DefenceRow:
    """Every column of one row; an undefended row's adaptive cells are its non-adaptive ones."""
    exact = DefendedPipeline(restorer, purifier.sampler() if purifier is not None else None)
    clean = measure(exact, x, y, spec.draws, spec.seed)
    cells: dict[str, dict | str | None] = {}
    for col in ["pgd non-adaptive", "pgd adaptive", *column_names(spec)]:
        atk, kind = col.split(" ", 1)
        if kind == "adaptive" and (purifier is None or not spec.adaptive):
            cells[col] = cells[f"{atk} non-adaptive"] if purifier is None else None
            continue
        cells[col] = _column(atk, kind, exact, purifier, x, y, crafted, spec)
        if isinstance(cells[col], dict):
            progress(0, status=f"{name}: {col} {cells[col]['psnr']:.2f} dB")
    progress(2)
    if purifier is None:
        kind = "white-box PGD (undefended: same as non-adaptive)"
    elif not spec.adaptive:
        kind = "not run"
    elif uses_bpda(purifier):
        kind = f"BPDA through the {purifier.steps}-step {purifier.role} + EOT({spec.eot})"
    else:
        avg = f", mean of {purifier.average} draws" if purifier.average > 1 else ""
        kind = f"exact gradients through {purifier.steps} step(s){avg} + EOT({spec.eot})"
    others = {c: v for c, v in cells.items() if not c.startswith("pgd ")}
    return DefenceRow(name=name, purifier="none" if purifier is None else describe(purifier),
                      restorer=restorer_name, clean=clean, nonadaptive=cells["pgd non-adaptive"],
                      adaptive=cells["pgd adaptive"], adaptive_kind=kind,
                      latency_ms=latency_ms(exact, x, spec.latency_repeats),
                      others={c: v if isinstance(v, dict) else None for c, v in others.items()},
                      skipped={c: v for c, v in others.items() if isinstance(v, str)})


def _crafted(restorer: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: DefenceSpec,
             cache: dict | None = None) -> dict[str, torch.Tensor]:
    """Every white-box attack of ``spec`` crafted on the restorer alone (non-adaptive).
    C&W has no eps, so with a ``cache`` it is crafted once per restorer across tables."""
    restorer.eval()
    out = {}
    for a in spec.attacks:
        if a not in WHITEBOX_ATTACKS:
            continue
        key = (id(restorer), a, spec.cw_search_steps, spec.cw_max_iter, spec.seed)
        if a == "cw" and cache is not None and key in cache:
            out[a] = cache[key]
            continue
        out[a] = craft_on_restorer(restorer, x, y, spec, a)
        if a == "cw" and cache is not None:
            cache[key] = out[a]
    return out


def defence_table(restorer: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: DefenceSpec | None = None,
                  teacher: Purifier | None = None, students: list[Purifier] | tuple = (),
                  finetuned: nn.Module | None = None, finetuned_purifier: Purifier | None = None,
                  progress: Advance = noop, purifiers: list[tuple[str, Purifier]] | tuple = (),
                  cache: dict | None = None) -> DefenceTable:
    """Rows: restorer; + teacher; + each student; + each of ``purifiers`` (label, purifier);
    + purifier and fine-tuned restorer (``finetuned_purifier``, default the first student,
    else the teacher). ``cache``: share eps-free attacks (C&W) between tables on the same x."""
    spec = spec or DefenceSpec()
    for s in students:
        if teacher is not None:
            check_pair(teacher, s, "the teacher", f"the {s.steps}-step student")
    every = [p for p in [teacher, *students, *(p for _, p in purifiers), finetuned_purifier] if p is not None]
    notes = list(
        dict.fromkeys(
            f"the {p.role} purifier was trained at {p.resolution} px and runs at {x.shape[-2]}x{x.shape[-1]} "
            "(fully convolutional)"
            for p in every
            if p.resolution != x.shape[-1]
        )
    )
    crafted = _crafted(restorer, x, y, spec, cache)
    rows = [_row("restorer", restorer, "restorer", None, x, y, crafted, spec, progress)]
    if teacher is not None:
        rows.append(_row(f"+ teacher ({teacher.steps} steps)", restorer, "restorer", teacher, x, y, crafted, spec,
                         progress))
    for s in students:
        rows.append(_row(f"+ student k={s.steps}", restorer, "restorer", s, x, y, crafted, spec, progress))
    for label, p in purifiers:
        rows.append(_row(f"+ {label}", restorer, "restorer", p, x, y, crafted, spec, progress))
    if finetuned is not None:
        pur = finetuned_purifier or (students[0] if students else teacher)
        if pur is None:
            raise UsageError("a fine-tuned restorer row needs a purifier", "give a teacher or student too")
        label = f"student k={pur.steps}" if pur.role == "student" else describe(pur).replace("teacher ", "purifier ")
        rows.append(_row(f"+ {label} + fine-tuned restorer", finetuned, "fine-tuned", pur, x, y,
                         _crafted(finetuned, x, y, spec, cache), spec, progress))
        notes.append("the fine-tuned row's non-adaptive attacks are crafted on the fine-tuned restorer alone")
    if "cw" in spec.attacks:
        notes.append(f"C&W-L2 ({spec.cw_search_steps} search rounds x {spec.cw_max_iter} steps) is crafted on the "
                     "restorer alone; its mean L2 norm is shown. PGD + EOT is the adaptive reference.")
    return DefenceTable(rows=rows, spec=asdict(spec), images=len(x), size=list(x.shape[-2:]), notes=notes)


def write_tables(tables: list[DefenceTable], out: str | os.PathLike, about: dict[str, Any],
                 overwrite: bool = False) -> Path:
    """``report.json`` (every table, with ``about``) and ``report.md`` in ``out``, atomically."""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        tmp = Path(tmp)
        (tmp / "report.json").write_text(json.dumps({**about, "tables": [t.to_dict() for t in tables]}, indent=2))
        title = f"# Defence evaluation: {about.get('purifier', '?')} -> {about.get('model', '?')}\n\n"
        (tmp / "report.md").write_text(title + "\n".join(t.to_markdown() for t in tables))
    return Path(out)
