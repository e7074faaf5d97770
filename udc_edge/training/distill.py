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
(:class:`~udc_edge.diffusion.purifier.PurifierSampler`), needs one training run (progressive
distillation needs log2(N/k) rounds) and no target networks or EMA (consistency
distillation), and the teacher's N steps per batch are cheap at k <= 4 and t* <= 0.15.

Output: ``OUT/best/`` (lowest student-teacher gap on fixed validation images and noise),
``OUT/last/``, ``OUT/state.safetensors`` (optimizer state, step, history; saved at every
validation), ``OUT/train_log.json``. The student records its teacher's t*, steps and
weight digest, so pairing it with another teacher is refused.

``resume`` continues an interrupted run from ``OUT/last`` and the state, exactly: every
step's batch and noise derive from (seed, step, rank) and ``--targets`` are recomputed
from the seed, so the final weights equal an uninterrupted run's. Resuming with another
teacher (path or weights), k, teacher steps, data, batch, patch, targets, seed, pool or
validation count is refused; other changes (lr, train steps, ...) are recorded in the log.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from udc_edge.core.errors import UsageError
from udc_edge.core.fileio import write_json_atomic
from udc_edge.core.progress import Advance, noop
from udc_edge.diffusion.purifier import (
    Purifier,
    check_steps,
    ddim_reverse,
    diffuse,
    from_model,
    load_purifier,
    save_purifier,
    state_digest,
)
from udc_edge.training import distributed as D
from udc_edge.training.pairs import make_train_data
from udc_edge.training.purifier import domain_batch
from udc_edge.training.restorer import lr_at, prepare_out_dir
from udc_edge.training.state import STATE_NAME, options, resume_run, save_train_state

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
    warmup: int = 20
    val_every: int = 200
    val_count: int = 8
    seed: int = 0
    overwrite: bool = False
    threads: int = 0
    pool: int = 192
    targets: int = 0  # >0: precompute this many teacher outputs once and train on them
    resume: bool = False

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
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite contradict each other", "pick one")


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


def _draw(spec: DistillSpec, data: Any, teacher: Purifier, n_teacher: int, step: int, rank: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of x_t* and the teacher's N-step output from it (model domain)."""
    rng = np.random.default_rng([spec.seed, step, rank])
    x = domain_batch(data.sampler.batch(rng, spec.batch), teacher.domain)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**62))))
    z = diffuse(x, teacher.t_star, noise)
    with torch.no_grad():
        return z, ddim_reverse(teacher.unet, z, teacher.t_star, n_teacher)


