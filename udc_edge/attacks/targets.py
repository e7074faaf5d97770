"""What an attack can be aimed at, and one uniform, query-counting way to call it.

A target is a torch ``nn.Module`` (white-box and black-box attacks) or an *engine*: any
callable mapping a float32 NCHW numpy array to a numpy array (an ONNX Runtime or
TensorRT wrapper; black-box and transfer attacks only). :class:`QueryTarget` runs either
kind without gradients on numpy arrays and counts one query per image per forward pass.
This module imports torch only to run a torch target, so engines are attacked without it.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from udc_edge.core.errors import UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn


def is_torch_target(target: Any) -> bool:
    """True when ``target`` is a torch module (gradients available). Imports no torch: a
    module can only exist if torch was imported already."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(target, torch.nn.Module)


def check_target(target: Any) -> None:
    """Refuse anything that is neither a torch module nor a numpy callable."""
    if not is_torch_target(target) and not callable(target):
        raise UsageError(
            f"attack target of type {type(target).__name__} is neither a torch nn.Module "
            "nor a callable",
            "pass a model, or an engine callable mapping a float32 NCHW array to an array",
        )


def require_torch_target(target: Any, attack_name: str) -> nn.Module:
    """Return ``target`` if gradients can flow through it, else explain the alternatives."""
    if not is_torch_target(target):
        raise UsageError(
            f"white-box attack {attack_name} needs gradients, and the target "
            f"({type(target).__name__}) is an engine without them",
            "craft on a surrogate torch model with transfer_attack(surrogate, engine, ...), "
            "or use a black-box attack (simba, square)",
        )
    return target


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless module)."""
    import torch

    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the model in eval mode and give every submodule its training flag back after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


class QueryTarget:
    """Forward-only view of a target that counts queries per image.

    ``query(x, idx)`` runs the images ``x`` (which are the images ``idx`` of the attacked
    batch) and adds one query to each of them. ``peek`` runs without counting, for
    evaluation after an attack. Inputs and outputs are float32 NCHW numpy arrays; a torch
    target runs on its own device, without gradients, in eval mode.
    """

    def __init__(self, target: Any, batch: int):
        check_target(target)
        self.target = target
        self.is_torch = is_torch_target(target)
        self.queries = np.zeros(batch, dtype=np.int64)

    def peek(self, x: np.ndarray) -> np.ndarray:
        """Run the target on ``x`` without counting queries."""
        arr = np.ascontiguousarray(x, dtype=np.float32)
        if self.is_torch:
            return _torch_forward(self.target, arr)
        out = self.target(arr)
        if isinstance(out, (list, tuple)) and len(out) == 1:
            out = out[0]
        out = np.asarray(out)
        if out.ndim != 4 or out.shape[0] != arr.shape[0]:
            raise UsageError(
                f"the engine returned an array of shape {out.shape} for an input of shape "
                f"{arr.shape}",
                "the target must map an NCHW batch to an NCHW batch of the same size",
            )
        return out.astype(np.float32, copy=False)

    def query(self, x: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """Run the target on ``x`` and count one query for each image ``idx``."""
        out = self.peek(x)
        if idx is None:
            self.queries += 1
        else:
            np.add.at(self.queries, np.asarray(idx, dtype=np.int64), 1)
        return out


def _torch_forward(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """A torch module's output for a numpy batch, without gradients, as float32 numpy."""
    import torch

    with torch.no_grad(), eval_mode(model):
        return model(torch.from_numpy(x).to(model_device(model))).float().cpu().numpy()
