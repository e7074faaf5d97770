"""``udc-edge verify``: robustness parity of a deployed engine against its PyTorch reference.

On the same images: (1) output fidelity, engine vs reference; (2) clean PSNR/SSIM against
ground truth; (3) attacks crafted white-box on the reference and transferred to the engine;
(4) black-box attacks run against the engine itself (it is what ships) and, with the same
budget and seed, against the reference; (5) white-box attacks crafted on a differentiable
replica of the engine's own (quantised) numerics and run by the engine, against the
reference's own white-box numbers (:mod:`udc_edge.deploy.verify_direct`). Every row
says what its inputs were crafted on and what evaluated them. A check passes when the engine loses no more than
the thresholds. Everything the engine is compared with is a ``ReferenceSet``: computed live
with torch, or loaded from a bundle (so a Jetson verifies without PyTorch: the engine side
runs on numpy, black-box attacks included, and imports no torch).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from udc_edge.attacks.blackbox import blackbox_attack, forward, output_image
from udc_edge.core.errors import EngineError, UsageError
from udc_edge.core.extras import require_torch
from udc_edge.core.metrics import psnr, ssim
from udc_edge.core.progress import Advance, noop
from udc_edge.data.images import nchw_array
from udc_edge.deploy.reference import ATTACK_PARAMS, ReferenceSet, VerifySpec, make_reference_set
from udc_edge.deploy.verify_direct import (
    CRAFTED_DIRECT,
    EVALUATED,
    craft_on_replica,
    engine_replica,
    replica_match,
    whitebox_labels,
)

if TYPE_CHECKING:
    import torch


class FixedNoise:
    """Single-input views of a two-input (image, noise) pipeline with the SAME noise for the
    torch reference and the engine: noise is drawn from ``seed`` at the padded size, and the
    image is padded (reflect, bottom/right) as ``run_padded`` and the engine would."""

    def __init__(self, seed: int, multiple: int):
        self.seed, self.multiple = seed, multiple

    def noise(self, shape: tuple[int, ...]) -> torch.Tensor:
        torch = require_torch("verify --purifier")
        return torch.randn(shape, generator=torch.Generator().manual_seed(self.seed))

    def module(self, pipeline: torch.nn.Module) -> torch.nn.Module:
        torch = require_torch("verify --purifier")
        view = self

        class _Fixed(torch.nn.Module):
            multiple = view.multiple

            def __init__(self) -> None:
                super().__init__()
                self.pipeline = pipeline

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.pipeline(x, view.noise(tuple(x.shape)))

        return _Fixed().eval()

    def engine(self, engine: Any) -> Any:
        from udc_edge.engines.base import pad_array

        def call(x: np.ndarray) -> np.ndarray:
            h, w = x.shape[2:]
            xp = pad_array(np.ascontiguousarray(x, dtype=np.float32), self.multiple)
            return engine(xp, self.noise(xp.shape).numpy())[:, :, :h, :w]

        return call


def format_check_value(v: float | None) -> str:
    """A check's number as the verify tables print it: 4 decimals near 1 (SSIM), 2 for dB."""
    return "-" if v is None else f"{v:.4f}" if abs(v) < 1.5 else f"{v:.2f}"


@dataclass
class Check:
    """One row. ``crafted_on``/``evaluated_on``: "reference side / engine side" of what the
    inputs were crafted on and what ran them. A row that could not run has ``run=False``,
    ``passed=False`` and its reason in ``note``."""

    name: str
    reference: float | None
    engine: float | None
    value: float | None
    threshold: str
    passed: bool
    crafted_on: str = "-"
    evaluated_on: str = "reference / engine"
    run: bool = True
    note: str = ""

    @property
    def result(self) -> str:
        return "not run" if not self.run else "pass" if self.passed else "FAIL"


