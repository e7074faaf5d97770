"""Distil an N-step purifier (the teacher) into a k-step student (k = 1, 2 or 4).

Method: direct trajectory matching, i.e. knowledge distillation of the sampler's
input-output map (Luhman & Luhman 2021), not progressive or consistency distillation.
The student starts as a copy of the teacher; every step draws images x and noise n,
forms x_t* = diffuse(x, t*, n), runs the teacher's N-step DDIM (no gradients) and the
student's k-step DDIM from the *same* x_t*, and minimises the MSE between the two
outputs, back-propagating through all k student evaluations.

Why this kind: purification starts at a small t* (0.1 of the schedule), where the DDIM
trajectory is short and nearly straight, so one regression gets a 1-4 step student
close to the teacher. It optimises exactly the k-step graph that is deployed
(:class:`~udc_edge.diffusion.sampler.PurifierSampler`), needs one training run (progressive
distillation needs log2(N/k) rounds) and no target networks or EMA (consistency
distillation), and the teacher's N steps per batch are cheap at k <= 4 and t* <= 0.15.

Output (the one :class:`~udc_edge.training.trainer.Trainer`'s): ``OUT/best/`` (lowest
student-teacher gap on fixed validation images and noise), ``OUT/last/``,
``OUT/state.safetensors`` (optimizer state, step, history; saved at every validation),
``OUT/train_log.json``. The student records its teacher's t*, steps and
weight digest, so pairing it with another teacher is refused.

``resume`` continues an interrupted run from ``OUT/last`` and the state, exactly: every
step's batch and noise derive from (seed, step, rank) and ``--targets`` are recomputed
from the seed, so the final weights equal an uninterrupted run's. Resuming with another
teacher (path or weights), k, teacher steps, data, batch, patch, targets, seed, pool or
validation count is refused; other changes (lr, train steps, ...) are recorded in the log.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from udc_edge.core.errors import UsageError
from udc_edge.core.progress import Advance, noop
from udc_edge.diffusion.purifier import Purifier, load_purifier, save_purifier, state_digest
from udc_edge.diffusion.schedule import check_steps, ddim_reverse, diffuse, from_model
from udc_edge.training.pairs import TrainData
from udc_edge.training.purifier import domain_batch
from udc_edge.training.state import options
from udc_edge.training.trainer import LoopSpec, Trainer, check_loop_options, step_rng, to_device

METHOD = "direct trajectory matching (knowledge distillation of the DDIM sampler, Luhman & Luhman 2021)"
#: Spec fields (and the teacher's weight digest) a resumed run must share with the interrupted one.
RESUME_MUST_MATCH = options("teacher_steps", "data", "batch", "patch", "targets", "seed", "pool", "val_count",
                            teacher="TEACHER", teacher_digest="the teacher's weights (digest)", k="--steps")


@dataclass(frozen=True)
class DistillSpec:
    """A distillation run; ``data``/``patch``/``teacher_steps`` default to the teacher's."""

    teacher: str
    out: str = "runs/purifier-k1"
    k: int = 1
    teacher_steps: int = 0  # 0: the teacher's own
    train_steps: int = 1000
    data: str = ""  # "": the teacher's training data, else synth:poled
    batch: int = 8
    patch: int = 0  # 0: the teacher's training resolution
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 20
    val_every: int = 200
    val_count: int = 8
    seed: int = 0
    overwrite: bool = False
    threads: int = 0
    pool: int = 192
    targets: int = 0  # >0: precompute this many teacher outputs once and train on them
    resume: bool = False
    device: str = "auto"
    workers: int = 0

    def __post_init__(self) -> None:
        check_steps(self.k, "--steps")
        if self.k > 4:
            raise UsageError(f"--steps {self.k}: distilled students run 1 to 4 steps",
                             "use 1, 2 or 4 (the teacher itself is the many-step sampler)")
        if self.targets < 0:
            raise UsageError(f"--targets must be >= 0 (0: teacher outputs on the fly), got {self.targets}")
        for name in ("train_steps", "batch", "val_every", "val_count", "pool", "warmup"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.teacher_steps < 0 or self.patch < 0:
            raise UsageError("--teacher-steps and --patch must be >= 0 (0: the teacher's own)")
        if not self.lr > 0:
            raise UsageError(f"--lr must be > 0, got {self.lr}")
        check_loop_options(self)


@dataclass
class DistillReport:
    out: str
    k: int
    teacher_steps: int
    t_star: float
    gap_before: float
    gap_after: float
    seconds: float
    history: list[dict]

    @staticmethod
    def _db(mse: float) -> float:
        return float(10 * np.log10(1.0 / max(mse, 1e-12)))

    def summary(self) -> str:
        return (f"distilled a {self.k}-step student from the {self.teacher_steps}-step teacher (t* {self.t_star}) "
                f"in {self.seconds:.0f} s: student-teacher gap {self._db(self.gap_before):.2f} -> "
                f"{self._db(self.gap_after):.2f} dB PSNR (MSE {self.gap_before:.2e} -> {self.gap_after:.2e}); "
                f"student in {self.out}/best")


def teacher_student_gap(teacher: Purifier, student: Purifier, x: torch.Tensor, noise: torch.Tensor,
                        teacher_steps: int, k: int, target: torch.Tensor | None = None) -> float:
    """MSE on [0, 1] between the k-step student and the N-step teacher from the same x_t*."""
    with torch.no_grad():
        z = diffuse(x, teacher.t_star, noise)
        if target is None:
            target = ddim_reverse(teacher.unet, z, teacher.t_star, teacher_steps)
        pred = ddim_reverse(student.unet, z, teacher.t_star, k)
        return float(F.mse_loss(from_model(pred), from_model(target)).item())


def _val_set(val_pairs: list, domain: str, patch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    crops = []
    for lq, gt in val_pairs:
        img = lq if domain == "lq" else gt
        y, x = (img.shape[0] - patch) // 2, (img.shape[1] - patch) // 2
        crops.append(img[y : y + patch, x : x + patch].transpose(2, 0, 1))
    xs = torch.from_numpy(np.ascontiguousarray(np.stack(crops)))
    return xs, torch.randn(xs.shape, generator=torch.Generator().manual_seed(seed + 47))


def _teacher_target(teacher: Purifier, n_teacher: int, pair: tuple[torch.Tensor, torch.Tensor],
                    rng: np.random.Generator, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t* of a batch (noise drawn on the CPU from ``rng``) and the teacher's N-step output from it."""
    x = domain_batch(pair, teacher.domain)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**62))))
    x, noise = to_device(device, x, noise)
    z = diffuse(x, teacher.t_star, noise)
    with torch.no_grad():
        return z, ddim_reverse(teacher.unet, z, teacher.t_star, n_teacher)


