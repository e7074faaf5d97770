"""The defence table: rows {restorer, + teacher, + students k, + other purifiers, + purifier
and fine-tuned restorer} x columns {clean, PGD non-adaptive, PGD adaptive + EOT, and the
other attacks of the spec: C&W/I-FGSM/MI-FGSM crafted on the restorer alone, SimBA/Square
black-box on the defended pipeline}, with PSNR/SSIM (mean and worst noise draw) and
latency per image. Used by ``udc-edge purifier table`` and ``udc-edge eval --purifier``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from udc_edge.attacks.spec import BLACKBOX_ATTACKS, WHITEBOX_ATTACKS
from udc_edge.errors import UsageError
from udc_edge.evaluation.defence import (
    DefenceSpec,
    DefendedPipeline,
    black_box,
    describe,
    latency_ms,
    measure,
    pgd_adaptive,
    pgd_on_restorer,
    uses_bpda,
)
from udc_edge.fileio import atomic_dir
from udc_edge.models.purifier import Purifier, check_pair
from udc_edge.progress import Advance, _noop


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
        eps = f"{self.spec['eps'] * 255:.0f}/255"
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


def _others(restorer: nn.Module, purifier: Purifier | None, x: torch.Tensor, y: torch.Tensor,
            crafted: dict[str, torch.Tensor], spec: DefenceSpec, progress: Advance, name: str
            ) -> tuple[dict[str, dict | None], dict[str, str]]:
    """The columns beyond PGD for one row."""
    sampler = purifier.sampler() if purifier is not None else None
    exact = DefendedPipeline(restorer, sampler)
    out: dict[str, dict | None] = {}
    skipped: dict[str, str] = {}
    for col in column_names(spec):
        atk, kind = col.split(" ", 1)
        if kind == "non-adaptive":
            m = measure(exact, crafted[atk], y, spec.draws, spec.seed)
            if atk == "cw":
                m["l2"] = float((crafted[atk] - x).flatten(1).norm(dim=1).mean())
        elif kind == "adaptive":
            if purifier is None:
                m = measure(exact, crafted[atk], y)
            else:
                pipe = DefendedPipeline(restorer, sampler, bpda=uses_bpda(purifier))
                m = measure(exact, pgd_adaptive(pipe, x, y, spec, atk), y, spec.draws, spec.seed)
        elif purifier is not None and purifier.steps > spec.black_box_max_steps:
            skipped[col] = f"skipped: {purifier.steps}-step purifier (query attacks through it are too slow)"
            out[col] = None
            continue
        else:
            x_bb, queries = black_box(exact, x, y, spec, atk)
            m = {**measure(exact, x_bb, y, spec.draws, spec.seed), "queries": queries}
        out[col] = m
        progress(0, status=f"{name}: {col} {m['psnr']:.2f} dB")
    return out, skipped


def _row(name: str, restorer: nn.Module, restorer_name: str, purifier: Purifier | None, x: torch.Tensor,
         y: torch.Tensor, crafted: dict[str, torch.Tensor], spec: DefenceSpec, progress: Advance) -> DefenceRow:
    sampler = purifier.sampler() if purifier is not None else None
    exact = DefendedPipeline(restorer, sampler)
    clean = measure(exact, x, y, spec.draws, spec.seed)
    nonad = measure(exact, crafted["pgd"], y, spec.draws, spec.seed)
    progress(1, status=f"{name}: clean {clean['psnr']:.2f}, non-adaptive {nonad['psnr']:.2f} dB")
    adaptive, kind = None, "not run"
    if purifier is None:
        adaptive, kind = nonad, "white-box PGD (undefended: same as non-adaptive)"
    elif spec.adaptive:
        bpda = uses_bpda(purifier)
        avg = f", mean of {purifier.average} draws" if purifier.average > 1 else ""
        kind = (f"BPDA through the {purifier.steps}-step {purifier.role}" if bpda else
                f"exact gradients through {purifier.steps} step(s){avg}") + f" + EOT({spec.eot})"
        x_ad = pgd_adaptive(DefendedPipeline(restorer, sampler, bpda=bpda), x, y, spec)
        adaptive = measure(exact, x_ad, y, spec.draws, spec.seed)
    progress(1, status=f"{name}: adaptive {adaptive['psnr']:.2f} dB" if adaptive else name)
    others, skipped = _others(restorer, purifier, x, y, crafted, spec, progress, name)
    return DefenceRow(name=name, purifier="none" if purifier is None else describe(purifier),
                      restorer=restorer_name, clean=clean, nonadaptive=nonad, adaptive=adaptive, adaptive_kind=kind,
                      latency_ms=latency_ms(exact, x, spec.latency_repeats), others=others, skipped=skipped)


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
        out[a] = pgd_on_restorer(restorer, x, y, spec, a)
        if a == "cw" and cache is not None:
            cache[key] = out[a]
    return out


def defence_table(restorer: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: DefenceSpec | None = None,
                  teacher: Purifier | None = None, students: list[Purifier] | tuple = (),
                  finetuned: nn.Module | None = None, finetuned_purifier: Purifier | None = None,
                  progress: Advance = _noop, purifiers: list[tuple[str, Purifier]] | tuple = (),
                  cache: dict | None = None) -> DefenceTable:
    """Rows: restorer; + teacher; + each student; + each of ``purifiers`` (label, purifier);
    + purifier and fine-tuned restorer (``finetuned_purifier``, default the first student,
    else the teacher). ``cache``: share eps-free attacks (C&W) between tables on the same x."""
    spec = spec or DefenceSpec()
    for s in students:
        if teacher is not None:
            check_pair(teacher, s, "the teacher", f"the {s.steps}-step student")
    every = [p for p in [teacher, *students, *(p for _, p in purifiers), finetuned_purifier] if p is not None]
    notes = list(dict.fromkeys(f"the {p.role} purifier was trained at {p.resolution} px and runs at {x.shape[-2]}x{x.shape[-1]} "
             "(fully convolutional)" for p in every if p.resolution != x.shape[-1]))
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


def gain_recovery(table: DefenceTable, student_row: str, teacher_row: str, column: str = "nonadaptive"
                  ) -> float | None:
    """Fraction of the teacher's attacked-PSNR gain over the undefended restorer that a
    student keeps: (student - restorer) / (teacher - restorer); None if the teacher gains
    nothing."""
    by = {r.name: r for r in table.rows}
    base = getattr(by["restorer"], column)["psnr"]
    gain_t = getattr(by[teacher_row], column)["psnr"] - base
    if not math.isfinite(gain_t) or gain_t <= 0:
        return None
    return (getattr(by[student_row], column)["psnr"] - base) / gain_t


def write_tables(tables: list[DefenceTable], out: str | os.PathLike, about: dict[str, Any],
                 overwrite: bool = False) -> Path:
    """``report.json`` (every table, with ``about``) and ``report.md`` in ``out``, atomically."""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        tmp = Path(tmp)
        (tmp / "report.json").write_text(json.dumps({**about, "tables": [t.to_dict() for t in tables]}, indent=2))
        title = f"# Defence evaluation: {about.get('purifier', '?')} -> {about.get('model', '?')}\n\n"
        (tmp / "report.md").write_text(title + "\n".join(t.to_markdown() for t in tables))
    return Path(out)