@dataclass
class VerifyReport:
    engine: str
    checks: list[Check]
    images: int
    spec: dict
    worst: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        """PASS, FAIL (a row that ran failed) or INCOMPLETE (rows not run, none failed)."""
        if any(c.run and not c.passed for c in self.checks):
            return "FAIL"
        return "PASS" if self.passed else "INCOMPLETE"

    def to_json(self) -> str:
        rows = [{**asdict(c), "result": c.result} for c in self.checks]
        return json.dumps({**asdict(self), "checks": rows, "passed": self.passed, "verdict": self.verdict}, indent=2)

    def to_markdown(self) -> str:
        lines = [f"# udc-edge verify: {self.verdict}", "", (f"Engine `{self.engine}` vs its PyTorch "
                 f"reference on {self.images} image(s). *Crafted on* / *evaluated on* give the reference side / "
                 "the engine side: transferred rows craft on the reference for both, direct white-box rows craft "
                 "on a differentiable replica of the engine."), "",
                 "| check | crafted on | evaluated on | reference | engine | value | threshold | result |",
                 "|---|---|---|---|---|---|---|---|"]
        f = format_check_value
        for c in self.checks:
            res = {"pass": "pass", "FAIL": "**FAIL**", "not run": "not run"}[c.result]
            lines.append(f"| {c.name} | {c.crafted_on} | {c.evaluated_on} | {f(c.reference)} | {f(c.engine)} | "
                         f"{f(c.value)} | {c.threshold} | {res} |")
        notes = [f"- {c.name}: not run: {c.note}" for c in self.checks if not c.run]
        if notes or self.notes:
            lines += ["", *dict.fromkeys(notes), *(f"- {n}" for n in self.notes)]
        if self.worst:
            lines += ["", f"Worst image: {self.worst['name']} ({self.worst['check']}). See worst.png."]
        return "\n".join(lines) + "\n"


def _drop_checks(label: str, ref_out: list, eng_out: list, gts: list, spec: VerifySpec, crafted: str = "-",
                 evaluated: str = "reference / engine") -> list[Check]:
    rp, ep = (
        np.mean([psnr(o, g) for o, g in zip(ref_out, gts, strict=True)]),
        np.mean([psnr(o, g) for o, g in zip(eng_out, gts, strict=True)]),
    )
    rs, es = (
        np.mean([ssim(o, g) for o, g in zip(ref_out, gts, strict=True)]),
        np.mean([ssim(o, g) for o, g in zip(eng_out, gts, strict=True)]),
    )
    return [Check(f"{label} PSNR drop (dB)", float(rp), float(ep), float(rp - ep), f"<= {spec.max_psnr_drop}",
                  bool(rp - ep <= spec.max_psnr_drop), crafted, evaluated),
            Check(f"{label} SSIM drop", float(rs), float(es), float(rs - es), f"<= {spec.max_ssim_drop}",
                  bool(rs - es <= spec.max_ssim_drop), crafted, evaluated)]


def _not_run(label: str, spec: VerifySpec, why: str) -> list[Check]:
    return [Check(f"{label} PSNR drop (dB)", None, None, None, f"<= {spec.max_psnr_drop}", False, CRAFTED_DIRECT,
                  EVALUATED, run=False, note=why),
            Check(f"{label} SSIM drop", None, None, None, f"<= {spec.max_ssim_drop}", False, CRAFTED_DIRECT,
                  EVALUATED, run=False, note=why)]


def direct_checks(engine: Any, replica: Any, why: str, rs: ReferenceSet, eng_clean: list[np.ndarray],
                  spec: VerifySpec, progress: Advance = noop) -> list[Check]:
    """The replica match row, then per white-box attack the white-box-on-engine rows
    (crafted on the replica, run by the engine) vs the reference's own white-box numbers."""
    labels = whitebox_labels(rs)
    if not labels:
        return []
    checks = []
    if replica is not None:
        match = replica_match(replica, eng_clean, rs.lq)
        ok = bool(match >= spec.min_replica_match)
        checks.append(Check("replica match vs engine, clean (dB)", None, None, match, f">= {spec.min_replica_match}",
                            ok, "-", "engine replica / engine"))
        if not ok:
            replica, why = None, (f"the replica matches the engine at {match:.1f} dB, below "
                                  f"{spec.min_replica_match} dB: attacks on it would measure another network")
    for label in labels:
        if replica is None:
            checks += _not_run(f"{label} white-box on engine", spec, why)
            continue
        outs = craft_on_replica(replica, engine, rs, label, spec)
        checks += _drop_checks(f"{label} white-box on engine", rs.ref_transferred[label], outs, rs.gt, spec,
                               CRAFTED_DIRECT, EVALUATED)
        progress(1)
    return checks