class DistillTrainer(Trainer):
    """Distillation hooks: the student's k-step output regresses the teacher's N-step one;
    best/ by the lowest student-teacher gap."""

    kind, metric, higher_is_better = "distill", "gap_mse", False
    must_match = RESUME_MUST_MATCH
    validate_at_start = True
    loss_format = ".5f"

    def build(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        spec = self.spec
        teacher, self.desc = load_purifier(spec.teacher)
        if teacher.role != "teacher":
            raise UsageError(f"{spec.teacher} is already a distilled student", "distil from the N-step teacher")
        self.n_teacher = spec.teacher_steps or teacher.steps
        teacher.sampler(steps=self.n_teacher)  # validates N against t*
        self.digest = state_digest(teacher)
        kwargs: dict[str, Any] = {**teacher.config(), "role": "student", "steps": spec.k, "distillation": {
            "method": METHOD, "teacher": str(spec.teacher), "teacher_digest": self.digest,
            "teacher_steps": self.n_teacher, "teacher_t_star": teacher.t_star, "train_steps": spec.train_steps}}
        student = Purifier(**kwargs)
        student.load_state_dict(teacher.state_dict())
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher = teacher.to(self.device)
        self.student = student.to(self.device)
        return self.student, self.student.unet

    def record(self) -> dict[str, Any]:
        return {"teacher": self.desc.get("name", self.desc.get("path", self.spec.teacher)),
                "teacher_digest": self.digest}

    def data_source(self) -> tuple[str, int]:
        trained = self.desc.get("training", {}).get("spec", {})
        return self.spec.data or trained.get("data", "synth:poled"), self.spec.patch or self.teacher.resolution

    def prepare(self, data: TrainData) -> None:
        spec, teacher = self.spec, self.teacher
        vx, vn = _val_set(data.val, teacher.domain, self.data_source()[1], spec.seed)
        self.vx, self.vn = to_device(self.device, vx, vn)
        self.v_target = None  # the teacher's N-step validation outputs: only rank 0 validates
        if self.info.is_main:
            with torch.no_grad():
                self.v_target = ddim_reverse(teacher.unet, diffuse(self.vx, teacher.t_star, self.vn), teacher.t_star,
                                             self.n_teacher)
        # deterministic from (seed, rank) and the teacher, so recomputed (not cached) on resume
        self.pool = self._target_pool() if spec.targets else None

    def _target_pool(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``spec.targets`` (x_t*, teacher output) pairs computed once (the teacher dominates the cost)."""
        spec, zs, ts = self.spec, [], []
        for b in range(-(-spec.targets // spec.batch)):
            rng = step_rng(spec.seed, 10_000_000 + b, self.info.rank)
            z, t = _teacher_target(self.teacher, self.n_teacher, self.data.sampler.batch(rng, spec.batch), rng,
                                   self.device)
            zs.append(z)
            ts.append(t)
            self.setup_progress(1)
        return torch.cat(zs)[: spec.targets], torch.cat(ts)[: spec.targets]

    def started(self, history: list[dict]) -> None:
        self.gap_before = float(history[0].get("gap_mse", float("nan")))
        self.student.distillation["gap_mse_before"] = self.gap_before

    def batches(self, steps: range) -> Iterator[Any]:
        if self.pool is None:
            return super().batches(steps)
        pool, spec = self.pool, self.spec

        def pick(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            idx = torch.from_numpy(step_rng(spec.seed, step, self.info.rank).integers(len(pool[0]), size=spec.batch))
            return pool[0][idx.to(pool[0].device)], pool[1][idx.to(pool[0].device)]

        return (pick(step) for step in steps)

    def loss(self, batch: Any, net: torch.nn.Module) -> torch.Tensor:
        if self.pool is None:
            lq, gt, rng = batch
            z, target = _teacher_target(self.teacher, self.n_teacher, (lq, gt), rng, self.device)
        else:
            z, target = batch
        return F.mse_loss(ddim_reverse(net, z, self.teacher.t_star, self.spec.k), target)

    def validate(self) -> dict[str, float]:
        return {"gap_mse": teacher_student_gap(self.teacher, self.student, self.vx, self.vn, self.n_teacher,
                                               self.spec.k, self.v_target)}

    def status(self, m: dict[str, Any]) -> str:
        return f"gap {m['gap_mse']:.2e}"

    def save_model(self, folder: Path, extra: dict[str, Any]) -> None:
        save_purifier(folder, self.student, extra, overwrite=True)


def distill(spec: DistillSpec, progress: Advance = noop, setup_progress: Advance = noop) -> DistillReport:
    """Train a k-step student from ``spec.teacher``; returns the report (rank 0's view)."""
    trainer = DistillTrainer(spec, LoopSpec.of(spec, steps=spec.train_steps), progress, setup_progress)
    r = trainer.run()
    report = DistillReport(out=r.out, k=spec.k, teacher_steps=trainer.n_teacher, t_star=trainer.teacher.t_star,
                           gap_before=trainer.gap_before,
                           gap_after=float(r.best.get("gap_mse", float("inf"))), seconds=r.seconds,
                           history=r.history)
    trainer.write_log(report)
    return report