def _target_pool(spec: DistillSpec, data: Any, teacher: Purifier, n_teacher: int, rank: int,
                 progress: Advance) -> tuple[torch.Tensor, torch.Tensor]:
    """``spec.targets`` (x_t*, teacher output) pairs computed once (the teacher dominates the cost)."""
    zs, ts = [], []
    for b in range(-(-spec.targets // spec.batch)):
        z, t = _draw(spec, data, teacher, n_teacher, 10_000_000 + b, rank)
        zs.append(z)
        ts.append(t)
        progress(1)
    return torch.cat(zs)[: spec.targets], torch.cat(ts)[: spec.targets]


def distill(spec: DistillSpec, progress: Advance = noop, setup_progress: Advance = noop) -> DistillReport:
    """Train a k-step student from ``spec.teacher``; returns the report (rank 0's view)."""
    if spec.threads:
        torch.set_num_threads(spec.threads)
    info = D.init_distributed("cpu")
    out = prepare_out_dir(spec.out, spec.resume, spec.overwrite, info)
    teacher, desc = load_purifier(spec.teacher)
    if teacher.role != "teacher":
        raise UsageError(f"{spec.teacher} is already a distilled student", "distil from the N-step teacher")
    n_teacher = spec.teacher_steps or teacher.steps
    teacher.sampler(steps=n_teacher)  # validates N against t*
    trained = desc.get("training", {}).get("spec", {})
    data_name = spec.data or trained.get("data", "synth:poled")
    patch = spec.patch or teacher.resolution
    digest = state_digest(teacher)
    kwargs: dict[str, Any] = {**teacher.config(), "role": "student", "steps": spec.k, "distillation": {
        "method": METHOD, "teacher": str(spec.teacher), "teacher_digest": digest,
        "teacher_steps": n_teacher, "teacher_t_star": teacher.t_star, "train_steps": spec.train_steps}}
    student = Purifier(**kwargs)
    student.load_state_dict(teacher.state_dict())
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(student.unet.parameters(), lr=spec.lr, weight_decay=0.0, betas=(0.9, 0.99))
    start, resumed = 0, None
    history: list[dict] = []
    best = float("inf")  # the saved best/ student's gap
    if spec.resume:  # before the data and targets: a refusal is quick
        start, history, best, resumed = resume_run(out, student, opt, {**asdict(spec), "teacher_digest": digest},
                                                   RESUME_MUST_MATCH)
    data = make_train_data(data_name, patch, spec.seed, spec.val_count, pool=spec.pool, progress=setup_progress)
    vx, vn = _val_set(data.val, teacher.domain, patch, spec.seed)
    v_target = None  # the teacher's N-step validation outputs: only rank 0 validates
    if info.is_main:
        with torch.no_grad():
            v_target = ddim_reverse(teacher.unet, diffuse(vx, teacher.t_star, vn), teacher.t_star, n_teacher)
    # deterministic from (seed, rank) and the teacher, so recomputed (not cached) on resume
    pool = _target_pool(spec, data, teacher, n_teacher, info.rank, setup_progress) if spec.targets else None
    if not spec.resume:
        gap = (teacher_student_gap(teacher, student, vx, vn, n_teacher, spec.k, v_target) if info.is_main
               else float("nan"))  # other ranks neither report nor save it
        history = [{"step": 0, "gap_mse": gap, "seconds": 0.0}]
    gap0 = float(history[0]["gap_mse"])
    student.distillation["gap_mse_before"] = gap0
    unet = D.wrap_model(student.unet, info)
    t0 = time.perf_counter()
    elapsed_before = float(history[-1]["seconds"])
    for step in range(start, spec.train_steps):
        student.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, spec.lr, spec.warmup, spec.train_steps)
        if pool is None:
            z, target = _draw(spec, data, teacher, n_teacher, step, info.rank)
        else:
            idx = torch.from_numpy(np.random.default_rng([spec.seed, step, info.rank]).integers(
                len(pool[0]), size=spec.batch))
            z, target = pool[0][idx], pool[1][idx]
        loss = F.mse_loss(ddim_reverse(unet, z, teacher.t_star, spec.k), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.unet.parameters(), 1.0)
        opt.step()
        progress(1, status=f"loss {loss.item():.5f}")
        if info.is_main and ((step + 1) % spec.val_every == 0 or step + 1 == spec.train_steps):
            gap = teacher_student_gap(teacher, student, vx, vn, n_teacher, spec.k, v_target)
            m = {"step": step + 1, "gap_mse": gap, "loss": float(loss.item()),
                 "seconds": elapsed_before + time.perf_counter() - t0}
            history.append(m)
            progress(0, status=f"gap {gap:.2e}")
            extra = {"training": {"spec": asdict(spec), "data": data.describe(), "step": step + 1,
                                  "teacher": desc.get("name", desc.get("path", spec.teacher)),
                                  "teacher_digest": digest}, "metrics": m}
            if gap < best:
                best = gap
                save_purifier(out / "best", student, extra, overwrite=True)
            save_purifier(out / "last", student, extra, overwrite=True)
            save_train_state(out / STATE_NAME, opt, step + 1, history, best)
    report = DistillReport(out=str(out), k=spec.k, teacher_steps=n_teacher, t_star=teacher.t_star,
                           gap_before=gap0, gap_after=best, seconds=elapsed_before + time.perf_counter() - t0,
                           history=history)
    if info.is_main:
        write_json_atomic(Path(out) / "train_log.json", {"spec": asdict(spec), "data": data.describe(),
                                                         **asdict(report), "resumed": resumed,
                                                         "torch": torch.__version__,
                                                         "threads": torch.get_num_threads()})
    D.finish(info)
    return report