def verify_engine(engine: Any, rs: ReferenceSet, spec: VerifySpec, name: str = "engine",
                  progress: Advance = noop, replica: Any = None,
                  no_replica: str = "no replica given") -> tuple[VerifyReport, list[np.ndarray]]:
    """Compare ``engine`` with a reference set; returns the report and the worst image's grid row.

    With ``spec.direct``, white-box attacks are also crafted on ``replica`` (a torch module
    computing what the engine computes) and run by the engine; without a replica those
    rows are "not run" because of ``no_replica``."""
    first = engine(rs.lq[0].transpose(2, 0, 1)[None].copy())
    if first.shape[1:] != (3, *rs.lq[0].shape[:2]):
        raise EngineError(
            f"engine output shape {first.shape} does not match the reference's "
            f"(1, 3, {rs.lq[0].shape[0]}, {rs.lq[0].shape[1]})",
            "check engine and reference are the same network",
        )
    eng_clean = [output_image(first)] + [forward(engine, x) for x in rs.lq[1:]]
    fid = [psnr(e, r) for e, r in zip(eng_clean, rs.ref_clean, strict=True)]
    checks = [Check("output fidelity vs reference (dB)", None, None, float(np.mean(fid)), f">= {spec.min_fidelity}",
                    bool(np.mean(fid) >= spec.min_fidelity))]
    checks += _drop_checks("clean", rs.ref_clean, eng_clean, rs.gt, spec, "- (clean inputs)")
    worst = {"drop": -np.inf}
    for label, advs in rs.transferred.items():
        eng_adv = [forward(engine, a) for a in advs]
        checks += _drop_checks(f"{label} transferred", rs.ref_transferred[label], eng_adv, rs.gt, spec,
                               "reference / reference")
        for i, (a, r, e) in enumerate(zip(advs, rs.ref_transferred[label], eng_adv, strict=True)):
            d = psnr(r, rs.gt[i]) - psnr(e, rs.gt[i])
            if d > worst["drop"]:
                worst = {"drop": d, "i": i, "check": f"{label} transferred", "row": [rs.lq[i], a, r, e, rs.gt[i]]}
        progress(1)
    for label, ref_rows in rs.blackbox_ref.items():
        name_ = label.split("@")[0]
        a = spec.attack_spec(name_)
        outs = [output_image(blackbox_attack(engine, nchw_array(x), nchw_array(g), a).output)
                for x, g in zip(rs.lq, rs.gt, strict=True)]
        rp, rs_ = np.mean([r["psnr"] for r in ref_rows]), np.mean([r["ssim"] for r in ref_rows])
        ep, es = (
            np.mean([psnr(o, g) for o, g in zip(outs, rs.gt, strict=True)]),
            np.mean([ssim(o, g) for o, g in zip(outs, rs.gt, strict=True)]),
        )
        bb = "reference / engine (queries)"
        checks += [Check(f"{label} black-box on each PSNR drop (dB)", float(rp), float(ep), float(rp - ep),
                         f"<= {spec.max_psnr_drop}", bool(rp - ep <= spec.max_psnr_drop), bb),
                   Check(f"{label} black-box on each SSIM drop", float(rs_), float(es), float(rs_ - es),
                         f"<= {spec.max_ssim_drop}", bool(rs_ - es <= spec.max_ssim_drop), bb)]
        progress(1)
    if spec.direct:
        checks += direct_checks(engine, replica, no_replica, rs, eng_clean, spec, progress)
    row = worst.pop("row", [])
    if "i" in worst:
        worst = {"name": rs.names[worst["i"]], "check": worst["check"], "psnr_drop_db": float(worst["drop"])}
    else:
        worst = {}
    return VerifyReport(name, checks, len(rs.lq), asdict(spec), worst), row


GRID_LABELS = ["degraded", "attacked", "reference output", "engine output", "ground truth"]


