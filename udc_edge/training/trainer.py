"""The one training loop: every trainer (restorer, purifier, distill, finetune) is a
:class:`Trainer` subclass that fills in hooks; the skeleton lives here once.

The skeleton: torch threads, device (``--device auto|cpu|cuda[:N]``) and torchrun DDP,
refusing a non-empty run folder, AdamW (betas 0.9/0.99, ``--weight-decay``), linear
warm-up + cosine schedule (:func:`lr_at`), gradient clipping at norm 1, the step loop with
progress, validation every ``val_every`` steps and at the last, ``best/`` (by the
trainer's metric and direction), ``last/`` and ``state.safetensors`` written atomically at
every validation, exact ``--resume``, and one ``train_log.json``.

Hooks (what differs): :meth:`Trainer.build` (the models, on the device), the data and
fixed validation sets (:meth:`Trainer.prepare`), the batch source (:meth:`Trainer.batches`,
default: (seed, step, rank) batches, made ahead by ``--workers`` processes),
:meth:`Trainer.loss`, :meth:`Trainer.validate` with :attr:`Trainer.metric` /
:attr:`Trainer.higher_is_better`, and :meth:`Trainer.save_model` (the checkpoint format).

``OUT/train_log.json`` (``LOG_FORMAT``), the same keys for every trainer: ``format``,
``kind`` (restorer, purifier, distill, finetune), ``spec``, ``data``, ``out``, ``steps``,
``seconds`` (training time, summed over resumes), ``metric`` ({name, higher_is_better}),
``best`` (the validation record ``best/`` holds), ``history`` (validation records: step,
loss, seconds and the trainer's metrics; distill and finetune start with a step-0 record of
the model before training), ``resumed`` (null, or {from_step, changed}), ``ranks``,
``ranks_identical``, ``weights_digests`` (one per rank), ``device``, ``torch``,
``threads``, and ``report`` (the trainer's own summary numbers, e.g. ``best_psnr``).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from udc_edge.core.errors import OutputError, UsageError
from udc_edge.core.fileio import write_json_atomic
from udc_edge.core.progress import Advance, noop
from udc_edge.training import distributed as D
from udc_edge.training.pairs import TrainData, make_train_data, step_batches
from udc_edge.training.state import STATE_NAME, resume_run, save_train_state

LOG_NAME = "train_log.json"
LOG_FORMAT = 1


def lr_at(step: int, peak: float, warmup: int, total: int) -> float:
    """Every trainer's schedule: linear warm-up over ``warmup`` steps, then cosine decay to
    1 % of ``peak`` at step ``total``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def check_loop_options(spec: Any) -> None:
    """The options every trainer spec shares, checked on construction (device *names*;
    whether a GPU is there is checked when the run starts)."""
    if spec.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {spec.workers}", "0 makes batches in the training process")
    if not spec.weight_decay >= 0:
        raise UsageError(f"--weight-decay must be >= 0, got {spec.weight_decay}")
    base, _, index = spec.device.partition(":")
    if base not in D.DEVICES or (index and (base != "cuda" or not index.isdigit())):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {spec.device!r}")
    if spec.resume and spec.overwrite:
        raise UsageError("--resume and --overwrite contradict each other", "pick one")


def prepare_out_dir(out: str | Path, resume: bool, overwrite: bool, info: D.DistInfo) -> Path:
    """A run folder: refused when it holds files, unless resuming or overwriting (rank 0 checks)."""
    out = Path(out)
    if info.is_main and not resume and out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"output folder {out} exists and is not empty", "pass --resume to continue or --overwrite")
    return out


@dataclass(frozen=True)
class LoopSpec:
    """The skeleton's options, taken from a trainer's spec (``steps`` is distill's ``train_steps``)."""

    out: str
    steps: int
    lr: float
    weight_decay: float
    warmup: int
    val_every: int
    seed: int
    resume: bool
    overwrite: bool
    threads: int
    device: str
    workers: int
    batch: int

    @classmethod
    def of(cls, spec: Any, steps: int | None = None) -> LoopSpec:
        names = [f for f in cls.__dataclass_fields__ if f != "steps"]
        return cls(steps=spec.steps if steps is None else steps, **{n: getattr(spec, n) for n in names})


