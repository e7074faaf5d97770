"""torchrun / DistributedDataParallel plumbing, a no-op in a single process.

Under ``torchrun --nproc_per_node N`` the environment carries RANK/WORLD_SIZE; we join the
process group with gloo on CPU or nccl on GPU. Rank 0 alone writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def is_main_process() -> bool:
    """Rank 0 (or no torchrun at all): the process that prints and writes files."""
    return int(os.environ.get("RANK", "0")) == 0


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> str:
    """``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises a :class:`UsageError` naming ``--device`` for anything else, or for CUDA on a
    machine where torch sees no GPU (a CPU-only build, or no driver).
    """
    from udc_edge.core.errors import UsageError

    base, _, index = name.partition(":")
    if base not in DEVICES or (index and (base != "cuda" or not index.isdigit())):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if base == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if base == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: torch {torch.__version__} sees no CUDA GPU",
                             "use --device cpu (or auto), or install a CUDA build of torch")
        if index and int(index) >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible",
                             "use a lower index")
    return name


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group when launched by torchrun; otherwise a single-process info."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world <= 1:
        return DistInfo(device=device)
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device)


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    if not info.enabled:
        return model
    ids = [info.local_rank] if info.device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over all parameters and buffers (to prove ranks hold identical weights)."""
    from udc_edge.diffusion.purifier import state_digest

    return state_digest(unwrap(model))


def gather_strings(value: str, info: DistInfo) -> list[str]:
    if not info.enabled:
        return [value]
    out: list[str] = [""] * info.world_size
    dist.all_gather_object(out, value)
    return out


def finish(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