def run_verify(engine_path: str | os.PathLike, report_dir: str | os.PathLike, spec: VerifySpec,
               reference: str | None = None, data: str | os.PathLike | None = None,
               bundle: str | os.PathLike | None = None, quiet: bool = False, purifier: str | None = None,
               eot: int = 10, overwrite: bool = False) -> VerifyReport:
    """Resolve inputs (live reference + data, or a bundle), verify, write the report folder.

    With ``purifier``, the reference is purifier + restorer and the engine a pipeline graph
    with inputs (input, noise) (``udc-edge export MODEL --purifier P_k``): both see the same
    fixed noise, and white-box attacks are adaptive: crafted with exact gradients through
    the k-step purifier, averaged over ``eot`` noise draws (EOT)."""
    from udc_edge.core.figures import image_grid
    from udc_edge.core.fileio import atomic_dir, check_output, write_text_atomic
    from udc_edge.core.progress import progress_bar
    from udc_edge.data.images import write_png
    from udc_edge.engines import load_engine

    check_output(report_dir, (engine_path, data, bundle, reference, purifier), overwrite)
    fixed = None
    if bundle is not None:
        if purifier:
            raise UsageError("--purifier is not supported with --bundle yet", "verify the defended pipeline live")
        if reference or data:
            raise UsageError("--bundle replaces --reference and --data", "give one or the other")
        from udc_edge.deploy.bundle import open_bundle

        with open_bundle(bundle) as b:
            rs = b.reference_set()  # arrays in memory: the unpacked bundle can go
        # The engine must face the same attacks (budget, steps, queries, seed) as the stored reference.
        p = rs.attack_params
        spec = replace(spec, **{k: tuple(p[k]) if k == "attacks" else p[k] for k in ATTACK_PARAMS if k in p})
    else:
        if not reference or data is None:
            raise UsageError("verify needs --reference MODEL and --data DIR (or --bundle)")
        from udc_edge.data.readers import open_paired_dataset
        from udc_edge.models.zoo import load_model

        model, _ = load_model(reference)
        ds = open_paired_dataset(data)
        craft, label = None, ""
        if purifier:
            from udc_edge.defence.defence import EOT, DefendedPipeline
            from udc_edge.diffusion.pipeline import PurifiedRestorer
            from udc_edge.diffusion.purifier import load_purifier

            sampler = load_purifier(purifier)[0].sampler()
            pipe = PurifiedRestorer(sampler, model).eval()
            fixed = FixedNoise(spec.seed, pipe.multiple)
            model = fixed.module(pipe)
            craft, label = (
                EOT(DefendedPipeline(pipe.restorer, sampler), samples=eot, seed=spec.seed),
                f" adaptive+EOT{eot}",
            )
        with progress_bar("reference + transferred attacks", spec.pairs(len(ds)), quiet) as adv:
            rs = make_reference_set(model, ds, spec, progress=adv, craft_on=craft, craft_label=label)
    eng = load_engine(engine_path)
    if fixed is None and eng.activate().num_inputs != 1:
        raise UsageError(f"engine {engine_path} takes {eng.num_inputs} inputs (a purifier pipeline)",
                         "give --purifier P_k so both sides see the same noise")
    notes = []
    if fixed is not None and spec.direct:
        spec = replace(spec, direct=False)
        notes.append("white-box on engine rows not planned: the defended pipeline graph takes a noise input and its "
                     "purifier's ops are beyond the replica; its white-box rows are adaptive (EOT) on the reference")
    replica, why = engine_replica(engine_path, eng.manifest) if spec.direct else (None, "")
    with eng, progress_bar("verifying engine", len(spec.attacks) * (2 if spec.direct else 1), quiet) as adv:
        target = fixed.engine(eng) if fixed is not None else eng
        rep, row = verify_engine(target, rs, spec, name=str(engine_path), progress=adv, replica=replica,
                                 no_replica=why)
    rep.notes += notes
    with atomic_dir(report_dir, overwrite=overwrite) as tmp:
        write_text_atomic(tmp / "verify.json", rep.to_json())
        write_text_atomic(tmp / "verify.md", rep.to_markdown())
        if row:
            write_png(tmp / "worst.png", image_grid([row], GRID_LABELS), bit_depth=8)
    return rep