@dataclass
class TrainResult:
    """What the skeleton hands back to a trainer for its report (rank 0's view)."""

    out: str
    steps: int
    seconds: float
    best: dict[str, Any]
    history: list[dict]
    resumed: dict | None
    ranks: int
    weights_digests: list[str]

    @property
    def ranks_identical(self) -> bool:
        return len(set(self.weights_digests)) == 1


def device_name(device: str) -> str:
    """``cpu`` or the GPU's name (for the log)."""
    dev = torch.device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


class Trainer(ABC):
    """The training skeleton; subclasses set the class attributes and override the hooks."""

    kind: str = ""
    #: the key of :meth:`validate`'s record that picks ``best/``, and its direction
    metric: str = ""
    higher_is_better: bool = True
    #: spec fields (and :meth:`record` keys) a resumed run must share -> the option naming them
    must_match: Mapping[str, str] = {}
    #: history starts with a validation of the model before training (step 0)
    validate_at_start: bool = False
    loss_format: str = ".4f"

    def __init__(self, spec: Any, loop: LoopSpec, progress: Advance = noop, setup_progress: Advance = noop):
        self.spec, self.loop = spec, loop
        self.progress, self.setup_progress = progress, setup_progress
        self.info = D.DistInfo()
        self.device = "cpu"

    # -- hooks ---------------------------------------------------------------------------
    @abstractmethod
    def build(self) -> tuple[nn.Module, nn.Module]:
        """The model to save and the module whose parameters train (on ``self.device``)."""

    def record(self) -> dict[str, Any]:
        """Entries beside the spec in each checkpoint's ``training`` record (compared on resume)."""
        return {}

    def data_source(self) -> tuple[str, int]:
        """(data, patch) to train on."""
        return self.spec.data, self.spec.patch

    def prepare(self, data: TrainData) -> None:  # noqa: B027 (an optional hook: empty by default)
        """Fixed validation inputs and anything else the run needs from the data."""

    def batches(self, steps: range) -> Iterator[Any]:
        """One batch per step of ``steps``: (lq, gt, rng) from (seed, step, rank) by default."""
        return step_batches(self.data.sampler, self.loop.seed, self.info.rank, self.loop.batch, steps,
                            self.loop.workers, pin=self.device.startswith("cuda"))

    @abstractmethod
    def loss(self, batch: Any, net: nn.Module) -> torch.Tensor:
        """The training loss of one batch; ``net`` is the trained module (DDP-wrapped under torchrun)."""

    @abstractmethod
    def validate(self) -> dict[str, float]:
        """Validation metrics (rank 0), including :attr:`metric`."""

    def status(self, m: dict[str, Any]) -> str:
        return f"val {self.metric} {m[self.metric]:.4f}"

    @abstractmethod
    def save_model(self, folder: Path, extra: dict[str, Any]) -> None:
        """Write a checkpoint folder (``best/`` or ``last/``) of ``self.model`` with ``extra``."""

    def started(self, history: list[dict]) -> None:  # noqa: B027 (an optional hook: empty by default)
        """Called once the history before the first step is known (fresh or resumed)."""

    # -- the skeleton --------------------------------------------------------------------
    def _better(self, m: dict[str, Any], best: dict[str, Any] | None) -> bool:
        sentinel = -math.inf if self.higher_is_better else math.inf
        ref = sentinel if best is None else best[self.metric]
        return m[self.metric] > ref if self.higher_is_better else m[self.metric] < ref

    def _save(self, out: Path, opt: torch.optim.Optimizer, m: dict, best: dict | None, history: list[dict],
              step: int) -> dict | None:
        training = {"spec": asdict(self.spec), "data": self.data.describe(), "step": step, **self.record()}
        extra = {"training": training, "metrics": m}
        if self._better(m, best):
            best = m
            self.save_model(out / "best", extra)
        self.save_model(out / "last", extra)
        save_train_state(out / STATE_NAME, opt, step, history, best)
        return best

    def _resume(self, out: Path, opt: torch.optim.Optimizer) -> tuple[int, list[dict], dict | None, dict]:
        start, history, best, resumed = resume_run(out, self.model, opt, {**self.record(), **asdict(self.spec)},
                                                   self.must_match)
        if best is not None and not isinstance(best, dict):  # distill runs before the one Trainer
            best = {self.metric: best}
        if best is not None and not math.isfinite(best.get(self.metric, math.nan)):
            best = None  # the sentinel of a run that never validated
        return start, history, best, resumed

    def _start(self) -> tuple[Path, nn.Module, torch.optim.Optimizer]:
        """Threads, device and process group, the run folder, the models and the optimiser."""
        loop = self.loop
        if loop.threads:
            torch.set_num_threads(loop.threads)
        self.info = D.init_distributed(D.resolve_device(loop.device))
        self.device = self.info.device
        out = prepare_out_dir(loop.out, loop.resume, loop.overwrite, self.info)
        torch.manual_seed(loop.seed)  # identical initial weights on every rank
        self.model, trained = self.build()
        opt = torch.optim.AdamW(trained.parameters(), lr=loop.lr, weight_decay=loop.weight_decay, betas=(0.9, 0.99))
        return out, trained, opt

    def _begin(self, out: Path, opt: torch.optim.Optimizer) -> tuple[int, list[dict], dict | None, dict | None]:
        """Resume (before the data: a refusal is quick), then the data, the validation inputs
        and a fresh run's step-0 record; returns (start step, history, best, resumed)."""
        start, best, resumed = 0, None, None
        history: list[dict] = []
        if self.loop.resume:
            start, history, best, resumed = self._resume(out, opt)
        data_name, patch = self.data_source()
        self.data = make_train_data(data_name, patch, self.loop.seed, self.spec.val_count, pool=self.spec.pool,
                                    progress=self.setup_progress)
        self.prepare(self.data)
        if self.validate_at_start and not self.loop.resume:
            history = [{"step": 0, **(self.validate() if self.info.is_main else {}), "seconds": 0.0}]
        self.started(history)
        return start, history, best, resumed

    def run(self) -> TrainResult:
        """Train from the spec (or resume); rank 0 validates and saves. Returns rank 0's view."""
        loop = self.loop
        out, trained, opt = self._start()
        start, history, best, resumed = self._begin(out, opt)
        net = D.wrap_model(trained, self.info)
        t0 = time.perf_counter()
        elapsed_before = float(history[-1].get("seconds", 0.0)) if history else 0.0
        for step, batch in zip(range(start, loop.steps), self.batches(range(start, loop.steps)), strict=False):
            self.model.train()
            for g in opt.param_groups:
                g["lr"] = lr_at(step, loop.lr, loop.warmup, loop.steps)
            loss = self.loss(batch, net)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained.parameters(), 1.0)
            opt.step()
            self.progress(1, status=f"loss {loss.item():{self.loss_format}}")
            if self.info.is_main and ((step + 1) % loop.val_every == 0 or step + 1 == loop.steps):
                m = self.validate()
                m.update(step=step + 1, loss=float(loss.item()), seconds=elapsed_before + time.perf_counter() - t0)
                history.append(m)
                self.progress(0, status=self.status(m))
                best = self._save(out, opt, m, best, history, step + 1)
        self.result = TrainResult(out=str(out), steps=loop.steps, seconds=elapsed_before + time.perf_counter() - t0,
                                  best=best or {}, history=history, resumed=resumed, ranks=self.info.world_size,
                                  weights_digests=D.gather_strings(D.weights_digest(self.model), self.info))
        return self.result

    def write_log(self, report: Any) -> None:
        """Rank 0 writes ``OUT/train_log.json`` (the one format, see the module docstring);
        every rank then leaves the process group."""
        r, info = self.result, self.info
        if info.is_main:
            write_json_atomic(Path(r.out) / LOG_NAME, {
                "format": LOG_FORMAT, "kind": self.kind, "spec": asdict(self.spec), "data": self.data.describe(),
                "out": r.out, "steps": r.steps, "seconds": r.seconds,
                "metric": {"name": self.metric, "higher_is_better": self.higher_is_better},
                "best": r.best, "history": r.history, "resumed": r.resumed, "ranks": r.ranks,
                "ranks_identical": r.ranks_identical, "weights_digests": r.weights_digests,
                "device": device_name(self.device), "torch": torch.__version__,
                "threads": torch.get_num_threads(), "report": asdict(report)})
        D.finish(info)


def to_device(device: str, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Move batch tensors (made on the CPU, so every device sees the same draws) to ``device``."""
    return tuple(t.to(device, non_blocking=True) for t in tensors)


def step_rng(seed: int, step: int, rank: int) -> np.random.Generator:
    """The generator a step's batch is drawn from (see :class:`~udc_edge.training.pairs.StepBatches`)."""
    return np.random.default_rng([seed, step, rank])
