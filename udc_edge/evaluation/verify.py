"""``udc-edge verify``: robustness parity of a deployed engine against its PyTorch reference.

On the same images: (1) output fidelity, engine vs reference; (2) clean PSNR/SSIM against
ground truth; (3) attacks crafted white-box on the reference and transferred to the engine;
(4) black-box attacks run against the engine itself (it is what ships) and, with the same
budget and seed, against the reference; (5) white-box attacks crafted on a differentiable
replica of the engine's own (quantised) numerics and run by the engine, against the
reference's own white-box numbers (:mod:`udc_edge.evaluation.verify_direct`). Every row
says what its inputs were crafted on and what evaluated them. A check passes when the engine loses no more than
the thresholds. Everything the engine is compared with is a ``ReferenceSet``: computed live
with torch, or loaded from a bundle (so a Jetson verifies without PyTorch).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from udc_edge.attacks import AttackSpec, parse_attack_names
from udc_edge.data.images import to_hwc
from udc_edge.data.readers import PairedDataset
from udc_edge.errors import DataError, EngineError, UsageError
from udc_edge.evaluation.metrics import psnr, ssim
from udc_edge.evaluation.robustness import as_target, forward, output_image, run_one
from udc_edge.evaluation.verify_direct import (
    CRAFTED_DIRECT,
    EVALUATED,
    craft_on_replica,
    engine_replica,
    replica_match,
    whitebox_labels,
)
from udc_edge.progress import Advance, _noop

#: Pairs verified when --limit is not given (fewer if the data has fewer).
DEFAULT_LIMIT = 8


@dataclass(frozen=True)
class VerifySpec:
    attacks: tuple[str, ...] = ("pgd", "simba")
    eps: float = 8 / 255
    steps: int = 20
    simba_iterations: int = 200
    max_psnr_drop: float = 0.3
    max_ssim_drop: float = 0.01
    min_fidelity: float = 35.0
    direct: bool = True  # white-box attacks crafted on the engine's replica (rows "not run" if it cannot be made)
    min_replica_match: float = 50.0
    cw_iterations: int = 100
    cw_search_steps: int = 9
    limit: int | None = None  # None: up to DEFAULT_LIMIT pairs; a number: exactly that many
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_psnr_drop", "max_ssim_drop", "min_fidelity", "min_replica_match"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit must be >= 1, got {self.limit}")
        for name in ("cw_iterations", "cw_search_steps"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        object.__setattr__(self, "attacks", parse_attack_names(",".join(self.attacks)) if self.attacks else ())

    def pairs(self, available: int) -> int:
        """How many of ``available`` pairs a verification uses."""
        return min(DEFAULT_LIMIT if self.limit is None else self.limit, available)

    def attack_spec(self, name: str) -> AttackSpec:
        return AttackSpec(name, eps=None if name == "cw" else self.eps, steps=self.steps, seed=self.seed,
                          simba_iterations=self.simba_iterations, square_queries=self.simba_iterations,
                          cw_max_iter=self.cw_iterations, cw_search_steps=self.cw_search_steps)


@dataclass
class ReferenceSet:
    """Inputs, ground truth and the reference's outputs: what an engine is verified against."""

    names: list[str]
    lq: list[np.ndarray]
    gt: list[np.ndarray]
    ref_clean: list[np.ndarray]
    transferred: dict[str, list[np.ndarray]] = field(default_factory=dict)  # label -> x_adv per image
    ref_transferred: dict[str, list[np.ndarray]] = field(default_factory=dict)  # label -> ref output
    blackbox_ref: dict[str, list[dict]] = field(default_factory=dict)  # label -> {psnr, ssim} per image
    attack_params: dict = field(default_factory=dict)  # attacks, eps, steps, simba_iterations, seed used

    def save(self, folder: str | os.PathLike) -> None:
        """As .npy arrays (never pickled) plus an index JSON."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"lq": self.lq, "gt": self.gt, "ref_clean": self.ref_clean}
        arrays.update({f"adv_{_fname(k)}": v for k, v in self.transferred.items()})
        arrays.update({f"refadv_{_fname(k)}": v for k, v in self.ref_transferred.items()})
        for key, imgs in arrays.items():
            np.save(folder / f"{key}.npy", np.stack(imgs).astype(np.float32), allow_pickle=False)
        (folder / "reference.json").write_text(json.dumps(
            {"names": self.names, "transferred": sorted(self.transferred), "blackbox_ref": self.blackbox_ref,
             "attack_params": self.attack_params}, indent=2))

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ReferenceSet:
        folder = Path(folder)
        try:
            idx = json.loads((folder / "reference.json").read_text())
            def arr(key: str) -> list[np.ndarray]:
                return list(np.load(folder / f"{key}.npy", allow_pickle=False))
            rs = cls(idx["names"], arr("lq"), arr("gt"), arr("ref_clean"), blackbox_ref=idx["blackbox_ref"],
                     attack_params=idx.get("attack_params", {}))
            for k in idx["transferred"]:
                rs.transferred[k], rs.ref_transferred[k] = arr(f"adv_{_fname(k)}"), arr(f"refadv_{_fname(k)}")
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"reference set in {folder} is incomplete or corrupt: {exc}", "rebuild the bundle") from exc
        return rs


class FixedNoise:
    """Single-input views of a two-input (image, noise) pipeline with the SAME noise for the
    torch reference and the engine: noise is drawn from ``seed`` at the padded size, and the
    image is padded (reflect, bottom/right) as ``run_padded`` and the engine would."""

    def __init__(self, seed: int, multiple: int):
        self.seed, self.multiple = seed, multiple

    def noise(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=torch.Generator().manual_seed(self.seed))

    def module(self, pipeline: torch.nn.Module) -> torch.nn.Module:
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
        from udc_edge.engines.base import _pad_array

        def call(x: np.ndarray) -> np.ndarray:
            h, w = x.shape[2:]
            xp = _pad_array(np.ascontiguousarray(x, dtype=np.float32), self.multiple)
            return engine(xp, self.noise(xp.shape).numpy())[:, :, :h, :w]

        return call


ATTACK_PARAMS = ("attacks", "eps", "steps", "simba_iterations", "seed", "cw_iterations", "cw_search_steps")


def _fname(label: str) -> str:
    """A file-name-safe form of an attack label such as ``pgd@8/255``."""
    return label.replace("/", "_").replace("@", "-")


def make_reference_set(reference: Any, dataset: PairedDataset, spec: VerifySpec, progress: Advance = _noop,
                       craft_on: Any = None, craft_label: str = "") -> ReferenceSet:
    """Run the torch reference (and craft the transferred attacks) on ``spec.pairs(len(dataset))`` pairs.

    White-box attacks are crafted on ``craft_on`` when given (e.g. an EOT-averaged defended
    pipeline: the adaptive attack), else on the reference itself."""
    if not dataset.has_gt:
        raise DataError("verify needs ground truth (lq/ and gt/)", "give a paired dataset folder")
    if spec.limit is not None and len(dataset) < spec.limit:
        raise DataError(f"the data has {len(dataset)} pairs, fewer than --limit {spec.limit}", "lower --limit")
    ref = as_target(reference)
    crafter = as_target(craft_on) if craft_on is not None else ref
    n = spec.pairs(len(dataset))
    rs = ReferenceSet([], [], [], [], attack_params={k: getattr(spec, k) for k in ATTACK_PARAMS})
    for i in range(n):
        p = dataset[i]
        rs.names.append(p.name)
        rs.lq.append(p.lq)
        rs.gt.append(p.gt)
        rs.ref_clean.append(forward(ref, p.lq))
        for name in spec.attacks:
            a = spec.attack_spec(name)
            label = f"{name}@{_eps(a)}"
            if a.is_whitebox:
                label += craft_label
                adv = to_hwc(run_one(crafter, a, p.lq, p.gt).x_adv)
                rs.transferred.setdefault(label, []).append(adv)
                rs.ref_transferred.setdefault(label, []).append(forward(ref, adv))
            else:
                out = output_image(run_one(ref, a, p.lq, p.gt).output)
                rs.blackbox_ref.setdefault(label, []).append({"psnr": psnr(out, p.gt), "ssim": ssim(out, p.gt)})
        progress(1)
    return rs


def _eps(a: AttackSpec) -> str:
    return "L2" if a.eps is None else f"{round(a.eps * 255, 2):g}/255"


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
        for c in self.checks:
            f = lambda v: "-" if v is None else f"{v:.4f}" if abs(v) < 1.5 else f"{v:.2f}"
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
    rp, ep = np.mean([psnr(o, g) for o, g in zip(ref_out, gts)]), np.mean([psnr(o, g) for o, g in zip(eng_out, gts)])
    rs, es = np.mean([ssim(o, g) for o, g in zip(ref_out, gts)]), np.mean([ssim(o, g) for o, g in zip(eng_out, gts)])
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
                  spec: VerifySpec, progress: Advance = _noop) -> list[Check]:
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
                  progress: Advance = _noop, replica: Any = None,
                  no_replica: str = "no replica given") -> tuple[VerifyReport, list[np.ndarray]]:
    """Compare ``engine`` with a reference set; returns the report and the worst image's grid row.

    With ``spec.direct``, white-box attacks are also crafted on ``replica`` (a torch module
    computing what the engine computes) and run by the engine; without a replica those
    rows are "not run" because of ``no_replica``."""
    first = engine(rs.lq[0].transpose(2, 0, 1)[None].copy())
    if first.shape[1:] != (3, *rs.lq[0].shape[:2]):
        raise EngineError(f"engine output shape {first.shape} does not match the reference's "
                          f"(1, 3, {rs.lq[0].shape[0]}, {rs.lq[0].shape[1]})", "check engine and reference are the same network")
    eng_clean = [output_image(first)] + [forward(engine, x) for x in rs.lq[1:]]
    fid = [psnr(e, r) for e, r in zip(eng_clean, rs.ref_clean)]
    checks = [Check("output fidelity vs reference (dB)", None, None, float(np.mean(fid)), f">= {spec.min_fidelity}",
                    bool(np.mean(fid) >= spec.min_fidelity))]
    checks += _drop_checks("clean", rs.ref_clean, eng_clean, rs.gt, spec, "- (clean inputs)")
    worst = {"drop": -np.inf}
    for label, advs in rs.transferred.items():
        eng_adv = [forward(engine, a) for a in advs]
        checks += _drop_checks(f"{label} transferred", rs.ref_transferred[label], eng_adv, rs.gt, spec,
                               "reference / reference")
        for i, (a, r, e) in enumerate(zip(advs, rs.ref_transferred[label], eng_adv)):
            d = psnr(r, rs.gt[i]) - psnr(e, rs.gt[i])
            if d > worst["drop"]:
                worst = {"drop": d, "i": i, "check": f"{label} transferred", "row": [rs.lq[i], a, r, e, rs.gt[i]]}
        progress(1)
    for label, ref_rows in rs.blackbox_ref.items():
        name_ = label.split("@")[0]
        a = spec.attack_spec(name_)
        outs = [output_image(run_one(engine, a, x, g).output) for x, g in zip(rs.lq, rs.gt)]
        rp, rs_ = np.mean([r["psnr"] for r in ref_rows]), np.mean([r["ssim"] for r in ref_rows])
        ep, es = np.mean([psnr(o, g) for o, g in zip(outs, rs.gt)]), np.mean([ssim(o, g) for o, g in zip(outs, rs.gt)])
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
               eot: int = 10) -> VerifyReport:
    """Resolve inputs (live reference + data, or a bundle), verify, write the report folder.

    With ``purifier``, the reference is purifier + restorer and the engine a pipeline graph
    with inputs (input, noise) (``udc-edge export MODEL --purifier P_k``): both see the same
    fixed noise, and white-box attacks are adaptive: crafted with exact gradients through
    the k-step purifier, averaged over ``eot`` noise draws (EOT)."""
    from udc_edge.data.images import write_png
    from udc_edge.engines import load_engine
    from udc_edge.evaluation.figures import image_grid
    from udc_edge.fileio import atomic_dir, write_text_atomic
    from udc_edge.progress import progress_bar

    fixed = None
    if bundle is not None:
        if purifier:
            raise UsageError("--purifier is not supported with --bundle yet", "verify the defended pipeline live")
        if reference or data:
            raise UsageError("--bundle replaces --reference and --data", "give one or the other")
        from udc_edge.evaluation.bundle import open_bundle

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
            from udc_edge.evaluation.defence import EOT, DefendedPipeline
            from udc_edge.export.pipeline import PurifiedRestorer
            from udc_edge.models.purifier import load_purifier

            sampler = load_purifier(purifier)[0].sampler()
            pipe = PurifiedRestorer(sampler, model).eval()
            fixed = FixedNoise(spec.seed, pipe.multiple)
            model = fixed.module(pipe)
            craft, label = EOT(DefendedPipeline(pipe.restorer, sampler), samples=eot, seed=spec.seed), f" adaptive+EOT{eot}"
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
    with atomic_dir(report_dir, overwrite=True) as tmp:
        write_text_atomic(tmp / "verify.json", rep.to_json())
        write_text_atomic(tmp / "verify.md", rep.to_markdown())
        if row:
            write_png(tmp / "worst.png", image_grid([row], GRID_LABELS), bit_depth=8)
    return rep
